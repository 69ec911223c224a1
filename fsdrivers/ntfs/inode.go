package ntfs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"time"
	"unicode/utf16"
)

// File attribute flags ($STANDARD_INFORMATION and the $FILE_NAME copy).
const (
	faReadOnly  = 0x0001
	faSystem    = 0x0004
	faReparse   = 0x0400
	faDirectory = 0x10000000 // $FILE_NAME only: the file is a directory
)

// Reparse tags.
const (
	tagMountPoint = 0xa0000003
	tagSymlink    = 0xa000000c
	tagLxSymlink  = 0xa000001d
	tagAFUnix     = 0x80000023
	tagLxFIFO     = 0x80000024
	tagLxChr      = 0x80000025
	tagLxBlk      = 0x80000026

	symlinkRelative = 0x1

	// maxReparseBytes is the largest reparse buffer Windows allows.
	maxReparseBytes = 16 << 10
	// maxTargetUnits bounds an Interix symlink target (PATH_MAX).
	maxTargetUnits = 4096
)

type fileKind int

const (
	kindRegular fileKind = iota
	kindDir
	kindSymlink
	kindFIFO
	kindSocket
	kindChar
	kindBlock
)

// inode is a file as the file tree presents it.
type inode struct {
	num    uint64
	seq    uint16
	attrs  []attribute
	kind   fileKind
	target string // symlink target, slash-separated
	rdev   uint64
	size   int64
	blocks int64
	nlink  uint32
	fattrs uint32 // $STANDARD_INFORMATION file attributes

	create, modify, change, access time.Time
}

// inode loads record n as a file.
func (v *Volume) inode(n uint64) (*inode, error) {
	rec, err := v.record(n)
	if err != nil {
		return nil, err
	}
	if rec.baseRef != 0 {
		return nil, fmt.Errorf("ntfs: %w: record %d is an extension of record %d, not a file", errCorrupt, n, refNum(rec.baseRef))
	}
	attrs, err := v.allAttrs(rec)
	if err != nil {
		return nil, err
	}
	ino := &inode{num: n, seq: rec.seq, attrs: attrs}
	if rec.flags&recFlagDir != 0 {
		ino.kind = kindDir
	}
	sis := pick(attrs, atStandardInfo, "")
	if len(sis) != 1 || !sis[0].resident || len(sis[0].value) < 48 {
		return nil, fmt.Errorf("ntfs: %w: record %d has no usable $STANDARD_INFORMATION", errCorrupt, n)
	}
	si := sis[0].value
	le := binary.LittleEndian
	ino.create = ntfsTime(le.Uint64(si[0:]))
	ino.modify = ntfsTime(le.Uint64(si[8:]))
	ino.change = ntfsTime(le.Uint64(si[16:]))
	ino.access = ntfsTime(le.Uint64(si[24:]))
	ino.fattrs = le.Uint32(si[32:])
	for _, a := range pick(attrs, atFileName, "") {
		if a.resident && len(a.value) >= 66 && a.value[65] != nsDOS {
			ino.nlink++
		}
	}
	if ino.nlink == 0 || ino.kind == kindDir {
		// ntfs-3g reports 1 for directories.
		ino.nlink = 1
	}

	if rp := pick(attrs, atReparsePoint, ""); len(rp) > 0 {
		if err := v.reparse(ino, rp); err != nil {
			return nil, err
		}
	}
	data := pick(attrs, atData, "")
	switch ino.kind {
	case kindDir:
		if ia := pick(attrs, atIndexAlloc, "$I30"); len(ia) > 0 {
			ino.size = firstExtent(ia).dataSize
		} else if ir := pick(attrs, atIndexRoot, "$I30"); len(ir) > 0 {
			ino.size = int64(len(ir[0].value))
		}
	case kindRegular:
		if len(data) == 0 {
			break
		}
		first := firstExtent(data)
		ino.size = first.dataSize
		if first.resident {
			ino.blocks = (first.dataSize + 7) &^ 7
		} else {
			ino.blocks = first.compSize
		}
		ino.blocks = (ino.blocks + 511) / 512
		if ino.fattrs&faSystem != 0 {
			if err := v.interix(ino, data); err != nil {
				return nil, err
			}
		}
	}
	return ino, nil
}

// firstExtent is the extent at VCN 0, which carries the stream's sizes.
func firstExtent(extents []attribute) attribute {
	for _, e := range extents {
		if e.resident || e.startVCN == 0 {
			return e
		}
	}
	return extents[0]
}

