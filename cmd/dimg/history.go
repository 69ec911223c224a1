package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/cloneio"
	"github.com/dimg-project/dimg/imagefmt"
)

// The history commands: revert (a new commit equal to an older one), and
// the rewrites flatten, compact and convert (one standalone commit).

func newRevertCmd() *cobra.Command {
	var message string
	cmd := &cobra.Command{
		Use:   "revert IMAGE N",
		Short: "Make a new commit equal to commit N of an image",
		Long: `Revert appends to IMAGE a commit whose disk is exactly that of commit N (dimg log
lists the commits): every chunk that differs is written again. Nothing is lost: the
commits after N stay in the image and can be read with --at or reverted to in turn.

IMAGE takes one writer at a time: revert is refused while a read-write mount or
another writer holds it, and while a read-write mount's changes wait in
IMAGE.scratch (dimg recover). Readers of IMAGE keep working. A crash or kill leaves
IMAGE at its previous commit or at the new one, never damaged.`,
		Example: `  dimg log golden.dimg
  dimg revert golden.dimg 2
  dimg revert -m "back to the capture" golden.dimg 1`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.ParseInt(args[1], 10, 64)
			if err != nil || n < 1 {
				return usagef("revert: N %q: want a commit number (dimg log lists them)", args[1])
			}
			return runRevert(cmd, args[0], n, message)
		},
	}
	cmd.Flags().StringVarP(&message, "message", "m", "", "the new commit's message (default \"revert to commit N\")")
	addBaseFlag(cmd)
	return cmd
}

func runRevert(cmd *cobra.Command, path string, n int64, message string) error {
	base, _ := cmd.Flags().GetString("base")
	ci, err := cloneio.Revert(cmd.Context(), path, n, cloneio.RevertOptions{Message: message, BasePath: base})
	if err != nil {
		return err
	}
	if q, _ := cmd.Flags().GetBool("quiet"); !q {
		fmt.Fprintf(os.Stderr, "%s: commit %d equals commit %d (%d chunks, %s changed; digest %s)\n", path, ci.Number, n,
			ci.ChunksChanged, humanBytes(ci.BytesChanged), imagefmt.DigestString(ci.Digest)[:16])
	}
	return nil
}

// rewriteFlags are shared by flatten, compact and convert.
type rewriteFlags struct {
	force    bool
	compress string
	json     bool
}

func (fl *rewriteFlags) add(cmd *cobra.Command, out bool, compressHelp string) {
	f := cmd.Flags()
	if out {
		f.BoolVar(&fl.force, "force", false, "replace OUT if it exists")
	}
	f.StringVar(&fl.compress, "compress", "", compressHelp)
	f.BoolVar(&fl.json, "json", false, "print the result as JSON")
}

// options turns the flags into rewrite options; required: --compress must
// be given.
func (fl *rewriteFlags) options(cmd *cobra.Command, label string, required bool) (cloneio.RewriteOptions, error) {
	opt := cloneio.RewriteOptions{ToolVersion: "dimg " + version}
	if fl.compress == "" && required {
		return opt, usagef("%s: --compress lz4 or zstd[:LEVEL] is required", label)
	}
	if fl.compress != "" {
		c, err := parseCompress(fl.compress)
		if err != nil {
			return opt, err
		}
		opt.Compression = &c
	}
	return opt, nil
}

// printRewrite reports a rewrite on stderr (or as JSON on stdout).
func printRewrite(cmd *cobra.Command, fl rewriteFlags, headline, from, to string, before int64, res *cloneio.RewriteResult) error {
	if fl.json {
		return printJSON(map[string]any{
			"image": from, "output": to, "bytes_before": before, "image_bytes": res.ImageBytes,
			"stored_chunks": res.StoredChunks, "zero_chunks": res.ZeroChunks, "recompressed_chunks": res.Recompressed,
			"compression": res.Compression.String(), "digest": imagefmt.DigestString(res.Digest), "seconds": res.Wall.Seconds(),
		})
	}
	if q, _ := cmd.Flags().GetBool("quiet"); !q {
		fmt.Fprintf(os.Stderr, "%s: %s -> %s, %d chunks stored (%s) in %s\n", headline, humanBytes(before),
			humanBytes(res.ImageBytes), res.StoredChunks, res.Compression, res.Wall.Round(time.Millisecond))
	}
	return nil
}

func newFlattenCmd() *cobra.Command {
	var fl rewriteFlags
	cmd := &cobra.Command{
		Use:   "flatten IMAGE OUT",
		Short: "Write one standalone image of an image's newest (or --at) state, or of a delta chain",
		Long: `Flatten writes OUT, a standalone image of the disk IMAGE shows: its newest commit (or
commit N with --at N) as the only commit, without superseded chunks or history; of a
delta image, the disk it composes with the images under it, needing none of them.

OUT keeps IMAGE's UUID and digest, so a delta made over that state also opens over
OUT (with --base OUT). Chunks are copied as stored, each checked against its
checksum first; --compress recompresses them. OUT is written under a temporary
name, synced and renamed: an interrupted flatten leaves no OUT (and IMAGE is only
read; a kill -9 may leave a hidden .OUT.part-* file, safe to delete). An existing
OUT is replaced only with --force.`,
		Example: `  dimg flatten patch.dimg standalone.dimg
  dimg flatten --at 2 golden.dimg golden-v2.dimg
  dimg flatten --compress zstd patch.dimg for-the-network.dimg`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error { return runFlatten(cmd, args[0], args[1], fl, "flatten") },
	}
	fl.add(cmd, true, "recompress chunks: `lz4`, zstd or zstd:LEVEL (default: keep each as stored)")
	addImageFlags(cmd)
	return cmd
}

