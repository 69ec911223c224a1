package multicast

import (
	"bytes"
	"math/rand"
	"testing"
)

// simSender produces symbols like the sender does (data, proactive parity,
// fresh parity rows for repairs), without sockets.
type simSender struct {
	g    *geometry
	cs   codecs
	objs [][]byte // padded
	lens []int
	next map[blockKey]int
}

func (s *simSender) block(o, b int, parity bool, repair bool, emit func(dataHdr, []byte)) {
	n := s.lens[o]
	k := s.g.blockK(n, b)
	d := dataHdr{object: uint32(o), chunk: uint32(o), frameLen: uint32(n), block: uint16(b), k: uint8(k), repair: repair}
	for i := range k {
		off := (b*s.g.k + i) * s.g.sym
		d.index, d.plen = uint8(i), uint16(min(s.g.sym, n-off))
		emit(d, s.objs[o][off:off+int(d.plen)])
	}
	if parity {
		s.parity(o, b, 0, s.g.parityFor(k), repair, emit)
	}
}

func (s *simSender) parity(o, b, j0, count int, repair bool, emit func(dataHdr, []byte)) {
	if count == 0 {
		return
	}
	n := s.lens[o]
	k := s.g.blockK(n, b)
	data := make([][]byte, k)
	for i := range data {
		off := (b*s.g.k + i) * s.g.sym
		data[i] = s.objs[o][off : off+s.g.sym]
	}
	out := make([][]byte, count)
	for i := range out {
		out[i] = make([]byte, s.g.sym)
	}
	if err := s.cs.encodeParity(data, j0, out); err != nil {
		panic(err)
	}
	d := dataHdr{object: uint32(o), chunk: uint32(o), frameLen: uint32(n), block: uint16(b), k: uint8(k), plen: uint16(s.g.sym), repair: repair}
	for i := range out {
		d.index = uint8(k + j0 + i)
		emit(d, out[i])
	}
}

func TestAssemblerRepairLoop(t *testing.T) {
	for _, tc := range []struct {
		name   string
		p      int
		loss   float64
		budget int64
	}{
		{"no-fec-20pct", 0, 0.2, 1 << 30},
		{"fec-20pct", 2, 0.2, 1 << 30},
		{"tiny-budget", 1, 0.3, 1}, // every new partial evicts the others
		{"heavy-loss", 0, 0.6, 1 << 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewSource(1))
			g := &geometry{sym: 100, k: 8, p: tc.p, objects: 12, frames: 12, chunkSize: 4 << 10, numChunks: 100}
			s := &simSender{g: g, next: map[blockKey]int{}}
			for range g.objects {
				n := 65 + rng.Intn(maxFrameLen(g.chunkSize)-65)
				b := make([]byte, g.symbols(n)*g.sym)
				rng.Read(b[:n])
				s.objs, s.lens = append(s.objs, b), append(s.lens, n)
			}
			var cs codecs
			a := newAssembler(g, &cs, tc.budget)
			got := make([][]byte, g.objects)
			emit := func(d dataHdr, p []byte) {
				if rng.Float64() < tc.loss {
					return
				}
				if err := g.checkSymbol(&d); err != nil {
					t.Fatalf("sender built a bad symbol: %v", err)
				}
				o, err := a.add(&d, p)
				if err != nil {
					t.Fatal(err)
				}
				if o != nil {
					got[o.obj] = bytes.Clone(o.buf[:o.length])
					a.release(o)
					a.setState(o.obj, objWritten)
				}
			}
			for o := range g.objects {
				for b := range g.blocks(s.lens[o]) {
					s.block(int(o), b, true, false, emit)
				}
			}
			rounds := 0
			for ; !a.complete() && rounds < 200; rounds++ {
				for _, nk := range a.nacks(position{}, true, true, 1000) {
					switch nk.kind {
					case nackBlock:
						o, b := int(nk.object), int(nk.block)
						key := blockKey{nk.object, nk.block}
						j0, ok := s.next[key]
						if !ok {
							j0 = g.parityFor(g.blockK(s.lens[o], b))
						}
						if j0+int(nk.need) > maxParity(g.blockK(s.lens[o], b)) {
							s.block(o, b, false, true, emit)
							s.next[key] = g.parityFor(g.blockK(s.lens[o], b))
						} else {
							s.parity(o, b, j0, int(nk.need), true, emit)
							s.next[key] = j0 + int(nk.need)
						}
					case nackObjects:
						for o := nk.object; o < nk.object+nk.count; o++ {
							for b := range g.blocks(s.lens[o]) {
								s.block(int(o), b, true, true, emit)
							}
						}
					}
				}
			}
			if !a.complete() {
				t.Fatalf("incomplete after %d rounds", rounds)
			}
			for o := range got {
				if !bytes.Equal(got[o], s.objs[o][:s.lens[o]]) {
					t.Fatalf("object %d reassembled wrong", o)
				}
			}
			if a.used != 0 || len(a.parts) != 0 {
				t.Fatalf("assembler still holds %d bytes in %d partials", a.used, len(a.parts))
			}
			if tc.budget == 1 && a.evicted == 0 {
				t.Fatal("tiny budget evicted nothing")
			}
			t.Logf("%d rounds, %d blocks rebuilt, %d evicted, %d duplicates", rounds, a.reconstructs, a.evicted, a.duplicates)
		})
	}
}

// TestNacksEdge checks that nothing at or after the edge is NACKed during
// the pass, and that ranges of unseen objects are merged.
func TestNacksEdge(t *testing.T) {
	g := &geometry{sym: 100, k: 4, objects: 10, frames: 10, chunkSize: 4 << 10, numChunks: 100}
	var cs codecs
	a := newAssembler(g, &cs, 1<<30)
	// Object 2: first symbol of blocks 0 and 1 (of 3); object 5: one symbol.
	for _, d := range []dataHdr{
		{object: 2, chunk: 2, frameLen: 1000, block: 0, index: 0, k: 4, plen: 100},
		{object: 2, chunk: 2, frameLen: 1000, block: 1, index: 0, k: 4, plen: 100},
		{object: 5, chunk: 5, frameLen: 300, block: 0, index: 0, k: 3, plen: 100},
	} {
		if _, err := a.add(&d, make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
	}
	got := a.nacks(position{object: 2, block: 1}, false, true, 100)
	want := []nack{
		{kind: nackBlock, need: 3, block: 0, object: 2, count: 1},
		{kind: nackObjects, object: 0, count: 2},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("during the pass: %+v", got)
	}
	got = a.nacks(position{}, true, true, 100)
	if len(got) != 3+1+3 { // blocks 0,1,2 of object 2; block 0 of 5; ranges 0-1, 3-4, 6-9
		t.Fatalf("after the pass: %+v", got)
	}
	if got = a.nacks(position{}, true, false, 100); len(got) != 4 {
		t.Fatalf("blocks only: %+v", got)
	}
}
