package ext4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dimg-project/dimg/fsdrivers"
)

// More feature flags, used by the writer.
const (
	compatExcludeBitmap = 0x100
	compatOrphanFile    = 0x1000

	incompatCompression = 0x1
	incompatDirData     = 0x1000

	roCompatDirNlink      = 0x20
	roCompatExtraIsize    = 0x40
	roCompatQuota         = 0x100
	roCompatReplica       = 0x800
	roCompatReadonly      = 0x1000
	roCompatProject       = 0x2000
	roCompatSharedBlocks  = 0x4000
	roCompatVerity        = 0x8000
	roCompatOrphanPresent = 0x10000
)

// The features whose on-disk effect the writer keeps right. Anything else
// is refused by name in OpenWritable.
const (
	incompatWritable = incompatFiletype | incompatExtents | incompat64bit | incompatFlexBG |
		incompatCsumSeed | incompatMetaBG | incompatLargeDir | incompatInlineData
	roCompatWritable = roCompatSparseSuper | roCompatLargeFile | roCompatBtreeDir | roCompatHugeFile |
		roCompatGdtCsum | roCompatDirNlink | roCompatExtraIsize | roCompatMetadataCsum
)

var incompatNames = map[uint32]string{
	incompatCompression: "compression", incompatRecover: "journal needs recovery",
	incompatJournalDev: "journal_dev", incompatMMP: "mmp", incompatEAInode: "ea_inode",
	incompatDirData: "dirdata", incompatInlineData: "inline_data", incompatEncrypt: "encrypt",
	incompatCasefold: "casefold",
}

var roCompatNames = map[uint32]string{
	roCompatBigalloc: "bigalloc", roCompatQuota: "quota", roCompatReplica: "replica",
	roCompatReadonly: "read-only", roCompatProject: "project", roCompatSharedBlocks: "shared_blocks",
	roCompatVerity: "verity", roCompatOrphanPresent: "orphan_present without orphan_file",
}

// Superblock byte offsets the writer updates.
const (
	sbRBlocksLo     = 0x8
	sbFreeBlocksLo  = 0xC
	sbFreeInodes    = 0x10
	sbWtime         = 0x30
	sbState         = 0x3A
	sbFirstIno      = 0x54
	sbLastOrphan    = 0xE8
	sbDefHash       = 0xFC
	sbWantExtra     = 0x15E
	sbRBlocksHi     = 0x154
	sbFreeBlocksHi  = 0x158
	sbLogPerFlex    = 0x174
	sbChecksum      = 0x3FC
	stateErrors     = 0x2
	ext4LinkMax     = 65000
	ext4NameMax     = 255
	uninitItableFlg = 0x4 // EXT4_BG_INODE_ZEROED
)

// maxDirtyBytes bounds the dirty metadata kept before an early flush (a
// variable so tests can force flushes in the middle of operations).
var maxDirtyBytes int64 = 32 << 20

var _ fsdrivers.WritableDriver = Driver{}

// wfs is an ext2/3/4 filesystem open for writing (fsdrivers.WritableFS).
//
// Layers: the reader (*Volume) parses everything; it reads the device
// through wdev, which serves blocks changed since the last flush from the
// dirty map, and Volume.overlay makes its block cache do the same, so the
// reader is always coherent with our edits. Metadata (bitmaps, descriptors,
// inode tables, directory, extent and indirect blocks) is changed in dirty
// block buffers and written by flush; file data goes straight to the
// device (a data block is never in the dirty map: freeing a block drops
// its buffer). The superblock is kept in sbRaw and written by Sync.
//
// One RWMutex guards everything: reads share it, any change holds it
// exclusively.
type wfs struct {
	v   *Volume
	dev fsdrivers.ReadWriterAt

	mu          sync.RWMutex
	dirty       map[uint64][]byte
	dirtyGroups map[uint32]bool // bitmaps changed: checksums to redo at flush
	sbRaw       []byte
	holds       map[uint32]int
	metaOf      map[uint32][]blockRun // other groups' bitmaps and inode tables inside a group (flex_bg)
	closed      bool
	now         func() time.Time
}

