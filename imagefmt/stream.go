package imagefmt

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
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
	digest hash.Hash
	zsum   [32]byte
	seen   []indexEntry
	done   bool
	buf    []byte
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
	return &StreamReader{r: r, hdr: h, off: int64(n), digest: sha256.New(), zsum: zeroSum(h.ChunkSize),
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

func (s *StreamReader) skipTo(chunk int64) {
	for ; s.next < chunk; s.next++ {
		if l := s.hdr.ChunkLen(s.next); l == s.hdr.ChunkSize {
			s.digest.Write(s.zsum[:])
		} else {
			z := zeroSum(l)
			s.digest.Write(z[:])
		}
	}
}

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
	s.skipTo(f.Chunk)
	s.digest.Write(f.Sum[:])
	s.next = f.Chunk + 1
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
	count := int64(binary.LittleEndian.Uint64(rest[4:]))
	if count != int64(len(s.seen)) {
		return fmt.Errorf("%w: index lists %d chunks, stream held %d", ErrCorrupt, count, len(s.seen))
	}
	idx := make([]byte, indexHeaderSize+indexEntrySize*int(count))
	copy(idx, indexMagic[:])
	copy(idx[4:], rest)
	if _, err := io.ReadFull(s.r, idx[indexHeaderSize:]); err != nil {
		return fmt.Errorf("imagefmt: index: %w", eofIsTruncated(err))
	}
	le := binary.LittleEndian
	for i, e := range s.seen {
		p := idx[indexHeaderSize+i*indexEntrySize:]
		if le.Uint64(p[0:]) != uint64(e.chunk) || int64(le.Uint64(p[8:])) != e.off || le.Uint32(p[16:]) != e.slen {
			return fmt.Errorf("%w: index entry %d does not match the stream", ErrCorrupt, i)
		}
	}
	fb := make([]byte, FooterSize)
	if _, err := io.ReadFull(s.r, fb); err != nil {
		return fmt.Errorf("imagefmt: footer: %w", eofIsTruncated(err))
	}
	ft, err := unmarshalFooter(fb)
	if err != nil {
		return err
	}
	if ft.indexOff != indexOff || ft.count != count || ft.indexCRC != crc(idx) || ft.uuid != s.hdr.UUID {
		return fmt.Errorf("%w: footer does not match the stream", ErrCorrupt)
	}
	s.skipTo(s.hdr.NumChunks())
	var d [32]byte
	s.digest.Sum(d[:0])
	if d != ft.digest {
		return fmt.Errorf("%w: image digest does not match the chunks' sums", ErrCorrupt)
	}
	return io.EOF
}
