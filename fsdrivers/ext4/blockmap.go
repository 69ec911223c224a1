package ext4

import (
	"encoding/binary"
	"fmt"
	"sort"
)

// runKind says what a run of logical blocks holds.
type runKind uint8

const (
	runData      runKind = iota
	runHole              // not allocated: reads as zeros
	runUnwritten         // allocated but never written: reads as zeros
)

// run maps logical blocks [lblk, lblk+n) of a file; for data and unwritten
// runs the physical blocks are [phys, phys+n).
type run struct {
	lblk, n uint64
	phys    uint64
	kind    runKind
}

func (r run) contains(l uint64) bool { return l >= r.lblk && l-r.lblk < r.n }

// maxExtentBlocks is the logical block limit of extent-mapped files.
const maxExtentBlocks = 1 << 32

// mapBlock returns the run of same-kind, physically contiguous blocks that
// contains logical block lblk.
func (v *Volume) mapBlock(ino *inode, lblk uint64) (run, error) {
	if ino.flags&flagExtents != 0 {
		return v.extentRun(ino, lblk)
	}
	return v.indirectRun(ino, lblk)
}

// Extent tree.

const (
	extMagic    = 0xF30A
	extHdrSize  = 12
	extEntSize  = 12
	extMaxDepth = 5
	extInitMax  = 32768 // ee_len above this marks an unwritten extent
)

// extEntry is a leaf extent (len > 0, phys = first physical block) or an
// index entry (len = 0, phys = child block); lblk is the first logical
// block it covers.
type extEntry struct {
	lblk      uint32
	len       uint32
	phys      uint64
	unwritten bool
}

type extNode struct {
	depth   uint16
	entries []extEntry
}

// extLoc names an extent node in errors (blk 0: the root in the inode);
// it is formatted only when an error is built.
type extLoc struct {
	ino uint32
	blk uint64
}

func (l extLoc) String() string {
	if l.blk == 0 {
		return fmt.Sprintf("inode %d extent root", l.ino)
	}
	return fmt.Sprintf("inode %d extent block %d", l.ino, l.blk)
}

// parseExtNode decodes and checks an extent tree node: magic, counts that
// fit the space, entries sorted and (in leaves) non-overlapping and inside
// the filesystem. where names the node for errors.
func (v *Volume) parseExtNode(b []byte, where extLoc) (*extNode, error) {
	le := binary.LittleEndian
	if le.Uint16(b[0:]) != extMagic {
		return nil, corruptf("%s: bad extent header magic %#04x", where, le.Uint16(b[0:]))
	}
	count, maxEnt, depth := int(le.Uint16(b[2:])), int(le.Uint16(b[4:])), le.Uint16(b[6:])
	if extHdrSize+maxEnt*extEntSize > len(b) || count > maxEnt {
		return nil, corruptf("%s: extent node with %d of %d entries in %d bytes", where, count, maxEnt, len(b))
	}
	if depth > extMaxDepth {
		return nil, corruptf("%s: extent tree depth %d", where, depth)
	}
	n := &extNode{depth: depth, entries: make([]extEntry, count)}
	for i := range count {
		e := b[extHdrSize+i*extEntSize:]
		ent := extEntry{lblk: le.Uint32(e[0:])}
		if depth > 0 {
			ent.phys = uint64(le.Uint32(e[4:])) | uint64(le.Uint16(e[8:]))<<32
			if ent.phys == 0 || ent.phys >= v.sb.blocksCount {
				return nil, corruptf("%s: extent index points to block %d", where, ent.phys)
			}
		} else {
			l := uint32(le.Uint16(e[4:]))
			if l > extInitMax {
				l -= extInitMax
				ent.unwritten = true
			}
			ent.len = l
			ent.phys = uint64(le.Uint16(e[6:]))<<32 | uint64(le.Uint32(e[8:]))
			if l == 0 || uint64(ent.lblk)+uint64(l) > maxExtentBlocks {
				return nil, corruptf("%s: extent of %d blocks at logical block %d", where, l, ent.lblk)
			}
			if ent.phys == 0 || ent.phys >= v.sb.blocksCount || uint64(l) > v.sb.blocksCount-ent.phys {
				return nil, corruptf("%s: extent at block %d+%d beyond the filesystem", where, ent.phys, l)
			}
		}
		if i > 0 {
			prev := n.entries[i-1]
			if ent.lblk <= prev.lblk || (depth == 0 && uint64(prev.lblk)+uint64(prev.len) > uint64(ent.lblk)) {
				return nil, corruptf("%s: extents out of order or overlapping at logical block %d", where, ent.lblk)
			}
		}
		n.entries[i] = ent
	}
	return n, nil
}

// extentNode returns the verified node in block blk, which must be at
// depth want (so a pointer back up the tree, a loop, is caught).
func (v *Volume) extentNode(ino *inode, blk uint64, want uint16) (*extNode, error) {
	where := extLoc{ino.num, blk}
	var n *extNode
	var err error
	if b := v.overlayBlock(blk); b != nil {
		n, err = v.checkExtNode(ino, where, b) // being changed: not cached
	} else {
		n, err = v.nodes.Get(blk, func() (*extNode, error) { return v.loadExtNode(ino, where) })
	}
	if err != nil {
		return nil, err
	}
	if n.depth != want {
		return nil, corruptf("%s: depth %d where %d was expected (loop in extent tree?)", where, n.depth, want)
	}
	return n, nil
}

// loadExtNode reads, parses and checks the extent block at where.
func (v *Volume) loadExtNode(ino *inode, where extLoc) (*extNode, error) {
	b := make([]byte, v.blockSize)
	if err := v.readFull(b, int64(where.blk)<<v.blockBits); err != nil {
		return nil, fmt.Errorf("ext4: read %s: %w", where, err)
	}
	return v.checkExtNode(ino, where, b)
}

