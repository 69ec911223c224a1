package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"
)

// Backend opens the objects of the URL schemes it is registered for in
// Options.Backends. Implementations must be safe for concurrent use.
type Backend interface {
	// Open looks the object at u up (one small request) and returns it.
	// A missing object is ErrNotFound, a refused one ErrDenied; other
	// failures are retried by the caller.
	Open(ctx context.Context, u *url.URL) (Object, error)
}

// Object is one opened version of a remote object. Implementations must
// be safe for concurrent use: File reads several ranges at once.
type Object interface {
	// Size is the object's length in bytes, as opened.
	Size() int64
	// Identity names the version opened.
	Identity() Identity
	// ReadRange returns a reader of the n bytes at off (0 <= off,
	// off+n <= Size). The backend checks that the response is that range
	// of the version opened: another version is ErrChanged, a server that
	// ignores the range is ErrNoRange. The body may still end early (a
	// dropped connection): File counts what it gets and asks again for
	// the rest. ctx bounds the request and the reading of the body.
	ReadRange(ctx context.Context, off, n int64) (io.ReadCloser, error)
	// Close releases what the object holds.
	Close() error
}

// Identity names one version of an object: a read that gets another
// version fails with ErrChanged. Fields a backend does not know are zero.
type Identity struct {
	// URL is the object's URL as given, without its query (which may hold
	// a signature that changes on every request).
	URL          string
	Size         int64
	ETag         string
	LastModified time.Time
}

// Key is a string naming this version, for cache keys.
func (id Identity) Key() string {
	return id.URL + "\x00" + strconv.FormatInt(id.Size, 10) + "\x00" + id.ETag + "\x00" + strconv.FormatInt(id.LastModified.Unix(), 10)
}

// Same reports whether other is the same version: the same size, and the
// same ETag when both have one, else the same Last-Modified when both
// have one.
func (id Identity) Same(other Identity) bool {
	switch {
	case id.Size != other.Size:
		return false
	case id.ETag != "" && other.ETag != "":
		return id.ETag == other.ETag
	case !id.LastModified.IsZero() && !other.LastModified.IsZero():
		return id.LastModified.Equal(other.LastModified)
	}
	return true
}

// String describes the version for messages.
func (id Identity) String() string {
	s := fmt.Sprintf("%d bytes", id.Size)
	if id.ETag != "" {
		s += ", ETag " + id.ETag
	}
	if !id.LastModified.IsZero() {
		s += ", modified " + id.LastModified.UTC().Format(time.RFC3339)
	}
	return s
}

var (
	// ErrNotFound: the object does not exist (HTTP 404 or 410, S3
	// NoSuchKey or NoSuchBucket).
	ErrNotFound = errors.New("remote: no such object")
	// ErrDenied: the server refuses access (HTTP 401 or 403, S3
	// AccessDenied), also after a redirect was resolved again.
	ErrDenied = errors.New("remote: access denied")
	// ErrNoRange: the server answers a range request with the whole
	// object (it ignores Range), so it cannot be read lazily.
	ErrNoRange = errors.New("remote: the server does not serve byte ranges (it answered a range request with the whole object): download the image first, or stream it: curl URL | dimg restore - TARGET")
	// ErrChanged: the object is not the version opened any more (another
	// ETag, Last-Modified or size, or an image digest that changed).
	ErrChanged = errors.New("remote: the object changed while it was being read")
)

// permanent marks an error that a retry cannot cure.
type permanent struct{ err error }

func (p *permanent) Error() string { return p.err.Error() }
func (p *permanent) Unwrap() error { return p.err }

// Permanent marks err as not worth retrying (a backend's answer that will
// not change: a bad request, a malformed URL).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanent{err}
}

// IsPermanent reports whether a retry cannot cure err: the sentinels of
// this package and errors marked Permanent. (A timeout is transient: the
// caller knows whether its own context ended.)
func IsPermanent(err error) bool {
	var p *permanent
	return errors.As(err, &p) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrDenied) ||
		errors.Is(err, ErrNoRange) || errors.Is(err, ErrChanged)
}
