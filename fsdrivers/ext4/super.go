package ext4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/internal/lru"
)

// ErrUnsupported is wrapped when the filesystem uses a feature this reader
// cannot interpret (compression, dirdata, an unknown incompat flag).
var ErrUnsupported = errors.New("ext4: unsupported feature")

const (
	superOffset = 1024
	superSize   = 1024
	superMagic  = 0xEF53
)

// Feature flags (s_feature_compat / _incompat / _ro_compat).
const (
	compatHasJournal   = 0x4
	compatDirIndex     = 0x20
	compatSparseSuper2 = 0x200

	incompatFiletype   = 0x2
	incompatRecover    = 0x4
	incompatJournalDev = 0x8
	incompatMetaBG     = 0x10
	incompatExtents    = 0x40
	incompat64bit      = 0x80
	incompatMMP        = 0x100
	incompatFlexBG     = 0x200
	incompatEAInode    = 0x400
	incompatCsumSeed   = 0x2000
	incompatLargeDir   = 0x4000
	incompatInlineData = 0x8000
	incompatEncrypt    = 0x10000
	incompatCasefold   = 0x20000

	roCompatSparseSuper  = 0x1
	roCompatLargeFile    = 0x2
	roCompatBtreeDir     = 0x4
	roCompatHugeFile     = 0x8
	roCompatGdtCsum      = 0x10
	roCompatBigalloc     = 0x200
	roCompatMetadataCsum = 0x400
)

// incompatKnown are the incompat features whose on-disk effect this reader
// understands. Anything else (compression 0x1, dirdata 0x1000, future bits)
// may change the layout in ways we would misread, so the file tree and the
// used map refuse it with ErrUnsupported; identification still works.
const incompatKnown = incompatFiletype | incompatRecover | incompatMetaBG | incompatExtents |
	incompat64bit | incompatMMP | incompatFlexBG | incompatEAInode | incompatCsumSeed |
	incompatLargeDir | incompatInlineData | incompatEncrypt | incompatCasefold

// ext3 (as blkid decides) knows only these; any other incompat or ro_compat
// feature makes the filesystem ext4.
const (
	ext3Incompat = incompatFiletype | incompatRecover | incompatMetaBG
	ext3RoCompat = roCompatSparseSuper | roCompatLargeFile | roCompatBtreeDir
)

// superblock holds the fields we use, decoded from the 1024-byte structure
// at byte 1024 of the filesystem.
type superblock struct {
	inodesCount      uint32
	blocksCount      uint64
	freeBlocksCount  uint64
	firstDataBlock   uint32
	logBlockSize     uint32
	logClusterSize   uint32
	blocksPerGroup   uint32
	clustersPerGroup uint32
	inodesPerGroup   uint32
	revLevel         uint32
	inodeSize        uint16
	compat           uint32
	incompat         uint32
	roCompat         uint32
	uuid             [16]byte
	volumeName       [16]byte
	reservedGdt      uint16
	hashSeed         [4]uint32
	descSize         uint16
	firstMetaBG      uint32
	flags            uint32
	checksumType     uint8
	backupBGs        [2]uint32
	checksumSeed     uint32
	checksum         uint32
}

// s_flags bits.
const (
	flagSignedHash   = 0x1
	flagUnsignedHash = 0x2
)

