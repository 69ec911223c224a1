package cloneio

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/dimg-project/dimg/imagefmt"
	"github.com/dimg-project/dimg/internal/progress"
)

// RestoreOptions configure a restore; the zero value is the default.
type RestoreOptions struct {
	Workers int // 0: GOMAXPROCS
	// Progress is told of the "writing" phase (disk bytes) and, with
	// Verify, the "verifying" phase.
	Progress progress.Reporter
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

// restoreItem is one step for the writers: a frame to decode and write.
type restoreItem struct {
	raw  []byte
	off  int64  // the frame's file offset, for errors
	file string // the base file it is in, under a delta (Frame.File)
	buf  *[]byte
}

// restorer feeds the frames and zero runs of an image, in chunk order, to
// decoding workers that write them through a ChunkWriter.
type restorer struct {
	hdr  *imagefmt.Header
	w    *ChunkWriter
	next int64 // next chunk not yet accounted for
	// replay: chunks come again and out of order (a stream of several
	// commits); nothing between them is unused, the last write wins, so
	// frames are written in stream order, by the feeder, like zero runs.
	replay    bool
	replayBuf []byte
	pool      sync.Pool
	work      chan restoreItem
	mu        sync.Mutex
	werr      error
}

func newRestorer(hdr *imagefmt.Header, t *Target, opt RestoreOptions) *restorer {
	prog := progress.Or(opt.Progress)
	prog.Start("writing", hdr.DiskSize)
	r := &restorer{hdr: hdr, w: NewChunkWriter(t, hdr.ChunkSize, prog)}
	r.w.SetImageVersion(hdr.Version)
	r.pool.New = func() any { b := make([]byte, imagefmt.FrameBufSize(hdr.ChunkSize)); return &b }
	return r
}

// unusedTo accounts chunks [r.next, c) as unused.
func (r *restorer) unusedTo(c int64) error {
	if c <= r.next || r.replay {
		return nil
	}
	n := c - r.next
	r.next = c
	return r.w.Unused(c-n, n)
}

func (r *restorer) zeroRun(z imagefmt.ZeroRun) error {
	if err := r.unusedTo(z.Start); err != nil {
		return err
	}
	r.next = z.Start + z.Count
	return r.w.ZeroRun(z)
}

// frame queues a frame (raw bytes in a pooled buffer) for the writers.
func (r *restorer) frame(ctx context.Context, f imagefmt.Frame, buf *[]byte) error {
	if err := r.unusedTo(f.Chunk); err != nil {
		return err
	}
	r.next = f.Chunk + 1
	if r.replay {
		if r.replayBuf == nil {
			r.replayBuf = make([]byte, r.hdr.ChunkSize)
		}
		err := r.write(restoreItem{raw: f.Raw, off: f.Offset, buf: buf}, r.replayBuf)
		r.pool.Put(buf)
		return err
	}
	select {
	case r.work <- restoreItem{raw: f.Raw, off: f.Offset, file: f.File, buf: buf}:
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

// run starts the writers, calls feed, waits, and accounts the chunks
// after the last one fed as unused.
func (r *restorer) run(ctx context.Context, opt RestoreOptions, feed func(ctx context.Context) error) error {
	workers := opt.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.work = make(chan restoreItem, workers*2)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := make([]byte, r.hdr.ChunkSize)
			for it := range r.work {
				if err := r.write(it, out); err != nil {
					r.fail(err)
					cancel()
				}
				r.pool.Put(it.buf)
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
	return r.w.Finish()
}

// write checks and decodes one frame and writes its chunk.
func (r *restorer) write(it restoreItem, out []byte) error {
	f, err := imagefmt.ParseFrame(it.raw, r.hdr.ChunkSize)
	f.Offset, f.File = it.off, it.file
	var data []byte
	if err == nil {
		data, err = f.Decode(out)
	}
	if err != nil {
		off := f.Chunk * int64(r.hdr.ChunkSize)
		return &imagefmt.ChunkError{Chunk: f.Chunk, Off: off, Len: int64(r.hdr.ChunkLen(f.Chunk)), Err: err}
	}
	return r.w.WriteChunk(f.Chunk, data, f.Sum)
}

// RestoreImage writes the disk held in img to t.
func RestoreImage(ctx context.Context, img *imagefmt.Reader, t *Target, opt RestoreOptions) (*RestoreResult, error) {
	start := time.Now()
	hdr := img.Header()
	// The open checked the index, not the zero-run records between the
	// frames: check them before writing, as a restore from a stream would.
	if err := img.CheckRecords(); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	// Of a version 2 image, ZeroRuns reads the whole index tree: a damaged
	// node is found here, before anything is written (Entries and
	// ZeroRuns stop at one and leave the error in Err).
	runs := img.ZeroRuns()
	if err := img.Err(); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	r := newRestorer(hdr, t, opt)
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
		return img.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	// The frames' own checksums were checked as they were decoded; their
	// sums must also add up to the digest the image was sealed with.
	digest, err := r.w.Digest()
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if err := img.CheckDigest(digest); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	return r.finish(ctx, opt, digest, start)
}

// RestoreStream writes the disk read from an image stream to t. A stream
// of an image with several commits replays them (imagefmt's "last record
// wins"): its chunks are written in stream order by one goroutine, so
// that a later commit's chunk lands after an earlier one's.
func RestoreStream(ctx context.Context, s *imagefmt.StreamReader, t *Target, opt RestoreOptions) (*RestoreResult, error) {
	start := time.Now()
	r := newRestorer(s.Header(), t, opt)
	if s.Commits() > 1 {
		r.replay = true
		r.w.AllowRewrites()
	}
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
	digest, err := r.w.Digest()
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	return r.finish(ctx, opt, digest, start)
}

func (r *restorer) finish(ctx context.Context, opt RestoreOptions, digest [32]byte, start time.Time) (*RestoreResult, error) {
	st := r.w.Stats()
	res := &RestoreResult{DiskBytes: r.hdr.DiskSize, WrittenBytes: st.Written, ZeroedBytes: st.Zeroed, UnusedBytes: st.Unused}
	if opt.Verify {
		if _, err := r.w.Verify(ctx, digest, opt.Progress); err != nil {
			return nil, err
		}
		res.Verified = true
	}
	res.Wall = time.Since(start)
	return res, nil
}
