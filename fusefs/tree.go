package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/dimg-project/dimg/fsdrivers"
)

// tree is one partition's filesystem as shown under pN/.
type tree struct {
	fsys fsdrivers.Filesystem
	part int    // index from 1, the top bits of inode numbers
	name string // "pN", for log lines
	size int64  // partition size, for statfs
	log  *errLog
}

// display names a path inside the tree for log lines: "p2/etc/fstab".
func (t *tree) display(p string) string {
	if p == "." {
		return t.name
	}
	return t.name + "/" + p
}

// node is any entry inside pN/: directory, file, symlink, device, fifo.
// The kernel only sends each type the operations that apply to it. A node
// is looked up once per inode: a second name of a hard link gets the node
// of the first (go-fuse matches them by inode number), which is right since
// both names are the same file.
type node struct {
	fs.Inode
	tree *tree
	path string        // io/fs path of the first name it was found under
	fi   iofs.FileInfo // Lstat of path; the image never changes

	xmu    sync.Mutex
	xattrs map[string][]byte // loaded on first use
	xerr   error
}

var (
	_ = (fs.NodeLookuper)((*node)(nil))
	_ = (fs.NodeOpendirHandler)((*node)(nil))
	_ = (fs.NodeGetattrer)((*node)(nil))
	_ = (fs.NodeOpener)((*node)(nil))
	_ = (fs.NodeReader)((*node)(nil))
	_ = (fs.NodeReleaser)((*node)(nil))
	_ = (fs.NodeFlusher)((*node)(nil))
	_ = (fs.NodeReadlinker)((*node)(nil))
	_ = (fs.NodeGetxattrer)((*node)(nil))
	_ = (fs.NodeListxattrer)((*node)(nil))
	_ = (fs.NodeStatfser)((*node)(nil))
)

func inoOf(fi iofs.FileInfo) uint64 {
	if st := fsdrivers.StatOf(fi); st != nil {
		return st.Ino
	}
	return 0
}

// unixMode converts an io/fs mode to st_mode bits.
func unixMode(m iofs.FileMode) uint32 {
	p := uint32(m.Perm())
	if m&iofs.ModeSetuid != 0 {
		p |= syscall.S_ISUID
	}
	if m&iofs.ModeSetgid != 0 {
		p |= syscall.S_ISGID
	}
	if m&iofs.ModeSticky != 0 {
		p |= syscall.S_ISVTX
	}
	switch {
	case m.IsDir():
		return p | syscall.S_IFDIR
	case m&iofs.ModeSymlink != 0:
		return p | syscall.S_IFLNK
	case m&iofs.ModeCharDevice != 0:
		return p | syscall.S_IFCHR
	case m&iofs.ModeDevice != 0:
		return p | syscall.S_IFBLK
	case m&iofs.ModeNamedPipe != 0:
		return p | syscall.S_IFIFO
	case m&iofs.ModeSocket != 0:
		return p | syscall.S_IFSOCK
	}
	return p | syscall.S_IFREG
}

// fillAttr sets out from an Lstat result.
func fillAttr(out *fuse.Attr, fi iofs.FileInfo) {
	out.Mode = unixMode(fi.Mode())
	out.Size = uint64(max(fi.Size(), 0))
	out.Blksize = 4096
	out.Blocks = (out.Size + 511) / 512
	out.Nlink = 1
	mt := fi.ModTime()
	at, ct := mt, mt
	if st := fsdrivers.StatOf(fi); st != nil {
		out.Nlink = st.Nlink
		out.Uid, out.Gid = st.Uid, st.Gid
		out.Rdev = uint32(st.Rdev)
		out.Blocks = uint64(max(st.Blocks, 0))
		if !st.Mtime.IsZero() {
			mt = st.Mtime
		}
		if !st.Atime.IsZero() {
			at = st.Atime
		}
		if !st.Ctime.IsZero() {
			ct = st.Ctime
		}
	}
	if fi.IsDir() && out.Nlink == 0 {
		out.Nlink = 2
	}
	if !fi.Mode().IsRegular() && fi.Mode()&iofs.ModeSymlink == 0 && !fi.IsDir() {
		out.Size = 0
	}
	setTimes(out, at, mt, ct)
}

