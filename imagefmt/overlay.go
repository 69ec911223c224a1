package imagefmt

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Overlay errors.
var (
	// ErrBeyondEnd: a write runs past the end of the disk or partition;
	// nothing of it was written (disks do not grow).
	ErrBeyondEnd = errors.New("imagefmt: write beyond the end")
	// ErrBaseMismatch: a scratch file was made for another base disk.
	ErrBaseMismatch = errors.New("imagefmt: overlay scratch belongs to another base")
	// ErrScratch: a scratch file is not one, or is damaged beyond what a
	// crash can do.
	ErrScratch = errors.New("imagefmt: overlay scratch file is damaged")
	// ErrOverlayClosed: the overlay was closed, discarded or committed.
	ErrOverlayClosed = errors.New("imagefmt: overlay is closed")
)

// OverlayBase is the read-only disk an overlay's changes apply to: an image
// Reader, an older commit, a delta chain or a raw file — the overlay only
// reads it through R.
type OverlayBase struct {
	R    io.ReaderAt
	Size int64 // disk size in bytes
	// ChunkSize is the copy-up unit; commit it into an image of the same
	// chunk size. 0 means DefaultChunkSize. A multiple of 4096.
	ChunkSize int
	// ID names the base's exact content, e.g. BaseIdentity(uuid, digest) of
	// an image commit. It is stored in the scratch file (at most 2048
	// bytes) and OpenRecovered refuses a scratch file whose ID differs.
	ID string
}

// BaseIdentity is the ID of an image (or commit) with this UUID and digest.
func BaseIdentity(uuid [16]byte, digest [32]byte) string {
	return "dimg:" + formatUUID(uuid) + "@" + hex.EncodeToString(digest[:])
}

// OverlayOptions configure an overlay; the zero value is the default.
type OverlayOptions struct {
	// CopyUpBytes bounds the memory of chunk buffers used by copy-ups in
	// flight (default 16 MiB; at least two chunks). Concurrent copy-ups
	// beyond it wait for a buffer.
	CopyUpBytes int64
}

// Overlay is a copy-on-write disk over a read-only base. The first write
// into a chunk copies the chunk up into a slot of the scratch file; later
// writes go to the slot in place, and reads take dirty chunks from the
// scratch file and the rest from the base. ReadAt and WriteAt are safe for
// concurrent use; copy-ups of different chunks run in parallel.
//
// Memory does not grow with the data written: the chunks live in the
// scratch file (the kernel's page cache keeps the hot ones, and the base
// keeps its own cache, so the overlay holds no chunk cache of its own that
// would only double them). What is in memory per dirty chunk is its map
// entry chunk → slot (uint32 → uint32: 10–21 bytes in a Go map depending on
// its load) and, until the next Sync, an 8-byte record of its new slot:
// under 30 bytes, so 64 MiB is reached only after about 2 million dirty
// chunks (512 GiB changed at 256 KiB chunks). Besides that, copy-up
// buffers are bounded by OverlayOptions.CopyUpBytes.
type Overlay struct {
	base    OverlayBase
	cs      int64
	nchunks int64
	info    ScratchInfo

	// Lock order: writeMu, then ioMu, then a stripe, then mu.
	// writeMu is held shared by WriteAt and Sync and exclusively by
	// Commit, Discard and Close, so that no write slips in while the dirty
	// chunks are handed over or the file goes away.
	writeMu sync.RWMutex
	// ioMu is held shared by every operation that uses f and exclusively
	// to close it; reads proceed during a commit.
	ioMu   sync.RWMutex
	f      *os.File
	closed bool

	// stripes serialize copy-ups of one chunk (chunk % len). Writes into a
	// chunk that is already dirty need no stripe: its slot never changes.
	stripes [1024]sync.Mutex

	mu       sync.RWMutex
	slots    map[uint32]uint32 // chunk → slot, only for chunks whose data is in the slot
	nextSlot int64
	pending  []slotRecord // slots whose header the next Sync writes

	syncMu     sync.Mutex    // one Sync at a time: a second must not return before the first's headers are down
	writes     atomic.Uint64 // completed writes, so a Sync with nothing new skips the fdatasync
	syncedThru uint64        // value of writes covered by the last successful Sync (under syncMu)

	bufSem  chan struct{} // one token per copy-up buffer that may exist
	bufPool sync.Pool
	bufHigh atomic.Int64 // high-water mark of buffers in use (tests)
	bufLive atomic.Int64
}