// reparse interprets a reparse point: symlinks and junctions become
// symlinks, WSL special files their kinds; other tags (deduplication,
// cloud files, ...) leave the file as it is.
func (v *Volume) reparse(ino *inode, extents []attribute) error {
	s, err := v.newStream(extents, fmt.Sprintf("record %d $REPARSE_POINT", ino.num))
	if err != nil {
		return fmt.Errorf("ntfs: %w: %w", errCorrupt, err)
	}
	if s.dataSize < 8 || s.dataSize > maxReparseBytes {
		return fmt.Errorf("ntfs: %w: record %d: reparse point of %d bytes", errCorrupt, ino.num, s.dataSize)
	}
	b := make([]byte, s.dataSize)
	if _, err := s.ReadAt(b, 0); err != nil {
		return err
	}
	le := binary.LittleEndian
	tag := le.Uint32(b)
	data := b[8:]
	if n := int(le.Uint16(b[4:])); n < len(data) {
		data = data[:n]
	}
	switch tag {
	case tagSymlink, tagMountPoint:
		hdr := 8
		if tag == tagSymlink {
			hdr = 12
		}
		if len(data) < hdr {
			return fmt.Errorf("ntfs: %w: record %d: short reparse data", errCorrupt, ino.num)
		}
		field := func(o int) (string, bool) {
			off, n := int(le.Uint16(data[o:])), int(le.Uint16(data[o+2:]))
			if hdr+off+n > len(data) || n%2 != 0 {
				return "", false
			}
			return utf16le(data[hdr+off : hdr+off+n]), true
		}
		sub, ok1 := field(0)
		print, ok2 := field(4)
		if !ok1 || !ok2 {
			return fmt.Errorf("ntfs: %w: record %d: reparse names overrun the buffer", errCorrupt, ino.num)
		}
		t := print
		if t == "" {
			t = sub
		}
		relative := tag == tagSymlink && le.Uint32(data[8:])&symlinkRelative != 0
		ino.kind, ino.target = kindSymlink, windowsTarget(t, relative)
		ino.size = int64(len(ino.target))
	case tagLxSymlink:
		if len(data) < 4 {
			return fmt.Errorf("ntfs: %w: record %d: short WSL symlink", errCorrupt, ino.num)
		}
		ino.kind, ino.target = kindSymlink, string(data[4:])
		ino.size = int64(len(ino.target))
	case tagAFUnix:
		ino.kind = kindSocket
	case tagLxFIFO:
		ino.kind = kindFIFO
	case tagLxChr:
		ino.kind = kindChar
	case tagLxBlk:
		ino.kind = kindBlock
	}
	return nil
}

// windowsTarget turns a Windows link target into a path for this file
// tree: backslashes become slashes; an absolute target loses its "\??\"
// prefix and drive letter and is taken as relative to this volume's root
// (the only volume we can see).
func windowsTarget(t string, relative bool) string {
	t = strings.ReplaceAll(t, `\`, "/")
	if relative {
		return t
	}
	t = strings.TrimPrefix(t, "/??/")
	if len(t) >= 2 && t[1] == ':' {
		t = t[2:]
	}
	if !strings.HasPrefix(t, "/") {
		t = "/" + t
	}
	return t
}

var (
	intxSymlink = []byte("IntxLNK\x01")
	intxChr     = []byte("IntxCHR\x00")
	intxBlk     = []byte("IntxBLK\x00")
)

// interix recognises the special files ntfs-3g writes as SYSTEM-flagged
// regular files (see doc.go), exactly when ntfs-3g does.
func (v *Volume) interix(ino *inode, data []attribute) error {
	switch {
	case ino.size == 0:
		ino.kind = kindFIFO
		return nil
	case ino.size == 1:
		ino.kind = kindSocket
		return nil
	case ino.size < 8 || ino.size > 8+2*maxTargetUnits:
		return nil
	}
	s, err := v.newStream(data, fmt.Sprintf("record %d $DATA", ino.num))
	if err != nil {
		return fmt.Errorf("ntfs: %w: %w", errCorrupt, err)
	}
	b := make([]byte, ino.size)
	if _, err := s.ReadAt(b, 0); err != nil {
		return err
	}
	le := binary.LittleEndian
	switch {
	case bytes.HasPrefix(b, intxSymlink) && len(b)%2 == 0:
		u := make([]uint16, (len(b)-8)/2)
		for i := range u {
			u[i] = le.Uint16(b[8+2*i:])
		}
		ino.kind, ino.target = kindSymlink, string(utf16.Decode(u))
		ino.size = int64(len(ino.target))
	case (bytes.HasPrefix(b, intxChr) || bytes.HasPrefix(b, intxBlk)) && len(b) == 24:
		ino.kind = kindChar
		if b[4] == 'B' {
			ino.kind = kindBlock
		}
		ino.rdev = mkdev(le.Uint64(b[8:]), le.Uint64(b[16:]))
		ino.size = 0
	}
	return nil
}

// mkdev encodes a device number the way Linux's makedev does.
func mkdev(major, minor uint64) uint64 {
	return minor&0xff | (major&0xfff)<<8 | (minor&^0xff)<<12 | (major&^0xfff)<<32
}

// ntfsEpochDelta is 1601-01-01 to 1970-01-01 in 100 ns units.
const ntfsEpochDelta = 116444736000000000

// ntfsTime converts an NTFS timestamp (100 ns units since 1601).
func ntfsTime(t uint64) time.Time {
	d := int64(t - ntfsEpochDelta)
	if t < ntfsEpochDelta {
		d = -int64(ntfsEpochDelta - t)
	}
	return time.Unix(d/1e7, d%1e7*100).UTC()
}
