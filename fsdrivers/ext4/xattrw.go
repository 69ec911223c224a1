package ext4

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"syscall"

	"github.com/dimg-project/dimg/fsdrivers"
)

// Writing extended attributes (Documentation/filesystems/ext4/attributes.rst).
//
// An inode's attributes live in two places: the "ibody" area after the
// inode's i_extra_isize (a 4-byte magic, then entries, values packed at the
// end of the inode) and one external block named by i_file_acl (a 32-byte
// header with a reference count and hashes, entries sorted by index, name
// length and name, values packed from the end of the block). Like the
// kernel, attributes go in the inode first and spill into the block when
// the inode is full; system.data (inline data) always stays in the inode.
//
// A block whose h_refcount is above 1 is shared by several inodes (the
// kernel deduplicates identical blocks): it is never changed in place but
// copied (copy on write) and its count lowered.
//
// The changes here are computed on a whole list: editXattrs applies one
// set or remove to the list, layoutXattrs splits it between inode and
// block, and encodeIbody / encodeXattrBlock produce the bytes.

// Name indexes.
const (
	xattrIndexUser       = 1
	xattrIndexACLAccess  = 2
	xattrIndexACLDefault = 3
	xattrIndexTrusted    = 4
	xattrIndexSecurity   = 6
	// xattrIndexSystem = 7 (system.data) is in xattr.go.

	xattrNameMax  = 255
	xattrPad      = 4 // entries and values are 4-byte aligned
	xattrIbodyHdr = 4 // the magic before in-inode entries
)

// xattrParse maps a full attribute name, as setxattr(2) takes it, to its
// on-disk index and suffix. Names of namespaces ext4 cannot store fail
// with EOPNOTSUPP, over-long names with ERANGE (as in the kernel).
func xattrParse(full string) (uint8, string, error) {
	var idx uint8
	var suffix string
	switch {
	case full == "system.posix_acl_access":
		idx = xattrIndexACLAccess
	case full == "system.posix_acl_default":
		idx = xattrIndexACLDefault
	case strings.HasPrefix(full, "user."):
		idx, suffix = xattrIndexUser, full[len("user."):]
	case strings.HasPrefix(full, "trusted."):
		idx, suffix = xattrIndexTrusted, full[len("trusted."):]
	case strings.HasPrefix(full, "security."):
		idx, suffix = xattrIndexSecurity, full[len("security."):]
	default:
		return 0, "", fmt.Errorf("ext4: xattr %q: namespace not supported: %w", full, syscall.EOPNOTSUPP)
	}
	if idx != xattrIndexACLAccess && idx != xattrIndexACLDefault && suffix == "" {
		return 0, "", fmt.Errorf("ext4: xattr %q: empty name: %w", full, syscall.EINVAL)
	}
	if len(suffix) > xattrNameMax {
		return 0, "", fmt.Errorf("ext4: xattr name of %d bytes (at most %d): %w", len(suffix), xattrNameMax, syscall.ERANGE)
	}
	return idx, suffix, nil
}

// xattrEntryLen is the size of an entry with its name, padded.
func xattrEntryLen(x xattr) int {
	return (xattrEntrySize + len(x.name) + xattrPad - 1) &^ (xattrPad - 1)
}

// xattrValueLen is the space a value takes, padded.
func xattrValueLen(x xattr) int { return (len(x.value) + xattrPad - 1) &^ (xattrPad - 1) }

// xattrCost is what an attribute takes of an area: entry plus value.
func xattrCost(x xattr) int { return xattrEntryLen(x) + xattrValueLen(x) }

