package cloneio

import (
	"cmp"
	"fmt"
	"slices"
	"sync"

	"github.com/dimg-project/dimg/imagefmt"
	"github.com/dimg-project/dimg/internal/bitset"
	"github.com/dimg-project/dimg/internal/progress"
)

// ChunkWriter writes one disk onto a Target chunk by chunk and remembers
// what each chunk must read back as, for Verify. It is the one write path
// of restore, clone and multicast receive; each chunk of the disk is, once:
//
//   - stored (WriteChunk): written, its SHA-256 kept;
//   - zero (ZeroRun): in use on the source and all zero — zeroed on a
//     device (BLKZEROOUT), a hole in a fresh file;
//   - unused (Unused, or whatever Finish finds untouched): left alone on a
//     device or discarded with TargetOptions.Discard, a hole in a file.
//
// WriteChunk and ZeroRun may be called from many goroutines, in any order;
// a chunk accounted twice is an error (a damaged image or stream).
type ChunkWriter struct {
	t    *Target
	cs   int64 // chunk size
	n    int64 // chunks on the disk
	prog progress.Reporter

	mu       sync.Mutex
	done     bitset.Set // chunks accounted for
	sums     []chunkSum // stored chunks (in chunk order after Finish)
	runs     []imagefmt.ZeroRun
	pending  imagefmt.ZeroRun // unused chunks not yet passed to the target
	stats    WriteStats
	ahead    []chunkSum // written, waiting for VerifyAhead
	aheadLen int64      // their bytes
	checked  bitset.Set // stored chunks VerifyAhead read back right
	finished bool
	version  uint32 // image format whose digest Digest and Verify compute
	// final is, in rewrite mode, each chunk's last state (nil sum: zero);
	// nil otherwise.
	final map[int64]*[32]byte
}

// chunkSum is a stored chunk's SHA-256.
type chunkSum struct {
	chunk int64
	sum   [32]byte
}

// WriteStats counts the disk bytes a ChunkWriter accounted for.
type WriteStats struct {
	Written int64 // stored chunks written
	Zeroed  int64 // zero runs (zeroed on a device, holes in a file)
	Unused  int64 // unused (left alone, discarded, or holes)
}

// NewChunkWriter starts writing t's disk in chunks of chunkSize bytes.
// prog (may be nil) is told of every disk byte accounted for; the caller
// starts its phase.
func NewChunkWriter(t *Target, chunkSize int, prog progress.Reporter) *ChunkWriter {
	n := (t.diskSize + int64(chunkSize) - 1) / int64(chunkSize)
	return &ChunkWriter{t: t, cs: int64(chunkSize), n: n, prog: progress.Or(prog), done: bitset.New(n)}
}

// SetImageVersion makes Digest and Verify compute the digest the way image
// format version v defines it (imagefmt.Version, the default, or
// imagefmt.Version2, whose digest is the root of its index tree). Call
// before Finish.
func (w *ChunkWriter) SetImageVersion(v uint32) {
	w.mu.Lock()
	w.version = v
	w.mu.Unlock()
}

// AllowRewrites lets a chunk be written or zeroed again, the last call
// winning: a stream of an image with several commits replays them in
// order. The calls for one chunk must then come in order (from one
// goroutine). Call before any write.
func (w *ChunkWriter) AllowRewrites() {
	w.mu.Lock()
	w.final = map[int64]*[32]byte{}
	w.mu.Unlock()
}

// NumChunks is the number of chunks of the disk.
func (w *ChunkWriter) NumChunks() int64 { return w.n }

// ChunkLen is the length of chunk c (the last one may be short).
func (w *ChunkWriter) ChunkLen(c int64) int64 { return min(w.cs, w.t.diskSize-c*w.cs) }

// span returns the disk bytes of chunks [c, c+n).
func (w *ChunkWriter) span(c, n int64) (off, length int64) {
	off = c * w.cs
	return off, min((c+n)*w.cs, w.t.diskSize) - off
}

// claim marks chunks [c, c+n) accounted for; they must not be yet.
func (w *ChunkWriter) claim(c, n int64, what string) error {
	if c < 0 || n <= 0 || c >= w.n || n > w.n-c {
		return fmt.Errorf("%w: %s: chunks %d+%d outside the disk's %d chunks", imagefmt.ErrCorrupt, what, c, n, w.n)
	}
	if w.finished {
		return fmt.Errorf("cloneio: %s after Finish", what)
	}
	if d := w.done.Next(c); d >= 0 && d < c+n && w.final == nil {
		return fmt.Errorf("%w: %s: chunk %d is already written, zeroed or unused", imagefmt.ErrCorrupt, what, d)
	}
	w.done.AddRange(c, c+n)
	return nil
}

// WriteChunk writes chunk c's data (its full length) and keeps sum, its
// SHA-256, for Verify. A writer that will not be verified may pass the
// zero sum.
func (w *ChunkWriter) WriteChunk(c int64, data []byte, sum [32]byte) error {
	if c >= 0 && c < w.n && int64(len(data)) != w.ChunkLen(c) {
		return fmt.Errorf("%w: chunk %d holds %d bytes, not %d", imagefmt.ErrCorrupt, c, len(data), w.ChunkLen(c))
	}
	w.mu.Lock()
	err := w.claim(c, 1, "write chunk")
	w.mu.Unlock()
	if err != nil {
		return err
	}
	off := c * w.cs
	if _, err := w.t.WriteAt(data, off); err != nil {
		return fmt.Errorf("write target at byte %d: %w", off, err)
	}
	n := int64(len(data))
	w.mu.Lock()
	if w.final != nil {
		w.final[c] = &sum
	} else {
		w.sums = append(w.sums, chunkSum{c, sum})
	}
	w.stats.Written += n
	if w.checked != nil {
		w.ahead = append(w.ahead, chunkSum{c, sum})
		w.aheadLen += n
	}
	w.mu.Unlock()
	w.prog.Add(n)
	return nil
}

