package imagefmt

import (
	"bufio"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/dimg-project/dimg/internal/lru"
)

// ReaderOptions configure a Reader; the zero value is the default.
type ReaderOptions struct {
	// CacheBytes bounds the cache of decompressed chunks (default 32 MiB,
	// at least 4 chunks).
	CacheBytes int64
	// Logger, if set, gets one line per chunk that fails verification.
	Logger *slog.Logger
	// Commit opens an older commit of a version 2 image (numbered from
	// 1, the capture); 0 opens the newest.
	Commit int64
	// Base is the opened base of a delta image (required for one, see
	// OpenChain); reads of chunks the delta does not hold go to it.
	Base *Reader
	// Frames, if set, keeps a copy of the frames read (see FrameCache):
	// a remote image's local chunk cache. OpenChain takes each file's
	// own (FrameCacher) when this is nil.
	Frames FrameCache
	// Opener, for OpenChain, opens the image files of a chain by name
	// (nil: local files); a remote source passes one that opens URLs.
	Opener Opener
	// BasePath, for OpenChain, is where the base of a delta image is,
	// instead of the path hint its header records (the hint is where the
	// base was when the delta was made; the base may have moved since).
	BasePath string
}

// Reader is an io.ReaderAt over the logical disk of an image. It is safe
// for concurrent use.
type Reader struct {
	ra        io.ReaderAt
	size      int64 // file size
	hlen      int64 // header length H
	hdr       *Header
	ft        *footer
	footerOff int64
	entries   []indexEntry // sorted by chunk
	runs      []ZeroRun    // sorted
	// gapOK has bit i set once the records between frames i-1 and i
	// (gap i; gap 0 starts after the header, the last ends at the index)
	// were read and checked (checkGap).
	gapOK  []atomic.Uint64
	cache  *lru.Cache[int64, []byte] // decompressed chunks; nil data: not stored
	frames FrameCache                // copies of frames outside the file, or nil
	log    *slog.Logger
	closer io.Closer
	bufs   sync.Pool // frame read buffers
	// prefetch bounds background chunk loads (one slot per core).
	prefetch chan struct{}
	// t is a version 2 image's index (nil for version 1).
	t *treeIndex
	// name is the file's path when opened by path (for messages).
	name string
	// chain holds the bases OpenChain opened, closed with this Reader.
	chain    []*Reader
	errMu    sync.Mutex
	indexErr error
}

// Open opens an image file.
func Open(path string) (*Reader, error) {
	return OpenOptions(path, ReaderOptions{})
}

// OpenOptions opens an image file with options.
func OpenOptions(path string, opt ReaderOptions) (*Reader, error) {
	f, size, err := openRegular(path, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	r, err := NewReader(f, size, opt)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r.closer, r.name = f, path
	return r, nil
}

// openRegular opens the image file at path with flag (os.O_RDONLY or
// os.O_RDWR) and returns it with its size, refusing anything but a regular
// file: the path is checked before opening, since opening a FIFO read-only
// waits for a writer, and the opened file again, since the path may have
// been replaced in between.
func openRegular(path string, flag int) (*os.File, int64, error) {
	if st, err := os.Stat(path); err != nil {
		return nil, 0, err
	} else if !st.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("imagefmt: %s is not a regular file (to read an image from a pipe, use a stream reader: restore -)", path)
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("imagefmt: %s is not a regular file", path)
	}
	return f, st.Size(), nil
}

