package ntfs

import (
	"encoding/binary"
	"fmt"
	"math/bits"

	"github.com/dimg-project/dimg/fsdrivers"
)

// bootSector holds what we use of the NTFS boot sector (BIOS parameter
// block and its NTFS extension).
type bootSector struct {
	sectorSize     int64
	clusterSize    int64
	totalSectors   int64 // the volume, not counting the backup boot sector
	mftLCN         int64
	mftMirrLCN     int64
	recordSize     int64
	indexBlockSize int64
	serial         uint64
}

const oemID = "NTFS    "

// parseBoot validates sector 0 of a partition of partSize bytes. A missing
// OEM id is fsdrivers.ErrNotFound; anything else wrong is ErrCorrupt.
func parseBoot(b []byte, partSize int64) (*bootSector, error) {
	if string(b[3:11]) != oemID {
		return nil, fmt.Errorf("ntfs: %w", fsdrivers.ErrNotFound)
	}
	le := binary.LittleEndian
	bs := &bootSector{
		sectorSize:   int64(le.Uint16(b[11:])),
		totalSectors: int64(le.Uint64(b[0x28:])),
		mftLCN:       int64(le.Uint64(b[0x30:])),
		mftMirrLCN:   int64(le.Uint64(b[0x38:])),
		serial:       le.Uint64(b[0x48:]),
	}
	if !pow2(bs.sectorSize, 256, 4096) {
		return nil, corrupt("bytes per sector %d", bs.sectorSize)
	}
	spc := int64(b[13])
	if spc > 0x80 {
		// Clusters above 64 KiB are stored as a negative power of two.
		spc = 1 << (256 - spc)
	}
	bs.clusterSize = spc * bs.sectorSize
	if !pow2(bs.clusterSize, 256, 2<<20) {
		return nil, corrupt("cluster size %d", bs.clusterSize)
	}
	var err error
	if bs.recordSize, err = recordBytes(int8(b[0x40]), bs.clusterSize); err != nil {
		return nil, corrupt("MFT record size: %v", err)
	}
	if bs.indexBlockSize, err = recordBytes(int8(b[0x44]), bs.clusterSize); err != nil {
		return nil, corrupt("index block size: %v", err)
	}
	if bs.totalSectors <= 0 || bs.totalSectors > partSize/bs.sectorSize {
		return nil, corrupt("volume of %d sectors of %d bytes does not fit the partition of %d bytes",
			bs.totalSectors, bs.sectorSize, partSize)
	}
	clusters := bs.clusters()
	if bs.mftLCN <= 0 || bs.mftLCN >= clusters || bs.mftMirrLCN <= 0 || bs.mftMirrLCN >= clusters {
		return nil, corrupt("MFT at cluster %d, mirror at %d, volume has %d clusters", bs.mftLCN, bs.mftMirrLCN, clusters)
	}
	return bs, nil
}

// recordBytes decodes the "clusters per record" byte: positive counts
// clusters, negative n means 2^-n bytes.
func recordBytes(v int8, clusterSize int64) (int64, error) {
	var n int64
	if v > 0 {
		n = int64(v) * clusterSize
	} else {
		if v < -16 || v > -9 {
			return 0, fmt.Errorf("2^%d bytes", -int(v))
		}
		n = 1 << -int(v)
	}
	if !pow2(n, 512, 64<<10) {
		return 0, fmt.Errorf("%d bytes", n)
	}
	return n, nil
}

func (bs *bootSector) clusters() int64 { return bs.totalSectors * bs.sectorSize / bs.clusterSize }

func pow2(n, lo, hi int64) bool { return n >= lo && n <= hi && bits.OnesCount64(uint64(n)) == 1 }

func corrupt(format string, args ...any) error {
	return fmt.Errorf("ntfs: %w: %s", fsdrivers.ErrCorrupt, fmt.Sprintf(format, args...))
}
