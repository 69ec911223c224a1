package multicast

import (
	"container/heap"
	"context"
	"slices"
	"time"

	"github.com/dimg-project/dimg/internal/bitset"
)

// repairGuard: NACKs for what was repaired this recently are ignored —
// the repair is still on its way to the receiver that asked.
const repairGuard = 120 * time.Millisecond

type blockKey struct {
	object uint32
	block  uint16
}

// objRepair is what is queued for one object: the symbols each block
// still needs (the largest need any receiver reported).
type objRepair struct {
	blocks map[uint16]int
}

// objHeap orders queued repairs by object number: receivers complete (and
// free) objects in order.
type objHeap []uint32

func (h objHeap) Len() int           { return len(h) }
func (h objHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h objHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *objHeap) Push(x any)        { *h = append(*h, x.(uint32)) }
func (h *objHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// repairQueue is what the sender owes receivers beyond the pass: parity
// for blocks they lost part of (served at once, lowest object first, one
// repair symbol serving every receiver that lost one symbol of the block)
// and whole objects they never saw (the backlog, served after the pass).
type repairQueue struct {
	g       *geometry
	src     *objectSource
	repairs map[uint32]*objRepair
	heap    objHeap
	// backlog holds whole objects to resend after the pass.
	backlog    bitset.Set
	backlogN   int64
	lastRepair map[blockKey]time.Time // when a block was last repaired
	lastWhole  map[uint32]time.Time   // when an object was last resent whole
	nextParity map[blockKey]int       // next parity row to send for a block
	buf        []byte                 // object buffer for repairs
}

func newRepairQueue(g *geometry, src *objectSource) *repairQueue {
	return &repairQueue{g: g, src: src, repairs: map[uint32]*objRepair{}, backlog: bitset.New(int64(g.objects)),
		lastRepair: map[blockKey]time.Time{}, lastWhole: map[uint32]time.Time{}, nextParity: map[blockKey]int{},
		buf: make([]byte, 0, src.paddedLen(maxFrameLen(g.chunkSize)))}
}

// nack queues what one NACK entry asks for and returns how many symbols
// that is (0 when it was suppressed or invalid).
func (q *repairQueue) nack(nk nack, now time.Time) int64 {
	if nk.object >= q.g.objects {
		return 0
	}
	switch nk.kind {
	case nackBlock:
		o := nk.object
		n := int(q.src.objs[o].length)
		if int(nk.block) >= q.g.blocks(n) || q.backlog.Test(int64(o)) {
			return 0
		}
		key := blockKey{o, nk.block}
		if t, ok := q.lastRepair[key]; ok && now.Sub(t) < repairGuard {
			return 0
		}
		if t, ok := q.lastWhole[o]; ok && now.Sub(t) < repairGuard {
			return 0
		}
		need := min(int(nk.need), q.g.blockK(n, int(nk.block)))
		rp := q.queue(o)
		if need > rp.blocks[nk.block] {
			rp.blocks[nk.block] = need
		}
		return int64(need)
	case nackObjects:
		end := min(int64(nk.object)+int64(nk.count), int64(q.g.objects))
		var syms int64
		for o := int64(nk.object); o < end; o++ {
			if q.backlog.Test(o) {
				continue
			}
			if t, ok := q.lastWhole[uint32(o)]; ok && now.Sub(t) < repairGuard {
				continue
			}
			// Whole objects wait for the end of the pass (late joiners,
			// stragglers, evicted objects): serving them during the pass
			// would hold everyone back. A receiver lacking a whole object
			// holds no memory for it, so waiting costs it nothing.
			q.backlog.Add(o)
			q.backlogN++
			syms += int64(q.g.symbols(int(q.src.objs[o].length)))
		}
		return syms
	}
	return 0
}

func (q *repairQueue) queue(o uint32) *objRepair {
	rp, ok := q.repairs[o]
	if !ok {
		rp = &objRepair{blocks: map[uint16]int{}}
		q.repairs[o] = rp
		heap.Push(&q.heap, o)
	}
	return rp
}

// urgent reports whether block repairs are queued.
func (q *repairQueue) urgent() bool { return len(q.heap) > 0 }

// sendRepair serves the lowest queued object.
func (q *repairQueue) sendRepair(ctx context.Context, tx *transmitter) error {
	o := heap.Pop(&q.heap).(uint32)
	rp := q.repairs[o]
	delete(q.repairs, o)
	buf, err := q.src.read(o, q.buf)
	if err != nil {
		return err
	}
	q.buf = buf[:0]
	blocks := make([]uint16, 0, len(rp.blocks))
	for b := range rp.blocks {
		blocks = append(blocks, b)
	}
	slices.Sort(blocks)
	n := int(q.src.objs[o].length)
	for _, b := range blocks {
		need := rp.blocks[b]
		k := q.g.blockK(n, int(b))
		key := blockKey{o, b}
		j0, ok := q.nextParity[key]
		if !ok {
			j0 = q.g.parityFor(k)
		}
		if j0+need > maxParity(k) {
			// Parity rows used up (a receiver keeps losing this block):
			// resend the data itself and start the rows over.
			if err := tx.sendBlock(ctx, o, buf, int(b), 0, true); err != nil {
				return err
			}
			q.nextParity[key] = q.g.parityFor(k)
		} else {
			if err := tx.sendParity(ctx, o, buf, int(b), j0, need, true); err != nil {
				return err
			}
			q.nextParity[key] = j0 + need
		}
		q.lastRepair[key] = time.Now()
	}
	return nil
}

// sendBacklog resends the lowest object waiting for a repair round.
func (q *repairQueue) sendBacklog(ctx context.Context, tx *transmitter) error {
	o := q.backlog.Next(0)
	if o < 0 {
		q.backlogN = 0
		return nil
	}
	q.backlog.Remove(o)
	q.backlogN--
	buf, err := q.src.read(uint32(o), q.buf)
	if err != nil {
		return err
	}
	q.buf = buf[:0]
	// NACKs for blocks on their way are moot, from the first symbol to
	// a guard time after the last.
	q.lastWhole[uint32(o)] = time.Now()
	if err := tx.sendObject(ctx, uint32(o), buf, true); err != nil {
		return err
	}
	q.lastWhole[uint32(o)] = time.Now()
	return nil
}

// prune forgets repair bookkeeping for objects below low, which every
// active receiver already has: it would otherwise grow with the image on
// a lossy network.
func (q *repairQueue) prune(low uint32) {
	for k := range q.lastRepair {
		if k.object < low {
			delete(q.lastRepair, k)
		}
	}
	for k := range q.nextParity {
		if k.object < low {
			delete(q.nextParity, k)
		}
	}
	for o := range q.lastWhole {
		if o < low {
			delete(q.lastWhole, o)
		}
	}
}
