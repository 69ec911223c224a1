package imagefmt

import (
	"crypto/sha256"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Compression chooses how chunks are compressed. The zero value is lz4.
type Compression struct {
	// Method is "lz4" (or "", the default) or "zstd".
	Method string
	// Level is the zstd level, 1 (fastest, the default) to 22; lz4 has
	// none. Levels map to the zstd encoder's four speeds.
	Level int
}

// ParseCompression reads "lz4", "zstd" or "zstd:LEVEL".
func ParseCompression(s string) (Compression, error) {
	name, lvl, hasLevel := strings.Cut(s, ":")
	c := Compression{Method: name}
	switch name {
	case "lz4":
		if hasLevel {
			return c, fmt.Errorf("imagefmt: lz4 takes no level (%q)", s)
		}
	case "zstd":
		if hasLevel {
			n, err := strconv.Atoi(lvl)
			if err != nil || n < 1 || n > 22 {
				return c, fmt.Errorf("imagefmt: zstd level %q: want 1 to 22", lvl)
			}
			c.Level = n
		}
	default:
		return c, fmt.Errorf("imagefmt: unknown compression %q (lz4, zstd or zstd:LEVEL)", s)
	}
	return c, nil
}

// String is the form ParseCompression reads.
func (c Compression) String() string {
	switch {
	case c.Method == "zstd" && c.Level > 0:
		return fmt.Sprintf("zstd:%d", c.Level)
	case c.Method == "":
		return "lz4"
	}
	return c.Method
}

// method is the frame method c produces (raw frames aside).
func (c Compression) method() (uint8, error) {
	switch c.Method {
	case "", "lz4":
		return MethodLZ4, nil
	case "zstd":
		if c.Level < 0 || c.Level > 22 {
			return 0, fmt.Errorf("imagefmt: zstd level %d: want 1 to 22", c.Level)
		}
		return MethodZstd, nil
	}
	return 0, fmt.Errorf("imagefmt: unknown compression %q", c.Method)
}

// Encoder turns chunks into frames. An Encoder holds compressor state and
// is not safe for concurrent use: give each goroutine its own. The zero
// value compresses with lz4; NewEncoder makes one for another method.
type Encoder struct {
	c       lz4.Compressor
	z       *zstd.Encoder // nil: lz4
	scratch []byte        // zstd output before it is known to pay
}

// NewEncoder returns an Encoder for c.
func NewEncoder(c Compression) (*Encoder, error) {
	m, err := c.method()
	if err != nil {
		return nil, err
	}
	e := &Encoder{}
	if m == MethodZstd {
		lvl := c.Level
		if lvl == 0 {
			lvl = 1
		}
		// No zstd checksum: the frame's SHA-256 and CRC already cover it.
		e.z, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(lvl)),
			zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false), zstd.WithSingleSegment(true))
		if err != nil {
			return nil, fmt.Errorf("imagefmt: zstd encoder: %w", err)
		}
	}
	return e, nil
}

// zstdDecoder is shared: DecodeAll is safe for concurrent use. Its output
// is capped by the destination's capacity (the chunk's logical length),
// so a hostile payload cannot make it allocate more.
var zstdDecoder = sync.OnceValues(func() (*zstd.Decoder, error) {
	return zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderMaxMemory(MaxChunkSize))
})

// FrameBufSize is the buffer size Encode needs for a chunk of n bytes.
func FrameBufSize(n int) int { return FrameHeaderSize + maxFrameSize(n) }

