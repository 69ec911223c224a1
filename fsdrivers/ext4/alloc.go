package ext4

import (
	"encoding/binary"
	"fmt"
	"syscall"
)

// Group descriptor byte offsets (lo halves; the hi halves of 64-byte
// descriptors follow at 0x20+).
const (
	gdFreeBlocks  = 0xC
	gdFreeInodes  = 0xE
	gdUsedDirs    = 0x10
	gdFlags       = 0x12
	gdBBitmapCsum = 0x18
	gdIBitmapCsum = 0x1A
	gdItableUnuse = 0x1C
	gdChecksum    = 0x1E
)

// desc returns group g's descriptor bytes for changing; call descDone after.
func (w *wfs) desc(g uint32) ([]byte, error) {
	blk, off := w.v.descLocation(g)
	b, err := w.mut(blk)
	if err != nil {
		return nil, err
	}
	return b[off : off+w.v.descSize], nil
}

// descRead returns group g's descriptor bytes for reading.
func (w *wfs) descRead(g uint32) ([]byte, error) {
	blk, off := w.v.descLocation(g)
	b, err := w.block(blk)
	if err != nil {
		return nil, err
	}
	return b[off : off+w.v.descSize], nil
}

// descField reads a split counter: 16 bits at lo, 16 more at lo+0x20 in
// 64-byte descriptors.
func (w *wfs) descField(d []byte, lo int) uint32 {
	n := uint32(binary.LittleEndian.Uint16(d[lo:]))
	if w.v.descSize >= 64 {
		n |= uint32(binary.LittleEndian.Uint16(d[lo+0x20:])) << 16
	}
	return n
}

func (w *wfs) setDescField(d []byte, lo int, n uint32) {
	binary.LittleEndian.PutUint16(d[lo:], uint16(n))
	if w.v.descSize >= 64 {
		binary.LittleEndian.PutUint16(d[lo+0x20:], uint16(n>>16))
	}
}

// descCsum recomputes group g's descriptor checksum (crc32c low 16 bits
// with metadata_csum, crc16 with gdt_csum; see verifyDesc).
func (w *wfs) descCsum(g uint32, d []byte) {
	if !w.v.groupCsum {
		return
	}
	binary.LittleEndian.PutUint16(d[gdChecksum:], 0)
	var le32 [4]byte
	binary.LittleEndian.PutUint32(le32[:], g)
	var c uint16
	if w.v.metaCsum {
		x := crc32c(w.v.csumSeed, le32[:])
		x = crc32c(x, d[:gdChecksum])
		x = crc32c(x, []byte{0, 0})
		x = crc32c(x, d[0x20:])
		c = uint16(x)
	} else {
		x := crc16(0xFFFF, w.v.sb.uuid[:])
		x = crc16(x, le32[:])
		x = crc16(x, d[:gdChecksum])
		x = crc16(x, d[0x20:])
		c = x
	}
	binary.LittleEndian.PutUint16(d[gdChecksum:], c)
}

func (w *wfs) groupOf(blk uint64) uint32 {
	return uint32((blk - uint64(w.v.sb.firstDataBlock)) / uint64(w.v.sb.blocksPerGroup))
}

// blockBitmap returns group g's block bitmap for changing, building it
// first when the group is BLOCK_UNINIT (the group's base metadata and any
// bitmaps or inode tables placed there, plus the padding past a short last
// group, as the kernel's ext4_init_block_bitmap does).
func (w *wfs) blockBitmap(g uint32) ([]byte, error) {
	gd, err := w.v.groupDesc(g)
	if err != nil {
		return nil, err
	}
	if gd.flags&bgBlockUninit == 0 {
		return w.mut(gd.blockBitmap)
	}
	bm := w.fresh(gd.blockBitmap)
	first := w.v.groupFirstBlock(g)
	mark := func(r blockRun) {
		for b := r.start; b < r.start+r.count; b++ {
			if b >= first && b-first < uint64(w.v.sb.blocksPerGroup) {
				setBit(bm, int(b-first))
			}
		}
	}
	for _, r := range w.v.baseMeta(g) {
		mark(r)
	}
	for _, r := range w.metaOf[g] {
		mark(r)
	}
	for i := int(w.v.groupBlocks(g)); i < len(bm)*8; i++ {
		setBit(bm, i)
	}
	d, err := w.desc(g)
	if err != nil {
		return nil, err
	}
	binary.LittleEndian.PutUint16(d[gdFlags:], binary.LittleEndian.Uint16(d[gdFlags:])&^bgBlockUninit)
	w.descCsum(g, d)
	w.dirtyGroups[g] = true
	return bm, nil
}

