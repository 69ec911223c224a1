package remote

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/dimg-project/dimg/imagefmt"
)

// Options configure a Client; the zero value reads nothing (no backend).
type Options struct {
	// Backends read the URLs of each scheme ("http", "https", "s3").
	Backends map[string]Backend
	// Cache keeps what was fetched (nil: nothing is kept).
	Cache *Cache
	// Parallel is how many requests one object may have in flight when
	// reading ahead (default 4).
	Parallel int
	// Retries is how many times a failed request is tried again in a row
	// (default 8); Backoff the first wait (default 200 ms), doubled each
	// time.
	Retries int
	Backoff time.Duration
	// Logger, if set, gets a line for each retried request.
	Logger *slog.Logger
	// OnFetch, if set, is called with the bytes of each piece received
	// and the File they are of (progress: bytes fetched against the
	// image's size). It must return quickly.
	OnFetch func(f *File, n int64)
}

func (o *Options) parallel() int {
	if o.Parallel <= 0 {
		return 4
	}
	return o.Parallel
}

// Client opens remote objects.
type Client struct {
	opt Options
}

// New returns a Client.
func New(opt Options) *Client { return &Client{opt: opt} }

// IsURL reports whether name is a URL (scheme://…) rather than a path.
func IsURL(name string) bool {
	scheme, rest, ok := strings.Cut(name, "://")
	if !ok || scheme == "" || rest == "" {
		return false
	}
	for i, c := range scheme {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return true
}

// Open opens the object at rawURL, retrying transient failures of the
// first request like any other.
func (c *Client) Open(ctx context.Context, rawURL string) (*File, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("remote: %q: %w", rawURL, err)
	}
	b := c.opt.Backends[strings.ToLower(u.Scheme)]
	if b == nil {
		return nil, fmt.Errorf("remote: %s: no backend reads %s:// URLs", redact(u), u.Scheme)
	}
	var obj Object
	for fails := 1; ; fails++ {
		if obj, err = b.Open(ctx, u); err == nil {
			break
		}
		if IsPermanent(err) || fails > c.opt.retries() || ctx.Err() != nil {
			return nil, err
		}
		if c.opt.Logger != nil {
			c.opt.Logger.Warn("remote open failed, retrying", "url", redact(u), "attempt", fails, "err", err)
		}
		if !sleep(ctx, c.opt.backoff(fails)) {
			return nil, ctx.Err()
		}
	}
	f := newFile(redact(u), obj, &c.opt)
	f.requests.Add(1) // the open's
	if c.opt.OnFetch != nil {
		c.opt.OnFetch(f, 0)
	}
	return f, nil
}

// Frames is the image frame cache to pass to imagefmt (nil without a
// Cache).
func (c *Client) Frames() imagefmt.FrameCache {
	if c.opt.Cache == nil {
		return nil
	}
	return c.opt.Cache.Frames()
}

// Opener returns an imagefmt.Opener that opens URLs with c (ctx bounds
// their opening) and local paths as files, so a delta and its bases may
// each be local or remote. A relative base hint of a remote delta is
// resolved against the delta's URL; an absolute path hint names a local
// file.
func (c *Client) Opener(ctx context.Context) imagefmt.Opener {
	return opener{c: c, ctx: ctx}
}

type opener struct {
	c   *Client
	ctx context.Context
}

func (o opener) OpenImageFile(name string) (imagefmt.ImageFile, error) {
	if !IsURL(name) {
		return imagefmt.LocalOpener.OpenImageFile(name)
	}
	return o.c.Open(o.ctx, name)
}

func (o opener) ResolveBase(delta, hint string) string {
	if IsURL(hint) {
		return hint
	}
	if !IsURL(delta) {
		return imagefmt.LocalOpener.ResolveBase(delta, hint)
	}
	if strings.HasPrefix(hint, "/") {
		return hint
	}
	u, err := url.Parse(delta)
	if err != nil {
		return hint
	}
	// The hint is a file path: resolve it as one, not as a URL reference
	// (a ':' or '?' in a file name is not a scheme or a query).
	r := *u
	r.Path = path.Join(path.Dir(u.Path), hint)
	r.RawPath, r.RawQuery, r.Fragment = "", "", ""
	return r.String()
}
