package ext4

import (
	"bytes"
	"fmt"
	"slices"
	"syscall"
)

// Directory writing: entries in leaf blocks (linear directories and htree
// leaves), htree insertion with leaf and index splits, and the conversion
// of a full one-block directory to an htree, as the kernel does
// (ext4_add_entry, make_indexed_dir, ext4_dx_add_entry, do_split).

const (
	dxInfoLevels = dxRootInfoOff + 6
	dxIndexFlag  = flagIndex
)

// ftypeFor is the dirent file type of an i_mode (0 without the filetype
// feature).
func (w *wfs) ftypeFor(mode uint16) uint8 {
	if w.v.sb.incompat&incompatFiletype == 0 {
		return 0
	}
	switch mode & sIFMT {
	case sIFREG:
		return 1
	case sIFDIR:
		return 2
	case sIFCHR:
		return 3
	case sIFBLK:
		return 4
	case sIFIFO:
		return 5
	case sIFSOCK:
		return 6
	case sIFLNK:
		return 7
	}
	return 0
}

func direntSize(nameLen int) int { return (direntHdr + nameLen + 3) &^ 3 }

// leafLen is the part of a leaf block entries may use (the checksum tail
// takes the last 12 bytes with metadata_csum).
func (w *wfs) leafLen() int {
	if w.v.metaCsum {
		return int(w.v.blockSize) - direntTailLen
	}
	return int(w.v.blockSize)
}

func (w *wfs) putRecLen(b []byte, pos, n int) {
	x := uint16(n)
	if n >= 65536 {
		x = 65535
	}
	le.PutUint16(b[pos+4:], x)
}

// putDirent writes a whole record at pos spanning rl bytes.
func (w *wfs) putDirent(b []byte, pos, rl int, ino uint32, name []byte, ft uint8) {
	le.PutUint32(b[pos:], ino)
	w.putRecLen(b, pos, rl)
	b[pos+6] = byte(len(name))
	b[pos+7] = ft
	n := copy(b[pos+direntHdr:], name)
	clear(b[pos+direntHdr+n : pos+direntSize(len(name))])
}

type drec struct {
	pos, rl int
	ino     uint32
	name    []byte
	ft      uint8
}

// recs lists the records of a leaf (live and free).
func (w *wfs) recs(b []byte, L int, where dirLoc) ([]drec, error) {
	var out []drec
	ftypes := w.v.sb.incompat&incompatFiletype != 0
	for pos := 0; pos < L; {
		if pos+direntHdr > L {
			return nil, corruptf("%s: entry at byte %d truncated", where, pos)
		}
		rl := w.v.recLen(le.Uint16(b[pos+4:]))
		nl := int(b[pos+6])
		ft := b[pos+7]
		if !ftypes {
			nl = int(le.Uint16(b[pos+6:]))
			ft = 0
		}
		if rl < direntHdr || rl%4 != 0 || rl > L-pos || direntHdr+nl > rl {
			return nil, corruptf("%s: entry at byte %d: rec_len %d name_len %d", where, pos, rl, nl)
		}
		out = append(out, drec{pos, rl, le.Uint32(b[pos:]), b[pos+direntHdr : pos+direntHdr+nl], ft})
		pos += rl
	}
	return out, nil
}

// leafInsert puts an entry in the first gap that fits; false when full.
func (w *wfs) leafInsert(b []byte, ino uint32, name []byte, ft uint8, where dirLoc) (bool, error) {
	L := w.leafLen()
	rs, err := w.recs(b, L, where)
	if err != nil {
		return false, err
	}
	need := direntSize(len(name))
	for _, r := range rs {
		if r.ino == 0 {
			if r.rl >= need {
				w.putDirent(b, r.pos, r.rl, ino, name, ft)
				return true, nil
			}
			continue
		}
		used := direntSize(len(r.name))
		if r.rl-used >= need {
			w.putRecLen(b, r.pos, used)
			w.putDirent(b, r.pos+used, r.rl-used, ino, name, ft)
			return true, nil
		}
	}
	return false, nil
}

// initLeaf makes b an empty leaf (one free record, the tail).
func (w *wfs) initLeaf(b []byte) {
	clear(b)
	w.putRecLen(b, 0, w.leafLen())
}

