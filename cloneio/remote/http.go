package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// HTTPOptions configure an HTTP backend; the zero value is the default.
type HTTPOptions struct {
	// Client makes the requests (default: one with the timeouts below
	// and enough idle connections per host for parallel reads).
	Client *http.Client
	// StallTimeout fails a request whose response or body makes no
	// progress for this long (default 30 s); File then retries it.
	StallTimeout time.Duration
	// Header is added to every request (an Authorization header).
	Header http.Header
}

// HTTP is the Backend of http:// and https:// URLs: GET with a Range
// header, redirects followed once and their final URL kept (a redirect to
// a signed URL is resolved again when the target answers 401, 403 or 404:
// the signature may have expired).
type HTTP struct {
	client *http.Client
	stall  time.Duration
	header http.Header
}

var _ Backend = (*HTTP)(nil)

// NewHTTP returns an HTTP backend.
func NewHTTP(opt HTTPOptions) *HTTP {
	h := &HTTP{client: opt.Client, stall: opt.StallTimeout, header: opt.Header}
	if h.stall <= 0 {
		h.stall = 30 * time.Second
	}
	if h.client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 32
		tr.ResponseHeaderTimeout = h.stall
		tr.DialContext = (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		// Compression would make Content-Length and the range counts
		// disagree; images are compressed already.
		tr.DisableCompression = true
		h.client = &http.Client{Transport: tr}
	}
	return h
}

// Open resolves u's redirects and learns the object's size and version
// with a one-byte range request (a HEAD is not always allowed where a GET
// is, e.g. on a URL signed for GET); a server that answers it with the
// whole object does not serve ranges (ErrNoRange).
func (h *HTTP) Open(ctx context.Context, u *url.URL) (Object, error) {
	o := &httpObject{h: h, orig: u}
	id, err := o.resolve(ctx)
	if err != nil {
		return nil, err
	}
	o.id = id
	return o, nil
}

type httpObject struct {
	h    *HTTP
	orig *url.URL
	id   Identity

	mu    sync.Mutex // guards final
	final *url.URL   // where the redirects ended; nil: orig has none
}

func (o *httpObject) Size() int64        { return o.id.Size }
func (o *httpObject) Identity() Identity { return o.id }
func (o *httpObject) Close() error       { return nil }

// resolve asks orig for its first byte, following redirects, and keeps
// the final URL.
func (o *httpObject) resolve(ctx context.Context) (Identity, error) {
	resp, cancel, err := o.get(ctx, o.orig, 0, 1)
	if err != nil {
		return Identity{}, err
	}
	defer cancel()
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<10))
	id := o.identity(resp)
	switch resp.StatusCode {
	case http.StatusPartialContent:
		_, _, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || total < 0 {
			return Identity{}, fmt.Errorf("remote: %s: Content-Range %q: %w", redact(o.orig), resp.Header.Get("Content-Range"), errBadRange)
		}
		id.Size = total
	case http.StatusOK:
		return Identity{}, fmt.Errorf("%s: %w", redact(o.orig), ErrNoRange)
	case http.StatusRequestedRangeNotSatisfiable:
		// An empty object: not an image, but say what it is.
		id.Size = 0
	default:
		return Identity{}, statusError(o.orig, resp)
	}
	if f := resp.Request.URL; f.String() != o.orig.String() {
		o.mu.Lock()
		o.final = f
		o.mu.Unlock()
	}
	return id, nil
}

// identity reads the version headers of a response.
func (o *httpObject) identity(resp *http.Response) Identity {
	id := Identity{URL: stripQuery(o.orig), ETag: resp.Header.Get("ETag")}
	if lm, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		id.LastModified = lm
	}
	return id
}

// get sends a range request for [off, off+n) to u; the returned cancel
// ends the request (call it after closing the body).
func (o *httpObject) get(ctx context.Context, u *url.URL, off, n int64) (*http.Response, context.CancelFunc, error) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		cancel()
		return nil, nil, Permanent(fmt.Errorf("remote: %s: %w", redact(u), err))
	}
	for k, v := range o.h.header {
		req.Header[k] = v
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	// The bytes as stored: a transparent gzip would change the lengths.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := o.h.client.Do(req)
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("remote: %s: %w", redact(u), err)
	}
	return resp, cancel, nil
}

// ReadRange implements Object.
func (o *httpObject) ReadRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	if off < 0 || n <= 0 || off+n > o.id.Size {
		return nil, Permanent(fmt.Errorf("remote: %s: range [%d, %d) outside the object's %d bytes", redact(o.orig), off, off+n, o.id.Size))
	}
	o.mu.Lock()
	u := o.final
	o.mu.Unlock()
	redirected := u != nil
	if u == nil {
		u = o.orig
	}
	resp, cancel, err := o.get(ctx, u, off, n)
	if err != nil {
		return nil, err
	}
	if redirected && (resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone) {
		// The redirect's target may have expired (a signed URL): ask
		// the original URL again.
		resp.Body.Close()
		cancel()
		o.mu.Lock()
		o.final = nil
		o.mu.Unlock()
		if resp, cancel, err = o.get(ctx, o.orig, off, n); err != nil {
			return nil, err
		}
		if f := resp.Request.URL; f.String() != o.orig.String() {
			o.mu.Lock()
			o.final = f
			o.mu.Unlock()
		}
	}
	if err := o.check(resp, off, n); err != nil {
		resp.Body.Close()
		cancel()
		return nil, err
	}
	return newStallReader(resp.Body, cancel, o.h.stall), nil
}

