package ext4

import (
	"fmt"
	"syscall"

	"github.com/dimg-project/dimg/fsdrivers"
)

// File data: writes, truncation, preallocation. Data goes straight to the
// device; mapping changes go through the extent tree or block map code.

// quick builds the reader's view of i for block mapping only (no checksum
// verification: i is ours and current).
func (w *wfs) quick(i *winode) *inode {
	ri := &inode{num: i.num, flags: i.flags(), size: i.size(), mode: i.mode()}
	copy(ri.block[:], i.iblock())
	ri.seed = w.inodeSeed(i)
	return ri
}

// extLookup is mapBlock over an in-memory extent list.
func extLookup(list []extEntry, l uint64) run {
	k := lastAtOrBefore(list, l)
	if k >= 0 {
		e := list[k]
		if end := uint64(e.lblk) + uint64(e.len); l < end {
			r := run{lblk: l, n: end - l, phys: e.phys + (l - uint64(e.lblk)), kind: runData}
			if e.unwritten {
				r.kind = runUnwritten
			}
			return r
		}
	}
	next := uint64(maxExtentBlocks)
	if k+1 < len(list) {
		next = uint64(list[k+1].lblk)
	}
	return run{lblk: l, n: next - l, kind: runHole}
}

func (w *wfs) isExt(i *winode) bool { return i.flags()&flagExtents != 0 }

// maxBlocks is the logical block limit of i's mapping.
func (w *wfs) maxBlocks(i *winode) uint64 {
	if w.isExt(i) {
		return maxExtentBlocks
	}
	apb := w.ptrsPerBlock()
	return nDirect + apb + apb*apb + apb*apb*apb
}

// lookupBlock maps logical block l of i (t is i's loaded extent list, or
// nil for a block map).
func (w *wfs) lookupBlock(i *winode, t *extTree, l uint64) (run, error) {
	if t != nil {
		return extLookup(t.list, l), nil
	}
	return w.v.indirectRun(w.quick(i), l)
}

// goalFor is where a new block for logical block l of i should go: right
// after the block before it, else at the start of i's group.
func (w *wfs) goalFor(i *winode, t *extTree, l uint64) uint64 {
	if l > 0 {
		if r, err := w.lookupBlock(i, t, l-1); err == nil && r.kind != runHole {
			return r.phys + (l - 1 - r.lblk) + 1
		}
	}
	return w.v.groupFirstBlock((i.num - 1) / w.v.sb.inodesPerGroup)
}

// putData writes the part of p (file bytes [off, off+len(p))) that falls in
// logical blocks [l, l+n), stored at phys. With zero, the rest of those
// blocks is written as zeros (new or unwritten blocks).
func (w *wfs) putData(phys, l, n uint64, p []byte, off int64, zero bool) error {
	bs := w.v.blockSize
	start, end := int64(l)*bs, int64(l+n)*bs
	ws, we := max(start, off), min(end, off+int64(len(p)))
	if zero {
		// Only the first and last block can be partly covered by p:
		// complete them with zeros.
		if hb := ws &^ (bs - 1); ws != hb || we < hb+bs {
			buf := make([]byte, bs)
			copy(buf[ws-hb:], p[ws-off:min(we, hb+bs)-off])
			if err := w.devWrite(buf, int64(phys)*bs+(hb-start)); err != nil {
				return err
			}
			if we <= hb+bs {
				return nil
			}
			ws = hb + bs
		}
		if tb := (we - 1) &^ (bs - 1); we != tb+bs {
			buf := make([]byte, bs)
			copy(buf, p[tb-off:we-off])
			if err := w.devWrite(buf, int64(phys)*bs+(tb-start)); err != nil {
				return err
			}
			we = tb
		}
	}
	if we > ws {
		return w.devWrite(p[ws-off:we-off], int64(phys)*bs+(ws-start))
	}
	return nil
}

func (w *wfs) devWrite(p []byte, pos int64) error {
	if _, err := w.dev.WriteAt(p, pos); err != nil {
		return fmt.Errorf("ext4: write %d bytes at byte %d: %w", len(p), pos, errIO(err))
	}
	return nil
}

