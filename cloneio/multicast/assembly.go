package multicast

import (
	"fmt"
	"slices"
	"sync"

	"github.com/dimg-project/dimg/internal/bitset"
)

// Object states on the receiver.
const (
	objMissing  = iota // nothing received
	objPartial         // some symbols held in memory
	objQueued          // complete, being verified and written
	objFetching        // being fetched over HTTP
	objWritten         // written to the target
)

// assembler rebuilds objects from symbols. It is used by one goroutine.
type assembler struct {
	g      *geometry
	cs     *codecs
	state  []uint8
	have   bitset.Set // state != objMissing
	parts  map[uint32]*partial
	used   int64 // bytes held by partial objects
	budget int64
	pool   sync.Pool // padded frame buffers of the largest size
	bufLen int

	written      int64
	low          int64 // no object below this is unwritten
	duplicates   int64
	reconstructs int64
	evicted      int64
	inconsistent int64
}

// partial is an object being received.
type partial struct {
	obj    uint32
	chunk  uint32
	length int
	buf    []byte // padded to whole symbols
	blocks []pblock
	left   int // blocks not yet complete
	bytes  int64
}

type pblock struct {
	have   [4]uint64 // symbol indices received: data < k, parity k+j
	n      int
	done   bool
	parity []psym
}

type psym struct {
	index uint8
	b     []byte
}

func (b *pblock) has(i uint8) bool { return b.have[i>>6]&(1<<(i&63)) != 0 }
func (b *pblock) mark(i uint8)     { b.have[i>>6] |= 1 << (i & 63) }

func newAssembler(g *geometry, cs *codecs, budget int64) *assembler {
	a := &assembler{g: g, cs: cs, state: make([]uint8, g.objects), have: bitset.New(int64(g.objects)),
		parts: map[uint32]*partial{}, budget: budget}
	a.bufLen = g.symbols(maxFrameLen(g.chunkSize)) * g.sym
	a.pool.New = func() any { b := make([]byte, a.bufLen); return &b }
	return a
}

func (a *assembler) setState(o uint32, s uint8) {
	a.state[o] = s
	if s == objMissing {
		a.have.Remove(int64(o))
	} else {
		a.have.Add(int64(o))
	}
	if s == objWritten {
		a.written++
		for a.low < int64(len(a.state)) && a.state[a.low] == objWritten {
			a.low++
		}
	}
}

func (a *assembler) complete() bool { return a.written == int64(len(a.state)) }

// add takes one symbol. It returns the object when this symbol completed
// it (its state is then objQueued and the caller owns p.buf until it
// calls release).
func (a *assembler) add(d *dataHdr, payload []byte) (*partial, error) {
	o := d.object
	switch a.state[o] {
	case objMissing, objPartial:
	default:
		a.duplicates++
		return nil, nil
	}
	p := a.parts[o]
	if p == nil {
		p = a.start(d)
	} else if p.chunk != d.chunk || p.length != int(d.frameLen) {
		a.inconsistent++
		return nil, fmt.Errorf("%w: object %d changed chunk or length", errMalformed, o)
	}
	blk := &p.blocks[d.block]
	if blk.done || blk.has(d.index) {
		a.duplicates++
		return nil, nil
	}
	k := int(d.k)
	blk.mark(d.index)
	blk.n++
	if int(d.index) < k {
		off := (int(d.block)*a.g.k + int(d.index)) * a.g.sym
		n := copy(p.buf[off:off+a.g.sym], payload)
		clear(p.buf[off+n : off+a.g.sym]) // the short last symbol is zero-padded
	} else {
		b := make([]byte, a.g.sym)
		copy(b, payload)
		blk.parity = append(blk.parity, psym{d.index, b})
		p.bytes += int64(len(b))
		a.used += int64(len(b))
	}
	if blk.n < k {
		return nil, nil
	}
	if err := a.finishBlock(p, int(d.block), k); err != nil {
		return nil, err
	}
	if p.left > 0 {
		return nil, nil
	}
	a.drop(p)
	a.setState(o, objQueued)
	return p, nil
}

// start begins a partial object, evicting the oldest partials when the
// memory budget is exceeded (they will be asked for again, whole).
func (a *assembler) start(d *dataHdr) *partial {
	n := int(d.frameLen)
	bp := a.pool.Get().(*[]byte)
	p := &partial{obj: d.object, chunk: d.chunk, length: n, buf: (*bp)[:a.g.symbols(n)*a.g.sym],
		blocks: make([]pblock, a.g.blocks(n)), left: a.g.blocks(n), bytes: int64(a.bufLen)}
	a.used += p.bytes
	for a.used > a.budget && len(a.parts) > 0 {
		oldest := uint32(1<<32 - 1)
		for o := range a.parts {
			oldest = min(oldest, o)
		}
		a.evict(a.parts[oldest])
	}
	a.parts[d.object] = p
	a.setState(d.object, objPartial)
	return p
}

