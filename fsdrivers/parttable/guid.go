package parttable

import (
	"encoding/binary"
	"fmt"
	"io"
)

// guidString formats a 16-byte on-disk GUID in its canonical upper-case
// form. GPT stores the first three fields little-endian and the last two
// as plain bytes ("mixed-endian").
func guidString(b []byte) string {
	return fmt.Sprintf("%08X-%04X-%04X-%02X%02X-%02X%02X%02X%02X%02X%02X",
		binary.LittleEndian.Uint32(b[0:4]),
		binary.LittleEndian.Uint16(b[4:6]),
		binary.LittleEndian.Uint16(b[6:8]),
		b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15])
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// randomGUID fills b with a version-4 (random) GUID in on-disk byte order.
func randomGUID(rand io.Reader, b []byte) error {
	if _, err := io.ReadFull(rand, b[:16]); err != nil {
		return fmt.Errorf("parttable: random GUID: %w", err)
	}
	// The version lives in the high nibble of the third field, which is
	// stored little-endian, so it is byte 7 on disk; the variant is byte 8.
	b[7] = b[7]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return nil
}
