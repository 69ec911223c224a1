package ext4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Group descriptor flags.
const (
	bgInodeUninit = 0x1
	bgBlockUninit = 0x2
)

// groupDesc is a decoded block group descriptor.
type groupDesc struct {
	blockBitmap     uint64
	inodeBitmap     uint64
	inodeTable      uint64
	flags           uint16
	blockBitmapCsum uint32
	csumHi          bool // blockBitmapCsum has its high 16 bits
}

// readFull reads len(p) bytes at off, treating a full read that also
// reports io.EOF as success.
func (v *Volume) readFull(p []byte, off int64) error {
	n, err := v.r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// readBlock returns block blk through the metadata cache. The slice is
// shared: callers must not modify it.
func (v *Volume) readBlock(blk uint64) ([]byte, error) {
	if blk >= v.sb.blocksCount {
		return nil, corruptf("block %d beyond the %d blocks of the filesystem", blk, v.sb.blocksCount)
	}
	if v.overlay != nil {
		// Opened for writing: a block changed since the last flush is
		// served from the writer's buffer, never copied into the cache.
		if b := v.overlay(blk); b != nil {
			return b, nil
		}
	}
	return v.blocks.Get(blk, func() ([]byte, error) {
		b := make([]byte, v.blockSize)
		if err := v.readFull(b, int64(blk)<<v.blockBits); err != nil {
			return nil, fmt.Errorf("ext4: read block %d: %w", blk, err)
		}
		return b, nil
	})
}

// superBlockNr is the block holding byte 1024 (the primary superblock).
func (v *Volume) superBlockNr() uint64 { return superOffset >> v.blockBits }

func (v *Volume) groupFirstBlock(g uint32) uint64 {
	return uint64(v.sb.firstDataBlock) + uint64(g)*uint64(v.sb.blocksPerGroup)
}

// groupBlocks is the number of blocks in group g (the last one may be short).
func (v *Volume) groupBlocks(g uint32) uint64 {
	first := v.groupFirstBlock(g)
	return min(uint64(v.sb.blocksPerGroup), v.sb.blocksCount-first)
}

func isPowerOf(n, base uint32) bool {
	for n > 1 {
		if n%base != 0 {
			return false
		}
		n /= base
	}
	return n == 1
}

// hasSuper reports whether group g carries a superblock (and, outside
// meta_bg, a GDT) copy.
func (v *Volume) hasSuper(g uint32) bool {
	switch {
	case g == 0:
		return true
	case v.sb.compat&compatSparseSuper2 != 0:
		return g == v.sb.backupBGs[0] || g == v.sb.backupBGs[1]
	case g == 1 || v.sb.roCompat&roCompatSparseSuper == 0:
		return true
	case g%2 == 0:
		return false
	}
	return isPowerOf(g, 3) || isPowerOf(g, 5) || isPowerOf(g, 7)
}

// metaBGStart is the first group whose descriptors follow the meta_bg
// layout, or the group count when there is none.
func (v *Volume) metaBGStart() uint64 {
	if v.sb.incompat&incompatMetaBG == 0 {
		return uint64(v.groups)
	}
	return uint64(v.sb.firstMetaBG) * uint64(v.descPerBlock)
}

// descLocation is where group g's descriptor lives: block and byte offset.
func (v *Volume) descLocation(g uint32) (uint64, int) {
	nr := g / v.descPerBlock
	off := int(g%v.descPerBlock) * v.descSize
	if uint64(g) < v.metaBGStart() {
		return v.superBlockNr() + 1 + uint64(nr), off
	}
	// meta_bg: the descriptor block sits in the first group of its meta
	// group, after that group's superblock backup if it has one.
	bg := nr * v.descPerBlock
	blk := v.groupFirstBlock(bg)
	if v.hasSuper(bg) {
		blk++
	}
	if v.blockSize == 1024 && nr == 0 && v.sb.firstDataBlock == 0 {
		blk++
	}
	return blk, off
}

// groupDesc reads, verifies and decodes the descriptor of group g.
func (v *Volume) groupDesc(g uint32) (groupDesc, error) {
	if g >= v.groups {
		return groupDesc{}, corruptf("group %d beyond the %d groups", g, v.groups)
	}
	blk, off := v.descLocation(g)
	b, err := v.readBlock(blk)
	if err != nil {
		return groupDesc{}, fmt.Errorf("ext4: group %d descriptor: %w", g, err)
	}
	d := b[off : off+v.descSize]
	if err := v.verifyDesc(g, d); err != nil {
		return groupDesc{}, err
	}
	le := binary.LittleEndian
	gd := groupDesc{
		blockBitmap:     uint64(le.Uint32(d[0x0:])),
		inodeBitmap:     uint64(le.Uint32(d[0x4:])),
		inodeTable:      uint64(le.Uint32(d[0x8:])),
		flags:           le.Uint16(d[0x12:]),
		blockBitmapCsum: uint32(le.Uint16(d[0x18:])),
	}
	if v.descSize >= 64 {
		gd.blockBitmap |= uint64(le.Uint32(d[0x20:])) << 32
		gd.inodeBitmap |= uint64(le.Uint32(d[0x24:])) << 32
		gd.inodeTable |= uint64(le.Uint32(d[0x28:])) << 32
		gd.blockBitmapCsum |= uint32(le.Uint16(d[0x38:])) << 16
		gd.csumHi = true
	}
	if !v.groupCsum {
		// Without descriptor checksums the kernel ignores these flags:
		// the bitmaps are always initialised.
		gd.flags = 0
	}
	return gd, nil
}

// verifyDesc checks a descriptor's bg_checksum: crc32c (low 16 bits) with
// metadata_csum, crc16 with gdt_csum. The checksum field itself (0x1E) is
// treated as zero.
func (v *Volume) verifyDesc(g uint32, d []byte) error {
	if !v.groupCsum {
		return nil
	}
	var le32 [4]byte
	binary.LittleEndian.PutUint32(le32[:], g)
	stored := binary.LittleEndian.Uint16(d[0x1E:])
	var got uint16
	if v.metaCsum {
		c := crc32c(v.csumSeed, le32[:])
		c = crc32c(c, d[:0x1E])
		c = crc32c(c, []byte{0, 0})
		c = crc32c(c, d[0x20:])
		got = uint16(c)
	} else {
		c := crc16(0xFFFF, v.sb.uuid[:])
		c = crc16(c, le32[:])
		c = crc16(c, d[:0x1E])
		c = crc16(c, d[0x20:])
		got = c
	}
	if got != stored {
		return corruptf("group %d descriptor checksum %#04x, computed %#04x", g, stored, got)
	}
	return nil
}

// blockRun is a run of blocks [start, start+count).
type blockRun struct {
	start, count uint64
}

// baseMeta lists the blocks of group g taken by the superblock backup, the
// group descriptors and the reserved GDT blocks, as the kernel computes them
// for a BLOCK_UNINIT group.
func (v *Volume) baseMeta(g uint32) []blockRun {
	start := v.groupFirstBlock(g)
	if start == 0 && v.blockSize == 1024 {
		start = 1 // 1 KiB bigalloc: the superblock is in block 1
	}
	var runs []blockRun
	has := v.hasSuper(g)
	if has {
		runs = append(runs, blockRun{start, 1})
	}
	if uint64(g) < v.metaBGStart() {
		if has {
			n := uint64(v.gdtBlocks)
			if v.sb.incompat&incompatMetaBG != 0 {
				n = uint64(v.sb.firstMetaBG)
			}
			n += uint64(v.sb.reservedGdt)
			runs = append(runs, blockRun{start + 1, n})
		}
	} else {
		switch g % v.descPerBlock {
		case 0, 1, v.descPerBlock - 1:
			off := uint64(0)
			if has {
				off = 1
			}
			runs = append(runs, blockRun{start + off, 1})
		}
	}
	return runs
}