func (a *assembler) evict(p *partial) {
	a.drop(p)
	a.release(p)
	a.setState(p.obj, objMissing)
	a.evicted++
}

// drop forgets a partial's bookkeeping (not its buffer).
func (a *assembler) drop(p *partial) {
	delete(a.parts, p.obj)
	a.used -= p.bytes
	for i := range p.blocks {
		p.blocks[i].parity = nil
	}
}

// release returns an object's buffer to the pool.
func (a *assembler) release(p *partial) {
	if p.buf != nil && cap(p.buf) == a.bufLen {
		b := p.buf[:cap(p.buf)]
		a.pool.Put(&b)
	}
	p.buf = nil
}

// finishBlock completes block b once it holds k distinct symbols,
// rebuilding missing data symbols from parity.
func (a *assembler) finishBlock(p *partial, b, k int) error {
	blk := &p.blocks[b]
	base := b * a.g.k * a.g.sym
	missing := false
	for i := range k {
		if !blk.has(uint8(i)) {
			missing = true
			break
		}
	}
	if missing {
		shards := make([][]byte, k+maxParity(k))
		for i := range k {
			off := base + i*a.g.sym
			if blk.has(uint8(i)) {
				shards[i] = p.buf[off : off+a.g.sym]
			} else {
				shards[i] = p.buf[off : off : off+a.g.sym] // rebuilt in place
			}
		}
		for _, ps := range blk.parity {
			shards[ps.index] = ps.b
		}
		if err := a.cs.reconstruct(k, shards); err != nil {
			return err
		}
		for i := range k {
			off := base + i*a.g.sym
			if !blk.has(uint8(i)) && &shards[i][0] != &p.buf[off] {
				copy(p.buf[off:off+a.g.sym], shards[i])
			}
		}
		a.reconstructs++
	}
	for _, ps := range blk.parity {
		a.used -= int64(len(ps.b))
		p.bytes -= int64(len(ps.b))
	}
	blk.parity = nil
	blk.done = true
	p.left--
	return nil
}

// position is a point in the first pass: object, then block.
type position struct {
	object uint32
	block  uint16
}

func (p position) less(q position) bool {
	return p.object < q.object || p.object == q.object && p.block < q.block
}

// nacks lists what was lost before edge (everything when all is true):
// first the blocks of partial objects (repaired at once), then, when
// whole is set, runs of objects never seen. At most limit entries.
func (a *assembler) nacks(edge position, all, whole bool, limit int) []nack {
	var out []nack
	keys := make([]uint32, 0, len(a.parts))
	for o := range a.parts {
		if all || o <= edge.object {
			keys = append(keys, o)
		}
	}
	slices.Sort(keys)
	for _, o := range keys {
		p := a.parts[o]
		for b := range p.blocks {
			if !all && !(position{o, uint16(b)}).less(edge) {
				break
			}
			blk := &p.blocks[b]
			if blk.done {
				continue
			}
			k := a.g.blockK(p.length, b)
			out = append(out, nack{kind: nackBlock, need: uint8(k - blk.n), block: uint16(b), object: o, count: 1})
			if len(out) >= limit {
				return out
			}
		}
	}
	end := int64(edge.object)
	if all {
		end = int64(len(a.state))
	}
	if !whole {
		return out
	}
	for o := a.have.NextClear(a.low, end); o < end; {
		stop := a.have.Next(o)
		if stop < 0 || stop > end {
			stop = end
		}
		out = append(out, nack{kind: nackObjects, object: uint32(o), count: uint32(stop - o)})
		if len(out) >= limit {
			return out
		}
		o = a.have.NextClear(stop, end)
	}
	return out
}

// missingRuns lists objects not written, as runs.
func (a *assembler) missingRuns() (runs []span, total int64) {
	n := int64(len(a.state))
	for o := a.low; o < n; {
		if a.state[o] == objWritten {
			o++
			continue
		}
		e := o
		for e < n && a.state[e] != objWritten {
			e++
		}
		runs = append(runs, span{uint32(o), uint32(e - o)})
		total += e - o
		o = e
	}
	return runs, total
}
