package cloneio

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/dimg-project/dimg/imagefmt"
	"github.com/dimg-project/dimg/internal/progress"
)

// RewriteOptions configure Rewrite; the zero value copies every frame as
// it is stored.
type RewriteOptions struct {
	// Compression, when set, recompresses every chunk with it (convert,
	// compact --compress); nil copies each frame as stored, after checking
	// it, and writes a zstd image when any frame may be zstd.
	Compression *imagefmt.Compression
	Workers     int // 0: GOMAXPROCS
	ToolVersion string
	// Message is the new image's (first and only) commit message.
	Message  string
	Progress progress.Reporter // told of a "rewriting" phase, in disk bytes
}

// RewriteResult reports what a rewrite wrote.
type RewriteResult struct {
	Digest       [32]byte
	ImageBytes   int64 // bytes of the new image
	StoredChunks int64
	ZeroChunks   int64
	Recompressed int64 // chunks compressed anew (the others were copied)
	Compression  imagefmt.Compression
	Wall         time.Duration
}

// rwJob is one stored chunk on its way through Rewrite.
type rwJob struct {
	chunk int64
	frame []byte // the frame as read
	out   []byte // decoded bytes, then (recompressing) the new frame
	f     imagefmt.Frame
	err   error
	done  chan struct{}
	zeros imagefmt.ZeroRun // a zero run instead of a chunk (Count > 0)
}

// Rewrite writes the disk img shows (one commit of an image, or a delta
// chain composed) to w as a standalone version 2 image with one commit:
// no superseded frames, no history, no base. The new image keeps img's
// UUID, creation time, geometry and disk description, so its digest is
// img's and a delta made over that state still opens over it. Every
// chunk is decoded and checked against its SHA-256 before it is written,
// and the sums written must add up to img's digest, so a damaged image is
// never copied silently.
func Rewrite(ctx context.Context, img *imagefmt.Reader, w io.Writer, opt RewriteOptions) (*RewriteResult, error) {
	start := time.Now()
	prog := progress.Or(opt.Progress)
	hdr := img.Header()
	if err := img.CheckRecords(); err != nil {
		return nil, err
	}
	comp := keptCompression(img)
	if opt.Compression != nil {
		comp = *opt.Compression
	}
	iw, err := imagefmt.NewWriter(w, imagefmt.WriterOptions{
		DiskSize: hdr.DiskSize, ChunkSize: hdr.ChunkSize, SectorSize: hdr.SectorSize, UUID: hdr.UUID,
		Created: hdr.Created, ToolVersion: opt.ToolVersion, Metadata: hdr.Metadata,
		Compression: comp, Message: opt.Message,
	})
	if err != nil {
		return nil, err
	}
	workers := opt.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	encs := make([]*imagefmt.Encoder, workers)
	for i := range encs {
		if encs[i], err = imagefmt.NewEncoder(comp); err != nil {
			return nil, err
		}
	}
	cs := hdr.ChunkSize
	inflight := workers * 4
	free := make(chan *rwJob, inflight)
	for range inflight {
		free <- &rwJob{frame: make([]byte, imagefmt.FrameBufSize(cs)), out: make([]byte, imagefmt.FrameBufSize(cs)), done: make(chan struct{}, 1)}
	}
	work := make(chan *rwJob, inflight)
	ordered := make(chan *rwJob, inflight)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	prog.Start("rewriting", hdr.DiskSize)
	res := &RewriteResult{Compression: comp}

	// Reader: stored chunks and zero runs in chunk order.
	var readErr error
	go func() {
		defer close(work)
		defer close(ordered)
		readErr = eachSpan(ctx, img, func(z imagefmt.ZeroRun) error {
			select {
			case ordered <- &rwJob{zeros: z}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}, func(e imagefmt.Entry) error {
			var j *rwJob
			select {
			case j = <-free:
			case <-ctx.Done():
				return ctx.Err()
			}
			j.chunk, j.err = e.Chunk, nil
			f, ok, err := img.ReadFrame(e.Chunk, j.frame)
			if err == nil && !ok {
				err = fmt.Errorf("chunk %d vanished from the index", e.Chunk)
			}
			if err != nil {
				free <- j
				return err
			}
			if cap(f.Raw) > cap(j.frame) {
				j.frame = f.Raw[:0]
			}
			j.f = f
			work <- j
			ordered <- j
			return nil
		})
	}()

	// Workers: check each chunk; recompress when asked or needed.
	var wg sync.WaitGroup
	for _, enc := range encs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				j.err = rewriteChunk(j, enc, opt.Compression != nil, comp, cs)
				j.done <- struct{}{}
			}
		}()
	}

	// Writer: in chunk order; the sums must add up to img's digest.
	dg := imagefmt.NewDigester(hdr)
	var werr error
	for j := range ordered {
		if j.zeros.Count > 0 {
			if werr == nil {
				werr = iw.WriteZeroRun(j.zeros.Start, j.zeros.Count)
				res.ZeroChunks += j.zeros.Count
				prog.Add(zeroBytes(hdr, j.zeros))
			}
			continue
		}
		<-j.done
		if werr == nil {
			switch werr = j.err; {
			case werr != nil:
			default:
				if werr = iw.WriteFrame(j.f); werr == nil {
					werr = dg.Add(j.chunk, j.f.Sum)
				}
				res.StoredChunks++
				prog.Add(int64(j.f.LogicalLen))
			}
			if werr != nil {
				cancel()
			}
		}
		free <- j
	}
	wg.Wait()
	if werr != nil {
		return nil, fmt.Errorf("rewrite %s: %w", hdr.UUIDString(), werr)
	}
	if readErr != nil {
		return nil, readErr
	}
	if err := img.Err(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if d := dg.Sum(); d != img.Digest() {
		return nil, fmt.Errorf("%w: the chunks read add up to digest %s, the image records %s", imagefmt.ErrCorrupt,
			imagefmt.DigestString(d), imagefmt.DigestString(img.Digest()))
	}
	if res.Digest, err = iw.Close(); err != nil {
		return nil, err
	}
	res.Wall = time.Since(start)
	return res, nil
}

