package main

import (
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/cloneio/objstore"
	"github.com/dimg-project/dimg/internal/progress"
)

// s3Help is how dimg finds an S3 service, for the commands that take an
// s3:// URL.
const s3Help = `S3: s3://BUCKET/KEY works with AWS and S3-compatible stores (MinIO, Ceph RGW,
SeaweedFS...). Credentials, region and endpoint come from the standard AWS
environment and files: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or
AWS_PROFILE and ~/.aws/credentials, SSO, an instance role), AWS_REGION (default
us-east-1), AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL for a store that is not
AWS (requests then use path-style addressing: http://HOST/BUCKET/KEY). An upload
is a multipart upload completed only at the end: a failed or interrupted one is
aborted and leaves no object. A dimg killed (kill -9, power loss) leaves no
object either, but its incomplete upload keeps the parts sent (stored, and
billed on AWS) until a bucket lifecycle rule AbortIncompleteMultipartUpload
removes it.

Web servers: http(s)://HOST/PATH needs PUT, DELETE and WebDAV MOVE (nginx:
dav_methods PUT DELETE MOVE): the image is uploaded under a temporary name
beside PATH and renamed when complete. A server without MOVE is refused before
the upload starts.`

func newPushCmd() *cobra.Command {
	var (
		force   bool
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "push IMAGE URL",
		Short: "Upload an image to S3 or a WebDAV server",
		Long: `Push uploads the image file IMAGE to URL: s3://BUCKET/KEY or http(s)://HOST/PATH.
IMAGE is checked first (header, index and footer). Nothing at URL looks like an
image until the whole of it is stored: a failed or interrupted push leaves no
object or file there. An object that exists at URL is refused without --force.

` + s3Help,
		Example: `  dimg push backup.dimg s3://backups/host1/sdb.dimg
  AWS_ENDPOINT_URL=http://minio:9000 AWS_PROFILE=lab dimg push disk.dimg s3://images/disk.dimg
  dimg push disk.dimg https://files.example/images/disk.dimg`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPush(cmd, args[0], args[1], force, jsonOut)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&force, "force", false, "replace an object that exists at URL")
	f.BoolVar(&jsonOut, "json", false, "print the result as JSON on stdout")
	return cmd
}

func runPush(cmd *cobra.Command, imgPath, rawURL string, force, jsonOut bool) error {
	if !objstore.IsURL(rawURL) {
		return usagef("push: %q is not a URL (s3://BUCKET/KEY, http://... or https://...); to copy a file, use cp", rawURL)
	}
	prog := newProgress(cmd, "push")
	res, err := objstore.Push(cmd.Context(), imgPath, rawURL, objstore.UploadOptions{Force: force, Progress: prog})
	prog.Finish()
	if err != nil {
		return err
	}
	if jsonOut {
		return printJSON(map[string]any{"image": imgPath, "url": objstore.Redact(rawURL), "bytes": res.Bytes, "seconds": res.Wall.Seconds()})
	}
	if q, _ := cmd.Flags().GetBool("quiet"); !q {
		fmt.Fprintf(os.Stderr, "pushed %s to %s: %s in %s (%s/s)\n", imgPath, objstore.Redact(rawURL), humanBytes(res.Bytes),
			res.Wall.Round(time.Millisecond), humanBytes(int64(float64(res.Bytes)/max(res.Wall.Seconds(), 1e-3))))
	}
	return nil
}

// uploadNote turns an upload's acknowledged bytes into a note on bar
// ("uploaded 1.2 GiB"), for a capture whose own count is the disk read.
func uploadNote(bar *progressBar) progress.Reporter {
	if bar == nil {
		return nil
	}
	return &noteCounter{bar: bar}
}

type noteCounter struct {
	bar  *progressBar
	done atomic.Int64
}

func (n *noteCounter) Start(string, int64) {}

func (n *noteCounter) Add(k int64) {
	n.bar.Note("uploaded " + humanBytes(n.done.Add(k)))
}