func parseSuperblock(b []byte) superblock {
	le := binary.LittleEndian
	var s superblock
	s.inodesCount = le.Uint32(b[0x0:])
	s.blocksCount = uint64(le.Uint32(b[0x4:]))
	s.freeBlocksCount = uint64(le.Uint32(b[0xC:]))
	s.firstDataBlock = le.Uint32(b[0x14:])
	s.logBlockSize = le.Uint32(b[0x18:])
	s.logClusterSize = le.Uint32(b[0x1C:])
	s.blocksPerGroup = le.Uint32(b[0x20:])
	s.clustersPerGroup = le.Uint32(b[0x24:])
	s.inodesPerGroup = le.Uint32(b[0x28:])
	s.revLevel = le.Uint32(b[0x4C:])
	s.inodeSize = 128
	if s.revLevel >= 1 {
		s.inodeSize = le.Uint16(b[0x58:])
		s.compat = le.Uint32(b[0x5C:])
		s.incompat = le.Uint32(b[0x60:])
		s.roCompat = le.Uint32(b[0x64:])
	}
	copy(s.uuid[:], b[0x68:0x78])
	copy(s.volumeName[:], b[0x78:0x88])
	s.reservedGdt = le.Uint16(b[0xCE:])
	for i := range s.hashSeed {
		s.hashSeed[i] = le.Uint32(b[0xEC+4*i:])
	}
	s.descSize = le.Uint16(b[0xFE:])
	s.firstMetaBG = le.Uint32(b[0x104:])
	if s.incompat&incompat64bit != 0 {
		s.blocksCount |= uint64(le.Uint32(b[0x150:])) << 32
		s.freeBlocksCount |= uint64(le.Uint32(b[0x158:])) << 32
	}
	s.flags = le.Uint32(b[0x160:])
	s.checksumType = b[0x175]
	s.backupBGs[0] = le.Uint32(b[0x24C:])
	s.backupBGs[1] = le.Uint32(b[0x250:])
	s.checksumSeed = le.Uint32(b[0x270:])
	s.checksum = le.Uint32(b[0x3FC:])
	return s
}

// Driver opens ext2, ext3 and ext4 filesystems.
type Driver struct{}

var _ fsdrivers.Driver = Driver{}

// Name returns "ext4".
func (Driver) Name() string { return "ext4" }

// Open reads and checks the superblock. The returned *Volume also
// implements fsdrivers.UsedRanger, Warner, Filesystem and XattrFS, and
// fs.ReadLinkFS.
func (Driver) Open(r io.ReaderAt, size int64) (fsdrivers.Volume, error) {
	v, err := Open(r, size)
	if err != nil {
		return nil, err
	}
	return v, nil
}

// Volume is an opened ext2/3/4 filesystem. It is safe for concurrent use.
type Volume struct {
	r    io.ReaderAt
	size int64
	sb   superblock

	blockSize    int64
	blockBits    uint
	clusterBits  uint // log2(blocks per cluster); 0 unless bigalloc
	groups       uint32
	descSize     int
	descPerBlock uint32
	gdtBlocks    uint32 // blocks holding the classic (non meta_bg) GDT
	itbPerGroup  uint32 // inode table blocks per group
	csumSeed     uint32
	metaCsum     bool
	groupCsum    bool   // group descriptor checksums (gdt_csum or metadata_csum): uninit flags are valid
	unsupported  uint32 // incompat bits we do not understand

	blocks *lru.Cache[uint64, []byte]   // raw metadata blocks
	inodes *lru.Cache[uint32, *inode]   // parsed inodes
	nodes  *lru.Cache[uint64, *extNode] // parsed, verified extent blocks

	mu       sync.Mutex
	warnings []string // from the last UsedRanges

	// overlay, set by the writer, returns the live buffer of a block
	// changed since the last flush (nil otherwise); see wfs.
	overlay func(blk uint64) []byte
}

var (
	_ fsdrivers.Volume     = (*Volume)(nil)
	_ fsdrivers.UsedRanger = (*Volume)(nil)
	_ fsdrivers.Warner     = (*Volume)(nil)
	_ fsdrivers.Filesystem = (*Volume)(nil)
	_ fs.ReadLinkFS        = (*Volume)(nil)
	_ fsdrivers.XattrFS    = (*Volume)(nil)
)

// metaCacheBytes bounds the raw metadata block cache; with 4 KiB blocks that
// is 2,048 blocks: a few directories and extent trees stay hot while memory
// stays small next to the FUSE and image caches.
const (
	metaCacheBytes = 8 << 20
	inodeCacheSize = 4096
	nodeCacheSize  = 1024
)

