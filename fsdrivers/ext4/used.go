package ext4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"

	"github.com/dimg-project/dimg/fsdrivers"
)

// maxBitmapRead bounds one batched read of adjacent block bitmaps (flex_bg
// packs them together, so a 1 TiB filesystem needs a few dozen reads).
const maxBitmapRead = 1 << 20

type bitmapJob struct {
	g    uint32
	blk  uint64
	csum uint32
	hi   bool
}

// UsedRanges returns the byte ranges holding data or metadata: the block
// bitmaps of initialised groups, the computed metadata of BLOCK_UNINIT
// groups, every group's bitmaps and inode table wherever flex_bg put them,
// superblock and GDT backups, and always the first 2048 bytes (boot sector
// and primary superblock). A group whose descriptor or bitmap fails its
// checksum counts as entirely used, and the reason is kept for Warnings;
// so does the whole filesystem when its journal needs recovery.
func (v *Volume) UsedRanges() ([]fsdrivers.Range, error) {
	if err := v.checkSupported(); err != nil {
		return nil, err
	}
	if v.sb.incompat&incompatRecover != 0 {
		// The journal holds committed changes not yet written home: the
		// on-disk bitmaps may miss blocks that replay will claim. Only
		// the whole filesystem is safe.
		v.mu.Lock()
		v.warnings = []string{"the journal needs recovery: every block counted as used"}
		v.mu.Unlock()
		return []fsdrivers.Range{{Off: 0, Len: int64(v.sb.blocksCount) << v.blockBits}}, nil
	}
	var (
		runs []blockRun
		jobs []bitmapJob
		warn []string
	)
	wholeGroup := func(g uint32, why error) {
		warn = append(warn, fmt.Sprintf("group %d counted as fully used: %v", g, why))
		runs = append(runs, blockRun{v.groupFirstBlock(g), v.groupBlocks(g)})
	}
	inFS := func(start, count uint64) bool {
		return start < v.sb.blocksCount && count <= v.sb.blocksCount-start
	}
	for g := range v.groups {
		runs = append(runs, v.baseMeta(g)...)
		gd, err := v.groupDesc(g)
		if err != nil {
			if !errors.Is(err, fsdrivers.ErrCorrupt) {
				return nil, fmt.Errorf("ext4: used ranges: %w", err)
			}
			wholeGroup(g, err)
			continue
		}
		meta := []blockRun{{gd.blockBitmap, 1}, {gd.inodeBitmap, 1}, {gd.inodeTable, uint64(v.itbPerGroup)}}
		bad := false
		for _, m := range meta {
			if m.start == 0 || !inFS(m.start, m.count) {
				bad = true
				continue
			}
			runs = append(runs, m)
		}
		if bad {
			wholeGroup(g, corruptf("group %d: bitmap or inode table location out of range", g))
			continue
		}
		if gd.flags&bgBlockUninit != 0 {
			continue // only metadata, added above (including other groups' via flex_bg)
		}
		jobs = append(jobs, bitmapJob{g, gd.blockBitmap, gd.blockBitmapCsum, gd.csumHi})
	}

	bmBytes := int64(v.sb.clustersPerGroup / 8)
	for i := 0; i < len(jobs); {
		// Batch bitmaps that sit in consecutive blocks.
		j := i + 1
		for j < len(jobs) && jobs[j].blk == jobs[j-1].blk+1 && int64(j-i+1)<<v.blockBits <= maxBitmapRead {
			j++
		}
		buf := make([]byte, int64(j-i)<<v.blockBits)
		if err := v.readFull(buf, int64(jobs[i].blk)<<v.blockBits); err != nil {
			return nil, fmt.Errorf("ext4: read block bitmaps of groups %d-%d: %w", jobs[i].g, jobs[j-1].g, err)
		}
		for k := i; k < j; k++ {
			job := jobs[k]
			bm := buf[int64(k-i)<<v.blockBits:][:bmBytes]
			if v.metaCsum {
				got := crc32c(v.csumSeed, bm)
				if !job.hi {
					got &= 0xFFFF
				}
				if got != job.csum {
					wholeGroup(job.g, corruptf("block bitmap checksum %#x, computed %#x", job.csum, got))
					continue
				}
			}
			runs = v.bitmapRuns(runs, job.g, bm)
		}
		i = j
	}

	v.mu.Lock()
	v.warnings = warn
	v.mu.Unlock()
	return v.mergeRuns(runs), nil
}

// Warnings returns the problems the last UsedRanges worked around (a group
// counted as fully used because its descriptor or bitmap was damaged).
func (v *Volume) Warnings() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.warnings)
}

// bitmapRuns appends the runs of set bits of group g's block bitmap, one
// bit per cluster, ignoring the padding bits past the group's end.
func (v *Volume) bitmapRuns(runs []blockRun, g uint32, bm []byte) []blockRun {
	first := v.groupFirstBlock(g)
	nblocks := v.groupBlocks(g)
	ratio := uint64(1) << v.clusterBits
	n := int((nblocks + ratio - 1) >> v.clusterBits)
	n = min(n, len(bm)*8)
	for i := 0; i < n; {
		s := nextBit(bm, i, n, true)
		if s >= n {
			break
		}
		e := nextBit(bm, s, n, false)
		start := first + uint64(s)<<v.clusterBits
		end := min(first+uint64(e)<<v.clusterBits, first+nblocks)
		runs = append(runs, blockRun{start, end - start})
		i = e
	}
	return runs
}

// nextBit returns the index of the first bit at or after i that equals set,
// or n. Whole 64-bit words are skipped at once: bitmaps are mostly runs.
func nextBit(bm []byte, i, n int, set bool) int {
	for i < n {
		if i%64 == 0 && i+64 <= n {
			w := binary.LittleEndian.Uint64(bm[i/8:])
			if !set {
				w = ^w
			}
			if w == 0 {
				i += 64
				continue
			}
			return i + bits.TrailingZeros64(w)
		}
		if (bm[i/8]>>(i%8)&1 == 1) == set {
			return i
		}
		i++
	}
	return n
}

// mergeRuns turns block runs into sorted, merged byte ranges clipped to the
// filesystem, always including the boot sector and primary superblock.
func (v *Volume) mergeRuns(runs []blockRun) []fsdrivers.Range {
	end := int64(v.sb.blocksCount) << v.blockBits
	rs := make([]fsdrivers.Range, 0, len(runs)+1)
	rs = append(rs, fsdrivers.Range{Off: 0, Len: min(superOffset+superSize, end)})
	for _, r := range runs {
		if r.count == 0 || r.start >= v.sb.blocksCount {
			continue
		}
		off := int64(r.start) << v.blockBits
		n := int64(min(r.count, v.sb.blocksCount-r.start)) << v.blockBits
		rs = append(rs, fsdrivers.Range{Off: off, Len: n})
	}
	slices.SortFunc(rs, func(a, b fsdrivers.Range) int {
		switch {
		case a.Off < b.Off:
			return -1
		case a.Off > b.Off:
			return 1
		}
		return 0
	})
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if r.Off <= last.Off+last.Len {
			last.Len = max(last.Len, r.Off+r.Len-last.Off)
			continue
		}
		out = append(out, r)
	}
	return slices.Clip(out)
}