// packLeaf writes entries one after another into an empty leaf.
func (w *wfs) packLeaf(b []byte, es []drec) {
	w.initLeaf(b)
	L := w.leafLen()
	pos := 0
	for k, e := range es {
		rl := direntSize(len(e.name))
		if k == len(es)-1 {
			rl = L - pos
		}
		w.putDirent(b, pos, rl, e.ino, e.name, e.ft)
		pos += rl
	}
}

// leafCsum writes a leaf's checksum tail (metadata_csum).
func (w *wfs) leafCsum(d *winode, b []byte) {
	if !w.v.metaCsum {
		return
	}
	L := w.leafLen()
	t := b[L:]
	clear(t)
	le.PutUint16(t[4:], direntTailLen)
	t[7] = direntTailFT
	le.PutUint32(t[8:], crc32c(w.inodeSeed(d), b[:L]))
}

// Index blocks.

func (w *wfs) dxLimit(countOff int) int {
	n := (int(w.v.blockSize) - countOff) / 8
	if w.v.metaCsum {
		n--
	}
	return n
}

func dxCount(b []byte, co int) int { return int(le.Uint16(b[co+2:])) }
func dxHash(b []byte, co, k int) uint32 {
	return le.Uint32(b[co+8*k:])
}
func dxChild(b []byte, co, k int) uint64 { return uint64(le.Uint32(b[co+8*k+4:]) & 0x0fffffff) }

func (w *wfs) dxCsum(d *winode, b []byte, co int) {
	if !w.v.metaCsum {
		return
	}
	limit, count := int(le.Uint16(b[co:])), dxCount(b, co)
	tail := co + limit*8
	le.PutUint32(b[tail:], 0)
	c := crc32c(w.inodeSeed(d), b[:co+count*8])
	c = crc32c(c, b[tail:tail+4])
	c = crc32c(c, []byte{0, 0, 0, 0})
	le.PutUint32(b[tail+4:], c)
}

// dxInsertAt inserts index entry (hash, child) at position k.
func dxInsertAt(b []byte, co, k int, hash uint32, child uint64) {
	count := dxCount(b, co)
	copy(b[co+8*(k+1):co+8*(count+1)], b[co+8*k:co+8*count])
	le.PutUint32(b[co+8*k:], hash)
	le.PutUint32(b[co+8*k+4:], uint32(child))
	le.PutUint16(b[co+2:], uint16(count+1))
}

func (w *wfs) hashVersion(root []byte) uint8 {
	v := root[dxRootInfoOff+4]
	if v <= hashTea && w.v.sb.flags&flagUnsignedHash != 0 {
		v += hashLegacyUnsigned
	}
	return v
}

func (w *wfs) nameHash(root []byte, name []byte) (uint32, error) {
	h, ok := dirHash(name, w.hashVersion(root), w.v.sb.hashSeed)
	if !ok {
		return 0, fmt.Errorf("ext4: directory hash version %d: %w", root[dxRootInfoOff+4], syscall.EOPNOTSUPP)
	}
	return h, nil
}

type dxFrameW struct {
	lblk uint64
	co   int
	at   int
}

// dxProbe descends the index for hash h: the root frame and, in a
// two-level tree, the node frame, each positioned on the entry covering h.
func (w *wfs) dxProbe(d *winode, h uint32) ([]dxFrameW, error) {
	root, err := w.v.dirBlock(w.quick(d), 0)
	if err != nil {
		return nil, err
	}
	levels := int(root[dxInfoLevels])
	if levels > 1 || root[dxRootInfoOff+5] != dxRootInfoLen {
		return nil, fmt.Errorf("ext4: directory inode %d: htree with %d levels: %w", d.num, levels+1, syscall.EOPNOTSUPP)
	}
	frames := []dxFrameW{{lblk: 0, co: dxRootCountOff}}
	b := root
	for {
		f := &frames[len(frames)-1]
		count := dxCount(b, f.co)
		if count == 0 || count > w.dxLimit(f.co) {
			return nil, corruptf("directory inode %d htree block %d: count %d", d.num, f.lblk, count)
		}
		f.at = 0
		for k := 1; k < count && dxHash(b, f.co, k) <= h; k++ {
			f.at = k
		}
		if len(frames) > levels {
			return frames, nil
		}
		child := dxChild(b, f.co, f.at)
		if b, err = w.v.dirBlock(w.quick(d), child); err != nil {
			return nil, err
		}
		frames = append(frames, dxFrameW{lblk: child, co: dxNodeCountOff})
	}
}