// Open opens the filesystem on r (size bytes). Errors wrap
// fsdrivers.ErrNotFound when there is no ext2/3/4 superblock and
// fsdrivers.ErrCorrupt when there is one but it cannot be trusted.
func Open(r io.ReaderAt, size int64) (*Volume, error) {
	if size < superOffset+superSize {
		return nil, fmt.Errorf("ext4: %d bytes is too small for a superblock: %w", size, fsdrivers.ErrNotFound)
	}
	buf := make([]byte, superSize)
	if _, err := r.ReadAt(buf, superOffset); err != nil {
		return nil, fmt.Errorf("ext4: read superblock: %w", err)
	}
	if binary.LittleEndian.Uint16(buf[0x38:]) != superMagic {
		return nil, fmt.Errorf("ext4: no superblock magic 0xEF53: %w", fsdrivers.ErrNotFound)
	}
	sb := parseSuperblock(buf)
	v := &Volume{r: r, size: size, sb: sb}
	if err := v.checkSuper(buf); err != nil {
		return nil, err
	}
	v.blocks = lru.New[uint64, []byte](int(max(64, metaCacheBytes/v.blockSize)))
	v.inodes = lru.New[uint32, *inode](inodeCacheSize)
	v.nodes = lru.New[uint64, *extNode](nodeCacheSize)
	return v, nil
}

func corruptf(format string, a ...any) error {
	return fmt.Errorf("ext4: "+format+": %w", append(a, fsdrivers.ErrCorrupt)...)
}

