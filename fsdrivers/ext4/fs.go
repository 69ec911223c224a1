package ext4

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dimg-project/dimg/fsdrivers"
)

// maxSymlinkHops matches the kernel's MAXSYMLINKS.
const maxSymlinkHops = 40

// resolve walks an io/fs path from the root. Symlinks in the middle are
// always followed, a final one only when followLast; absolute targets
// restart at this filesystem's root, ".." at the root stays there.
func (v *Volume) resolve(name string, followLast bool) (*inode, error) {
	if err := v.checkSupported(); err != nil {
		return nil, err
	}
	root, err := v.readInode(rootIno)
	if err != nil {
		return nil, err
	}
	cur := root
	var comps []string
	if name != "." {
		comps = strings.Split(name, "/")
	}
	hops := 0
	for len(comps) > 0 {
		c := comps[0]
		comps = comps[1:]
		if !cur.isDir() {
			return nil, syscall.ENOTDIR
		}
		if c == "" || c == "." {
			continue // from symlink targets: "a//b", "./x", "dir/"
		}
		n, err := v.lookup(cur, c)
		if err != nil {
			return nil, err
		}
		next, err := v.readInode(n)
		if err != nil {
			return nil, err
		}
		if next.isSymlink() && (len(comps) > 0 || followLast) {
			if hops++; hops > maxSymlinkHops {
				return nil, syscall.ELOOP
			}
			target, err := v.readLink(next)
			if err != nil {
				return nil, err
			}
			if strings.HasPrefix(target, "/") {
				cur = root
			}
			comps = append(strings.Split(target, "/"), comps...)
			continue
		}
		cur = next
	}
	return cur, nil
}

// readLink returns a symlink's target: inline data, i_block (fast), or
// the first data block (slow).
func (v *Volume) readLink(ino *inode) (string, error) {
	if ino.size == 0 || ino.size > maxSymlinkLen {
		return "", corruptf("symlink inode %d has length %d", ino.num, ino.size)
	}
	n := int(ino.size)
	if ino.flags&flagInlineData == 0 && n < iBlockSize && !v.slowShortSymlink(ino) {
		return string(ino.block[:n]), nil
	}
	buf := make([]byte, n)
	if _, err := v.readData(ino, buf, 0, run{}); err != nil {
		return "", err
	}
	return string(buf), nil
}

// slowShortSymlink spots the rare short symlink kept in a data block (an
// extent-mapped one with a valid extent header) rather than in i_block.
func (v *Volume) slowShortSymlink(ino *inode) bool {
	return ino.flags&flagExtents != 0 && ino.block[0] == extMagic&0xFF && ino.block[1] == extMagic>>8 && ino.blocks512 > 0
}

func (v *Volume) pathErr(op, name string, err error) error {
	return &fs.PathError{Op: op, Path: name, Err: err}
}

func (v *Volume) walk(op, name string, followLast bool) (*inode, error) {
	if !fs.ValidPath(name) {
		return nil, v.pathErr(op, name, fs.ErrInvalid)
	}
	ino, err := v.resolve(name, followLast)
	if err != nil {
		return nil, v.pathErr(op, name, err)
	}
	return ino, nil
}

// Open opens name, following symlinks. Directories implement
// fs.ReadDirFile; everything else implements fsdrivers.File.
func (v *Volume) Open(name string) (fs.File, error) {
	ino, err := v.walk("open", name, true)
	if err != nil {
		return nil, err
	}
	if ino.isDir() {
		return &dirFile{v: v, name: name, ino: ino}, nil
	}
	return &file{v: v, name: name, ino: ino}, nil
}

// Stat describes name, following symlinks.
func (v *Volume) Stat(name string) (fs.FileInfo, error) {
	ino, err := v.walk("stat", name, true)
	if err != nil {
		return nil, err
	}
	return &fileInfo{name: path.Base(name), ino: ino}, nil
}

// Lstat describes name without following a final symlink.
func (v *Volume) Lstat(name string) (fs.FileInfo, error) {
	ino, err := v.walk("lstat", name, false)
	if err != nil {
		return nil, err
	}
	return &fileInfo{name: path.Base(name), ino: ino}, nil
}