// overlayBlock is the writer's live buffer of blk, nil when not changed.
func (v *Volume) overlayBlock(blk uint64) []byte {
	if v.overlay == nil {
		return nil
	}
	return v.overlay(blk)
}

// checkExtNode parses an extent block and verifies its checksum.
func (v *Volume) checkExtNode(ino *inode, where extLoc, b []byte) (*extNode, error) {
	n, err := v.parseExtNode(b, where)
	if err != nil {
		return nil, err
	}
	if v.metaCsum {
		// struct ext4_extent_tail follows eh_max entries.
		tail := extHdrSize + int(binary.LittleEndian.Uint16(b[4:]))*extEntSize
		if tail+4 > len(b) {
			return nil, corruptf("%s: no room for the checksum", where)
		}
		want, got := binary.LittleEndian.Uint32(b[tail:]), crc32c(ino.seed, b[:tail])
		if want != got {
			return nil, corruptf("%s: checksum %#08x, computed %#08x", where, want, got)
		}
	}
	return n, nil
}

func (v *Volume) extentRun(ino *inode, lblk uint64) (run, error) {
	if lblk >= maxExtentBlocks {
		return run{lblk: lblk, n: 1 << 62, kind: runHole}, nil
	}
	node, err := v.parseExtNode(ino.block[:], extLoc{ino: ino.num})
	if err != nil {
		return run{}, err
	}
	upper := uint64(maxExtentBlocks) // the current node covers logical blocks below upper
	for node.depth > 0 {
		i := lastAtOrBefore(node.entries, lblk)
		if i < 0 {
			next := upper
			if len(node.entries) > 0 {
				next = min(next, uint64(node.entries[0].lblk))
			}
			return run{lblk: lblk, n: next - lblk, kind: runHole}, nil
		}
		if i+1 < len(node.entries) {
			upper = min(upper, uint64(node.entries[i+1].lblk))
		}
		node, err = v.extentNode(ino, node.entries[i].phys, node.depth-1)
		if err != nil {
			return run{}, err
		}
	}
	i := lastAtOrBefore(node.entries, lblk)
	if i >= 0 {
		e := node.entries[i]
		if end := uint64(e.lblk) + uint64(e.len); lblk < end {
			r := run{lblk: lblk, n: end - lblk, phys: e.phys + (lblk - uint64(e.lblk)), kind: runData}
			if e.unwritten {
				r.kind = runUnwritten
			}
			return r, nil
		}
	}
	next := upper
	if i+1 < len(node.entries) {
		next = min(next, uint64(node.entries[i+1].lblk))
	}
	if next <= lblk {
		return run{}, corruptf("inode %d: extent tree index and leaves disagree at logical block %d", ino.num, lblk)
	}
	return run{lblk: lblk, n: next - lblk, kind: runHole}, nil
}

// lastAtOrBefore returns the index of the last entry starting at or before
// lblk, or -1.
func lastAtOrBefore(es []extEntry, lblk uint64) int {
	return sort.Search(len(es), func(i int) bool { return uint64(es[i].lblk) > lblk }) - 1
}

// Block maps (ext2/ext3): 12 direct pointers, then single, double and
// triple indirect blocks.

const nDirect = 12

func (v *Volume) indirectRun(ino *inode, lblk uint64) (run, error) {
	if lblk < nDirect {
		return v.scanPtrs(ino.block[:nDirect*4], lblk, lblk)
	}
	apb := uint64(v.blockSize / 4) // block numbers per indirect block
	l := lblk - nDirect
	span := apb
	level := 0
	for ; level < 3; level++ {
		if l < span {
			break
		}
		l -= span
		span *= apb
	}
	if level == 3 {
		return run{lblk: lblk, n: 1 << 62, kind: runHole}, nil
	}
	blk := uint64(binary.LittleEndian.Uint32(ino.block[(nDirect+level)*4:]))
	// span is the size of the subtree under blk, l the offset within it.
	for {
		if blk == 0 {
			return run{lblk: lblk, n: span - l, kind: runHole}, nil
		}
		b, err := v.readBlock(blk)
		if err != nil {
			return run{}, fmt.Errorf("ext4: inode %d indirect block: %w", ino.num, err)
		}
		span /= apb
		idx := l / span
		l %= span
		if span == 1 {
			return v.scanPtrs(b, idx, lblk)
		}
		blk = uint64(binary.LittleEndian.Uint32(b[idx*4:]))
	}
}

// scanPtrs builds the run starting at pointer idx of a block-pointer array:
// consecutive zero pointers form a hole, consecutive block numbers a data run.
func (v *Volume) scanPtrs(ptrs []byte, idx, lblk uint64) (run, error) {
	le := binary.LittleEndian
	n := uint64(len(ptrs) / 4)
	p0 := uint64(le.Uint32(ptrs[idx*4:]))
	j := idx + 1
	if p0 == 0 {
		for j < n && le.Uint32(ptrs[j*4:]) == 0 {
			j++
		}
		return run{lblk: lblk, n: j - idx, kind: runHole}, nil
	}
	for j < n && uint64(le.Uint32(ptrs[j*4:])) == p0+(j-idx) {
		j++
	}
	if p0 >= v.sb.blocksCount || j-idx > v.sb.blocksCount-p0 {
		return run{}, corruptf("block pointer %d beyond the filesystem", p0)
	}
	return run{lblk: lblk, n: j - idx, phys: p0, kind: runData}, nil
}
