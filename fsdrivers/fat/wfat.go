package fat

import (
	"encoding/binary"
	"fmt"
	"slices"
	"syscall"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/internal/lru"
)

// The writer's FAT is read and changed in pages. FAT12/16 tables (at most
// 128 KiB) are one page; FAT32 tables are cut in 64 KiB pages (16,384
// entries) of which at most wfatCleanPages unchanged ones stay cached
// (16 MiB), so a 2 TiB volume's 2 GiB FAT never has to be held. Changed
// (dirty) pages are kept outside the LRU until Sync writes them to every
// FAT copy: they are never evicted unwritten. Their number is bounded by
// what is written between two Syncs (4 bytes per cluster allocated).
const (
	wfat32PageBytes = 64 << 10
	wfatCleanPages  = 256
)

// fatCache is the writable FAT: entries, free-cluster accounting and the
// allocator. It is guarded by the wfs mutex.
type fatCache struct {
	dev       fsdrivers.ReadWriterAt
	g         *geometry
	need      int64 // bytes holding entries 0..maxCluster
	pageBytes int64
	clean     *lru.Cache[int64, []byte]
	dirty     map[int64][]byte
	pageFree  []int64 // free entries per page, to skip full pages
	free      int64   // free clusters
	hint      uint32  // where the next search for a free cluster starts
	lastAlloc uint32  // last cluster allocated (FSInfo's FSI_Nxt_Free), 0 if none
}

func newFATCache(dev fsdrivers.ReadWriterAt, g *geometry) *fatCache {
	f := &fatCache{
		dev:   dev,
		g:     g,
		need:  g.fatNeed(),
		clean: lru.New[int64, []byte](wfatCleanPages),
		dirty: map[int64][]byte{},
		hint:  2,
	}
	f.pageBytes = f.need
	if g.bits == 32 {
		f.pageBytes = wfat32PageBytes
	}
	f.pageFree = make([]int64, (f.need+f.pageBytes-1)/f.pageBytes)
	return f
}

// eocMark is the end-of-chain value written for a chain's last cluster.
func (g *geometry) eocMark() uint32 {
	switch g.bits {
	case 12:
		return 0x0FFF
	case 16:
		return 0xFFFF
	default:
		return 0x0FFFFFFF
	}
}

// scan reads every FAT copy, checks that they agree and that every entry is
// a free mark, a cluster number, a bad mark or an end of chain, and counts
// the free clusters. A volume failing this is not written: which copy is
// right is fsck's call, not ours.
func (f *fatCache) scan() error {
	g := f.g
	max := g.maxCluster()
	return eachFATEntry(f.dev, g, func(c uint32, copies []uint32) error {
		v := copies[0]
		for i, w := range copies[1:] {
			if w != v {
				return fmt.Errorf("fat: FAT copies disagree at cluster %d (FAT 0: %#x, FAT %d: %#x): run fsck.fat first: %w", c, v, i+1, w, fsdrivers.ErrCorrupt)
			}
		}
		switch {
		case v == 0:
			f.free++
			f.pageFree[entryByte(g.bits, c)/f.pageBytes]++
		case v >= 2 && v <= max, g.bad(v), g.eoc(v):
		default:
			return fmt.Errorf("fat: FAT entry of cluster %d is %#x, neither a cluster nor a mark: %w", c, v, fsdrivers.ErrCorrupt)
		}
		return nil
	})
}

// page returns page i for reading.
func (f *fatCache) page(i int64) ([]byte, error) {
	if p, ok := f.dirty[i]; ok {
		return p, nil
	}
	return f.clean.Get(i, func() ([]byte, error) {
		start := i * f.pageBytes
		data := make([]byte, min(f.pageBytes, f.need-start))
		if err := readFull(f.dev, data, f.g.fatOffset+start); err != nil {
			return nil, fmt.Errorf("fat: read FAT at %d: %w: %w", f.g.fatOffset+start, err, syscall.EIO)
		}
		return data, nil
	})
}

// dirtyPage returns page i for changing, moving it out of the LRU.
func (f *fatCache) dirtyPage(i int64) ([]byte, error) {
	if p, ok := f.dirty[i]; ok {
		return p, nil
	}
	p, err := f.page(i)
	if err != nil {
		return nil, err
	}
	f.clean.Remove(i)
	f.dirty[i] = p
	return p, nil
}

// get returns the entry of cluster c (top 4 bits of FAT32 masked off).
func (f *fatCache) get(c uint32) (uint32, error) {
	if c > f.g.maxCluster() {
		return 0, fmt.Errorf("fat: cluster %d past the last (%d): %w", c, f.g.maxCluster(), syscall.EIO)
	}
	off := entryByte(f.g.bits, c)
	p, err := f.page(off / f.pageBytes)
	if err != nil {
		return 0, err
	}
	return decodeEntry(p, off%f.pageBytes, c, f.g.bits), nil
}

