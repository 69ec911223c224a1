package ext4

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"time"

	"github.com/dimg-project/dimg/fsdrivers"
)

const (
	rootIno       = 2
	goodOldInode  = 128
	xattrMagic    = 0xEA020000
	iBlockSize    = 60
	maxSymlinkLen = 4095 // PATH_MAX - 1: longer targets are corrupt
)

// i_mode file types.
const (
	sIFMT   = 0xF000
	sIFSOCK = 0xC000
	sIFLNK  = 0xA000
	sIFREG  = 0x8000
	sIFBLK  = 0x6000
	sIFDIR  = 0x4000
	sIFCHR  = 0x2000
	sIFIFO  = 0x1000
)

// i_flags bits.
const (
	flagIndex      = 0x1000
	flagHugeFile   = 0x40000
	flagExtents    = 0x80000
	flagEAInode    = 0x200000
	flagInlineData = 0x10000000
	flagCasefold   = 0x40000000
	flagEncrypt    = 0x800
)

// inode is a decoded, verified inode. It is cached and shared between
// goroutines, so it is never modified after readInode returns it.
type inode struct {
	num        uint32
	mode       uint16
	uid, gid   uint32
	size       uint64
	links      uint16
	blocks512  int64 // allocated bytes / 512
	flags      uint32
	block      [iBlockSize]byte
	generation uint32
	fileACL    uint64
	atime      time.Time
	ctime      time.Time
	mtime      time.Time
	btime      time.Time
	xattrs     []byte // in-inode xattr entries (after the magic), nil if none
	seed       uint32 // crc32c seed for this inode's metadata blocks
}

func (ino *inode) isDir() bool     { return ino.mode&sIFMT == sIFDIR }
func (ino *inode) isSymlink() bool { return ino.mode&sIFMT == sIFLNK }
func (ino *inode) isReg() bool     { return ino.mode&sIFMT == sIFREG }

// readInode reads inode n through the inode cache.
func (v *Volume) readInode(n uint32) (*inode, error) {
	if n == 0 || n > v.sb.inodesCount {
		return nil, corruptf("inode %d out of range 1-%d", n, v.sb.inodesCount)
	}
	return v.inodes.Get(n, func() (*inode, error) {
		ino, err := v.loadInode(n)
		if err != nil {
			return nil, fmt.Errorf("ext4: read inode %d: %w", n, err)
		}
		return ino, nil
	})
}

func (v *Volume) loadInode(n uint32) (*inode, error) {
	g := (n - 1) / v.sb.inodesPerGroup
	idx := (n - 1) % v.sb.inodesPerGroup
	gd, err := v.groupDesc(g)
	if err != nil {
		return nil, err
	}
	if gd.flags&bgInodeUninit != 0 {
		return nil, corruptf("inode %d is in group %d whose inode table is uninitialised", n, g)
	}
	if gd.inodeTable == 0 || gd.inodeTable >= v.sb.blocksCount || uint64(v.itbPerGroup) > v.sb.blocksCount-gd.inodeTable {
		return nil, corruptf("group %d inode table at block %d out of range", g, gd.inodeTable)
	}
	off := int64(gd.inodeTable)<<v.blockBits + int64(idx)*int64(v.sb.inodeSize)
	b, err := v.readBlock(uint64(off >> v.blockBits))
	if err != nil {
		return nil, err
	}
	within := off & (v.blockSize - 1)
	raw := b[within : within+int64(v.sb.inodeSize)]
	return v.parseInode(n, raw)
}

func (v *Volume) parseInode(n uint32, raw []byte) (*inode, error) {
	ino, err := v.decodeInode(n, raw)
	if err != nil {
		return nil, err
	}
	if ino.links == 0 {
		// Deleted (or never used): a directory entry pointing here is stale.
		return nil, corruptf("inode %d is not in use (no links)", n)
	}
	return ino, nil
}

