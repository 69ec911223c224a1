package multicast

import (
	"errors"
	"fmt"
	"io"

	"github.com/dimg-project/dimg/cloneio"
	"golang.org/x/sys/unix"
)

// Target is where a receiver writes the disk, with restore's semantics:
// stored chunks are written, used zero chunks zeroed, unused chunks left
// alone (holes in a file, discarded on a device when asked). By default
// it is cloneio's restore target (OpenTarget); tests and embedders may
// pass their own through ReceiveOptions.OpenTarget.
type Target interface {
	io.WriterAt
	// ReadAt reads back what was written, for the final verification.
	io.ReaderAt
	// ZeroRange makes [off, off+n) read as zeros: chunks in a zero run.
	ZeroRange(off, n int64) error
	// Unused tells the target [off, off+n) holds nothing the image needs.
	Unused(off, n int64) error
	// Sync makes the writes durable and drops them from the page cache, so
	// that ReadAt afterwards reads the medium.
	Sync() error
	// Commit makes a verified target final (a file is renamed into place)
	// and closes it; Abort discards it (a file's temporary is removed, a
	// device closed).
	Commit() error
	Abort()
}

// HoleTarget is implemented by targets that can tell that a range was
// never written (a hole of a sparse file), so verification need not read
// it.
type HoleTarget interface {
	IsHole(off, n int64) (bool, error)
}

// OpenTarget opens path for a disk of diskSize bytes with cloneio's
// restore target: a regular file is created sparse under a temporary name
// (an existing one needs opt.Force); a block device must be large enough
// and not mounted or held.
func OpenTarget(path string, diskSize int64, opt cloneio.TargetOptions) (Target, error) {
	t, err := cloneio.OpenTarget(path, diskSize, opt)
	if err != nil {
		return nil, err
	}
	return &restoreTarget{t}, nil
}

type restoreTarget struct {
	*cloneio.Target
}

func (t *restoreTarget) Sync() error {
	f := t.File()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("multicast: sync %s: %w", t.Path, err)
	}
	// Clean pages can be dropped now: the read-back then proves the medium.
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	return nil
}

// IsHole reports whether [off, off+n) of a file target holds no data
// (SEEK_DATA finds nothing before its end). Devices have no holes.
func (t *restoreTarget) IsHole(off, n int64) (bool, error) {
	if t.IsBlock {
		return false, nil
	}
	d, err := unix.Seek(int(t.File().Fd()), off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return true, nil // no data after off
	}
	if err != nil {
		return false, err
	}
	return d >= off+n, nil
}
