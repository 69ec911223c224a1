package ext4

import (
	"encoding/binary"
	"fmt"
	"slices"
	"syscall"
	"time"

	"github.com/dimg-project/dimg/fsdrivers"
)

// Inode byte offsets the writer sets (see parseInode for the reader side).
const (
	inMode       = 0x0
	inUidLo      = 0x2
	inSizeLo     = 0x4
	inAtime      = 0x8
	inCtime      = 0xC
	inMtime      = 0x10
	inDtime      = 0x14
	inGidLo      = 0x18
	inLinks      = 0x1A
	inBlocksLo   = 0x1C
	inFlags      = 0x20
	inBlock      = 0x28
	inGeneration = 0x64
	inFileACLLo  = 0x68
	inSizeHi     = 0x6C
	inBlocksHi   = 0x74
	inFileACLHi  = 0x76
	inUidHi      = 0x78
	inGidHi      = 0x7A
	inCsumLo     = 0x7C
	inExtraIsize = 0x80
	inCsumHi     = 0x82
	inCtimeX     = 0x84
	inMtimeX     = 0x88
	inAtimeX     = 0x8C
	inCrtime     = 0x90
	inCrtimeX    = 0x94
)

// winode is the write side's inode: a copy of its on-disk bytes, changed
// through accessors and written back with store (which redoes the
// checksum). It is the hook other write-side code (xattrs, inline data)
// uses: loadInode, the accessors, raw, store.
type winode struct {
	num uint32
	raw []byte // s_inode_size bytes
}

var le = binary.LittleEndian

func (i *winode) mode() uint16      { return le.Uint16(i.raw[inMode:]) }
func (i *winode) setMode(m uint16)  { le.PutUint16(i.raw[inMode:], m) }
func (i *winode) links() uint16     { return le.Uint16(i.raw[inLinks:]) }
func (i *winode) setLinks(n uint16) { le.PutUint16(i.raw[inLinks:], n) }
func (i *winode) flags() uint32     { return le.Uint32(i.raw[inFlags:]) }
func (i *winode) setFlags(f uint32) { le.PutUint32(i.raw[inFlags:], f) }
func (i *winode) isDir() bool       { return i.mode()&sIFMT == sIFDIR }
func (i *winode) isReg() bool       { return i.mode()&sIFMT == sIFREG }
func (i *winode) iblock() []byte    { return i.raw[inBlock : inBlock+iBlockSize] }
func (i *winode) size() uint64 {
	return uint64(le.Uint32(i.raw[inSizeLo:])) | uint64(le.Uint32(i.raw[inSizeHi:]))<<32
}

// noteSize turns on large_file when a file grows past 2 GiB, as the
// kernel does (older readers keyed i_size_high on it).
func (w *wfs) noteSize(n uint64) {
	if n > 1<<31-1 && w.v.sb.roCompat&roCompatLargeFile == 0 {
		w.v.sb.roCompat |= roCompatLargeFile
		le.PutUint32(w.sbRaw[sbRoCompat:], w.v.sb.roCompat)
	}
}

func (i *winode) setSize(n uint64) {
	le.PutUint32(i.raw[inSizeLo:], uint32(n))
	le.PutUint32(i.raw[inSizeHi:], uint32(n>>32))
}
func (i *winode) fileACL() uint64 {
	return uint64(le.Uint32(i.raw[inFileACLLo:])) | uint64(le.Uint16(i.raw[inFileACLHi:]))<<32
}
func (i *winode) setFileACL(b uint64) {
	le.PutUint32(i.raw[inFileACLLo:], uint32(b))
	le.PutUint16(i.raw[inFileACLHi:], uint16(b>>32))
}
func (i *winode) uid() uint32 {
	return uint32(le.Uint16(i.raw[inUidLo:])) | uint32(le.Uint16(i.raw[inUidHi:]))<<16
}
func (i *winode) gid() uint32 {
	return uint32(le.Uint16(i.raw[inGidLo:])) | uint32(le.Uint16(i.raw[inGidHi:]))<<16
}
func (i *winode) setOwner(uid, gid uint32) {
	le.PutUint16(i.raw[inUidLo:], uint16(uid))
	le.PutUint16(i.raw[inUidHi:], uint16(uid>>16))
	le.PutUint16(i.raw[inGidLo:], uint16(gid))
	le.PutUint16(i.raw[inGidHi:], uint16(gid>>16))
}

