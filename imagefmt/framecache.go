package imagefmt

import "encoding/binary"

// FrameCache keeps stored frames outside the image file, so that a frame
// read once is not read from the image again: a remote image's local
// chunk cache (cloneio/remote) plugs in here. It is only ever a copy: a
// frame it returns is checked like one read from the file (the header's
// CRC, the chunk, method, length and SHA-256 the index names, the payload
// CRC, then the chunk's SHA-256 when decoded), and one that fails is
// dropped and read from the image instead. Implementations must be safe
// for concurrent use; Put and Drop may do nothing.
type FrameCache interface {
	// GetFrame returns the frame stored under k (header and payload, as
	// in the image file), in buf when it fits; ok false on a miss.
	GetFrame(k FrameKey, buf []byte) (frame []byte, ok bool)
	// PutFrame stores a copy of frame under k (the caller keeps frame).
	PutFrame(k FrameKey, frame []byte)
	// DropFrame forgets the frame stored under k: it failed its checks.
	DropFrame(k FrameKey)
}

// FrameKey names a stored frame by the image and the chunk's checksum, so
// that a frame is found again whatever file offset or URL it was read
// from, by every process and every commit that still has it.
//
// For a version 2 image, Image is the image UUID (its first 16 bytes) and
// Sum the SHA-256 the index records for the chunk: an unchanged chunk
// keeps its key across commits; a changed one gets another. A delta's
// chunks inherited from its base are read, and keyed, by the base. A
// version 1 image's index records no per-chunk sum: Image is then its
// digest (which covers every chunk's sum) and Sum is zero.
type FrameKey struct {
	Image [32]byte
	Chunk int64
	Sum   [32]byte
}

// Bytes is k in a fixed 72-byte encoding, for a cache to hash or store.
func (k FrameKey) Bytes() []byte {
	b := make([]byte, 0, 72)
	b = append(b, k.Image[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(k.Chunk))
	return append(b, k.Sum[:]...)
}

// frameKey is the FrameKey of chunk c whose index entry records sum (zero
// for a version 1 image).
func (r *Reader) frameKey(c int64, sum [32]byte) FrameKey {
	k := FrameKey{Chunk: c, Sum: sum}
	if r.t != nil {
		copy(k.Image[:], r.hdr.UUID[:])
	} else {
		k.Image = r.ft.digest
	}
	return k
}

// readFrameBytes reads the n bytes of the frame of chunk c at file offset
// off into buf: from the frame cache when it has them and check accepts
// them, else from the file (and then into the cache once check accepts
// them; nocache: straight from the file). check parses and matches the frame with its index entry.
func (r *Reader) readFrameBytes(c int64, off int64, n int, sum [32]byte, buf []byte, nocache bool, check func([]byte) (Frame, error)) (Frame, error) {
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	fc := r.frames
	if fc != nil && !nocache {
		k := r.frameKey(c, sum)
		if b, ok := fc.GetFrame(k, buf); ok {
			if len(b) == n {
				if f, err := check(b); err == nil && crc(f.Payload) == f.PayloadCRC {
					f.cached, f.keySum = true, sum
					return f, nil
				}
			}
			fc.DropFrame(k)
		}
	}
	if err := readFull(r.ra, buf, off); err != nil {
		return Frame{}, err
	}
	f, err := check(buf)
	if err != nil {
		return Frame{}, err
	}
	if fc != nil && crc(f.Payload) == f.PayloadCRC {
		fc.PutFrame(r.frameKey(c, sum), buf)
	}
	return f, nil
}

// dropCached forgets a cached frame that failed to decode, so that the
// next read of the chunk goes to the image.
func (r *Reader) dropCached(f *Frame) {
	if r.frames != nil && f.cached {
		r.frames.DropFrame(r.frameKey(f.Chunk, f.keySum))
	}
}
