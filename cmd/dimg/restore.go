package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/cloneio"
	"github.com/dimg-project/dimg/cloneio/remote"
	"github.com/dimg-project/dimg/fsdrivers/parttable"
	"github.com/dimg-project/dimg/imagefmt"
	"github.com/dimg-project/dimg/internal/filekind"
	"github.com/dimg-project/dimg/internal/progress"
)

func newRestoreCmd() *cobra.Command {
	var opt restoreFlags
	cmd := &cobra.Command{
		Use:   "restore IMAGE TARGET",
		Short: "Restore an image to a disk or a file",
		Long: `Restore writes the disk held in IMAGE to TARGET, a block device or a file.

Every chunk is checked against its checksum before it is written. A file TARGET
is created sparse (holes where the image stores nothing) under a temporary name
and renamed when complete; an existing file is replaced only with --force. A
block device TARGET must not be mounted or in use and must be at least as large
as the image's disk; on a device, chunks that were unused on the source are left
as they are (or discarded with --discard).

IMAGE may be "-" to read the image from standard input. An image with several
commits restores its newest commit, from a file or a pipe; --at N restores commit N
(a file only). A delta image restores the disk it composes with the images under it
(--base PATH when its base moved); a delta cannot come through a pipe, since its
base's chunks are not in it, and is refused before anything is written.

The identity options personalize the restored disk once it is written (see dimg
personalize --help): every machine of a room gets its own hostname, machine id and
UUIDs in the same step.
` + shrinkHelp,
		Example: `  dimg restore backup.dimg /dev/sdc
  dimg restore backup.dimg disk.raw
  dimg restore --verify backup.dimg /dev/sdc
  ssh host 'cat backup.dimg' | dimg restore - /dev/sdc
  dimg restore --at 2 golden.dimg /dev/sdc      # the state of commit 2 (dimg log)
  dimg restore patch.dimg disk.raw               # a delta: reads golden.dimg under it
  dimg restore --dry-run backup.dimg /dev/sdd     # a smaller disk: print the plan
  dimg restore --shrink backup.dimg /dev/sdd      # ... and write it
  dimg restore --shrink --size 3G backup.dimg small.raw`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runRestore(cmd, args[0], args[1], opt)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&opt.force, "force", false, "replace TARGET if it is an existing regular file")
	f.BoolVar(&opt.verify, "verify", false, "read TARGET back and check it against the image's checksums")
	f.BoolVar(&opt.discard, "discard", false, "block devices: discard (TRIM) ranges the image does not use")
	f.BoolVar(&opt.json, "json", false, "print the result as JSON")
	addLayoutFlags(cmd, &opt.layout)
	addShrinkFlags(cmd, &opt.shrink)
	addPersonalizeFlags(cmd, &opt.pers)
	addImageFlags(cmd)
	return cmd
}

type restoreFlags struct {
	force, verify, discard, json bool
	layout                       layoutFlags
	shrink                       shrinkFlags
	pers                         personalizeFlags
}

// layoutFlags are shared by restore and clone.
type layoutFlags struct {
	grow, newGUID bool
	size          string
}

func addLayoutFlags(cmd *cobra.Command, l *layoutFlags) {
	f := cmd.Flags()
	f.BoolVar(&l.grow, "grow", false, "extend the last partition to the end of a larger target and grow its filesystem (ext2/3/4)")
	f.BoolVar(&l.newGUID, "new-disk-guid", false, "give the copy new GPT disk and partition GUIDs (MBR: a new disk signature)")
	f.StringVar(&l.size, "size", "", "file targets: make the target this large (e.g. 20G) instead of the source disk's size")
}

func (l layoutFlags) options() (cloneio.LayoutOptions, int64, error) {
	var size int64
	if l.size != "" {
		n, err := parseSize(l.size)
		if err != nil {
			return cloneio.LayoutOptions{}, 0, usagef("--size %q: %v", l.size, err)
		}
		size = n
	}
	return cloneio.LayoutOptions{Grow: l.grow, NewGUIDs: l.newGUID}, size, nil
}