// ReadLink returns the target of the symlink name.
func (v *Volume) ReadLink(name string) (string, error) {
	ino, err := v.walk("readlink", name, false)
	if err != nil {
		return "", err
	}
	if !ino.isSymlink() {
		return "", v.pathErr("readlink", name, fs.ErrInvalid)
	}
	t, err := v.readLink(ino)
	if err != nil {
		return "", v.pathErr("readlink", name, err)
	}
	return t, nil
}

// ReadDir lists the directory name sorted by file name, without "." and "..".
func (v *Volume) ReadDir(name string) ([]fs.DirEntry, error) {
	ino, err := v.walk("readdir", name, true)
	if err != nil {
		return nil, err
	}
	if !ino.isDir() {
		return nil, v.pathErr("readdir", name, syscall.ENOTDIR)
	}
	ents, err := v.list(ino)
	if err != nil {
		return nil, v.pathErr("readdir", name, err)
	}
	return ents, nil
}

// Xattrs lists the extended attributes of name (not following a final
// symlink) under their full names; POSIX ACLs come in the xattr form
// getxattr(2) returns.
func (v *Volume) Xattrs(name string) (map[string][]byte, error) {
	ino, err := v.walk("xattrs", name, false)
	if err != nil {
		return nil, err
	}
	m, err := v.xattrMap(ino)
	if err != nil {
		return nil, v.pathErr("xattrs", name, err)
	}
	return m, nil
}

// Dirent file types.
var ftypeMode = [...]fs.FileMode{
	1: 0,
	2: fs.ModeDir,
	3: fs.ModeDevice | fs.ModeCharDevice,
	4: fs.ModeDevice,
	5: fs.ModeNamedPipe,
	6: fs.ModeSocket,
	7: fs.ModeSymlink,
}

// list reads a directory's entries, sorted by name.
func (v *Volume) list(dir *inode) ([]fs.DirEntry, error) {
	var ents []fs.DirEntry
	var bad error
	err := v.scanDir(dir, func(d dirent) bool {
		name := string(d.name)
		if name == "." || name == ".." {
			return true
		}
		if strings.ContainsAny(name, "/\x00") {
			bad = corruptf("directory inode %d: entry name %q", dir.num, name)
			return false
		}
		e := &dirEntry{v: v, name: name, ino: d.ino}
		if int(d.ftype) < len(ftypeMode) && d.ftype != 0 {
			e.typ = ftypeMode[d.ftype]
		} else {
			// No file type in the entry (ext2 without the filetype
			// feature): ask the inode, as the kernel does.
			e.typ = fs.ModeIrregular
			if ino, err := v.readInode(d.ino); err == nil {
				e.typ = ino.fileMode().Type()
			}
		}
		ents = append(ents, e)
		return true
	})
	if err == nil {
		err = bad
	}
	if err != nil {
		return nil, err
	}
	slices.SortFunc(ents, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return ents, nil
}

// fileInfo implements fs.FileInfo; Sys returns *fsdrivers.Stat.
type fileInfo struct {
	name string
	ino  *inode
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return int64(min(fi.ino.size, 1<<63-1)) }
func (fi *fileInfo) Mode() fs.FileMode  { return fi.ino.fileMode() }
func (fi *fileInfo) ModTime() time.Time { return fi.ino.mtime }
func (fi *fileInfo) IsDir() bool        { return fi.ino.isDir() }
func (fi *fileInfo) Sys() any           { return fi.ino.stat() }

// dirEntry implements fs.DirEntry; Info reads the inode on demand.
type dirEntry struct {
	v    *Volume
	name string
	ino  uint32
	typ  fs.FileMode
}

func (e *dirEntry) Name() string      { return e.name }
func (e *dirEntry) IsDir() bool       { return e.typ.IsDir() }
func (e *dirEntry) Type() fs.FileMode { return e.typ }
func (e *dirEntry) Info() (fs.FileInfo, error) {
	ino, err := e.v.readInode(e.ino)
	if err != nil {
		return nil, e.v.pathErr("stat", e.name, err)
	}
	return &fileInfo{name: e.name, ino: ino}, nil
}
func (e *dirEntry) String() string { return fs.FormatDirEntry(e) }

// file is an open non-directory. ReadAt is safe for concurrent use.
type file struct {
	v    *Volume
	name string
	ino  *inode

	mu     sync.Mutex
	off    int64 // for Read and Seek
	hint   run   // last mapped run: sequential reads skip the tree walk
	closed bool
}

var (
	_ fsdrivers.File = (*file)(nil)
	_ io.Seeker      = (*file)(nil)
)

func (f *file) Stat() (fs.FileInfo, error) {
	return &fileInfo{name: path.Base(f.name), ino: f.ino}, nil
}

// size is what reads can return: device, FIFO and socket inodes have no
// data even if a damaged i_size says otherwise.
func (f *file) size() int64 {
	if !f.ino.isReg() && !f.ino.isSymlink() {
		return 0
	}
	return int64(min(f.ino.size, 1<<62))
}

func (f *file) ReadAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	closed, hint := f.closed, f.hint
	f.mu.Unlock()
	if closed {
		return 0, f.v.pathErr("read", f.name, fs.ErrClosed)
	}
	if off < 0 {
		return 0, f.v.pathErr("read", f.name, errors.New("negative offset"))
	}
	size := f.size()
	if off >= size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), size-off))
	hint, err := f.v.readData(f.ino, p[:n], off, hint)
	if err != nil {
		return 0, f.v.pathErr("read", f.name, err)
	}
	f.mu.Lock()
	f.hint = hint
	f.mu.Unlock()
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *file) Read(p []byte) (int, error) {
	f.mu.Lock()
	off := f.off
	f.mu.Unlock()
	n, err := f.ReadAt(p, off)
	f.mu.Lock()
	f.off = off + int64(n)
	f.mu.Unlock()
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (f *file) Seek(offset int64, whence int) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, f.v.pathErr("seek", f.name, fs.ErrClosed)
	}
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.off
	case io.SeekEnd:
		offset += f.size()
	default:
		return 0, f.v.pathErr("seek", f.name, fs.ErrInvalid)
	}
	if offset < 0 {
		return 0, f.v.pathErr("seek", f.name, fs.ErrInvalid)
	}
	f.off = offset
	return offset, nil
}

