package ext4

import (
	"encoding/binary"
	"fmt"
)

// Xattr name indexes (e_name_index) and the prefixes the kernel lists them
// under. Indexes the kernel never lists (7 system.data, the inline data
// itself; 8 richacl; 9 encryption context) are left out on purpose.
var xattrPrefix = map[uint8]string{
	1: "user.",
	2: "system.posix_acl_access",
	3: "system.posix_acl_default",
	4: "trusted.",
	6: "security.",
}

const (
	xattrIndexSystem   = 7
	xattrHdrSize       = 32 // external block header
	xattrEntrySize     = 16
	maxXattrValue      = 1 << 16 // XATTR_SIZE_MAX: the VFS cannot pass more
	xattrBlockChecksum = 0x10
)

// xattrLoc names an xattr area in errors (blk 0: inside the inode); it is
// formatted only when an error is built.
type xattrLoc struct {
	ino uint32
	blk uint64
}

func (l xattrLoc) String() string {
	if l.blk == 0 {
		return fmt.Sprintf("inode %d", l.ino)
	}
	return fmt.Sprintf("inode %d xattr block %d", l.ino, l.blk)
}

type xattr struct {
	index uint8
	name  string // suffix after the index's prefix
	value []byte
}

// parseXattrEntries decodes the entry table in entries. Value offsets are
// relative to values (the first entry for in-inode xattrs, the block start
// for an external block).
func (v *Volume) parseXattrEntries(entries, values []byte, where xattrLoc, out []xattr) ([]xattr, error) {
	le := binary.LittleEndian
	for pos := 0; pos+4 <= len(entries) && le.Uint32(entries[pos:]) != 0; {
		if pos+xattrEntrySize > len(entries) {
			return nil, corruptf("%s: truncated xattr entry", where)
		}
		e := entries[pos:]
		nameLen := int(e[0])
		idx := e[1]
		voff := int(le.Uint16(e[2:]))
		vinum := le.Uint32(e[4:])
		vsize := le.Uint32(e[8:])
		if pos+xattrEntrySize+nameLen > len(entries) {
			return nil, corruptf("%s: xattr name runs past the end", where)
		}
		name := string(e[xattrEntrySize : xattrEntrySize+nameLen])
		if vsize > maxXattrValue {
			return nil, corruptf("%s: xattr %q value of %d bytes", where, name, vsize)
		}
		var val []byte
		if vinum != 0 {
			var err error
			if val, err = v.eaInodeValue(vinum, vsize); err != nil {
				return nil, fmt.Errorf("ext4: %s: xattr %q: %w", where, name, err)
			}
		} else {
			if voff+int(vsize) > len(values) {
				return nil, corruptf("%s: xattr %q value at %d+%d runs past the end", where, name, voff, vsize)
			}
			val = values[voff : voff+int(vsize)]
		}
		out = append(out, xattr{index: idx, name: name, value: val})
		pos += (xattrEntrySize + nameLen + 3) &^ 3
	}
	return out, nil
}

// eaInodeValue reads a value stored in its own inode (ea_inode feature).
func (v *Volume) eaInodeValue(n uint32, size uint32) ([]byte, error) {
	if v.sb.incompat&incompatEAInode == 0 {
		return nil, corruptf("value in inode %d without the ea_inode feature", n)
	}
	ino, err := v.readInode(n)
	if err != nil {
		return nil, err
	}
	if ino.flags&flagEAInode == 0 || ino.size != uint64(size) {
		return nil, corruptf("inode %d is not an xattr value inode of %d bytes", n, size)
	}
	val := make([]byte, size)
	if _, err := v.readData(ino, val, 0, run{}); err != nil {
		return nil, err
	}
	return val, nil
}

