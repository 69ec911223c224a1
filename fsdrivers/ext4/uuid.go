package ext4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/dimg-project/dimg/fsdrivers"
)

// Changing the UUID (tune2fs -U). The UUID is part of most checksums:
// with metadata_csum the checksum seed is crc32c(~0, s_uuid) unless
// metadata_csum_seed stores the seed in the superblock (then only s_uuid
// and the superblock checksums change), and with gdt_csum the group
// descriptors' crc16 covers the UUID. Without metadata_csum_seed every
// checksum seeded by it is rewritten: group descriptors, bitmaps, inodes,
// extent blocks, directory leaf tails and htree tails, xattr blocks.
//
// A checksum is rewritten only where it verified under the old seed, so a
// block that was not a checksummed structure (stale data in an unused
// inode table slot, a bitmap of an uninitialised group) is never made to
// look valid. The journal keeps its checksums: they are seeded by the
// journal superblock's own UUID, which does not change.

// ErrNeedsRecovery is wrapped when a filesystem's journal must be replayed
// before it can be changed in place (OpenWritable replays it).
var ErrNeedsRecovery = errors.New("ext4: the journal needs recovery")

// UUIDChange reports what SetUUID rewrote.
type UUIDChange struct {
	Old, New       string
	SeedStored     bool // metadata_csum_seed: only the superblocks changed
	Superblocks    int  // primary and backups
	Blocks         int  // metadata blocks rewritten (descriptors, inode tables, ...)
	InodesResummed int
}

// SetUUID gives the ext2/3/4 filesystem on dev a new UUID and keeps every
// checksum valid, as tune2fs -U does (e2fsck -fn finds it clean). It
// refuses a filesystem whose journal needs recovery (replay it first: the
// writer's OpenWritable does) and, when the checksum seed would change, a
// filesystem with a feature whose checksums it does not rewrite
// (orphan_file, mmp, ea_inode), naming it.
func SetUUID(dev fsdrivers.ReadWriterAt, size int64, uuid [16]byte) (*UUIDChange, error) {
	v, err := Open(dev, size)
	if err != nil {
		return nil, err
	}
	sb := &v.sb
	ch := &UUIDChange{Old: v.UUID(), New: formatUUID(uuid), SeedStored: sb.incompat&incompatCsumSeed != 0}
	if sb.incompat&incompatRecover != 0 {
		return nil, fmt.Errorf("ext4: set UUID: %w (mount it once or replay it first): %w", ErrNeedsRecovery, fsdrivers.ErrReadOnly)
	}
	if v.unsupported != 0 {
		return nil, fmt.Errorf("ext4: set UUID: incompat features %#x: %w", v.unsupported, ErrUnsupported)
	}
	if uuid == sb.uuid {
		return ch, nil
	}
	u := &uuidRewrite{v: v, dev: dev, dirty: map[uint64][]byte{}, oldSeed: v.csumSeed}
	reseed := v.metaCsum && !ch.SeedStored
	if reseed {
		var bad []string
		if sb.compat&compatOrphanFile != 0 {
			bad = append(bad, "orphan_file")
		}
		if sb.incompat&incompatMMP != 0 {
			bad = append(bad, "mmp")
		}
		if sb.incompat&incompatEAInode != 0 {
			bad = append(bad, "ea_inode")
		}
		if len(bad) > 0 {
			return nil, fmt.Errorf("ext4: set UUID: without metadata_csum_seed the checksums of %s would have to be rewritten, which dimg does not do (tune2fs -O metadata_csum_seed -U on the device can): %w",
				strings.Join(bad, ", "), fsdrivers.ErrReadOnly)
		}
		u.newSeed = crc32c(^uint32(0), uuid[:])
	} else {
		u.newSeed = u.oldSeed
	}
	if reseed || (v.groupCsum && !v.metaCsum) {
		if err := u.rewriteGroups(uuid, reseed); err != nil {
			return nil, err
		}
	}
	if reseed {
		if err := u.rewriteInodes(); err != nil {
			return nil, err
		}
		ch.InodesResummed = u.inodes
	}
	if reseed || (v.groupCsum && !v.metaCsum) {
		if err := u.copyGDTBackups(); err != nil {
			return nil, err
		}
	}
	// Metadata first, superblocks last: on a raw device interrupted in
	// between, e2fsck sees the old UUID and checksums it can repair.
	for blk, b := range u.dirty {
		if _, err := dev.WriteAt(b, int64(blk)<<v.blockBits); err != nil {
			return nil, fmt.Errorf("ext4: set UUID: write block %d: %w", blk, err)
		}
	}
	ch.Blocks = len(u.dirty)
	n, err := u.writeSupers(uuid)
	ch.Superblocks = n
	if err != nil {
		return nil, err
	}
	return ch, nil
}