// setTimes sets the times. Times before 1970 (a corrupt inode, or ext4's
// extended range) work too: the kernel reads fuse_attr's u64 seconds back
// as a signed time64_t, so the two's complement go-fuse stores is exact.
func setTimes(out *fuse.Attr, a, m, c time.Time) {
	out.SetTimes(&a, &m, &c)
}

// child builds the node of name in directory n from its Lstat result.
func (n *node) child(ctx context.Context, name string, fi iofs.FileInfo, out *fuse.EntryOut) *fs.Inode {
	c := &node{tree: n.tree, path: joinPath(n.path, name), fi: fi}
	fillAttr(&out.Attr, fi)
	mode := out.Attr.Mode & syscall.S_IFMT
	return n.NewInode(ctx, c, fs.StableAttr{Mode: mode, Ino: treeIno(n.tree.part, inoOf(fi))})
}

func joinPath(dir, name string) string {
	if dir == "." {
		return name
	}
	return dir + "/" + name
}

// validName reports whether a name from the image can be shown: the kernel
// rejects a whole directory listing holding "/" in a name, and "", "." and
// ".." would alias other entries (fsdrivers.CheckName's rules).
func validName(name string) bool { return fsdrivers.CheckName(name) == nil }

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if !validName(name) {
		return nil, syscall.ENOENT
	}
	p := joinPath(n.path, name)
	fi, err := n.tree.fsys.Lstat(p)
	if err != nil {
		return nil, n.tree.log.errno("lookup", n.tree.display(p), err)
	}
	return n.child(ctx, name, fi, out), 0
}

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fillAttr(&out.Attr, n.fi)
	return 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	statfs(out, n.tree.size)
	return 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	t, err := iofs.ReadLink(n.tree.fsys, n.path)
	if err != nil {
		return nil, n.tree.log.errno("readlink", n.tree.display(n.path), err)
	}
	return []byte(t), 0
}

// fileHandle is an open regular file.
type fileHandle struct {
	f  iofs.File
	ra io.ReaderAt
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	if !n.fi.Mode().IsRegular() {
		return nil, 0, syscall.EINVAL
	}
	f, err := n.tree.fsys.Open(n.path)
	if err != nil {
		return nil, 0, n.tree.log.errno("open", n.tree.display(n.path), err)
	}
	ra, ok := f.(io.ReaderAt)
	if !ok {
		f.Close()
		return nil, 0, n.tree.log.errno("open", n.tree.display(n.path), errNoReaderAt)
	}
	return &fileHandle{f: f, ra: ra}, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *node) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := f.(*fileHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	got, errno := readAt(h.ra, n.fi.Size(), dest, off, n.tree.log, n.tree.display(n.path))
	if errno != 0 {
		return nil, errno
	}
	return fuse.ReadResultData(dest[:got]), 0
}

// Flush answers ENOSYS: there is nothing to flush in a read-only tree, and
// the kernel then stops sending FLUSH on every close (one round trip less
// per file opened).
func (n *node) Flush(ctx context.Context, f fs.FileHandle) syscall.Errno { return syscall.ENOSYS }

func (n *node) Release(ctx context.Context, f fs.FileHandle) syscall.Errno {
	if h, ok := f.(*fileHandle); ok {
		h.f.Close()
	}
	return 0
}

// loadXattrs reads the attributes once: ls -l asks for security.selinux
// and the ACLs of every file it lists.
func (n *node) loadXattrs() (map[string][]byte, error) {
	n.xmu.Lock()
	defer n.xmu.Unlock()
	if n.xattrs == nil && n.xerr == nil {
		n.xattrs, n.xerr = fsdrivers.Xattrs(n.tree.fsys, n.path)
		if n.xattrs == nil && n.xerr == nil {
			n.xattrs = map[string][]byte{}
		}
	}
	return n.xattrs, n.xerr
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	xa, err := n.loadXattrs()
	if err != nil {
		return 0, n.tree.log.errno("getxattr", n.tree.display(n.path), err)
	}
	v, ok := xa[attr]
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	xa, err := n.loadXattrs()
	if err != nil {
		return 0, n.tree.log.errno("listxattr", n.tree.display(n.path), err)
	}
	names := make([]string, 0, len(xa))
	size := 0
	for k := range xa {
		names = append(names, k)
		size += len(k) + 1
	}
	if len(dest) < size {
		return uint32(size), syscall.ERANGE
	}
	slices.Sort(names)
	off := 0
	for _, k := range names {
		off += copy(dest[off:], k)
		dest[off] = 0
		off++
	}
	return uint32(off), 0
}