// checkSuper validates the superblock geometry so that every later
// computation (group counts, table sizes) is bounded by the device size,
// and derives the values the rest of the package uses.
func (v *Volume) checkSuper(raw []byte) error {
	sb := &v.sb
	if sb.incompat&incompatJournalDev != 0 {
		return fmt.Errorf("ext4: external journal device, not a filesystem: %w", ErrUnsupported)
	}
	if sb.roCompat&roCompatMetadataCsum != 0 {
		if sb.checksumType != 1 {
			return corruptf("superblock checksum type %d is not crc32c", sb.checksumType)
		}
		if got := crc32c(^uint32(0), raw[:0x3FC]); got != sb.checksum {
			return corruptf("superblock checksum %#08x, computed %#08x", sb.checksum, got)
		}
	}
	if sb.logBlockSize > 6 {
		return corruptf("block size 2^(10+%d) out of range", sb.logBlockSize)
	}
	v.blockBits = uint(10 + sb.logBlockSize)
	v.blockSize = 1 << v.blockBits
	if sb.roCompat&roCompatBigalloc != 0 {
		if sb.logClusterSize < sb.logBlockSize || sb.logClusterSize-sb.logBlockSize > 16 {
			return corruptf("cluster size 2^(10+%d) with block size %d", sb.logClusterSize, v.blockSize)
		}
		v.clusterBits = uint(sb.logClusterSize - sb.logBlockSize)
	} else {
		sb.clustersPerGroup = sb.blocksPerGroup
	}
	bitsPerBlock := uint32(v.blockSize * 8)
	if sb.clustersPerGroup == 0 || sb.clustersPerGroup > bitsPerBlock || sb.clustersPerGroup%8 != 0 {
		return corruptf("%d clusters per group", sb.clustersPerGroup)
	}
	if uint64(sb.blocksPerGroup) != uint64(sb.clustersPerGroup)<<v.clusterBits {
		return corruptf("%d blocks per group is not %d clusters", sb.blocksPerGroup, sb.clustersPerGroup)
	}
	if sb.inodesPerGroup == 0 || sb.inodesPerGroup > bitsPerBlock {
		return corruptf("%d inodes per group", sb.inodesPerGroup)
	}
	if sb.inodeSize < 128 || int64(sb.inodeSize) > v.blockSize || sb.inodeSize&(sb.inodeSize-1) != 0 {
		return corruptf("inode size %d", sb.inodeSize)
	}
	if sb.blocksCount == 0 || uint64(sb.firstDataBlock) >= sb.blocksCount {
		return corruptf("first data block %d of %d blocks", sb.firstDataBlock, sb.blocksCount)
	}
	if v.blockSize == 1024 && sb.firstDataBlock == 0 && v.clusterBits == 0 {
		return corruptf("1 KiB blocks but first data block 0")
	}
	if sb.blocksCount > uint64(v.size)>>v.blockBits {
		return corruptf("filesystem has %d blocks of %d bytes but the device holds %d bytes (truncated)",
			sb.blocksCount, v.blockSize, v.size)
	}
	groups := (sb.blocksCount - uint64(sb.firstDataBlock) + uint64(sb.blocksPerGroup) - 1) / uint64(sb.blocksPerGroup)
	if groups == 0 || groups > 1<<32-1 {
		return corruptf("%d block groups", groups)
	}
	v.groups = uint32(groups)
	if uint64(sb.inodesCount) > groups*uint64(sb.inodesPerGroup) || sb.inodesCount < 11 {
		return corruptf("%d inodes in %d groups of %d", sb.inodesCount, groups, sb.inodesPerGroup)
	}
	v.descSize = 32
	if sb.incompat&incompat64bit != 0 {
		ds := int(sb.descSize)
		if ds < 64 || ds > 1024 || ds&(ds-1) != 0 || int64(ds) > v.blockSize {
			return corruptf("group descriptor size %d", ds)
		}
		v.descSize = ds
	}
	v.descPerBlock = uint32(v.blockSize) / uint32(v.descSize)
	v.gdtBlocks = uint32((groups + uint64(v.descPerBlock) - 1) / uint64(v.descPerBlock))
	if sb.incompat&incompatMetaBG != 0 && sb.firstMetaBG > v.gdtBlocks {
		return corruptf("first meta_bg %d beyond %d descriptor blocks", sb.firstMetaBG, v.gdtBlocks)
	}
	v.itbPerGroup = uint32((uint64(sb.inodesPerGroup)*uint64(sb.inodeSize) + uint64(v.blockSize) - 1) >> v.blockBits)
	v.metaCsum = sb.roCompat&roCompatMetadataCsum != 0
	v.groupCsum = v.metaCsum || sb.roCompat&roCompatGdtCsum != 0
	switch {
	case sb.incompat&incompatCsumSeed != 0:
		v.csumSeed = sb.checksumSeed
	default:
		v.csumSeed = crc32c(^uint32(0), sb.uuid[:])
	}
	v.unsupported = sb.incompat &^ incompatKnown
	return nil
}

// Type reports "ext4", "ext3" or "ext2" the way blkid decides: ext4 when
// any feature beyond ext3's set is on, ext3 when there is a journal.
func (v *Volume) Type() string {
	if v.sb.incompat&^ext3Incompat != 0 || v.sb.roCompat&^ext3RoCompat != 0 {
		return "ext4"
	}
	if v.sb.compat&compatHasJournal != 0 {
		return "ext3"
	}
	return "ext2"
}

// UUID returns the filesystem UUID in blkid form, "" when it is all zeros.
func (v *Volume) UUID() string {
	u := v.sb.uuid
	if u == [16]byte{} {
		return ""
	}
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// Label returns the volume name.
func (v *Volume) Label() string {
	n := 0
	for n < len(v.sb.volumeName) && v.sb.volumeName[n] != 0 {
		n++
	}
	return string(v.sb.volumeName[:n])
}

// BlockSize is the filesystem block size in bytes.
func (v *Volume) BlockSize() int64 { return v.blockSize }

// checkSupported is called by the capabilities whose results depend on
// layout features we may not know.
func (v *Volume) checkSupported() error {
	if v.unsupported != 0 {
		return fmt.Errorf("ext4: incompat features %#x: %w", v.unsupported, ErrUnsupported)
	}
	return nil
}
