package ntfs

import (
	"encoding/binary"
	"fmt"
	"unicode/utf16"
)

// Attribute types.
const (
	atStandardInfo  = 0x10
	atAttributeList = 0x20
	atFileName      = 0x30
	atVolumeName    = 0x60
	atData          = 0x80
	atIndexRoot     = 0x90
	atIndexAlloc    = 0xa0
	atReparsePoint  = 0xc0
	atEnd           = 0xffffffff

	attrFlagCompressed = 0x0001
	attrFlagEncrypted  = 0x4000
	attrFlagSparse     = 0x8000
)

// attribute is one decoded attribute header (and its resident value).
type attribute struct {
	typ      uint32
	name     string
	flags    uint16
	id       uint16
	resident bool
	value    []byte // resident value

	// Non-resident.
	startVCN, lastVCN int64
	runs              []run
	compUnit          uint8 // log2 of clusters per compression unit
	allocSize         int64
	dataSize          int64
	initSize          int64
	compSize          int64 // for compressed/sparse: bytes actually allocated
}

// parseAttributes walks the attribute headers of a record. Every length is
// checked against the record, so a hostile record cannot send us outside
// it or loop.
func parseAttributes(b []byte, off int, num uint64) ([]attribute, error) {
	le := binary.LittleEndian
	var attrs []attribute
	for off+8 <= len(b) {
		typ := le.Uint32(b[off:])
		if typ == atEnd {
			return attrs, nil
		}
		length := int(le.Uint32(b[off+4:]))
		if length < 24 || length%8 != 0 || off+length > len(b) {
			return nil, fmt.Errorf("attribute %#x at %d: length %d overruns the record", typ, off, length)
		}
		a, err := parseAttribute(b[off:off+length], typ)
		if err != nil {
			return nil, fmt.Errorf("attribute %#x at %d: %w", typ, off, err)
		}
		attrs = append(attrs, a)
		off += length
	}
	return nil, fmt.Errorf("attribute list of record %d has no end marker", num)
}

func parseAttribute(b []byte, typ uint32) (attribute, error) {
	le := binary.LittleEndian
	a := attribute{
		typ:      typ,
		resident: b[8] == 0,
		flags:    le.Uint16(b[12:]),
		id:       le.Uint16(b[14:]),
	}
	if nameLen := int(b[9]); nameLen > 0 {
		nameOff := int(le.Uint16(b[10:]))
		if nameOff+2*nameLen > len(b) {
			return a, fmt.Errorf("name overruns the attribute")
		}
		a.name = utf16le(b[nameOff : nameOff+2*nameLen])
	}
	if a.resident {
		vlen := int(le.Uint32(b[16:]))
		voff := int(le.Uint16(b[20:]))
		if voff+vlen > len(b) || voff > len(b) {
			return a, fmt.Errorf("resident value (%d bytes at %d) overruns the attribute", vlen, voff)
		}
		a.value = b[voff : voff+vlen]
		a.dataSize, a.initSize, a.allocSize = int64(vlen), int64(vlen), int64(vlen)
		return a, nil
	}
	if len(b) < 64 {
		return a, fmt.Errorf("non-resident header of %d bytes", len(b))
	}
	a.startVCN = int64(le.Uint64(b[16:]))
	a.lastVCN = int64(le.Uint64(b[24:]))
	runOff := int(le.Uint16(b[32:]))
	a.compUnit = uint8(le.Uint16(b[34:]))
	a.allocSize = int64(le.Uint64(b[40:]))
	a.dataSize = int64(le.Uint64(b[48:]))
	a.initSize = int64(le.Uint64(b[56:]))
	if a.flags&(attrFlagCompressed|attrFlagSparse) != 0 && len(b) >= 72 && runOff >= 72 {
		a.compSize = int64(le.Uint64(b[64:]))
	} else {
		a.compSize = a.allocSize
	}
	if a.startVCN < 0 || a.lastVCN < a.startVCN-1 || a.dataSize < 0 || a.initSize < 0 || a.allocSize < 0 {
		return a, fmt.Errorf("VCNs %d-%d, sizes %d/%d/%d out of range", a.startVCN, a.lastVCN, a.dataSize, a.initSize, a.allocSize)
	}
	if runOff < 64 || runOff > len(b) {
		return a, fmt.Errorf("runlist offset %d", runOff)
	}
	var err error
	if a.runs, err = decodeRuns(b[runOff:], a.startVCN, a.lastVCN); err != nil {
		return a, err
	}
	return a, nil
}

// utf16le decodes little-endian UTF-16 (lone surrogates become U+FFFD).
func utf16le(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}