// Entry lookup and changes.

// entryLoc is where a live entry is: logical block and record.
type entryLoc struct {
	lblk uint64
	rec  drec
}

// dxFind searches the leaf the probe selected and, while the next index
// entry carries the same hash with its continuation bit, the leaves after
// it (as the kernel's ext4_htree_next_block).
func (w *wfs) dxFind(d *winode, frames []dxFrameW, h uint32, name []byte) (entryLoc, error) {
	q := w.quick(d)
	nblocks := d.size() >> w.v.blockBits
	for range nblocks {
		f := frames[len(frames)-1]
		b, err := w.v.dirBlock(q, f.lblk)
		if err != nil {
			return entryLoc{}, err
		}
		if loc, ok, err := w.findInLeaf(d, dxChild(b, f.co, f.at), name); err != nil || ok {
			return loc, err
		}
		k := len(frames) - 1
		for ; k >= 0; k-- {
			bk, err := w.v.dirBlock(q, frames[k].lblk)
			if err != nil {
				return entryLoc{}, err
			}
			if frames[k].at+1 < dxCount(bk, frames[k].co) {
				frames[k].at++
				if dxHash(bk, frames[k].co, frames[k].at)&^1 != h {
					k = -1
				}
				break
			}
		}
		if k < 0 {
			break
		}
		for j := k + 1; j < len(frames); j++ {
			bp, err := w.v.dirBlock(q, frames[j-1].lblk)
			if err != nil {
				return entryLoc{}, err
			}
			frames[j] = dxFrameW{lblk: dxChild(bp, frames[j-1].co, frames[j-1].at), co: dxNodeCountOff}
		}
	}
	return entryLoc{}, fmt.Errorf("ext4: directory inode %d: %q: %w", d.num, name, syscall.ENOENT)
}

// findEntry finds name in directory d (ENOENT when missing).
func (w *wfs) findEntry(d *winode, name []byte) (entryLoc, error) {
	q := w.quick(d)
	if w.isDxDir(d) {
		root, err := w.v.dirBlock(q, 0)
		if err != nil {
			return entryLoc{}, err
		}
		h, err := w.nameHash(root, name)
		if err != nil {
			return entryLoc{}, err
		}
		frames, err := w.dxProbe(d, h)
		if err != nil {
			return entryLoc{}, err
		}
		return w.dxFind(d, frames, h, name)
	}
	n := d.size() >> w.v.blockBits
	for l := uint64(0); l < n; l++ {
		if w.isDxDir(d) && w.isIndexBlock(d, l) {
			continue
		}
		if loc, ok, err := w.findInLeaf(d, l, name); err != nil || ok {
			return loc, err
		}
	}
	return entryLoc{}, fmt.Errorf("ext4: directory inode %d: %q: %w", d.num, name, syscall.ENOENT)
}

func (w *wfs) isDxDir(d *winode) bool {
	return d.flags()&dxIndexFlag != 0 && w.v.sb.compat&compatDirIndex != 0
}

func (w *wfs) isIndexBlock(d *winode, l uint64) bool {
	if l == 0 {
		return true
	}
	b, err := w.v.dirBlock(w.quick(d), l)
	if err != nil {
		return false
	}
	return le.Uint32(b) == 0 && w.v.recLen(le.Uint16(b[4:])) == len(b)
}

func (w *wfs) findInLeaf(d *winode, l uint64, name []byte) (entryLoc, bool, error) {
	b, err := w.v.dirBlock(w.quick(d), l)
	if err != nil {
		return entryLoc{}, false, err
	}
	rs, err := w.recs(b, w.leafLen(), dirLoc{d.num, int64(l)})
	if err != nil {
		return entryLoc{}, false, err
	}
	for _, r := range rs {
		if r.ino != 0 && bytes.Equal(r.name, name) {
			return entryLoc{l, r}, true, nil
		}
	}
	return entryLoc{}, false, nil
}

// removeEntry deletes name from d and returns the inode it named.
func (w *wfs) removeEntry(d *winode, name []byte) (uint32, error) {
	loc, err := w.findEntry(d, name)
	if err != nil {
		return 0, err
	}
	b, err := w.dirBlockMut(d, loc.lblk)
	if err != nil {
		return 0, err
	}
	rs, err := w.recs(b, w.leafLen(), dirLoc{d.num, int64(loc.lblk)})
	if err != nil {
		return 0, err
	}
	for k, r := range rs {
		if r.pos != loc.rec.pos {
			continue
		}
		if k > 0 {
			w.putRecLen(b, rs[k-1].pos, rs[k-1].rl+r.rl)
		} else {
			le.PutUint32(b[r.pos:], 0)
		}
	}
	w.leafCsum(d, b)
	return loc.rec.ino, nil
}

