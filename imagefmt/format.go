package imagefmt

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"
)

// Format constants; FORMAT.md is the normative description.
const (
	Version = 1

	// DefaultChunkSize is 256 KiB: see FORMAT.md "Choosing the chunk size".
	DefaultChunkSize = 256 << 10
	MinChunkSize     = 64 << 10
	MaxChunkSize     = 16 << 20

	headerFixedSize = 64
	FrameHeaderSize = 64
	indexHeaderSize = 24
	zeroRunSize     = 16
	indexEntrySize  = 24
	FooterSize      = 128

	// minHeaderSize is a header with empty tool version and metadata.
	minHeaderSize = headerFixedSize + 8
	// maxHeaderSize bounds what a reader will allocate for the header.
	maxHeaderSize  = 16 << 20
	maxToolVersion = 4096
	MethodRaw      = 0
	MethodLZ4      = 1
	// methodZeroRun marks a zero-run record in the data area (FORMAT.md).
	methodZeroRun   = 0xff
	maxSectorSize   = 64 << 10
	maxDiskSize     = 1 << 56
	maxChunkNumbers = 1 << 32 // in-memory index keeps chunk numbers in uint32
)

var (
	headerMagic = [8]byte{0x89, 'D', 'I', 'M', 'G', '\r', '\n', 0x1a}
	frameMagic  = [4]byte{'D', 'C', 'H', 'K'}
	zeroMagic   = [4]byte{'D', 'Z', 'R', 'O'}
	indexMagic  = [4]byte{'D', 'I', 'D', 'X'}
	footerMagic = [8]byte{'D', 'I', 'M', 'G', 'F', 'O', 'O', 'T'}
	footerEnd   = [4]byte{'D', 'E', 'N', 'D'}
)

// castagnoli is CRC-32C: the reflected polynomial 0x82F63B78, initial value
// and final XOR 0xFFFFFFFF (FORMAT.md gives check values).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// Header is the image's fixed description, written first.
type Header struct {
	Version     uint32
	UUID        [16]byte
	SectorSize  int
	ChunkSize   int
	DiskSize    int64
	Created     time.Time
	ToolVersion string
	// Metadata is the disk description (JSON, see DiskInfo), opaque here.
	// In a version 2 image it is the opened commit's metadata record.
	Metadata []byte
	// Version 2 only: the feature flags of the header block (a commit
	// may add incompatible ones, see Reader.Features), and the base of a
	// delta image (nil otherwise).
	Incompat, ROCompat, Compat uint32
	Base                       *BaseRef
}

// NumChunks is how many chunks cover the disk.
func (h *Header) NumChunks() int64 {
	return (h.DiskSize + int64(h.ChunkSize) - 1) / int64(h.ChunkSize)
}

// ChunkLen is the logical length of chunk i (the last may be short).
func (h *Header) ChunkLen(i int64) int {
	end := (i + 1) * int64(h.ChunkSize)
	if end > h.DiskSize {
		return int(h.DiskSize - i*int64(h.ChunkSize))
	}
	return h.ChunkSize
}

// UUIDString formats the image UUID in canonical form.
func (h *Header) UUIDString() string { return formatUUID(h.UUID) }

