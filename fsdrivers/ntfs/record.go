package ntfs

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// MFT record header fields.
const (
	recFlagInUse = 0x0001
	recFlagDir   = 0x0002

	fixupStride = 512 // the update sequence protects every 512 bytes

	// Record numbers of the metafiles we read.
	recMFT       = 0
	recVolume    = 3
	recRoot      = 5
	recBitmap    = 6
	recUpCase    = 10
	firstUserRec = 16 // records below are metafiles, hidden from listings
)

// errNotInUse marks a record that is free: a reference to it is stale.
var errNotInUse = errors.New("record not in use")

// applyFixups checks and undoes the update sequence array of a multi-sector
// structure ("FILE" record or "INDX" block) in place.
func applyFixups(b []byte, magic string) error {
	if len(b) < 8 || string(b[:4]) != magic {
		return fmt.Errorf("no %q signature", magic)
	}
	le := binary.LittleEndian
	usaOff := int(le.Uint16(b[4:]))
	usaCount := int(le.Uint16(b[6:]))
	if usaCount < 2 || usaCount-1 != len(b)/fixupStride || usaOff+2*usaCount > len(b) || usaOff < 8 {
		return fmt.Errorf("update sequence array (offset %d, %d entries) does not fit %d bytes", usaOff, usaCount, len(b))
	}
	usn := b[usaOff : usaOff+2]
	for i := 1; i < usaCount; i++ {
		end := i*fixupStride - 2
		if b[end] != usn[0] || b[end+1] != usn[1] {
			return fmt.Errorf("torn write: sector %d of the structure fails its update sequence check", i-1)
		}
		copy(b[end:end+2], b[usaOff+2*i:usaOff+2*i+2])
	}
	return nil
}

// record is one fixed-up MFT record.
type record struct {
	num     uint64
	seq     uint16
	flags   uint16
	baseRef uint64 // 0 for a base record, else the base record's reference
	attrs   []attribute
}

// parseRecord validates a raw record (fixups not yet applied) and decodes
// its attributes.
func parseRecord(b []byte, num uint64) (*record, error) {
	if err := applyFixups(b, "FILE"); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	r := &record{
		num:     num,
		seq:     le.Uint16(b[16:]),
		flags:   le.Uint16(b[22:]),
		baseRef: le.Uint64(b[32:]),
	}
	if r.flags&recFlagInUse == 0 {
		return nil, errNotInUse
	}
	attrOff := int(le.Uint16(b[20:]))
	used := int(le.Uint32(b[24:]))
	if used > len(b) || attrOff < 24 || attrOff >= used {
		return nil, fmt.Errorf("attributes at %d, %d bytes used of %d", attrOff, used, len(b))
	}
	var err error
	if r.attrs, err = parseAttributes(b[:used], attrOff, num); err != nil {
		return nil, err
	}
	return r, nil
}

// refNum is the record number part of a file reference.
func refNum(ref uint64) uint64 { return ref & (1<<48 - 1) }

// refSeq is the sequence number part of a file reference.
func refSeq(ref uint64) uint16 { return uint16(ref >> 48) }
