package objstore

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/dimg-project/dimg/imagefmt"
	"github.com/dimg-project/dimg/internal/filekind"
	"github.com/dimg-project/dimg/internal/progress"
)

// PushResult is what Push did.
type PushResult struct {
	Bytes int64 // the image file's size, all uploaded
	Wall  time.Duration
}

// Push uploads the image file at path to rawURL (see Create), after
// checking that it is a readable standalone image (header, index and
// footer: a file that is not an image, or one truncated, is refused
// before anything is sent). opt.Progress gets an "uploading" phase in
// bytes. If the file changes while it is sent, the upload is aborted.
func Push(ctx context.Context, path, rawURL string, opt UploadOptions) (*PushResult, error) {
	start := time.Now()
	kind, st, err := filekind.Stat(path)
	if err != nil {
		return nil, err
	}
	if kind != filekind.Regular {
		return nil, fmt.Errorf("%s is not a regular file: push takes an image file", path)
	}
	switch ref, err := imagefmt.ReadBaseRef(path); {
	case err != nil:
		return nil, err
	case ref != nil:
		return nil, fmt.Errorf("%s is a delta image over %s: push a standalone image ('dimg flatten %s OUT' makes one)", path, ref.PathHint, path)
	}
	img, err := imagefmt.Open(path)
	if err != nil {
		return nil, err
	}
	img.Close()
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err = f.Stat(); err != nil {
		return nil, err
	}
	opt.Size = st.Size()
	prog := progress.Or(opt.Progress)
	prog.Start("uploading", st.Size())
	opt.Progress = prog
	up, err := Create(ctx, rawURL, opt)
	if err != nil {
		return nil, err
	}
	defer up.Abort() // no-op after Commit
	if _, err := io.CopyBuffer(up, &ctxReader{ctx: ctx, r: io.LimitReader(f, st.Size())}, make([]byte, 1<<20)); err != nil {
		return nil, err
	}
	// An image changed under the upload (a commit, a compact) would go up
	// as a mix of two versions.
	if now, err := os.Stat(path); err != nil || now.Size() != st.Size() || !now.ModTime().Equal(st.ModTime()) {
		return nil, fmt.Errorf("%s changed while it was uploaded; nothing was stored at %s", path, Redact(rawURL))
	}
	if err := up.Commit(); err != nil {
		return nil, err
	}
	return &PushResult{Bytes: st.Size(), Wall: time.Since(start)}, nil
}

// ctxReader ends a copy when ctx does.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
