package ntfs

import (
	"encoding/binary"
	"fmt"
)

// lznt1ChunkSize is the uncompressed size of one LZNT1 chunk.
const lznt1ChunkSize = 4096

// lznt1Decompress decompresses a compression unit (MS-XCA 2.5, "LZNT1")
// into dst, which is the whole unit and starts zeroed. Each chunk stands
// for 4096 bytes of output; a chunk that decompresses to less leaves the
// rest zero, and a zero header ends the unit early (the rest is zero too).
func lznt1Decompress(dst, src []byte) error {
	out := 0
	for in := 0; in+2 <= len(src) && out < len(dst); out += lznt1ChunkSize {
		h := binary.LittleEndian.Uint16(src[in:])
		if h == 0 {
			return nil
		}
		size := int(h&0x0fff) + 1
		in += 2
		if in+size > len(src) {
			return fmt.Errorf("LZNT1 chunk of %d bytes at %d overruns the unit's %d bytes", size, in-2, len(src))
		}
		chunk := src[in : in+size]
		in += size
		end := min(out+lznt1ChunkSize, len(dst))
		if h&0x8000 == 0 {
			copy(dst[out:end], chunk)
			continue
		}
		if err := lznt1Chunk(dst[out:end], chunk); err != nil {
			return fmt.Errorf("LZNT1 chunk at %d: %w", in-size-2, err)
		}
	}
	return nil
}

// lznt1Chunk decompresses one compressed chunk into dst (at most 4096
// bytes). Groups of eight items follow a flag byte; a set bit is a 16-bit
// back reference whose split between offset and length bits depends on how
// much of the chunk has been produced so far.
func lznt1Chunk(dst, src []byte) error {
	o := 0
	for i := 0; i < len(src); {
		flags := src[i]
		i++
		for bit := 0; bit < 8 && i < len(src); bit++ {
			if flags&(1<<bit) == 0 {
				if o >= len(dst) {
					return fmt.Errorf("literal past the chunk's end")
				}
				dst[o] = src[i]
				o++
				i++
				continue
			}
			if i+2 > len(src) {
				return fmt.Errorf("truncated back reference")
			}
			tok := int(binary.LittleEndian.Uint16(src[i:]))
			i += 2
			if o == 0 {
				return fmt.Errorf("back reference at the chunk's start")
			}
			lengthBits := 12
			for p := o - 1; p >= 0x10; p >>= 1 {
				lengthBits--
			}
			length := tok&(1<<lengthBits-1) + 3
			disp := tok>>lengthBits + 1
			if disp > o {
				return fmt.Errorf("back reference %d bytes before position %d", disp, o)
			}
			if o+length > len(dst) {
				return fmt.Errorf("back reference of %d bytes past the chunk's end", length)
			}
			// Byte by byte: the source may overlap the bytes being written.
			for k := 0; k < length; k++ {
				dst[o] = dst[o-disp]
				o++
			}
		}
	}
	return nil
}
