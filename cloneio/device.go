package cloneio

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrMounted is returned for a block device (or one of its partitions) that
// is mounted or otherwise in use.
var ErrMounted = errors.New("cloneio: device is in use")

// ErrTooSmall is returned when a target cannot hold the disk.
var ErrTooSmall = errors.New("cloneio: target too small")

// Device is an opened disk: a block device or a regular file.
type Device struct {
	*os.File
	Path       string
	Size       int64
	SectorSize int // logical sector size; 0 for a file (unknown)
	IsBlock    bool
}

// OpenSource opens a disk for reading.
func OpenSource(path string) (*Device, error) {
	// Check the type before opening: opening a FIFO would block forever.
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() && (st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0) {
		return nil, fmt.Errorf("%s: not a block device or regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	d, err := describe(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	// Tell the kernel we read front to back: a larger readahead window.
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_SEQUENTIAL)
	return d, nil
}

func describe(f *os.File, path string) (*Device, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	d := &Device{File: f, Path: path}
	switch {
	case st.Mode().IsRegular():
		// A file has no sector size of its own: 0 lets the partition table
		// reader detect it (a 4Kn GPT) and falls back to 512.
		d.Size = st.Size()
	case st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
		d.IsBlock = true
		d.SectorSize = 512
		var size uint64
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size)))
		if errno != 0 {
			err := error(errno)
			return nil, fmt.Errorf("%s: read device size: %w", path, err)
		}
		d.Size = int64(size)
		if ss, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET); err == nil && ss > 0 {
			d.SectorSize = ss
		}
	default:
		return nil, fmt.Errorf("%s: not a block device or regular file", path)
	}
	if d.Size == 0 {
		return nil, fmt.Errorf("%s: is empty", path)
	}
	return d, nil
}

// devNumber returns major:minor of a block device path.
func devNumber(path string) (uint32, uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, 0, err
	}
	return unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)), nil
}

// inUse reports why a block device must not be written: it, or one of its
// partitions, is mounted or used as swap.
func inUse(path string) error {
	maj, min, err := devNumber(path)
	if err != nil {
		return err
	}
	devs := map[string]bool{fmt.Sprintf("%d:%d", maj, min): true}
	// Partitions of this disk appear as subdirectories with a "partition"
	// file in its sysfs directory.
	sys := fmt.Sprintf("/sys/dev/block/%d:%d", maj, min)
	if ents, err := os.ReadDir(sys); err == nil {
		for _, e := range ents {
			if b, err := os.ReadFile(filepath.Join(sys, e.Name(), "dev")); err == nil {
				if _, err := os.Stat(filepath.Join(sys, e.Name(), "partition")); err == nil {
					devs[strings.TrimSpace(string(b))] = true
				}
			}
		}
	}
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 4 && devs[fields[2]] {
				return fmt.Errorf("%w: %s (device %s) is mounted on %s; unmount it first", ErrMounted, path, fields[2], fields[4])
			}
		}
	}
	if b, err := os.ReadFile("/proc/swaps"); err == nil {
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) == 0 {
				continue
			}
			if ma, mi, err := devNumber(fs[0]); err == nil && devs[fmt.Sprintf("%d:%d", ma, mi)] {
				return fmt.Errorf("%w: %s is in use as swap (%s); swapoff it first", ErrMounted, path, fs[0])
			}
		}
	}
	// Holders (device-mapper, md, LVM) hold the device open.
	if ents, err := os.ReadDir(filepath.Join(sys, "holders")); err == nil && len(ents) > 0 {
		return fmt.Errorf("%w: %s is held by %s", ErrMounted, path, ents[0].Name())
	}
	return nil
}

// openBlockTarget opens a block device for writing after the in-use checks;
// O_EXCL makes the kernel refuse a device a filesystem holds.
func openBlockTarget(path string) (*os.File, error) {
	if err := inUse(path); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_EXCL, 0)
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("%w: %s is busy (mounted or held by another driver)", ErrMounted, path)
		}
		return nil, err
	}
	return f, nil
}

// isBlockDevice reports whether path names a block device.
func isBlockDevice(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0
}

// Prefetch asks the kernel to start reading [off, off+n) now.
func (d *Device) Prefetch(off, n int64) {
	_ = unix.Fadvise(int(d.Fd()), off, n, unix.FADV_WILLNEED)
}