// inodeBitmap returns group g's inode bitmap for changing, zeroing it
// first when the group is INODE_UNINIT (padding bits past the group's
// inodes set, as e2fsck expects).
func (w *wfs) inodeBitmap(g uint32) ([]byte, error) {
	gd, err := w.v.groupDesc(g)
	if err != nil {
		return nil, err
	}
	if gd.flags&bgInodeUninit == 0 {
		return w.mut(gd.inodeBitmap)
	}
	bm := w.fresh(gd.inodeBitmap)
	for i := int(w.v.sb.inodesPerGroup); i < len(bm)*8; i++ {
		setBit(bm, i)
	}
	d, err := w.desc(g)
	if err != nil {
		return nil, err
	}
	binary.LittleEndian.PutUint16(d[gdFlags:], binary.LittleEndian.Uint16(d[gdFlags:])&^bgInodeUninit)
	w.descCsum(g, d)
	w.dirtyGroups[g] = true
	return bm, nil
}

func setBit(bm []byte, i int)       { bm[i/8] |= 1 << (i % 8) }
func clearBit(bm []byte, i int)     { bm[i/8] &^= 1 << (i % 8) }
func testBit(bm []byte, i int) bool { return bm[i/8]>>(i%8)&1 != 0 }

// groupChecksums redoes the bitmap checksums of group g (metadata_csum)
// and its descriptor checksum.
func (w *wfs) groupChecksums(g uint32) error {
	d, err := w.desc(g)
	if err != nil {
		return err
	}
	if w.v.metaCsum {
		gd, err := w.v.groupDesc(g)
		if err != nil {
			return err
		}
		le := binary.LittleEndian
		if gd.flags&bgBlockUninit == 0 {
			bm, err := w.block(gd.blockBitmap)
			if err != nil {
				return err
			}
			c := crc32c(w.v.csumSeed, bm[:w.v.sb.clustersPerGroup/8])
			le.PutUint16(d[gdBBitmapCsum:], uint16(c))
			if w.v.descSize >= 64 {
				le.PutUint16(d[gdBBitmapCsum+0x20:], uint16(c>>16))
			}
		}
		if gd.flags&bgInodeUninit == 0 {
			bm, err := w.block(gd.inodeBitmap)
			if err != nil {
				return err
			}
			c := crc32c(w.v.csumSeed, bm[:w.v.sb.inodesPerGroup/8])
			le.PutUint16(d[gdIBitmapCsum:], uint16(c))
			if w.v.descSize >= 64 {
				le.PutUint16(d[gdIBitmapCsum+0x20:], uint16(c>>16))
			}
		}
	}
	w.descCsum(g, d)
	return nil
}

// allocBlocks allocates up to want blocks as one contiguous run, at goal
// or as soon after it as possible (wrapping around the filesystem). It
// returns ENOSPC when no block is free.
func (w *wfs) allocBlocks(goal, want uint64) (uint64, uint64, error) {
	v := w.v
	if want == 0 {
		want = 1
	}
	if w.freeBlocks() == 0 {
		return 0, 0, fmt.Errorf("ext4: no free blocks: %w", syscall.ENOSPC)
	}
	if goal < uint64(v.sb.firstDataBlock) || goal >= v.sb.blocksCount {
		goal = uint64(v.sb.firstDataBlock)
	}
	g0 := w.groupOf(goal)
	for i := uint32(0); i <= v.groups; i++ {
		g := (g0 + i) % v.groups
		d, err := w.descRead(g)
		if err != nil {
			return 0, 0, err
		}
		if w.descField(d, gdFreeBlocks) == 0 {
			continue
		}
		bm, err := w.blockBitmap(g)
		if err != nil {
			return 0, 0, err
		}
		n := int(v.groupBlocks(g))
		start := 0
		if i == 0 {
			start = int(goal - v.groupFirstBlock(g))
		}
		s := nextBit(bm, start, n, false)
		if s >= n && start > 0 {
			s = nextBit(bm, 0, n, false)
		}
		if s >= n {
			continue
		}
		e := nextBit(bm, s, min(n, s+int(min(want, uint64(n)))), true)
		for b := s; b < e; b++ {
			setBit(bm, b)
		}
		cnt := uint64(e - s)
		if err := w.groupCount(g, gdFreeBlocks, -int(cnt)); err != nil {
			return 0, 0, err
		}
		w.setFreeBlocks(w.freeBlocks() - cnt)
		return v.groupFirstBlock(g) + uint64(s), cnt, nil
	}
	return 0, 0, fmt.Errorf("ext4: no free blocks found in the bitmaps: %w", syscall.ENOSPC)
}