// writeData writes p at off into regular file i (the caller stores i).
func (w *wfs) writeData(i *winode, p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	bits := w.v.blockBits
	end := off + int64(len(p))
	if off < 0 || uint64(end-1)>>bits >= w.maxBlocks(i) {
		return 0, fmt.Errorf("ext4: inode %d: write at byte %d+%d beyond the largest file: %w", i.num, off, len(p), syscall.EFBIG)
	}
	var t *extTree
	if w.isExt(i) {
		var err error
		if t, err = w.loadExtents(i); err != nil {
			return 0, err
		}
	}
	var fresh runList
	var newData uint64
	first, last := uint64(off)>>bits, uint64(end-1)>>bits
	l := first
	var werr error
	for l <= last && werr == nil {
		r, err := w.lookupBlock(i, t, l)
		if err != nil {
			werr = err
			break
		}
		cnt := min(r.lblk+r.n, last+1) - l
		switch r.kind {
		case runData:
			werr = w.putData(r.phys+(l-r.lblk), l, cnt, p, off, false)
		case runUnwritten:
			if werr = w.putData(r.phys+(l-r.lblk), l, cnt, p, off, true); werr == nil {
				t.list = splitAt(splitAt(t.list, l), l+cnt)
				for k := range t.list {
					if e := &t.list[k]; uint64(e.lblk) >= l && uint64(e.lblk) < l+cnt {
						e.unwritten = false
					}
				}
			}
		case runHole:
			for cnt > 0 && werr == nil {
				want := cnt
				if t != nil {
					extra := int64(sum(w.treeShape(len(t.list)+2))) - int64(len(t.tree))
					if free := int64(w.freeBlocks()) - max(extra, 0); free < int64(want) {
						if free <= 0 {
							werr = fmt.Errorf("ext4: no free blocks: %w", syscall.ENOSPC)
							break
						}
						want = uint64(free)
					}
				}
				goal := w.goalFor(i, t, l)
				var slots []byte
				if t == nil {
					// Indirect blocks first (as the kernel lays them
					// out), so the data run never lacks one to be
					// mapped through.
					var room uint64
					var err error
					if slots, room, err = w.bmSlot(i, l, true, goal); err != nil {
						werr = err
						break
					}
					want = min(want, room)
				}
				s, n, err := w.allocBlocks(goal, want)
				if err != nil {
					werr = err
					break
				}
				if err := w.putData(s, l, n, p, off, true); err != nil {
					w.freeRun(s, n)
					werr = err
					break
				}
				if t != nil {
					t.list = insertExtent(t.list, extEntry{lblk: uint32(l), len: uint32(n), phys: s})
				} else {
					for k := uint64(0); k < n; k++ {
						le.PutUint32(slots[k*4:], uint32(s+k))
					}
				}
				fresh.add(s, n)
				newData += n
				l += n
				cnt -= n
			}
			continue
		}
		if werr == nil {
			l += cnt
		}
	}
	if t != nil {
		if err := w.writeExtents(i, t); err != nil {
			for _, r := range fresh {
				w.freeRun(r.start, r.count)
			}
			return 0, err
		}
	}
	w.addBlocks(i, int64(newData))
	done := int64(len(p))
	if werr != nil {
		done = max(0, min(int64(l)<<bits-off, int64(len(p))))
	}
	if off+done > int64(i.size()) {
		w.noteSize(uint64(off + done))
		i.setSize(uint64(off + done))
	}
	if done > 0 {
		w.touch(i, true)
	}
	if werr != nil && done == 0 {
		return 0, werr
	}
	return int(done), werr
}

// zeroTail zeroes the bytes of the block holding byte pos from pos to the
// block's end, when it is mapped data (so bytes past EOF read as zeros
// when the file grows again).
func (w *wfs) zeroTail(i *winode, t *extTree, pos uint64) error {
	bs := uint64(w.v.blockSize)
	if pos%bs == 0 {
		return nil
	}
	r, err := w.lookupBlock(i, t, pos/bs)
	if err != nil || r.kind != runData {
		return err
	}
	n := bs - pos%bs
	return w.devWrite(make([]byte, n), int64(r.phys+(pos/bs-r.lblk))*int64(bs)+int64(pos%bs))
}

// punch unmaps logical blocks [a, b) and frees them (t nil: block map).
func (w *wfs) punch(i *winode, t *extTree, a, b uint64) error {
	var rl runList
	var freed uint64
	if t != nil {
		var runs []blockRun
		t.list, runs = cutRange(t.list, a, b)
		for _, r := range runs {
			rl.add(r.start, r.count)
			freed += r.count
		}
		if err := w.writeExtents(i, t); err != nil {
			return err
		}
	} else {
		n, err := w.bmPunch(i, a, b, &rl)
		if err != nil {
			return err
		}
		freed = n
	}
	w.addBlocks(i, -int64(freed))
	for _, r := range rl {
		if err := w.freeRun(r.start, r.count); err != nil {
			return err
		}
	}
	return nil
}

