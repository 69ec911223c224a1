package cloneio

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/internal/filekind"
)

// TargetOptions configure OpenTarget.
type TargetOptions struct {
	Force   bool // overwrite an existing regular file
	Discard bool // block devices: discard (TRIM) unused ranges
	// Size makes a file target this large (a "larger disk"); 0 or less
	// than the disk size means exactly the disk size. Ignored for devices.
	Size int64
	// Layout says how Commit fits the partition table to the target.
	Layout LayoutOptions
}

// Target is where a disk is written: a block device or a regular file.
// Restore, clone and receive all write through it, chunk by chunk with a
// ChunkWriter, and end with Commit or Abort:
//
//   - open: a file is created under a temporary name, sparse; a device
//     must not be mounted or busy and must hold the disk. Only the path
//     the user named is ever opened for writing.
//   - Commit fits the partition table to the target (the GPT backup at
//     the end of a larger target, LayoutOptions), flushes, and renames a
//     file into place; Abort removes a file's temporary name.
type Target struct {
	Path    string
	Size    int64 // usable size (a file: grows to the disk size)
	IsBlock bool
	Discard bool

	diskSize   int64 // the disk being written
	sectorSize int   // its logical sector size; 0: detect
	layout     LayoutOptions
	f          *os.File
	atomic     *AtomicFile

	mu   sync.Mutex // Commit and Abort may race (Abort from an interrupt)
	done bool
}

// OpenTarget opens path for writing a disk of diskSize bytes whose logical
// sectors are sectorSize bytes (0: found from its partition table). A
// block device must not be in use and must be at least diskSize; a regular
// file is created (sparse) and must not exist unless opt.Force.
func OpenTarget(path string, diskSize int64, sectorSize int, opt TargetOptions) (*Target, error) {
	t := &Target{Path: path, diskSize: diskSize, sectorSize: sectorSize, layout: opt.Layout}
	if isBlockDevice(path) {
		f, err := openBlockTarget(path)
		if err != nil {
			return nil, err
		}
		d, err := describe(f, path)
		if err != nil {
			f.Close()
			return nil, err
		}
		if d.Size < diskSize {
			f.Close()
			return nil, fmt.Errorf("%w: %s holds %d bytes, the disk needs %d (%d more); nothing was written",
				ErrTooSmall, path, d.Size, diskSize, diskSize-d.Size)
		}
		t.Size, t.IsBlock, t.Discard, t.f = d.Size, true, opt.Discard, f
		return t, nil
	}
	if kind, _, err := filekind.Stat(path); err == nil && kind != filekind.Regular {
		return nil, fmt.Errorf("cloneio: %s is neither a block device nor a regular file", path)
	}
	if opt.Size != 0 && opt.Size < diskSize {
		return nil, fmt.Errorf("%w: a target of %d bytes is smaller than the disk (%d bytes); nothing was written",
			ErrTooSmall, opt.Size, diskSize)
	}
	a, err := CreateAtomic(path, opt.Force)
	if err != nil {
		return nil, err
	}
	// A fresh file is all holes: unused and zero chunks need no writes.
	size := max(diskSize, opt.Size)
	if err := a.Truncate(size); err != nil {
		a.Abort()
		return nil, fmt.Errorf("cloneio: size %s: %w", path, err)
	}
	t.Size, t.f, t.atomic = size, a.File, a
	return t, nil
}

// DiskSize is the size of the disk being written (Size may be larger).
func (t *Target) DiskSize() int64 { return t.diskSize }

// WriteAt writes bytes at a disk offset.
func (t *Target) WriteAt(p []byte, off int64) (int, error) {
	if t.atomic != nil {
		return t.atomic.WriteAt(p, off) // errors name Path, not the temporary file
	}
	return t.f.WriteAt(p, off)
}

// ReadAt reads back from the target (for verification).
func (t *Target) ReadAt(p []byte, off int64) (int, error) { return t.f.ReadAt(p, off) }

// ZeroRange makes [off, off+n) read as zeros.
func (t *Target) ZeroRange(off, n int64) error {
	if !t.IsBlock {
		return nil // holes in a fresh file
	}
	rng := [2]uint64{uint64(off), uint64(n)}
	if err := ioctlRange(t.f, unix.BLKZEROOUT, &rng); err == nil {
		return nil
	}
	// The device cannot zero by itself: write zeros.
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := t.f.WriteAt(buf[:k], off); err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}

// Unused tells the target that [off, off+n) holds nothing: a file leaves a
// hole, a block device is discarded when asked to, else left as it is.
func (t *Target) Unused(off, n int64) error {
	if !t.IsBlock || !t.Discard {
		return nil
	}
	rng := [2]uint64{uint64(off), uint64(n)}
	return ioctlRange(t.f, unix.BLKDISCARD, &rng)
}

// Sync makes the writes durable and drops them from the page cache, so
// that reads afterwards come from the medium, not from memory.
func (t *Target) Sync() error {
	if err := t.f.Sync(); err != nil {
		return fmt.Errorf("cloneio: sync %s: %w", t.Path, err)
	}
	dropCache(t.f)
	return nil
}

// IsHole reports whether [off, off+n) of a file target holds no data
// (SEEK_DATA finds none before its end), so a read-back can skip it.
// Devices have no holes.
func (t *Target) IsHole(off, n int64) (bool, error) {
	if t.IsBlock {
		return false, nil
	}
	d, err := unix.Seek(int(t.f.Fd()), off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return true, nil // no data after off
	}
	if err != nil {
		return false, err
	}
	return d >= off+n, nil
}

// Commit makes the target final: it fits the partition table written to
// it to the target's size and the layout options, makes the data durable
// and renames a file into place. Every writer ends here, so none can leave
// a larger disk with its GPT backup in the middle. On error the target is
// aborted.
func (t *Target) Commit(ctx context.Context) (*LayoutResult, error) {
	t.mu.Lock()
	done := t.done
	t.mu.Unlock()
	if done {
		return nil, errors.New("cloneio: commit after commit or abort")
	}
	// Not under mu: growing a filesystem takes a while, and an interrupt's
	// Abort must still remove the temporary file meanwhile.
	lres, err := t.fitLayout(ctx)
	if err != nil {
		t.Abort()
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return nil, fmt.Errorf("cloneio: %s: aborted", t.Path)
	}
	t.done = true
	if t.atomic != nil {
		return lres, t.atomic.Commit()
	}
	if err := t.f.Sync(); err != nil {
		t.f.Close()
		return nil, fmt.Errorf("cloneio: sync %s: %w", t.Path, err)
	}
	return lres, t.f.Close()
}

// Abort discards a file target's temporary file; a device is just closed.
// It is a no-op after Commit, and safe to call from another goroutine
// while the target is written (an interrupt).
func (t *Target) Abort() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.abort()
}

func (t *Target) abort() {
	if t.done {
		return
	}
	t.done = true
	if t.atomic != nil {
		t.atomic.Abort()
		return
	}
	t.f.Close()
}

// TargetCapacity is how many bytes a block device at path holds; 0 for
// anything else (a file target is as large as it is made). A device that
// is mounted or otherwise in use is refused as OpenTarget refuses it, so
// that a caller comparing sizes first still reports that.
func TargetCapacity(path string) (int64, error) {
	if !isBlockDevice(path) {
		return 0, nil
	}
	if err := inUse(path); err != nil {
		return 0, err
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	d, err := describe(f, path)
	if err != nil {
		return 0, err
	}
	return d.Size, nil
}
