package multicast

import (
	"context"
	"fmt"
	"time"

	"github.com/dimg-project/dimg/cloneio"
	"github.com/dimg-project/dimg/imagefmt"
)

// writeJob is a complete object for the writers.
type writeJob struct {
	obj   uint32
	chunk uint32 // the chunk the packets said the frame is for
	raw   []byte
	p     *partial // the assembler's buffer to release; nil when fetched
	fetch bool     // fetched from the repair URL
}

// writeResult is what became of a writeJob.
type writeResult struct {
	obj     uint32
	logical int // disk bytes written
	size    int // object bytes
	err     error
	fatal   bool // the target failed: stop
	fetch   bool
	httpErr bool // the repair URL is unusable
}

// writeQueue hands complete objects to writer goroutines, which check
// each frame (CRC, SHA-256, that it is the chunk the packets named) and
// write it through cloneio's ChunkWriter, the restore target's one write
// path; a zero-run table's runs are zeroed the same way. The results come
// back to the main goroutine, which alone counts inflight.
type writeQueue struct {
	w        *cloneio.ChunkWriter
	ann      *announce
	frames   uint32 // objects below this are frames, the rest tables
	jobs     chan writeJob
	results  chan writeResult
	inflight int // jobs handed out whose result was not taken yet
}

// newWriteQueue starts workers writers until ctx ends; release returns an
// assembled object's buffer.
func newWriteQueue(ctx context.Context, w *cloneio.ChunkWriter, ann *announce, workers int, release func(*partial)) *writeQueue {
	q := &writeQueue{w: w, ann: ann, frames: ann.frames, jobs: make(chan writeJob, 2*workers),
		results: make(chan writeResult, 256)}
	for range workers {
		go q.writer(ctx, release)
	}
	return q
}

// submit hands a job to the writers, passing results to took while it
// waits (so neither side can block the other for good); a fatal result
// ends it with that error.
func (q *writeQueue) submit(ctx context.Context, j writeJob, took func(writeResult) error) error {
	for {
		select {
		case q.jobs <- j:
			q.inflight++
			return nil
		case res := <-q.results:
			if err := took(res); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// writer writes complete objects until ctx ends.
func (q *writeQueue) writer(ctx context.Context, release func(*partial)) {
	out := make([]byte, q.ann.chunkSize)
	for {
		var j writeJob
		select {
		case j = <-q.jobs:
		case <-ctx.Done():
			return
		}
		res := q.write(j, out)
		if j.p != nil {
			release(j.p)
		}
		select {
		case q.results <- res:
		case <-ctx.Done():
			return
		}
	}
}

// write checks one complete object and writes it: a frame's chunk, or a
// zero-run table's runs. A damaged object is asked for again; a target
// that cannot be written (or a chunk written twice) ends the session.
func (q *writeQueue) write(j writeJob, out []byte) writeResult {
	res := writeResult{obj: j.obj, fetch: j.fetch, size: len(j.raw)}
	if j.obj >= q.frames {
		runs, err := parseZeroRunTable(j.raw, q.ann.numChunks())
		if err != nil {
			res.err = fmt.Errorf("object %d: %w", j.obj, err)
			return res
		}
		for _, z := range runs {
			if err := q.w.ZeroRun(z); err != nil {
				res.err, res.fatal = fmt.Errorf("multicast: %w", err), true
				return res
			}
		}
		return res
	}
	f, err := imagefmt.ParseFrame(j.raw, q.ann.chunkSize)
	if err == nil && (f.Chunk != int64(j.chunk) || len(f.Raw) != len(j.raw) || f.LogicalLen != q.ann.chunkLen(f.Chunk)) {
		err = fmt.Errorf("%w: frame is for chunk %d (%d bytes), packets said chunk %d", imagefmt.ErrCorrupt, f.Chunk, f.LogicalLen, j.chunk)
	}
	var data []byte
	if err == nil {
		data, err = f.Decode(out)
	}
	if err != nil {
		res.err = fmt.Errorf("object %d: %w", j.obj, err)
		return res
	}
	if err := q.w.WriteChunk(f.Chunk, data, f.Sum); err != nil {
		res.err, res.fatal = fmt.Errorf("multicast: %w", err), true
		return res
	}
	res.logical = len(data)
	return res
}

// written takes one writer's result: the object is written, or asked for
// again, or (fatal) the session ends with the returned error.
func (r *receiver) written(res writeResult) error {
	r.wq.inflight--
	if res.fetch {
		r.fetch.outstanding--
	}
	switch {
	case res.fatal:
		return res.err
	case res.err != nil:
		if res.httpErr && !r.fetch.off {
			r.fetch.off = true
			r.log.Warn("repair URL unusable, asking the sender instead", "err", res.err)
		} else if !res.httpErr {
			r.res.Corrupt++
			r.log.Warn("object failed verification, asking again", "object", res.obj, "err", res.err)
		}
		r.asm.setState(res.obj, objMissing)
	default:
		r.asm.setState(res.obj, objWritten)
		r.res.BytesWritten += int64(res.logical)
		r.prog.Add(int64(res.size))
		if res.fetch {
			r.res.Fetched++
		}
	}
	return nil
}

// drainWrites waits for objects still being written, keeping the sender
// informed.
func (r *receiver) drainWrites(ctx context.Context) error {
	t := time.NewTicker(statusInterval)
	defer t.Stop()
	for r.wq.inflight > 0 {
		select {
		case res := <-r.wq.results:
			if err := r.written(res); err != nil {
				return err
			}
		case <-t.C:
			r.sendStatus(rxVerifying, nil)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
