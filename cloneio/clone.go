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
)

// CloneOptions configure Clone; the zero value is the default.
type CloneOptions struct {
	Workers  int // 0: GOMAXPROCS
	Progress Progress
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

// Clone copies the bytes plan selects from src to t in one pass: one
// goroutine reads in order, workers write with WriteAt (order does not
// matter), zero chunks become ZeroRange, unused ones Unused.
func Clone(ctx context.Context, src io.ReaderAt, plan *Plan, t *Target, opt CloneOptions) (*CloneResult, error) {
	start := time.Now()
	prog := orNoProgress(opt.Progress)
	prog.Start(plan.Size)
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
	res := &CloneResult{DiskBytes: plan.Size}
	var (
		mu   sync.Mutex
		werr error
		sums []chunkSum
		runs []imagefmt.ZeroRun
	)
	fail := func(err error) {
		mu.Lock()
		if werr == nil {
			werr = err
		}
		mu.Unlock()
		cancel()
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				off := j.chunk * cloneChunk
				var err error
				if imagefmt.IsZero(j.buf) {
					err = t.ZeroRange(off, int64(len(j.buf)))
					mu.Lock()
					res.ZeroedBytes += int64(len(j.buf))
					runs = append(runs, imagefmt.ZeroRun{Start: j.chunk, Count: 1})
					mu.Unlock()
				} else {
					var sum [32]byte
					if opt.Verify {
						sum = sha256.Sum256(j.buf)
					}
					_, err = t.WriteAt(j.buf, off)
					mu.Lock()
					res.WrittenBytes += int64(len(j.buf))
					if opt.Verify {
						sums = append(sums, chunkSum{j.chunk, sum})
					}
					mu.Unlock()
				}
				if err != nil {
					fail(fmt.Errorf("write target at byte %d: %w", off, err))
				}
				prog.Add(int64(len(j.buf)))
				free <- j.buf[:cap(j.buf)]
			}
		}()
	}

	// Reader: in order, coalescing unused chunks into one Unused call.
	readErr := func() error {
		defer close(work)
		it := newRangeIter(plan.Used, plan.Size)
		pf := newPrefetcher(src, plan, cloneChunk)
		n := (plan.Size + cloneChunk - 1) / cloneChunk
		unusedFrom := int64(-1)
		flushUnused := func(end int64) error {
			if unusedFrom < 0 {
				return nil
			}
			off, l := unusedFrom*cloneChunk, min(end*cloneChunk, plan.Size)-unusedFrom*cloneChunk
			unusedFrom = -1
			res.UnusedBytes += l
			prog.Add(l)
			return t.Unused(off, l)
		}
		for c := int64(0); c < n; c++ {
			off := c * cloneChunk
			clen := min(int64(cloneChunk), plan.Size-off)
			pf.advance(off)
			parts := it.within(off, clen)
			if len(parts) == 0 {
				if unusedFrom < 0 {
					unusedFrom = c
				}
				continue
			}
			if err := flushUnused(c); err != nil {
				return err
			}
			var b []byte
			select {
			case b = <-free:
			case <-ctx.Done():
				return ctx.Err()
			}
			b = b[:clen]
			n, err := readParts(src, b, off, parts)
			if err != nil {
				return err
			}
			res.ReadBytes += n
			work <- job{chunk: c, buf: b}
		}
		return flushUnused(n)
	}()
	wg.Wait()
	if werr != nil {
		return nil, fmt.Errorf("clone: %w", werr)
	}
	if readErr != nil {
		return nil, fmt.Errorf("clone: %w", readErr)
	}
	if opt.Verify {
		if opt.testHookBeforeVerify != nil {
			opt.testHookBeforeVerify(t)
		}
		if err := t.f.Sync(); err != nil {
			return nil, err
		}
		dropCache(t.f)
		if err := verifyReadBack(ctx, t, cloneChunk, plan.Size, sums, runs, workers); err != nil {
			return nil, fmt.Errorf("clone: %w", err)
		}
		res.Verified = true
	}
	res.Wall = time.Since(start)
	return res, nil
}
