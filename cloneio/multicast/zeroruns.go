package multicast

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/dimg-project/dimg/imagefmt"
)

// Zero runs (chunks that were in use and all zero: a device target must
// zero them, while chunks neither stored nor in a run were unused and are
// left alone) travel as table objects after the frames, through the same
// symbols, parity and repairs. A table object is:
//
//	0      4  magic "DZRT"
//	4      4  number of runs n
//	8      16·n runs: first chunk (8), chunk count (8)
//	8+16n  4  CRC32C of the bytes before it
//
// big-endian, runs in increasing order. A table is at most as long as the
// largest frame, so the receiver's bounds hold for it too.

var tableMagic = [4]byte{'D', 'Z', 'R', 'T'}

const tableOverhead = 12

func runsPerTable(chunkSize int) int { return (maxFrameLen(chunkSize) - tableOverhead) / 16 }

// zeroRunTables encodes runs into table objects.
func zeroRunTables(runs []imagefmt.ZeroRun, chunkSize int) [][]byte {
	per := runsPerTable(chunkSize)
	var out [][]byte
	for len(runs) > 0 {
		n := min(len(runs), per)
		b := make([]byte, tableOverhead+16*n)
		copy(b, tableMagic[:])
		binary.BigEndian.PutUint32(b[4:], uint32(n))
		for i, r := range runs[:n] {
			binary.BigEndian.PutUint64(b[8+16*i:], uint64(r.Start))
			binary.BigEndian.PutUint64(b[16+16*i:], uint64(r.Count))
		}
		binary.BigEndian.PutUint32(b[8+16*n:], crc32.Checksum(b[:8+16*n], castagnoli))
		out = append(out, b)
		runs = runs[n:]
	}
	return out
}

// parseZeroRunTable decodes and checks one table.
func parseZeroRunTable(b []byte, numChunks int64) ([]imagefmt.ZeroRun, error) {
	if len(b) < tableOverhead || [4]byte(b[0:4]) != tableMagic {
		return nil, fmt.Errorf("%w: not a zero-run table", imagefmt.ErrCorrupt)
	}
	n := int(binary.BigEndian.Uint32(b[4:]))
	if n < 1 || len(b) != tableOverhead+16*n {
		return nil, fmt.Errorf("%w: zero-run table of %d bytes lists %d runs", imagefmt.ErrCorrupt, len(b), n)
	}
	if crc32.Checksum(b[:8+16*n], castagnoli) != binary.BigEndian.Uint32(b[8+16*n:]) {
		return nil, fmt.Errorf("%w: zero-run table checksum", imagefmt.ErrChecksum)
	}
	runs := make([]imagefmt.ZeroRun, n)
	end := int64(0)
	for i := range runs {
		s, c := binary.BigEndian.Uint64(b[8+16*i:]), binary.BigEndian.Uint64(b[16+16*i:])
		if c == 0 || s < uint64(end) || s >= uint64(numChunks) || c > uint64(numChunks)-s {
			return nil, fmt.Errorf("%w: zero run %d (%d+%d) out of order or range", imagefmt.ErrCorrupt, i, s, c)
		}
		runs[i] = imagefmt.ZeroRun{Start: int64(s), Count: int64(c)}
		end = int64(s + c)
	}
	return runs, nil
}
