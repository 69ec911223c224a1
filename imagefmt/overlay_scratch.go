package imagefmt

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// The scratch file is the overlay's journal: it holds every dirty chunk and
// enough description to recover them after a crash. Layout (little endian):
//
//	offset 0, 4096 bytes: file header
//	  0  [8]  magic 0x89 'D' 'O' 'V' 'L' '\r' '\n' 0x1a
//	  8  u32  version (1)
//	  12 u32  flags (0; a reader refuses other values)
//	  16 u32  chunk size
//	  20 u32  length L of the base identity
//	  24 u64  disk size
//	  32 [16] session: random, fresh for every scratch file
//	  48 i64  creation time, Unix nanoseconds
//	  56 [8]  reserved, zero
//	  64 [L]  base identity (opaque bytes the caller chose, ≤ 2048)
//	  64+L u32 CRC-32C of bytes [0, 64+L)
//	then slot k (k = 0, 1, ...) at 4096 + k·(4096 + chunk size):
//	  slot header, 4096 bytes:
//	    0  [4]  magic 'D' 'O' 'S' 'L'
//	    4  u32  version (1)
//	    8  u64  chunk number
//	    16 u64  k, the slot's own number (a header found elsewhere is not it)
//	    24 [16] session (equal to the file header's)
//	    40 [20] reserved, zero
//	    60 u32  CRC-32C of bytes [0, 60)
//	  chunk data, chunk size bytes (the disk's last chunk may use fewer);
//	  bytes never written, including a region past the end of the file,
//	  read as zeros.
//
// Why this shape: slots are appended and never move or get reused, so the
// only thing a crash can tear is a header that was being written, and its
// CRC says so. Data has no checksum on purpose: a chunk rewritten in place
// may after a crash hold old or new bytes for the parts written since the
// last Sync, exactly as a disk after a power cut; a data checksum would make
// recovery drop a chunk whose synced bytes are fine. Headers are written
// only by Sync, after an fdatasync of the data they describe, so a valid
// header always describes data that reached the disk. Headers and data are
// 4096-aligned so a guest's aligned 4 KiB write touches one page.
const (
	scratchHeaderSize  = 4096
	slotHeaderSize     = 4096
	slotHeaderUsed     = 64
	scratchVersion     = 1
	maxBaseIDLen       = 2048
	scratchFixedHeader = 64
)

var (
	scratchMagic = [8]byte{0x89, 'D', 'O', 'V', 'L', '\r', '\n', 0x1a}
	slotMagic    = [4]byte{'D', 'O', 'S', 'L'}
)

// ScratchInfo describes a scratch file: which base disk its changes apply
// to and how it is cut into chunks.
type ScratchInfo struct {
	Path      string
	BaseID    string // the OverlayBase.ID it was created for
	ChunkSize int
	DiskSize  int64
	// Session is random and unique to this scratch file. A committer may
	// record it with the commit so that a recovery finding a scratch whose
	// session is already committed (a crash between the commit and the
	// scratch's removal) knows to remove it instead of offering it again.
	Session [16]byte
	Created time.Time
}

func (s *ScratchInfo) marshal() []byte {
	b := make([]byte, scratchHeaderSize)
	le := binary.LittleEndian
	copy(b[0:8], scratchMagic[:])
	le.PutUint32(b[8:], scratchVersion)
	le.PutUint32(b[12:], 0)
	le.PutUint32(b[16:], uint32(s.ChunkSize))
	le.PutUint32(b[20:], uint32(len(s.BaseID)))
	le.PutUint64(b[24:], uint64(s.DiskSize))
	copy(b[32:48], s.Session[:])
	le.PutUint64(b[48:], uint64(s.Created.UnixNano()))
	n := scratchFixedHeader + copy(b[scratchFixedHeader:], s.BaseID)
	le.PutUint32(b[n:], crc(b[:n]))
	return b
}

func parseScratchHeader(path string, b []byte) (*ScratchInfo, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrScratch, path, fmt.Sprintf(format, a...))
	}
	if len(b) < scratchFixedHeader+4 || [8]byte(b[0:8]) != scratchMagic {
		return nil, bad("not an overlay scratch file (bad magic)")
	}
	le := binary.LittleEndian
	if v := le.Uint32(b[8:]); v != scratchVersion {
		return nil, bad("version %d, this dimg reads version %d", v, scratchVersion)
	}
	idLen := int(le.Uint32(b[20:]))
	if idLen > maxBaseIDLen || scratchFixedHeader+idLen+4 > len(b) {
		return nil, bad("base identity length %d is invalid", idLen)
	}
	n := scratchFixedHeader + idLen
	if got := le.Uint32(b[n:]); got != crc(b[:n]) {
		return nil, bad("header checksum mismatch")
	}
	if f := le.Uint32(b[12:]); f != 0 {
		return nil, bad("unknown flags %#x", f)
	}
	s := &ScratchInfo{
		Path:      path,
		BaseID:    string(b[scratchFixedHeader:n]),
		ChunkSize: int(le.Uint32(b[16:])),
		DiskSize:  int64(le.Uint64(b[24:])),
		Session:   [16]byte(b[32:48]),
		Created:   time.Unix(0, int64(le.Uint64(b[48:]))),
	}
	if err := checkOverlayGeometry(s.DiskSize, s.ChunkSize); err != nil {
		return nil, bad("%v", err)
	}
	return s, nil
}