// check refuses --grow and --new-disk-guid on a disk without a partition
// table before anything is written (FitLayout would refuse them only after
// the whole disk was copied).
func (l layoutFlags) check(table string) error {
	if table != parttable.KindNone {
		return nil
	}
	switch {
	case l.grow:
		return usagef("--grow: the disk has no partition table to grow (a bare filesystem)")
	case l.newGUID:
		return usagef("--new-disk-guid: the disk has no partition table to give new GUIDs")
	}
	return nil
}

func runRestore(cmd *cobra.Command, imgPath, targetPath string, opt restoreFlags) error {
	ctx := cmd.Context()
	if _, err := opt.pers.options(""); err != nil {
		return err
	}
	var (
		img    *imagefmt.Reader
		stream *imagefmt.StreamReader
		hdr    *imagefmt.Header
		err    error
	)
	streamIn, err := streamInput(imgPath)
	if err != nil {
		return err
	}
	if streamIn != nil {
		if atOrBase(cmd) {
			return usagef("restore: --at and --base need IMAGE as a file; a stream restores its newest commit")
		}
		if isTerminal(streamIn) {
			return usagef("restore: image %q is a terminal; pipe the image in", imgPath)
		}
		name := imgPath
		if imgPath == "-" {
			name = "standard input"
		}
		if stream, err = imagefmt.NewStreamReader(streamIn); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		hdr = stream.Header()
	} else {
		// Restoring onto the image's own file (with --force), or onto a
		// loop device over it, would destroy the image as it is read.
		if err := cloneio.CheckDistinct(imgPath, targetPath); err != nil {
			return err
		}
		src, err := openImage(cmd, imgPath)
		if err != nil {
			return err
		}
		defer src.Close()
		// A delta is read through its bases: none may be the target.
		for b := src.Image().Base(); b != nil; b = b.Base() {
			if err := cloneio.CheckDistinct(b.Path(), targetPath); err != nil {
				return err
			}
		}
		img = src.Image()
		hdr = img.Header()
	}
	if di, err := imagefmt.ParseDiskInfo(hdr.Metadata); err == nil {
		if err := opt.layout.check(di.Table); err != nil {
			return err
		}
	}
	target, err := targetBytes(targetPath, opt.layout)
	if err != nil {
		return err
	}
	if err := smallerRefusal(targetPath, target, hdr.DiskSize, opt.shrink); err != nil {
		return err
	}
	if needsShrink(target, hdr.DiskSize, opt.shrink) {
		if img == nil {
			return usagef("restore: onto a smaller target (and for --dry-run) IMAGE must be a file, not a stream: the filesystems are shrunk on an overlay of it")
		}
		return runShrink(cmd, "restore", img, hdr.DiskSize, hdr.SectorSize, int(hdr.ChunkSize), imgPath, targetPath, target, opt)
	}
	var res *cloneio.RestoreResult
	t, lres, err := toTarget(cmd, "restore", targetPath, hdr.DiskSize, hdr.SectorSize, opt, func(t *cloneio.Target, prog progress.Reporter) (err error) {
		ropt := cloneio.RestoreOptions{Progress: prog, Verify: opt.verify}
		if img != nil {
			res, err = cloneio.RestoreImage(ctx, img, t, ropt)
		} else {
			res, err = cloneio.RestoreStream(ctx, stream, t, ropt)
		}
		return err
	})
	if err != nil {
		return err
	}
	printLayout(cmd, lres)
	if err := personalizeTarget(cmd, &opt.pers, "", targetPath); err != nil {
		return err
	}
	if opt.json {
		return printJSON(map[string]any{
			"image": imgPath, "target": targetPath, "disk_bytes": res.DiskBytes, "written_bytes": res.WrittenBytes,
			"zeroed_bytes": res.ZeroedBytes, "unused_bytes": res.UnusedBytes, "verified": res.Verified,
			"seconds": res.Wall.Seconds(), "target_bytes": t.Size, "layout": lres,
		})
	}
	if q, _ := cmd.Flags().GetBool("quiet"); !q {
		v := ""
		if res.Verified {
			v = ", verified"
		}
		fmt.Fprintf(os.Stderr, "restored %s to %s: %s written, %s zero, %s unused in %s%s\n", imgPath, targetPath,
			humanBytes(res.WrittenBytes), humanBytes(res.ZeroedBytes), humanBytes(res.UnusedBytes), res.Wall.Round(time.Millisecond), v)
	}
	return nil
}

