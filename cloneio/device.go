package cloneio

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/internal/filekind"
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
	kind, _, err := filekind.Stat(path)
	if err != nil {
		return nil, err
	}
	if !kind.RandomAccess() {
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
	switch filekind.Of(st.Mode()) {
	case filekind.Regular:
		// A file has no sector size of its own: 0 lets the partition table
		// reader detect it (a 4Kn GPT) and falls back to 512.
		d.Size = st.Size()
	case filekind.Block:
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
	self := fmt.Sprintf("%d:%d", maj, min)
	devs := map[string]bool{self: true}
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
	// Loop devices over the same file, and any other view of the same
	// bytes: a filesystem mounted from one of them is as much in use.
	for _, d := range overlappingDevices(path) {
		devs[d] = true
	}
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 4 && devs[fields[2]] {
				if fields[2] != self {
					return fmt.Errorf("%w: device %s, a partition or loop device over the same bytes as %s, is mounted on %s; unmount it first",
						ErrMounted, fields[2], path, fields[4])
				}
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
func isBlockDevice(path string) bool { return filekind.Is(path, filekind.Block) }

// Prefetch asks the kernel to start reading [off, off+n) now.
func (d *Device) Prefetch(off, n int64) {
	_ = unix.Fadvise(int(d.Fd()), off, n, unix.FADV_WILLNEED)
}

// ErrSameDisk is returned when a target would overwrite the source it is
// written from: the same file or device, a partition of it, or a loop
// device over the same file.
var ErrSameDisk = errors.New("cloneio: source and target overlap")

// CheckDistinct refuses to write target when its bytes are (some of) the
// bytes of src: `dimg clone a.raw a.raw`, `dimg restore x.dimg /dev/loop0`
// with loop0 backed by x.dimg, a disk and one of its partitions. A target
// that does not exist yet cannot overlap anything; a path that cannot be
// resolved is left to the open that follows to report.
func CheckDistinct(src, target string) error {
	a, ok := resolveExtent(src, 0)
	if !ok {
		return nil
	}
	b, ok := resolveExtent(target, 0)
	if !ok {
		return nil
	}
	if !a.overlaps(b) {
		return nil
	}
	kind := "file"
	if isBlockDevice(src) || isBlockDevice(target) {
		kind = "disk"
	}
	if a == b {
		return fmt.Errorf("%w: %s and %s are the same %s; writing one would destroy the other", ErrSameDisk, src, target, kind)
	}
	return fmt.Errorf("%w: %s and %s share bytes (%s); writing one would destroy the other", ErrSameDisk, src, target, a.what())
}

// extent is a byte range of the object that ultimately holds a file's or
// device's bytes: a regular file (by device and inode) or a whole disk (by
// major:minor), after following partitions and loop devices down.
type extent struct {
	key        string // "file DEV INO" or "disk MAJ:MIN"
	start, end int64
}

func (e extent) overlaps(o extent) bool {
	return e.key == o.key && e.start < o.end && o.start < e.end
}

// what names the object an extent is part of, for messages.
func (e extent) what() string {
	if strings.HasPrefix(e.key, "file") {
		return "views of one file, through a loop device"
	}
	return "a disk and its partition, or views of one disk"
}

// maxStack bounds how many layers (partition → loop → file) resolveExtent
// follows; real stacks are two or three deep.
const maxStack = 8

// resolveExtent finds the bytes path stands for.
func resolveExtent(path string, depth int) (extent, bool) {
	var st unix.Stat_t
	if depth > maxStack || unix.Stat(path, &st) != nil {
		return extent{}, false
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return extent{key: fmt.Sprintf("file %d %d", st.Dev, st.Ino), start: 0, end: 1<<63 - 1}, true
	case unix.S_IFBLK:
		return devExtent(unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)), depth)
	}
	return extent{}, false
}

// devExtent resolves block device maj:min through sysfs: a partition is a
// range of its disk; a loop device is a range of its backing file (or
// device).
func devExtent(maj, min uint32, depth int) (extent, bool) {
	if depth > maxStack {
		return extent{}, false
	}
	sys, err := filepath.EvalSymlinks(fmt.Sprintf("/sys/dev/block/%d:%d", maj, min))
	if err != nil {
		return extent{}, false
	}
	start, size := int64(0), readSysInt(filepath.Join(sys, "size"))*512
	if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
		start = readSysInt(filepath.Join(sys, "start")) * 512
		sys = filepath.Dir(sys) // the whole disk
	}
	if size <= 0 {
		size = 1<<63 - 1 - start
	}
	e := extent{key: "disk " + readSysString(filepath.Join(sys, "dev")), start: start, end: start + size}
	if _, err := os.Stat(filepath.Join(sys, "loop")); err != nil {
		return e, true
	}
	// A loop device: its bytes are [offset, offset+size) of its backing
	// file. The kernel's own record (dev, inode) survives a rename or
	// deletion of the file; a backing block device is followed down.
	off := readSysInt(filepath.Join(sys, "loop", "offset"))
	backing := readSysString(filepath.Join(sys, "loop", "backing_file"))
	var bst unix.Stat_t
	if backing != "" && unix.Stat(backing, &bst) == nil && bst.Mode&unix.S_IFMT == unix.S_IFBLK {
		b, ok := devExtent(unix.Major(uint64(bst.Rdev)), unix.Minor(uint64(bst.Rdev)), depth+1)
		if !ok {
			return e, true
		}
		return extent{key: b.key, start: b.start + off + start, end: b.start + off + start + size}, true
	}
	if fd, err := unix.Open("/dev/"+filepath.Base(sys), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0); err == nil {
		info, err := unix.IoctlLoopGetStatus64(fd)
		unix.Close(fd)
		if err == nil {
			s := int64(info.Offset) + start
			return extent{key: fmt.Sprintf("file %d %d", info.Device, info.Inode), start: s, end: s + size}, true
		}
	}
	if backing != "" && unix.Stat(backing, &bst) == nil && bst.Mode&unix.S_IFMT == unix.S_IFREG {
		s := off + start
		return extent{key: fmt.Sprintf("file %d %d", bst.Dev, bst.Ino), start: s, end: s + size}, true
	}
	return e, true
}

func readSysString(p string) string {
	b, _ := os.ReadFile(p)
	return strings.TrimSpace(string(b))
}

func readSysInt(p string) int64 {
	n, _ := strconv.ParseInt(readSysString(p), 10, 64)
	return n
}

// overlappingDevices lists the other block devices ("maj:min") whose bytes
// overlap those of the device at path: its partitions, the disk it is a
// partition of, and loop devices over the same file. A filesystem mounted
// from any of them would see its blocks change under it.
func overlappingDevices(path string) []string {
	self, ok := resolveExtent(path, 0)
	if !ok {
		return nil
	}
	ents, err := os.ReadDir("/sys/class/block")
	if err != nil {
		return nil
	}
	var out []string
	for _, ent := range ents {
		dev := readSysString(filepath.Join("/sys/class/block", ent.Name(), "dev"))
		var maj, min uint32
		if _, err := fmt.Sscanf(dev, "%d:%d", &maj, &min); err != nil {
			continue
		}
		if e, ok := devExtent(maj, min, 0); ok && e.overlaps(self) {
			out = append(out, dev)
		}
	}
	return out
}
