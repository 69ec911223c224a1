package ntfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf16"

	"github.com/dimg-project/dimg/fsdrivers"
)

// maxSymlinkHops is the kernel's limit (MAXSYMLINKS).
const maxSymlinkHops = 40

// maxXattrBytes is the largest named stream returned by Xattrs: the
// kernel's xattr size limit (XATTR_SIZE_MAX).
const maxXattrBytes = 64 << 10

// resolve walks name from the root. Symlinks in the middle are always
// followed, the final one only if follow is set; ".." inside a symlink
// target is taken relative to the directory the link is in, as the kernel
// does.
func (v *Volume) resolve(op, name string, follow bool) (*inode, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	fail := func(err error) (*inode, error) {
		return nil, &fs.PathError{Op: op, Path: name, Err: err}
	}
	root, err := v.inode(recRoot)
	if err != nil {
		return fail(err)
	}
	stack := []*inode{root}
	var todo []string
	if name != "." {
		todo = strings.Split(name, "/")
	}
	for hops := 0; len(todo) > 0; {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		dir := stack[len(stack)-1]
		if dir.kind != kindDir {
			return fail(syscall.ENOTDIR)
		}
		ino, err := v.child(dir, c)
		if err != nil {
			return fail(err)
		}
		if ino.kind == kindSymlink && (len(todo) > 0 || follow) {
			if hops++; hops > maxSymlinkHops {
				return fail(syscall.ELOOP)
			}
			if ino.target == "" {
				return fail(fs.ErrNotExist)
			}
			if strings.HasPrefix(ino.target, "/") {
				stack = stack[:1]
			}
			todo = append(strings.Split(ino.target, "/"), todo...)
			continue
		}
		stack = append(stack, ino)
	}
	return stack[len(stack)-1], nil
}

// child looks name up in directory dir. Metafiles are not reachable, as
// they are not listed.
func (v *Volume) child(dir *inode, name string) (*inode, error) {
	idx, err := v.openIndex(dir)
	if err != nil {
		return nil, err
	}
	e, found, err := idx.lookup(name)
	if err != nil {
		return nil, err
	}
	if !found || refNum(e.ref) < firstUserRec {
		return nil, fs.ErrNotExist
	}
	return v.entryInode(e.ref)
}

// entryInode loads the file a directory entry refers to, checking that
// the entry is not stale (sequence number).
func (v *Volume) entryInode(ref uint64) (*inode, error) {
	ino, err := v.inode(refNum(ref))
	if err != nil {
		return nil, err
	}
	if s := refSeq(ref); s != 0 && s != ino.seq {
		return nil, fmt.Errorf("ntfs: %w: directory entry for record %d has sequence %d, the record %d",
			errCorrupt, refNum(ref), s, ino.seq)
	}
	return ino, nil
}

// list returns a directory's entries sorted by name, without DOS aliases,
// metafiles and duplicates.
func (v *Volume) list(dir *inode) ([]*dirEntry, error) {
	idx, err := v.openIndex(dir)
	if err != nil {
		return nil, err
	}
	var out []*dirEntry
	seen := map[string]bool{}
	err = idx.walk(func(e indexEntry) bool {
		if e.namespace == nsDOS || refNum(e.ref) < firstUserRec {
			return true
		}
		name := string(utf16.Decode(e.name))
		if seen[name] || name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
			return true
		}
		seen[name] = true
		out = append(out, &dirEntry{v: v, name: name, ref: e.ref, flags: e.flags})
		return true
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// Open implements fs.FS; it follows symlinks.
func (v *Volume) Open(name string) (fs.File, error) {
	ino, err := v.resolve("open", name, true)
	if err != nil {
		return nil, err
	}
	fi := &fileInfo{name: base(name), ino: ino}
	switch ino.kind {
	case kindDir:
		return &dirFile{v: v, fi: fi, path: name}, nil
	case kindRegular:
		data := pick(ino.attrs, atData, "")
		if len(data) == 0 {
			return &file{fi: fi}, nil
		}
		s, err := v.newStream(data, fmt.Sprintf("record %d $DATA", ino.num))
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("ntfs: %w: %w", errCorrupt, err)}
		}
		return &file{fi: fi, s: s}, nil
	}
	// FIFOs, sockets and devices have no content here.
	return &file{fi: fi}, nil
}

