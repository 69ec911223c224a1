package fsedit

import (
	"errors"
	"path"
	"syscall"
	"time"

	"github.com/dimg-project/dimg/fsdrivers"
)

// Mkdir makes directory p; its parent must exist.
func (f *FS) Mkdir(p string, mode uint32, owner fsdrivers.Owner) (fsdrivers.Attr, error) {
	d, name, err := f.parent("mkdir", p)
	if err != nil {
		return d, err
	}
	owner, mode = Inherit(d, owner, mode&fsdrivers.ModePerm, true)
	a, err := f.W.Mkdir(d.Ino, name, mode, owner)
	if err != nil {
		return a, f.pathErr("mkdir", p, err)
	}
	return a, nil
}

// Inherit applies a set-group-ID directory's rule to a node made in it,
// as the kernel does: the node gets the directory's group, and a
// directory also the set-group-ID bit.
func Inherit(dir fsdrivers.Attr, owner fsdrivers.Owner, mode uint32, isDir bool) (fsdrivers.Owner, uint32) {
	if dir.Mode&0o2000 == 0 {
		return owner, mode
	}
	owner.Gid = dir.Gid
	if isDir {
		mode |= 0o2000
	}
	return owner, mode
}

// MkdirAll makes directory p and the parents it lacks; an existing
// directory (or a symlink to one) is fine.
func (f *FS) MkdirAll(p string, mode uint32, owner fsdrivers.Owner) (fsdrivers.Attr, error) {
	a, err := f.Stat(p)
	switch {
	case err == nil && IsDir(a):
		return a, nil
	case err == nil:
		return a, f.pathErr("mkdir", p, syscall.ENOTDIR)
	case !errors.Is(err, syscall.ENOENT):
		return a, err
	}
	if dir := path.Dir(path.Clean(p)); dir != "." && dir != "/" {
		if _, err := f.MkdirAll(dir, mode, owner); err != nil {
			return a, err
		}
	}
	return f.Mkdir(p, mode, owner)
}

// Remove removes a file, a symlink, a special file or an empty directory.
func (f *FS) Remove(p string) error {
	d, name, err := f.parent("remove", p)
	if err != nil {
		return err
	}
	a, err := f.W.Lookup(d.Ino, name)
	if err != nil {
		return f.pathErr("remove", p, err)
	}
	if IsDir(a) {
		err = f.W.Rmdir(d.Ino, name)
	} else {
		err = f.W.Unlink(d.Ino, name)
	}
	if err != nil {
		return f.pathErr("remove", p, err)
	}
	return nil
}

// RemoveAll removes p and everything under it; a final symlink is removed,
// not followed. A missing p is an error (rm -r, not rm -rf).
func (f *FS) RemoveAll(p string) error {
	d, name, err := f.parent("remove", p)
	if err != nil {
		return err
	}
	if err := f.removeAll(d.Ino, name, p); err != nil {
		return f.pathErr("remove", p, err)
	}
	return nil
}

func (f *FS) removeAll(dir uint64, name, p string) error {
	a, err := f.W.Lookup(dir, name)
	if err != nil {
		return err
	}
	if !IsDir(a) {
		return f.W.Unlink(dir, name)
	}
	ents, err := f.W.ReadDir(a.Ino)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := f.removeAll(a.Ino, e.Name, path.Join(p, e.Name)); err != nil {
			return f.pathErr("remove", path.Join(p, e.Name), err)
		}
	}
	return f.W.Rmdir(dir, name)
}

// Move renames src to dst. When dst is an existing directory (or a symlink
// to one), src moves into it under its own name, as mv does. An existing
// non-directory dst is replaced only with force.
func (f *FS) Move(src, dst string, force bool) error {
	sd, sname, err := f.parent("move", src)
	if err != nil {
		return err
	}
	if _, err := f.W.Lookup(sd.Ino, sname); err != nil {
		return f.pathErr("move", src, err)
	}
	if a, err := f.Stat(dst); err == nil && IsDir(a) {
		dst = path.Join(dst, sname)
	}
	dd, dname, err := f.parent("move", dst)
	if err != nil {
		return err
	}
	flags := fsdrivers.RenameNoReplace
	if force {
		flags = 0
	}
	if err := f.W.Rename(sd.Ino, sname, dd.Ino, dname, flags); err != nil {
		if errors.Is(err, syscall.EEXIST) {
			return f.pathErr("move", dst, existsErr{err})
		}
		return f.pathErr("move", dst, err)
	}
	return nil
}