// decodeInode decodes and verifies an inode whatever its link count (the
// writer reads unlinked inodes that are still open).
func (v *Volume) decodeInode(n uint32, raw []byte) (*inode, error) {
	le := binary.LittleEndian
	extra := 0
	if len(raw) > goodOldInode {
		extra = int(le.Uint16(raw[0x80:]))
		if goodOldInode+extra > len(raw) || extra&3 != 0 {
			return nil, corruptf("inode %d: extra size %d", n, extra)
		}
	}
	ino := &inode{
		num:        n,
		mode:       le.Uint16(raw[0x0:]),
		uid:        uint32(le.Uint16(raw[0x2:])) | uint32(le.Uint16(raw[0x78:]))<<16,
		gid:        uint32(le.Uint16(raw[0x18:])) | uint32(le.Uint16(raw[0x7A:]))<<16,
		size:       uint64(le.Uint32(raw[0x4:])) | uint64(le.Uint32(raw[0x6C:]))<<32,
		links:      le.Uint16(raw[0x1A:]),
		flags:      le.Uint32(raw[0x20:]),
		generation: le.Uint32(raw[0x64:]),
		fileACL:    uint64(le.Uint32(raw[0x68:])) | uint64(le.Uint16(raw[0x76:]))<<32,
	}
	copy(ino.block[:], raw[0x28:0x28+iBlockSize])
	if v.metaCsum {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], n)
		ino.seed = crc32c(v.csumSeed, b[:])
		binary.LittleEndian.PutUint32(b[:], ino.generation)
		ino.seed = crc32c(ino.seed, b[:])
		if err := v.verifyInode(ino, raw, extra); err != nil {
			return nil, err
		}
	}
	blocks := uint64(le.Uint32(raw[0x1C:]))
	if v.sb.roCompat&roCompatHugeFile != 0 {
		blocks |= uint64(le.Uint16(raw[0x74:])) << 32
		if ino.flags&flagHugeFile != 0 {
			blocks <<= v.blockBits - 9 // counted in filesystem blocks
		}
	}
	ino.blocks512 = int64(min(blocks, 1<<62))
	if ino.flags&flagInlineData != 0 {
		// Like the kernel's getattr: report the inline bytes so tools
		// (tar, rsync) do not take the file for entirely sparse.
		ino.blocks512 += int64((min(ino.size, 1<<40) + 511) >> 9)
	}

	// Timestamps: seconds are signed 32-bit; the extra word, present when
	// i_extra_isize covers it, adds two epoch bits and nanoseconds.
	has := func(end int) bool { return goodOldInode+extra >= end }
	ts := func(secOff, extraOff int) time.Time {
		sec := int64(int32(le.Uint32(raw[secOff:])))
		var ns int64
		if has(extraOff + 4) {
			x := le.Uint32(raw[extraOff:])
			sec += int64(x&3) << 32
			ns = int64(x >> 2)
		}
		return time.Unix(sec, ns)
	}
	ino.atime = ts(0x8, 0x8C)
	ino.ctime = ts(0xC, 0x84)
	ino.mtime = ts(0x10, 0x88)
	if has(0x94) {
		ino.btime = ts(0x90, 0x94)
	}
	if xoff := goodOldInode + extra; len(raw) > goodOldInode && xoff+4 <= len(raw) && le.Uint32(raw[xoff:]) == xattrMagic {
		ino.xattrs = append([]byte(nil), raw[xoff+4:]...)
	}
	return ino, nil
}

// verifyInode checks the inode checksum: crc32c over the whole on-disk
// inode with the checksum fields (0x7C lo, 0x82 hi) as zeros, seeded with
// the inode seed. Only the low 16 bits are stored when i_extra_isize does
// not reach the high half.
func (v *Volume) verifyInode(ino *inode, raw []byte, extra int) error {
	le := binary.LittleEndian
	zero := []byte{0, 0}
	c := crc32c(ino.seed, raw[:0x7C])
	c = crc32c(c, zero)
	c = crc32c(c, raw[0x7E:goodOldInode])
	stored := uint32(le.Uint16(raw[0x7C:]))
	hasHi := false
	if len(raw) > goodOldInode {
		c = crc32c(c, raw[goodOldInode:0x82])
		if extra >= 4 {
			hasHi = true
			stored |= uint32(le.Uint16(raw[0x82:])) << 16
			c = crc32c(c, zero)
			c = crc32c(c, raw[0x84:])
		} else {
			c = crc32c(c, raw[0x82:])
		}
	}
	if !hasHi {
		c &= 0xFFFF
	}
	if c != stored {
		return corruptf("inode %d checksum %#x, computed %#x", ino.num, stored, c)
	}
	return nil
}

// fileMode converts i_mode to an io/fs mode with type, permission and
// setuid/setgid/sticky bits.
func (ino *inode) fileMode() fs.FileMode {
	m := fs.FileMode(ino.mode & 0o777)
	if ino.mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if ino.mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if ino.mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	switch ino.mode & sIFMT {
	case sIFDIR:
		m |= fs.ModeDir
	case sIFLNK:
		m |= fs.ModeSymlink
	case sIFIFO:
		m |= fs.ModeNamedPipe
	case sIFSOCK:
		m |= fs.ModeSocket
	case sIFBLK:
		m |= fs.ModeDevice
	case sIFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case sIFREG:
	default:
		m |= fs.ModeIrregular
	}
	return m
}

// rdev decodes the device number of a block or character device inode into
// the Linux dev_t encoding (what stat(2) returns in st_rdev). i_block[0]
// holds the old 8:8 form, i_block[1] the new 12:20 form.
func (ino *inode) rdev() uint64 {
	if ino.mode&sIFMT != sIFBLK && ino.mode&sIFMT != sIFCHR {
		return 0
	}
	var major, minor uint64
	if old := binary.LittleEndian.Uint32(ino.block[0:]); old != 0 {
		major, minor = uint64(old>>8&0xFF), uint64(old&0xFF)
	} else {
		d := binary.LittleEndian.Uint32(ino.block[4:])
		major = uint64(d&0xFFF00) >> 8
		minor = uint64(d&0xFF) | uint64(d>>12&0xFFF00)
	}
	return minor&0xFF | (major&0xFFF)<<8 | (minor&^0xFF)<<12 | (major&^0xFFF)<<32
}

func (ino *inode) stat() *fsdrivers.Stat {
	return &fsdrivers.Stat{
		Ino:    uint64(ino.num),
		Nlink:  uint32(ino.links),
		Uid:    ino.uid,
		Gid:    ino.gid,
		Rdev:   ino.rdev(),
		Atime:  ino.atime,
		Ctime:  ino.ctime,
		Mtime:  ino.mtime,
		Btime:  ino.btime,
		Blocks: ino.blocks512,
	}
}