func runFlatten(cmd *cobra.Command, path, out string, fl rewriteFlags, label string) error {
	opt, err := fl.options(cmd, label, label == "convert")
	if err != nil {
		return err
	}
	src, err := openImage(cmd, path)
	if err != nil {
		return err
	}
	defer src.Close()
	img := src.Image()
	opt.Message = fmt.Sprintf("%s of %s at commit %d", label, path, img.Commit().Number)
	if m := img.Commit().Message; m != "" {
		opt.Message += ": " + m
	}
	prog := newProgress(cmd, label)
	opt.Progress = prog
	// Ctrl-C cancels the context: RewriteTo stops and removes its
	// temporary file.
	res, err := cloneio.RewriteTo(cmd.Context(), img, out, fl.force, opt)
	prog.Finish()
	if err != nil {
		return err
	}
	return printRewrite(cmd, fl, fmt.Sprintf("%sed %s to %s", label, path, out), path, out, img.FileSize(), res)
}

func newCompactCmd() *cobra.Command {
	var fl rewriteFlags
	cmd := &cobra.Command{
		Use:   "compact IMAGE",
		Short: "Rewrite an image without superseded chunks and history",
		Long: `Compact rewrites IMAGE as its newest state alone: one commit, without the chunks
and index nodes that later commits superseded. The disk, the UUID and the digest stay
the same; the history does not (dimg log shows one commit afterwards, and --at can
no longer read older commits). A delta stays a delta over the same base, holding
only the chunks that differ from it. --compress also recompresses every chunk.

IMAGE is written anew under a temporary name, synced, checked and renamed over
IMAGE: a crash or kill at any point leaves IMAGE as it was or compacted, never
damaged (a kill -9 may leave a hidden .IMAGE.part-* file, safe to delete). Compact takes IMAGE's writer lock, so it is refused while a read-write
mount or another writer holds it, and while a read-write mount's changes wait in
IMAGE.scratch (dimg recover). Readers that have IMAGE open keep reading the old
file. Deltas made over an older commit of IMAGE no longer open over it afterwards;
deltas made over its newest commit do.`,
		Example: `  dimg compact golden.dimg
  dimg compact --compress zstd golden.dimg`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runCompact(cmd, args[0], fl) },
	}
	fl.add(cmd, false, "also recompress every chunk: `lz4`, zstd or zstd:LEVEL")
	addBaseFlag(cmd)
	return cmd
}

func runCompact(cmd *cobra.Command, path string, fl rewriteFlags) error {
	opt, err := fl.options(cmd, "compact", false)
	if err != nil {
		return err
	}
	base, _ := cmd.Flags().GetString("base")
	prog := newProgress(cmd, "compact")
	opt.Progress = prog
	res, err := cloneio.Compact(cmd.Context(), path, cloneio.CompactOptions{RewriteOptions: opt, BasePath: base})
	prog.Finish()
	if err != nil {
		return err
	}
	return printRewrite(cmd, fl, fmt.Sprintf("compacted %s (%d commits to 1)", path, res.Commits), path, path, res.Before, res.RewriteResult)
}

func newConvertCmd() *cobra.Command {
	var fl rewriteFlags
	cmd := &cobra.Command{
		Use:   "convert IMAGE OUT --compress lz4|zstd[:LEVEL]",
		Short: "Rewrite an image with another compression method (a version 1 image becomes version 2)",
		Long: `Convert writes OUT, IMAGE's newest state (or commit N with --at N) with every chunk
recompressed with --compress: zstd for smaller images that travel over networks, lz4
for the fastest reads and writes. A version 1 image becomes a version 2 image, which
takes commits (dimg mount --rw). Like flatten, OUT is one commit without history or
base, with IMAGE's UUID and digest; it is written under a temporary name, synced
and renamed, and replaces an existing file only with --force. To convert IMAGE in
place, use 'dimg compact --compress'.`,
		Example: `  dimg convert --compress zstd backup.dimg backup-zstd.dimg
  dimg convert --compress zstd:9 old-v1.dimg new.dimg
  dimg convert --compress lz4 backup-zstd.dimg fast.dimg`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error { return runFlatten(cmd, args[0], args[1], fl, "convert") },
	}
	fl.add(cmd, true, "the method: `lz4`, zstd or zstd:LEVEL (1-22) (required)")
	addImageFlags(cmd)
	return cmd
}