// existsErr explains EEXIST with the way around it.
type existsErr struct{ err error }

func (e existsErr) Error() string { return "already exists (--force replaces it)" }
func (e existsErr) Unwrap() error { return e.err }

// Setattr changes p's attributes (a final symlink is not followed: the
// link's own, as lchown does; chmod of a link's target needs its path).
func (f *FS) Setattr(p string, set fsdrivers.SetAttr) (fsdrivers.Attr, error) {
	a, err := f.Lstat(p)
	if err != nil {
		return a, err
	}
	a, err = f.W.Setattr(a.Ino, set)
	if err != nil {
		return a, f.pathErr("setattr", p, err)
	}
	return a, nil
}

// Chmod sets p's permission bits (following a final symlink, as chmod
// does: a link has no mode of its own).
func (f *FS) Chmod(p string, mode uint32) error {
	a, err := f.Stat(p)
	if err != nil {
		return err
	}
	mode &= fsdrivers.ModePerm
	if _, err := f.W.Setattr(a.Ino, fsdrivers.SetAttr{Mode: &mode}); err != nil {
		return f.pathErr("chmod", p, err)
	}
	return nil
}

// Chown sets p's owner and/or group (nil keeps it); a final symlink is
// changed itself, as lchown does.
func (f *FS) Chown(p string, uid, gid *uint32) error {
	_, err := f.Setattr(p, fsdrivers.SetAttr{Uid: uid, Gid: gid})
	return err
}

// Touch sets p's times.
func (f *FS) Touch(p string, atime, mtime time.Time) error {
	_, err := f.Setattr(p, fsdrivers.SetAttr{Atime: &atime, Mtime: &mtime})
	return err
}

// Link makes newPath a hard link to the file at oldPath (a final symlink
// of oldPath is linked itself, as link(2) does).
func (f *FS) Link(oldPath, newPath string) error {
	a, err := f.Lstat(oldPath)
	if err != nil {
		return err
	}
	d, name, err := f.parent("link", newPath)
	if err != nil {
		return err
	}
	if _, err := f.W.Link(a.Ino, d.Ino, name); err != nil {
		return f.pathErr("link", newPath, err)
	}
	return nil
}

// Symlink makes newPath a symbolic link to target (stored as given;
// resolved inside the filesystem when followed).
func (f *FS) Symlink(target, newPath string, owner fsdrivers.Owner) error {
	d, name, err := f.parent("symlink", newPath)
	if err != nil {
		return err
	}
	owner, _ = Inherit(d, owner, 0, false)
	if _, err := f.W.Symlink(d.Ino, name, target, owner); err != nil {
		return f.pathErr("symlink", newPath, err)
	}
	return nil
}

// WalkFunc is called by Walk for each node, parents before children.
type WalkFunc func(p string, a fsdrivers.Attr) error

// Walk calls fn for p and, if it is a directory, everything under it
// (symlinks not followed, except p itself when it is one to a directory).
func (f *FS) Walk(p string, fn WalkFunc) error {
	a, err := f.Stat(p)
	if err != nil {
		return err
	}
	return f.walkTree(p, a, fn)
}

func (f *FS) walkTree(p string, a fsdrivers.Attr, fn WalkFunc) error {
	if err := fn(p, a); err != nil {
		return err
	}
	if !IsDir(a) {
		return nil
	}
	ents, err := f.W.ReadDir(a.Ino)
	if err != nil {
		return f.pathErr("readdir", p, err)
	}
	for _, e := range ents {
		cp := path.Join(p, e.Name)
		ca, err := f.W.Lookup(a.Ino, e.Name)
		if err != nil {
			return f.pathErr("lstat", cp, err)
		}
		if err := f.walkTree(cp, ca, fn); err != nil {
			return err
		}
	}
	return nil
}
