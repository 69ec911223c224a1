package objstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"

	"github.com/dimg-project/dimg/cloneio"
	"github.com/dimg-project/dimg/internal/progress"
)

// httpUpload PUTs the image to a temporary name beside the target, in one
// request whose body is fed by Write through a pipe, and renames it into
// place with WebDAV MOVE on Commit. A web server without MOVE is found
// before the upload (Create renames a small probe), so a capture is never
// sent only to be thrown away.
type httpUpload struct {
	c          *http.Client
	ctx        context.Context
	ending     // cancel ends ctx
	final, tmp *url.URL
	force      bool
	prog       progress.Reporter

	pw   *io.PipeWriter
	resp chan error // the PUT's outcome

	mu      sync.Mutex // guards written
	written int64
}

func createHTTP(ctx context.Context, rawURL string, opt UploadOptions) (Upload, error) {
	final, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("objstore: %q: %w", rawURL, err)
	}
	dir, base := path.Split(final.Path)
	if base == "" {
		return nil, fmt.Errorf("objstore: %s: names a folder, not a file", redact(final))
	}
	c := opt.HTTPClient
	if c == nil {
		c = http.DefaultClient
	}
	u := &httpUpload{c: c, final: final, force: opt.Force, prog: progress.Or(opt.Progress)}
	if !opt.Force {
		switch st, err := u.do(ctx, http.MethodHead, final, nil, -1, nil); {
		case err != nil:
			return nil, err
		case st == http.StatusOK:
			return nil, fmt.Errorf("%w: %s (use --force to overwrite)", cloneio.ErrExists, redact(final))
		case st == http.StatusUnauthorized || st == http.StatusForbidden:
			return nil, fmt.Errorf("%s: %s: %w", redact(final), http.StatusText(st), ErrAccess)
		}
	}
	// The probe: a tiny file PUT and renamed (then deleted) proves the
	// server takes PUT and MOVE in that folder before the image is read.
	probe, moved := sibling(final, dir, base, "probe"), sibling(final, dir, base, "probe")
	if err := u.put(ctx, probe, strings.NewReader(""), 0); err != nil {
		return nil, err
	}
	if err := u.move(ctx, probe, moved, false); err != nil {
		u.delete(probe)
		return nil, err
	}
	u.delete(moved)

	u.tmp = sibling(final, dir, base, "part")
	u.ctx, u.cancel = context.WithCancel(ctx)
	pr, pw := io.Pipe()
	u.pw, u.resp = pw, make(chan error, 1)
	size := int64(-1)
	if opt.Size > 0 {
		size = opt.Size
	}
	go func() {
		err := u.put(u.ctx, u.tmp, pr, size)
		pr.CloseWithError(errors.New("upload ended")) // unblocks Write if the server stopped reading
		u.resp <- err
	}()
	return u, nil
}

// sibling is a hidden temporary name beside the target: ".NAME.KIND-RANDOM".
func sibling(final *url.URL, dir, base, kind string) *url.URL {
	var b [6]byte
	rand.Read(b[:])
	t := *final
	t.Path = dir + "." + base + "." + kind + "-" + hex.EncodeToString(b[:])
	t.RawPath = ""
	return &t
}

// redact is the URL without its password, for messages.
func redact(u *url.URL) string { return u.Redacted() }

// Redact is rawURL without a password it may hold, for messages.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL
	}
	return u.Redacted()
}

