package cloneio

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// ErrExists is returned when an output already exists and Force is off.
var ErrExists = errors.New("cloneio: already exists")

// AtomicFile is a file written under a temporary name in the destination's
// directory and renamed into place only by Commit, so a failed or
// interrupted run never leaves a file that looks complete.
type AtomicFile struct {
	*os.File
	final string

	mu   sync.Mutex // Commit and Abort may race (Abort from an interrupt)
	done bool
}

// CreateAtomic creates the temporary file for path. Without force an
// existing path is an error.
func CreateAtomic(path string, force bool) (*AtomicFile, error) {
	if st, err := os.Lstat(path); err == nil {
		// A directory (or a link, a FIFO) is never replaced: say so rather
		// than suggest a --force that would be refused too.
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("cloneio: %s exists and is not a regular file", path)
		}
		if !force {
			return nil, fmt.Errorf("%w: %s (use --force to overwrite)", ErrExists, path)
		}
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".part-*")
	if err != nil {
		// Name what the user named, not our temporary name.
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("cloneio: create %s: %w", path, err)
	}
	// CreateTemp makes 0600 files; an image or disk file is an ordinary
	// file (the umask still applies at rename time through this mode).
	if err := f.Chmod(0o644 &^ umask()); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return &AtomicFile{File: f, final: path}, nil
}

// Commit flushes the file to stable storage and renames it into place.
func (a *AtomicFile) Commit() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done {
		return errors.New("cloneio: commit after commit or abort")
	}
	a.done = true
	if err := a.Sync(); err != nil {
		a.cleanup()
		return fmt.Errorf("cloneio: sync %s: %w", a.final, err)
	}
	if err := a.File.Close(); err != nil {
		os.Remove(a.Name())
		return fmt.Errorf("cloneio: close %s: %w", a.final, err)
	}
	if err := os.Rename(a.Name(), a.final); err != nil {
		os.Remove(a.Name())
		return fmt.Errorf("cloneio: %w", err)
	}
	// The rename is durable only once the directory is synced.
	if d, err := os.Open(filepath.Dir(a.final)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Abort removes the temporary file; it is a no-op after Commit. It is safe
// to call from another goroutine while the file is being written.
func (a *AtomicFile) Abort() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done {
		return
	}
	a.done = true
	a.cleanup()
}

// Write and WriteAt name the file the user asked for in their errors
// ("no space left on device"), not the temporary name.
func (a *AtomicFile) Write(p []byte) (int, error) {
	n, err := a.File.Write(p)
	return n, a.rename(err)
}

func (a *AtomicFile) WriteAt(p []byte, off int64) (int, error) {
	n, err := a.File.WriteAt(p, off)
	return n, a.rename(err)
}

func (a *AtomicFile) rename(err error) error {
	var pe *os.PathError
	if err != nil && errors.As(err, &pe) && pe.Path == a.File.Name() {
		return &os.PathError{Op: pe.Op, Path: a.final, Err: pe.Err}
	}
	return err
}

func (a *AtomicFile) cleanup() {
	a.File.Close()
	os.Remove(a.Name())
}