// ParseUUID parses a UUID in its usual text form (any case).
func ParseUUID(s string) ([16]byte, error) {
	var u [16]byte
	h := strings.ReplaceAll(s, "-", "")
	if len(h) != 32 || len(s) != 36 {
		return u, fmt.Errorf("ext4: %q is not a UUID", s)
	}
	for i := range u {
		var b byte
		for _, c := range h[2*i : 2*i+2] {
			b <<= 4
			switch {
			case c >= '0' && c <= '9':
				b |= byte(c - '0')
			case c >= 'a' && c <= 'f':
				b |= byte(c - 'a' + 10)
			case c >= 'A' && c <= 'F':
				b |= byte(c - 'A' + 10)
			default:
				return u, fmt.Errorf("ext4: %q is not a UUID", s)
			}
		}
		u[i] = b
	}
	return u, nil
}

func formatUUID(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

type uuidRewrite struct {
	v                *Volume
	dev              fsdrivers.ReadWriterAt
	dirty            map[uint64][]byte
	oldSeed, newSeed uint32
	inodes           int
}

// block returns a private, writable copy of block blk (the same one on
// every call), marked to be written back.
func (u *uuidRewrite) block(blk uint64) ([]byte, error) {
	if b, ok := u.dirty[blk]; ok {
		return b, nil
	}
	if blk >= u.v.sb.blocksCount {
		return nil, corruptf("block %d beyond the %d blocks of the filesystem", blk, u.v.sb.blocksCount)
	}
	b := make([]byte, u.v.blockSize)
	if err := u.v.readFull(b, int64(blk)<<u.v.blockBits); err != nil {
		return nil, fmt.Errorf("ext4: read block %d: %w", blk, err)
	}
	u.dirty[blk] = b
	return b, nil
}

// peek reads block blk without marking it (the dirty copy if there is one).
func (u *uuidRewrite) peek(blk uint64) ([]byte, error) {
	if b, ok := u.dirty[blk]; ok {
		return b, nil
	}
	return u.v.readBlock(blk)
}

func le32b(x uint32) []byte {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], x)
	return b[:]
}

// rewriteGroups rewrites every group descriptor's checksum and, when the
// seed changes, the bitmap checksums they hold.
func (u *uuidRewrite) rewriteGroups(uuid [16]byte, reseed bool) error {
	v := u.v
	le := binary.LittleEndian
	for g := range v.groups {
		gd, err := v.groupDesc(g) // verified under the old UUID
		if err != nil {
			return fmt.Errorf("ext4: set UUID: %w", err)
		}
		blk, off := v.descLocation(g)
		b, err := u.block(blk)
		if err != nil {
			return err
		}
		d := b[off : off+v.descSize]
		if reseed {
			if gd.flags&bgBlockUninit == 0 {
				bm, err := u.peek(gd.blockBitmap)
				if err != nil {
					return err
				}
				u.resumBitmap(d, bm[:v.sb.clustersPerGroup/8], 0x18, 0x38)
			}
			if gd.flags&bgInodeUninit == 0 {
				bm, err := u.peek(gd.inodeBitmap)
				if err != nil {
					return err
				}
				u.resumBitmap(d, bm[:v.sb.inodesPerGroup/8], 0x1A, 0x3A)
			}
			c := crc32c(u.newSeed, le32b(g))
			c = crc32c(c, d[:0x1E])
			c = crc32c(c, []byte{0, 0})
			c = crc32c(c, d[0x20:])
			le.PutUint16(d[0x1E:], uint16(c))
		} else {
			c := crc16(0xFFFF, uuid[:])
			c = crc16(c, le32b(g))
			c = crc16(c, d[:0x1E])
			c = crc16(c, d[0x20:])
			le.PutUint16(d[0x1E:], c)
		}
	}
	return nil
}