// IsZero reports whether b is all zero bytes. It is the fast path that keeps
// empty chunks from being hashed or compressed at all.
func IsZero(b []byte) bool {
	// Compare 8 bytes at a time; the compiler turns this into wide loads.
	for len(b) >= 64 {
		var x uint64
		for i := 0; i < 64; i += 8 {
			x |= uint64(b[i]) | uint64(b[i+1])<<8 | uint64(b[i+2])<<16 | uint64(b[i+3])<<24 |
				uint64(b[i+4])<<32 | uint64(b[i+5])<<40 | uint64(b[i+6])<<48 | uint64(b[i+7])<<56
		}
		if x != 0 {
			return false
		}
		b = b[64:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Encode compresses data (the logical bytes of chunk) into dst, which must
// have capacity FrameBufSize(len(data)), and returns the frame. The frame's
// Raw aliases dst.
func (e *Encoder) Encode(dst []byte, chunk int64, data []byte) (Frame, error) {
	need := FrameBufSize(len(data))
	if cap(dst) < need {
		return Frame{}, fmt.Errorf("imagefmt: encode buffer %d bytes, need %d", cap(dst), need)
	}
	dst = dst[:need]
	f := Frame{Chunk: chunk, LogicalLen: len(data), Sum: sha256.Sum256(data)}
	var n int
	var err error
	f.Method = MethodLZ4
	if e.z != nil {
		f.Method = MethodZstd
		e.scratch = e.z.EncodeAll(data, e.scratch[:0])
		n = len(e.scratch)
		if n < len(data)-len(data)/64 {
			copy(dst[FrameHeaderSize:], e.scratch)
		}
	} else {
		// lz4 reports n == 0 for incompressible input.
		n, err = e.c.CompressBlock(data, dst[FrameHeaderSize:])
	}
	// Store raw when compression saves too little to pay for decompression.
	if err != nil || n == 0 || n >= len(data)-len(data)/64 {
		f.Method = MethodRaw
		n = copy(dst[FrameHeaderSize:], data)
	}
	f.Raw = dst[:FrameHeaderSize+n]
	f.Payload = f.Raw[FrameHeaderSize:]
	f.PayloadCRC = crc(f.Payload)
	putFrameHeader(f.Raw, &f)
	return f, nil
}

// Decode decompresses and verifies the frame's payload into dst (capacity
// at least f.LogicalLen) and returns the chunk's logical bytes. A payload
// that does not decompress to bytes matching the frame's SHA-256 returns a
// *RuleError wrapping ErrChecksum, at the payload's file offset.
func (f *Frame) Decode(dst []byte) ([]byte, error) {
	b, err := f.decode(dst)
	if err != nil && f.File != "" {
		err = &fileError{path: f.File, err: err}
	}
	return b, err
}

func (f *Frame) decode(dst []byte) ([]byte, error) {
	if cap(dst) < f.LogicalLen {
		dst = make([]byte, f.LogicalLen)
	}
	dst = dst[:f.LogicalLen]
	at := f.Offset + FrameHeaderSize
	if crc(f.Payload) != f.PayloadCRC {
		return nil, badSum(RulePayloadCRC, at, "stored bytes damaged (payload CRC)")
	}
	switch f.Method {
	case MethodRaw:
		if len(f.Payload) != f.LogicalLen {
			return nil, broken(RuleFrame, f.Offset+16, "raw payload of %d bytes for a %d-byte chunk", len(f.Payload), f.LogicalLen)
		}
		copy(dst, f.Payload)
	case MethodLZ4:
		n, err := lz4.UncompressBlock(f.Payload, dst)
		if err != nil {
			return nil, badSum(RulePayload, at, "lz4: %v", err)
		}
		if n != f.LogicalLen {
			return nil, badSum(RulePayload, at, "decompressed %d bytes, want %d", n, f.LogicalLen)
		}
	case MethodZstd:
		d, err := zstdDecoder()
		if err != nil {
			return nil, fmt.Errorf("imagefmt: zstd decoder: %w", err)
		}
		out, err := d.DecodeAll(f.Payload, dst[:0:f.LogicalLen])
		if err != nil {
			return nil, badSum(RulePayload, at, "zstd: %v", err)
		}
		if len(out) != f.LogicalLen || &out[0] != &dst[0] {
			return nil, badSum(RulePayload, at, "decompressed %d bytes, want %d", len(out), f.LogicalLen)
		}
	default:
		return nil, broken(RuleFrame, f.Offset+4, "unknown compression method %d", f.Method)
	}
	if sha256.Sum256(dst) != f.Sum {
		return nil, badSum(RuleChunkSum, at, "SHA-256 of the decompressed bytes")
	}
	return dst, nil
}
