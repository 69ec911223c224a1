package multicast

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/reedsolomon"
)

// FEC configures proactive Reed–Solomon parity: Parity symbols for every
// Block data symbols. The zero value sends no proactive parity (repairs
// still use parity: one repair symbol serves every receiver that lost one
// symbol of the block, whichever it was).
type FEC struct {
	Parity int // parity symbols per block; 0: none
	Block  int // data symbols per block; 0: DefaultFECBlock
}

// DefaultFECBlock is K, the data symbols per block: 64 symbols of 1408
// bytes is 88 KiB, so a 256 KiB chunk is three blocks.
const DefaultFECBlock = 64

// ParseFEC reads "P" or "P/K" (e.g. "4/64": 4 parity symbols per 64 data
// symbols). "" and "0" mean none.
func ParseFEC(s string) (FEC, error) {
	var f FEC
	if s == "" {
		return f, nil
	}
	ps, ks, hasK := strings.Cut(s, "/")
	p, err := strconv.Atoi(ps)
	if err != nil {
		return f, fmt.Errorf("multicast: --fec %q: want P or P/K, e.g. 4/64", s)
	}
	f.Parity = p
	if hasK {
		if f.Block, err = strconv.Atoi(ks); err != nil {
			return f, fmt.Errorf("multicast: --fec %q: want P or P/K, e.g. 4/64", s)
		}
	}
	return f, f.validate()
}

func (f FEC) block() int {
	if f.Block == 0 {
		return DefaultFECBlock
	}
	return f.Block
}

func (f FEC) validate() error {
	if k := f.block(); k < 1 || k > maxK {
		return fmt.Errorf("multicast: FEC block of %d symbols (1..%d)", k, maxK)
	}
	if f.Parity < 0 || f.Parity > f.block() {
		return fmt.Errorf("multicast: FEC parity %d per block of %d", f.Parity, f.block())
	}
	return nil
}

// String formats f as ParseFEC reads it.
func (f FEC) String() string { return fmt.Sprintf("%d/%d", f.Parity, f.block()) }

// geometry is how objects are cut into symbols and blocks; sender and
// receivers derive it from the same announcement.
type geometry struct {
	sym       int    // symbol size
	k         int    // data symbols per full block
	p         int    // proactive parity per full block
	objects   uint32 // number of objects
	frames    uint32 // objects below this are frames, the rest zero-run tables
	chunkSize int
	numChunks int64
}

// symbols is the number of data symbols of an object of n bytes.
func (g *geometry) symbols(n int) int { return (n + g.sym - 1) / g.sym }

// blocks is the number of blocks of an object of n bytes.
func (g *geometry) blocks(n int) int { return (g.symbols(n) + g.k - 1) / g.k }

// blockK is the number of data symbols in block b of an object of n bytes.
func (g *geometry) blockK(n, b int) int { return min(g.k, g.symbols(n)-b*g.k) }

// parityFor is the number of proactive parity symbols for a block of k
// data symbols: P per full block, proportionally fewer (at least one when
// P > 0) for the short last block of an object.
func (g *geometry) parityFor(k int) int {
	if g.p == 0 {
		return 0
	}
	return max(1, (g.p*k+g.k-1)/g.k)
}

// checkSymbol validates a data packet header against the geometry, so the
// receiver can index its buffers with it.
func (g *geometry) checkSymbol(d *dataHdr) error {
	n := int(d.frameLen)
	switch {
	case d.object >= g.objects:
		return fmt.Errorf("%w: object %d of %d", errMalformed, d.object, g.objects)
	case d.object < g.frames && int64(d.chunk) >= g.numChunks:
		return fmt.Errorf("%w: chunk %d of %d", errMalformed, d.chunk, g.numChunks)
	case d.object >= g.frames && d.chunk != 0:
		return fmt.Errorf("%w: zero-run table with chunk %d", errMalformed, d.chunk)
	case n < tableOverhead+16 || d.object < g.frames && n <= 64 || n > maxFrameLen(g.chunkSize):
		return fmt.Errorf("%w: object length %d", errMalformed, n)
	case int(d.block) >= g.blocks(n):
		return fmt.Errorf("%w: block %d of %d", errMalformed, d.block, g.blocks(n))
	case int(d.k) != g.blockK(n, int(d.block)):
		return fmt.Errorf("%w: block %d has %d symbols, packet says %d", errMalformed, d.block, g.blockK(n, int(d.block)), d.k)
	}
	if int(d.index) < int(d.k) {
		off := (int(d.block)*g.k + int(d.index)) * g.sym
		if want := min(g.sym, n-off); int(d.plen) != want {
			return fmt.Errorf("%w: data symbol of %d bytes, want %d", errMalformed, d.plen, want)
		}
	} else if int(d.plen) != g.sym {
		return fmt.Errorf("%w: parity symbol of %d bytes", errMalformed, d.plen)
	}
	return nil
}