// set changes the entry of cluster c (2 ≤ c ≤ maxCluster), keeping the
// free count right.
func (f *fatCache) set(c, v uint32) error {
	if c < 2 || c > f.g.maxCluster() {
		return fmt.Errorf("fat: set cluster %d outside 2..%d: %w", c, f.g.maxCluster(), syscall.EIO)
	}
	off := entryByte(f.g.bits, c)
	pi := off / f.pageBytes
	p, err := f.dirtyPage(pi)
	if err != nil {
		return err
	}
	rel := off % f.pageBytes
	old := decodeEntry(p, rel, c, f.g.bits)
	encodeEntry(p, rel, c, f.g.bits, v)
	switch {
	case old == 0 && v != 0:
		f.free--
		f.pageFree[pi]--
	case old != 0 && v == 0:
		f.free++
		f.pageFree[pi]++
	}
	return nil
}

// encodeEntry stores v as the entry of cluster c at byte off of b, keeping
// the neighbour's nibble on FAT12 and the reserved top bits on FAT32.
func encodeEntry(b []byte, off int64, c uint32, bits int, v uint32) {
	le := binary.LittleEndian
	switch bits {
	case 12:
		u := le.Uint16(b[off:])
		if c&1 == 1 {
			u = u&0x000F | uint16(v&0x0FFF)<<4
		} else {
			u = u&0xF000 | uint16(v&0x0FFF)
		}
		le.PutUint16(b[off:], u)
	case 16:
		le.PutUint16(b[off:], uint16(v))
	default:
		le.PutUint32(b[off:], le.Uint32(b[off:])&0xF0000000|v&0x0FFFFFFF)
	}
}

// markDirty makes the page holding cluster c's entry dirty, so the next
// flush writes it (used when an orphan's clusters must be hidden).
func (f *fatCache) markDirty(c uint32) error {
	_, err := f.dirtyPage(entryByte(f.g.bits, c) / f.pageBytes)
	return err
}

// alloc finds n free clusters, preferring near (the cluster after a file's
// last one, so files stay contiguous), then the hint, and links them into a
// chain after prev (0: a new chain). The caller has checked f.free ≥ n, so
// the search cannot come back empty on a consistent FAT.
func (f *fatCache) alloc(n int64, prev, near uint32) ([]uint32, error) {
	if n > f.free {
		return nil, syscall.ENOSPC
	}
	g := f.g
	max := g.maxCluster()
	start := f.hint
	if near >= 2 && near <= max {
		if v, err := f.get(near); err == nil && v == 0 {
			start = near
		}
	}
	if start < 2 || start > max {
		start = 2
	}
	out := make([]uint32, 0, n)
	c := start
	for scanned := uint64(0); int64(len(out)) < n && scanned <= uint64(max); {
		pi := entryByte(g.bits, c) / f.pageBytes
		if f.pageFree[pi] == 0 && g.bits == 32 {
			// Skip the rest of a full page.
			next := uint32((pi + 1) * f.pageBytes / 4)
			if next > max || next < c {
				scanned += uint64(max - c + 1)
				c = 2
			} else {
				scanned += uint64(next - c)
				c = next
			}
			continue
		}
		v, err := f.get(c)
		if err != nil {
			return nil, err
		}
		if v == 0 {
			if err := f.set(c, g.eocMark()); err != nil {
				return nil, err
			}
			if prev != 0 {
				if err := f.set(prev, c); err != nil {
					return nil, err
				}
			}
			prev = c
			out = append(out, c)
		}
		scanned++
		c++
		if c > max {
			c = 2
		}
	}
	if int64(len(out)) < n {
		return nil, fmt.Errorf("fat: found %d of %d free clusters the count promised: %w", len(out), n, syscall.EIO)
	}
	f.lastAlloc = out[len(out)-1]
	f.hint = f.lastAlloc + 1
	if f.hint > max {
		f.hint = 2
	}
	return out, nil
}

// freeRuns marks every cluster of runs free.
func (f *fatCache) freeRuns(runs []run) error {
	for _, r := range runs {
		for c := r.first; c < r.first+r.n; c++ {
			if err := f.set(c, 0); err != nil {
				return err
			}
		}
	}
	return nil
}

// flush writes every dirty page to every FAT copy. Clusters in hidden (the
// chains of unlinked files still held open) are written as free, so the
// device never shows lost clusters, while in memory they stay allocated.
func (f *fatCache) flush(hidden []run) error {
	g := f.g
	keys := make([]int64, 0, len(f.dirty))
	for k := range f.dirty {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, pi := range keys {
		p := f.dirty[pi]
		out := p
		if len(hidden) > 0 {
			out = slices.Clone(p)
			lo, hi := uint32(0), g.maxCluster()
			if g.bits == 32 {
				lo = uint32(pi * f.pageBytes / 4)
				hi = lo + uint32(len(p)/4) - 1
			}
			for _, r := range hidden {
				for c := max(r.first, lo); c < r.first+r.n && c <= hi; c++ {
					encodeEntry(out, entryByte(g.bits, c)-pi*f.pageBytes, c, g.bits, 0)
				}
			}
		}
		for i := 0; i < g.numFATs; i++ {
			at := g.fatOffset + int64(i)*g.fatBytes + pi*f.pageBytes
			if _, err := f.dev.WriteAt(out, at); err != nil {
				return fmt.Errorf("fat: write FAT %d at %d: %w: %w", i, at, err, syscall.EIO)
			}
		}
		delete(f.dirty, pi)
		f.clean.Add(pi, p)
	}
	return nil
}
