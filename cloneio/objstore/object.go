package objstore

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/dimg-project/dimg/cloneio/remote"
)

// Object is one S3 object opened for reading: its size and ETag are taken
// once, and every read checks that the object is still the same one.
type Object struct {
	s           *S3
	bucket, key string
	size        int64
	etag        string
	modTime     time.Time
}

// Stat opens s3://bucket/key for reading with one HeadObject.
func (s *S3) Stat(ctx context.Context, bucket, key string) (*Object, error) {
	out, err := s.c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return nil, s3Error("stat", bucket, key, err)
	}
	o := &Object{s: s, bucket: bucket, key: key, size: aws.ToInt64(out.ContentLength), etag: aws.ToString(out.ETag)}
	if out.LastModified != nil {
		o.modTime = *out.LastModified
	}
	if o.size < 0 {
		return nil, fmt.Errorf("%s: stat: the server gave no size", o.Name())
	}
	return o, nil
}

// Name is the object's s3:// URL.
func (o *Object) Name() string { return "s3://" + o.bucket + "/" + o.key }

// Size is the object's length in bytes.
func (o *Object) Size() int64 { return o.size }

// ETag is the object's entity tag (quoted, as the server sent it).
func (o *Object) ETag() string { return o.etag }

// ModTime is when the object was last written.
func (o *Object) ModTime() time.Time { return o.modTime }

// ReadRange returns a reader of n bytes from off. The request carries
// If-Match with the ETag Stat saw, and the answer's ETag and
// Content-Range are checked too (for servers that ignore If-Match or
// Range): an object replaced since Stat is ErrChanged. The reader returns
// io.ErrUnexpectedEOF if the body ends short.
func (o *Object) ReadRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	if off < 0 || n <= 0 || off+n > o.size {
		return nil, remote.Permanent(fmt.Errorf("%s: read of %d bytes at %d outside the object (%d bytes)", o.Name(), n, off, o.size))
	}
	in := &s3.GetObjectInput{
		Bucket: aws.String(o.bucket), Key: aws.String(o.key),
		Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, off+n-1)),
	}
	if o.etag != "" {
		in.IfMatch = aws.String(o.etag)
	}
	out, err := o.s.c.GetObject(ctx, in)
	if err != nil {
		return nil, s3Error("read", o.bucket, o.key, err)
	}
	if tag := aws.ToString(out.ETag); o.etag != "" && tag != "" && tag != o.etag {
		out.Body.Close()
		return nil, fmt.Errorf("%s: read: %w (ETag %s, was %s)", o.Name(), ErrChanged, tag, o.etag)
	}
	if err := checkRange(aws.ToString(out.ContentRange), aws.ToInt64(out.ContentLength), off, n, o.size); err != nil {
		out.Body.Close()
		return nil, fmt.Errorf("%s: read: %w", o.Name(), err)
	}
	return &exactReader{r: out.Body, left: n, name: o.Name()}, nil
}

// checkRange checks the answer to a range request: a server that ignored
// Range (sent the whole object) or sent another range would otherwise be
// read as the bytes asked for.
func checkRange(cr string, length, off, n, size int64) error {
	if cr == "" {
		if off == 0 && n == size && length == size {
			return nil // the whole object asked for and given
		}
		return fmt.Errorf("no Content-Range in the answer: %w", ErrNoRange)
	}
	var start, end, total int64
	if _, err := fmt.Sscanf(strings.TrimSpace(cr), "bytes %d-%d/%d", &start, &end, &total); err != nil {
		return fmt.Errorf("unreadable Content-Range %q", cr)
	}
	if start != off || end != off+n-1 {
		return fmt.Errorf("asked for bytes %d-%d, the server sent %d-%d: %w", off, off+n-1, start, end, ErrNoRange)
	}
	if total != size {
		return fmt.Errorf("%w (it is now %d bytes, was %d)", ErrChanged, total, size)
	}
	if length >= 0 && length != n {
		return fmt.Errorf("asked for %d bytes, the server sent Content-Length %s", n, strconv.FormatInt(length, 10))
	}
	return nil
}

// exactReader reads exactly left bytes: an early end is
// io.ErrUnexpectedEOF naming the object, never a short success.
type exactReader struct {
	r    io.ReadCloser
	left int64
	name string
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		err = fmt.Errorf("%s: the connection ended %d bytes short: %w", e.name, e.left, io.ErrUnexpectedEOF)
	} else if err == nil && e.left == 0 {
		err = io.EOF
	}
	return n, err
}

func (e *exactReader) Close() error { return e.r.Close() }

// ReadAt reads len(p) bytes at off (io.ReaderAt): one ranged GET.
func (o *Object) ReadAt(p []byte, off int64) (int, error) {
	if off >= o.size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), o.size-off)
	if n <= 0 {
		return 0, nil
	}
	rc, err := o.ReadRange(context.Background(), off, n)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	got, err := io.ReadFull(rc, p[:n])
	if err != nil {
		return got, err
	}
	if got < len(p) {
		return got, io.EOF
	}
	return got, nil
}