// wdev is the device as the reader sees it: dirty blocks overlay it.
type wdev struct{ w *wfs }

func (d wdev) ReadAt(p []byte, off int64) (int, error) {
	n, err := d.w.dev.ReadAt(p, off)
	if len(d.w.dirty) == 0 || d.w.v == nil {
		return n, err
	}
	bits := d.w.v.blockBits
	first, last := uint64(off)>>bits, uint64(off+int64(len(p))-1)>>bits
	if last-first+1 > uint64(len(d.w.dirty)) {
		for blk, b := range d.w.dirty {
			if blk >= first && blk <= last {
				d.copyIn(p, off, blk, b)
			}
		}
	} else {
		for blk := first; blk <= last; blk++ {
			if b, ok := d.w.dirty[blk]; ok {
				d.copyIn(p, off, blk, b)
			}
		}
	}
	return n, err
}

func (d wdev) copyIn(p []byte, off int64, blk uint64, b []byte) {
	start := int64(blk) << d.w.v.blockBits
	if start >= off {
		copy(p[start-off:], b)
	} else {
		copy(p, b[off-start:])
	}
}

// OpenWritable opens the filesystem on dev for writing. It refuses (with
// an error wrapping fsdrivers.ErrReadOnly naming the reason) a filesystem
// using a feature the writer does not keep right, whose journal needs
// recovery, marked as having errors, or whose group descriptors are
// damaged. A leftover orphan list is processed as the kernel does at
// mount, and the result synced, before it returns.
func (Driver) OpenWritable(dev fsdrivers.ReadWriterAt, size int64) (fsdrivers.WritableFS, error) {
	w, err := openWritable(dev, size)
	if err != nil {
		return nil, err
	}
	return w, nil
}

func refuse(format string, a ...any) error {
	return fmt.Errorf("ext4: cannot write: "+format+": %w", append(a, fsdrivers.ErrReadOnly)...)
}

func openWritable(dev fsdrivers.ReadWriterAt, size int64) (*wfs, error) {
	w := &wfs{dev: dev, dirty: map[uint64][]byte{}, dirtyGroups: map[uint32]bool{},
		holds: map[uint32]int{}, now: time.Now}
	v, err := Open(wdev{w}, size)
	if err != nil {
		return nil, err
	}
	w.v = v
	v.overlay = w.dirtyBlock
	sb := &v.sb
	var bad []string
	for bit := uint32(1); bit != 0; bit <<= 1 {
		if bit == incompatRecover {
			continue // replayed below, once nothing else refuses the filesystem
		}
		if sb.incompat&bit != 0 && incompatWritable&bit == 0 {
			bad = append(bad, featureName(incompatNames, bit, "incompat"))
		}
		if bit == roCompatOrphanPresent && sb.compat&compatOrphanFile != 0 {
			continue // the orphan file is processed below
		}
		if sb.roCompat&bit != 0 && roCompatWritable&bit == 0 {
			bad = append(bad, featureName(roCompatNames, bit, "ro_compat"))
		}
	}
	if sb.compat&compatExcludeBitmap != 0 {
		bad = append(bad, "exclude_bitmap")
	}
	if len(bad) > 0 {
		return nil, refuse("%s", strings.Join(bad, ", "))
	}
	w.sbRaw = make([]byte, superSize)
	if err := v.readFull(w.sbRaw, superOffset); err != nil {
		return nil, fmt.Errorf("ext4: read superblock: %w", err)
	}
	if binary.LittleEndian.Uint16(w.sbRaw[sbState:])&stateErrors != 0 {
		return nil, refuse("the filesystem is marked as having errors (run e2fsck)")
	}
	if sb.revLevel < 1 {
		return nil, refuse("revision 0 filesystem")
	}
	if sb.incompat&incompatRecover != 0 {
		// Committed transactions in the journal are part of the
		// filesystem: replay them (as the kernel's mount or e2fsck would)
		// before anything is written, then start again on the result.
		if _, err := replayJournal(dev, size); err != nil {
			return nil, err
		}
		if again, err := Open(dev, size); err == nil && again.sb.incompat&incompatRecover != 0 {
			return nil, refuse("the journal still needs recovery after replay")
		}
		return openWritable(dev, size)
	}
	w.metaOf = map[uint32][]blockRun{}
	for g := range v.groups {
		gd, err := v.groupDesc(g)
		if err != nil {
			return nil, refuse("damage found: %v", err)
		}
		for _, r := range []blockRun{{gd.blockBitmap, 1}, {gd.inodeBitmap, 1}, {gd.inodeTable, uint64(v.itbPerGroup)}} {
			if r.start < uint64(sb.firstDataBlock) || r.start+r.count > sb.blocksCount {
				return nil, refuse("damage found: group %d metadata at block %d out of range", g, r.start)
			}
			h := w.groupOf(r.start)
			w.metaOf[h] = append(w.metaOf[h], r)
		}
	}
	if err := w.processOrphans(); err != nil {
		return nil, err
	}
	return w, nil
}

