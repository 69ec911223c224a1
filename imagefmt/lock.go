package imagefmt

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The writer lock: at most one process writes an image at a time (a
// read-write mount, a commit, a compact), and a refused writer is told who
// holds it. Readers never take it and keep working.
//
// It is an flock(2) on a lock file next to the image, IMAGE.lock, which
// holds a description of the holder (JSON: pid, host, command, since). The
// flock, not the file, is the lock: the kernel drops it when the holder
// dies, however it dies, so a crash never leaves the image locked; a lock
// file left behind only describes who held it last. flock on a separate
// file, not on the image itself, leaves the image's own lock to the code
// that edits it, so one process can hold both.

// ErrLocked is wrapped by a *LockedError: another writer holds the image.
var ErrLocked = errors.New("imagefmt: image is locked by another writer")

// LockHolder describes a process holding (or that held) an image's writer
// lock.
type LockHolder struct {
	PID     int       `json:"pid"`
	Host    string    `json:"host"`
	Command string    `json:"command"`
	Since   time.Time `json:"since"`
}

func (h *LockHolder) String() string {
	if h == nil || h.PID == 0 {
		return "another process (it has not said who it is yet)"
	}
	return fmt.Sprintf("pid %d on %s (%s) since %s", h.PID, h.Host, h.Command, h.Since.Local().Format("2006-01-02 15:04:05"))
}

// LockedError: LockWriter was refused because Holder holds the lock.
type LockedError struct {
	Image  string
	Holder *LockHolder // nil when the holder has not written its description yet
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("imagefmt: %s is being written by %s; wait until it is done (or ends) and try again", e.Image, e.Holder)
}

func (e *LockedError) Unwrap() error { return ErrLocked }

// LockPath is the lock file of image: next to the file the path names
// after following symbolic links, so two links to one image share it.
func LockPath(image string) string { return canonical(image) + ".lock" }

// canonical is path with symbolic links resolved, or path itself when it
// does not exist (yet).
func canonical(path string) string {
	if p, err := filepath.EvalSymlinks(path); err == nil {
		return p
	}
	return path
}

// maxLockFile bounds what is read of a lock file: a description, not data.
const maxLockFile = 16 << 10

// WriterLock is a held writer lock; Unlock releases it.
type WriterLock struct {
	f     *os.File
	image string
	path  string // the lock file
	// Previous describes the holder before this one when it did not
	// release the lock cleanly (it crashed or was killed): its lock file
	// was still there. Nil otherwise.
	Previous *LockHolder
}

// LockWriter takes the writer lock of the image at path for this process,
// or fails with a *LockedError naming the process that holds it. It does
// not wait. The lock file is created next to the image, so the image's
// directory must be writable (a writer needs that anyway, for its scratch
// file).
func LockWriter(path string) (*WriterLock, error) {
	lp := LockPath(path)
	for range 100 {
		f, err := os.OpenFile(lp, os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("imagefmt: writer lock of %s: %w", path, err)
		}
		if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			h, _ := readHolder(f)
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, &LockedError{Image: path, Holder: h}
			}
			return nil, fmt.Errorf("imagefmt: writer lock %s: %w", lp, err)
		}
		// The previous holder removes its file while it still holds
		// the lock, so the file locked here may be one that is gone
		// from the directory: then another process may lock the new
		// one at the same time. Lock only the file the path names.
		if same, err := samePath(f, lp); err != nil || !same {
			f.Close()
			if err != nil {
				return nil, fmt.Errorf("imagefmt: writer lock %s: %w", lp, err)
			}
			continue
		}
		l := &WriterLock{f: f, image: path, path: lp}
		if h, err := readHolder(f); err == nil && h != nil {
			l.Previous = h
		}
		if err := l.describe(); err != nil {
			l.Unlock()
			return nil, fmt.Errorf("imagefmt: writer lock %s: %w", lp, err)
		}
		return l, nil
	}
	return nil, fmt.Errorf("imagefmt: writer lock %s: the lock file keeps being replaced", lp)
}

func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			return err
		}
	}
}

// samePath reports whether path still names the open file f.
func samePath(f *os.File, path string) (bool, error) {
	a, err := f.Stat()
	if err != nil {
		return false, err
	}
	b, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return os.SameFile(a, b), nil
}

// describe writes this process's description into the lock file. The new
// text is written over the old before the file is cut to its length, so a
// refused writer reading it meanwhile sees one whole description (the
// decoder stops after the first JSON value).
func (l *WriterLock) describe() error {
	host, _ := os.Hostname()
	h := LockHolder{PID: os.Getpid(), Host: host, Command: commandLine(), Since: time.Now().Truncate(time.Second)}
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if _, err := l.f.WriteAt(b, 0); err != nil {
		return err
	}
	return l.f.Truncate(int64(len(b)))
}

// commandLine is this process's command line, shortened for messages.
func commandLine() string {
	s := strings.Join(os.Args, " ")
	if len(s) > 200 {
		s = s[:197] + "..."
	}
	return s
}

func readHolder(f *os.File) (*LockHolder, error) {
	var h LockHolder
	if err := json.NewDecoder(io.NewSectionReader(f, 0, maxLockFile)).Decode(&h); err != nil {
		return nil, err
	}
	if h.PID == 0 {
		return nil, nil
	}
	return &h, nil
}

// ReadLockHolder describes who holds the writer lock of the image at path
// now, for a message when another lock on the image (such as an editor's
// on the file itself) is refused. Nil when nobody holds it or the holder
// has not said who it is: a lock file left by a holder that died describes
// nobody.
func ReadLockHolder(path string) *LockHolder {
	f, err := os.Open(LockPath(path))
	if err != nil {
		return nil
	}
	defer f.Close()
	if err := flock(f, unix.LOCK_SH|unix.LOCK_NB); err == nil {
		return nil // nobody holds it
	}
	h, _ := readHolder(f)
	return h
}

// Unlock releases the lock and removes the lock file (first, while the
// lock is still held, so a waiting writer never finds a file that a
// finished holder describes). Unlocking twice is a no-op.
func (l *WriterLock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := os.Remove(l.path)
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	if cerr := l.f.Close(); err == nil {
		err = cerr // closing the descriptor drops the flock
	}
	l.f = nil
	if err != nil {
		return fmt.Errorf("imagefmt: writer unlock of %s: %w", l.image, err)
	}
	return nil
}
