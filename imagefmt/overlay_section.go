package imagefmt

import (
	"fmt"
	"io"
)

// ReadWriterAt is a disk that can be read and written in place.
type ReadWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// Section is a read-write view of bytes [start, start+size) of a disk, a
// partition. Unlike io.NewOffsetWriter it enforces its end for writes too:
// a write that runs past it fails with ErrBeyondEnd and writes nothing, so
// a filesystem in one partition can never write into the next.
type Section struct {
	rw          ReadWriterAt
	start, size int64
}

// NewSection returns the view of [start, start+size) of rw.
func NewSection(rw ReadWriterAt, start, size int64) (*Section, error) {
	if start < 0 || size < 0 || start > maxDiskSize || size > maxDiskSize {
		return nil, fmt.Errorf("imagefmt: section of %d bytes at offset %d is invalid", size, start)
	}
	return &Section{rw: rw, start: start, size: size}, nil
}

// Section returns the view of [start, start+size) of the overlay's disk,
// refusing one that does not lie inside the disk.
func (o *Overlay) Section(start, size int64) (*Section, error) {
	if start < 0 || size < 0 || start > o.base.Size || size > o.base.Size-start {
		return nil, fmt.Errorf("imagefmt: section of %d bytes at offset %d does not fit the %d-byte disk", size, start, o.base.Size)
	}
	return NewSection(o, start, size)
}

// Size is the section's length.
func (s *Section) Size() int64 { return s.size }

// Start is the section's offset on the disk.
func (s *Section) Start() int64 { return s.start }

// ReadAt reads section bytes; at the end of the section it returns io.EOF.
func (s *Section) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("imagefmt: section: read at negative offset %d", off)
	}
	if off >= s.size {
		return 0, io.EOF
	}
	var eof error
	if rem := s.size - off; int64(len(p)) > rem {
		p = p[:rem]
		eof = io.EOF
	}
	n, err := s.rw.ReadAt(p, s.start+off)
	if n == len(p) && err == io.EOF {
		err = nil
	}
	if err == nil {
		err = eof
	}
	return n, err
}

// WriteAt writes section bytes. A write that runs past the end of the
// section fails with ErrBeyondEnd and writes nothing.
func (s *Section) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off > s.size || int64(len(p)) > s.size-off {
		return 0, fmt.Errorf("%w: %d bytes at offset %d, the section has %d bytes", ErrBeyondEnd, len(p), off, s.size)
	}
	return s.rw.WriteAt(p, s.start+off)
}