// truncate sets i's size, freeing the blocks past a smaller size.
func (w *wfs) truncate(i *winode, size uint64) error {
	bits := w.v.blockBits
	if size > 0 && (size-1)>>bits >= w.maxBlocks(i) {
		return fmt.Errorf("ext4: inode %d: size %d beyond the largest file: %w", i.num, size, syscall.EFBIG)
	}
	var t *extTree
	if w.isExt(i) {
		var err error
		if t, err = w.loadExtents(i); err != nil {
			return err
		}
	}
	old := i.size()
	if size < old {
		keep := (size + uint64(w.v.blockSize) - 1) >> bits
		if err := w.punch(i, t, keep, w.maxBlocks(i)); err != nil {
			return err
		}
		if err := w.zeroTail(i, t, size); err != nil {
			return err
		}
	} else if err := w.zeroTail(i, t, old); err != nil {
		return err
	}
	w.noteSize(size)
	i.setSize(size)
	return nil
}

// fallocate preallocates (unwritten extents) or punches a hole.
func (w *wfs) fallocate(i *winode, off, length int64, flags fsdrivers.FallocFlags) error {
	if off < 0 || length <= 0 {
		return fmt.Errorf("ext4: fallocate inode %d: offset %d length %d: %w", i.num, off, length, syscall.EINVAL)
	}
	if flags&^(fsdrivers.FallocKeepSize|fsdrivers.FallocPunchHole) != 0 {
		return fmt.Errorf("ext4: fallocate mode %#x: %w", uint32(flags), syscall.EOPNOTSUPP)
	}
	if !w.isExt(i) {
		return fmt.Errorf("ext4: fallocate on block-mapped inode %d: %w", i.num, syscall.EOPNOTSUPP)
	}
	bs := w.v.blockSize
	end := off + length
	if uint64(end-1)/uint64(bs) >= maxExtentBlocks {
		return fmt.Errorf("ext4: fallocate inode %d beyond the largest file: %w", i.num, syscall.EFBIG)
	}
	t, err := w.loadExtents(i)
	if err != nil {
		return err
	}
	if flags&fsdrivers.FallocPunchHole != 0 {
		if flags&fsdrivers.FallocKeepSize == 0 {
			return fmt.Errorf("ext4: punch hole without keep-size: %w", syscall.EOPNOTSUPP)
		}
		end = min(end, int64(i.size()))
		if end <= off {
			return nil
		}
		// Zero the partial blocks at the edges, free the whole ones.
		for _, z := range [][2]int64{{off, min(end, (off+bs-1)&^(bs-1))}, {max(off, end&^(bs-1)), end}} {
			if z[1] <= z[0] {
				continue
			}
			r := extLookup(t.list, uint64(z[0])/uint64(bs))
			if r.kind == runData {
				if err := w.devWrite(make([]byte, z[1]-z[0]), int64(r.phys)*bs+z[0]%bs); err != nil {
					return err
				}
			}
		}
		a, b := uint64(off+bs-1)/uint64(bs), uint64(end)/uint64(bs)
		if b > a {
			if err := w.punch(i, t, a, b); err != nil {
				return err
			}
		}
		w.touch(i, true)
		return nil
	}
	first, last := uint64(off)/uint64(bs), uint64(end-1)/uint64(bs)
	var fresh runList
	var got uint64
	for l := first; l <= last; {
		r := extLookup(t.list, l)
		cnt := min(r.lblk+r.n, last+1) - l
		if r.kind != runHole {
			l += cnt
			continue
		}
		extra := int64(sum(w.treeShape(len(t.list)+2))) - int64(len(t.tree))
		free := int64(w.freeBlocks()) - max(extra, 0)
		if free < int64(cnt) {
			for _, r := range fresh {
				w.freeRun(r.start, r.count)
			}
			return fmt.Errorf("ext4: fallocate inode %d: %d blocks short: %w", i.num, int64(cnt)-free, syscall.ENOSPC)
		}
		s, n, err := w.allocBlocks(w.goalFor(i, t, l), cnt)
		if err != nil {
			for _, r := range fresh {
				w.freeRun(r.start, r.count)
			}
			return err
		}
		fresh.add(s, n)
		got += n
		t.list = insertExtent(t.list, extEntry{lblk: uint32(l), len: uint32(n), phys: s, unwritten: true})
		l += n
	}
	if err := w.writeExtents(i, t); err != nil {
		for _, r := range fresh {
			w.freeRun(r.start, r.count)
		}
		return err
	}
	w.addBlocks(i, int64(got))
	if flags&fsdrivers.FallocKeepSize == 0 && uint64(end) > i.size() {
		if err := w.zeroTail(i, t, i.size()); err != nil {
			return err
		}
		w.noteSize(uint64(end))
		i.setSize(uint64(end))
	}
	w.touch(i, false)
	return nil
}

