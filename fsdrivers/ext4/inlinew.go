package ext4

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"syscall"
)

// Writing inline data (the inline_data feature). A small file or
// directory keeps its bytes in the inode: the first 60 in i_block, the rest
// in the value of the "system.data" attribute, which lives in the inode's
// xattr area (it exists, possibly empty, on every inline inode). i_blocks
// counts no data blocks.
//
// Files stay inline while they fit: a write or truncate rewrites i_block
// and system.data. When a file outgrows the room the inode has (60 bytes
// plus what is free in the xattr area next to the other in-inode
// attributes), it is converted the way the kernel converts it: system.data
// removed, the inline flag cleared, an empty extent tree (or block map) in
// i_block, and the bytes written through the ordinary data path.
//
// Directories: an inline directory holds its parent's inode number in the
// first 4 bytes of i_block and dirents without "." and ".." after it and in
// system.data. Any change to one converts it to an ordinary one-block
// directory first, which the rest of the writer then edits (the kernel
// converts when an entry does not fit; converting on every change keeps one
// code path for entries, at the cost of a block).
//
// New regular files begin inline on a filesystem with inline_data (empty,
// system.data present and empty) when the inode has room for it, so small
// files stay in the inode as the kernel keeps them; new directories are
// created with a block, a layout the kernel writes too.

// startInline makes new regular file i inline when the filesystem and the
// inode allow it.
func (w *wfs) startInline(i *winode) {
	if w.v.sb.incompat&incompatInlineData == 0 || i.mode()&sIFMT != sIFREG {
		return
	}
	at := goodOldInode + i.extra()
	data := xattr{index: xattrIndexSystem, name: "data", value: []byte{}}
	if at >= len(i.raw) || len(i.raw)-at < xattrIbodyHdr+4+xattrCost(data) {
		return
	}
	if encodeIbody([]xattr{data}, i.raw[at:]) != nil {
		return
	}
	clear(i.iblock())
	i.setFlags(i.flags()&^flagExtents | flagInlineData)
}

// inlineMin is the part of inline data held in i_block.
const inlineMin = iBlockSize

func isInline(i *winode) bool { return i.flags()&flagInlineData != 0 }

// inlineContent returns the inline bytes of i (size bytes for a file).
func (w *wfs) inlineContent(i *winode) ([]byte, error) {
	ri, err := w.rinode(i)
	if err != nil {
		return nil, err
	}
	head, rest, err := w.v.inlineParts(ri)
	if err != nil {
		return nil, err
	}
	data := append(slices.Clone(head), rest...)
	if i.isReg() || i.mode()&sIFMT == sIFLNK {
		if i.size() > uint64(len(data)) {
			return nil, corruptf("inode %d: inline size %d but %d bytes of inline data", i.num, i.size(), len(data))
		}
		data = data[:i.size()]
	}
	return data, nil
}

// xattrList returns i's attributes with private copies of their values.
func (w *wfs) xattrList(i *winode) ([]xattr, error) {
	ri, err := w.rinode(i)
	if err != nil {
		return nil, err
	}
	all, err := w.v.allXattrs(ri)
	if err != nil {
		return nil, err
	}
	for k := range all {
		all[k].value = slices.Clone(all[k].value)
	}
	return all, nil
}

// rewriteXattrs lays out list again (inode first, then the block) and
// writes it into i (which the caller stores).
func (w *wfs) rewriteXattrs(i *winode, list []xattr) error {
	var area []byte
	if at := goodOldInode + i.extra(); at < len(i.raw) {
		area = i.raw[at:]
	}
	ibody, block, err := layoutXattrs(list, len(area), int(w.v.blockSize))
	if err != nil {
		return fmt.Errorf("ext4: inode %d: %w", i.num, err)
	}
	if err := w.storeXattrBlock(i, block); err != nil {
		return err
	}
	return encodeIbody(ibody, area)
}

func isSystemData(x xattr) bool { return x.index == xattrIndexSystem && x.name == "data" }

// inlineFits says whether n bytes of inline data fit i, leaving the other
// in-inode attributes where they are.
func (w *wfs) inlineFits(i *winode, list []xattr, n int) (bool, error) {
	if n <= inlineMin {
		return true, nil
	}
	at := goodOldInode + i.extra()
	if at >= len(i.raw) {
		return false, nil
	}
	ri, err := w.rinode(i)
	if err != nil {
		return false, err
	}
	free := len(i.raw) - at - xattrIbodyHdr - 4
	if ri.xattrs != nil {
		inInode, err := w.v.parseXattrEntries(ri.xattrs, ri.xattrs, xattrLoc{ino: i.num}, nil)
		if err != nil {
			return false, err
		}
		for _, x := range inInode {
			if !isSystemData(x) {
				free -= xattrCost(x)
			}
		}
	}
	return xattrCost(xattr{index: xattrIndexSystem, name: "data", value: make([]byte, n-inlineMin)}) <= free, nil
}

// setInline stores data as i's inline content (i_block and system.data).
func (w *wfs) setInline(i *winode, list []xattr, data []byte) error {
	rest := []byte{}
	if len(data) > inlineMin {
		rest = slices.Clone(data[inlineMin:])
	}
	out := slices.DeleteFunc(slices.Clone(list), isSystemData)
	out = append(out, xattr{index: xattrIndexSystem, name: "data", value: rest})
	if err := w.rewriteXattrs(i, out); err != nil {
		return err
	}
	b := i.iblock()
	clear(b)
	copy(b, data)
	return nil
}

