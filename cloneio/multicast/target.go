package multicast

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Target is where a receiver writes the disk. This package carries a small
// implementation (OpenTarget) with restore's semantics until cloneio's own
// restore target can be passed in through ReceiveOptions.OpenTarget; the
// interface is what the receiver needs from either.
type Target interface {
	io.WriterAt
	// ReadAt reads back what was written (the final verification).
	io.ReaderAt
	// ZeroRange makes [off, off+n) read as zeros: the disk's absent
	// chunks. It is called once per run of absent chunks after every
	// stored chunk was written.
	ZeroRange(off, n int64) error
	// Sync makes the writes durable and drops them from the page cache, so
	// that ReadAt afterwards reads the medium.
	Sync() error
	Close() error
}

// HoleTarget is implemented by targets that can tell that a range was
// never written (a hole of a sparse file), so verification need not read
// it.
type HoleTarget interface {
	IsHole(off, n int64) (bool, error)
}

// TargetOptions configure OpenTarget; the zero value is the default.
type TargetOptions struct {
	// NoZero skips zeroing absent chunks on a block device (it is known
	// to be zeroed already). Regular files are always sparse.
	NoZero bool
}

// ErrTargetTooSmall and ErrTargetBusy are returned by OpenTarget.
var (
	ErrTargetTooSmall = errors.New("multicast: target is smaller than the disk")
	ErrTargetBusy     = errors.New("multicast: target block device is mounted or in use")
)

// OpenTarget opens path for a disk of diskSize bytes. A regular file (or a
// path that does not exist) is created or truncated and made sparse: only
// stored chunks are written, absent chunks are holes. A block device must
// be at least diskSize bytes and not mounted; its absent chunks get
// BLKZEROOUT (or written zeros) unless opt.NoZero.
func OpenTarget(path string, diskSize int64, opt TargetOptions) (Target, error) {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist) || err == nil && st.Mode().IsRegular():
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("multicast: open target: %w", err)
		}
		// Truncate to zero first so old contents become holes, then to
		// the disk size: absent chunks read as zeros without a write.
		err = f.Truncate(0)
		if err == nil {
			err = f.Truncate(diskSize)
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("multicast: target %s: %w", path, err)
		}
		return &fileTarget{f: f}, nil
	case err != nil:
		return nil, fmt.Errorf("multicast: target: %w", err)
	case st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		return openBlockTarget(path, diskSize, opt)
	}
	return nil, fmt.Errorf("multicast: target %s is neither a regular file nor a block device", path)
}

type fileTarget struct {
	f *os.File
}

func (t *fileTarget) WriteAt(p []byte, off int64) (int, error) { return t.f.WriteAt(p, off) }
func (t *fileTarget) ReadAt(p []byte, off int64) (int, error)  { return t.f.ReadAt(p, off) }
func (t *fileTarget) ZeroRange(off, n int64) error             { return nil } // holes since truncation
func (t *fileTarget) Close() error                             { return t.f.Close() }

func (t *fileTarget) Sync() error {
	if err := t.f.Sync(); err != nil {
		return fmt.Errorf("multicast: sync target: %w", err)
	}
	_ = unix.Fadvise(int(t.f.Fd()), 0, 0, unix.FADV_DONTNEED)
	return nil
}

// IsHole reports whether [off, off+n) holds no data (SEEK_DATA finds
// nothing before its end).
func (t *fileTarget) IsHole(off, n int64) (bool, error) {
	d, err := unix.Seek(int(t.f.Fd()), off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return true, nil // no data after off
	}
	if err != nil {
		return false, err
	}
	return d >= off+n, nil
}

type blockTarget struct {
	f      *os.File
	noZero bool
}

func openBlockTarget(path string, diskSize int64, opt TargetOptions) (Target, error) {
	if m, err := mountedFrom(path); err != nil {
		return nil, err
	} else if m != "" {
		return nil, fmt.Errorf("%w: %s is mounted on %s", ErrTargetBusy, path, m)
	}
	// O_EXCL on a block device fails with EBUSY while anything mounts or
	// holds it exclusively: the kernel's own guard.
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_EXCL, 0)
	if errors.Is(err, unix.EBUSY) {
		return nil, fmt.Errorf("%w: %s", ErrTargetBusy, path)
	}
	if err != nil {
		return nil, fmt.Errorf("multicast: open target: %w", err)
	}
	size, err := f.Seek(0, io.SeekEnd) // a block device's size
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("multicast: size of %s: %w", path, err)
	}
	if size < diskSize {
		f.Close()
		return nil, fmt.Errorf("%w: %s has %d bytes, the image needs %d", ErrTargetTooSmall, path, size, diskSize)
	}
	return &blockTarget{f: f, noZero: opt.NoZero}, nil
}

// mountedFrom returns the mount point of the device at path or of one of
// its partitions, "" if none.
func mountedFrom(path string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "", fmt.Errorf("multicast: target: %w", err)
	}
	maj, min := unix.Major(st.Rdev), unix.Minor(st.Rdev)
	devs := map[string]bool{fmt.Sprintf("%d:%d", maj, min): true}
	// Partitions of a whole disk are its holders in sysfs.
	base := fmt.Sprintf("/sys/dev/block/%d:%d", maj, min)
	if ents, err := os.ReadDir(base); err == nil {
		for _, e := range ents {
			if b, err := os.ReadFile(base + "/" + e.Name() + "/dev"); err == nil {
				devs[strings.TrimSpace(string(b))] = true
			}
		}
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", nil // no procfs: rely on O_EXCL
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && devs[fields[2]] {
			return fields[4], nil
		}
	}
	return "", nil
}

func (t *blockTarget) WriteAt(p []byte, off int64) (int, error) { return t.f.WriteAt(p, off) }
func (t *blockTarget) ReadAt(p []byte, off int64) (int, error)  { return t.f.ReadAt(p, off) }
func (t *blockTarget) Close() error                             { return t.f.Close() }

func (t *blockTarget) Sync() error {
	if err := t.f.Sync(); err != nil {
		return fmt.Errorf("multicast: sync target: %w", err)
	}
	_ = unix.Fadvise(int(t.f.Fd()), 0, 0, unix.FADV_DONTNEED)
	return nil
}

// ZeroRange asks the device to zero the range (BLKZEROOUT: write-zeroes
// or unmap when the device guarantees zeros) and falls back to writing
// zeros when it cannot.
func (t *blockTarget) ZeroRange(off, n int64) error {
	if t.noZero || n <= 0 {
		return nil
	}
	if off%512 == 0 && n%512 == 0 {
		r := [2]uint64{uint64(off), uint64(n)}
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, t.f.Fd(), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&r)))
		if errno == 0 {
			return nil
		}
	}
	z := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(z)))
		if _, err := t.f.WriteAt(z[:k], off); err != nil {
			return fmt.Errorf("multicast: zero target: %w", err)
		}
		off += k
		n -= k
	}
	return nil
}