// resumBitmap rewrites a bitmap checksum held in descriptor d (low half at
// lo, high half at hi in 64-byte descriptors) if it verified.
func (u *uuidRewrite) resumBitmap(d, bm []byte, lo, hi int) {
	le := binary.LittleEndian
	stored := uint32(le.Uint16(d[lo:]))
	mask := uint32(0xFFFF)
	if len(d) >= 64 {
		stored |= uint32(le.Uint16(d[hi:])) << 16
		mask = 0xFFFFFFFF
	}
	if crc32c(u.oldSeed, bm)&mask != stored {
		return
	}
	c := crc32c(u.newSeed, bm)
	le.PutUint16(d[lo:], uint16(c))
	if len(d) >= 64 {
		le.PutUint16(d[hi:], uint16(c>>16))
	}
}

// inodeCsum is the checksum of an on-disk inode under seed (see
// verifyInode) and whether its high half is stored.
func (u *uuidRewrite) inodeCsum(seed uint32, raw []byte) (uint32, bool) {
	zero := []byte{0, 0}
	c := crc32c(seed, raw[:0x7C])
	c = crc32c(c, zero)
	c = crc32c(c, raw[0x7E:goodOldInode])
	hasHi := false
	if len(raw) > goodOldInode {
		extra := int(binary.LittleEndian.Uint16(raw[goodOldInode:]))
		c = crc32c(c, raw[goodOldInode:0x82])
		if extra >= 4 {
			hasHi = true
			c = crc32c(c, zero)
			c = crc32c(c, raw[0x84:])
		} else {
			c = crc32c(c, raw[0x82:])
		}
	}
	if !hasHi {
		c &= 0xFFFF
	}
	return c, hasHi
}

func inodeSeed(fs, n, gen uint32) uint32 {
	return crc32c(crc32c(fs, le32b(n)), le32b(gen))
}