// setEntry points an existing entry at another inode (rename over).
func (w *wfs) setEntry(d *winode, name []byte, ino uint32, ft uint8) error {
	loc, err := w.findEntry(d, name)
	if err != nil {
		return err
	}
	b, err := w.dirBlockMut(d, loc.lblk)
	if err != nil {
		return err
	}
	le.PutUint32(b[loc.rec.pos:], ino)
	if w.v.sb.incompat&incompatFiletype != 0 {
		b[loc.rec.pos+7] = ft
	}
	w.leafCsum(d, b)
	return nil
}

// addEntry adds name -> ino to directory d.
func (w *wfs) addEntry(d *winode, name []byte, ino uint32, ft uint8) error {
	if w.isDxDir(d) {
		return w.dxAdd(d, name, ino, ft)
	}
	n := d.size() >> w.v.blockBits
	for l := uint64(0); l < n; l++ {
		b, err := w.v.dirBlock(w.quick(d), l)
		if err != nil {
			return err
		}
		where := dirLoc{d.num, int64(l)}
		// Try on a copy first so a full block is not dirtied.
		tmp := slices.Clone(b)
		ok, err := w.leafInsert(tmp, ino, name, ft, where)
		if err != nil {
			return err
		}
		if ok {
			mb, err := w.dirBlockMut(d, l)
			if err != nil {
				return err
			}
			copy(mb, tmp)
			w.leafCsum(d, mb)
			return nil
		}
	}
	if n == 1 && w.v.sb.compat&compatDirIndex != 0 {
		return w.makeIndexed(d, name, ino, ft)
	}
	_, b, err := w.appendDirBlock(d)
	if err != nil {
		return err
	}
	w.initLeaf(b)
	w.putDirent(b, 0, w.leafLen(), ino, name, ft)
	w.leafCsum(d, b)
	return nil
}

// hashed is an entry with its htree hash, for splitting.
type hashed struct {
	drec
	h uint32
}

// splitSorted sorts entries by hash and picks the split point by size,
// returning the two halves and the index hash of the upper half (its low
// bit set when the same hash continues from the lower half).
func splitSorted(es []hashed) ([]drec, []drec, uint32) {
	slices.SortStableFunc(es, func(a, b hashed) int {
		switch {
		case a.h < b.h:
			return -1
		case a.h > b.h:
			return 1
		}
		return 0
	})
	total := 0
	for _, e := range es {
		total += direntSize(len(e.name))
	}
	mid, acc := 0, 0
	for mid < len(es)-1 && acc+direntSize(len(es[mid].name)) <= total/2 {
		acc += direntSize(len(es[mid].name))
		mid++
	}
	mid = max(mid, 1)
	h := es[mid].h
	if es[mid-1].h == h {
		h |= 1
	}
	lo := make([]drec, 0, mid)
	hi := make([]drec, 0, len(es)-mid)
	for k, e := range es {
		if k < mid {
			lo = append(lo, e.drec)
		} else {
			hi = append(hi, e.drec)
		}
	}
	return lo, hi, h
}

