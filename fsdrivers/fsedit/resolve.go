package fsedit

import (
	"errors"
	"io/fs"
	"path"
	"strings"
	"syscall"

	"github.com/dimg-project/dimg/fsdrivers"
)

// maxLinks bounds the symbolic links one resolution follows, as the
// kernel's MAXSYMLINKS (40) does: a loop fails with ELOOP.
const maxLinks = 40

// FS edits a WritableFS by path. Its methods are not safe for concurrent
// use with each other (one edit at a time), though the WritableFS is.
type FS struct {
	W fsdrivers.WritableFS
	// Prefix is put before "/path" in error messages ("2:" gives
	// "2:/etc/fstab").
	Prefix string

	buf []byte // CopyIn's copy buffer
}

// New edits w; prefix names it in messages (see FS.Prefix).
func New(w fsdrivers.WritableFS, prefix string) *FS { return &FS{W: w, Prefix: prefix} }

// Show is how path p appears in messages: "2:/etc/fstab".
func (f *FS) Show(p string) string {
	if p == "." || p == "" {
		return f.Prefix + "/"
	}
	return f.Prefix + "/" + p
}

func (f *FS) pathErr(op, p string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return err
	}
	return &fs.PathError{Op: op, Path: f.Show(p), Err: err}
}

func isType(a fsdrivers.Attr, t uint32) bool { return a.Mode&fsdrivers.ModeType == t }

// IsDir reports whether a is a directory.
func IsDir(a fsdrivers.Attr) bool { return isType(a, fsdrivers.ModeDir) }

func split(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}

// walk resolves the components of p from the root, following symlinks in
// every component but the last, and the last one too when follow is set.
func (f *FS) walk(p string, follow bool) (fsdrivers.Attr, error) {
	root, err := f.W.Getattr(f.W.Root())
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	cur := root
	var up []fsdrivers.Attr // the directories above cur, for ".."
	comps := split(p)
	links := 0
	for len(comps) > 0 {
		c := comps[0]
		comps = comps[1:]
		if c == ".." {
			if n := len(up); n > 0 {
				cur, up = up[n-1], up[:n-1]
			}
			continue
		}
		if !IsDir(cur) {
			return fsdrivers.Attr{}, syscall.ENOTDIR
		}
		a, err := f.W.Lookup(cur.Ino, c)
		if err != nil {
			return fsdrivers.Attr{}, err
		}
		if isType(a, fsdrivers.ModeLink) && (len(comps) > 0 || follow) {
			if links++; links > maxLinks {
				return fsdrivers.Attr{}, syscall.ELOOP
			}
			t, err := f.W.Readlink(a.Ino)
			if err != nil {
				return fsdrivers.Attr{}, err
			}
			if strings.HasPrefix(t, "/") {
				cur, up = root, nil
			}
			comps = append(split(t), comps...)
			continue
		}
		up = append(up, cur)
		cur = a
	}
	return cur, nil
}

// Stat describes the node at p, following symbolic links.
func (f *FS) Stat(p string) (fsdrivers.Attr, error) {
	a, err := f.walk(p, true)
	if err != nil {
		return a, f.pathErr("stat", p, err)
	}
	return a, nil
}

// Lstat describes the node at p; a final symbolic link is not followed.
func (f *FS) Lstat(p string) (fsdrivers.Attr, error) {
	a, err := f.walk(p, false)
	if err != nil {
		return a, f.pathErr("lstat", p, err)
	}
	return a, nil
}

// parent resolves the directory that holds p's last component and returns
// it with that name. The root has no parent: EINVAL.
func (f *FS) parent(op, p string) (fsdrivers.Attr, string, error) {
	p = path.Clean(p)
	if p == "." || p == "/" || p == ".." || path.Base(p) == ".." {
		return fsdrivers.Attr{}, "", f.pathErr(op, p, syscall.EINVAL)
	}
	d, err := f.walk(path.Dir(p), true)
	if err != nil {
		return d, "", f.pathErr(op, p, err)
	}
	if !IsDir(d) {
		return d, "", f.pathErr(op, p, syscall.ENOTDIR)
	}
	return d, path.Base(p), nil
}

// Exists reports whether p names something (a dangling symlink counts).
func (f *FS) Exists(p string) (bool, error) {
	_, err := f.Lstat(p)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, syscall.ENOENT):
		return false, nil
	}
	return false, err
}
