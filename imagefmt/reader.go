package imagefmt

import (
	"encoding/binary"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"os"
	"runtime"
	"sort"
	"sync"

	"github.com/dimg-project/dimg/internal/lru"
)

// ReaderOptions configure a Reader; the zero value is the default.
type ReaderOptions struct {
	// CacheBytes bounds the cache of decompressed chunks (default 32 MiB,
	// at least 4 chunks).
	CacheBytes int64
	// Logger, if set, gets one line per chunk that fails verification.
	Logger *slog.Logger
}

// Reader is an io.ReaderAt over the logical disk of an image. It is safe
// for concurrent use.
type Reader struct {
	ra      io.ReaderAt
	size    int64 // file size
	hdr     *Header
	ft      *footer
	entries []indexEntry              // sorted by chunk
	runs    []ZeroRun                 // sorted
	cache   *lru.Cache[int64, []byte] // decompressed chunks; nil data: not stored
	log     *slog.Logger
	closer  io.Closer
	bufs    sync.Pool // frame read buffers
	// prefetch bounds background chunk loads (one slot per core).
	prefetch chan struct{}
}

// Open opens an image file.
func Open(path string) (*Reader, error) {
	return OpenOptions(path, ReaderOptions{})
}

// OpenOptions opens an image file with options.
func OpenOptions(path string, opt ReaderOptions) (*Reader, error) {
	// Stat before open: opening a FIFO would block until a writer appears.
	if st, err := os.Stat(path); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("imagefmt: %s is not a regular file (to read an image from a pipe, use a stream reader: restore -)", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("imagefmt: %s is not a regular file", path)
	}
	r, err := NewReader(f, st.Size(), opt)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r.closer = f
	return r, nil
}

