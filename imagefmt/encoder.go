package imagefmt

import (
	"crypto/sha256"
	"fmt"

	"github.com/pierrec/lz4/v4"
)

// Encoder turns chunks into frames. An Encoder holds lz4 state and is not
// safe for concurrent use: give each goroutine its own.
type Encoder struct {
	c lz4.Compressor
}

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
	n, err := e.c.CompressBlock(data, dst[FrameHeaderSize:])
	// lz4 reports n == 0 for incompressible input; store raw then, and also
	// when compression saves too little to pay for decompression.
	if err != nil || n == 0 || n >= len(data)-len(data)/64 {
		f.Method = MethodRaw
		n = copy(dst[FrameHeaderSize:], data)
	} else {
		f.Method = MethodLZ4
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
	default:
		return nil, broken(RuleFrame, f.Offset+4, "unknown compression method %d", f.Method)
	}
	if sha256.Sum256(dst) != f.Sum {
		return nil, badSum(RuleChunkSum, at, "SHA-256 of the decompressed bytes")
	}
	return dst, nil
}