// checkOverlayGeometry accepts chunk sizes that keep slots page-aligned and
// chunk numbers that fit the in-memory map's uint32.
func checkOverlayGeometry(diskSize int64, chunkSize int) error {
	if chunkSize < 4096 || chunkSize > MaxChunkSize || chunkSize%4096 != 0 {
		return fmt.Errorf("chunk size %d is not a multiple of 4096 between 4096 and %d", chunkSize, MaxChunkSize)
	}
	if diskSize <= 0 || diskSize > maxDiskSize {
		return fmt.Errorf("disk size %d is out of range", diskSize)
	}
	if (diskSize+int64(chunkSize)-1)/int64(chunkSize) > maxChunkNumbers {
		return fmt.Errorf("disk of %d bytes has more than %d chunks of %d bytes", diskSize, int64(maxChunkNumbers), chunkSize)
	}
	return nil
}

// ReadScratchInfo reads the header of a scratch file, for a caller that
// must decide what to do with one left by a crash (dimg recover) before it
// has the base it belongs to.
func ReadScratchInfo(path string) (*ScratchInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readScratchHeader(f, path)
}

func readScratchHeader(f *os.File, path string) (*ScratchInfo, error) {
	b := make([]byte, scratchHeaderSize)
	n, err := f.ReadAt(b, 0)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("imagefmt: read overlay scratch header of %s: %w", path, err)
	}
	return parseScratchHeader(path, b[:n])
}

// RemoveScratch removes a scratch file durably (its directory is synced, so
// the changes do not come back after a power cut). A missing file is not an
// error.
func RemoveScratch(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("imagefmt: remove overlay scratch: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("imagefmt: sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("imagefmt: sync directory %s: %w", dir, err)
	}
	return nil
}

// fdatasync flushes f's data and the metadata needed to read it back (the
// size), without the timestamps fsync would also write.
func fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}

// createScratch makes a new scratch file at path atomically: the header is
// written and synced under a temporary name, then linked to path, which
// fails if path exists. So path either does not exist or has a valid
// header, whatever moment a crash hits.
func createScratch(path string, info *ScratchInfo) (*os.File, error) {
	if _, err := rand.Read(info.Session[:]); err != nil {
		return nil, fmt.Errorf("imagefmt: overlay session id: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("imagefmt: overlay scratch %s already exists (changes left by an earlier session: recover or discard them): %w", path, fs.ErrExist)
	}
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("imagefmt: create overlay scratch: %w", err)
	}
	fail := func(err error) (*os.File, error) {
		f.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("imagefmt: create overlay scratch %s: %w", path, err)
	}
	if _, err := f.WriteAt(info.marshal(), 0); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fail(fmt.Errorf("it already exists (changes left by an earlier session: recover or discard them): %w", fs.ErrExist))
		}
		return fail(err)
	}
	if err := os.Remove(tmp); err != nil {
		os.Remove(path)
		return fail(err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		os.Remove(path)
		return fail(err)
	}
	return f, nil
}

// slotRecord is a slot whose header Sync has yet to write.
type slotRecord struct {
	slot, chunk uint32
}

func marshalSlotHeader(b []byte, r slotRecord, session [16]byte) {
	clear(b[:slotHeaderUsed])
	le := binary.LittleEndian
	copy(b[0:4], slotMagic[:])
	le.PutUint32(b[4:], scratchVersion)
	le.PutUint64(b[8:], uint64(r.chunk))
	le.PutUint64(b[16:], uint64(r.slot))
	copy(b[24:40], session[:])
	le.PutUint32(b[60:], crc(b[:60]))
}

// parseSlotHeader reports whether b is a complete header for slot k of
// this session, and its chunk. Anything else (a hole, a torn write, a slot
// allocated but never synced) is not a slot: its data was never promised.
func parseSlotHeader(b []byte, k int64, session [16]byte) (chunk int64, ok bool) {
	if len(b) < slotHeaderUsed || [4]byte(b[0:4]) != slotMagic {
		return 0, false
	}
	le := binary.LittleEndian
	if le.Uint32(b[60:]) != crc(b[:60]) || le.Uint32(b[4:]) != scratchVersion ||
		int64(le.Uint64(b[16:])) != k || [16]byte(b[24:40]) != session {
		return 0, false
	}
	return int64(le.Uint64(b[8:])), true
}

// shortID shortens a base identity for messages.
func shortID(id string) string {
	for _, r := range id {
		if r < ' ' || r > '~' {
			id = "0x" + hex.EncodeToString([]byte(id))
			break
		}
	}
	if len(id) > 120 {
		id = id[:117] + "..."
	}
	return id
}