// editXattrs returns list with the attribute named full set to value (or
// removed when remove is set), following setxattr(2)'s flags. The value is
// in the kernel's xattr format; ACLs are converted to ext4's on-disk form.
// An existing attribute keeps its place in the list, a new one goes last.
func editXattrs(list []xattr, full string, value []byte, flags fsdrivers.XattrFlags, remove bool) ([]xattr, error) {
	idx, suffix, err := xattrParse(full)
	if err != nil {
		return nil, err
	}
	at := slices.IndexFunc(list, func(x xattr) bool { return x.index == idx && x.name == suffix })
	if remove {
		if at < 0 {
			return nil, fmt.Errorf("ext4: no xattr %q: %w", full, syscall.ENODATA)
		}
		return slices.Delete(slices.Clone(list), at, at+1), nil
	}
	if flags&fsdrivers.XattrCreate != 0 && at >= 0 {
		return nil, fmt.Errorf("ext4: xattr %q exists: %w", full, syscall.EEXIST)
	}
	if flags&fsdrivers.XattrReplace != 0 && at < 0 {
		return nil, fmt.Errorf("ext4: no xattr %q to replace: %w", full, syscall.ENODATA)
	}
	if len(value) > maxXattrValue {
		return nil, fmt.Errorf("ext4: xattr %q value of %d bytes: %w", full, len(value), syscall.E2BIG)
	}
	if idx == xattrIndexACLAccess || idx == xattrIndexACLDefault {
		if value, err = aclFromXattr(value); err != nil {
			return nil, fmt.Errorf("ext4: xattr %q: %w", full, err)
		}
	} else {
		value = slices.Clone(value)
	}
	out := slices.Clone(list)
	x := xattr{index: idx, name: suffix, value: value}
	if at >= 0 {
		out[at] = x
	} else {
		out = append(out, x)
	}
	return out, nil
}

// layoutXattrs splits attributes between the inode (ibodySpace bytes
// after i_extra_isize, 0 when the inode has no room) and the external
// block (blockSize bytes). Attributes are taken in list order: each goes
// in the inode while it fits, the rest into the block, system.data always
// in the inode. It fails with ENOSPC when they do not fit both.
func layoutXattrs(list []xattr, ibodySpace, blockSize int) (ibody, block []xattr, err error) {
	// Usable room: the inode's area less its magic and the 4-byte end
	// marker; the block less its header and end marker.
	inFree := ibodySpace - xattrIbodyHdr - 4
	blkFree := blockSize - xattrHdrSize - 4
	for _, x := range list {
		if x.index == xattrIndexSystem && x.name == "data" {
			if xattrCost(x) > inFree {
				return nil, nil, fmt.Errorf("ext4: inline data attribute does not fit the inode: %w", syscall.ENOSPC)
			}
			inFree -= xattrCost(x)
			ibody = append([]xattr{x}, ibody...)
		}
	}
	for _, x := range list {
		if x.index == xattrIndexSystem && x.name == "data" {
			continue
		}
		c := xattrCost(x)
		switch {
		case c <= inFree:
			inFree -= c
			ibody = append(ibody, x)
		case c <= blkFree:
			blkFree -= c
			block = append(block, x)
		default:
			return nil, nil, fmt.Errorf("ext4: xattr %s%s of %d bytes: no room left in the inode or its xattr block: %w",
				xattrPrefix[x.index], x.name, len(x.value), syscall.ENOSPC)
		}
	}
	return ibody, block, nil
}

// putXattrEntry writes entry x at e with value offset voff.
func putXattrEntry(e []byte, x xattr, voff int) {
	le := binary.LittleEndian
	e[0] = byte(len(x.name))
	e[1] = x.index
	le.PutUint16(e[2:], uint16(voff))
	le.PutUint32(e[4:], 0) // e_value_inum: values live in the area (no ea_inode)
	le.PutUint32(e[8:], uint32(len(x.value)))
	le.PutUint32(e[12:], xattrEntryHash(x))
	copy(e[xattrEntrySize:], x.name)
}

