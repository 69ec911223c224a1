package fat

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/dimg-project/dimg/fsdrivers"
)

// Cluster-count limits from fatgen103: below fat12Limit clusters a volume is
// FAT12, below fat16Limit FAT16, otherwise FAT32.
const (
	fat12Limit = 4085
	fat16Limit = 65525
	// fat32MaxClusters keeps cluster numbers below the reserved values
	// (0x0FFFFFF7 bad, 0x0FFFFFF8.. end of chain).
	fat32MaxClusters = 0x0FFFFFF5
)

// geometry is what the boot sector says about where things are. All offsets
// are bytes from the start of the partition.
type geometry struct {
	bits         int   // 12, 16 or 32
	sectorSize   int64 // BPB_BytsPerSec
	clusterSize  int64 // sectors per cluster × sectorSize
	numFATs      int
	fatOffset    int64 // first FAT (end of the reserved region)
	fatBytes     int64 // size of one FAT
	activeFAT    int   // FAT32 with mirroring disabled may use another copy
	rootOffset   int64 // FAT12/16 fixed root directory
	rootBytes    int64
	dataOffset   int64 // cluster 2
	totalBytes   int64 // the filesystem's own idea of its size
	clusterCount uint32
	rootCluster  uint32 // FAT32 only
	serial       []byte // BS_VolID, nil when the extended BPB is absent
	bootLabel    []byte // BS_VolLab, nil when absent
	fat32Layout  bool   // BPB_FATSz16 == 0: FAT32 fields present
	fsInfoSector int    // FAT32: the FSInfo sector (reserved region, copied as such)
}

// maxCluster is the highest valid cluster number.
func (g *geometry) maxCluster() uint32 { return g.clusterCount + 1 }

// clusterOffset is the byte offset of cluster c (2 ≤ c ≤ maxCluster).
func (g *geometry) clusterOffset(c uint32) int64 {
	return g.dataOffset + int64(c-2)*g.clusterSize
}

// fatNeed is how many bytes of a FAT hold the entries 0..maxCluster.
func (g *geometry) fatNeed() int64 {
	n := int64(g.maxCluster()) + 1
	switch g.bits {
	case 12:
		return (n*3 + 1) / 2
	case 16:
		return n * 2
	default:
		return n * 4
	}
}

func isPow2(n int64) bool { return n > 0 && n&(n-1) == 0 }