// Stat implements fs.StatFS; it follows symlinks.
func (v *Volume) Stat(name string) (fs.FileInfo, error) {
	ino, err := v.resolve("stat", name, true)
	if err != nil {
		return nil, err
	}
	return &fileInfo{name: base(name), ino: ino}, nil
}

// Lstat implements fs.ReadLinkFS; it does not follow a final symlink.
func (v *Volume) Lstat(name string) (fs.FileInfo, error) {
	ino, err := v.resolve("lstat", name, false)
	if err != nil {
		return nil, err
	}
	return &fileInfo{name: base(name), ino: ino}, nil
}

// ReadLink implements fs.ReadLinkFS.
func (v *Volume) ReadLink(name string) (string, error) {
	ino, err := v.resolve("readlink", name, false)
	if err != nil {
		return "", err
	}
	if ino.kind != kindSymlink {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
	}
	return ino.target, nil
}

// ReadDir implements fs.ReadDirFS.
func (v *Volume) ReadDir(name string) ([]fs.DirEntry, error) {
	ino, err := v.resolve("readdir", name, true)
	if err != nil {
		return nil, err
	}
	if ino.kind != kindDir {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: syscall.ENOTDIR}
	}
	es, err := v.list(ino)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
	}
	out := make([]fs.DirEntry, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out, nil
}

// Xattrs returns the named data streams (ADS) of name as "user.<stream>",
// as ntfs-3g presents them. Streams larger than the kernel's 64 KiB xattr
// limit are left out.
func (v *Volume) Xattrs(name string) (map[string][]byte, error) {
	ino, err := v.resolve("xattrs", name, false)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	byName := map[string][]attribute{}
	for _, a := range ino.attrs {
		if a.typ == atData && a.name != "" {
			byName[a.name] = append(byName[a.name], a)
		}
	}
	for n, extents := range byName {
		s, err := v.newStream(extents, fmt.Sprintf("record %d $DATA:%s", ino.num, n))
		if err != nil {
			return nil, &fs.PathError{Op: "xattrs", Path: name, Err: fmt.Errorf("ntfs: %w: %w", errCorrupt, err)}
		}
		if s.dataSize > maxXattrBytes {
			continue
		}
		b := make([]byte, s.dataSize)
		if _, err := s.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
			return nil, &fs.PathError{Op: "xattrs", Path: name, Err: err}
		}
		out["user."+n] = b
	}
	return out, nil
}

func base(name string) string {
	if name == "." {
		return "."
	}
	return path.Base(name)
}

// fileInfo implements fs.FileInfo.
type fileInfo struct {
	name string
	ino  *inode
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return fi.ino.size }
func (fi *fileInfo) ModTime() time.Time { return fi.ino.modify }
func (fi *fileInfo) IsDir() bool        { return fi.ino.kind == kindDir }

// Mode: NTFS has no Unix permissions (without ntfs-3g's optional ACL
// mapping); directories are 0755, files 0644, read-only files 0444.
func (fi *fileInfo) Mode() fs.FileMode {
	switch fi.ino.kind {
	case kindDir:
		return fs.ModeDir | 0o755
	case kindSymlink:
		return fs.ModeSymlink | 0o777
	case kindFIFO:
		return fs.ModeNamedPipe | 0o644
	case kindSocket:
		return fs.ModeSocket | 0o644
	case kindChar:
		return fs.ModeDevice | fs.ModeCharDevice | 0o644
	case kindBlock:
		return fs.ModeDevice | 0o644
	}
	if fi.ino.fattrs&faReadOnly != 0 {
		return 0o444
	}
	return 0o644
}

