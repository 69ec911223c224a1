package ext4

import (
	"fmt"
	"slices"
	"syscall"
)

// Extent tree writing. A file's leaf extents are loaded as one sorted list,
// edited in memory and written back as a freshly laid out tree: the root's
// four slots, and when they do not suffice full leaf blocks under as few
// index levels as needed (the shortest tree, which is what e2fsck's tree
// optimiser would build). The tree's old blocks are reused, so a tree that
// keeps its shape writes in place.

const (
	maxInitLen     = extInitMax     // longest initialised extent
	maxUnwrittenLn = extInitMax - 1 // longest unwritten extent
)

type extTree struct {
	list []extEntry
	tree []uint64 // blocks of the current index and leaf nodes
}

// loadExtents reads every leaf extent of i and the blocks of its tree.
func (w *wfs) loadExtents(i *winode) (*extTree, error) {
	root, err := w.v.parseExtNode(i.iblock(), extLoc{ino: i.num})
	if err != nil {
		return nil, err
	}
	t := &extTree{}
	var walk func(n *extNode) error
	walk = func(n *extNode) error {
		if n.depth == 0 {
			t.list = append(t.list, n.entries...)
			return nil
		}
		for _, e := range n.entries {
			t.tree = append(t.tree, e.phys)
			b, err := w.block(e.phys)
			if err != nil {
				return err
			}
			c, err := w.v.parseExtNode(b, extLoc{i.num, e.phys})
			if err != nil {
				return err
			}
			if c.depth != n.depth-1 {
				return corruptf("inode %d extent block %d: depth %d under depth %d", i.num, e.phys, c.depth, n.depth)
			}
			if err := walk(c); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(root); err != nil {
		return nil, err
	}
	for k := 1; k < len(t.list); k++ {
		p := t.list[k-1]
		if uint64(p.lblk)+uint64(p.len) > uint64(t.list[k].lblk) {
			return nil, corruptf("inode %d: extents overlap at logical block %d", i.num, t.list[k].lblk)
		}
	}
	return t, nil
}

func (w *wfs) extPerBlock() int { return int((w.v.blockSize - extHdrSize) / extEntSize) }

// treeShape returns the node counts per level (leaves first) needed for n
// extents; empty when they fit in the root.
func (w *wfs) treeShape(n int) []int {
	per := w.extPerBlock()
	var counts []int
	for n > 4 {
		n = (n + per - 1) / per
		counts = append(counts, n)
	}
	return counts
}

func sum(xs []int) int {
	s := 0
	for _, x := range xs {
		s += x
	}
	return s
}

// normalize merges extents that continue each other.
func normalize(list []extEntry) []extEntry {
	out := list[:0]
	for _, e := range list {
		if e.len == 0 {
			continue
		}
		if k := len(out) - 1; k >= 0 {
			p := &out[k]
			limit := uint32(maxInitLen)
			if e.unwritten {
				limit = maxUnwrittenLn
			}
			if p.unwritten == e.unwritten && p.lblk+p.len == e.lblk && p.phys+uint64(p.len) == e.phys && p.len+e.len <= limit {
				p.len += e.len
				continue
			}
		}
		out = append(out, e)
	}
	return out
}

// splitAt makes an extent boundary at logical block l.
func splitAt(list []extEntry, l uint64) []extEntry {
	k := lastAtOrBefore(list, l)
	if k < 0 {
		return list
	}
	e := list[k]
	if uint64(e.lblk) == l || uint64(e.lblk)+uint64(e.len) <= l {
		return list
	}
	head := uint32(l - uint64(e.lblk))
	a := e
	a.len = head
	b := e
	b.lblk = uint32(l)
	b.len = e.len - head
	b.phys = e.phys + uint64(head)
	list[k] = a
	return slices.Insert(list, k+1, b)
}

// cutRange removes logical blocks [a, b) from the list and returns the
// physical runs they used.
func cutRange(list []extEntry, a, b uint64) ([]extEntry, []blockRun) {
	list = splitAt(splitAt(list, a), b)
	var freed []blockRun
	out := list[:0]
	for _, e := range list {
		if uint64(e.lblk) >= a && uint64(e.lblk) < b {
			freed = append(freed, blockRun{e.phys, uint64(e.len)})
			continue
		}
		out = append(out, e)
	}
	return out, freed
}

// insertExtent adds e (whose range is a hole in the list), splitting it
// into pieces no longer than an extent can be.
func insertExtent(list []extEntry, e extEntry) []extEntry {
	limit := uint32(maxInitLen)
	if e.unwritten {
		limit = maxUnwrittenLn
	}
	k := lastAtOrBefore(list, uint64(e.lblk)) + 1
	var pieces []extEntry
	for e.len > 0 {
		p := e
		p.len = min(e.len, limit)
		pieces = append(pieces, p)
		e.lblk += p.len
		e.phys += uint64(p.len)
		e.len -= p.len
	}
	return slices.Insert(list, k, pieces...)
}

// writeExtents lays out t.list as i's extent tree, reusing t.tree's blocks,
// allocating or freeing the difference, and adjusts i_blocks. On ENOSPC
// nothing has changed.
func (w *wfs) writeExtents(i *winode, t *extTree) error {
	t.list = normalize(t.list)
	shape := w.treeShape(len(t.list))
	need := sum(shape)
	if len(shape) > extMaxDepth {
		return fmt.Errorf("ext4: inode %d: %d extents need an extent tree deeper than %d: %w", i.num, len(t.list), extMaxDepth, syscall.EFBIG)
	}
	blocks := slices.Clone(t.tree[:min(need, len(t.tree))])
	var got []blockRun
	for len(blocks) < need {
		goal := uint64(0)
		if len(blocks) > 0 {
			goal = blocks[len(blocks)-1] + 1
		} else if len(t.list) > 0 {
			goal = t.list[0].phys
		}
		s, n, err := w.allocBlocks(goal, uint64(need-len(blocks)))
		if err != nil {
			for _, r := range got {
				w.freeRun(r.start, r.count)
			}
			return err
		}
		got = append(got, blockRun{s, n})
		for b := s; b < s+n; b++ {
			blocks = append(blocks, b)
		}
	}
	for _, b := range t.tree[min(need, len(t.tree)):] {
		if err := w.freeRun(b, 1); err != nil {
			return err
		}
	}
	w.addBlocks(i, int64(need)-int64(len(t.tree)))
	t.tree = blocks

	// Level 0: the extents themselves; each level up indexes the nodes
	// written below it.
	entries := t.list
	seed := w.inodeSeed(i)
	per := w.extPerBlock()
	next := 0
	for depth, count := range shape {
		var up []extEntry
		for n := range count {
			lo, hi := n*len(entries)/count, (n+1)*len(entries)/count
			blk := blocks[next]
			next++
			b := w.fresh(blk)
			putExtNode(b, entries[lo:hi], per, depth)
			if w.v.metaCsum {
				tail := extHdrSize + per*extEntSize
				le.PutUint32(b[tail:], crc32c(seed, b[:tail]))
			}
			up = append(up, extEntry{lblk: entries[lo].lblk, phys: blk})
		}
		entries = up
	}
	root := i.iblock()
	clear(root)
	putExtNode(root, entries, 4, len(shape))
	return nil
}

// putExtNode encodes a node header and its entries (leaf extents at depth
// 0, index entries above).
func putExtNode(b []byte, es []extEntry, maxEnt, depth int) {
	le.PutUint16(b[0:], extMagic)
	le.PutUint16(b[2:], uint16(len(es)))
	le.PutUint16(b[4:], uint16(maxEnt))
	le.PutUint16(b[6:], uint16(depth))
	le.PutUint32(b[8:], 0)
	for k, e := range es {
		p := b[extHdrSize+k*extEntSize:]
		le.PutUint32(p[0:], e.lblk)
		if depth > 0 {
			le.PutUint32(p[4:], uint32(e.phys))
			le.PutUint16(p[8:], uint16(e.phys>>32))
			le.PutUint16(p[10:], 0)
			continue
		}
		l := e.len
		if e.unwritten {
			l += extInitMax
		}
		le.PutUint16(p[4:], uint16(l))
		le.PutUint16(p[6:], uint16(e.phys>>32))
		le.PutUint32(p[8:], uint32(e.phys))
	}
}

// addBlocks adjusts i_blocks by delta filesystem blocks.
func (w *wfs) addBlocks(i *winode, delta int64) {
	w.setBlocks(i, uint64(int64(w.blocks(i))+delta))
}

// Block maps (ext2/ext3 files): pointers are set and cleared in place.

func (w *wfs) ptrsPerBlock() uint64 { return uint64(w.v.blockSize / 4) }

// bmSlot returns the pointer slot for logical block lblk of a block map
// (in i_block or a level-1 indirect block) and how many consecutive
// logical blocks from lblk have their slot in the same place. With alloc,
// missing indirect blocks on the way are allocated near goal (counted in
// i_blocks); without, a missing one gives a nil slot.
func (w *wfs) bmSlot(i *winode, lblk uint64, alloc bool, goal uint64) ([]byte, uint64, error) {
	if lblk < nDirect {
		return i.iblock()[lblk*4:], nDirect - lblk, nil
	}
	apb := w.ptrsPerBlock()
	l := lblk - nDirect
	span := apb
	level := 0
	for ; level < 3 && l >= span; level++ {
		l -= span
		span *= apb
	}
	if level == 3 {
		return nil, 0, fmt.Errorf("ext4: inode %d: logical block %d beyond a block map: %w", i.num, lblk, syscall.EFBIG)
	}
	slot := i.iblock()[(nDirect+level)*4:]
	for {
		blk := uint64(le.Uint32(slot))
		var b []byte
		if blk == 0 {
			if !alloc {
				return nil, 0, nil
			}
			s, _, err := w.allocBlocks(goal, 1)
			if err != nil {
				return nil, 0, err
			}
			blk = s
			b = w.fresh(blk)
			le.PutUint32(slot, uint32(blk))
			w.addBlocks(i, 1)
		} else {
			if blk >= w.v.sb.blocksCount {
				return nil, 0, corruptf("inode %d: indirect block %d beyond the filesystem", i.num, blk)
			}
			var err error
			if b, err = w.mut(blk); err != nil {
				return nil, 0, err
			}
		}
		span /= apb
		idx := l / span
		l %= span
		if span == 1 {
			return b[idx*4:], apb - idx, nil
		}
		slot = b[idx*4:]
	}
}

// runList collects freed block runs, merging neighbours.
type runList []blockRun

func (rl *runList) add(s, n uint64) {
	if k := len(*rl) - 1; k >= 0 && (*rl)[k].start+(*rl)[k].count == s {
		(*rl)[k].count += n
		return
	}
	*rl = append(*rl, blockRun{s, n})
}

// bmPunch unmaps logical blocks [from, to) of a block-mapped file, freeing
// their data blocks and the indirect blocks left empty. It returns the
// data blocks freed and the runs to free (done by the caller).
func (w *wfs) bmPunch(i *winode, from, to uint64, rl *runList) (uint64, error) {
	var freed uint64
	ib := i.iblock()
	for l := from; l < min(to, nDirect); l++ {
		if p := uint64(le.Uint32(ib[l*4:])); p != 0 {
			rl.add(p, 1)
			le.PutUint32(ib[l*4:], 0)
			freed++
		}
	}
	apb := w.ptrsPerBlock()
	base, span := uint64(nDirect), apb
	for level := 1; level <= 3; level++ {
		if from < base+span && to > base {
			slot := ib[(nDirect+level-1)*4:]
			if p := uint64(le.Uint32(slot)); p != 0 {
				empty, n, err := w.punchInd(i, p, level, base, span, from, to, rl)
				if err != nil {
					return freed, err
				}
				freed += n
				if empty {
					rl.add(p, 1)
					le.PutUint32(slot, 0)
					w.addBlocks(i, -1)
				}
			}
		}
		base += span
		span *= apb
	}
	return freed, nil
}

// punchInd clears [from, to) under indirect block blk (level 1: pointers
// to data) covering logical blocks [base, base+span); empty reports that
// the block now holds no pointer.
func (w *wfs) punchInd(i *winode, blk uint64, level int, base, span, from, to uint64, rl *runList) (bool, uint64, error) {
	if blk >= w.v.sb.blocksCount {
		return false, 0, corruptf("inode %d: indirect block %d beyond the filesystem", i.num, blk)
	}
	b, err := w.mut(blk)
	if err != nil {
		return false, 0, err
	}
	apb := w.ptrsPerBlock()
	child := span / apb
	var freed uint64
	lo := uint64(0)
	if from > base {
		lo = (from - base) / child
	}
	hi := apb
	if to < base+span {
		hi = (to - base + child - 1) / child
	}
	for idx := lo; idx < hi; idx++ {
		p := uint64(le.Uint32(b[idx*4:]))
		if p == 0 {
			continue
		}
		if level == 1 {
			rl.add(p, 1)
			le.PutUint32(b[idx*4:], 0)
			freed++
			continue
		}
		cb := base + idx*child
		empty, n, err := w.punchInd(i, p, level-1, cb, child, from, to, rl)
		if err != nil {
			return false, freed, err
		}
		freed += n
		if empty {
			rl.add(p, 1)
			le.PutUint32(b[idx*4:], 0)
			w.addBlocks(i, -1)
		}
	}
	for idx := uint64(0); idx < apb; idx++ {
		if le.Uint32(b[idx*4:]) != 0 {
			return false, freed, nil
		}
	}
	return true, freed, nil
}
