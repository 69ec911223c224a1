package objstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/dimg-project/dimg/cloneio"
	"github.com/dimg-project/dimg/internal/progress"
)

const (
	// minPartSize is S3's smallest part but the last.
	minPartSize = 5 << 20
	// maxPartSize is S3's largest part.
	maxPartSize = 5 << 30
	// maxParts is S3's limit on parts in one upload.
	maxParts = 10000
	// defaultPartSize: 32 MiB parts, 4 buffers: 128 MiB at most in memory.
	defaultPartSize = 32 << 20
	defaultInflight = 3
	// partsPerSize is how many parts are sent at one size before the size
	// doubles: 1,000 each of 32 MiB, 64 MiB, … reach ~32 TiB by part
	// 10,000 without holding big buffers for the common image of a few GiB.
	partsPerSize = 1000
)

// s3Upload streams bytes into an S3 multipart upload: Write fills a part
// buffer, full parts go to Inflight sender goroutines, and the part
// buffers are a fixed pool, so a slow link blocks Write instead of growing
// memory. The object appears only when Commit completes the upload.
type s3Upload struct {
	s           *S3
	bucket, key string
	id          string // the multipart upload ID
	ctx         context.Context
	ending      // cancel ends ctx
	prog        progress.Reporter
	base        int // first part size

	cur    []byte // the part being filled (Write's goroutine only)
	allocs int    // part buffers allocated (Write's goroutine only; tests)
	num    int32  // number of the part being filled
	free   chan []byte
	work   chan s3part
	wg     sync.WaitGroup
	// closeWork closes work once: only Commit closes it (Write's
	// goroutine), so a concurrent Abort never races a send.
	closeWork sync.Once

	mu      sync.Mutex // guards the fields below
	err     error      // the first failure
	parts   []types.CompletedPart
	written int64
}

type s3part struct {
	num  int32
	data []byte
}

