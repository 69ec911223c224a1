package multicast

import (
	"bytes"
	"math/rand"
	"testing"
)

func TestGF(t *testing.T) {
	// a · a⁻¹ = 1 for every non-zero a, computed with the log tables.
	for a := 1; a < 256; a++ {
		inv := gfInv(byte(a))
		if p := gfExp[int(gfLog[a])+int(gfLog[inv])]; p != 1 {
			t.Fatalf("%d · %d = %d", a, inv, p)
		}
	}
}

// TestParityAnyK checks the MDS property the protocol relies on: for
// several block sizes, dropping data symbols and rebuilding from parity
// rows computed in separate pieces (as repairs are) restores the block.
func TestParityAnyK(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	var cs codecs
	const sym = 64
	for _, tc := range []struct {
		k, lose int
		rows    [][2]int // parity row ranges computed separately
	}{
		{k: 1, lose: 1, rows: [][2]int{{0, 1}}},
		{k: 3, lose: 3, rows: [][2]int{{0, 1}, {5, 2}}},
		{k: 64, lose: 4, rows: [][2]int{{0, 2}, {2, 1}, {100, 1}}},
		{k: 64, lose: 64, rows: [][2]int{{128, 64}}},
		{k: 128, lose: 10, rows: [][2]int{{0, 4}, {120, 6}}},
		{k: 200, lose: 2, rows: [][2]int{{54, 2}}},
	} {
		data := make([][]byte, tc.k)
		for i := range data {
			data[i] = make([]byte, sym)
			rng.Read(data[i])
		}
		shards := make([][]byte, tc.k+maxParity(tc.k))
		for _, r := range tc.rows {
			out := make([][]byte, r[1])
			for i := range out {
				out[i] = make([]byte, sym)
			}
			if err := cs.encodeParity(data, r[0], out); err != nil {
				t.Fatal(err)
			}
			for i := range out {
				shards[tc.k+r[0]+i] = out[i]
			}
		}
		for i, d := range data {
			shards[i] = append([]byte(nil), d...)
		}
		for _, i := range rng.Perm(tc.k)[:tc.lose] {
			shards[i] = nil
		}
		if err := cs.reconstruct(tc.k, shards); err != nil {
			t.Fatalf("k=%d: %v", tc.k, err)
		}
		for i := range data {
			if !bytes.Equal(shards[i], data[i]) {
				t.Fatalf("k=%d: shard %d differs after reconstruction", tc.k, i)
			}
		}
	}
}

func TestParityTooFew(t *testing.T) {
	var cs codecs
	k := 4
	shards := make([][]byte, k+maxParity(k))
	shards[0] = make([]byte, 16)
	shards[k] = make([]byte, 16)
	if err := cs.reconstruct(k, shards); err == nil {
		t.Fatal("reconstruct with 2 of 4 symbols succeeded")
	}
	if _, err := cs.get(4, 250, 10); err == nil {
		t.Fatal("rows beyond 256-k accepted")
	}
}

func TestGeometry(t *testing.T) {
	g := geometry{sym: 1000, k: 4, p: 2, objects: 10, chunkSize: 64 << 10, numChunks: 100}
	for _, tc := range []struct {
		n, syms, blocks, lastK, lastP int
	}{
		{65, 1, 1, 1, 1},
		{1000, 1, 1, 1, 1},
		{1001, 2, 1, 2, 1},
		{4000, 4, 1, 4, 2},
		{4001, 5, 2, 1, 1},
		{9000, 9, 3, 1, 1},
		{7000, 7, 2, 3, 2},
	} {
		if s, b := g.symbols(tc.n), g.blocks(tc.n); s != tc.syms || b != tc.blocks {
			t.Errorf("n=%d: %d symbols %d blocks, want %d %d", tc.n, s, b, tc.syms, tc.blocks)
		}
		k := g.blockK(tc.n, tc.blocks-1)
		if k != tc.lastK || g.parityFor(k) != tc.lastP {
			t.Errorf("n=%d: last block k=%d p=%d, want %d %d", tc.n, k, g.parityFor(k), tc.lastK, tc.lastP)
		}
	}
}
