package cloneio

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/dimg-project/dimg/imagefmt"
)

// RestoreOptions configure a restore; the zero value is the default.
type RestoreOptions struct {
	Workers  int // 0: GOMAXPROCS
	Progress Progress
	// Verify reads the target back after writing and checks every stored
	// chunk against its checksum and every zero run for zeros.
	Verify bool
	Logger *slog.Logger
}

// RestoreResult reports what a restore did.
type RestoreResult struct {
	DiskBytes    int64
	WrittenBytes int64 // stored chunks written
	ZeroedBytes  int64 // zero runs (zeroed on a device, holes in a file)
	UnusedBytes  int64 // unused (left alone, discarded, or holes)
	Verified     bool
	Wall         time.Duration
}

// chunkSum remembers a stored chunk's checksum for verification.
type chunkSum struct {
	chunk int64
	sum   [32]byte
}

// restoreItem is one step for the writers: a frame to decode and write.
type restoreItem struct {
	raw []byte
	buf *[]byte
}

// restorer holds what the image-specific feeders share.
type restorer struct {
	hdr    *imagefmt.Header
	t      *Target
	prog   Progress
	res    *RestoreResult
	digest *imagefmt.Digester
	next   int64 // next chunk not yet accounted for
	sums   []chunkSum
	runs   []imagefmt.ZeroRun
	pool   sync.Pool
	work   chan restoreItem
	mu     sync.Mutex
	werr   error
}

func newRestorer(hdr *imagefmt.Header, t *Target, opt RestoreOptions) *restorer {
	r := &restorer{hdr: hdr, t: t, prog: orNoProgress(opt.Progress), res: &RestoreResult{DiskBytes: hdr.DiskSize},
		digest: imagefmt.NewDigester(hdr)}
	r.pool.New = func() any { b := make([]byte, imagefmt.FrameBufSize(hdr.ChunkSize)); return &b }
	r.prog.Start(hdr.DiskSize)
	return r
}

func (r *restorer) chunkRange(c, n int64) (off, length int64) {
	off = c * int64(r.hdr.ChunkSize)
	end := min((c+n)*int64(r.hdr.ChunkSize), r.hdr.DiskSize)
	return off, end - off
}

// unusedTo accounts chunks [r.next, c) as unused.
func (r *restorer) unusedTo(c int64) error {
	if c <= r.next {
		return nil
	}
	off, n := r.chunkRange(r.next, c-r.next)
	r.next = c
	r.res.UnusedBytes += n
	r.prog.Add(n)
	if err := r.t.Unused(off, n); err != nil {
		return fmt.Errorf("discard target bytes %d-%d: %w", off, off+n-1, err)
	}
	return nil
}

func (r *restorer) zeroRun(z imagefmt.ZeroRun) error {
	if err := r.unusedTo(z.Start); err != nil {
		return err
	}
	off, n := r.chunkRange(z.Start, z.Count)
	r.next = z.Start + z.Count
	r.runs = append(r.runs, z)
	r.res.ZeroedBytes += n
	r.prog.Add(n)
	if err := r.t.ZeroRange(off, n); err != nil {
		return fmt.Errorf("zero target bytes %d-%d: %w", off, off+n-1, err)
	}
	return nil
}

// frame queues a frame (raw bytes in a pooled buffer) for the writers.
func (r *restorer) frame(ctx context.Context, f imagefmt.Frame, buf *[]byte) error {
	if err := r.unusedTo(f.Chunk); err != nil {
		return err
	}
	if err := r.digest.Add(f.Chunk, f.Sum); err != nil {
		return err
	}
	r.sums = append(r.sums, chunkSum{f.Chunk, f.Sum})
	r.next = f.Chunk + 1
	select {
	case r.work <- restoreItem{raw: f.Raw, buf: buf}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *restorer) fail(err error) {
	r.mu.Lock()
	if r.werr == nil {
		r.werr = err
	}
	r.mu.Unlock()
}

func (r *restorer) failed() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.werr
}

// run starts the writers, calls feed, and waits.
func (r *restorer) run(ctx context.Context, opt RestoreOptions, feed func(ctx context.Context) error) error {
	workers := opt.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.work = make(chan restoreItem, workers*2)
	var wg sync.WaitGroup
	var written sync.Mutex
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := make([]byte, r.hdr.ChunkSize)
			for it := range r.work {
				f, err := imagefmt.ParseFrame(it.raw, r.hdr.ChunkSize)
				var data []byte
				if err == nil {
					data, err = f.Decode(out)
				}
				if err == nil {
					off := f.Chunk * int64(r.hdr.ChunkSize)
					if _, werr := r.t.WriteAt(data, off); werr != nil {
						err = fmt.Errorf("write target at byte %d: %w", off, werr)
					} else {
						written.Lock()
						r.res.WrittenBytes += int64(len(data))
						written.Unlock()
						r.prog.Add(int64(len(data)))
					}
				} else {
					off := f.Chunk * int64(r.hdr.ChunkSize)
					err = &imagefmt.ChunkError{Chunk: f.Chunk, Off: off, Len: int64(r.hdr.ChunkLen(f.Chunk)), Err: err}
				}
				r.pool.Put(it.buf)
				if err != nil {
					r.fail(err)
					cancel()
				}
			}
		}()
	}
	ferr := feed(ctx)
	close(r.work)
	wg.Wait()
	if err := r.failed(); err != nil {
		return err
	}
	if ferr != nil {
		return ferr
	}
	return r.unusedTo(r.hdr.NumChunks())
}