// encodeIbody writes the attributes into area, the inode's bytes after
// i_extra_isize (up to the inode's end). Value offsets count from the
// first entry, as the kernel's IFIRST does. An empty list clears the area.
func encodeIbody(list []xattr, area []byte) error {
	clear(area)
	if len(list) == 0 {
		return nil
	}
	if len(area) < xattrIbodyHdr+4 {
		return fmt.Errorf("ext4: no room for xattrs in the inode: %w", syscall.ENOSPC)
	}
	binary.LittleEndian.PutUint32(area, xattrMagic)
	first := area[xattrIbodyHdr:]
	pos, vend := 0, len(first)
	for _, x := range list {
		vl := xattrValueLen(x)
		if pos+xattrEntryLen(x)+4 > vend-vl {
			clear(area)
			return fmt.Errorf("ext4: xattrs do not fit the inode: %w", syscall.ENOSPC)
		}
		voff := 0
		if len(x.value) > 0 {
			vend -= vl
			voff = vend
			copy(first[voff:], x.value)
		}
		putXattrEntry(first[pos:], x, voff)
		pos += xattrEntryLen(x)
	}
	return nil
}

// xattrBlockOrder is the kernel's order of entries in a block: by index,
// then name length, then name.
func xattrBlockOrder(a, b xattr) int {
	if a.index != b.index {
		return int(a.index) - int(b.index)
	}
	if len(a.name) != len(b.name) {
		return len(a.name) - len(b.name)
	}
	return strings.Compare(a.name, b.name)
}

// encodeXattrBlock builds an external xattr block of blockSize bytes for
// block number blk: header (refcount, one block, the block hash), entries
// in the kernel's sorted order, values from the end, and the
// metadata_csum checksum when csum is set (seed: the filesystem's).
func encodeXattrBlock(list []xattr, blockSize int, refcount uint32, blk uint64, csum bool, seed uint32) ([]byte, error) {
	le := binary.LittleEndian
	b := make([]byte, blockSize)
	le.PutUint32(b[0:], xattrMagic)
	le.PutUint32(b[4:], refcount)
	le.PutUint32(b[8:], 1) // h_blocks
	sorted := slices.Clone(list)
	slices.SortStableFunc(sorted, xattrBlockOrder)
	pos, vend := xattrHdrSize, blockSize
	var hash uint32
	for _, x := range sorted {
		vl := xattrValueLen(x)
		if pos+xattrEntryLen(x)+4 > vend-vl {
			return nil, fmt.Errorf("ext4: xattrs do not fit one block: %w", syscall.ENOSPC)
		}
		voff := 0
		if len(x.value) > 0 {
			vend -= vl
			voff = vend
			copy(b[voff:], x.value)
		}
		putXattrEntry(b[pos:], x, voff)
		// The block hash folds in every entry hash (ext4_xattr_rehash).
		hash = hash<<16 ^ hash>>16 ^ le.Uint32(b[pos+12:])
		pos += xattrEntryLen(x)
	}
	le.PutUint32(b[12:], hash)
	if csum {
		le.PutUint32(b[xattrBlockChecksum:], xattrBlockCsum(b, blk, seed))
	}
	return b, nil
}

// xattrBlockCsum is the metadata_csum checksum of xattr block blk: crc32c
// of the block number (64 bits) and the block with h_checksum zeroed.
func xattrBlockCsum(b []byte, blk uint64, seed uint32) uint32 {
	var nr [8]byte
	binary.LittleEndian.PutUint64(nr[:], blk)
	c := crc32c(seed, nr[:])
	c = crc32c(c, b[:xattrBlockChecksum])
	c = crc32c(c, []byte{0, 0, 0, 0})
	return crc32c(c, b[xattrBlockChecksum+4:])
}

// setXattrRefcount rewrites a block's h_refcount (and its checksum): what
// copy on write does to the block it leaves.
func setXattrRefcount(b []byte, refcount uint32, blk uint64, csum bool, seed uint32) {
	binary.LittleEndian.PutUint32(b[4:], refcount)
	if csum {
		binary.LittleEndian.PutUint32(b[xattrBlockChecksum:], xattrBlockCsum(b, blk, seed))
	}
}

// xattrEntryHash is ext4_xattr_hash_entry: the name's bytes rotated in
// 5 bits at a time, then the value's little-endian 32-bit words (padded
// with zeros) 16 bits at a time.
func xattrEntryHash(x xattr) uint32 {
	var h uint32
	for i := 0; i < len(x.name); i++ {
		h = h<<5 ^ h>>27 ^ uint32(x.name[i])
	}
	var w [4]byte
	for i := 0; i < len(x.value); i += 4 {
		clear(w[:])
		copy(w[:], x.value[i:])
		h = h<<16 ^ h>>16 ^ binary.LittleEndian.Uint32(w[:])
	}
	return h
}