func featureName(names map[uint32]string, bit uint32, kind string) string {
	if n, ok := names[bit]; ok {
		return n
	}
	return fmt.Sprintf("unknown %s feature %#x", kind, bit)
}

// dirtyBlock is Volume.overlay: the live buffer of a changed block.
func (w *wfs) dirtyBlock(blk uint64) []byte { return w.dirty[blk] }

// block returns block blk for reading (dirty buffer or cached copy); the
// caller must not change it.
func (w *wfs) block(blk uint64) ([]byte, error) { return w.v.readBlock(blk) }

// mut returns block blk's buffer for changing, reading it first.
func (w *wfs) mut(blk uint64) ([]byte, error) {
	if b, ok := w.dirty[blk]; ok {
		return b, nil
	}
	src, err := w.v.readBlock(blk)
	if err != nil {
		return nil, err
	}
	b := slices.Clone(src)
	w.setDirty(blk, b)
	return b, nil
}

// fresh returns a zeroed buffer for block blk, which is about to get new
// metadata contents (the old ones are not read).
func (w *wfs) fresh(blk uint64) []byte {
	b, ok := w.dirty[blk]
	if ok {
		clear(b)
		return b
	}
	b = make([]byte, w.v.blockSize)
	w.setDirty(blk, b)
	return b
}

func (w *wfs) setDirty(blk uint64, b []byte) {
	w.dirty[blk] = b
	w.v.blocks.Remove(blk)
	w.v.nodes.Remove(blk)
}

// forget drops any buffered or cached copy of a block being freed (it may
// become file data, written straight to the device).
func (w *wfs) forget(blk uint64) {
	delete(w.dirty, blk)
	w.v.blocks.Remove(blk)
	w.v.nodes.Remove(blk)
}

// maybeFlush bounds the dirty map: past maxDirtyBytes everything is
// written out early (the device is only required to be consistent after
// Sync).
func (w *wfs) maybeFlush() error {
	if int64(len(w.dirty))<<w.v.blockBits < maxDirtyBytes {
		return nil
	}
	return w.flush()
}

// flush finishes the checksums of changed groups and writes every dirty
// block and the superblock.
func (w *wfs) flush() error {
	for g := range w.dirtyGroups {
		if err := w.groupChecksums(g); err != nil {
			return err
		}
	}
	clear(w.dirtyGroups)
	blks := make([]uint64, 0, len(w.dirty))
	for blk := range w.dirty {
		blks = append(blks, blk)
	}
	slices.Sort(blks)
	// Neighbouring blocks (flex_bg bitmaps, inode table blocks) go out in
	// one write of up to 1 MiB.
	maxRun := max(1, int((1<<20)>>w.v.blockBits))
	for i := 0; i < len(blks); {
		j := i + 1
		for j < len(blks) && blks[j] == blks[j-1]+1 && j-i < maxRun {
			j++
		}
		buf := w.dirty[blks[i]]
		if j-i > 1 {
			buf = make([]byte, 0, (j-i)<<w.v.blockBits)
			for _, blk := range blks[i:j] {
				buf = append(buf, w.dirty[blk]...)
			}
		}
		if _, err := w.dev.WriteAt(buf, int64(blks[i])<<w.v.blockBits); err != nil {
			return fmt.Errorf("ext4: write blocks %d-%d: %w", blks[i], blks[j-1], errIO(err))
		}
		i = j
	}
	clear(w.dirty)
	le := binary.LittleEndian
	le.PutUint32(w.sbRaw[sbWtime:], uint32(w.now().Unix()))
	if w.v.metaCsum {
		le.PutUint32(w.sbRaw[sbChecksum:], crc32c(^uint32(0), w.sbRaw[:sbChecksum]))
	}
	if _, err := w.dev.WriteAt(w.sbRaw, superOffset); err != nil {
		return fmt.Errorf("ext4: write superblock: %w", errIO(err))
	}
	return nil
}