// RestoreImage writes the disk held in img to t.
func RestoreImage(ctx context.Context, img *imagefmt.Reader, t *Target, opt RestoreOptions) (*RestoreResult, error) {
	start := time.Now()
	hdr := img.Header()
	r := newRestorer(hdr, t, opt)
	runs := img.ZeroRuns()
	err := r.run(ctx, opt, func(ctx context.Context) error {
		ri := 0
		for e := range img.Entries() {
			for ri < len(runs) && runs[ri].Start < e.Chunk {
				if err := r.zeroRun(runs[ri]); err != nil {
					return err
				}
				ri++
			}
			bp := r.pool.Get().(*[]byte)
			f, _, err := img.ReadFrame(e.Chunk, *bp)
			if err != nil {
				return err
			}
			if err := r.frame(ctx, f, bp); err != nil {
				return err
			}
		}
		for ; ri < len(runs); ri++ {
			if err := r.zeroRun(runs[ri]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if r.digest.Sum() != img.Digest() {
		return nil, fmt.Errorf("restore: %w: the chunks' checksums do not add up to the image digest", imagefmt.ErrCorrupt)
	}
	return r.finish(ctx, opt, start)
}

// RestoreStream writes the disk read from an image stream to t.
func RestoreStream(ctx context.Context, s *imagefmt.StreamReader, t *Target, opt RestoreOptions) (*RestoreResult, error) {
	start := time.Now()
	r := newRestorer(s.Header(), t, opt)
	err := r.run(ctx, opt, func(ctx context.Context) error {
		for {
			f, err := s.Next()
			if err == io.EOF {
				return nil // the stream reader checked index, footer and digest
			}
			if err != nil {
				return err
			}
			if f.Zeros > 0 {
				if err := r.zeroRun(imagefmt.ZeroRun{Start: f.Chunk, Count: f.Zeros}); err != nil {
					return err
				}
				continue
			}
			// Next reuses its buffer: copy the frame for the writers.
			bp := r.pool.Get().(*[]byte)
			*bp = append((*bp)[:0], f.Raw...)
			f.Raw = *bp
			if err := r.frame(ctx, f, bp); err != nil {
				return err
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	return r.finish(ctx, opt, start)
}

func (r *restorer) finish(ctx context.Context, opt RestoreOptions, start time.Time) (*RestoreResult, error) {
	if opt.Verify {
		if err := verifyTarget(ctx, r.t, r.hdr, r.sums, r.runs, opt.Workers); err != nil {
			return nil, err
		}
		r.res.Verified = true
	}
	r.res.Wall = time.Since(start)
	return r.res, nil
}

// ErrVerify is wrapped when a target does not read back as written.
var ErrVerify = errors.New("cloneio: target verification failed")

// verifyTarget reads back stored chunks and zero runs from the target.
func verifyTarget(ctx context.Context, t *Target, hdr *imagefmt.Header, sums []chunkSum, runs []imagefmt.ZeroRun, workers int) error {
	if err := t.f.Sync(); err != nil {
		return fmt.Errorf("verify: sync: %w", err)
	}
	dropCache(t.f)
	return verifyReadBack(ctx, t, hdr.ChunkSize, hdr.DiskSize, sums, runs, workers)
}

// verifyReadBack checks the chunks of ra against sums and runs.
func verifyReadBack(ctx context.Context, ra io.ReaderAt, chunkSize int, diskSize int64, sums []chunkSum, runs []imagefmt.ZeroRun, workers int) error {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	type job struct {
		chunk int64
		sum   [32]byte
		zero  bool
	}
	jobs := make(chan job, workers*2)
	var mu sync.Mutex
	type badChunk struct {
		chunk int64
		err   error
	}
	var bad []badChunk
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, chunkSize)
			for j := range jobs {
				off := j.chunk * int64(chunkSize)
				n := min(int64(chunkSize), diskSize-off)
				b := buf[:n]
				_, err := ra.ReadAt(b, off)
				if err == nil {
					if j.zero && !imagefmt.IsZero(b) {
						err = errors.New("not zero")
					} else if !j.zero && sha256.Sum256(b) != j.sum {
						err = errors.New("content differs from the image")
					}
				}
				if err != nil {
					mu.Lock()
					bad = append(bad, badChunk{j.chunk, fmt.Errorf("chunk %d (disk bytes %d-%d): %w", j.chunk, off, off+n-1, err)})
					mu.Unlock()
				}
			}
		}()
	}
	send := func(j job) bool {
		select {
		case jobs <- j:
			return true
		case <-ctx.Done():
			return false
		}
	}
	ok := true
	for _, s := range sums {
		if ok = send(job{chunk: s.chunk, sum: s.sum}); !ok {
			break
		}
	}
	for _, z := range runs {
		for c := z.Start; ok && c < z.Start+z.Count; c++ {
			ok = send(job{chunk: c, zero: true})
		}
	}
	close(jobs)
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if len(bad) > 0 {
		// Workers finish out of order: report in disk order.
		sort.Slice(bad, func(i, j int) bool { return bad[i].chunk < bad[j].chunk })
		var errs []error
		for i, b := range bad {
			if i == 20 {
				errs = append(errs, fmt.Errorf("... and %d more", len(bad)-20))
				break
			}
			errs = append(errs, b.err)
		}
		return fmt.Errorf("%w: %w", ErrVerify, errors.Join(errs...))
	}
	return nil
}