// rewriteInodes re-seeds every inode checksum that verifies and, for
// inodes in use, the checksums of their metadata blocks.
func (u *uuidRewrite) rewriteInodes() error {
	v := u.v
	le := binary.LittleEndian
	isz := int64(v.sb.inodeSize)
	perBlock := v.blockSize / isz
	for g := range v.groups {
		gd, err := v.groupDesc(g)
		if err != nil {
			return fmt.Errorf("ext4: set UUID: %w", err)
		}
		if gd.flags&bgInodeUninit != 0 {
			continue
		}
		for i := range uint64(v.itbPerGroup) {
			first := uint32(int64(i)*perBlock) + 1
			if first > v.sb.inodesPerGroup {
				break
			}
			raw, err := u.v.readBlock(gd.inodeTable + i)
			if err != nil {
				return err
			}
			var b []byte // the writable copy, taken at the first change
			for k := range perBlock {
				idx := int64(i)*perBlock + k
				if idx >= int64(v.sb.inodesPerGroup) {
					break
				}
				n := g*v.sb.inodesPerGroup + uint32(idx) + 1
				ir := raw[k*isz : (k+1)*isz]
				if isZero(ir) {
					continue
				}
				gen := le.Uint32(ir[0x64:])
				old, hasHi := u.inodeCsum(inodeSeed(u.oldSeed, n, gen), ir)
				stored := uint32(le.Uint16(ir[0x7C:]))
				if hasHi {
					stored |= uint32(le.Uint16(ir[0x82:])) << 16
				}
				if old != stored {
					continue // not a live inode (stale or never written)
				}
				if b == nil {
					if b, err = u.block(gd.inodeTable + i); err != nil {
						return err
					}
				}
				w := b[k*isz : (k+1)*isz]
				c, _ := u.inodeCsum(inodeSeed(u.newSeed, n, gen), w)
				le.PutUint16(w[0x7C:], uint16(c))
				if hasHi {
					le.PutUint16(w[0x82:], uint16(c>>16))
				}
				u.inodes++
				if le.Uint16(w[0x1A:]) == 0 {
					continue // deleted: its blocks may belong to others now
				}
				if err := u.rewriteInodeBlocks(n, gen, w); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// rewriteInodeBlocks re-seeds the checksummed blocks an inode owns: its
// extent tree's blocks, its directory blocks and its xattr block.
func (u *uuidRewrite) rewriteInodeBlocks(n, gen uint32, raw []byte) error {
	le := binary.LittleEndian
	oldS, newS := inodeSeed(u.oldSeed, n, gen), inodeSeed(u.newSeed, n, gen)
	flags := le.Uint32(raw[0x20:])
	if acl := uint64(le.Uint32(raw[0x68:])) | uint64(le.Uint16(raw[0x76:]))<<32; acl != 0 {
		if err := u.rewriteXattrBlock(acl); err != nil {
			return err
		}
	}
	if flags&flagInlineData != 0 {
		return nil
	}
	if flags&flagExtents != 0 {
		if err := u.rewriteExtentChildren(raw[0x28:0x28+iBlockSize], oldS, newS, extMaxDepth+1); err != nil {
			return fmt.Errorf("ext4: set UUID: inode %d: %w", n, err)
		}
	}
	if le.Uint16(raw[0x0:])&sIFMT != sIFDIR {
		return nil
	}
	ino, err := u.v.readInode(n)
	if err != nil {
		return err
	}
	return u.rewriteDir(ino, oldS, newS)
}

// rewriteExtentChildren re-seeds the extent blocks under node (the root in
// i_block or a block), depth-bounded against loops.
func (u *uuidRewrite) rewriteExtentChildren(node []byte, oldS, newS uint32, budget int) error {
	le := binary.LittleEndian
	if le.Uint16(node) != extMagic || budget <= 0 {
		return nil
	}
	count, depth := int(le.Uint16(node[2:])), le.Uint16(node[6:])
	if depth == 0 {
		return nil
	}
	for i := range count {
		e := node[extHdrSize+i*extEntSize:]
		if extHdrSize+(i+1)*extEntSize > len(node) {
			return corruptf("extent node overruns its block")
		}
		child := uint64(le.Uint32(e[4:])) | uint64(le.Uint16(e[8:]))<<32
		b, err := u.block(child)
		if err != nil {
			return err
		}
		if le.Uint16(b) != extMagic {
			continue
		}
		tail := extHdrSize + int(le.Uint16(b[4:]))*extEntSize
		if tail+4 > len(b) {
			continue
		}
		if crc32c(oldS, b[:tail]) == le.Uint32(b[tail:]) {
			le.PutUint32(b[tail:], crc32c(newS, b[:tail]))
		}
		if err := u.rewriteExtentChildren(b, oldS, newS, budget-1); err != nil {
			return err
		}
	}
	return nil
}

// rewriteDir re-seeds a directory's leaf tails and htree tails.
func (u *uuidRewrite) rewriteDir(dir *inode, oldS, newS uint32) error {
	v := u.v
	le := binary.LittleEndian
	nb, err := v.dirBlocks(dir)
	if err != nil {
		return err
	}
	for l := uint64(0); l < nb; {
		r, err := v.mapBlock(dir, l)
		if err != nil {
			return err
		}
		cnt := max(1, min(r.n-(l-r.lblk), nb-l))
		if r.kind != runData {
			l += cnt
			continue
		}
		for k := range cnt {
			lblk := l + k
			b, err := u.block(r.phys + (lblk - r.lblk))
			if err != nil {
				return err
			}
			t := b[len(b)-direntTailLen:]
			if le.Uint32(t) == 0 && le.Uint16(t[4:]) == direntTailLen && t[6] == 0 && t[7] == direntTailFT &&
				crc32c(oldS, b[:len(b)-direntTailLen]) == le.Uint32(t[8:]) {
				le.PutUint32(t[8:], crc32c(newS, b[:len(b)-direntTailLen]))
				continue
			}
			co := -1
			switch {
			case lblk == 0 && dir.flags&flagIndex != 0:
				co = dxRootInfoOff + int(b[dxRootInfoOff+5])
			case le.Uint32(b) == 0 && v.recLen(le.Uint16(b[4:])) == len(b):
				co = dxNodeCountOff
			}
			if co < 0 || co+4 > len(b) {
				continue
			}
			limit, count := int(le.Uint16(b[co:])), int(le.Uint16(b[co+2:]))
			tail := co + limit*8
			if count > limit || tail+8 > len(b) {
				continue
			}
			sum := func(seed uint32) uint32 {
				c := crc32c(seed, b[:co+count*8])
				c = crc32c(c, b[tail:tail+4])
				return crc32c(c, []byte{0, 0, 0, 0})
			}
			if sum(oldS) == le.Uint32(b[tail+4:]) {
				le.PutUint32(b[tail+4:], sum(newS))
			}
		}
		l += cnt
	}
	return nil
}

// rewriteXattrBlock re-seeds an external xattr block (seeded by the
// filesystem seed and the block number, shared blocks once).
func (u *uuidRewrite) rewriteXattrBlock(blk uint64) error {
	le := binary.LittleEndian
	b, err := u.block(blk)
	if err != nil {
		return err
	}
	if le.Uint32(b) != xattrMagic {
		return nil
	}
	var nr [8]byte
	le.PutUint64(nr[:], blk)
	sum := func(seed uint32) uint32 {
		c := crc32c(seed, nr[:])
		c = crc32c(c, b[:0x10])
		c = crc32c(c, []byte{0, 0, 0, 0})
		return crc32c(c, b[0x14:])
	}
	if sum(u.oldSeed) == le.Uint32(b[0x10:]) {
		le.PutUint32(b[0x10:], sum(u.newSeed))
	}
	return nil
}

// copyGDTBackups writes the rewritten descriptor blocks over their backup
// copies (the descriptors are the same bytes wherever they are kept).
func (u *uuidRewrite) copyGDTBackups() error {
	v := u.v
	metaStart := v.metaBGStart()
	for nr := uint32(0); uint64(nr)*uint64(v.descPerBlock) < uint64(v.groups); nr++ {
		g0 := nr * v.descPerBlock
		prim, _ := v.descLocation(g0)
		src, ok := u.dirty[prim]
		if !ok {
			continue
		}
		var dsts []uint64
		if uint64(g0) < metaStart {
			for g := uint32(1); g < v.groups; g++ {
				if v.hasSuper(g) {
					dsts = append(dsts, v.groupFirstBlock(g)+1+uint64(nr))
				}
			}
		} else {
			for _, g := range []uint32{g0 + 1, g0 + v.descPerBlock - 1} {
				if g >= v.groups {
					continue
				}
				blk := v.groupFirstBlock(g)
				if v.hasSuper(g) {
					blk++
				}
				dsts = append(dsts, blk)
			}
		}
		for _, d := range dsts {
			if d >= v.sb.blocksCount || d == prim {
				continue
			}
			b, err := u.block(d)
			if err != nil {
				return err
			}
			copy(b, src)
		}
	}
	return nil
}

// writeSupers sets s_uuid in the primary superblock and every backup and
// recomputes their checksums.
func (u *uuidRewrite) writeSupers(uuid [16]byte) (int, error) {
	v := u.v
	offs := []int64{superOffset}
	for g := uint32(1); g < v.groups; g++ {
		if v.hasSuper(g) {
			offs = append(offs, int64(v.groupFirstBlock(g))<<v.blockBits)
		}
	}
	le := binary.LittleEndian
	n := 0
	for i, off := range offs {
		b := make([]byte, superSize)
		if err := v.readFull(b, off); err != nil {
			return n, fmt.Errorf("ext4: set UUID: read superblock at %d: %w", off, err)
		}
		if le.Uint16(b[0x38:]) != superMagic {
			if i == 0 {
				return n, corruptf("superblock vanished")
			}
			continue // a backup that is not there (e2fsck rewrites it)
		}
		copy(b[0x68:0x78], uuid[:])
		if v.metaCsum {
			le.PutUint32(b[0x3FC:], crc32c(^uint32(0), b[:0x3FC]))
		}
		if _, err := u.dev.WriteAt(b, off); err != nil {
			return n, fmt.Errorf("ext4: set UUID: write superblock at %d: %w", off, err)
		}
		n++
	}
	return n, nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
