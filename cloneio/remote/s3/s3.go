package s3

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"

	"github.com/dimg-project/dimg/cloneio/objstore"
	"github.com/dimg-project/dimg/cloneio/remote"
)

// Options configure a Backend; the zero value is the default.
type Options struct {
	// S3 configures the client (zero: the AWS environment).
	S3 objstore.S3Options
	// StallTimeout fails a request whose response or body makes no
	// progress for this long (default 30 s).
	StallTimeout time.Duration
}

// Backend reads s3:// URLs. The client is configured at the first Open, so
// a command that reads no s3:// URL never loads the AWS configuration.
type Backend struct {
	opt   Options
	once  sync.Once
	s3    *objstore.S3
	s3Err error
}

var _ remote.Backend = (*Backend)(nil)

// New returns an S3 backend.
func New(opt Options) *Backend {
	if opt.StallTimeout <= 0 {
		opt.StallTimeout = 30 * time.Second
	}
	return &Backend{opt: opt}
}

func (b *Backend) client(ctx context.Context) (*objstore.S3, error) {
	b.once.Do(func() {
		opt := b.opt.S3
		opt.NoRetry = true
		if opt.HTTPClient == nil {
			// The SDK's own client (it takes AWS_CA_BUNDLE), with enough
			// idle connections for parallel reads and a bound on a
			// response that does not start.
			opt.HTTPClient = awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
				tr.MaxIdleConnsPerHost = 32
				tr.ResponseHeaderTimeout = b.opt.StallTimeout
				tr.DisableCompression = true
			})
		}
		b.s3, b.s3Err = objstore.NewS3(ctx, opt)
	})
	return b.s3, b.s3Err
}

// Open looks s3://BUCKET/KEY up with one HeadObject.
func (b *Backend) Open(ctx context.Context, u *url.URL) (remote.Object, error) {
	bucket, key, err := objstore.ParseS3URL(u.String())
	if err != nil {
		return nil, remote.Permanent(err)
	}
	s, err := b.client(ctx)
	if err != nil {
		return nil, remote.Permanent(err)
	}
	o, err := s.Stat(ctx, bucket, key)
	if err != nil {
		return nil, err
	}
	return &object{o: o, stall: b.opt.StallTimeout, id: remote.Identity{
		URL: o.Name(), Size: o.Size(), ETag: o.ETag(), LastModified: o.ModTime(),
	}}, nil
}

type object struct {
	o     *objstore.Object
	stall time.Duration
	id    remote.Identity
}

func (o *object) Size() int64               { return o.id.Size }
func (o *object) Identity() remote.Identity { return o.id }
func (o *object) Close() error              { return nil }

// ReadRange is one ranged GET; a body that stalls for StallTimeout fails.
func (o *object) ReadRange(parent context.Context, off, n int64) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(parent)
	rc, err := o.o.ReadRange(ctx, off, n)
	if err != nil {
		cancel()
		return nil, err
	}
	return &stallReader{r: rc, parent: parent, cancel: cancel, timer: time.AfterFunc(o.stall, cancel), stall: o.stall, name: o.id.URL}, nil
}

// stallReader cancels its request when no byte arrives for stall.
type stallReader struct {
	r      io.ReadCloser
	parent context.Context
	cancel context.CancelFunc
	timer  *time.Timer
	stall  time.Duration
	name   string
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.timer.Reset(s.stall)
	}
	if err != nil && err != io.EOF && s.parent.Err() == nil && !s.timer.Stop() {
		// The timer fired: a transient failure File retries, not the
		// "context canceled" it would take for the caller giving up.
		return n, fmt.Errorf("%s: no data for %s (%v)", s.name, s.stall, err)
	}
	return n, err
}

func (s *stallReader) Close() error {
	s.timer.Stop()
	err := s.r.Close()
	s.cancel()
	return err
}
