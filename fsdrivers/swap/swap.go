package swap

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/dimg-project/dimg/fsdrivers"
)

// Header layout of version 1 (kernel include/linux/swap.h, swap_header
// info part), relative to the start of the first page.
const (
	versionOff = 1024
	uuidOff    = 1036
	labelOff   = 1052
	labelLen   = 16
	magicLen   = 10
)

// Driver recognises Linux swap. The zero value is ready to use.
type Driver struct{}

// Name implements fsdrivers.Driver.
func (Driver) Name() string { return "swap" }

// Open implements fsdrivers.Driver.
func (Driver) Open(r io.ReaderAt, size int64) (fsdrivers.Volume, error) {
	for ps := int64(4096); ps <= 65536; ps *= 2 {
		if ps > size {
			break
		}
		magic := make([]byte, magicLen)
		if err := readFull(r, magic, ps-magicLen); err != nil {
			return nil, fmt.Errorf("swap: read signature at %d: %w", ps-magicLen, err)
		}
		switch string(magic) {
		case "SWAPSPACE2":
			return openV1(r, ps)
		case "SWAP-SPACE":
			// Version 0 has no UUID or label: its page is a bitmap.
			return &Volume{pageSize: ps, version: 0}, nil
		}
	}
	return nil, fmt.Errorf("swap: %w", fsdrivers.ErrNotFound)
}

func openV1(r io.ReaderAt, ps int64) (*Volume, error) {
	hdr := make([]byte, labelOff+labelLen)
	if err := readFull(r, hdr, 0); err != nil {
		return nil, fmt.Errorf("swap: read header: %w", err)
	}
	// The header is in the writer's byte order: version is 1 in one of them.
	v := binary.LittleEndian.Uint32(hdr[versionOff:])
	if v != 1 && binary.BigEndian.Uint32(hdr[versionOff:]) != 1 {
		return nil, fmt.Errorf("swap: %w: version %#x, want 1", fsdrivers.ErrCorrupt, v)
	}
	vol := &Volume{pageSize: ps, version: 1}
	if u := hdr[uuidOff : uuidOff+16]; !bytes.Equal(u, make([]byte, 16)) {
		vol.uuid = fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
	}
	label := hdr[labelOff : labelOff+labelLen]
	if i := bytes.IndexByte(label, 0); i >= 0 {
		label = label[:i]
	}
	vol.label = string(label)
	return vol, nil
}

// Volume is an opened swap area.
type Volume struct {
	pageSize    int64
	version     int
	uuid, label string
}

var _ fsdrivers.HeaderOnly = (*Volume)(nil)

// Type implements fsdrivers.Volume.
func (*Volume) Type() string { return "swap" }

// UUID is the swap UUID as blkid prints it (lower case), "" if unset.
func (v *Volume) UUID() string { return v.uuid }

// Label implements fsdrivers.Volume.
func (v *Volume) Label() string { return v.label }

// PageSize is the page size the area was made for.
func (v *Volume) PageSize() int64 { return v.pageSize }

// Version is the swap format version: 1, or 0 for "SWAP-SPACE".
func (v *Volume) Version() int { return v.version }

// HeaderRanges returns the first page only: the rest is swapped-out memory
// that no one will read again.
func (v *Volume) HeaderRanges() ([]fsdrivers.Range, error) {
	return []fsdrivers.Range{{Off: 0, Len: v.pageSize}}, nil
}

func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}
