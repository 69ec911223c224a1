package objstore

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/dimg-project/dimg/internal/progress"
)

// Upload is an image being written to a URL: written like a file, visible
// at the URL only after Commit. Write and Commit are called from one
// goroutine; Abort may be called from any, at any time.
type Upload interface {
	io.Writer
	// Commit sends what is buffered and makes the object appear at the
	// URL, complete. On failure nothing appears there.
	Commit() error
	// Abort discards the upload (aborts the multipart upload, deletes the
	// temporary file). It is a no-op after Commit or another Abort.
	Abort()
	// Written is the number of bytes the server has acknowledged.
	Written() int64
}

// UploadOptions configure Create; the zero value is a sensible default.
type UploadOptions struct {
	// Force replaces an object that exists at the URL; without it such an
	// object is refused (cloneio.ErrExists) before anything is sent.
	Force bool
	// Size, if known (push), is the upload's length: S3 part sizes are
	// chosen to fit it, a web server gets a Content-Length.
	Size int64
	// PartSize is the first S3 part size (default 32 MiB; at least 5 MiB,
	// S3's minimum). Parts double in size after every 1,000.
	PartSize int
	// Inflight is how many S3 parts are sent at once (default 3). Memory
	// is about (Inflight+1)×PartSize.
	Inflight int
	// Progress, if set, gets Add(n) as the server acknowledges bytes.
	Progress progress.Reporter
	// S3 configures the S3 client (zero: the AWS environment).
	S3 S3Options
	// HTTPClient carries http(s) uploads (default http.DefaultClient).
	HTTPClient *http.Client
}

// Create starts an upload to rawURL (s3://BUCKET/KEY, http:// or
// https://). It checks what it can before any image byte is sent (the
// bucket exists and the credentials work, no object is in the way, a web
// server can rename), so a capture that could not be stored fails before
// it reads the disk. ctx bounds the whole upload, Commit included.
func Create(ctx context.Context, rawURL string, opt UploadOptions) (Upload, error) {
	switch {
	case strings.HasPrefix(strings.ToLower(rawURL), "s3://"):
		bucket, key, err := ParseS3URL(rawURL)
		if err != nil {
			return nil, err
		}
		s, err := NewS3(ctx, opt.S3)
		if err != nil {
			return nil, err
		}
		return s.CreateUpload(ctx, bucket, key, opt)
	case IsURL(rawURL):
		return createHTTP(ctx, rawURL, opt)
	}
	return nil, fmt.Errorf("objstore: %q is not an s3://, http:// or https:// URL", rawURL)
}