// do sends one request and returns its status; the body is discarded.
func (u *httpUpload) do(ctx context.Context, method string, target *url.URL, body io.Reader, size int64, hdr http.Header) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, target.String(), body)
	if err != nil {
		return 0, fmt.Errorf("objstore: %s %s: %w", method, redact(target), err)
	}
	if body != nil {
		req.ContentLength = size
		if size == 0 {
			req.Body = http.NoBody
		}
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := u.c.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, fmt.Errorf("%s: %s: %w", redact(target), method, err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// statusError names a refused request.
func statusError(target *url.URL, method string, st int) error {
	err := fmt.Errorf("%s: %s: the server answered %d %s", redact(target), method, st, http.StatusText(st))
	switch st {
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("%w: %w", err, ErrAccess)
	case http.StatusNotFound, http.StatusConflict:
		// WebDAV answers 409 to a PUT into a folder that does not exist.
		return fmt.Errorf("%w (does the folder exist?): %w", err, ErrNotFound)
	}
	return err
}

func (u *httpUpload) put(ctx context.Context, target *url.URL, body io.Reader, size int64) error {
	st, err := u.do(ctx, http.MethodPut, target, body, size, http.Header{"Content-Type": {"application/octet-stream"}})
	switch {
	case err != nil:
		return err
	case st == http.StatusMethodNotAllowed || st == http.StatusNotImplemented:
		return fmt.Errorf("%w: the server does not accept PUT (nginx: dav_methods PUT DELETE MOVE)", statusError(target, "PUT", st))
	case st/100 != 2:
		return statusError(target, "PUT", st)
	}
	return nil
}

// move renames from to to with WebDAV MOVE; without overwrite an existing
// target is cloneio.ErrExists.
func (u *httpUpload) move(ctx context.Context, from, to *url.URL, overwrite bool) error {
	ow := "F"
	if overwrite {
		ow = "T"
	}
	dest := *to
	dest.User = nil
	st, err := u.do(ctx, "MOVE", from, nil, -1, http.Header{"Destination": {dest.String()}, "Overwrite": {ow}})
	switch {
	case err != nil:
		return err
	case st == http.StatusPreconditionFailed:
		return fmt.Errorf("%w: %s (use --force to overwrite)", cloneio.ErrExists, redact(to))
	case st == http.StatusMethodNotAllowed || st == http.StatusNotImplemented || st == http.StatusBadRequest:
		return fmt.Errorf("%s: MOVE answered %d %s: %w: dimg uploads under a temporary name and renames it when complete, so that a partial upload never looks like an image; enable WebDAV MOVE on the server (nginx: dav_methods PUT DELETE MOVE)",
			redact(u.final), st, http.StatusText(st), ErrNoMove)
	case st/100 != 2:
		return statusError(from, "MOVE", st)
	}
	return nil
}

// delete removes a temporary file, best effort, on its own context (the
// upload's may be cancelled).
func (u *httpUpload) delete(target *url.URL) {
	ctx, cancel := context.WithTimeout(context.Background(), abortTimeout)
	defer cancel()
	u.do(ctx, http.MethodDelete, target, nil, -1, nil)
}

func (u *httpUpload) Write(p []byte) (int, error) {
	n, err := u.pw.Write(p)
	u.mu.Lock()
	u.written += int64(n)
	u.mu.Unlock()
	u.prog.Add(int64(n))
	if err != nil {
		// The PUT ended early: its error says why.
		select {
		case perr := <-u.resp:
			u.resp <- perr
			if perr != nil {
				return n, perr
			}
		default:
		}
		return n, fmt.Errorf("%s: upload: %w", redact(u.final), err)
	}
	return n, nil
}

// Written counts the bytes handed to the connection (HTTP has no per-part
// acknowledgement; the server confirms all of them at Commit).
func (u *httpUpload) Written() int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.written
}

func (u *httpUpload) Commit() error {
	if u.isEnded() {
		return errors.New("objstore: commit after commit or abort")
	}
	u.pw.Close()
	err := <-u.resp
	u.resp <- err
	if err == nil {
		err = u.move(u.ctx, u.tmp, u.final, u.force)
	}
	if err != nil {
		u.Abort()
		return err
	}
	u.committed()
	return nil
}

// Abort stops the PUT and deletes the temporary file.
func (u *httpUpload) Abort() {
	u.abort(func() {
		u.pw.CloseWithError(errors.New("upload aborted"))
		u.cancel()
		<-u.resp // the request has ended: the server holds what it will hold
		u.resp <- nil
		u.delete(u.tmp)
	})
}