// check accepts a response only when it is the range [off, off+n) of the
// version opened.
func (o *httpObject) check(resp *http.Response, off, n int64) error {
	name := redact(o.orig)
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK:
		if off == 0 && n == o.id.Size && !o.identity(resp).changedFrom(o.id) {
			return nil // the whole object, as asked
		}
		return fmt.Errorf("%s: %w", name, ErrNoRange)
	case http.StatusPreconditionFailed, http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("%s: %w (HTTP %s)", name, ErrChanged, resp.Status)
	default:
		return statusError(o.orig, resp)
	}
	got := o.identity(resp)
	start, end, total, err := parseContentRange(resp.Header.Get("Content-Range"))
	if err != nil {
		return fmt.Errorf("remote: %s: Content-Range %q: %w", name, resp.Header.Get("Content-Range"), errBadRange)
	}
	got.Size = total
	if total >= 0 && got.changedFrom(o.id) {
		return fmt.Errorf("%s: %w: opened as %s, now %s", name, ErrChanged, o.id, got)
	}
	if start != off || end != off+n-1 {
		return fmt.Errorf("remote: %s: asked for bytes %d-%d, the server sent %d-%d: %w", name, off, off+n-1, start, end, errBadRange)
	}
	if cl := resp.ContentLength; cl >= 0 && cl != n {
		return fmt.Errorf("remote: %s: asked for %d bytes, the response has %d: %w", name, n, cl, errBadRange)
	}
	return nil
}

// changedFrom is !Same for the fields a response has (a size of -1: not
// given).
func (id Identity) changedFrom(opened Identity) bool {
	if id.Size < 0 {
		id.Size = opened.Size
	}
	return !id.Same(opened)
}

// errBadRange: a response that is not the range asked for (retried: a
// proxy or a cache in the way may get it right the next time).
var errBadRange = errors.New("wrong byte range in the response")

// parseContentRange parses "bytes START-END/TOTAL" (TOTAL may be "*": -1).
func parseContentRange(s string) (start, end, total int64, err error) {
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, 0, errBadRange
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, 0, errBadRange
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, errBadRange
	}
	if start, err = strconv.ParseInt(a, 10, 64); err != nil {
		return 0, 0, 0, errBadRange
	}
	if end, err = strconv.ParseInt(b, 10, 64); err != nil || end < start {
		return 0, 0, 0, errBadRange
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total <= end {
			return 0, 0, 0, errBadRange
		}
	}
	return start, end, total, nil
}

// statusError maps a failed response to an error: 404 and 410 are
// ErrNotFound, 401 and 403 ErrDenied, other 4xx permanent, 5xx and 429
// transient.
func statusError(u *url.URL, resp *http.Response) error {
	name := redact(u)
	switch c := resp.StatusCode; {
	case c == http.StatusNotFound || c == http.StatusGone:
		return fmt.Errorf("%s: %w (HTTP %s)", name, ErrNotFound, resp.Status)
	case c == http.StatusUnauthorized || c == http.StatusForbidden:
		return fmt.Errorf("%s: %w (HTTP %s)", name, ErrDenied, resp.Status)
	case c == http.StatusTooManyRequests || c >= 500:
		return fmt.Errorf("remote: %s: HTTP %s", name, resp.Status)
	}
	return Permanent(fmt.Errorf("remote: %s: unexpected HTTP %s", name, resp.Status))
}

// stripQuery is u without its query and fragment (a signature, a token).
func stripQuery(u *url.URL) string {
	c := *u
	c.RawQuery, c.Fragment, c.User = "", "", nil
	return c.String()
}

// redact is u for messages: without its query (which may hold a
// signature) or password.
func redact(u *url.URL) string {
	s := stripQuery(u)
	if u.RawQuery != "" {
		s += "?…"
	}
	return s
}

// stallReader is a response body that fails when no byte arrives for the
// stall time (a connection that hangs without closing), and ends its
// request when closed.
type stallReader struct {
	body   io.ReadCloser
	cancel context.CancelFunc
	stall  time.Duration
	timer  *time.Timer
	mu     sync.Mutex
	fired  bool
}

func newStallReader(body io.ReadCloser, cancel context.CancelFunc, stall time.Duration) *stallReader {
	s := &stallReader{body: body, cancel: cancel, stall: stall}
	s.timer = time.AfterFunc(stall, func() {
		s.mu.Lock()
		s.fired = true
		s.mu.Unlock()
		cancel()
	})
	return s
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.body.Read(p)
	if n > 0 {
		s.timer.Reset(s.stall)
	}
	if err != nil && err != io.EOF {
		s.mu.Lock()
		fired := s.fired
		s.mu.Unlock()
		if fired {
			err = fmt.Errorf("remote: no data for %v: %w", s.stall, errStalled)
		}
	}
	return n, err
}

func (s *stallReader) Close() error {
	s.timer.Stop()
	err := s.body.Close()
	s.cancel()
	return err
}

// errStalled: a response that stopped sending (retried).
var errStalled = errors.New("transfer stalled")