// streamInput returns the file to read a streamed image from when IMAGE
// is "-" (standard input) or names a pipe, socket or character device (a
// FIFO, or /dev/fd/N from the shell's <(...)): those cannot be read at
// random, and opening one as an image file would wait for ever. A regular
// file (or anything else) gives nil.
func streamInput(imgPath string) (*os.File, error) {
	if imgPath == "-" {
		return os.Stdin, nil
	}
	if remote.IsURL(imgPath) {
		return nil, nil
	}
	kind, _, err := filekind.Stat(imgPath)
	if err != nil {
		return nil, err
	}
	if kind != filekind.Stream {
		return nil, nil
	}
	return os.Open(imgPath)
}

func printLayout(cmd *cobra.Command, l *cloneio.LayoutResult) {
	if q, _ := cmd.Flags().GetBool("quiet"); q || l == nil {
		return
	}
	if j, _ := cmd.Flags().GetBool("json"); j {
		return
	}
	if l.Relocated {
		fmt.Fprintln(os.Stderr, "moved the GPT backup header and table to the end of the larger target")
	}
	if l.NewGUIDs {
		fmt.Fprintln(os.Stderr, "gave the copy new disk and partition GUIDs")
	}
	if l.Grown != 0 {
		fs := ""
		if l.FSGrown != "" {
			fs = " and its " + l.FSGrown + " filesystem"
		}
		fmt.Fprintf(os.Stderr, "grew partition %d%s to %s\n", l.Grown, fs, humanBytes(l.GrownTo))
	}
	for _, n := range l.Notes {
		fmt.Fprintln(os.Stderr, n)
	}
}

// toTarget is the part restore and clone share: it opens targetPath for a
// disk of diskSize bytes (refusing a smaller one before anything is
// written), runs write with a progress bar, and commits the target, which
// fits the partition table to it (GPT backup, --grow, --new-disk-guid). On
// failure or interrupt a file target's temporary file is removed.
func toTarget(cmd *cobra.Command, label, targetPath string, diskSize int64, sectorSize int, opt restoreFlags,
	write func(t *cloneio.Target, prog progress.Reporter) error) (*cloneio.Target, *cloneio.LayoutResult, error) {
	lopt, size, err := opt.layout.options()
	if err != nil {
		return nil, nil, err
	}
	if size != 0 && size < diskSize {
		return nil, nil, fmt.Errorf("%w: --size %d is smaller than the disk (%d bytes); nothing was written", cloneio.ErrTooSmall, size, diskSize)
	}
	t, err := cloneio.OpenTarget(targetPath, diskSize, sectorSize, cloneio.TargetOptions{
		Force: opt.force, Discard: opt.discard, Size: size, Layout: lopt})
	if err != nil {
		return nil, nil, err
	}
	defer t.Abort() // a no-op once committed
	defer onInterrupt(t.Abort)()
	prog := newProgress(cmd, label)
	err = write(t, prog)
	prog.Finish()
	if err != nil {
		return nil, nil, err
	}
	lres, err := t.Commit(cmd.Context())
	if err != nil {
		return nil, nil, err
	}
	return t, lres, nil
}