// groupCount adds delta to one of group g's descriptor counters.
func (w *wfs) groupCount(g uint32, field int, delta int) error {
	d, err := w.desc(g)
	if err != nil {
		return err
	}
	w.setDescField(d, field, uint32(int(w.descField(d, field))+delta))
	w.descCsum(g, d)
	w.dirtyGroups[g] = true
	return nil
}

// freeBlocks releases [start, start+n).
func (w *wfs) freeRun(start, n uint64) error {
	v := w.v
	if start < uint64(v.sb.firstDataBlock) || start+n > v.sb.blocksCount || start+n < start {
		return corruptf("freeing blocks %d+%d beyond the filesystem", start, n)
	}
	for n > 0 {
		g := w.groupOf(start)
		first := v.groupFirstBlock(g)
		cnt := min(n, first+v.groupBlocks(g)-start)
		bm, err := w.blockBitmap(g)
		if err != nil {
			return err
		}
		freed := 0
		for b := start; b < start+cnt; b++ {
			if testBit(bm, int(b-first)) {
				clearBit(bm, int(b-first))
				freed++
			}
			w.forget(b)
		}
		if err := w.groupCount(g, gdFreeBlocks, freed); err != nil {
			return err
		}
		w.setFreeBlocks(w.freeBlocks() + uint64(freed))
		start += cnt
		n -= cnt
	}
	return nil
}

// allocInode allocates an inode, preferring group pref, and returns its
// number. The inode's slot is zeroed when the inode table there was never
// initialised.
func (w *wfs) allocInode(pref uint32, dir bool) (uint32, error) {
	v := w.v
	le := binary.LittleEndian
	if le.Uint32(w.sbRaw[sbFreeInodes:]) == 0 {
		return 0, fmt.Errorf("ext4: no free inodes: %w", syscall.ENOSPC)
	}
	ipg := int(v.sb.inodesPerGroup)
	firstIno := int(le.Uint32(w.sbRaw[sbFirstIno:]))
	for i := uint32(0); i < v.groups; i++ {
		g := (pref + i) % v.groups
		d, err := w.descRead(g)
		if err != nil {
			return 0, err
		}
		if w.descField(d, gdFreeInodes) == 0 {
			continue
		}
		bm, err := w.inodeBitmap(g)
		if err != nil {
			return 0, err
		}
		start := 0
		if g == 0 {
			start = firstIno - 1
		}
		idx := nextBit(bm, start, ipg, false)
		for idx < ipg && uint64(g)*uint64(ipg)+uint64(idx)+1 > uint64(v.sb.inodesCount) {
			idx = ipg
		}
		if idx >= ipg {
			continue
		}
		setBit(bm, idx)
		d, err = w.desc(g)
		if err != nil {
			return 0, err
		}
		w.setDescField(d, gdFreeInodes, w.descField(d, gdFreeInodes)-1)
		if dir {
			w.setDescField(d, gdUsedDirs, w.descField(d, gdUsedDirs)+1)
		}
		if v.groupCsum {
			unused := int(w.descField(d, gdItableUnuse))
			if firstUnused := ipg - unused; idx >= firstUnused {
				zeroed := le.Uint16(d[gdFlags:])&uninitItableFlg != 0
				w.setDescField(d, gdItableUnuse, uint32(ipg-idx-1))
				if !zeroed {
					// The slots now inside the used part were never
					// written: give e2fsck zeros to read there.
					for j := firstUnused; j < idx; j++ {
						if err := w.zeroInodeSlot(uint32(g)*uint32(ipg) + uint32(j) + 1); err != nil {
							return 0, err
						}
					}
				}
			}
		}
		w.descCsum(g, d)
		w.dirtyGroups[g] = true
		w.addFreeInodes(-1)
		n := g*uint32(ipg) + uint32(idx) + 1
		return n, nil
	}
	return 0, fmt.Errorf("ext4: no free inodes found in the bitmaps: %w", syscall.ENOSPC)
}

// freeInodeNr releases inode n in the bitmap and counters.
func (w *wfs) freeInodeNr(n uint32, dir bool) error {
	g := (n - 1) / w.v.sb.inodesPerGroup
	idx := int((n - 1) % w.v.sb.inodesPerGroup)
	bm, err := w.inodeBitmap(g)
	if err != nil {
		return err
	}
	if !testBit(bm, idx) {
		return corruptf("freeing inode %d which is not in use", n)
	}
	clearBit(bm, idx)
	d, err := w.desc(g)
	if err != nil {
		return err
	}
	w.setDescField(d, gdFreeInodes, w.descField(d, gdFreeInodes)+1)
	if dir {
		w.setDescField(d, gdUsedDirs, w.descField(d, gdUsedDirs)-1)
	}
	w.descCsum(g, d)
	w.dirtyGroups[g] = true
	w.addFreeInodes(1)
	return nil
}
