package multicast

import (
	"context"
	"fmt"
	"hash/crc32"

	"github.com/dimg-project/dimg/imagefmt"
)

// object is one stored frame of the image, or a zero-run table.
type object struct {
	chunk  uint32
	length uint32
	table  []byte // a zero-run table's bytes; nil for frames
}

// objectSource is the sender's view of the image: its objects in pass
// order (the frames in chunk order, then the zero-run tables), read with
// their payload checked so a damaged image stops the session instead of
// reaching targets.
type objectSource struct {
	img    *imagefmt.Reader
	objs   []object
	frames uint32 // objects below this are frames
	bytes  int64  // bytes of all objects: one pass
	g      *geometry
}

// newObjectSource lists the objects of img.
func newObjectSource(img *imagefmt.Reader) (*objectSource, error) {
	s := &objectSource{img: img}
	for e := range img.Entries() {
		s.objs = append(s.objs, object{chunk: uint32(e.Chunk), length: uint32(imagefmt.FrameHeaderSize + e.StoredLen)})
		s.bytes += int64(imagefmt.FrameHeaderSize + e.StoredLen)
	}
	s.frames = uint32(len(s.objs))
	for _, tb := range zeroRunTables(img.ZeroRuns(), img.Header().ChunkSize) {
		s.objs = append(s.objs, object{length: uint32(len(tb)), table: tb})
		s.bytes += int64(len(tb))
	}
	// A damaged index node stops Entries and ZeroRuns early: refuse the
	// image before the session starts, not after every receiver wrote a
	// disk that cannot match the digest.
	if err := img.Err(); err != nil {
		return nil, fmt.Errorf("multicast: %w", err)
	}
	if len(s.objs) > maxObjects {
		return nil, fmt.Errorf("multicast: image has %d stored chunks; receivers take at most %d (capture with a larger chunk size)", len(s.objs), maxObjects)
	}
	return s, nil
}

// paddedLen is n rounded up to whole symbols.
func (s *objectSource) paddedLen(n int) int { return s.g.symbols(n) * s.g.sym }

// read reads object o into buf, zero-padded to whole symbols.
func (s *objectSource) read(o uint32, buf []byte) ([]byte, error) {
	ob := s.objs[o]
	if ob.table != nil {
		n := s.paddedLen(len(ob.table))
		b := append(buf[:0], ob.table...)
		return append(b, make([]byte, n-len(b))...), nil
	}
	f, ok, err := s.img.ReadFrame(int64(ob.chunk), buf[:0])
	if err == nil && !ok {
		err = fmt.Errorf("chunk %d vanished from the index", ob.chunk)
	}
	if err == nil && (len(f.Raw) != int(ob.length) || crc32.Checksum(f.Payload, castagnoli) != f.PayloadCRC) {
		err = fmt.Errorf("chunk %d: %w: stored bytes damaged (payload CRC)", ob.chunk, imagefmt.ErrChecksum)
	}
	if err != nil {
		return buf, fmt.Errorf("multicast: read image: %w", err)
	}
	n := s.paddedLen(len(f.Raw))
	var b []byte
	if cap(f.Raw) >= n {
		b = f.Raw[:n]
		clear(b[len(f.Raw):])
	} else {
		b = append(f.Raw, make([]byte, n-len(f.Raw))...)
	}
	return b, nil
}

// prefetched is an object read ahead for the pass.
type prefetched struct {
	obj uint32
	buf []byte // padded to whole symbols
	err error
}

// prefetch reads the pass's objects in order into buffers from free.
func (s *objectSource) prefetch(ctx context.Context, out chan<- prefetched, free chan []byte) {
	defer close(out)
	for i := range s.objs {
		var buf []byte
		select {
		case buf = <-free:
		case <-ctx.Done():
			return
		}
		buf, err := s.read(uint32(i), buf)
		select {
		case out <- prefetched{obj: uint32(i), buf: buf, err: err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// chunks turns object ranges (as a receiver reports what it lacks) into
// chunk ranges; zero-run tables have no chunk and are left out.
func (s *objectSource) chunks(spans []span) []ChunkRange {
	var out []ChunkRange
	for _, sp := range spans {
		end := min(int64(sp.first)+int64(sp.count), int64(s.frames))
		for o := int64(sp.first); o < end; o++ {
			c := int64(s.objs[o].chunk)
			if l := len(out); l > 0 && out[l-1].First+out[l-1].Count == c {
				out[l-1].Count++
			} else {
				out = append(out, ChunkRange{First: c, Count: 1})
			}
		}
	}
	return out
}