// appendDirBlock adds a zeroed block at the end of directory d and returns
// its logical number and buffer.
func (w *wfs) appendDirBlock(d *winode) (uint64, []byte, error) {
	bs := uint64(w.v.blockSize)
	l := d.size() / bs
	var t *extTree
	if w.isExt(d) {
		var err error
		if t, err = w.loadExtents(d); err != nil {
			return 0, nil, err
		}
	}
	s, _, err := w.allocBlocks(w.goalFor(d, t, l), 1)
	if err != nil {
		return 0, nil, err
	}
	if t != nil {
		t.list = insertExtent(t.list, extEntry{lblk: uint32(l), len: 1, phys: s})
		err = w.writeExtents(d, t)
	} else {
		var slot []byte
		if slot, _, err = w.bmSlot(d, l, true, s); err == nil {
			le.PutUint32(slot, uint32(s))
		}
	}
	if err != nil {
		w.freeRun(s, 1)
		return 0, nil, err
	}
	w.addBlocks(d, 1)
	d.setSize((l + 1) * bs)
	return l, w.fresh(s), nil
}

// dirBlockMut returns directory d's block l for changing.
func (w *wfs) dirBlockMut(d *winode, l uint64) ([]byte, error) {
	r, err := w.v.mapBlock(w.quick(d), l)
	if err != nil {
		return nil, err
	}
	if r.kind != runData {
		return nil, corruptf("directory inode %d: hole at block %d", d.num, l)
	}
	return w.mut(r.phys + (l - r.lblk))
}

// hasBlocks says whether i's i_block is a mapping (not a fast symlink or
// a device number).
func (w *wfs) hasBlocks(i *winode) bool {
	if isInline(i) {
		return false // the data is in the inode (inlinew.go)
	}
	switch i.mode() & sIFMT {
	case sIFREG, sIFDIR:
		return true
	case sIFLNK:
		acl := uint64(0)
		if i.fileACL() != 0 {
			acl = 1
		}
		return w.blocks(i) > acl || (w.isExt(i) && le.Uint16(i.iblock()) == extMagic && le.Uint16(i.iblock()[2:]) > 0)
	}
	return false
}

// releaseXattrBlock drops i's reference to its external xattr block,
// freeing the block with its last reference.
func (w *wfs) releaseXattrBlock(i *winode) error {
	blk := i.fileACL()
	if blk == 0 {
		return nil
	}
	if blk >= w.v.sb.blocksCount {
		return corruptf("inode %d: xattr block %d beyond the filesystem", i.num, blk)
	}
	b, err := w.mut(blk)
	if err != nil {
		return err
	}
	if ref := le.Uint32(b[4:]); ref <= 1 {
		if err := w.freeRun(blk, 1); err != nil {
			return err
		}
	} else {
		le.PutUint32(b[4:], ref-1)
		w.xattrBlockCsum(blk, b)
	}
	i.setFileACL(0)
	w.addBlocks(i, -1)
	return nil
}

// xattrBlockCsum redoes an external xattr block's checksum (crc32c of the
// block number and the block with the checksum field as zero).
func (w *wfs) xattrBlockCsum(blk uint64, b []byte) {
	if !w.v.metaCsum {
		return
	}
	var nr [8]byte
	le.PutUint64(nr[:], blk)
	le.PutUint32(b[xattrBlockChecksum:], 0)
	c := crc32c(w.v.csumSeed, nr[:])
	c = crc32c(c, b)
	le.PutUint32(b[xattrBlockChecksum:], c)
}

// freeInodeAndData frees everything an unlinked inode owns and the inode.
func (w *wfs) freeInodeAndData(i *winode) error {
	if w.hasBlocks(i) {
		var t *extTree
		if w.isExt(i) {
			var err error
			if t, err = w.loadExtents(i); err != nil {
				return err
			}
		}
		if err := w.punch(i, t, 0, w.maxBlocks(i)); err != nil {
			return err
		}
	}
	if err := w.releaseXattrBlock(i); err != nil {
		return err
	}
	dir := i.isDir()
	gen := le.Uint32(i.raw[inGeneration:])
	extra := i.extra()
	clear(i.raw)
	le.PutUint32(i.raw[inGeneration:], gen)
	if len(i.raw) > goodOldInode {
		le.PutUint16(i.raw[inExtraIsize:], uint16(extra))
	}
	le.PutUint32(i.raw[inDtime:], uint32(w.now().Unix()))
	if err := w.store(i); err != nil {
		return err
	}
	return w.freeInodeNr(i.num, dir)
}