// extra is i_extra_isize (0 for 128-byte inodes).
func (i *winode) extra() int {
	if len(i.raw) <= goodOldInode {
		return 0
	}
	return int(le.Uint16(i.raw[inExtraIsize:]))
}

// setTime stores t in a seconds field and, when the inode has room for
// it, the matching extra word (two epoch bits and nanoseconds).
func (i *winode) setTime(secOff, extraOff int, t time.Time) {
	sec := t.Unix()
	le.PutUint32(i.raw[secOff:], uint32(sec))
	if goodOldInode+i.extra() >= extraOff+4 {
		epoch := uint32((sec-int64(int32(uint32(sec))))>>32) & 3
		le.PutUint32(i.raw[extraOff:], epoch|uint32(t.Nanosecond())<<2)
	}
}

// setBlocks512 stores i_blocks (in 512-byte units; huge_file's high 16 bits
// when the feature is on).
func (w *wfs) setBlocks(i *winode, fsBlocks uint64) {
	n := fsBlocks << (w.v.blockBits - 9)
	le.PutUint32(i.raw[inBlocksLo:], uint32(n))
	if w.v.sb.roCompat&roCompatHugeFile != 0 {
		le.PutUint16(i.raw[inBlocksHi:], uint16(n>>32))
	}
}

func (w *wfs) blocks(i *winode) uint64 {
	n := uint64(le.Uint32(i.raw[inBlocksLo:]))
	if w.v.sb.roCompat&roCompatHugeFile != 0 {
		n |= uint64(le.Uint16(i.raw[inBlocksHi:])) << 32
		if i.flags()&flagHugeFile != 0 {
			return n
		}
	}
	return n >> (w.v.blockBits - 9)
}

// inodePos is where inode n lives: inode table block and byte offset.
func (w *wfs) inodePos(n uint32) (uint64, int, error) {
	v := w.v
	if n == 0 || n > v.sb.inodesCount {
		return 0, 0, corruptf("inode %d out of range 1-%d", n, v.sb.inodesCount)
	}
	g := (n - 1) / v.sb.inodesPerGroup
	idx := (n - 1) % v.sb.inodesPerGroup
	gd, err := v.groupDesc(g)
	if err != nil {
		return 0, 0, err
	}
	off := int64(gd.inodeTable)<<v.blockBits + int64(idx)*int64(v.sb.inodeSize)
	return uint64(off >> v.blockBits), int(off & (v.blockSize - 1)), nil
}

// loadInode reads inode n's bytes (verifying its checksum when it is in use).
func (w *wfs) loadInode(n uint32) (*winode, error) {
	blk, off, err := w.inodePos(n)
	if err != nil {
		return nil, err
	}
	b, err := w.block(blk)
	if err != nil {
		return nil, err
	}
	wi := &winode{num: n, raw: slices.Clone(b[off : off+int(w.v.sb.inodeSize)])}
	if wi.links() != 0 || wi.mode() != 0 {
		if _, err := w.v.decodeInode(n, wi.raw); err != nil {
			return nil, err
		}
	}
	return wi, nil
}

// liveInode loads inode n and fails with ENOENT when it is not in use.
func (w *wfs) liveInode(n uint64) (*winode, error) {
	if n == 0 || n > uint64(w.v.sb.inodesCount) {
		return nil, fmt.Errorf("ext4: inode %d out of range: %w", n, syscall.ENOENT)
	}
	wi, err := w.loadInode(uint32(n))
	if err != nil {
		return nil, err
	}
	if wi.mode() == 0 || (wi.links() == 0 && w.holds[wi.num] == 0) {
		return nil, fmt.Errorf("ext4: inode %d is not in use: %w", n, syscall.ENOENT)
	}
	return wi, nil
}

// inodeSeed is the crc32c seed of inode metadata (inode, extent, directory
// blocks): the filesystem seed, the inode number, its generation.
func (w *wfs) inodeSeed(i *winode) uint32 {
	var b [4]byte
	le.PutUint32(b[:], i.num)
	s := crc32c(w.v.csumSeed, b[:])
	le.PutUint32(b[:], le.Uint32(i.raw[inGeneration:]))
	return crc32c(s, b[:])
}

