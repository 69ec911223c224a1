package cloneio

import (
	"context"
	"fmt"
	"io"
	"time"
)

// chunkReader is the one reader of a source disk, shared by Capture and
// Clone: it visits the chunks of the disk in order, skips those the plan
// does not touch, and fills the others with the used bytes (zeros
// elsewhere), prefetching ahead so a cold disk has several requests in
// flight though one goroutine reads.
type chunkReader struct {
	src  io.ReaderAt
	plan *Plan
	cs   int64 // chunk size

	ReadBytes int64         // bytes read from src
	ReadTime  time.Duration // time spent in ReadAt
}

// numChunks is the number of chunks of the disk.
func (r *chunkReader) numChunks() int64 { return (r.plan.Size + r.cs - 1) / r.cs }

// each calls skip(c) for each chunk the plan does not touch and, for the
// others, fills a buffer from buf (at least a chunk long) and hands it to
// got(c, b) with b cut to the chunk's length. Calls come in chunk order
// from the calling goroutine; an error from a callback, a read or ctx ends
// the walk.
func (r *chunkReader) each(ctx context.Context, buf func() ([]byte, error), got func(c int64, b []byte) error, skip func(c int64) error) error {
	it := newRangeIter(r.plan.Used, r.plan.Size)
	pf := newPrefetcher(r.src, r.plan, r.cs)
	for c := range r.numChunks() {
		if err := ctx.Err(); err != nil {
			return err
		}
		off := c * r.cs
		clen := min(r.cs, r.plan.Size-off)
		pf.advance(off)
		parts := it.within(off, clen)
		if len(parts) == 0 {
			if err := skip(c); err != nil {
				return err
			}
			continue
		}
		b, err := buf()
		if err != nil {
			return err
		}
		b = b[:clen]
		t0 := time.Now()
		n, err := readParts(r.src, b, off, parts)
		if err != nil {
			return err
		}
		r.ReadBytes += n
		r.ReadTime += time.Since(t0)
		if err := got(c, b); err != nil {
			return err
		}
	}
	return nil
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
