package imagefmt

import (
	"encoding/binary"
	"errors"
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

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// Sentinel errors. Every error returned for bad input wraps one of them.
var (
	// ErrFormat: the bytes are not a dimg image, or a version we do not read.
	ErrFormat = errors.New("imagefmt: not a dimg image")
	// ErrCorrupt: a structure (header, footer, index, frame header) fails its
	// checks.
	ErrCorrupt = errors.New("imagefmt: image is corrupt")
	// ErrChecksum: a chunk's bytes do not match their checksum.
	ErrChecksum = errors.New("imagefmt: chunk checksum mismatch")
	// ErrTruncated: the image ends early.
	ErrTruncated = errors.New("imagefmt: image is truncated")
)

// ChunkError names the chunk and disk byte range a failure concerns.
type ChunkError struct {
	Chunk    int64
	Off, Len int64 // disk byte range of the chunk
	Err      error
}

func (e *ChunkError) Error() string {
	return fmt.Sprintf("chunk %d (disk bytes %d-%d): %v", e.Chunk, e.Off, e.Off+e.Len-1, e.Err)
}
func (e *ChunkError) Unwrap() error { return e.Err }

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
	Metadata []byte
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

func (h *Header) validate() error {
	switch {
	case h.SectorSize < 512 || h.SectorSize > maxSectorSize || h.SectorSize&(h.SectorSize-1) != 0:
		return fmt.Errorf("%w: sector size %d", ErrCorrupt, h.SectorSize)
	case h.ChunkSize < MinChunkSize || h.ChunkSize > MaxChunkSize || h.ChunkSize&(h.ChunkSize-1) != 0:
		return fmt.Errorf("%w: chunk size %d", ErrCorrupt, h.ChunkSize)
	case h.ChunkSize%h.SectorSize != 0:
		return fmt.Errorf("%w: chunk size %d not a multiple of sector size %d", ErrCorrupt, h.ChunkSize, h.SectorSize)
	case h.DiskSize <= 0 || h.DiskSize > maxDiskSize:
		return fmt.Errorf("%w: disk size %d", ErrCorrupt, h.DiskSize)
	case h.NumChunks() >= maxChunkNumbers:
		return fmt.Errorf("%w: %d chunks is more than this reader supports", ErrCorrupt, h.NumChunks())
	}
	return nil
}

func (h *Header) marshal() ([]byte, error) {
	if len(h.ToolVersion) > maxToolVersion {
		return nil, fmt.Errorf("imagefmt: tool version too long")
	}
	n := headerFixedSize + len(h.ToolVersion) + 4 + len(h.Metadata) + 4
	if n > maxHeaderSize {
		return nil, fmt.Errorf("imagefmt: metadata too large (%d bytes)", len(h.Metadata))
	}
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

// headerLen checks the fixed start of a header and returns its full length.
func headerLen(fixed []byte) (int, error) {
	if len(fixed) < 16 || [8]byte(fixed[0:8]) != headerMagic {
		return 0, fmt.Errorf("%w: bad magic", ErrFormat)
	}
	if v := binary.LittleEndian.Uint32(fixed[8:]); v != Version {
		return 0, fmt.Errorf("%w: format version %d (this dimg reads version %d)", ErrFormat, v, Version)
	}
	n := int(binary.LittleEndian.Uint32(fixed[12:]))
	if n < headerFixedSize+8 || n > maxHeaderSize {
		return 0, fmt.Errorf("%w: header length %d", ErrCorrupt, n)
	}
	return n, nil
}

func unmarshalHeader(b []byte) (*Header, error) {
	n, err := headerLen(b)
	if err != nil {
		return nil, err
	}
	if len(b) < n {
		return nil, fmt.Errorf("%w: header", ErrTruncated)
	}
	b = b[:n]
	le := binary.LittleEndian
	if got, want := crc(b[:n-4]), le.Uint32(b[n-4:]); got != want {
		return nil, fmt.Errorf("%w: header checksum mismatch", ErrCorrupt)
	}
	h := &Header{
		Version:    le.Uint32(b[8:]),
		SectorSize: int(le.Uint32(b[32:])),
		ChunkSize:  int(le.Uint32(b[36:])),
		DiskSize:   int64(le.Uint64(b[40:])),
		Created:    time.Unix(0, int64(le.Uint64(b[48:]))).UTC(),
	}
	copy(h.UUID[:], b[16:32])
	tl := int(le.Uint32(b[60:]))
	p := headerFixedSize
	if tl > maxToolVersion || p+tl+4 > n-4 {
		return nil, fmt.Errorf("%w: header tool version length %d", ErrCorrupt, tl)
	}
	h.ToolVersion = string(b[p : p+tl])
	p += tl
	ml := int(le.Uint32(b[p:]))
	p += 4
	if ml < 0 || p+ml != n-4 {
		return nil, fmt.Errorf("%w: header metadata length %d", ErrCorrupt, ml)
	}
	h.Metadata = append([]byte(nil), b[p:p+ml]...)
	if err := h.validate(); err != nil {
		return nil, err
	}
	return h, nil
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
	// Zeros, when non-zero, makes this a zero-run record rather than a
	// frame (StreamReader only): chunks [Chunk, Chunk+Zeros) are in use and
	// all zero, so a restore to a device must zero them. No payload.
	Zeros int64
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

func parseZeroRun(b []byte) (ZeroRun, error) {
	le := binary.LittleEndian
	if [4]byte(b[0:4]) != zeroMagic || b[4] != methodZeroRun || crc(b[:60]) != le.Uint32(b[60:]) {
		return ZeroRun{}, fmt.Errorf("%w: bad zero-run record", ErrCorrupt)
	}
	return ZeroRun{Start: int64(le.Uint64(b[8:])), Count: int64(le.Uint64(b[16:]))}, nil
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

// parseFrameHeader decodes and checks a frame header; it returns the frame
// (without payload) and the stored payload length.
func parseFrameHeader(b []byte, maxLogical int) (Frame, int, error) {
	var f Frame
	if len(b) < FrameHeaderSize {
		return f, 0, fmt.Errorf("%w: frame header", ErrTruncated)
	}
	if [4]byte(b[0:4]) != frameMagic {
		return f, 0, fmt.Errorf("%w: bad frame magic", ErrCorrupt)
	}
	le := binary.LittleEndian
	if crc(b[:60]) != le.Uint32(b[60:]) {
		return f, 0, fmt.Errorf("%w: frame header checksum mismatch", ErrCorrupt)
	}
	f.Method = b[4]
	f.Chunk = int64(le.Uint64(b[8:]))
	slen := int(le.Uint32(b[16:]))
	f.LogicalLen = int(le.Uint32(b[20:]))
	copy(f.Sum[:], b[24:56])
	f.PayloadCRC = le.Uint32(b[56:])
	switch {
	case f.Method != MethodRaw && f.Method != MethodLZ4:
		return f, 0, fmt.Errorf("%w: unknown compression method %d", ErrCorrupt, f.Method)
	case f.LogicalLen <= 0 || f.LogicalLen > maxLogical:
		return f, 0, fmt.Errorf("%w: frame logical length %d", ErrCorrupt, f.LogicalLen)
	case f.Method == MethodRaw && slen != f.LogicalLen:
		return f, 0, fmt.Errorf("%w: raw frame stored length %d != %d", ErrCorrupt, slen, f.LogicalLen)
	case slen <= 0 || slen > maxFrameSize(f.LogicalLen):
		return f, 0, fmt.Errorf("%w: frame stored length %d", ErrCorrupt, slen)
	}
	return f, slen, nil
}

// ParseFrame parses a whole frame (header + payload) from raw, checking the
// header and that the payload is complete. The payload is checked by Decode.
// maxLogical bounds the logical length (the image's chunk size).
func ParseFrame(raw []byte, maxLogical int) (Frame, error) {
	f, slen, err := parseFrameHeader(raw, maxLogical)
	if err != nil {
		return f, err
	}
	if len(raw) < FrameHeaderSize+slen {
		return f, fmt.Errorf("%w: frame payload", ErrTruncated)
	}
	f.Raw = raw[:FrameHeaderSize+slen]
	f.Payload = f.Raw[FrameHeaderSize:]
	return f, nil
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

func unmarshalFooter(b []byte) (*footer, error) {
	if len(b) != FooterSize {
		return nil, fmt.Errorf("%w: footer", ErrTruncated)
	}
	le := binary.LittleEndian
	if [8]byte(b[0:8]) != footerMagic || [4]byte(b[124:128]) != footerEnd {
		return nil, fmt.Errorf("%w: footer magic not found at the end of the file (truncated or incomplete image?)", ErrCorrupt)
	}
	if crc(b[:120]) != le.Uint32(b[120:]) {
		return nil, fmt.Errorf("%w: footer checksum mismatch", ErrCorrupt)
	}
	if v := le.Uint32(b[8:]); v != Version {
		return nil, fmt.Errorf("%w: footer version %d", ErrFormat, v)
	}
	f := &footer{
		indexOff:   int64(le.Uint64(b[16:])),
		count:      int64(le.Uint64(b[24:])),
		indexCRC:   le.Uint32(b[32:]),
		storedData: int64(le.Uint64(b[40:])),
		zeroRuns:   int64(le.Uint64(b[96:])),
	}
	copy(f.uuid[:], b[48:64])
	copy(f.digest[:], b[64:96])
	return f, nil
}

// indexEntry is the in-memory form of one index entry: 16 bytes.
type indexEntry struct {
	off   int64  // file offset of the frame header
	chunk uint32 // chunk number
	slen  uint32 // payload length
}

// Entry describes one stored chunk.
type Entry struct {
	Chunk     int64
	Offset    int64 // file offset of the frame
	StoredLen int   // payload bytes (the frame is FrameHeaderSize more)
}

// marshalIndex encodes the index: header, entries, zero runs.
func marshalIndex(entries []indexEntry, runs []ZeroRun) []byte {
	idx := make([]byte, indexHeaderSize+indexEntrySize*len(entries)+zeroRunSize*len(runs))
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
