package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/cloneio"
	"github.com/dimg-project/dimg/cloneio/objstore"
	"github.com/dimg-project/dimg/imagefmt"
)

func newCaptureCmd() *cobra.Command {
	var (
		force     bool
		sector    bool
		chunkSize int
		jsonOut   bool
		compress  string
	)
	cmd := &cobra.Command{
		Use:   "capture SOURCE IMAGE",
		Short: "Capture a disk (block device or raw disk file) into an image",
		Long: `Capture reads SOURCE, a block device or a raw disk image file, and writes IMAGE.

Only the bytes the filesystems use are stored (ext2/3/4, FAT12/16/32, NTFS; swap
contents are skipped; unknown filesystems are copied sector by sector); partition
tables, boot code and the gap before the first partition are always kept. All-zero
chunks are not stored. Chunks are compressed on all cores with lz4 (the default:
fast to write and read) or, with --compress zstd[:LEVEL], with zstd: a smaller
image for slow networks and storage, at some CPU cost (LEVEL 1, the default, to
22; images made so need a dimg that reads zstd). 'dimg convert' changes an image's
method later.

IMAGE is written under a temporary name and renamed when complete, so an
interrupted capture never leaves a file that looks like an image. IMAGE may be
"-" to write to standard output (a pipe or socket).

IMAGE may also be a URL: s3://BUCKET/KEY streams the image into an S3 multipart
upload (no local copy; AWS, MinIO, Ceph RGW, SeaweedFS...: credentials, region
and endpoint come from the AWS environment and files, see 'dimg push --help'),
completed only when the capture is; http(s)://... PUTs it to a WebDAV server
under a temporary name and MOVEs it into place.`,
		Example: `  dimg capture /dev/sdb backup.dimg
  dimg capture disk.raw disk.dimg --force
  dimg capture /dev/sdb - | ssh host 'cat > backup.dimg'
  dimg capture /dev/sdb - | dimg restore - /dev/sdc
  dimg capture --compress zstd /dev/sdb backup.dimg
  dimg capture --compress zstd:6 /dev/sdb - | ssh host 'cat > backup.dimg'
  dimg capture /dev/sdb s3://backups/host1/sdb.dimg`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			comp, err := parseCompress(compress)
			if err != nil {
				return err
			}
			return runCapture(cmd, args[0], args[1], force, sector, chunkSize, jsonOut, comp)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&force, "force", false, "overwrite IMAGE if it exists")
	f.BoolVar(&sector, "sector", false, "copy every sector, ignoring filesystems")
	f.IntVar(&chunkSize, "chunk-size", 0, fmt.Sprintf("chunk size in bytes, a power of two from %d to %d (default %d)",
		imagefmt.MinChunkSize, imagefmt.MaxChunkSize, imagefmt.DefaultChunkSize))
	f.BoolVar(&jsonOut, "json", false, "print the result as JSON on stdout (not with IMAGE -)")
	f.StringVar(&compress, "compress", "lz4", "chunk compression `METHOD`: lz4, zstd or zstd:LEVEL (1-22)")
	return cmd
}

// parseCompress reads a --compress value (lz4, zstd, zstd:LEVEL).
func parseCompress(s string) (imagefmt.Compression, error) {
	c, err := imagefmt.ParseCompression(s)
	if err != nil {
		return c, usagef("--compress %q: %v", s, err)
	}
	return c, nil
}

func runCapture(cmd *cobra.Command, srcPath, imgPath string, force, sector bool, chunkSize int, jsonOut bool, comp imagefmt.Compression) error {
	ctx := cmd.Context()
	if imgPath == "-" && jsonOut {
		return usagef("--json cannot be used when the image goes to standard output")
	}
	if imgPath == "-" && isTerminal(os.Stdout) {
		return usagef("refusing to write an image to a terminal; redirect standard output or name a file")
	}
	if chunkSize != 0 && (chunkSize < imagefmt.MinChunkSize || chunkSize > imagefmt.MaxChunkSize || chunkSize&(chunkSize-1) != 0) {
		return usagef("--chunk-size %d: must be a power of two from %d to %d", chunkSize, imagefmt.MinChunkSize, imagefmt.MaxChunkSize)
	}
	if imgPath != "-" && !objstore.IsURL(imgPath) {
		// With --force the image would replace the disk it is read from.
		if err := cloneio.CheckDistinct(srcPath, imgPath); err != nil {
			return err
		}
	}
	src, err := cloneio.OpenSource(srcPath)
	if err != nil {
		return err
	}
	defer src.Close()
	if w := cloneio.SourceWarning(src); w != "" {
		fmt.Fprintf(os.Stderr, "dimg: warning: %s\n", w)
	}

	// The output is created before the source is read: an IMAGE that
	// exists (no --force) or cannot be created is refused at once.
	var out io.Writer
	var af *cloneio.AtomicFile
	var up objstore.Upload
	prog := newProgress(cmd, "capture")
	switch {
	case imgPath == "-":
		out = os.Stdout
	case objstore.IsURL(imgPath):
		// The bytes the server has taken are shown beside the capture's
		// own count: on a slow link the upload is what lags.
		if up, err = objstore.Create(ctx, imgPath, objstore.UploadOptions{Force: force, Progress: uploadNote(prog)}); err != nil {
			return err
		}
		defer up.Abort() // no-op after Commit
		defer onInterrupt(up.Abort)()
		out = up
	default:
		if af, err = cloneio.CreateAtomic(imgPath, force); err != nil {
			return err
		}
		defer af.Abort() // no-op after Commit
		defer onInterrupt(af.Abort)()
		out = af
	}
	plan, err := makePlan(src, sector)
	if err != nil {
		return err
	}
	for _, w := range plan.Info.Warnings {
		fmt.Fprintf(os.Stderr, "dimg: warning: %s\n", w)
	}
	res, err := cloneio.Capture(ctx, src, plan, out, cloneio.CaptureOptions{
		ChunkSize: chunkSize, ToolVersion: "dimg " + version, Progress: prog, Compression: comp,
	})
	if err == nil && up != nil {
		err = up.Commit() // the last parts go up with the bar still drawn
	}
	prog.Finish()
	if err != nil {
		return err
	}
	if af != nil {
		if err := af.Commit(); err != nil {
			return err
		}
	}

	summary := map[string]any{
		"image": imgPath, "source": srcPath, "disk_bytes": res.DiskBytes, "image_bytes": res.ImageBytes,
		"read_bytes": res.ReadBytes, "stored_chunks": res.StoredChunks, "zero_chunks": res.ZeroChunks,
		"skipped_chunks": res.SkipChunks, "compression": comp.String(), "digest": imagefmt.DigestString(res.Digest), "seconds": res.Wall.Seconds(),
		"read_seconds": res.ReadTime.Seconds(), "encode_cpu_seconds": res.EncodeTime.Seconds(), "write_seconds": res.WriteTime.Seconds(),
	}
	if jsonOut {
		return printJSON(summary)
	}
	if q, _ := cmd.Flags().GetBool("quiet"); !q {
		ratio := 0.0
		if res.ImageBytes > 0 {
			ratio = float64(res.DiskBytes) / float64(res.ImageBytes)
		}
		fmt.Fprintf(os.Stderr, "captured %s: disk %s, read %s, image %s (%.1f:1) in %s (%s/s)\n",
			srcPath, humanBytes(res.DiskBytes), humanBytes(res.ReadBytes), humanBytes(res.ImageBytes), ratio,
			res.Wall.Round(time.Millisecond), humanBytes(int64(float64(res.DiskBytes)/res.Wall.Seconds())))
	}
	return nil
}
