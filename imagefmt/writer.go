package imagefmt

import (
	"bufio"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"time"
)

// WriterOptions configure a new image. The zero value of every field but
// DiskSize is a sensible default.
type WriterOptions struct {
	DiskSize    int64     // logical disk size in bytes (required)
	ChunkSize   int       // 0: DefaultChunkSize
	SectorSize  int       // 0: 512
	UUID        [16]byte  // zero: random
	Created     time.Time // zero: now
	ToolVersion string
	Metadata    []byte // disk description, JSON (see DiskInfo)
	// Version is the format to write: 0 (the default) or 2 writes version
	// 2, 1 writes version 1 (for tests and older readers).
	Version int
	// Compression is the method the frames will use (their Encoders must
	// be made with it, see NewEncoder): lz4 by default; zstd marks the
	// image so that readers without zstd refuse it (version 2 only).
	Compression Compression
	// Message is the first commit's message (version 2).
	Message string
}

// Writer writes an image to an io.Writer in one forward pass: header,
// frames in increasing chunk order, index, footer.
type Writer struct {
	w       *bufio.Writer
	hdr     Header
	off     int64 // bytes written so far
	next    int64 // lowest chunk number the next frame may have
	entries []indexEntry
	runs    []ZeroRun
	digest  *Digester
	stored  int64
	closed  bool
	// lastWasRun: the previous record was a zero run (runs merge only then).
	lastWasRun bool
	// v2 is the version 2 state (nil when writing version 1).
	v2 *writerV2
}

// NewWriter writes the header and returns a Writer.
func NewWriter(w io.Writer, opt WriterOptions) (*Writer, error) {
	switch opt.Version {
	case 0, Version2:
		opt.Version = Version2
	case Version:
		if m, err := opt.Compression.method(); err != nil || m != MethodLZ4 {
			return nil, fmt.Errorf("imagefmt: new writer: version 1 images hold lz4 or raw frames only")
		}
	default:
		return nil, fmt.Errorf("imagefmt: new writer: cannot write format version %d", opt.Version)
	}
	h := Header{
		Version:     uint32(opt.Version),
		UUID:        opt.UUID,
		SectorSize:  opt.SectorSize,
		ChunkSize:   opt.ChunkSize,
		DiskSize:    opt.DiskSize,
		Created:     opt.Created,
		ToolVersion: opt.ToolVersion,
		Metadata:    opt.Metadata,
	}
	if h.SectorSize == 0 {
		h.SectorSize = 512
	}
	if h.ChunkSize == 0 {
		h.ChunkSize = DefaultChunkSize
	}
	if h.Created.IsZero() {
		h.Created = time.Now()
	}
	if h.UUID == ([16]byte{}) {
		if _, err := rand.Read(h.UUID[:]); err != nil {
			return nil, err
		}
		h.UUID[6] = h.UUID[6]&0x0f | 0x40 // version 4
		h.UUID[8] = h.UUID[8]&0x3f | 0x80 // RFC 4122 variant
	}
	if h.Version == Version2 {
		err := h.checkGeometry()
		if err == nil {
			err = h.checkContent()
		}
		if err != nil {
			var re *RuleError
			if errors.As(err, &re) {
				return nil, fmt.Errorf("imagefmt: new writer: %s", re.Detail)
			}
			return nil, err
		}
		return newWriterV2(w, h, opt)
	}
	b, err := h.marshal()
	if err != nil {
		// The options would make an image no reader accepts: a mistake of
		// the caller, not a damaged image, so no sentinel.
		var re *RuleError
		if errors.As(err, &re) {
			return nil, fmt.Errorf("imagefmt: new writer: %s", re.Detail)
		}
		return nil, err
	}
	wr := &Writer{
		w:   bufio.NewWriterSize(w, 1<<20),
		hdr: h,
	}
	wr.digest = NewDigester(&wr.hdr)
	if err := wr.write(b); err != nil {
		return nil, err
	}
	return wr, nil
}

// Header returns the header being written.
func (w *Writer) Header() Header { return w.hdr }