// CreateUpload starts a multipart upload to s3://bucket/key (see Create).
func (s *S3) CreateUpload(ctx context.Context, bucket, key string, opt UploadOptions) (Upload, error) {
	if !opt.Force {
		_, err := s.c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
		switch err = s3Error("check", bucket, key, err); {
		case err == nil:
			return nil, fmt.Errorf("%w: s3://%s/%s (use --force to overwrite)", cloneio.ErrExists, bucket, key)
		case !errors.Is(err, ErrNotFound):
			return nil, err
		}
	}
	base := opt.PartSize
	if base == 0 {
		base = defaultPartSize
	}
	base = max(base, minPartSize)
	// A known size must fit in the parts at the first size (no growth
	// needed then); round to a MiB for tidy part sizes.
	if opt.Size > 0 {
		if need := (opt.Size + maxParts - 1) / maxParts; need > int64(base) {
			base = int((need + 1<<20 - 1) &^ (1<<20 - 1))
		}
	}
	inflight := opt.Inflight
	if inflight <= 0 {
		inflight = defaultInflight
	}
	out, err := s.c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket: aws.String(bucket), Key: aws.String(key), ContentType: aws.String("application/octet-stream"),
	})
	if err != nil {
		return nil, s3Error("start upload", bucket, key, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	u := &s3Upload{
		s: s, bucket: bucket, key: key, id: aws.ToString(out.UploadId), ctx: ctx, ending: ending{cancel: cancel},
		prog: progress.Or(opt.Progress), base: base, num: 1,
		free: make(chan []byte, inflight+1), work: make(chan s3part),
	}
	for range inflight + 1 {
		u.free <- nil // allocated when first needed, at the size then needed
	}
	for range inflight {
		u.wg.Add(1)
		go u.sender()
	}
	return u, nil
}

// partSize is the size of part num (numbered from 1).
func (u *s3Upload) partSize(num int32) int {
	size := int64(u.base) << ((num - 1) / partsPerSize)
	return int(min(size, maxPartSize))
}

func (u *s3Upload) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if err := u.failed(); err != nil {
			return written, err
		}
		if u.cur == nil {
			var buf []byte
			select {
			case buf = <-u.free:
			case <-u.ctx.Done():
				return written, u.stopped()
			}
			if size := u.partSize(u.num); cap(buf) < size {
				buf = make([]byte, 0, size)
				u.allocs++
			}
			u.cur = buf[:0]
		}
		n := copy(u.cur[len(u.cur):cap(u.cur)], p)
		u.cur = u.cur[:len(u.cur)+n]
		p, written = p[n:], written+n
		if len(u.cur) == cap(u.cur) {
			if err := u.send(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// send hands the current part to a sender.
func (u *s3Upload) send() error {
	if u.num > maxParts {
		err := fmt.Errorf("s3://%s/%s: upload: more than %d parts", u.bucket, u.key, maxParts)
		u.fail(err)
		return err
	}
	select {
	case u.work <- s3part{num: u.num, data: u.cur}:
	case <-u.ctx.Done():
		return u.stopped()
	}
	u.cur = nil
	u.num++
	return nil
}

func (u *s3Upload) sender() {
	defer u.wg.Done()
	for p := range u.work {
		if u.failed() != nil {
			continue // drain: Commit or Abort closes work
		}
		out, err := u.s.c.UploadPart(u.ctx, &s3.UploadPartInput{
			Bucket: aws.String(u.bucket), Key: aws.String(u.key), UploadId: aws.String(u.id),
			PartNumber: aws.Int32(p.num), Body: bytes.NewReader(p.data), ContentLength: aws.Int64(int64(len(p.data))),
		})
		if err != nil {
			u.fail(s3Error(fmt.Sprintf("upload part %d", p.num), u.bucket, u.key, err))
			continue
		}
		u.mu.Lock()
		u.parts = append(u.parts, types.CompletedPart{PartNumber: aws.Int32(p.num), ETag: out.ETag})
		u.written += int64(len(p.data))
		u.mu.Unlock()
		u.prog.Add(int64(len(p.data)))
		u.free <- p.data[:0]
	}
}

func (u *s3Upload) fail(err error) {
	u.mu.Lock()
	if u.err == nil {
		u.err = err
	}
	u.mu.Unlock()
	u.cancel()
}

func (u *s3Upload) failed() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.err
}

// stopped is the error once the context ended: the first failure if one
// caused it, else the context's own.
func (u *s3Upload) stopped() error {
	if err := u.failed(); err != nil {
		return err
	}
	return fmt.Errorf("s3://%s/%s: upload: %w", u.bucket, u.key, context.Cause(u.ctx))
}

func (u *s3Upload) Written() int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.written
}

// Commit sends the last part, waits for every part and completes the
// upload; on any failure the upload is aborted.
func (u *s3Upload) Commit() error {
	if u.isEnded() {
		u.closeWork.Do(func() { close(u.work) })
		u.wg.Wait()
		return errors.New("objstore: commit after commit or abort")
	}
	// The last part may be short (S3 allows that); an empty upload still
	// needs one part.
	err := u.failed()
	if err == nil && (u.cur != nil || u.num == 1) {
		if u.cur == nil {
			u.cur = []byte{}
		}
		err = u.send()
	}
	u.closeWork.Do(func() { close(u.work) })
	u.wg.Wait()
	if err == nil {
		err = u.failed()
	}
	if err == nil && u.ctx.Err() != nil {
		err = u.stopped()
	}
	if err != nil {
		u.Abort()
		return err
	}
	u.mu.Lock()
	parts := u.parts
	u.mu.Unlock()
	sort.Slice(parts, func(i, j int) bool { return *parts[i].PartNumber < *parts[j].PartNumber })
	_, err = u.s.c.CompleteMultipartUpload(u.ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(u.bucket), Key: aws.String(u.key), UploadId: aws.String(u.id),
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		u.Abort()
		return s3Error("complete upload", u.bucket, u.key, err)
	}
	u.committed()
	return nil
}

// Abort aborts the multipart upload: the parts sent are deleted and no
// object appears. It runs on its own context, since the upload's may be
// the one an interrupt cancelled.
func (u *s3Upload) Abort() {
	u.abort(func() {
		u.fail(fmt.Errorf("s3://%s/%s: upload aborted", u.bucket, u.key))
		u.abortUpload()
	})
}

// abortUpload asks S3 to drop the upload and its parts.
func (u *s3Upload) abortUpload() {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(u.ctx), abortTimeout)
	defer cancel()
	// Parts still being sent may be stored after the abort; S3 asks to
	// repeat the abort until the upload is gone, so try a few times.
	for range 3 {
		_, err := u.s.c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
			Bucket: aws.String(u.bucket), Key: aws.String(u.key), UploadId: aws.String(u.id),
		})
		if err != nil {
			return // gone already (NoSuchUpload) or unreachable: nothing more to do here
		}
		lo, err := u.s.c.ListParts(ctx, &s3.ListPartsInput{
			Bucket: aws.String(u.bucket), Key: aws.String(u.key), UploadId: aws.String(u.id),
		})
		if err != nil || len(lo.Parts) == 0 {
			return
		}
	}
}