func (b *OverlayBase) normalize() error {
	if b.R == nil {
		return fmt.Errorf("imagefmt: overlay: no base reader")
	}
	if b.ChunkSize == 0 {
		b.ChunkSize = DefaultChunkSize
	}
	if len(b.ID) > maxBaseIDLen {
		return fmt.Errorf("imagefmt: overlay: base identity of %d bytes is longer than %d", len(b.ID), maxBaseIDLen)
	}
	if err := checkOverlayGeometry(b.Size, b.ChunkSize); err != nil {
		return fmt.Errorf("imagefmt: overlay: %w", err)
	}
	return nil
}

// NewOverlay starts an overlay over base whose changes go to a new scratch
// file at scratchPath (next to the image, so it survives a reboot). It
// refuses a path that exists: that is an earlier session's changes, for
// OpenRecovered or RemoveScratch.
func NewOverlay(scratchPath string, base OverlayBase, opt OverlayOptions) (*Overlay, error) {
	if err := base.normalize(); err != nil {
		return nil, err
	}
	info := ScratchInfo{Path: scratchPath, BaseID: base.ID, ChunkSize: base.ChunkSize, DiskSize: base.Size, Created: time.Now()}
	f, err := createScratch(scratchPath, &info)
	if err != nil {
		return nil, err
	}
	return newOverlay(f, base, info, opt), nil
}

func newOverlay(f *os.File, base OverlayBase, info ScratchInfo, opt OverlayOptions) *Overlay {
	cs := int64(base.ChunkSize)
	o := &Overlay{base: base, cs: cs, nchunks: (base.Size + cs - 1) / cs, info: info, f: f, slots: map[uint32]uint32{}}
	cb := opt.CopyUpBytes
	if cb <= 0 {
		cb = 16 << 20
	}
	o.bufSem = make(chan struct{}, max(2, cb/cs))
	o.bufPool.New = func() any { b := make([]byte, cs); return &b }
	return o
}

// OpenRecovered reopens the scratch file a crashed (or closed) session
// left at scratchPath, over the same base. It refuses, with
// ErrBaseMismatch, a scratch file made for another base, chunk size or
// disk size. The overlay reads back every chunk that was synced (and, for
// chunks written in place after their last Sync, old or new bytes) and
// takes further writes, Commit and Discard like a new one.
func OpenRecovered(scratchPath string, base OverlayBase, opt OverlayOptions) (*Overlay, error) {
	if err := base.normalize(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(scratchPath, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("imagefmt: open overlay scratch: %w", err)
	}
	o, err := recoverOverlay(f, scratchPath, base, opt)
	if err != nil {
		f.Close()
		return nil, err
	}
	return o, nil
}

func recoverOverlay(f *os.File, path string, base OverlayBase, opt OverlayOptions) (*Overlay, error) {
	info, err := readScratchHeader(f, path)
	if err != nil {
		return nil, err
	}
	switch {
	case info.BaseID != base.ID:
		return nil, fmt.Errorf("%w: %s holds changes to base %s, but the base given is %s", ErrBaseMismatch, path, shortID(info.BaseID), shortID(base.ID))
	case info.ChunkSize != base.ChunkSize || info.DiskSize != base.Size:
		return nil, fmt.Errorf("%w: %s holds changes to a %d-byte disk in %d-byte chunks, but the base is %d bytes in %d-byte chunks",
			ErrBaseMismatch, path, info.DiskSize, info.ChunkSize, base.Size, base.ChunkSize)
	}
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("imagefmt: overlay scratch %s: %w", path, err)
	}
	o := newOverlay(f, base, *info, opt)
	slotSize := o.slotSize()
	nslots := (st.Size() - scratchHeaderSize + slotSize - 1) / slotSize
	hdr := make([]byte, slotHeaderUsed)
	for k := range max(nslots, 0) {
		n, err := f.ReadAt(hdr, o.slotOff(k))
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("imagefmt: overlay scratch %s: read slot %d: %w", path, k, err)
		}
		c, ok := parseSlotHeader(hdr[:n], k, info.Session)
		if !ok {
			continue
		}
		if c < 0 || c >= o.nchunks {
			return nil, fmt.Errorf("%w: %s: slot %d names chunk %d of a disk with %d chunks", ErrScratch, path, k, c, o.nchunks)
		}
		if prev, dup := o.slots[uint32(c)]; dup {
			return nil, fmt.Errorf("%w: %s: slots %d and %d both hold chunk %d", ErrScratch, path, prev, k, c)
		}
		o.slots[uint32(c)] = uint32(k)
	}
	// New slots go after everything in the file, so they start as holes
	// (zeros) and never meet bytes of a slot that was never synced.
	o.nextSlot = max(nslots, 0)
	return o, nil
}

func (o *Overlay) slotSize() int64          { return slotHeaderSize + o.cs }
func (o *Overlay) slotOff(k int64) int64    { return scratchHeaderSize + k*o.slotSize() }
func (o *Overlay) dataOff(slot int64) int64 { return o.slotOff(slot) + slotHeaderSize }

