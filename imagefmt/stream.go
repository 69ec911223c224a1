package imagefmt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// StreamReader reads an image front to back from an io.Reader (a pipe, a
// socket): the header first, then frames; at the end it checks the index
// and footer against what it saw, and the digest against the frames' sums.
type StreamReader struct {
	r      io.Reader
	hdr    *Header
	off    int64
	next   int64 // lowest chunk number the next frame may have
	digest *Digester
	seen   []indexEntry
	runs   []ZeroRun
	// lastWasRun: the previous record was a zero run (runs merge only then).
	lastWasRun bool
	done       bool
	buf        []byte
}

// NewStreamReader reads and checks the header.
func NewStreamReader(r io.Reader) (*StreamReader, error) {
	fixed := make([]byte, 16)
	if _, err := io.ReadFull(r, fixed); err != nil {
		return nil, fmt.Errorf("imagefmt: read header: %w", eofIsTruncated(err))
	}
	n, err := headerLen(fixed)
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	copy(b, fixed)
	if _, err := io.ReadFull(r, b[16:]); err != nil {
		return nil, fmt.Errorf("imagefmt: read header: %w", eofIsTruncated(err))
	}
	h, err := unmarshalHeader(b)
	if err != nil {
		return nil, err
	}
	return &StreamReader{r: r, hdr: h, off: int64(n), digest: NewDigester(h),
		buf: make([]byte, FrameBufSize(h.ChunkSize))}, nil
}

func eofIsTruncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ErrTruncated
	}
	return err
}

// Header returns the image header.
func (s *StreamReader) Header() *Header { return s.hdr }

// Next returns the next frame. Its Raw and Payload alias an internal buffer
// that the following call to Next overwrites: decode or copy it first.
// Next checks the frame header and ordering; Frame.Decode checks the
// payload. After the last frame it reads and checks the index and footer
// and returns io.EOF; a stream that ends any other way returns an error
// wrapping ErrTruncated or ErrCorrupt.
func (s *StreamReader) Next() (Frame, error) {
	if s.done {
		return Frame{}, io.EOF
	}
	hb := s.buf[:FrameHeaderSize]
	if _, err := io.ReadFull(s.r, hb[:4]); err != nil {
		return Frame{}, fmt.Errorf("imagefmt: at byte %d: %w", s.off, eofIsTruncated(err))
	}
	if bytes.Equal(hb[:4], indexMagic[:]) {
		return Frame{}, s.finish()
	}
	if _, err := io.ReadFull(s.r, hb[4:]); err != nil {
		return Frame{}, fmt.Errorf("imagefmt: frame at byte %d: %w", s.off, eofIsTruncated(err))
	}
	if bytes.Equal(hb[:4], zeroMagic[:]) {
		z, err := parseZeroRun(hb)
		if err != nil {
			return Frame{}, fmt.Errorf("imagefmt: record at byte %d: %w", s.off, err)
		}
		if z.Start < s.next || z.Count <= 0 || z.Count > s.hdr.NumChunks()-z.Start {
			return Frame{}, fmt.Errorf("%w: zero run at byte %d out of order or range", ErrCorrupt, s.off)
		}
		if n := len(s.runs); n > 0 && s.lastWasRun && s.runs[n-1].Start+s.runs[n-1].Count == z.Start {
			s.runs[n-1].Count += z.Count
		} else {
			s.runs = append(s.runs, z)
		}
		s.lastWasRun = true
		s.next = z.Start + z.Count
		s.off += FrameHeaderSize
		return Frame{Chunk: z.Start, Zeros: z.Count}, nil
	}
	f, slen, err := parseFrameHeader(hb, s.hdr.ChunkSize)
	if err != nil {
		return Frame{}, fmt.Errorf("imagefmt: frame at byte %d: %w", s.off, err)
	}
	if f.Chunk < s.next || f.Chunk >= s.hdr.NumChunks() || f.LogicalLen != s.hdr.ChunkLen(f.Chunk) {
		return Frame{}, fmt.Errorf("%w: frame at byte %d: chunk %d out of order or size", ErrCorrupt, s.off, f.Chunk)
	}
	raw := s.buf[:FrameHeaderSize+slen]
	if _, err := io.ReadFull(s.r, raw[FrameHeaderSize:]); err != nil {
		return Frame{}, fmt.Errorf("imagefmt: frame at byte %d: %w", s.off, eofIsTruncated(err))
	}
	f.Raw, f.Payload = raw, raw[FrameHeaderSize:]
	s.seen = append(s.seen, indexEntry{off: s.off, chunk: uint32(f.Chunk), slen: uint32(slen)})
	s.digest.Add(f.Chunk, f.Sum)
	s.next = f.Chunk + 1
	s.lastWasRun = false
	s.off += int64(len(raw))
	return f, nil
}

// finish reads the index and footer after the "DIDX" magic and checks them.
func (s *StreamReader) finish() error {
	s.done = true
	indexOff := s.off
	rest := make([]byte, indexHeaderSize-4)
	if _, err := io.ReadFull(s.r, rest); err != nil {
		return fmt.Errorf("imagefmt: index: %w", eofIsTruncated(err))
	}
	le := binary.LittleEndian
	count, nruns := int64(le.Uint64(rest[4:])), int64(le.Uint64(rest[12:]))
	if count != int64(len(s.seen)) || nruns != int64(len(s.runs)) {
		return fmt.Errorf("%w: index lists %d chunks and %d zero runs, stream held %d and %d", ErrCorrupt, count, nruns, len(s.seen), len(s.runs))
	}
	want := marshalIndex(s.seen, s.runs)
	idx := make([]byte, len(want))
	copy(idx, indexMagic[:])
	copy(idx[4:], rest)
	if _, err := io.ReadFull(s.r, idx[indexHeaderSize:]); err != nil {
		return fmt.Errorf("imagefmt: index: %w", eofIsTruncated(err))
	}
	if !bytes.Equal(idx, want) {
		return fmt.Errorf("%w: index does not match the stream", ErrCorrupt)
	}
	fb := make([]byte, FooterSize)
	if _, err := io.ReadFull(s.r, fb); err != nil {
		return fmt.Errorf("imagefmt: footer: %w", eofIsTruncated(err))
	}
	ft, err := unmarshalFooter(fb)
	if err != nil {
		return err
	}
	if ft.indexOff != indexOff || ft.count != count || ft.zeroRuns != nruns || ft.indexCRC != crc(idx) || ft.uuid != s.hdr.UUID {
		return fmt.Errorf("%w: footer does not match the stream", ErrCorrupt)
	}
	if s.digest.Sum() != ft.digest {
		return fmt.Errorf("%w: image digest does not match the chunks' sums", ErrCorrupt)
	}
	return io.EOF
}