// rewriteChunk checks job j's frame (decoding it verifies its CRC and
// SHA-256) and, when recompressing, encodes the chunk anew into j.out.
func rewriteChunk(j *rwJob, enc *imagefmt.Encoder, recompress bool, comp imagefmt.Compression, cs int) error {
	data, err := j.f.Decode(j.out[:cs])
	if err != nil {
		return &imagefmt.ChunkError{Chunk: j.chunk, Off: j.chunk * int64(cs), Len: int64(j.f.LogicalLen), Err: err}
	}
	if !recompress && (j.f.Method != imagefmt.MethodZstd || comp.Method == "zstd") {
		return nil
	}
	// Encode needs its own buffer: data aliases j.out.
	nf, err := enc.Encode(j.frame[:cap(j.frame)], j.chunk, data)
	if err != nil {
		return err
	}
	j.f = nf
	return nil
}

// keptCompression is the method a rewrite that keeps frames as stored
// writes: zstd when any image of img's chain may hold zstd frames.
func keptCompression(img *imagefmt.Reader) imagefmt.Compression {
	for r := img; r != nil; r = r.Base() {
		if (r.Header().Incompat|r.Features())&imagefmt.IncompatZstd != 0 {
			return imagefmt.Compression{Method: "zstd"}
		}
	}
	return imagefmt.Compression{}
}

func zeroBytes(hdr *imagefmt.Header, z imagefmt.ZeroRun) int64 {
	end := min((z.Start+z.Count)*int64(hdr.ChunkSize), hdr.DiskSize)
	return end - z.Start*int64(hdr.ChunkSize)
}

// eachSpan calls zero and stored for img's zero runs and stored chunks,
// in chunk order.
func eachSpan(ctx context.Context, img *imagefmt.Reader, zero func(imagefmt.ZeroRun) error, stored func(imagefmt.Entry) error) error {
	runs := img.ZeroRuns()
	if err := img.Err(); err != nil {
		return err
	}
	ri := 0
	for e := range img.Entries() {
		if err := ctx.Err(); err != nil {
			return err
		}
		for ri < len(runs) && runs[ri].Start < e.Chunk {
			if err := zero(runs[ri]); err != nil {
				return err
			}
			ri++
		}
		if err := stored(e); err != nil {
			return err
		}
	}
	for ; ri < len(runs); ri++ {
		if err := zero(runs[ri]); err != nil {
			return err
		}
	}
	return img.Err()
}
