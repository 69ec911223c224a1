package cloneio

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

func ioctlRange(f *os.File, req uint, rng *[2]uint64) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(req), uintptr(unsafe.Pointer(rng)))
	if errno != 0 {
		return errno
	}
	return nil
}

// dropCache asks the kernel to forget cached pages of f, so a read-back
// reads the medium rather than what was just written to memory.
func dropCache(f *os.File) {
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// umask reads the process umask (there is no way to read it without
// setting it, so set it back at once).
func umask() os.FileMode {
	m := unix.Umask(0)
	unix.Umask(m)
	return os.FileMode(m)
}