// aclFromXattr converts a POSIX ACL in the kernel's xattr form (version 2,
// 8-byte entries: tag, perm, id) into ext4's on-disk form (version 1;
// entries for the owner, group, mask and other carry no id). It checks
// the ACL the way the kernel does before storing it.
func aclFromXattr(b []byte) ([]byte, error) {
	le := binary.LittleEndian
	if len(b) < 4 || (len(b)-4)%8 != 0 || le.Uint32(b) != 2 {
		return nil, fmt.Errorf("not a POSIX ACL (version 2 xattr form): %w", syscall.EINVAL)
	}
	out := le.AppendUint32(nil, 1)
	var seen uint16
	lastTag, lastID := uint16(0), uint32(0)
	for p := b[4:]; len(p) > 0; p = p[8:] {
		tag, perm, id := le.Uint16(p), le.Uint16(p[2:]), le.Uint32(p[4:])
		if perm&^7 != 0 {
			return nil, fmt.Errorf("ACL permission %#o: %w", perm, syscall.EINVAL)
		}
		// The order the kernel requires: owner, named users by id, group,
		// named groups by id, mask, other; each id and each single entry
		// once.
		if tag < lastTag || tag == lastTag && (tag != aclUser && tag != aclGroup || id <= lastID) {
			return nil, fmt.Errorf("ACL entries out of order or repeated (tag %#x): %w", tag, syscall.EINVAL)
		}
		switch tag {
		case aclUserObj, aclGroupObj, aclMask, aclOther:
			out = le.AppendUint16(out, tag)
			out = le.AppendUint16(out, perm)
		case aclUser, aclGroup:
			out = le.AppendUint16(out, tag)
			out = le.AppendUint16(out, perm)
			out = le.AppendUint32(out, id)
		default:
			return nil, fmt.Errorf("ACL tag %#x: %w", tag, syscall.EINVAL)
		}
		lastTag, lastID = tag, id
		seen |= tag
	}
	need := uint16(aclUserObj | aclGroupObj | aclOther)
	if len(b) > 4 && seen&need != need {
		return nil, fmt.Errorf("ACL lacks an owner, group or other entry: %w", syscall.EINVAL)
	}
	if seen&(aclUser|aclGroup) != 0 && seen&aclMask == 0 {
		return nil, fmt.Errorf("ACL with named entries lacks a mask: %w", syscall.EINVAL)
	}
	return out, nil
}

// More POSIX ACL tags (aclUser and aclGroup are in xattr.go).
const (
	aclUserObj  = 0x01
	aclGroupObj = 0x04
	aclMask     = 0x10
	aclOther    = 0x20
)

// aclModeBits returns the permission bits (0777) an access ACL in xattr
// form implies (owner from the owner entry, group from the mask if any,
// else the group entry, other from other), and whether the ACL says no
// more than those bits (then the kernel stores no ACL at all, only the
// mode).
func aclModeBits(b []byte) (perm uint32, equiv bool, err error) {
	le := binary.LittleEndian
	if len(b) < 4 || (len(b)-4)%8 != 0 || le.Uint32(b) != 2 {
		return 0, false, fmt.Errorf("not a POSIX ACL (version 2 xattr form): %w", syscall.EINVAL)
	}
	var u, g, m, o uint32
	hasMask, named := false, false
	for p := b[4:]; len(p) > 0; p = p[8:] {
		perm := uint32(le.Uint16(p[2:]) & 7)
		switch le.Uint16(p) {
		case aclUserObj:
			u = perm
		case aclGroupObj:
			g = perm
		case aclMask:
			m, hasMask = perm, true
		case aclOther:
			o = perm
		default:
			named = true
		}
	}
	if hasMask {
		g = m
	}
	return u<<6 | g<<3 | o, !hasMask && !named, nil
}