// parseBootSector validates sector 0 and derives the geometry. size is the
// partition size. Failures of the basic signature checks wrap
// fsdrivers.ErrNotFound (these bytes are not FAT at all); inconsistencies in
// something that otherwise looks like FAT wrap fsdrivers.ErrCorrupt.
func parseBootSector(bs []byte, size int64) (*geometry, error) {
	notFAT := func(format string, args ...any) error {
		return fmt.Errorf("fat: "+format+": %w", append(args, fsdrivers.ErrNotFound)...)
	}
	corrupt := func(format string, args ...any) error {
		return fmt.Errorf("fat: "+format+": %w", append(args, fsdrivers.ErrCorrupt)...)
	}
	if len(bs) < 512 {
		return nil, notFAT("boot sector too short (%d bytes)", len(bs))
	}
	le := binary.LittleEndian
	oem := bs[3:11]
	// NTFS and exFAT share the jump and 0x55AA signature; say so rather
	// than report a puzzling BPB value.
	if bytes.Equal(oem, []byte("NTFS    ")) {
		return nil, notFAT("NTFS boot sector")
	}
	if bytes.Equal(oem, []byte("EXFAT   ")) {
		return nil, notFAT("exFAT boot sector")
	}
	if bs[510] != 0x55 || bs[511] != 0xAA {
		return nil, notFAT("no 0x55AA boot signature")
	}
	if bs[0] != 0xEB && bs[0] != 0xE9 {
		return nil, notFAT("no x86 jump at byte 0 (0x%02X)", bs[0])
	}
	bps := int64(le.Uint16(bs[11:]))
	if !isPow2(bps) || bps < 512 || bps > 4096 {
		return nil, notFAT("bytes per sector %d", bps)
	}
	spc := int64(bs[13])
	if !isPow2(spc) {
		return nil, notFAT("sectors per cluster %d", spc)
	}
	reserved := int64(le.Uint16(bs[14:]))
	if reserved == 0 {
		return nil, notFAT("no reserved sectors")
	}
	numFATs := int(bs[16])
	if numFATs == 0 {
		return nil, notFAT("no FATs")
	}
	media := bs[21]
	if media != 0xF0 && media < 0xF8 {
		return nil, notFAT("media descriptor 0x%02X", media)
	}
	rootEntries := int64(le.Uint16(bs[17:]))
	fatSz16 := int64(le.Uint16(bs[22:]))
	fatSz := fatSz16
	fat32Layout := fatSz16 == 0
	if fat32Layout {
		fatSz = int64(le.Uint32(bs[36:]))
	}
	if fatSz == 0 {
		return nil, notFAT("FAT size 0")
	}
	totSec := int64(le.Uint16(bs[19:]))
	if totSec == 0 {
		totSec = int64(le.Uint32(bs[32:]))
	}
	if totSec == 0 {
		return nil, notFAT("total sectors 0")
	}

	g := &geometry{
		sectorSize:  bps,
		clusterSize: spc * bps,
		numFATs:     numFATs,
		fatOffset:   reserved * bps,
		fatBytes:    fatSz * bps,
		fat32Layout: fat32Layout,
		totalBytes:  totSec * bps,
	}
	rootSectors := (rootEntries*32 + bps - 1) / bps
	metaSectors := reserved + int64(numFATs)*fatSz + rootSectors
	if metaSectors >= totSec {
		return nil, corrupt("%d metadata sectors leave no data region in %d sectors", metaSectors, totSec)
	}
	clusters := (totSec - metaSectors) / spc
	g.rootOffset = g.fatOffset + int64(numFATs)*g.fatBytes
	g.rootBytes = rootEntries * 32
	g.dataOffset = (reserved + int64(numFATs)*fatSz + rootSectors) * bps

	// The specification decides the type by cluster count alone. A volume
	// with the FAT32 layout (BPB_FATSz16 == 0) but fewer clusters is still
	// read as FAT32, as Linux, dosfstools and blkid do: mkfs.fat -F 32
	// makes such volumes on small media, and its entries are 32-bit.
	if clusters < 1 {
		return nil, corrupt("no clusters")
	}
	switch {
	case fat32Layout:
		g.bits = 32
	case clusters < fat12Limit:
		g.bits = 12
	case clusters < fat16Limit:
		g.bits = 16
	default:
		return nil, corrupt("%d clusters need FAT32 but the BPB has a 16-bit FAT size", clusters)
	}
	if clusters > fat32MaxClusters {
		return nil, corrupt("%d clusters exceed FAT32's limit", clusters)
	}
	g.clusterCount = uint32(clusters)
	if need := g.fatNeed(); need > g.fatBytes {
		return nil, corrupt("FAT of %d bytes cannot hold %d clusters (%d bytes needed)", g.fatBytes, clusters, need)
	}

	ext := 36
	if g.bits == 32 {
		if rootEntries != 0 {
			return nil, corrupt("FAT32 with %d fixed root entries", rootEntries)
		}
		ext = 64
		extFlags := le.Uint16(bs[40:])
		if extFlags&0x80 != 0 { // mirroring disabled: only one FAT is live
			g.activeFAT = int(extFlags & 0x0F)
			if g.activeFAT >= numFATs {
				return nil, corrupt("active FAT %d of %d", g.activeFAT, numFATs)
			}
		}
		g.rootCluster = le.Uint32(bs[44:]) & 0x0FFFFFFF
		if g.rootCluster < 2 || g.rootCluster > g.maxCluster() {
			return nil, corrupt("root cluster %d outside 2..%d", g.rootCluster, g.maxCluster())
		}
		g.fsInfoSector = int(le.Uint16(bs[48:]))
	} else if rootEntries == 0 {
		return nil, corrupt("FAT%d without root directory entries", g.bits)
	}
	// 0x29 is the extended boot signature with serial, label and type;
	// 0x28 (OS/2) has the serial only.
	switch bs[ext+2] {
	case 0x29:
		g.serial = bs[ext+3 : ext+7]
		g.bootLabel = bs[ext+7 : ext+18]
	case 0x28:
		g.serial = bs[ext+3 : ext+7]
	}

	if g.totalBytes > size {
		return nil, corrupt("filesystem of %d bytes in a partition of %d bytes: truncated", g.totalBytes, size)
	}
	return g, nil
}

// readBootSector reads and parses sector 0 of r.
func readBootSector(r io.ReaderAt, size int64) (*geometry, error) {
	if size < 512 {
		return nil, fmt.Errorf("fat: partition of %d bytes is too small: %w", size, fsdrivers.ErrNotFound)
	}
	bs := make([]byte, 512)
	if _, err := r.ReadAt(bs, 0); err != nil {
		return nil, fmt.Errorf("fat: read boot sector: %w", err)
	}
	return parseBootSector(bs, size)
}

// typeName is the Volume.Type string.
func (g *geometry) typeName() string {
	return fmt.Sprintf("fat%d", g.bits)
}

// uuid formats the serial as blkid does: the 32-bit little-endian number in
// upper-case hex, split in two halves.
func (g *geometry) uuid() string {
	if g.serial == nil {
		return ""
	}
	s := g.serial
	return fmt.Sprintf("%02X%02X-%02X%02X", s[3], s[2], s[1], s[0])
}
