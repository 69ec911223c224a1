package fat

import (
	"fmt"

	"github.com/dimg-project/dimg/fsdrivers"
)

// usedPieceEntries is how many FAT entries UsedRanges reads at a time per
// FAT copy (1 MiB of FAT32), so the scan never holds a whole large FAT.
const usedPieceEntries = 1 << 18

// UsedRanges returns the bytes that hold data or metadata: the reserved
// region, every FAT copy, the FAT12/16 root directory, and every cluster
// whose entry is non-zero in any FAT copy — allocated, end-of-chain, bad or
// reserved marks alike. Taking the union of the copies means a copy of
// exactly these bytes gives fsck the same FATs and the same cluster
// contents to judge as the original, even when the copies disagree.
//
// The slack after the last cluster (sectors that do not fill a cluster) is
// not included: nothing addresses it.
func (v *Volume) UsedRanges() ([]fsdrivers.Range, error) {
	g := v.g
	out := []fsdrivers.Range{{Off: 0, Len: g.dataOffset}}
	add := func(off, n int64) {
		last := &out[len(out)-1]
		if last.Off+last.Len == off {
			last.Len += n
			return
		}
		out = append(out, fsdrivers.Range{Off: off, Len: n})
	}

	max := g.maxCluster()
	bufs := make([][]byte, g.numFATs)
	for c := uint32(0); c <= max; {
		// Pieces start at an even cluster so FAT12's 3-byte entry pairs
		// never straddle two pieces.
		end := min(uint64(c)+usedPieceEntries, uint64(max)+1)
		startByte, endByte := entryByte(g.bits, c), entryByte(g.bits, uint32(end-1))+entryLen(g.bits)
		for i := range bufs {
			if int64(cap(bufs[i])) < endByte-startByte {
				bufs[i] = make([]byte, endByte-startByte)
			}
			bufs[i] = bufs[i][:endByte-startByte]
			at := g.fatOffset + int64(i)*g.fatBytes + startByte
			if err := readFull(v.r, bufs[i], at); err != nil {
				return nil, fmt.Errorf("fat: read FAT %d at %d: %w", i, at, err)
			}
		}
		for ; uint64(c) < end; c++ {
			if c < 2 {
				continue // entries 0 and 1 hold the media byte and flags
			}
			rel := entryByte(g.bits, c) - startByte
			for _, b := range bufs {
				if decodeEntry(b, rel, c, g.bits) != 0 {
					add(g.clusterOffset(c), g.clusterSize)
					break
				}
			}
		}
	}
	return out, nil
}

// entryByte is the byte offset of cluster c's entry in a FAT.
func entryByte(bits int, c uint32) int64 {
	switch bits {
	case 12:
		return int64(c) + int64(c)/2
	case 16:
		return int64(c) * 2
	default:
		return int64(c) * 4
	}
}

// entryLen is how many bytes must be present from entryByte to decode.
func entryLen(bits int) int64 {
	if bits == 32 {
		return 4
	}
	return 2
}