// changeXattr is SetXattr (remove false) and RemoveXattr (remove true):
// the inode's attributes are read, edited as a list, laid out again
// (inode first, then the block) and written. The block is reused in place
// when only this inode refers to it, copied when it is shared, allocated
// when there was none and freed when nothing is left in it. Nothing is
// changed when the edit fails (ENOSPC included).
func (w *wfs) changeXattr(ino uint64, name string, value []byte, flags fsdrivers.XattrFlags, remove bool) (err error) {
	if err := w.lock(); err != nil {
		return err
	}
	defer func() { err = w.done(err) }()
	i, err := w.liveInode(ino)
	if err != nil {
		return err
	}
	all, err := w.xattrList(i) // inlinew.go
	if err != nil {
		return err
	}
	if !remove && (name == "system.posix_acl_access" || name == "system.posix_acl_default") {
		if value, remove, err = w.aclSet(i, name, value); err != nil {
			return fmt.Errorf("ext4: inode %d: %w", ino, err)
		}
		if remove && !slices.ContainsFunc(all, func(x xattr) bool {
			idx, _, _ := xattrParse(name)
			return x.index == idx
		}) {
			w.touch(i, false)
			return w.store(i) // the mode says it all and there was no ACL
		}
	}
	list, err := editXattrs(all, name, value, flags, remove)
	if err != nil {
		return fmt.Errorf("ext4: inode %d: %w", ino, err)
	}
	if err := w.rewriteXattrs(i, list); err != nil {
		return err
	}
	w.touch(i, false)
	return w.store(i)
}

// storeXattrBlock makes i's external block hold list (none when empty).
func (w *wfs) storeXattrBlock(i *winode, list []xattr) error {
	old := i.fileACL()
	if len(list) == 0 {
		return w.releaseXattrBlock(i)
	}
	bs := int(w.v.blockSize)
	if old != 0 {
		if old >= w.v.sb.blocksCount {
			return corruptf("inode %d: xattr block %d beyond the filesystem", i.num, old)
		}
		cur, err := w.block(old)
		if err != nil {
			return err
		}
		if le.Uint32(cur[4:]) <= 1 {
			b, err := encodeXattrBlock(list, bs, 1, old, w.v.metaCsum, w.v.csumSeed)
			if err != nil {
				return err
			}
			copy(w.fresh(old), b)
			return nil
		}
	}
	// A new block: none yet, or the old one is shared (copy on write).
	goal := w.v.groupFirstBlock((i.num - 1) / w.v.sb.inodesPerGroup)
	blk, _, err := w.allocBlocks(goal, 1)
	if err != nil {
		return fmt.Errorf("ext4: inode %d: xattr block: %w", i.num, err)
	}
	b, err := encodeXattrBlock(list, bs, 1, blk, w.v.metaCsum, w.v.csumSeed)
	if err != nil {
		w.freeRun(blk, 1)
		return err
	}
	if err := w.releaseXattrBlock(i); err != nil {
		return err
	}
	copy(w.fresh(blk), b)
	i.setFileACL(blk)
	w.addBlocks(i, 1)
	return nil
}

// aclSet does what the kernel's ext4_set_acl does before storing an ACL:
// an access ACL sets the mode's permission bits and is not stored when the
// mode says as much (remove is then true); a default ACL is only for
// directories; an ACL with no entries removes it.
func (w *wfs) aclSet(i *winode, name string, value []byte) ([]byte, bool, error) {
	if len(value) == 4 && binary.LittleEndian.Uint32(value) == 2 {
		return nil, true, nil
	}
	if name == "system.posix_acl_default" {
		if !i.isDir() {
			return nil, false, fmt.Errorf("default ACL on a non-directory: %w", syscall.EACCES)
		}
		return value, false, nil
	}
	if _, err := aclFromXattr(value); err != nil {
		return nil, false, err
	}
	perm, equiv, err := aclModeBits(value)
	if err != nil {
		return nil, false, err
	}
	i.setMode(i.mode()&^0o777 | uint16(perm))
	return value, equiv, nil
}
