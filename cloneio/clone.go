package cloneio

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/dimg-project/dimg/imagefmt"
	"github.com/dimg-project/dimg/internal/progress"
)

// CloneOptions configure Clone; the zero value is the default.
type CloneOptions struct {
	Workers int // 0: GOMAXPROCS
	// Progress is told of the "copying" phase (disk bytes) and, with
	// Verify, the "verifying" phase.
	Progress progress.Reporter
	// Verify reads the target back and checks every copied chunk against
	// the SHA-256 taken from the source as it was read.
	Verify bool

	// testHookBeforeVerify runs between writing and verifying (tests
	// inject damage there).
	testHookBeforeVerify func(t *Target)
}

// CloneResult reports what a clone did.
type CloneResult struct {
	DiskBytes    int64
	ReadBytes    int64
	WrittenBytes int64
	ZeroedBytes  int64
	UnusedBytes  int64
	Verified     bool
	Wall         time.Duration
}

// cloneChunk is the unit of I/O for clone: larger than an image chunk,
// since nothing is compressed and bigger requests suit both disks.
const cloneChunk = 1 << 20

// Clone copies the bytes plan selects from src to t in one pass: capture's
// reader (one goroutine, in order) feeds workers that write through the
// restore target's ChunkWriter: all-zero chunks become zero runs, chunks
// the plan does not touch are unused.
func Clone(ctx context.Context, src io.ReaderAt, plan *Plan, t *Target, opt CloneOptions) (*CloneResult, error) {
	start := time.Now()
	if plan.Size != t.DiskSize() {
		return nil, fmt.Errorf("clone: the plan covers %d bytes, the target was opened for %d", plan.Size, t.DiskSize())
	}
	prog := progress.Or(opt.Progress)
	prog.Start("copying", plan.Size)
	w := NewChunkWriter(t, cloneChunk, prog)
	workers := opt.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	type job struct {
		chunk int64
		buf   []byte
	}
	inflight := workers * 4
	free := make(chan []byte, inflight)
	for range inflight {
		free <- make([]byte, cloneChunk)
	}
	work := make(chan job, inflight)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu   sync.Mutex
		werr error
	)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				var err error
				if imagefmt.IsZero(j.buf) {
					err = w.ZeroRun(imagefmt.ZeroRun{Start: j.chunk, Count: 1})
				} else {
					var sum [32]byte
					if opt.Verify {
						sum = sha256.Sum256(j.buf)
					}
					err = w.WriteChunk(j.chunk, j.buf, sum)
				}
				if err != nil {
					mu.Lock()
					if werr == nil {
						werr = err
					}
					mu.Unlock()
					cancel()
				}
				free <- j.buf[:cap(j.buf)]
			}
		}()
	}
	rd := &chunkReader{src: src, plan: plan, cs: cloneChunk}
	readErr := rd.each(ctx, func() ([]byte, error) {
		select {
		case b := <-free:
			return b, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}, func(c int64, b []byte) error {
		select {
		case work <- job{chunk: c, buf: b}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}, func(c int64) error {
		return w.Unused(c, 1)
	})
	close(work)
	wg.Wait()
	if werr != nil {
		return nil, fmt.Errorf("clone: %w", werr)
	}
	if readErr != nil {
		return nil, fmt.Errorf("clone: %w", readErr)
	}
	if err := w.Finish(); err != nil {
		return nil, fmt.Errorf("clone: %w", err)
	}
	st := w.Stats()
	res := &CloneResult{DiskBytes: plan.Size, ReadBytes: rd.ReadBytes, WrittenBytes: st.Written,
		ZeroedBytes: st.Zeroed, UnusedBytes: st.Unused}
	if opt.Verify {
		if opt.testHookBeforeVerify != nil {
			opt.testHookBeforeVerify(t)
		}
		digest, err := w.Digest()
		if err == nil {
			_, err = w.Verify(ctx, digest, prog)
		}
		if err != nil {
			return nil, fmt.Errorf("clone: %w", err)
		}
		res.Verified = true
	}
	res.Wall = time.Since(start)
	return res, nil
}