// NewReader opens an image held in ra (size bytes). It reads the header,
// the footer and the index; nothing else until ReadAt asks.
func NewReader(ra io.ReaderAt, size int64, opt ReaderOptions) (*Reader, error) {
	minSize := int64(headerFixedSize + 8 + indexHeaderSize + FooterSize)
	if size < minSize {
		return nil, fmt.Errorf("%w: %d bytes is too small to be an image", ErrTruncated, size)
	}
	// Header: one read of its fixed part, then the rest if it is longer.
	buf := make([]byte, min(size, 64<<10))
	if _, err := ra.ReadAt(buf, 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("imagefmt: read header: %w", err)
	}
	hl, err := headerLen(buf)
	if err != nil {
		return nil, err
	}
	if int64(hl) > size-FooterSize {
		return nil, fmt.Errorf("%w: header runs past the end", ErrTruncated)
	}
	if hl > len(buf) {
		buf = make([]byte, hl)
		if _, err := ra.ReadAt(buf, 0); err != nil {
			return nil, fmt.Errorf("imagefmt: read header: %w", err)
		}
	}
	hdr, err := unmarshalHeader(buf)
	if err != nil {
		return nil, err
	}
	// Footer: the last FooterSize bytes.
	fb := make([]byte, FooterSize)
	if _, err := ra.ReadAt(fb, size-FooterSize); err != nil {
		return nil, fmt.Errorf("imagefmt: read footer: %w", err)
	}
	ft, err := unmarshalFooter(fb)
	if err != nil {
		return nil, err
	}
	if ft.uuid != hdr.UUID {
		return nil, fmt.Errorf("%w: footer belongs to image %s, header to %s", ErrCorrupt, formatUUID(ft.uuid), hdr.UUIDString())
	}
	idxLen := int64(indexHeaderSize) + ft.count*indexEntrySize + ft.zeroRuns*zeroRunSize
	if ft.count < 0 || ft.count > hdr.NumChunks() || ft.zeroRuns < 0 || ft.zeroRuns > hdr.NumChunks() || ft.indexOff < int64(hl) || ft.indexOff+idxLen != size-FooterSize {
		return nil, fmt.Errorf("%w: index location (offset %d, %d entries) does not fit the file", ErrCorrupt, ft.indexOff, ft.count)
	}
	idx := make([]byte, idxLen)
	if _, err := ra.ReadAt(idx, ft.indexOff); err != nil {
		return nil, fmt.Errorf("imagefmt: read index: %w", err)
	}
	if crc(idx) != ft.indexCRC {
		return nil, fmt.Errorf("%w: index checksum mismatch", ErrCorrupt)
	}
	if [4]byte(idx[0:4]) != indexMagic || int64(binary.LittleEndian.Uint64(idx[8:])) != ft.count ||
		int64(binary.LittleEndian.Uint64(idx[16:])) != ft.zeroRuns {
		return nil, fmt.Errorf("%w: bad index header", ErrCorrupt)
	}
	entries := make([]indexEntry, ft.count)
	le := binary.LittleEndian
	prevChunk, prevEnd := int64(-1), int64(hl)
	for i := range entries {
		p := idx[indexHeaderSize+i*indexEntrySize:]
		c, off, slen := int64(le.Uint64(p[0:])), int64(le.Uint64(p[8:])), int64(le.Uint32(p[16:]))
		// Entries must be sorted, frames laid out in order without overlap,
		// inside the data area, and of a plausible size.
		if c <= prevChunk || c >= hdr.NumChunks() || off < prevEnd || slen <= 0 ||
			slen > int64(maxFrameSize(hdr.ChunkSize)) || off+FrameHeaderSize+slen > ft.indexOff {
			return nil, fmt.Errorf("%w: index entry %d (chunk %d, offset %d, length %d) is invalid", ErrCorrupt, i, c, off, slen)
		}
		entries[i] = indexEntry{off: off, chunk: uint32(c), slen: uint32(slen)}
		prevChunk, prevEnd = c, off+FrameHeaderSize+slen
	}
	runs := make([]ZeroRun, ft.zeroRuns)
	zp := idx[indexHeaderSize+indexEntrySize*int(ft.count):]
	prevEndChunk := int64(0)
	for i := range runs {
		z := ZeroRun{Start: int64(le.Uint64(zp[i*zeroRunSize:])), Count: int64(le.Uint64(zp[i*zeroRunSize+8:]))}
		if z.Start < prevEndChunk || z.Count <= 0 || z.Count > hdr.NumChunks()-z.Start {
			return nil, fmt.Errorf("%w: zero run %d (%d+%d) is invalid", ErrCorrupt, i, z.Start, z.Count)
		}
		runs[i] = z
		prevEndChunk = z.Start + z.Count
	}
	cb := opt.CacheBytes
	if cb <= 0 {
		cb = 32 << 20
	}
	n := max(int(cb/int64(hdr.ChunkSize)), 4)
	r := &Reader{ra: ra, size: size, hdr: hdr, ft: ft, entries: entries, runs: runs, cache: lru.New[int64, []byte](n), log: opt.Logger}
	r.prefetch = make(chan struct{}, runtime.GOMAXPROCS(0))
	r.bufs.New = func() any { b := make([]byte, FrameBufSize(hdr.ChunkSize)); return &b }
	return r, nil
}

// Close closes the file opened by Open.
func (r *Reader) Close() error {
	if r.closer != nil {
		return r.closer.Close()
	}
	return nil
}

// Header returns the image header.
func (r *Reader) Header() *Header { return r.hdr }

// Size is the logical disk size.
func (r *Reader) Size() int64 { return r.hdr.DiskSize }

// SectorSize is the disk's logical sector size.
func (r *Reader) SectorSize() int { return r.hdr.SectorSize }

// FileSize is the size of the image file.
func (r *Reader) FileSize() int64 { return r.size }

// Digest is the image digest recorded in the footer.
func (r *Reader) Digest() [32]byte { return r.ft.digest }

// StoredChunks is the number of chunks stored in the image.
func (r *Reader) StoredChunks() int { return len(r.entries) }

// Entries yields the stored chunks in order.
func (r *Reader) Entries() iter.Seq[Entry] {
	return func(yield func(Entry) bool) {
		for _, e := range r.entries {
			if !yield(Entry{Chunk: int64(e.chunk), Offset: e.off, StoredLen: int(e.slen)}) {
				return
			}
		}
	}
}

