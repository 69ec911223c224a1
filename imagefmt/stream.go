package imagefmt

import (
	"errors"
	"fmt"
	"io"
)

// StreamReader reads an image front to back from an io.Reader (a pipe, a
// socket): the header first, then each record as it comes; at the index it
// reads to the end of the stream and checks index and footer as the
// random-access open does, then that the records it passed are the ones
// the index lists, and the digest. It accepts exactly the images Reader
// and Verify accept (FORMAT.md, "Validity").
type StreamReader struct {
	w      walker
	hdr    *Header
	hlen   int64
	frames []seenFrame // every frame passed, for the comparison with the index
	digest *Digester
	err    error // sticky: io.EOF after the footer, or the first error
	buf    []byte
	v2     *streamV2 // version 2 state (nil for version 1)
}

// walker reads the records of the data area in file order from r, starting
// at seq.off, and checks each as it comes: the one record-level validator.
// The stream reader walks the whole data area; the random-access reader
// walks the gap between two frames (checkGap, walkGap).
type walker struct {
	r   io.Reader
	hdr *Header
	seq records // where the next record starts, the lowest chunk it may cover, the zero runs so far
	hb  [FrameHeaderSize]byte
}

type recordKind int

const (
	recFrame   recordKind = iota // a frame: header checked, payload still to read (walker.payload)
	recZeroRun                   // a zero-run record
	recIndex                     // the index magic: the data area ends here
)

// read fills p with the bytes at file offset off (the walker's position).
func (w *walker) read(p []byte, off int64, what string) error {
	n, err := io.ReadFull(w.r, p)
	if err == nil {
		return nil
	}
	if isEOF(err) {
		return ended(off+int64(n), what)
	}
	return fmt.Errorf("imagefmt: read %s at file offset %d: %w", what, off, err)
}

// next reads and checks the record at w.seq.off. For a frame it reads and
// checks the header; the caller reads the payload with payload.
func (w *walker) next() (kind recordKind, f Frame, slen int, err error) {
	off := w.seq.off
	hb := w.hb[:]
	if err := w.read(hb[:4], off, "data area"); err != nil {
		return 0, f, 0, err
	}
	switch [4]byte(hb[:4]) {
	case indexMagic:
		return recIndex, Frame{Offset: off}, 0, nil
	case zeroMagic:
		if err := w.read(hb[4:], off+4, "zero-run record"); err != nil {
			return 0, f, 0, err
		}
		z, err := parseZeroRecord(hb, off, w.hdr)
		if err == nil {
			err = w.seq.zeroRun(z)
		}
		return recZeroRun, Frame{Chunk: z.Start, Zeros: z.Count, Offset: off}, 0, err
	case frameMagic:
		if err := w.read(hb[4:], off+4, "frame header"); err != nil {
			return 0, f, 0, err
		}
		f, slen, err := parseFrameHeader(hb, off, w.hdr.ChunkSize)
		if err == nil {
			err = checkFrameChunk(&f, w.hdr)
		}
		if err == nil {
			err = w.seq.frame(&f, slen)
		}
		return recFrame, f, slen, err
	}
	return 0, f, 0, broken(RuleLayout, off, "no record where one must start (magic %q)", hb[:4])
}

// payload reads the payload of frame f (from next) into p.
func (w *walker) payload(f *Frame, p []byte) error {
	return w.read(p, f.Offset+FrameHeaderSize, "frame payload")
}

// NewStreamReader reads and checks the header.
func NewStreamReader(r io.Reader) (*StreamReader, error) {
	fixed := make([]byte, 16)
	n, err := io.ReadFull(r, fixed)
	if err != nil && !isEOF(err) {
		return nil, fmt.Errorf("imagefmt: read header: %w", err)
	}
	if isV2(fixed[:n]) {
		return newStreamV2(r, fixed)
	}
	hl, err := checkStart(fixed[:n], int64(n))
	if err != nil {
		return nil, err
	}
	b := make([]byte, hl)
	copy(b, fixed)
	if m, err := io.ReadFull(r, b[16:]); err != nil {
		if isEOF(err) {
			return nil, ended(int64(16+m), "header")
		}
		return nil, fmt.Errorf("imagefmt: read header: %w", err)
	}
	h, err := parseHeader(b)
	if err != nil {
		return nil, err
	}
	return &StreamReader{w: walker{r: r, hdr: h, seq: records{off: int64(hl)}}, hdr: h, hlen: int64(hl),
		digest: NewDigester(h), buf: make([]byte, FrameBufSize(h.ChunkSize))}, nil
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) }