// chunkLen is the length of chunk c (the last one may be short).
func (o *Overlay) chunkLen(c int64) int64 { return min(o.cs, o.base.Size-c*o.cs) }

// Size is the disk size.
func (o *Overlay) Size() int64 { return o.base.Size }

// ChunkSize is the copy-up unit.
func (o *Overlay) ChunkSize() int { return int(o.cs) }

// Info describes the scratch file.
func (o *Overlay) Info() ScratchInfo { return o.info }

// DirtyChunks is the number of chunks that differ from the base (written
// at least once, including any recovered).
func (o *Overlay) DirtyChunks() int {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return len(o.slots)
}

func (o *Overlay) lookup(c int64) (slot int64, ok bool) {
	o.mu.RLock()
	s, ok := o.slots[uint32(c)]
	o.mu.RUnlock()
	return int64(s), ok
}

// ReadAt reads disk bytes: dirty chunks from the scratch file, the rest
// from the base. At the end of the disk it returns io.EOF.
func (o *Overlay) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("imagefmt: overlay: read at negative offset %d", off)
	}
	if off >= o.base.Size {
		return 0, io.EOF
	}
	var eof error
	if rem := o.base.Size - off; int64(len(p)) > rem {
		p = p[:rem]
		eof = io.EOF
	}
	o.ioMu.RLock()
	defer o.ioMu.RUnlock()
	if o.closed {
		return 0, ErrOverlayClosed
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		c, in := pos/o.cs, pos%o.cs
		end := n + int(min(int64(len(p)-n), o.chunkLen(c)-in))
		if slot, ok := o.lookup(c); ok {
			if err := o.readSlot(slot, in, p[n:end]); err != nil {
				return n, o.chunkErr(c, err)
			}
			n = end
			continue
		}
		// Take the whole run of clean chunks in one base read: an image
		// reader then sees a sequential read (and prefetches), a raw file
		// one syscall.
		for end < len(p) {
			c2 := (off + int64(end)) / o.cs
			if _, ok := o.lookup(c2); ok {
				break
			}
			end += int(min(int64(len(p)-end), o.chunkLen(c2)))
		}
		if err := o.readBase(p[n:end], pos); err != nil {
			return n, err
		}
		n = end
	}
	return n, eof
}

func (o *Overlay) chunkErr(c int64, err error) error {
	return &ChunkError{Chunk: c, Off: c * o.cs, Len: o.chunkLen(c), Err: fmt.Errorf("overlay scratch %s: %w", o.info.Path, err)}
}

// readSlot reads bytes [in, in+len(p)) of a slot's data. Bytes past the end
// of the file were never written and are zeros.
func (o *Overlay) readSlot(slot, in int64, p []byte) error {
	n, err := o.f.ReadAt(p, o.dataOff(slot)+in)
	if err == io.EOF {
		clear(p[n:])
		return nil
	}
	return err
}

func (o *Overlay) readBase(p []byte, off int64) error {
	n, err := o.base.R.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("imagefmt: overlay: read base at offset %d (%d bytes): %w", off+int64(n), len(p)-n, err)
}

// WriteAt writes disk bytes. A write that runs past the end of the disk
// fails with ErrBeyondEnd and writes nothing. A write is durable once Sync
// returns.
func (o *Overlay) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off > o.base.Size || int64(len(p)) > o.base.Size-off {
		return 0, fmt.Errorf("%w: %d bytes at offset %d, the disk has %d bytes", ErrBeyondEnd, len(p), off, o.base.Size)
	}
	o.writeMu.RLock()
	defer o.writeMu.RUnlock()
	o.ioMu.RLock()
	defer o.ioMu.RUnlock()
	if o.closed {
		return 0, ErrOverlayClosed
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		c, in := pos/o.cs, pos%o.cs
		end := n + int(min(int64(len(p)-n), o.chunkLen(c)-in))
		if err := o.writeChunk(c, in, p[n:end]); err != nil {
			return n, o.chunkErr(c, err)
		}
		n = end
	}
	o.writes.Add(1)
	return n, nil
}