func (fi *fileInfo) Sys() any {
	return &fsdrivers.Stat{
		Ino:    fi.ino.num,
		Nlink:  fi.ino.nlink,
		Rdev:   fi.ino.rdev,
		Atime:  fi.ino.access,
		Ctime:  fi.ino.change,
		Mtime:  fi.ino.modify,
		Btime:  fi.ino.create,
		Blocks: fi.ino.blocks,
	}
}

// dirEntry implements fs.DirEntry. The type comes from the index entry's
// copy of the file attributes; only possible symlinks and special files
// (reparse points, SYSTEM files) need their record read.
type dirEntry struct {
	v     *Volume
	name  string
	ref   uint64
	flags uint32

	once sync.Once
	ino  *inode
	err  error
}

func (e *dirEntry) load() (*inode, error) {
	e.once.Do(func() { e.ino, e.err = e.v.entryInode(e.ref) })
	return e.ino, e.err
}

func (e *dirEntry) Name() string { return e.name }
func (e *dirEntry) IsDir() bool  { return e.Type().IsDir() }

func (e *dirEntry) Type() fs.FileMode {
	if e.flags&(faReparse|faSystem) == 0 {
		if e.flags&faDirectory != 0 {
			return fs.ModeDir
		}
		return 0
	}
	ino, err := e.load()
	if err != nil {
		if e.flags&faDirectory != 0 {
			return fs.ModeDir
		}
		return 0
	}
	return (&fileInfo{ino: ino}).Mode().Type()
}

func (e *dirEntry) Info() (fs.FileInfo, error) {
	ino, err := e.load()
	if err != nil {
		return nil, err
	}
	return &fileInfo{name: e.name, ino: ino}, nil
}

// file is an open regular (or special) file.
type file struct {
	fi *fileInfo
	s  *stream // nil: no content

	mu  sync.Mutex
	off int64
}

var _ fsdrivers.File = (*file)(nil)

func (f *file) Stat() (fs.FileInfo, error) { return f.fi, nil }
func (f *file) Close() error               { return nil }

func (f *file) ReadAt(p []byte, off int64) (int, error) {
	if f.s == nil {
		return 0, io.EOF
	}
	return f.s.ReadAt(p, off)
}

func (f *file) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.ReadAt(p, f.off)
	f.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// Seek implements io.Seeker.
func (f *file) Seek(offset int64, whence int) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.off
	case io.SeekEnd:
		offset += f.fi.ino.size
	default:
		return 0, fmt.Errorf("ntfs: seek: bad whence %d", whence)
	}
	if offset < 0 {
		return 0, fmt.Errorf("ntfs: seek: negative position %d", offset)
	}
	f.off = offset
	return offset, nil
}

// dirFile is an open directory.
type dirFile struct {
	v    *Volume
	fi   *fileInfo
	path string

	mu      sync.Mutex
	entries []*dirEntry
	loaded  bool
	pos     int
}

var _ fs.ReadDirFile = (*dirFile)(nil)

func (d *dirFile) Stat() (fs.FileInfo, error) { return d.fi, nil }
func (d *dirFile) Close() error               { return nil }

func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.path, Err: syscall.EISDIR}
}

func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.loaded {
		es, err := d.v.list(d.fi.ino)
		if err != nil {
			return nil, &fs.PathError{Op: "readdir", Path: d.path, Err: err}
		}
		d.entries, d.loaded = es, true
	}
	rest := d.entries[d.pos:]
	if n > 0 && len(rest) == 0 {
		return nil, io.EOF
	}
	if n > 0 && n < len(rest) {
		rest = rest[:n]
	}
	d.pos += len(rest)
	out := make([]fs.DirEntry, len(rest))
	for i, e := range rest {
		out[i] = e
	}
	return out, nil
}
