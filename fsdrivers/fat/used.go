package fat

import (
	"fmt"
	"io"

	"github.com/dimg-project/dimg/fsdrivers"
)

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

	err := eachFATEntry(v.r, g, func(c uint32, copies []uint32) error {
		for _, e := range copies {
			if e != 0 {
				add(g.clusterOffset(c), g.clusterSize)
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
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

// fatPieceEntries is how many entries of each FAT copy eachFATEntry reads
// at a time (1 MiB of FAT32), so a scan never holds a whole large FAT. It
// is even, so pieces start at even clusters and FAT12's 3-byte entry pairs
// never straddle two pieces.
const fatPieceEntries = 1 << 18

// eachFATEntry calls fn for every cluster 2..maxCluster in order with that
// cluster's entry in each FAT copy (copies[i] from FAT i; the slice is
// reused between calls). It is the one walk over all FAT copies, shared by
// UsedRanges and the writer's consistency scan; an error from fn stops it.
func eachFATEntry(r io.ReaderAt, g *geometry, fn func(c uint32, copies []uint32) error) error {
	max := g.maxCluster()
	bufs := make([][]byte, g.numFATs)
	copies := make([]uint32, g.numFATs)
	for c := uint32(0); c <= max; {
		end := min(uint64(c)+fatPieceEntries, uint64(max)+1)
		startByte, endByte := entryByte(g.bits, c), entryByte(g.bits, uint32(end-1))+entryLen(g.bits)
		for i := range bufs {
			if int64(cap(bufs[i])) < endByte-startByte {
				bufs[i] = make([]byte, endByte-startByte)
			}
			bufs[i] = bufs[i][:endByte-startByte]
			at := g.fatOffset + int64(i)*g.fatBytes + startByte
			if err := readFull(r, bufs[i], at); err != nil {
				return fmt.Errorf("fat: read FAT %d at %d: %w", i, at, err)
			}
		}
		for ; uint64(c) < end; c++ {
			if c < 2 {
				continue // entries 0 and 1 hold the media byte and flags
			}
			rel := entryByte(g.bits, c) - startByte
			for i, b := range bufs {
				copies[i] = decodeEntry(b, rel, c, g.bits)
			}
			if err := fn(c, copies); err != nil {
				return err
			}
		}
	}
	return nil
}