// writeChunk writes data at offset in of chunk c, copying the chunk up
// first if it is clean.
func (o *Overlay) writeChunk(c, in int64, data []byte) error {
	if slot, ok := o.lookup(c); ok {
		_, err := o.f.WriteAt(data, o.dataOff(slot)+in)
		return err
	}
	l := &o.stripes[c%int64(len(o.stripes))]
	l.Lock()
	defer l.Unlock()
	if slot, ok := o.lookup(c); ok { // copied up while we waited
		_, err := o.f.WriteAt(data, o.dataOff(slot)+in)
		return err
	}
	o.mu.Lock()
	slot := o.nextSlot
	o.nextSlot++
	o.mu.Unlock()
	// A fresh slot is a hole past every byte written so far, so it reads as
	// zeros: only non-zero bytes need writing. A whole-chunk write needs no
	// base bytes at all.
	clen := o.chunkLen(c)
	if in == 0 && int64(len(data)) == clen {
		if !IsZero(data) {
			if _, err := o.f.WriteAt(data, o.dataOff(slot)); err != nil {
				return err
			}
		}
	} else {
		buf := o.getBuf()
		defer o.putBuf(buf)
		b := (*buf)[:clen]
		if err := o.readBase(b, c*o.cs); err != nil {
			return err
		}
		if IsZero(b) {
			if _, err := o.f.WriteAt(data, o.dataOff(slot)+in); err != nil {
				return err
			}
		} else {
			copy(b[in:], data)
			if _, err := o.f.WriteAt(b, o.dataOff(slot)); err != nil {
				return err
			}
		}
	}
	// Publish only now that the slot holds the chunk: a reader that finds
	// it in the map reads complete data. A failed copy-up leaves an unused
	// slot that no header will ever name.
	o.mu.Lock()
	o.slots[uint32(c)] = uint32(slot)
	o.pending = append(o.pending, slotRecord{slot: uint32(slot), chunk: uint32(c)})
	o.mu.Unlock()
	return nil
}

func (o *Overlay) getBuf() *[]byte {
	o.bufSem <- struct{}{}
	if n := o.bufLive.Add(1); n > o.bufHigh.Load() {
		o.bufHigh.Store(n) // racy max, good enough for a test's bound check
	}
	return o.bufPool.Get().(*[]byte)
}

func (o *Overlay) putBuf(b *[]byte) {
	o.bufPool.Put(b)
	o.bufLive.Add(-1)
	<-o.bufSem
}

// Sync makes every write that returned before it durable: after a crash,
// OpenRecovered finds them. New slots' data is flushed before their
// headers are written, so a header never names data that is not there.
func (o *Overlay) Sync() error {
	o.writeMu.RLock()
	defer o.writeMu.RUnlock()
	o.ioMu.RLock()
	defer o.ioMu.RUnlock()
	if o.closed {
		return ErrOverlayClosed
	}
	return o.syncLocked()
}

func (o *Overlay) syncLocked() error {
	o.syncMu.Lock()
	defer o.syncMu.Unlock()
	w := o.writes.Load()
	o.mu.Lock()
	pend := o.pending
	o.pending = nil
	o.mu.Unlock()
	if len(pend) == 0 && w == o.syncedThru {
		return nil
	}
	err := o.writeSlotHeaders(pend)
	if err == nil {
		err = fdatasync(o.f)
	}
	if err != nil {
		// Keep the records so the next Sync writes them again.
		o.mu.Lock()
		o.pending = append(pend, o.pending...)
		o.mu.Unlock()
		return fmt.Errorf("imagefmt: overlay sync %s: %w", o.info.Path, err)
	}
	o.syncedThru = w
	return nil
}

func (o *Overlay) writeSlotHeaders(pend []slotRecord) error {
	if len(pend) == 0 {
		return nil
	}
	if err := fdatasync(o.f); err != nil {
		return err
	}
	hdr := make([]byte, slotHeaderUsed)
	for _, r := range pend {
		marshalSlotHeader(hdr, r, o.info.Session)
		if _, err := o.f.WriteAt(hdr, o.slotOff(int64(r.slot))); err != nil {
			return err
		}
	}
	return nil
}

// Close syncs and closes the overlay, keeping the scratch file: its
// changes stay for OpenRecovered. Use Commit or Discard to end them.
func (o *Overlay) Close() error {
	o.writeMu.Lock()
	defer o.writeMu.Unlock()
	o.ioMu.Lock()
	defer o.ioMu.Unlock()
	if o.closed {
		return nil
	}
	o.closed = true
	err := o.syncLocked()
	if cerr := o.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("imagefmt: overlay close %s: %w", o.info.Path, cerr)
	}
	return err
}

// Discard drops every change and removes the scratch file.
func (o *Overlay) Discard() error {
	o.writeMu.Lock()
	defer o.writeMu.Unlock()
	o.ioMu.Lock()
	defer o.ioMu.Unlock()
	if o.closed {
		return ErrOverlayClosed
	}
	return o.removeLocked()
}

// removeLocked closes and removes the scratch file; callers hold writeMu
// and ioMu exclusively.
func (o *Overlay) removeLocked() error {
	o.closed = true
	o.f.Close()
	o.mu.Lock()
	o.slots = map[uint32]uint32{}
	o.pending = nil
	o.mu.Unlock()
	return RemoveScratch(o.info.Path)
}