// errIO makes a device error an EIO for the WritableFS contract while
// keeping its text.
func errIO(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return err
	}
	return fmt.Errorf("%w (%w)", err, syscall.EIO)
}

// Sync writes every cached change to the device.
func (w *wfs) Sync() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return fmt.Errorf("ext4: sync: filesystem closed: %w", syscall.EIO)
	}
	return w.flush()
}

// Close syncs; the filesystem is unusable afterwards. Unlinked nodes still
// held stay on the orphan list (the next OpenWritable or mount frees them).
func (w *wfs) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	err := w.flush()
	w.closed = true
	return err
}

// Statfs reports the block and inode counts.
func (w *wfs) Statfs() (fsdrivers.Statfs, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	le := binary.LittleEndian
	free := int64(w.freeBlocks())
	resv := int64(uint64(le.Uint32(w.sbRaw[sbRBlocksLo:])))
	if w.v.sb.incompat&incompat64bit != 0 {
		resv |= int64(le.Uint32(w.sbRaw[sbRBlocksHi:])) << 32
	}
	return fsdrivers.Statfs{
		BlockSize:   w.v.blockSize,
		Blocks:      int64(w.v.sb.blocksCount - uint64(w.v.sb.firstDataBlock)),
		BlocksFree:  free,
		BlocksAvail: max(0, free-resv),
		Files:       int64(w.v.sb.inodesCount),
		FilesFree:   int64(le.Uint32(w.sbRaw[sbFreeInodes:])),
		NameMax:     ext4NameMax,
	}, nil
}

func (w *wfs) freeBlocks() uint64 {
	le := binary.LittleEndian
	n := uint64(le.Uint32(w.sbRaw[sbFreeBlocksLo:]))
	if w.v.sb.incompat&incompat64bit != 0 {
		n |= uint64(le.Uint32(w.sbRaw[sbFreeBlocksHi:])) << 32
	}
	return n
}

func (w *wfs) setFreeBlocks(n uint64) {
	le := binary.LittleEndian
	le.PutUint32(w.sbRaw[sbFreeBlocksLo:], uint32(n))
	if w.v.sb.incompat&incompat64bit != 0 {
		le.PutUint32(w.sbRaw[sbFreeBlocksHi:], uint32(n>>32))
	}
}

func (w *wfs) addFreeInodes(d int) {
	le := binary.LittleEndian
	le.PutUint32(w.sbRaw[sbFreeInodes:], uint32(int(le.Uint32(w.sbRaw[sbFreeInodes:]))+d))
}

// Volume interface: the reader's answers.

func (w *wfs) Type() string  { return w.v.Type() }
func (w *wfs) UUID() string  { return w.v.UUID() }
func (w *wfs) Label() string { return w.v.Label() }
func (w *wfs) Root() uint64  { return rootIno }

// Hold counts an open handle on ino.
func (w *wfs) Hold(ino uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.holds[uint32(ino)]++
}

// Release drops a handle; an unlinked node is freed at its last release.
func (w *wfs) Release(ino uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := uint32(ino)
	if w.closed {
		return
	}
	if w.holds[n] <= 1 {
		delete(w.holds, n)
		if wi, err := w.loadInode(n); err == nil && wi.links() == 0 && wi.mode() != 0 {
			if err := w.orphanRemove(n); err == nil {
				_ = w.freeInodeAndData(wi)
			}
		}
		return
	}
	w.holds[n]--
}