// NewReader opens an image held in ra (size bytes). It reads and checks
// the header, the footer and the index (FORMAT.md, "Validity": the rules
// checked at open); nothing else until ReadAt asks.
func NewReader(ra io.ReaderAt, size int64, opt ReaderOptions) (*Reader, error) {
	size = max(size, 0)
	read := func(p []byte, off int64) error { return readFull(ra, p, off) }
	// Header: one read of the first 64 KiB (all of it, in practice).
	buf := make([]byte, min(size, 64<<10))
	if err := read(buf, 0); err != nil {
		return nil, fmt.Errorf("imagefmt: read header: %w", err)
	}
	if isV2(buf) {
		return newReaderV2(ra, size, buf, opt)
	}
	hl, err := checkStart(buf[:min(len(buf), 16)], size)
	if err != nil {
		return nil, err
	}
	if int64(hl) > size {
		return nil, ended(size, "header")
	}
	if hl > len(buf) {
		buf = make([]byte, hl)
		if err := read(buf, 0); err != nil {
			return nil, fmt.Errorf("imagefmt: read header: %w", err)
		}
	}
	hdr, err := parseHeader(buf[:hl])
	if err != nil {
		return nil, err
	}
	if opt.Commit > 1 || opt.Base != nil {
		return nil, fmt.Errorf("imagefmt: a version 1 image has one commit and no base")
	}
	r := &Reader{ra: ra, size: size, hlen: int64(hl), hdr: hdr, log: opt.Logger, frames: opt.Frames}
	t, err := checkTail(hdr, int64(hl), size, read, -1, r.walkGap)
	if err != nil {
		return nil, err
	}
	cb := opt.CacheBytes
	if cb <= 0 {
		cb = 32 << 20
	}
	r.ft, r.footerOff, r.entries, r.runs = t.ft, t.footerOff, t.entries, t.runs
	r.cache = lru.New[int64, []byte](max(int(cb/int64(hdr.ChunkSize)), 4))
	r.gapOK = make([]atomic.Uint64, (len(t.entries)+1+63)/64)
	r.prefetch = make(chan struct{}, runtime.GOMAXPROCS(0))
	r.bufs.New = func() any { b := make([]byte, FrameBufSize(hdr.ChunkSize)); return &b }
	return r, nil
}

// readFull reads len(p) bytes at off; an image that ends early was
// changed under the reader (its size was checked at open).
func readFull(ra io.ReaderAt, p []byte, off int64) error {
	n, err := ra.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("imagefmt: read %d bytes at file offset %d: %w", len(p), off, err)
}

// Close closes the file opened by Open (and the bases OpenChain opened).
func (r *Reader) Close() error {
	var err error
	if r.closer != nil {
		err = r.closer.Close()
	}
	for _, b := range r.chain {
		if e := b.Close(); err == nil {
			err = e
		}
	}
	return err
}

// Path is the image file's path when it was opened by path ("" otherwise).
func (r *Reader) Path() string { return r.name }

// Header returns the image header.
func (r *Reader) Header() *Header { return r.hdr }

// Size is the logical disk size.
func (r *Reader) Size() int64 { return r.hdr.DiskSize }

// SectorSize is the disk's logical sector size.
func (r *Reader) SectorSize() int { return r.hdr.SectorSize }

// FileSize is the size of the image file.
func (r *Reader) FileSize() int64 { return r.size }

// Digest is the image digest: recorded in the footer (version 1), the
// opened commit's root hash (version 2).
func (r *Reader) Digest() [32]byte {
	if r.t != nil {
		return r.t.commit.digest
	}
	return r.ft.digest
}

// StoredChunks is the number of chunks stored in the image (of a delta:
// in the disk it composes with its bases).
func (r *Reader) StoredChunks() int {
	if r.t != nil {
		return r.storedChunksV2()
	}
	return len(r.entries)
}