// uninline turns inline inode i into an ordinary one with an empty
// mapping (extents when the filesystem has them), dropping system.data,
// and returns the bytes it held.
func (w *wfs) uninline(i *winode) ([]byte, error) {
	data, err := w.inlineContent(i)
	if err != nil {
		return nil, err
	}
	list, err := w.xattrList(i)
	if err != nil {
		return nil, err
	}
	if err := w.rewriteXattrs(i, slices.DeleteFunc(list, isSystemData)); err != nil {
		return nil, err
	}
	f := i.flags() &^ flagInlineData
	clear(i.iblock())
	if w.v.sb.incompat&incompatExtents != 0 {
		f |= flagExtents
		initExtentRoot(i.iblock())
	}
	i.setFlags(f)
	return data, nil
}

// uninlineFile converts an inline file to an ordinary one holding the same
// bytes.
func (w *wfs) uninlineFile(i *winode) error {
	data, err := w.uninline(i)
	if err != nil {
		return err
	}
	size := i.size()
	if len(data) > 0 {
		if _, err := w.writeData(i, data, 0); err != nil {
			return err
		}
	}
	i.setSize(size)
	return nil
}

// uninlineDir converts an inline directory to an ordinary one-block
// directory with the same entries, "." and ".." first.
func (w *wfs) uninlineDir(d *winode) error {
	ri, err := w.rinode(d)
	if err != nil {
		return err
	}
	var es []drec
	err = w.v.scanInlineDir(ri, func(e dirent) bool {
		es = append(es, drec{ino: e.ino, name: slices.Clone(e.name), ft: e.ftype})
		return true
	})
	if err != nil {
		return err
	}
	need := 0
	for _, e := range es {
		need += direntSize(len(e.name))
	}
	if need > w.leafLen() {
		return corruptf("directory inode %d: inline entries of %d bytes", d.num, need)
	}
	if _, err := w.uninline(d); err != nil {
		return err
	}
	d.setSize(0)
	_, b, err := w.appendDirBlock(d)
	if err != nil {
		return err
	}
	w.packLeaf(b, es)
	w.leafCsum(d, b)
	return nil
}

// writeInline is WriteAt for an inline file: in place while the result
// fits the inode, else after converting the file.
func (w *wfs) writeInline(i *winode, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("ext4: write inode %d at %d: %w", i.num, off, syscall.EINVAL)
	}
	end := off + int64(len(p))
	size := int64(i.size())
	newSize := max(size, end)
	list, err := w.xattrList(i)
	if err != nil {
		return 0, err
	}
	fits := false
	if newSize <= int64(w.v.blockSize) {
		if fits, err = w.inlineFits(i, list, int(newSize)); err != nil {
			return 0, err
		}
	}
	if !fits {
		if err := w.uninlineFile(i); err != nil {
			return 0, err
		}
		return w.writeData(i, p, off)
	}
	data, err := w.inlineContent(i)
	if err != nil {
		return 0, err
	}
	buf := make([]byte, newSize)
	copy(buf, data)
	copy(buf[off:], p)
	if err := w.setInline(i, list, buf); err != nil {
		return 0, err
	}
	i.setSize(uint64(newSize))
	w.touch(i, true)
	return len(p), nil
}

// truncateInline is truncate for an inline file.
func (w *wfs) truncateInline(i *winode, size uint64) error {
	list, err := w.xattrList(i)
	if err != nil {
		return err
	}
	fits := false
	if size <= uint64(w.v.blockSize) {
		if fits, err = w.inlineFits(i, list, int(size)); err != nil {
			return err
		}
	}
	if !fits {
		if err := w.uninlineFile(i); err != nil {
			return err
		}
		return w.truncate(i, size)
	}
	data, err := w.inlineContent(i)
	if err != nil {
		return err
	}
	buf := make([]byte, size)
	copy(buf, data)
	if err := w.setInline(i, list, buf); err != nil {
		return err
	}
	i.setSize(size)
	return nil
}

// dirForWrite is dirInode for operations that change the directory: an
// inline directory is converted first.
func (w *wfs) dirForWrite(n uint64) (*winode, error) {
	d, err := w.dirInode(n)
	if err != nil || !isInline(d) {
		return d, err
	}
	if err := w.uninlineDir(d); err != nil {
		return nil, err
	}
	if err := w.store(d); err != nil {
		return nil, err
	}
	return d, nil
}

// lookupInline finds name in inline directory d.
func (w *wfs) lookupInline(d *winode, name string) (*winode, error) {
	ri, err := w.rinode(d)
	if err != nil {
		return nil, err
	}
	n, err := w.v.lookup(ri, name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("ext4: no %q in directory inode %d: %w", name, d.num, syscall.ENOENT)
	}
	if err != nil {
		return nil, err
	}
	return w.loadInode(n)
}

// setInlineParent is setDotDot for an inline directory: the parent's
// number is the first word of i_block.
func (w *wfs) setInlineParent(d *winode, parent uint32) error {
	le.PutUint32(d.iblock(), parent)
	return w.store(d)
}
