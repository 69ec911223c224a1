package cloneio

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dimg-project/dimg/imagefmt"
)

// Range is a byte range [Off, Off+Len) of a disk.
type Range struct {
	Off, Len int64
}

// Plan says which bytes of a disk to copy and how to describe the disk.
type Plan struct {
	Size       int64
	SectorSize int
	// Used lists the byte ranges worth copying, sorted and disjoint;
	// everything else reads back as zeros. nil means the whole disk.
	Used []Range
	Info imagefmt.DiskInfo
}

// SectorPlan copies every byte.
func SectorPlan(size int64, sectorSize int) *Plan {
	if sectorSize == 0 {
		sectorSize = 512
	}
	return &Plan{Size: size, SectorSize: sectorSize, Info: imagefmt.DiskInfo{Table: "none", Mode: "sector"}}
}

// CaptureOptions configure Capture. The zero value is the default.
type CaptureOptions struct {
	ChunkSize   int // 0: imagefmt.DefaultChunkSize
	Workers     int // 0: GOMAXPROCS
	ToolVersion string
	Progress    Progress
	Logger      *slog.Logger
}

// CaptureResult reports what a capture did, with per-stage timings so the
// next bottleneck is visible.
type CaptureResult struct {
	Digest       [32]byte
	ImageBytes   int64
	DiskBytes    int64
	ReadBytes    int64 // bytes read from the source
	StoredChunks int64
	ZeroChunks   int64 // used but all zero: recorded, not stored
	SkipChunks   int64 // not in use: not read at all
	Wall         time.Duration
	ReadTime     time.Duration // reader goroutine busy in ReadAt
	EncodeTime   time.Duration // summed over workers (zero check, hash, lz4)
	WriteTime    time.Duration // writer busy writing frames
}

type capJob struct {
	chunk int64
	buf   []byte // logical bytes of the chunk
	frame []byte // encode buffer
	f     imagefmt.Frame
	zero  bool
	err   error
	done  chan struct{}
}

// Capture reads src according to plan and writes an image to w.
func Capture(ctx context.Context, src io.ReaderAt, plan *Plan, w io.Writer, opt CaptureOptions) (*CaptureResult, error) {
	start := time.Now()
	prog := orNoProgress(opt.Progress)
	meta, err := json.Marshal(plan.Info)
	if err != nil {
		return nil, err
	}
	iw, err := imagefmt.NewWriter(w, imagefmt.WriterOptions{
		DiskSize: plan.Size, ChunkSize: opt.ChunkSize, SectorSize: plan.SectorSize,
		ToolVersion: opt.ToolVersion, Metadata: meta,
	})
	if err != nil {
		return nil, err
	}
	hdr := iw.Header()
	cs := int64(hdr.ChunkSize)
	workers := opt.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	// inflight bounds memory: each job holds one chunk and one frame buffer.
	inflight := workers * 4
	free := make(chan *capJob, inflight)
	for range inflight {
		free <- &capJob{buf: make([]byte, cs), frame: make([]byte, imagefmt.FrameBufSize(int(cs))), done: make(chan struct{}, 1)}
	}
	work := make(chan *capJob, inflight)
	ordered := make(chan *capJob, inflight)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	res := &CaptureResult{DiskBytes: plan.Size}
	var encodeNanos atomic.Int64
	prog.Start(plan.Size)

	// Reader: visits chunks that overlap the plan, in order.
	var readErr error
	go func() {
		defer close(work)
		defer close(ordered)
		var readBusy time.Duration
		defer func() { res.ReadTime = readBusy }()
		it := newRangeIter(plan.Used, plan.Size)
		pf := newPrefetcher(src, plan, cs)
		last := int64(0) // progress: bytes of disk accounted for
		for c := int64(0); c < hdr.NumChunks(); c++ {
			off := c * cs
			clen := int64(hdr.ChunkLen(c))
			pf.advance(off)
			parts := it.within(off, clen)
			if len(parts) == 0 {
				res.SkipChunks++
				continue
			}
			var j *capJob
			select {
			case j = <-free:
			case <-ctx.Done():
				readErr = ctx.Err()
				return
			}
			j.chunk, j.err, j.zero = c, nil, false
			b := j.buf[:clen]
			t0 := time.Now()
			n, err := readParts(src, b, off, parts)
			if err != nil {
				readErr = err
				return
			}
			res.ReadBytes += n
			readBusy += time.Since(t0)
			j.buf = b
			prog.Add(off + clen - last)
			last = off + clen
			work <- j
			ordered <- j
		}
		prog.Add(plan.Size - last)
	}()

	// Workers: zero check, hash and compress.
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var enc imagefmt.Encoder
			for j := range work {
				t0 := time.Now()
				if imagefmt.IsZero(j.buf) {
					j.zero = true
				} else {
					j.f, j.err = enc.Encode(j.frame, j.chunk, j.buf)
				}
				encodeNanos.Add(int64(time.Since(t0)))
				j.done <- struct{}{}
			}
		}()
	}

	// Writer: in chunk order, coalescing zero runs.
	var werr error
	var run imagefmt.ZeroRun
	flushRun := func() {
		if run.Count > 0 && werr == nil {
			werr = iw.WriteZeroRun(run.Start, run.Count)
		}
		run = imagefmt.ZeroRun{}
	}
	for j := range ordered {
		<-j.done
		if werr == nil {
			t0 := time.Now()
			switch {
			case j.err != nil:
				werr = j.err
			case j.zero:
				if run.Count > 0 && run.Start+run.Count == j.chunk {
					run.Count++
				} else {
					flushRun()
					run = imagefmt.ZeroRun{Start: j.chunk, Count: 1}
				}
				res.ZeroChunks++
			default:
				flushRun()
				werr = iw.WriteFrame(j.f)
				res.StoredChunks++
			}
			res.WriteTime += time.Since(t0)
			if werr != nil {
				cancel()
			}
		}
		j.buf = j.buf[:cap(j.buf)]
		free <- j
	}
	wg.Wait()
	if werr == nil {
		flushRun()
	}
	res.EncodeTime = time.Duration(encodeNanos.Load())
	if readErr != nil && werr == nil {
		werr = readErr
	}
	if werr != nil {
		return nil, fmt.Errorf("capture: %w", werr)
	}
	t0 := time.Now()
	if res.Digest, err = iw.Close(); err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	res.WriteTime += time.Since(t0)
	res.ImageBytes = iw.Size()
	res.Wall = time.Since(start)
	return res, nil
}