// Entries yields the stored chunks in order. A version 2 image reads its
// index while yielding: if that fails, Entries stops early and Err says
// why. Of a delta, it yields the composed disk's chunks; Offset is then in
// the file that holds the frame (ReadFrame finds it).
func (r *Reader) Entries() iter.Seq[Entry] {
	if r.t != nil {
		return r.entriesV2
	}
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

// ZeroRuns returns the runs of in-use all-zero chunks, in order (see
// Entries about errors).
func (r *Reader) ZeroRuns() []ZeroRun {
	if r.t != nil {
		return r.zeroRunsV2()
	}
	return r.runs
}

// ChunkState tells whether chunk c is stored, a used zero chunk, or
// unused. When a version 2 index node cannot be read it says stored, so
// that the read of the chunk reports the error.
func (r *Reader) ChunkState(c int64) ChunkState {
	s, _ := r.chunkState(c)
	return s
}

func (r *Reader) chunkState(c int64) (ChunkState, error) {
	if r.t != nil {
		return r.chunkStateV2(c)
	}
	return r.chunkStateV1(c), nil
}

func (r *Reader) chunkStateV1(c int64) ChunkState {
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
func (r *Reader) IsStored(c int64) bool {
	if r.t != nil {
		return r.ChunkState(c) == ChunkStored
	}
	_, ok := r.lookup(c)
	return ok
}

func (r *Reader) chunkErr(c int64, err error) error {
	off := c * int64(r.hdr.ChunkSize)
	return &ChunkError{Chunk: c, Off: off, Len: int64(r.hdr.ChunkLen(c)), Err: err}
}

// ReadFrame reads the stored frame of chunk c (header + payload, as in the
// file) into buf (grown as needed). It checks the frame header, not the
// payload: call Frame.Decode for that. ok is false for a chunk not stored.
func (r *Reader) ReadFrame(c int64, buf []byte) (f Frame, ok bool, err error) {
	return r.readFrame(c, buf, false)
}

// readFrame is ReadFrame; nocache reads the image file even when the
// frame cache has the frame (a cached copy failed to decode).
func (r *Reader) readFrame(c int64, buf []byte, nocache bool) (f Frame, ok bool, err error) {
	if r.t != nil {
		return r.readFrameV2(c, buf, nocache)
	}
	e, ok := r.lookup(c)
	if !ok {
		return Frame{}, false, nil
	}
	n := FrameHeaderSize + int(e.slen)
	f, err = r.readFrameBytes(c, e.off, n, [32]byte{}, buf, nocache, func(b []byte) (Frame, error) {
		f, slen, err := parseFrameHeader(b, e.off, r.hdr.ChunkSize)
		if err == nil {
			err = checkFrameChunk(&f, r.hdr)
		}
		if err == nil {
			err = matchFrame(&f, slen, e)
		}
		if err != nil {
			return Frame{}, err
		}
		f.Raw, f.Payload = b, b[FrameHeaderSize:]
		return f, nil
	})
	if err != nil {
		return Frame{}, true, r.chunkErr(c, err)
	}
	return f, true, nil
}

// ReadChunk returns chunk c's verified logical bytes in dst (grown as
// needed). For a chunk not stored it returns nil and ok false, after
// checking the zero-run records around it (once per reader).
func (r *Reader) ReadChunk(c int64, dst []byte) (data []byte, ok bool, err error) {
	if c < 0 || c >= r.hdr.NumChunks() {
		return nil, false, fmt.Errorf("imagefmt: chunk %d out of range (disk of %d chunks)", c, r.hdr.NumChunks())
	}
	bp := r.bufs.Get().(*[]byte)
	defer r.bufs.Put(bp)
	f, ok, err := r.ReadFrame(c, *bp)
	if !ok && r.t != nil {
		return nil, false, err
	}
	if !ok {
		if err := r.checkGap(r.gapOf(c)); err != nil {
			return nil, false, r.chunkErr(c, err)
		}
		return nil, false, nil
	}
	if err != nil {
		return nil, ok, err
	}
	if cap(f.Raw) > cap(*bp) {
		*bp = f.Raw[:0]
	}
	data, err = f.Decode(dst)
	if err != nil && f.cached {
		// The cached copy is bad: forget it and read the image.
		r.dropCached(&f)
		f, _, err = r.readFrame(c, *bp, true)
		if err != nil {
			return nil, true, err
		}
		if cap(f.Raw) > cap(*bp) {
			*bp = f.Raw[:0]
		}
		data, err = f.Decode(dst)
	}
	if err != nil {
		err = r.chunkErr(c, err)
		if r.log != nil {
			r.log.Error("image chunk failed verification", "chunk", c, "err", err)
		}
		return nil, true, err
	}
	return data, true, nil
}

// gapOf is the gap a chunk not stored lies in: the one before the first
// frame of a later chunk.
func (r *Reader) gapOf(c int64) int {
	return sort.Search(len(r.entries), func(i int) bool { return int64(r.entries[i].chunk) > c })
}

// CheckRecords reads and checks every zero-run record of the data area
// against the index, which the open does not read (FORMAT.md, "Validity").
// Verify calls it; a restore that does not read every chunk through
// ReadAt should. A version 2 image's run records serve only readers of a
// stream (its index tree holds the zero runs): VerifyWith's AllCommits
// reads the file as a stream.
func (r *Reader) CheckRecords() error {
	if r.t != nil {
		return nil
	}
	for i := 0; i <= len(r.entries); i++ {
		if err := r.checkGap(i); err != nil {
			return err
		}
	}
	return nil
}

// checkGap reads the records between frames i-1 and i (the header and
// frame 0 for i = 0, the last frame and the index for i = len(entries))
// and checks them as a stream reader does: valid zero-run records only, in
// order, merging to the index's zero runs there. Each gap is checked once.
func (r *Reader) checkGap(i int) error {
	word, bit := &r.gapOK[i/64], uint64(1)<<(i%64)
	if word.Load()&bit != 0 {
		return nil
	}
	start, prevChunk := r.hlen, int64(-1)
	if i > 0 {
		start, prevChunk = r.entries[i-1].end(), int64(r.entries[i-1].chunk)
	}
	end, nextChunk := r.ft.indexOff, r.hdr.NumChunks()
	if i < len(r.entries) {
		end, nextChunk = r.entries[i].off, int64(r.entries[i].chunk)
	}
	if start == end { // no records: the open checked that the index lists no zero run here
		word.Or(bit)
		return nil
	}
	w := r.walker(start, end, prevChunk)
	for w.seq.off < end {
		kind, f, _, err := w.next()
		switch {
		case err != nil:
			return err
		case kind == recFrame:
			return broken(RuleIndexMatch, f.Offset, "frame of chunk %d is not in the index", f.Chunk)
		case kind == recIndex:
			return indexInside(f.Offset, r.ft.indexOff)
		}
	}
	if nextChunk < w.seq.next {
		return broken(RuleOrder, end, "frame of chunk %d after a record that covered chunk %d", nextChunk, w.seq.next-1)
	}
	if err := matchGap(w.seq.runs, runsBetween(r.runs, prevChunk, nextChunk), end); err != nil {
		return err
	}
	word.Or(bit)
	return nil
}

// walker returns a walker over the file bytes [start, end) following the
// frame of chunk prevChunk (-1: none), buffered so that a gap of a few
// records costs one read.
func (r *Reader) walker(start, end, prevChunk int64) *walker {
	sr := io.NewSectionReader(r.ra, start, end-start)
	return &walker{r: bufio.NewReaderSize(sr, int(min(max(end-start, 16), 64<<10))), hdr: r.hdr,
		seq: records{off: start, next: prevChunk + 1}}
}

// walkGap reads the data area from start, as a stream reader would, up to
// and including the record at or after end, or until it meets a broken
// rule (a gapWalker). It stops at the index (at indexOff): bytes beyond
// are not records.
func (r *Reader) walkGap(start, end, indexOff, prevChunk int64) error {
	w := r.walker(start, indexOff, prevChunk)
	var buf []byte
	for w.seq.off <= end {
		kind, f, slen, err := w.next()
		switch {
		case ruleOf(err) == RuleEnd:
			return nil // the walk reached the index: a stream reader would read on into it
		case err != nil:
			return err
		case kind == recIndex:
			return indexInside(f.Offset, indexOff)
		case kind == recFrame:
			if cap(buf) < slen {
				buf = make([]byte, slen)
			}
			if err := w.payload(&f, buf[:slen]); ruleOf(err) == RuleEnd {
				return nil // as above
			} else if err != nil {
				return err
			}
		}
	}
	return nil
}

// indexInside reports an index magic at off, inside the data area that
// ends at the index (indexOff): where a stream reader ends the data area
// and finds the footer disagrees.
func indexInside(off, indexOff int64) error {
	return broken(RuleLayout, off, "the data area ends at offset %d, the footer puts the index at %d", off, indexOff)
}

// CheckDigest compares a digest computed from the chunks' sums (a restore,
// a verification) with the footer's.
func (r *Reader) CheckDigest(sum [32]byte) error {
	if r.t != nil {
		if sum != r.t.commit.digest {
			return broken(RuleTreeHash, r.t.commitOff+64, "the chunks' sums give digest %x, commit %d records %x", sum[:8], r.t.commit.number, r.t.commit.digest[:8])
		}
		return nil
	}
	if sum != r.ft.digest {
		return digestError(r.footerOff, sum, r.ft.digest)
	}
	return nil
}

func digestError(footerOff int64, got, want [32]byte) error {
	return broken(RuleDigest, footerOff+64, "the chunks' sums give digest %x, the footer records %x", got[:8], want[:8])
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
