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
	"github.com/dimg-project/dimg/internal/progress"
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
	// Compression is how chunks are compressed: lz4 (the zero value) or
	// zstd, which makes smaller images that older readers refuse.
	Compression imagefmt.Compression
	Progress    progress.Reporter // told of a "capturing" phase, in disk bytes
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
	prog := progress.Or(opt.Progress)
	meta, err := json.Marshal(plan.Info)
	if err != nil {
		return nil, err
	}
	iw, err := imagefmt.NewWriter(w, imagefmt.WriterOptions{
		DiskSize: plan.Size, ChunkSize: opt.ChunkSize, SectorSize: plan.SectorSize,
		ToolVersion: opt.ToolVersion, Metadata: meta, Compression: opt.Compression,
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
	encs := make([]*imagefmt.Encoder, workers)
	for i := range encs {
		if encs[i], err = imagefmt.NewEncoder(opt.Compression); err != nil {
			return nil, err
		}
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
	prog.Start("capturing", plan.Size)

	// Reader: visits chunks that overlap the plan, in order.
	var readErr error
	rd := &chunkReader{src: src, plan: plan, cs: cs}
	go func() {
		defer close(work)
		defer close(ordered)
		var j *capJob
		readErr = rd.each(ctx, func() ([]byte, error) {
			select {
			case j = <-free:
				return j.buf[:cap(j.buf)], nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}, func(c int64, b []byte) error {
			j.chunk, j.buf, j.err, j.zero = c, b, nil, false
			prog.Add(int64(len(b)))
			work <- j
			ordered <- j
			return nil
		}, func(c int64) error {
			res.SkipChunks++
			prog.Add(int64(hdr.ChunkLen(c)))
			return nil
		})
		res.ReadBytes, res.ReadTime = rd.ReadBytes, rd.ReadTime
	}()

	// Workers: zero check, hash and compress.
	var wg sync.WaitGroup
	for _, enc := range encs {
		wg.Add(1)
		go func() {
			defer wg.Done()
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