// allXattrs returns the in-inode and external-block attributes of ino.
func (v *Volume) allXattrs(ino *inode) ([]xattr, error) {
	var out []xattr
	var err error
	if ino.xattrs != nil {
		out, err = v.parseXattrEntries(ino.xattrs, ino.xattrs, xattrLoc{ino: ino.num}, out)
		if err != nil {
			return nil, err
		}
	}
	if ino.fileACL != 0 {
		b, err := v.xattrBlock(ino.fileACL)
		if err != nil {
			return nil, fmt.Errorf("ext4: inode %d: %w", ino.num, err)
		}
		out, err = v.parseXattrEntries(b[xattrHdrSize:], b, xattrLoc{ino.num, ino.fileACL}, out)
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// xattrBlock reads and verifies an external xattr block.
func (v *Volume) xattrBlock(blk uint64) ([]byte, error) {
	b, err := v.readBlock(blk)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	if le.Uint32(b[0:]) != xattrMagic || le.Uint32(b[8:]) != 1 {
		return nil, corruptf("xattr block %d: bad header", blk)
	}
	if v.metaCsum {
		var nr [8]byte
		le.PutUint64(nr[:], blk)
		c := crc32c(v.csumSeed, nr[:])
		c = crc32c(c, b[:xattrBlockChecksum])
		c = crc32c(c, []byte{0, 0, 0, 0})
		c = crc32c(c, b[xattrBlockChecksum+4:])
		if stored := le.Uint32(b[xattrBlockChecksum:]); stored != c {
			return nil, corruptf("xattr block %d: checksum %#08x, computed %#08x", blk, stored, c)
		}
	}
	return b, nil
}

// inlineSystemData returns the value of the "system.data" attribute (the
// part of inline data beyond i_block). It lives in the inode only.
func (v *Volume) inlineSystemData(ino *inode) ([]byte, error) {
	if ino.xattrs == nil {
		return nil, nil
	}
	xs, err := v.parseXattrEntries(ino.xattrs, ino.xattrs, xattrLoc{ino: ino.num}, nil)
	if err != nil {
		return nil, err
	}
	for _, x := range xs {
		if x.index == xattrIndexSystem && x.name == "data" {
			return x.value, nil
		}
	}
	return nil, nil
}

// xattrMap returns the attributes as the kernel lists them: full names,
// POSIX ACLs converted from ext4's compact form to the xattr form.
func (v *Volume) xattrMap(ino *inode) (map[string][]byte, error) {
	xs, err := v.allXattrs(ino)
	if err != nil {
		return nil, err
	}
	m := make(map[string][]byte, len(xs))
	for _, x := range xs {
		prefix, ok := xattrPrefix[x.index]
		if !ok {
			continue
		}
		val := append([]byte(nil), x.value...)
		if x.index == 2 || x.index == 3 {
			if x.name != "" {
				continue
			}
			if val, err = aclToXattr(x.value); err != nil {
				return nil, fmt.Errorf("ext4: inode %d %s: %w", ino.num, prefix, err)
			}
		}
		m[prefix+x.name] = val
	}
	return m, nil
}

// POSIX ACL tags; entries for named users and groups carry an id.
const (
	aclUser  = 0x02
	aclGroup = 0x08
)

// aclToXattr converts ext4's on-disk ACL (version 1, short entries without
// ids) into the posix_acl_xattr form (version 2) getxattr(2) returns.
func aclToXattr(b []byte) ([]byte, error) {
	le := binary.LittleEndian
	if len(b) < 4 || le.Uint32(b) != 1 {
		return nil, corruptf("ACL header")
	}
	out := le.AppendUint32(nil, 2)
	for p := b[4:]; len(p) > 0; {
		if len(p) < 4 {
			return nil, corruptf("truncated ACL entry")
		}
		tag, perm := le.Uint16(p), le.Uint16(p[2:])
		id := uint32(0xFFFFFFFF)
		p = p[4:]
		if tag == aclUser || tag == aclGroup {
			if len(p) < 4 {
				return nil, corruptf("truncated ACL entry")
			}
			id = le.Uint32(p)
			p = p[4:]
		}
		out = le.AppendUint16(out, tag)
		out = le.AppendUint16(out, perm)
		out = le.AppendUint32(out, id)
	}
	return out, nil
}