// lookup finds the index entry of chunk c.
func (r *Reader) lookup(c int64) (indexEntry, bool) {
	i := sort.Search(len(r.entries), func(i int) bool { return int64(r.entries[i].chunk) >= c })
	if i < len(r.entries) && int64(r.entries[i].chunk) == c {
		return r.entries[i], true
	}
	return indexEntry{}, false
}

// ZeroRuns returns the runs of in-use all-zero chunks, in order.
func (r *Reader) ZeroRuns() []ZeroRun { return r.runs }

// ChunkState tells whether chunk c is stored, a used zero chunk, or unused.
func (r *Reader) ChunkState(c int64) ChunkState {
	if r.IsStored(c) {
		return ChunkStored
	}
	i := sort.Search(len(r.runs), func(i int) bool { return r.runs[i].Start+r.runs[i].Count > c })
	if i < len(r.runs) && r.runs[i].Start <= c {
		return ChunkZero
	}
	return ChunkUnused
}

// IsStored reports whether chunk c is stored (absent chunks read as zeros).
func (r *Reader) IsStored(c int64) bool { _, ok := r.lookup(c); return ok }

func (r *Reader) chunkErr(c int64, err error) error {
	off := c * int64(r.hdr.ChunkSize)
	return &ChunkError{Chunk: c, Off: off, Len: int64(r.hdr.ChunkLen(c)), Err: err}
}

// ReadFrame reads the stored frame of chunk c (header + payload, as in the
// file) into buf (grown as needed). It checks the frame header, not the
// payload: call Frame.Decode for that. ok is false for an absent chunk.
func (r *Reader) ReadFrame(c int64, buf []byte) (f Frame, ok bool, err error) {
	e, ok := r.lookup(c)
	if !ok {
		return Frame{}, false, nil
	}
	n := FrameHeaderSize + int(e.slen)
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := r.ra.ReadAt(buf, e.off); err != nil {
		if err == io.EOF {
			err = ErrTruncated
		}
		return Frame{}, true, r.chunkErr(c, fmt.Errorf("read frame at file offset %d: %w", e.off, err))
	}
	f, err = ParseFrame(buf, r.hdr.ChunkSize)
	if err != nil {
		return Frame{}, true, r.chunkErr(c, fmt.Errorf("frame at file offset %d: %w", e.off, err))
	}
	if f.Chunk != c || len(f.Payload) != int(e.slen) || f.LogicalLen != r.hdr.ChunkLen(c) {
		return Frame{}, true, r.chunkErr(c, fmt.Errorf("%w: frame at file offset %d is for chunk %d, length %d", ErrCorrupt, e.off, f.Chunk, f.LogicalLen))
	}
	return f, true, nil
}

// ReadChunk returns chunk c's verified logical bytes in dst (grown as
// needed); for an absent chunk it returns nil and ok false.
func (r *Reader) ReadChunk(c int64, dst []byte) (data []byte, ok bool, err error) {
	bp := r.bufs.Get().(*[]byte)
	defer r.bufs.Put(bp)
	f, ok, err := r.ReadFrame(c, *bp)
	if err != nil || !ok {
		return nil, ok, err
	}
	if cap(f.Raw) > cap(*bp) {
		*bp = f.Raw[:0]
	}
	data, err = f.Decode(dst)
	if err != nil {
		err = r.chunkErr(c, err)
		if r.log != nil {
			r.log.Error("image chunk failed verification", "chunk", c, "err", err)
		}
		return nil, true, err
	}
	return data, true, nil
}

// ReadAt reads logical disk bytes. Absent chunks read as zeros; a chunk
// that fails verification returns a *ChunkError, never wrong bytes.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("imagefmt: negative offset")
	}
	if off >= r.hdr.DiskSize {
		return 0, io.EOF
	}
	var eof error
	if rem := r.hdr.DiskSize - off; int64(len(p)) > rem {
		p = p[:rem]
		eof = io.EOF
	}
	cs := int64(r.hdr.ChunkSize)
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		c, in := pos/cs, int(pos%cs)
		want := min(len(p)-n, r.hdr.ChunkLen(c)-in)
		data, err := r.chunk(c)
		if err != nil {
			return n, err
		}
		if data == nil {
			clear(p[n : n+want])
		} else {
			copy(p[n:n+want], data[in:])
		}
		n += want
	}
	return n, eof
}