// store writes the inode back into its table block with a fresh checksum.
func (w *wfs) store(i *winode) error {
	if w.v.metaCsum {
		raw := i.raw
		le.PutUint16(raw[inCsumLo:], 0)
		hasHi := len(raw) > goodOldInode && i.extra() >= 4
		if hasHi {
			le.PutUint16(raw[inCsumHi:], 0)
		}
		c := crc32c(w.inodeSeed(i), raw)
		le.PutUint16(raw[inCsumLo:], uint16(c))
		if hasHi {
			le.PutUint16(raw[inCsumHi:], uint16(c>>16))
		}
	}
	blk, off, err := w.inodePos(i.num)
	if err != nil {
		return err
	}
	b, err := w.mut(blk)
	if err != nil {
		return err
	}
	copy(b[off:], i.raw)
	w.v.inodes.Remove(i.num)
	return nil
}

// zeroInodeSlot writes an all-zero inode n (a never-initialised slot).
func (w *wfs) zeroInodeSlot(n uint32) error {
	blk, off, err := w.inodePos(n)
	if err != nil {
		return err
	}
	b, err := w.mut(blk)
	if err != nil {
		return err
	}
	clear(b[off : off+int(w.v.sb.inodeSize)])
	return nil
}

// newInode builds a fresh in-use inode n: mode, owner, all times now, one
// link (two for directories), extents root when the feature is on and the
// kind of file has blocks.
func (w *wfs) newInode(n uint32, mode uint16, owner fsdrivers.Owner) *winode {
	i := &winode{num: n, raw: make([]byte, w.v.sb.inodeSize)}
	i.setMode(mode)
	i.setOwner(owner.Uid, owner.Gid)
	if len(i.raw) > goodOldInode {
		want := int(le.Uint16(w.sbRaw[sbWantExtra:]))
		if want < 32 || goodOldInode+want > len(i.raw) {
			want = min(32, len(i.raw)-goodOldInode)
		}
		le.PutUint16(i.raw[inExtraIsize:], uint16(want))
	}
	now := w.now()
	i.setTime(inAtime, inAtimeX, now)
	i.setTime(inCtime, inCtimeX, now)
	i.setTime(inMtime, inMtimeX, now)
	if goodOldInode+i.extra() >= inCrtimeX+4 {
		i.setTime(inCrtime, inCrtimeX, now)
	}
	le.PutUint32(i.raw[inGeneration:], uint32(now.UnixNano())^n*2654435761)
	i.setLinks(1)
	t := mode & sIFMT
	if (t == sIFREG || t == sIFDIR) && w.v.sb.incompat&incompatExtents != 0 {
		i.setFlags(flagExtents)
		initExtentRoot(i.iblock())
	}
	w.startInline(i) // inlinew.go
	return i
}

func initExtentRoot(b []byte) {
	clear(b)
	le.PutUint16(b[0:], extMagic)
	le.PutUint16(b[2:], 0)
	le.PutUint16(b[4:], (iBlockSize-extHdrSize)/extEntSize)
	le.PutUint16(b[6:], 0)
}

// rinode decodes a write-side inode into the reader's form, so the reader's
// mapping, directory and xattr code can run on it.
func (w *wfs) rinode(i *winode) (*inode, error) {
	return w.v.decodeInode(i.num, i.raw)
}

// attr is stat(2)'s view of an inode.
func (w *wfs) attr(i *winode) (fsdrivers.Attr, error) {
	ri, err := w.rinode(i)
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	size := int64(min(ri.size, 1<<62))
	if !ri.isReg() && !ri.isSymlink() && !ri.isDir() {
		size = 0
	}
	return fsdrivers.Attr{
		Ino:    uint64(i.num),
		Mode:   uint32(ri.mode),
		Nlink:  uint32(ri.links),
		Uid:    ri.uid,
		Gid:    ri.gid,
		Rdev:   ri.rdev(),
		Size:   size,
		Blocks: ri.blocks512,
		Atime:  ri.atime,
		Mtime:  ri.mtime,
		Ctime:  ri.ctime,
		Btime:  ri.btime,
	}, nil
}

// touch sets ctime (and mtime when m) to now.
func (w *wfs) touch(i *winode, m bool) {
	now := w.now()
	i.setTime(inCtime, inCtimeX, now)
	if m {
		i.setTime(inMtime, inMtimeX, now)
	}
}