// Header returns the image header.
func (s *StreamReader) Header() *Header { return s.hdr }

// Next returns the next record: a frame, or a zero run (Frame.Zeros > 0).
// A frame's Raw and Payload alias an internal buffer that the following
// call to Next overwrites: decode or copy it first. Next checks the record
// (frame header, zero-run record, order); Frame.Decode checks the payload.
// After the last record it checks the index, footer and digest and returns
// io.EOF. Any other ending returns an error wrapping ErrCorrupt (or
// ErrFormat), and Next returns it again from then on.
func (s *StreamReader) Next() (Frame, error) {
	if s.err != nil {
		return Frame{}, s.err
	}
	f, err := s.next()
	if err != nil {
		s.err = err
	}
	return f, err
}

func (s *StreamReader) next() (Frame, error) {
	if s.v2 != nil {
		return s.nextV2()
	}
	kind, f, slen, err := s.w.next()
	switch {
	case err != nil:
		return Frame{}, err
	case kind == recIndex:
		if err := s.finish(); err != nil {
			return Frame{}, err
		}
		return Frame{}, io.EOF
	case kind == recZeroRun:
		return f, nil
	}
	raw := s.buf[:FrameHeaderSize+slen]
	copy(raw, s.w.hb[:])
	if err := s.w.payload(&f, raw[FrameHeaderSize:]); err != nil {
		return Frame{}, err
	}
	f.Raw, f.Payload = raw, raw[FrameHeaderSize:]
	s.frames = append(s.frames, seenFrame{indexEntry{off: f.Offset, chunk: uint32(f.Chunk), slen: uint32(slen)}, len(s.w.seq.runs)})
	if err := s.digest.Add(f.Chunk, f.Sum); err != nil {
		return Frame{}, err // cannot happen: the walker checked the order
	}
	return f, nil
}

// finish reads from the index magic to the end of the stream and checks
// index, footer, the records passed, and the digest.
func (s *StreamReader) finish() error {
	at := s.w.seq.off
	// The index and footer are at most this long (N + Z <= NumChunks); a
	// longer tail is read on only to learn the file's size and last bytes,
	// so that the checks see the same bytes the random-access open would.
	limit := indexLen(s.hdr.NumChunks(), 0) + FooterSize - 4
	rest, err := io.ReadAll(io.LimitReader(s.w.r, limit))
	if err != nil {
		return fmt.Errorf("imagefmt: read index at file offset %d: %w", at, err)
	}
	tailBytes := append(append(make([]byte, 0, 4+len(rest)), indexMagic[:]...), rest...)
	size := at + int64(len(tailBytes))
	var last []byte // the stream's last FooterSize bytes, when they are beyond tailBytes
	if int64(len(rest)) == limit {
		n, l, err := drain(s.w.r, tailBytes[len(tailBytes)-FooterSize:])
		if err != nil {
			return fmt.Errorf("imagefmt: read past the index at file offset %d: %w", at, err)
		}
		size += n
		last = l
	}
	read := func(p []byte, off int64) error {
		switch {
		case off >= at && off+int64(len(p)) <= at+int64(len(tailBytes)):
			copy(p, tailBytes[off-at:])
		case last != nil && off >= size-int64(len(last)) && off+int64(len(p)) <= size:
			copy(p, last[off-(size-int64(len(last))):])
		default: // checkTail asks only for the footer and an index at `at`
			return fmt.Errorf("imagefmt: stream: bytes at file offset %d were not kept", off)
		}
		return nil
	}
	t, err := checkTail(s.hdr, s.hlen, size, read, at, nil)
	if err != nil {
		return err
	}
	if err := matchRecords(s.frames, s.w.seq.runs, at, t); err != nil {
		return err
	}
	if d := s.digest.Sum(); d != t.ft.digest {
		return digestError(t.footerOff, d, t.ft.digest)
	}
	return nil
}

// drain reads r to its end and returns how many bytes it read and the last
// FooterSize bytes of prev followed by them.
func drain(r io.Reader, prev []byte) (int64, []byte, error) {
	last := append([]byte(nil), prev...)
	buf := make([]byte, 64<<10)
	var n int64
	for {
		m, err := r.Read(buf)
		n += int64(m)
		last = append(last, buf[:m]...)
		if len(last) > FooterSize {
			last = append(last[:0], last[len(last)-FooterSize:]...)
		}
		if err == io.EOF {
			return n, last, nil
		}
		if err != nil {
			return n, nil, err
		}
	}
}