// rangeIter walks sorted ranges alongside increasing chunk offsets.
type rangeIter struct {
	rs   []Range
	i    int
	all  bool
	size int64
	buf  []Range
}

func newRangeIter(rs []Range, size int64) *rangeIter {
	return &rangeIter{rs: rs, all: rs == nil, size: size}
}

// within returns the parts of the ranges inside [off, off+n); calls must
// come with increasing off. The result is reused by the next call.
func (it *rangeIter) within(off, n int64) []Range {
	end := off + n
	if it.all {
		it.buf = append(it.buf[:0], Range{off, n})
		return it.buf
	}
	it.buf = it.buf[:0]
	for it.i < len(it.rs) && it.rs[it.i].Off+it.rs[it.i].Len <= off {
		it.i++
	}
	for k := it.i; k < len(it.rs) && it.rs[k].Off < end; k++ {
		s := max(it.rs[k].Off, off)
		e := min(it.rs[k].Off+it.rs[k].Len, end)
		if e > s {
			it.buf = append(it.buf, Range{s, e - s})
		}
	}
	return it.buf
}

// readParts fills b (disk bytes [off, off+len(b))) with the used parts and
// zeros elsewhere. It reads the span from the first part to the last in
// one request — reading a few unused blocks costs less than breaking the
// sequential stream into many small reads — then zeros the gaps, so unused
// bytes never reach the image. It returns the bytes read.
func readParts(src io.ReaderAt, b []byte, off int64, parts []Range) (int64, error) {
	first, last := parts[0], parts[len(parts)-1]
	s, e := first.Off-off, last.Off+last.Len-off
	clear(b[:s])
	if _, err := src.ReadAt(b[s:e], first.Off); err != nil && err != io.EOF {
		return 0, fmt.Errorf("read source at byte %d: %w", first.Off, err)
	}
	pos := s
	for _, p := range parts {
		clear(b[pos : p.Off-off])
		pos = p.Off - off + p.Len
	}
	clear(b[pos:])
	return e - s, nil
}

// Prefetcher is implemented by sources that can start reads ahead of time
// (Device: posix_fadvise WILLNEED), which keeps several requests in flight
// on a cold disk even though one goroutine reads in order.
type Prefetcher interface {
	Prefetch(off, n int64)
}

// prefetchWindow is how far ahead of the reader prefetches run.
const prefetchWindow = 32 << 20

type prefetcher struct {
	p    Prefetcher
	it   *rangeIter
	next int64 // first disk byte not yet prefetched
	cs   int64
	size int64
}

func newPrefetcher(src io.ReaderAt, plan *Plan, cs int64) *prefetcher {
	p, _ := src.(Prefetcher)
	return &prefetcher{p: p, it: newRangeIter(plan.Used, plan.Size), cs: cs, size: plan.Size}
}

// advance prefetches the used spans of chunks up to prefetchWindow past off.
func (f *prefetcher) advance(off int64) {
	if f.p == nil {
		return
	}
	for f.next < f.size && f.next < off+prefetchWindow {
		n := min(f.cs, f.size-f.next)
		if parts := f.it.within(f.next, n); len(parts) > 0 {
			first, last := parts[0], parts[len(parts)-1]
			f.p.Prefetch(first.Off, last.Off+last.Len-first.Off)
		}
		f.next += n
	}
}