// Reed–Solomon: a systematic code whose parity rows are a Cauchy matrix
// over GF(2^8) (the field klauspost/reedsolomon computes in: polynomial
// x^8+x^4+x^3+x^2+1). Row j of a block with k data symbols is
// 1/((k+j) xor c) for column c. Every square submatrix of a Cauchy matrix
// is invertible, so any k of the k data and 256-k parity symbols rebuild
// the block; and row j does not depend on how many rows exist, so the
// sender can compute just the rows a repair needs ([j0, j0+n)) while the
// receiver decodes with the full matrix. We build the matrix ourselves
// rather than rely on the library's internal choice so both ends agree by
// construction.

var gfExp [510]byte
var gfLog [256]byte

func init() {
	x := 1
	for i := range 255 {
		gfExp[i] = byte(x)
		gfLog[x] = byte(i)
		x <<= 1
		if x&0x100 != 0 {
			x ^= 0x11d
		}
	}
	for i := 255; i < len(gfExp); i++ {
		gfExp[i] = gfExp[i-255]
	}
}

func gfInv(a byte) byte { return gfExp[255-int(gfLog[a])] }

// maxParity is the number of parity rows a block of k data symbols has.
func maxParity(k int) int { return 256 - k }

// parityRows returns rows [j0, j0+n) of the parity matrix for k columns.
func parityRows(k, j0, n int) [][]byte {
	m := make([][]byte, n)
	for i := range m {
		row := make([]byte, k)
		x := k + j0 + i
		for c := range row {
			row[c] = gfInv(byte(x ^ c))
		}
		m[i] = row
	}
	return m
}

type codecKey struct{ k, j0, n int }

// codecs caches Reed–Solomon encoders. Keys are bounded: k ≤ 128 and the
// sender asks for few distinct row ranges; the cache is dropped when it
// grows past maxCodecs anyway.
type codecs struct {
	mu sync.Mutex
	m  map[codecKey]reedsolomon.Encoder
}

const maxCodecs = 512

func (c *codecs) get(k, j0, n int) (reedsolomon.Encoder, error) {
	key := codecKey{k, j0, n}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[key]; ok {
		return e, nil
	}
	if k < 1 || n < 1 || j0 < 0 || j0+n > maxParity(k) {
		return nil, fmt.Errorf("multicast: parity rows [%d,%d) for k=%d out of range", j0, j0+n, k)
	}
	e, err := reedsolomon.New(k, n, reedsolomon.WithCustomMatrix(parityRows(k, j0, n)))
	if err != nil {
		return nil, fmt.Errorf("multicast: reed-solomon k=%d n=%d: %w", k, n, err)
	}
	if c.m == nil || len(c.m) >= maxCodecs {
		c.m = map[codecKey]reedsolomon.Encoder{}
	}
	c.m[key] = e
	return e, nil
}

// encodeParity computes parity rows [j0, j0+len(out)) of the data shards
// (all of symbol size) into out.
func (c *codecs) encodeParity(data [][]byte, j0 int, out [][]byte) error {
	e, err := c.get(len(data), j0, len(out))
	if err != nil {
		return err
	}
	shards := make([][]byte, 0, len(data)+len(out))
	shards = append(shards, data...)
	shards = append(shards, out...)
	if err := e.Encode(shards); err != nil {
		return fmt.Errorf("multicast: parity: %w", err)
	}
	return nil
}

// reconstruct rebuilds the missing data shards (nil entries of
// shards[:k]) from at least k present shards; shards has k+maxParity(k)
// entries, parity row j at k+j.
func (c *codecs) reconstruct(k int, shards [][]byte) error {
	e, err := c.get(k, 0, maxParity(k))
	if err != nil {
		return err
	}
	if err := e.ReconstructData(shards); err != nil {
		return fmt.Errorf("multicast: reconstruct block: %w", err)
	}
	return nil
}