func formatUUID(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// headerLen is H for a header with these variable parts.
func (h *Header) headerLen() int { return minHeaderSize + len(h.ToolVersion) + len(h.Metadata) }

func (h *Header) marshal() ([]byte, error) {
	if err := h.check(); err != nil {
		return nil, err
	}
	n := h.headerLen()
	b := make([]byte, n)
	le := binary.LittleEndian
	copy(b[0:8], headerMagic[:])
	le.PutUint32(b[8:], h.Version)
	le.PutUint32(b[12:], uint32(n))
	copy(b[16:32], h.UUID[:])
	le.PutUint32(b[32:], uint32(h.SectorSize))
	le.PutUint32(b[36:], uint32(h.ChunkSize))
	le.PutUint64(b[40:], uint64(h.DiskSize))
	le.PutUint64(b[48:], uint64(h.Created.UnixNano()))
	le.PutUint32(b[56:], 0) // flags
	le.PutUint32(b[60:], uint32(len(h.ToolVersion)))
	p := headerFixedSize
	p += copy(b[p:], h.ToolVersion)
	le.PutUint32(b[p:], uint32(len(h.Metadata)))
	p += 4
	p += copy(b[p:], h.Metadata)
	le.PutUint32(b[p:], crc(b[:p]))
	return b, nil
}

// Frame is one stored chunk: the frame header's fields plus the payload.
type Frame struct {
	Chunk      int64
	Method     uint8
	LogicalLen int
	Sum        [32]byte // SHA-256 of the chunk's logical bytes
	PayloadCRC uint32
	Payload    []byte
	// Raw is the frame exactly as stored (header + payload) when the frame
	// was built by an Encoder or parsed from bytes; Payload aliases it.
	Raw []byte
	// Offset is the frame's file offset when it was read from an image
	// (Reader.ReadFrame, StreamReader.Next); errors from Decode name it.
	Offset int64
	// File is the file the frame was read from when it is not the opened
	// image's own but a base's under a delta; Decode's errors name it, so
	// that Offset is not looked for in the wrong file.
	File string
	// Zeros, when non-zero, makes this a zero-run record rather than a
	// frame (StreamReader only): chunks [Chunk, Chunk+Zeros) are in use and
	// all zero, so a restore to a device must zero them. No payload.
	Zeros int64
	// cached: the bytes came from a FrameCache, not the image file; a
	// frame that then fails to decode is read again from the file.
	cached bool
	// sum is the SHA-256 its index entry records (version 2): its
	// FrameKey's Sum.
	keySum [32]byte
}

// ZeroRun is a run of chunks [Start, Start+Count) that were in use on the
// source and all zero. Chunks neither stored nor in a zero run were unused.
type ZeroRun struct {
	Start, Count int64
}

func putZeroRun(b []byte, z ZeroRun) {
	clear(b[:FrameHeaderSize])
	le := binary.LittleEndian
	copy(b[0:4], zeroMagic[:])
	b[4] = methodZeroRun
	le.PutUint64(b[8:], uint64(z.Start))
	le.PutUint64(b[16:], uint64(z.Count))
	le.PutUint32(b[60:], crc(b[:60]))
}

// putFrameHeader encodes f's fields into b[:FrameHeaderSize].
func putFrameHeader(b []byte, f *Frame) {
	le := binary.LittleEndian
	copy(b[0:4], frameMagic[:])
	b[4] = f.Method
	b[5], b[6], b[7] = 0, 0, 0
	le.PutUint64(b[8:], uint64(f.Chunk))
	le.PutUint32(b[16:], uint32(len(f.Payload)))
	le.PutUint32(b[20:], uint32(f.LogicalLen))
	copy(b[24:56], f.Sum[:])
	le.PutUint32(b[56:], f.PayloadCRC)
	le.PutUint32(b[60:], crc(b[:60]))
}

// maxFrameSize bounds an lz4 payload for n input bytes (lz4 worst case).
func maxFrameSize(n int) int { return n + n/255 + 16 }

// footer is the fixed-size trailer of an image.
type footer struct {
	indexOff   int64
	count      int64
	zeroRuns   int64
	indexCRC   uint32
	storedData int64 // sum of frame sizes (headers + payloads)
	uuid       [16]byte
	digest     [32]byte
}

func (f *footer) marshal() []byte {
	b := make([]byte, FooterSize)
	le := binary.LittleEndian
	copy(b[0:8], footerMagic[:])
	le.PutUint32(b[8:], Version)
	le.PutUint64(b[16:], uint64(f.indexOff))
	le.PutUint64(b[24:], uint64(f.count))
	le.PutUint32(b[32:], f.indexCRC)
	le.PutUint64(b[40:], uint64(f.storedData))
	copy(b[48:64], f.uuid[:])
	copy(b[64:96], f.digest[:])
	le.PutUint64(b[96:], uint64(f.zeroRuns))
	le.PutUint32(b[120:], crc(b[:120]))
	copy(b[124:128], footerEnd[:])
	return b
}

// indexEntry is the in-memory form of one index entry: 16 bytes.
type indexEntry struct {
	off   int64  // file offset of the frame header
	chunk uint32 // chunk number
	slen  uint32 // payload length
}

// end is the file offset just past the frame.
func (e indexEntry) end() int64 { return e.off + FrameHeaderSize + int64(e.slen) }

// Entry describes one stored chunk.
type Entry struct {
	Chunk     int64
	Offset    int64 // file offset of the frame
	StoredLen int   // payload bytes (the frame is FrameHeaderSize more)
}

// indexLen is the size of an index of n frames and z zero runs.
func indexLen(n, z int64) int64 { return indexHeaderSize + n*indexEntrySize + z*zeroRunSize }

// marshalIndex encodes the index: header, entries, zero runs.
func marshalIndex(entries []indexEntry, runs []ZeroRun) []byte {
	idx := make([]byte, indexLen(int64(len(entries)), int64(len(runs))))
	le := binary.LittleEndian
	copy(idx[0:4], indexMagic[:])
	le.PutUint64(idx[8:], uint64(len(entries)))
	le.PutUint64(idx[16:], uint64(len(runs)))
	for i, e := range entries {
		p := idx[indexHeaderSize+i*indexEntrySize:]
		le.PutUint64(p[0:], uint64(e.chunk))
		le.PutUint64(p[8:], uint64(e.off))
		le.PutUint32(p[16:], e.slen)
	}
	zp := idx[indexHeaderSize+indexEntrySize*len(entries):]
	for i, z := range runs {
		le.PutUint64(zp[i*zeroRunSize:], uint64(z.Start))
		le.PutUint64(zp[i*zeroRunSize+8:], uint64(z.Count))
	}
	return idx
}
