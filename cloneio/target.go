package cloneio

import (
	"fmt"
	"os"

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
}

// Target is where a disk is written: a block device or a regular file. A
// file target is created under a temporary name, sparse, and renamed into
// place by Commit.
type Target struct {
	Path    string
	Size    int64 // usable size (a file: grows to the disk size)
	IsBlock bool
	Discard bool
	f       *os.File
	atomic  *AtomicFile
}

// OpenTarget opens path for writing a disk of diskSize bytes. A block
// device must not be in use and must be at least diskSize; a regular file
// is created (sparse) and must not exist unless opt.Force.
func OpenTarget(path string, diskSize int64, opt TargetOptions) (*Target, error) {
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
		return &Target{Path: path, Size: d.Size, IsBlock: true, Discard: opt.Discard, f: f}, nil
	}
	if kind, _, err := filekind.Stat(path); err == nil && kind != filekind.Regular {
		return nil, fmt.Errorf("cloneio: %s is neither a block device nor a regular file", path)
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
	return &Target{Path: path, Size: size, f: a.File, atomic: a}, nil
}

// File is the open target.
func (t *Target) File() *os.File { return t.f }

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

// Commit makes the written data durable (and renames a file into place).
func (t *Target) Commit() error {
	if t.atomic != nil {
		return t.atomic.Commit()
	}
	if err := t.f.Sync(); err != nil {
		t.f.Close()
		return fmt.Errorf("cloneio: sync %s: %w", t.Path, err)
	}
	return t.f.Close()
}

// Abort discards a file target's temporary file; a device is just closed.
func (t *Target) Abort() {
	if t.atomic != nil {
		t.atomic.Abort()
		return
	}
	t.f.Close()
}
