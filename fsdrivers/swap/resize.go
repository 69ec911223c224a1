package swap

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Header fields of version 1 after the version word (kernel
// include/linux/swap.h: version, last_page, nr_badpages, uuid, label).
const (
	lastPageOff = 1028
	badPagesOff = 1032
	badListOff  = 1536 // badpages[], after the label and padding
)

// MinSize is the smallest area Resize makes: mkswap refuses fewer than 10
// pages.
func MinSize(pageSize int64) int64 { return 10 * pageSize }

// Resize remakes the swap area in rw (at least newSize bytes) as
// `mkswap -U UUID -L LABEL` would for newSize bytes: the same page size,
// UUID and label, last_page set to the new end and the bad-page list
// cleared (it named pages of the old size). Swap holds nothing to keep, so
// this is the whole of shrinking it. A version 0 area is refused.
func Resize(rw interface {
	io.ReaderAt
	io.WriterAt
}, size, newSize int64) error {
	v, err := Driver{}.Open(rw, size)
	if err != nil {
		return err
	}
	sv := v.(*Volume)
	if sv.version != 1 {
		return fmt.Errorf("swap: resize: a version 0 area (\"SWAP-SPACE\") has no UUID to keep; recreate it with mkswap")
	}
	pages := newSize / sv.pageSize
	if pages < 10 {
		return fmt.Errorf("swap: resize: %d bytes is under the minimum of 10 pages of %d bytes", newSize, sv.pageSize)
	}
	hdr := make([]byte, sv.pageSize)
	if err := readFull(rw, hdr, 0); err != nil {
		return fmt.Errorf("swap: resize: read header: %w", err)
	}
	order := binary.ByteOrder(binary.LittleEndian)
	if binary.LittleEndian.Uint32(hdr[versionOff:]) != 1 {
		order = binary.BigEndian
	}
	order.PutUint32(hdr[lastPageOff:], uint32(min(pages-1, 0xffffffff)))
	order.PutUint32(hdr[badPagesOff:], 0)
	clear(hdr[badListOff : sv.pageSize-magicLen])
	if _, err := rw.WriteAt(hdr, 0); err != nil {
		return fmt.Errorf("swap: resize: write header: %w", err)
	}
	return nil
}