func (f *file) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return f.v.pathErr("close", f.name, fs.ErrClosed)
	}
	f.closed = true
	return nil
}

// dirFile is an open directory: fs.ReadDirFile, and a File whose reads fail.
type dirFile struct {
	v    *Volume
	name string
	ino  *inode

	mu      sync.Mutex
	entries []fs.DirEntry
	loaded  bool
	pos     int
	closed  bool
}

var (
	_ fs.ReadDirFile = (*dirFile)(nil)
	_ fsdrivers.File = (*dirFile)(nil)
)

func (d *dirFile) Stat() (fs.FileInfo, error) {
	return &fileInfo{name: path.Base(d.name), ino: d.ino}, nil
}

func (d *dirFile) Read([]byte) (int, error) {
	return 0, d.v.pathErr("read", d.name, syscall.EISDIR)
}

func (d *dirFile) ReadAt([]byte, int64) (int, error) {
	return 0, d.v.pathErr("read", d.name, syscall.EISDIR)
}

// ReadDir returns the next n entries (all remaining when n <= 0), sorted
// by name, with io.EOF at the end when n > 0.
func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, d.v.pathErr("readdir", d.name, fs.ErrClosed)
	}
	if !d.loaded {
		ents, err := d.v.list(d.ino)
		if err != nil {
			return nil, d.v.pathErr("readdir", d.name, err)
		}
		d.entries, d.loaded = ents, true
	}
	rest := d.entries[d.pos:]
	if n <= 0 {
		d.pos = len(d.entries)
		return slices.Clone(rest), nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	rest = rest[:min(n, len(rest))]
	d.pos += len(rest)
	return slices.Clone(rest), nil
}

func (d *dirFile) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return d.v.pathErr("close", d.name, fs.ErrClosed)
	}
	d.closed = true
	return nil
}

func (v *Volume) String() string {
	return fmt.Sprintf("%s %s (%d blocks of %d bytes)", v.Type(), v.UUID(), v.sb.blocksCount, v.blockSize)
}