func (w *Writer) write(b []byte) error {
	n, err := w.w.Write(b)
	w.off += int64(n)
	if err != nil {
		return fmt.Errorf("imagefmt: write: %w", err)
	}
	return nil
}

// WriteFrame appends a frame made by an Encoder. Frames must come in
// strictly increasing chunk order; chunks never written read back as zeros.
func (w *Writer) WriteFrame(f Frame) error {
	if w.closed {
		return fmt.Errorf("imagefmt: write after close")
	}
	n := w.hdr.NumChunks()
	switch {
	case f.Chunk < w.next || f.Chunk >= n:
		return fmt.Errorf("imagefmt: frame for chunk %d out of order or range (next %d, %d chunks)", f.Chunk, w.next, n)
	case f.LogicalLen != w.hdr.ChunkLen(f.Chunk):
		return fmt.Errorf("imagefmt: chunk %d has %d bytes, want %d", f.Chunk, f.LogicalLen, w.hdr.ChunkLen(f.Chunk))
	case len(f.Raw) != FrameHeaderSize+len(f.Payload):
		return fmt.Errorf("imagefmt: frame for chunk %d was not built by an Encoder", f.Chunk)
	case f.Method == MethodZstd && w.hdr.Incompat&IncompatZstd == 0:
		return fmt.Errorf("imagefmt: zstd frame for chunk %d in an image not written for zstd (WriterOptions.Compression)", f.Chunk)
	}
	if w.v2 != nil {
		return w.writeFrameV2(f)
	}
	w.entries = append(w.entries, indexEntry{off: w.off, chunk: uint32(f.Chunk), slen: uint32(len(f.Payload))})
	w.digest.Add(f.Chunk, f.Sum)
	w.next = f.Chunk + 1
	w.lastWasRun = false
	w.stored += int64(len(f.Raw))
	return w.write(f.Raw)
}

// WriteZeroRun records that chunks [start, start+count) were in use and all
// zero. It obeys the same ordering as WriteFrame.
func (w *Writer) WriteZeroRun(start, count int64) error {
	if w.closed {
		return fmt.Errorf("imagefmt: write after close")
	}
	if start < w.next || count <= 0 || start+count > w.hdr.NumChunks() {
		return fmt.Errorf("imagefmt: zero run %d+%d out of order or range (next %d)", start, count, w.next)
	}
	if w.v2 != nil {
		return w.writeZeroRunV2(start, count)
	}
	w.next = start + count // zero chunks: the digest counts them when it skips them
	// Merge with the previous run when adjacent: fewer records, same meaning.
	if n := len(w.runs); n > 0 && w.runs[n-1].Start+w.runs[n-1].Count == start && w.lastWasRun {
		w.runs[n-1].Count += count
	} else {
		w.runs = append(w.runs, ZeroRun{Start: start, Count: count})
	}
	w.lastWasRun = true
	var b [FrameHeaderSize]byte
	putZeroRun(b[:], ZeroRun{Start: start, Count: count})
	return w.write(b[:])
}

// Close writes the index and footer and flushes. It does not close the
// underlying writer. It returns the image digest.
func (w *Writer) Close() ([32]byte, error) {
	var d [32]byte
	if w.closed {
		return d, fmt.Errorf("imagefmt: writer already closed")
	}
	w.closed = true
	if w.v2 != nil {
		return w.closeV2()
	}
	d = w.digest.Sum()

	indexOff := w.off
	idx := marshalIndex(w.entries, w.runs)
	ft := footer{
		indexOff:   indexOff,
		count:      int64(len(w.entries)),
		zeroRuns:   int64(len(w.runs)),
		indexCRC:   crc(idx),
		storedData: w.stored,
		uuid:       w.hdr.UUID,
		digest:     d,
	}
	if err := w.write(idx); err != nil {
		return d, err
	}
	if err := w.write(ft.marshal()); err != nil {
		return d, err
	}
	if err := w.w.Flush(); err != nil {
		return d, fmt.Errorf("imagefmt: write: %w", err)
	}
	return d, nil
}

// Size is the number of bytes written so far.
func (w *Writer) Size() int64 { return w.off }
