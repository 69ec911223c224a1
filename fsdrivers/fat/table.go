package fat

import (
	"encoding/binary"
	"fmt"
	"io"
	"sort"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/internal/lru"
)

// FAT32 tables are read in pages of fat32PageBytes and at most
// fat32MaxPages pages stay cached (64 MiB): the FAT of a 2 TiB volume with
// 4 KiB clusters is 2 GiB, too much to hold, while every FAT up to 64 MiB
// (16 M clusters: 64 GiB at 4 KiB, 512 GiB at 32 KiB) is read only once.
// FAT12/16 tables (at most 128 KiB) are one page.
const (
	fat32PageBytes = 256 << 10
	fat32MaxPages  = 256
)

// table reads entries of the active FAT, caching what it read.
type table struct {
	r        io.ReaderAt
	g        *geometry
	off      int64 // byte offset of the active FAT
	need     int64 // bytes holding entries 0..maxCluster
	pageSize int64
	pages    *lru.Cache[int64, []byte] // page index -> its bytes
}

func newTable(r io.ReaderAt, g *geometry) *table {
	t := &table{
		r:     r,
		g:     g,
		off:   g.fatOffset + int64(g.activeFAT)*g.fatBytes,
		need:  g.fatNeed(),
		pages: lru.New[int64, []byte](fat32MaxPages),
	}
	t.pageSize = t.need
	if g.bits == 32 {
		t.pageSize = fat32PageBytes
	}
	return t
}

// page returns page i, reading it on a miss. A failed read is not cached.
func (t *table) page(i int64) ([]byte, error) {
	return t.pages.Get(i, func() ([]byte, error) {
		start := i * t.pageSize
		data := make([]byte, min(t.pageSize, t.need-start))
		if err := readFull(t.r, data, t.off+start); err != nil {
			return nil, fmt.Errorf("fat: read FAT at %d: %w", t.off+start, err)
		}
		return data, nil
	})
}

// entry returns the FAT entry of cluster c (0 ≤ c ≤ maxCluster), with the
// reserved top 4 bits of FAT32 entries masked off.
func (t *table) entry(c uint32) (uint32, error) {
	if c > t.g.maxCluster() {
		return 0, fmt.Errorf("fat: cluster %d past the last (%d): %w", c, t.g.maxCluster(), fsdrivers.ErrCorrupt)
	}
	off := entryByte(t.g.bits, c)
	p, err := t.page(off / t.pageSize)
	if err != nil {
		return 0, err
	}
	return decodeEntry(p, off%t.pageSize, c, t.g.bits), nil
}

// decodeEntry extracts the entry of cluster c at byte off of b.
func decodeEntry(b []byte, off int64, c uint32, bits int) uint32 {
	le := binary.LittleEndian
	switch bits {
	case 12:
		v := uint32(le.Uint16(b[off:]))
		if c&1 == 1 {
			return v >> 4
		}
		return v & 0x0FFF
	case 16:
		return uint32(le.Uint16(b[off:]))
	default:
		return le.Uint32(b[off:]) & 0x0FFFFFFF
	}
}

// bad reports the bad-cluster mark.
func (g *geometry) bad(v uint32) bool {
	switch g.bits {
	case 12:
		return v == 0x0FF7
	case 16:
		return v == 0xFFF7
	default:
		return v == 0x0FFFFFF7
	}
}

// eoc reports whether v ends a chain.
func (g *geometry) eoc(v uint32) bool {
	switch g.bits {
	case 12:
		return v >= 0x0FF8
	case 16:
		return v >= 0xFFF8
	default:
		return v >= 0x0FFFFFF8
	}
}

// run is a stretch of consecutive clusters in a chain.
type run struct {
	first uint32 // cluster number
	n     uint32 // clusters
}

// chain holds the runs of (the first part of) a cluster chain and, for
// each run, how many clusters precede it, so an offset maps to a run by
// binary search.
type chain struct {
	runs   []run
	before []int64
	kept   int64 // clusters in runs
	total  int64 // clusters walked
}

// find returns the index of the run holding the chain's cluster number k
// (0-based), k < total.
func (c *chain) find(k int64) int {
	return sort.Search(len(c.runs), func(i int) bool { return c.before[i]+int64(c.runs[i].n) > k })
}

// walk follows the chain from first to its end. The walk is bounded by the
// volume's cluster count: a longer chain must revisit a cluster, i.e. loop.
// Brent's cycle detection finds short loops early instead of after
// clusterCount steps. Only the first keep clusters are recorded as runs, so
// memory is bounded by what the caller can use (a file's size) even when a
// hostile chain is longer. limit, when > 0, stops the walk after that many
// clusters (used for directories, whose size the specification caps).
func (t *table) walk(first uint32, keep, limit int64) (*chain, error) {
	g := t.g
	c := &chain{}
	if first == 0 {
		return c, nil
	}
	max := g.maxCluster()
	// Brent: tortoise stays at a cluster while the hare advances up to
	// power steps; meeting it again means a loop.
	tortoise, power, lam := uint32(0), int64(1), int64(0)
	cur := first
	for steps := int64(0); ; steps++ {
		if cur < 2 || cur > max {
			return nil, fmt.Errorf("fat: chain from cluster %d: cluster %d outside 2..%d: %w", first, cur, max, fsdrivers.ErrCorrupt)
		}
		if cur == tortoise || steps >= int64(g.clusterCount) {
			return nil, fmt.Errorf("fat: chain from cluster %d loops at cluster %d: %w", first, cur, fsdrivers.ErrCorrupt)
		}
		if lam == power {
			tortoise, power, lam = cur, power*2, 0
		}
		lam++
		if c.kept < keep {
			if n := len(c.runs); n > 0 && c.runs[n-1].first+c.runs[n-1].n == cur {
				c.runs[n-1].n++
			} else {
				c.before = append(c.before, c.kept)
				c.runs = append(c.runs, run{first: cur, n: 1})
			}
			c.kept++
		}
		c.total++
		if limit > 0 && c.total >= limit {
			return c, nil
		}
		next, err := t.entry(cur)
		if err != nil {
			return nil, err
		}
		switch {
		case g.eoc(next):
			return c, nil
		case next == 0:
			return nil, fmt.Errorf("fat: chain from cluster %d: cluster %d is marked free: %w", first, cur, fsdrivers.ErrCorrupt)
		case g.bad(next):
			return nil, fmt.Errorf("fat: chain from cluster %d: cluster %d is followed by a bad-cluster mark: %w", first, cur, fsdrivers.ErrCorrupt)
		}
		cur = next
	}
}

// readFull reads len(p) bytes at off; a short read is io.ErrUnexpectedEOF.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}