// makeIndexed turns a full one-block directory into an htree: the block
// becomes the dx_root, its entries (and the new one) go to two leaves.
func (w *wfs) makeIndexed(d *winode, name []byte, ino uint32, ft uint8) error {
	b0, err := w.v.dirBlock(w.quick(d), 0)
	if err != nil {
		return err
	}
	rs, err := w.recs(b0, w.leafLen(), dirLoc{d.num, 0})
	if err != nil {
		return err
	}
	if len(rs) < 2 || string(rs[0].name) != "." || string(rs[1].name) != ".." {
		return corruptf("directory inode %d: first block without \".\" and \"..\"", d.num)
	}
	parent := rs[1].ino
	var root [dxRootCountOff]byte
	root[dxRootInfoOff+4] = w.sbRaw[sbDefHash]
	root[dxRootInfoOff+5] = dxRootInfoLen
	var es []hashed
	for _, r := range append(rs[2:], drec{ino: ino, name: name, ft: ft}) {
		if r.ino == 0 {
			continue
		}
		h, err := w.nameHash(root[:], r.name)
		if err != nil {
			return err
		}
		es = append(es, hashed{drec{ino: r.ino, name: slices.Clone(r.name), ft: r.ft}, h})
	}
	lo, hi, h2 := splitSorted(es)
	l1, b1, err := w.appendDirBlock(d)
	if err != nil {
		return err
	}
	w.initLeaf(b1)
	w.leafCsum(d, b1)
	l2, b2, err := w.appendDirBlock(d)
	if err != nil {
		return err // l1 stays an empty leaf of the linear directory: valid
	}
	w.packLeaf(b1, lo)
	w.leafCsum(d, b1)
	w.packLeaf(b2, hi)
	w.leafCsum(d, b2)
	rb, err := w.dirBlockMut(d, 0)
	if err != nil {
		return err
	}
	clear(rb)
	dft := w.ftypeFor(sIFDIR)
	w.putDirent(rb, 0, 12, d.num, []byte("."), dft)
	w.putDirent(rb, 12, int(w.v.blockSize)-12, parent, []byte(".."), dft)
	copy(rb[dxRootInfoOff:], root[dxRootInfoOff:])
	co := dxRootCountOff
	le.PutUint16(rb[co:], uint16(w.dxLimit(co)))
	le.PutUint16(rb[co+2:], 1)
	le.PutUint32(rb[co+4:], uint32(l1))
	dxInsertAt(rb, co, 1, h2, l2)
	w.dxCsum(d, rb, co)
	d.setFlags(d.flags() | dxIndexFlag)
	return nil
}

// dxAdd inserts into an htree directory: into the leaf the hash selects,
// splitting it (and the index above it) when full.
func (w *wfs) dxAdd(d *winode, name []byte, ino uint32, ft uint8) error {
	root, err := w.v.dirBlock(w.quick(d), 0)
	if err != nil {
		return err
	}
	h, err := w.nameHash(root, name)
	if err != nil {
		return err
	}
	frames, err := w.dxProbe(d, h)
	if err != nil {
		return err
	}
	top := frames[len(frames)-1]
	tb, err := w.v.dirBlock(w.quick(d), top.lblk)
	if err != nil {
		return err
	}
	leaf := dxChild(tb, top.co, top.at)
	lb, err := w.dirBlockMut(d, leaf)
	if err != nil {
		return err
	}
	where := dirLoc{d.num, int64(leaf)}
	tmp := slices.Clone(lb)
	ok, err := w.leafInsert(tmp, ino, name, ft, where)
	if err != nil {
		return err
	}
	if ok {
		copy(lb, tmp)
		w.leafCsum(d, lb)
		return nil
	}
	// The leaf is full: make room in the index for one more leaf first.
	if frames, err = w.dxMakeRoom(d, frames); err != nil {
		return err
	}
	rs, err := w.recs(lb, w.leafLen(), where)
	if err != nil {
		return err
	}
	var es []hashed
	for _, r := range append(rs, drec{ino: ino, name: name, ft: ft}) {
		if r.ino == 0 {
			continue
		}
		rh, err := w.nameHash(root, r.name)
		if err != nil {
			return err
		}
		es = append(es, hashed{drec{ino: r.ino, name: slices.Clone(r.name), ft: r.ft}, rh})
	}
	lo, hi, h2 := splitSorted(es)
	nl, nb, err := w.appendDirBlock(d)
	if err != nil {
		return err
	}
	lb, err = w.dirBlockMut(d, leaf)
	if err != nil {
		return err
	}
	w.packLeaf(lb, lo)
	w.leafCsum(d, lb)
	w.packLeaf(nb, hi)
	w.leafCsum(d, nb)
	top = frames[len(frames)-1]
	ib, err := w.dirBlockMut(d, top.lblk)
	if err != nil {
		return err
	}
	dxInsertAt(ib, top.co, top.at+1, h2, nl)
	w.dxCsum(d, ib, top.co)
	return nil
}

