package cloneio

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ErrExists is returned when an output already exists and Force is off.
var ErrExists = errors.New("cloneio: already exists")

// AtomicFile is a file written under a temporary name in the destination's
// directory and renamed into place only by Commit, so a failed or
// interrupted run never leaves a file that looks complete.
type AtomicFile struct {
	*os.File
	final string
	done  bool
}

// CreateAtomic creates the temporary file for path. Without force an
// existing path is an error.
func CreateAtomic(path string, force bool) (*AtomicFile, error) {
	if st, err := os.Lstat(path); err == nil {
		if !force {
			return nil, fmt.Errorf("%w: %s (use --force to overwrite)", ErrExists, path)
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("cloneio: %s exists and is not a regular file", path)
		}
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".part-*")
	if err != nil {
		return nil, err
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
		return err
	}
	if err := os.Rename(a.Name(), a.final); err != nil {
		os.Remove(a.Name())
		return err
	}
	// The rename is durable only once the directory is synced.
	if d, err := os.Open(filepath.Dir(a.final)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Abort removes the temporary file; it is a no-op after Commit.
func (a *AtomicFile) Abort() {
	if a.done {
		return
	}
	a.done = true
	a.cleanup()
}

func (a *AtomicFile) cleanup() {
	a.File.Close()
	os.Remove(a.Name())
}
