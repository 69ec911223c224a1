package extract

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/dimg-project/dimg/fsdrivers"
)

// Entry describes one file for listings (ls -l, ls --json).
type Entry struct {
	Path     string      `json:"path"` // io/fs path, "." for the root
	Name     string      `json:"name"`
	Type     string      `json:"type"` // file, dir, symlink, char, block, fifo, socket
	Mode     string      `json:"mode"` // ls style: "drwxr-xr-x"
	Perm     uint32      `json:"perm"` // permission and setuid/setgid/sticky bits, as chmod takes them
	Size     int64       `json:"size"`
	Uid      uint32      `json:"uid"`
	Gid      uint32      `json:"gid"`
	Ino      uint64      `json:"ino,omitempty"`
	Nlink    uint32      `json:"nlink,omitempty"`
	Rdev     uint64      `json:"rdev,omitempty"`
	Mtime    time.Time   `json:"mtime"`
	Target   string      `json:"target,omitempty"` // symlink target
	Error    string      `json:"error,omitempty"`  // why the entry could not be read fully
	FileMode fs.FileMode `json:"-"`
}

// TypeName names the type of an io/fs mode as Entry.Type does.
func TypeName(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "dir"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeCharDevice != 0:
		return "char"
	case m&fs.ModeDevice != 0:
		return "block"
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m.IsRegular():
		return "file"
	}
	return "unknown"
}

// LsMode is the mode column of ls -l ("lrwxrwxrwx", "drwxrwxrwt",
// "-rwsr-xr-x"): io/fs's String uses other letters ("Lrwxrwxrwx",
// "dtrwxrwxrwx", "urwxr-xr-x") that no Unix tool prints or parses.
func LsMode(mode fs.FileMode) string {
	m := []byte(mode.Perm().String())
	m[0] = map[string]byte{"dir": 'd', "symlink": 'l', "char": 'c', "block": 'b', "fifo": 'p', "socket": 's'}[TypeName(mode)]
	if m[0] == 0 {
		m[0] = '-'
	}
	special := func(i int, bit fs.FileMode, set, unset byte) {
		if mode&bit != 0 {
			if m[i] == 'x' {
				m[i] = set
			} else {
				m[i] = unset
			}
		}
	}
	special(3, fs.ModeSetuid, 's', 'S')
	special(6, fs.ModeSetgid, 's', 'S')
	special(9, fs.ModeSticky, 't', 'T')
	return string(m)
}

// NewEntry describes the file at p from its Lstat info; for a symlink it
// reads the target (a failure is noted in Entry.Error).
func NewEntry(fsys fsdrivers.Filesystem, p string, fi fs.FileInfo) Entry {
	e := Entry{
		Path:     p,
		Name:     fi.Name(),
		Type:     TypeName(fi.Mode()),
		Mode:     LsMode(fi.Mode()),
		Perm:     unixPerm(fi.Mode()),
		Size:     fi.Size(),
		Mtime:    fi.ModTime(),
		FileMode: fi.Mode(),
	}
	if p == "." {
		e.Name = "/"
	}
	if st := fsdrivers.StatOf(fi); st != nil {
		e.Uid, e.Gid, e.Ino, e.Nlink, e.Rdev = st.Uid, st.Gid, st.Ino, st.Nlink, st.Rdev
		if !st.Mtime.IsZero() {
			e.Mtime = st.Mtime
		}
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		t, err := fs.ReadLink(fsys, p)
		if err != nil {
			e.Error = err.Error()
		}
		e.Target = t
	}
	return e
}

// WalkFunc is called by Walk for every entry, directories before their
// contents. A non-nil err says p could not be read: a directory whose
// listing failed (fi describes the directory, and is called a second time),
// or an entry that could not be stat'ed or has an unsafe name (fi is nil; p
// then shows the name with invalid UTF-8 replaced). Returning fs.SkipDir
// skips a directory (or, from a file, the rest of its directory),
// fs.SkipAll ends the walk, any other error ends it with that error.
type WalkFunc func(p string, fi fs.FileInfo, err error) error

// Walk visits the tree at root (not following symlinks) in lexical order,
// like fs.WalkDir, but safe on a corrupt filesystem: entries with unsafe
// names are reported through fn's err and skipped, a directory that
// contains its own ancestor is reported instead of entered, and the depth
// is bounded by MaxDepth.
func Walk(ctx context.Context, fsys fsdrivers.Filesystem, root string, fn WalkFunc) error {
	root, err := fsdrivers.CleanPath(root)
	if err != nil {
		return err
	}
	fi, err := fsys.Lstat(root)
	if err != nil {
		return fn(root, nil, err)
	}
	err = walk(ctx, fsys, root, fi, fn, 0, nil)
	if errors.Is(err, fs.SkipDir) || errors.Is(err, fs.SkipAll) {
		return nil
	}
	return err
}

func walk(ctx context.Context, fsys fsdrivers.Filesystem, p string, fi fs.FileInfo, fn WalkFunc, depth int, up *ancestors) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := fn(p, fi, nil); err != nil || !fi.IsDir() {
		if errors.Is(err, fs.SkipDir) && fi.IsDir() {
			return nil
		}
		return err
	}
	if depth >= MaxDepth {
		return fn(p, fi, fmt.Errorf("%w: deeper than %d levels", ErrLoop, MaxDepth))
	}
	if st := fsdrivers.StatOf(fi); st != nil && st.Ino != 0 {
		if up.has(st.Ino) {
			return fn(p, fi, fmt.Errorf("%w: directory contains its own ancestor (inode %d)", ErrLoop, st.Ino))
		}
		up = &ancestors{ino: st.Ino, next: up}
	}
	ents, err := fsys.ReadDir(p)
	if err != nil {
		if err := fn(p, fi, err); err != nil {
			if errors.Is(err, fs.SkipDir) {
				return nil
			}
			return err
		}
	}
	for _, e := range ents {
		name := e.Name()
		if err := fsdrivers.CheckName(name); err != nil {
			if err := fn(joinPath(p, strings.ToValidUTF8(name, "?")), nil, err); err != nil {
				return skipDirOK(err)
			}
			continue
		}
		child := joinPath(p, name)
		cfi, err := fsys.Lstat(child)
		if err != nil {
			if err := fn(child, nil, err); err != nil {
				return skipDirOK(err)
			}
			continue
		}
		if err := walk(ctx, fsys, child, cfi, fn, depth+1, up); err != nil {
			return skipDirOK(err)
		}
	}
	return nil
}

// skipDirOK ends the current directory: fs.SkipDir from one of its entries
// skips the rest of it, as in fs.WalkDir.
func skipDirOK(err error) error {
	if errors.Is(err, fs.SkipDir) {
		return nil
	}
	return err
}