// OpendirHandle opens a directory. The listing is read from the image on
// the first readdir, and the kernel may cache it (FOPEN_CACHE_DIR).
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if !n.fi.IsDir() {
		return nil, 0, syscall.ENOTDIR
	}
	return &dirHandle{n: n}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// dirHandle streams one directory. go-fuse serialises calls on a handle.
type dirHandle struct {
	n      *node
	loaded bool
	ents   []iofs.DirEntry
	idx    int
	// last is the entry Readdirent returned last, with its Lstat, so the
	// Lookup go-fuse makes for READDIRPLUS does not read the inode again.
	lastName string
	lastFI   iofs.FileInfo
}

var (
	_ = (fs.FileReaddirenter)((*dirHandle)(nil))
	_ = (fs.FileSeekdirer)((*dirHandle)(nil))
	_ = (fs.FileLookuper)((*dirHandle)(nil))
	_ = (fs.FileReleasedirer)((*dirHandle)(nil))
)

func (d *dirHandle) load() syscall.Errno {
	if d.loaded {
		return 0
	}
	t := d.n.tree
	ents, err := t.fsys.ReadDir(d.n.path)
	if err != nil && len(ents) == 0 {
		return t.log.errno("readdir", t.display(d.n.path), err)
	}
	if err != nil {
		// Show what could be read; the log says the rest is damaged.
		t.log.errno("readdir", t.display(d.n.path), err)
	}
	kept := ents[:0]
	for _, e := range ents {
		if validName(e.Name()) {
			kept = append(kept, e)
			continue
		}
		t.log.errno("readdir", t.display(d.n.path), &badNameError{e.Name()})
	}
	d.ents, d.loaded = kept, true
	return 0
}

// dots is the number of virtual entries ("." and "..") that start every
// listing, as on a local filesystem.
const dots = 2

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if errno := d.load(); errno != 0 {
		return nil, errno
	}
	if d.idx < dots {
		d.idx++
		d.lastName, d.lastFI = "", nil
		de := &fuse.DirEntry{Name: "..", Off: uint64(d.idx), Mode: syscall.S_IFDIR}
		if d.idx == 1 {
			de.Name, de.Ino = ".", d.n.StableAttr().Ino
		}
		return de, 0
	}
	if d.idx-dots >= len(d.ents) {
		return nil, 0
	}
	e := d.ents[d.idx-dots]
	d.idx++
	de := &fuse.DirEntry{Name: e.Name(), Off: uint64(d.idx), Mode: unixMode(e.Type())}
	d.lastName, d.lastFI = e.Name(), nil
	if fi, err := e.Info(); err == nil && fsdrivers.StatOf(fi) != nil {
		d.lastFI = fi
		de.Ino = treeIno(d.n.tree.part, inoOf(fi))
		de.Mode = unixMode(fi.Mode())
	}
	return de, 0
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if errno := d.load(); errno != 0 {
		return errno
	}
	if off > uint64(len(d.ents)+dots) {
		return syscall.EINVAL
	}
	d.idx = int(off)
	d.lastName, d.lastFI = "", nil
	return 0
}

func (d *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if name == d.lastName && d.lastFI != nil {
		if ch := d.n.GetChild(name); ch != nil {
			if cn, ok := ch.Operations().(*node); ok {
				fillAttr(&out.Attr, cn.fi)
				return ch, 0
			}
		}
		return d.n.child(ctx, name, d.lastFI, out), 0
	}
	return d.n.Lookup(ctx, name, out)
}

func (d *dirHandle) Releasedir(ctx context.Context, releaseFlags uint32) {}

// errNoReaderAt reports a driver whose files cannot be read at an offset;
// fsdrivers.File requires it, and reading a whole file to serve one
// request is not an option.
var errNoReaderAt = errors.New("fusefs: file does not implement io.ReaderAt")

// badNameError reports a directory entry whose name cannot be shown.
type badNameError struct{ name string }

func (e *badNameError) Error() string {
	return fmt.Sprintf("fusefs: entry %q hidden: not a valid file name", e.name)
}