// ZeroRun zeroes the chunks of z (used on the source and all zero).
func (w *ChunkWriter) ZeroRun(z imagefmt.ZeroRun) error {
	w.mu.Lock()
	err := w.claim(z.Start, z.Count, "zero run")
	var rewritten []int64 // chunks written before: ZeroRange may skip them
	if err == nil && w.final != nil {
		for c := z.Start; c < z.Start+z.Count; c++ {
			if s, ok := w.final[c]; ok && s != nil {
				rewritten = append(rewritten, c)
			}
			w.final[c] = nil
		}
	} else if err == nil {
		w.runs = append(w.runs, z)
	}
	w.mu.Unlock()
	if err != nil {
		return err
	}
	if len(rewritten) > 0 {
		zeros := make([]byte, w.cs)
		for _, c := range rewritten {
			off, l := w.span(c, 1)
			if _, err := w.t.WriteAt(zeros[:l], off); err != nil {
				return fmt.Errorf("zero target bytes %d-%d: %w", off, off+l-1, err)
			}
		}
	}
	off, n := w.span(z.Start, z.Count)
	if err := w.t.ZeroRange(off, n); err != nil {
		return fmt.Errorf("zero target bytes %d-%d: %w", off, off+n-1, err)
	}
	w.mu.Lock()
	w.stats.Zeroed += n
	w.mu.Unlock()
	w.prog.Add(n)
	return nil
}

// Unused accounts chunks [c, c+n) as unused now rather than at Finish: a
// caller that goes through the disk in order keeps the progress even.
// Adjacent calls are passed to the target as one range.
func (w *ChunkWriter) Unused(c, n int64) error {
	if n == 0 {
		return nil
	}
	w.mu.Lock()
	err := w.claim(c, n, "unused range")
	var flush imagefmt.ZeroRun
	if err == nil {
		if p := w.pending; p.Count > 0 && p.Start+p.Count == c {
			w.pending.Count += n
		} else {
			flush, w.pending = p, imagefmt.ZeroRun{Start: c, Count: n}
		}
	}
	w.mu.Unlock()
	if err != nil {
		return err
	}
	_, l := w.span(c, n)
	w.prog.Add(l)
	return w.unused(flush)
}

// unused passes chunks [r.Start, r.Start+r.Count) to the target as unused.
func (w *ChunkWriter) unused(r imagefmt.ZeroRun) error {
	if r.Count == 0 {
		return nil
	}
	off, n := w.span(r.Start, r.Count)
	w.mu.Lock()
	w.stats.Unused += n
	w.mu.Unlock()
	if err := w.t.Unused(off, n); err != nil {
		return fmt.Errorf("discard target bytes %d-%d: %w", off, off+n-1, err)
	}
	return nil
}

// Finish accounts every chunk not written, zeroed or declared unused as
// unused, and ends writing. Writes must be over.
func (w *ChunkWriter) Finish() error {
	w.mu.Lock()
	last := w.pending
	w.pending = imagefmt.ZeroRun{}
	var gaps []imagefmt.ZeroRun
	for c := w.done.NextClear(0, w.n); c < w.n; {
		end := w.done.Next(c)
		if end < 0 {
			end = w.n
		}
		gaps = append(gaps, imagefmt.ZeroRun{Start: c, Count: end - c})
		c = w.done.NextClear(end, w.n)
	}
	w.done.AddRange(0, w.n)
	w.finished = true
	if w.final != nil {
		// Rewrite mode: each chunk's last state makes the lists.
		for c, sum := range w.final {
			if sum != nil {
				w.sums = append(w.sums, chunkSum{c, *sum})
			} else {
				w.runs = append(w.runs, imagefmt.ZeroRun{Start: c, Count: 1})
			}
		}
		w.final = nil
	}
	slices.SortFunc(w.sums, func(a, b chunkSum) int { return cmp.Compare(a.chunk, b.chunk) })
	slices.SortFunc(w.runs, func(a, b imagefmt.ZeroRun) int { return cmp.Compare(a.Start, b.Start) })
	w.mu.Unlock()
	if err := w.unused(last); err != nil {
		return err
	}
	for _, g := range gaps {
		_, l := w.span(g.Start, g.Count)
		w.prog.Add(l)
		if err := w.unused(g); err != nil {
			return err
		}
	}
	return nil
}

// Stats returns the bytes accounted for so far.
func (w *ChunkWriter) Stats() WriteStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}

// Digest is the image digest (imagefmt.Digester) of the disk as written:
// the kept sums of the stored chunks, zeros elsewhere. Call after Finish.
func (w *ChunkWriter) Digest() ([32]byte, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := imagefmt.NewDigester(w.header())
	for _, s := range w.sums {
		if err := d.Add(s.chunk, s.sum); err != nil {
			return [32]byte{}, err
		}
	}
	return d.Sum(), nil
}

// header is the geometry the digest is defined over.
func (w *ChunkWriter) header() *imagefmt.Header {
	return &imagefmt.Header{Version: w.version, ChunkSize: int(w.cs), DiskSize: w.t.diskSize}
}