// dxMakeRoom ensures the bottom index block has a free slot: a full root
// of a one-level tree moves its entries into a new node (two levels); a
// full node is split in two with a new entry in the root. A full
// two-level index is ENOSPC, as in the kernel without large_dir.
func (w *wfs) dxMakeRoom(d *winode, frames []dxFrameW) ([]dxFrameW, error) {
	top := frames[len(frames)-1]
	tb, err := w.v.dirBlock(w.quick(d), top.lblk)
	if err != nil {
		return nil, err
	}
	count := dxCount(tb, top.co)
	if count < w.dxLimit(top.co) {
		return frames, nil
	}
	nodeCo := dxNodeCountOff
	if len(frames) == 1 {
		nl, nb, err := w.appendDirBlock(d)
		if err != nil {
			return nil, err
		}
		rb, err := w.dirBlockMut(d, 0)
		if err != nil {
			return nil, err
		}
		w.putRecLen(nb, 0, int(w.v.blockSize))
		copy(nb[nodeCo:], rb[top.co:top.co+8*count])
		le.PutUint16(nb[nodeCo:], uint16(w.dxLimit(nodeCo)))
		w.dxCsum(d, nb, nodeCo)
		le.PutUint16(rb[top.co+2:], 1)
		le.PutUint32(rb[top.co+4:], uint32(nl))
		rb[dxInfoLevels] = 1
		w.dxCsum(d, rb, top.co)
		return []dxFrameW{{0, top.co, 0}, {nl, nodeCo, top.at}}, nil
	}
	rootF := frames[0]
	rb, err := w.dirBlockMut(d, 0)
	if err != nil {
		return nil, err
	}
	if dxCount(rb, rootF.co) >= w.dxLimit(rootF.co) {
		return nil, fmt.Errorf("ext4: directory inode %d: htree index full: %w", d.num, syscall.ENOSPC)
	}
	nl, nb, err := w.appendDirBlock(d)
	if err != nil {
		return nil, err
	}
	ob, err := w.dirBlockMut(d, top.lblk)
	if err != nil {
		return nil, err
	}
	half := count / 2
	moved := count - half
	split := dxHash(ob, top.co, half)
	w.putRecLen(nb, 0, int(w.v.blockSize))
	copy(nb[nodeCo:], ob[top.co+8*half:top.co+8*count])
	le.PutUint16(nb[nodeCo:], uint16(w.dxLimit(nodeCo)))
	le.PutUint16(nb[nodeCo+2:], uint16(moved))
	le.PutUint16(ob[top.co+2:], uint16(half))
	w.dxCsum(d, nb, nodeCo)
	w.dxCsum(d, ob, top.co)
	// rb may have been replaced by appendDirBlock's tree changes? No:
	// directory blocks keep their buffers; re-fetch to be safe.
	if rb, err = w.dirBlockMut(d, 0); err != nil {
		return nil, err
	}
	dxInsertAt(rb, rootF.co, rootF.at+1, split, nl)
	w.dxCsum(d, rb, rootF.co)
	if top.at >= half {
		return []dxFrameW{{0, rootF.co, rootF.at + 1}, {nl, nodeCo, top.at - half}}, nil
	}
	return frames, nil
}

// emptyDir reports whether d holds only "." and "..".
func (w *wfs) emptyDir(d *winode) (bool, error) {
	ri, err := w.rinode(d)
	if err != nil {
		return false, err
	}
	empty := true
	err = w.v.scanDir(ri, func(e dirent) bool {
		if string(e.name) != "." && string(e.name) != ".." {
			empty = false
			return false
		}
		return true
	})
	return empty, err
}

// setDotDot points d's ".." at parent.
func (w *wfs) setDotDot(d *winode, parent uint32) error {
	if isInline(d) {
		return w.setInlineParent(d, parent) // inlinew.go
	}
	b, err := w.dirBlockMut(d, 0)
	if err != nil {
		return err
	}
	if string(b[20:22]) != ".." {
		return corruptf("directory inode %d: no \"..\" entry", d.num)
	}
	le.PutUint32(b[12:], parent)
	if w.isDxDir(d) {
		w.dxCsum(d, b, dxRootCountOff)
	} else {
		w.leafCsum(d, b)
	}
	return nil
}

// initDir gives a new directory its first block with "." and "..".
func (w *wfs) initDir(d *winode, parent uint32) error {
	_, b, err := w.appendDirBlock(d)
	if err != nil {
		return err
	}
	w.initLeaf(b)
	ft := w.ftypeFor(sIFDIR)
	w.putDirent(b, 0, 12, d.num, []byte("."), ft)
	w.putDirent(b, 12, w.leafLen()-12, parent, []byte(".."), ft)
	w.leafCsum(d, b)
	return nil
}
