package fat

import (
	"encoding/binary"
	"fmt"

	"github.com/dimg-project/dimg/fsdrivers"
)

// SetVolumeID gives the FAT filesystem on dev a new volume serial (what
// blkid shows as its UUID, "ABCD-1234"), in the boot sector and, on
// FAT32, in the backup boot sector. It returns the old and new IDs in
// blkid's form. A boot sector without a serial (no extended BPB) is
// refused.
func SetVolumeID(dev fsdrivers.ReadWriterAt, size int64, id uint32) (old, new string, err error) {
	g, err := readBootSector(dev, size)
	if err != nil {
		return "", "", err
	}
	if g.serial == nil {
		return "", "", fmt.Errorf("fat: the boot sector has no volume serial (no extended BPB): %w", fsdrivers.ErrReadOnly)
	}
	old = g.uuid()
	bs := make([]byte, 512)
	if _, err := dev.ReadAt(bs, 0); err != nil {
		return "", "", fmt.Errorf("fat: read boot sector: %w", err)
	}
	ext := 36 // the extended BPB of FAT12/16
	if g.bits == 32 {
		ext = 64
	}
	serialOff := ext + 3
	binary.LittleEndian.PutUint32(bs[serialOff:], id)
	secs := []int64{0}
	if g.bits == 32 {
		if bk := int64(binary.LittleEndian.Uint16(bs[50:])); bk != 0 && bk != 0xFFFF {
			secs = append(secs, bk)
		}
	}
	ss := int64(binary.LittleEndian.Uint16(bs[11:]))
	for _, s := range secs {
		b := make([]byte, 512)
		if _, err := dev.ReadAt(b, s*ss); err != nil {
			return "", "", fmt.Errorf("fat: read boot sector copy at sector %d: %w", s, err)
		}
		if s != 0 && (b[510] != 0x55 || b[511] != 0xAA) {
			continue // no backup there
		}
		binary.LittleEndian.PutUint32(b[serialOff:], id)
		if _, err := dev.WriteAt(b[serialOff:serialOff+4], s*ss+int64(serialOff)); err != nil {
			return "", "", fmt.Errorf("fat: write volume serial at sector %d: %w", s, err)
		}
	}
	n := (&geometry{serial: bs[serialOff : serialOff+4]}).uuid()
	return old, n, nil
}
