package ext4

import "hash/crc32"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c continues the kernel's raw crc32c (no pre or post inversion, which
// is how ext4 chains seeds: crc32c(seed, data)). Go's crc32.Update inverts on
// entry and exit, so undo both.
func crc32c(seed uint32, p []byte) uint32 {
	return ^crc32.Update(^seed, castagnoli, p)
}

// crc16 is the CRC-16/ARC (reflected polynomial 0xA001) the uninit_bg
// (gdt_csum) feature uses for group descriptors.
func crc16(crc uint16, p []byte) uint16 {
	for _, b := range p {
		crc ^= uint16(b)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xA001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}
