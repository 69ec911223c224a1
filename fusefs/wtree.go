package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/fsdrivers/disk"
	"github.com/dimg-project/dimg/fsdrivers/fsedit"
)

// Writable file trees. In a read-write mount a partition whose filesystem
// dimg can write (Options.Trees) shows as pN/, served read-write over its
// fsdrivers.WritableFS:
//
//   - Nodes are the filesystem's inode numbers (mapped by treeIno), so a
//     rename never breaks an open file and hard links are one node. A
//     go-fuse Inode holds its filesystem node (WritableFS.Hold) from the
//     lookup that made it to the kernel's forget (OnForget: Release), so a
//     file unlinked while open stays readable and writable until closed.
//   - Every change goes through these nodes (the partition's pN.img is
//     read-only, disk.img too: one owner per byte), so the kernel's
//     caches stay right: it updates or invalidates the attributes and
//     entries each of its own requests touched, and the page cache of a
//     file only changes through its writes. The attribute and entry
//     timeouts are short anyway (writeTimeout), bounding what a missed
//     case could show.
//   - fsync (of a file or directory) runs WritableFS.Sync and then the
//     disk's Sync: what fsync returned for survives a crash of dimg, as a
//     consistent filesystem (the next mount --rw takes it up).
//
// NTFS and other filesystems without a writer stay as pN.img only in a
// read-write mount: write them with their own driver (ntfs-3g) on pN.img.

// writeTimeout is how long the kernel may cache the attributes and entries
// of a writable tree.
const writeTimeout = time.Second

// wtree is one writable filesystem served as pN/.
type wtree struct {
	mu    sync.Mutex
	holds map[uint64]int    // the Holds taken and not yet released, by node
	high  map[uint64]uint64 // node numbers ≥ 2^47 (FAT's new entries) → their mount numbers

	fs   fsdrivers.WritableFS
	part int // the partition's index (from 1), for inode numbers
	name string
	root *root
	log  *errLog
}

// wnode is a node of a writable tree: a filesystem inode.
type wnode struct {
	fs.Inode
	t   *wtree
	ino uint64
}

var (
	_ = (fs.NodeLookuper)((*wnode)(nil))
	_ = (fs.NodeGetattrer)((*wnode)(nil))
	_ = (fs.NodeSetattrer)((*wnode)(nil))
	_ = (fs.NodeReaddirer)((*wnode)(nil))
	_ = (fs.NodeCreater)((*wnode)(nil))
	_ = (fs.NodeMknoder)((*wnode)(nil))
	_ = (fs.NodeMkdirer)((*wnode)(nil))
	_ = (fs.NodeRmdirer)((*wnode)(nil))
	_ = (fs.NodeUnlinker)((*wnode)(nil))
	_ = (fs.NodeRenamer)((*wnode)(nil))
	_ = (fs.NodeSymlinker)((*wnode)(nil))
	_ = (fs.NodeLinker)((*wnode)(nil))
	_ = (fs.NodeReadlinker)((*wnode)(nil))
	_ = (fs.NodeOpener)((*wnode)(nil))
	_ = (fs.NodeReader)((*wnode)(nil))
	_ = (fs.NodeWriter)((*wnode)(nil))
	_ = (fs.NodeFsyncer)((*wnode)(nil))
	_ = (fs.NodeFlusher)((*wnode)(nil))
	_ = (fs.NodeAllocater)((*wnode)(nil))
	_ = (fs.NodeGetxattrer)((*wnode)(nil))
	_ = (fs.NodeSetxattrer)((*wnode)(nil))
	_ = (fs.NodeListxattrer)((*wnode)(nil))
	_ = (fs.NodeRemovexattrer)((*wnode)(nil))
	_ = (fs.NodeStatfser)((*wnode)(nil))
	_ = (fs.NodeOnForgetter)((*wnode)(nil))
)

func (t *wtree) errno(op string, ino uint64, err error) syscall.Errno {
	return t.log.errno(op, fmt.Sprintf("%s (inode %d)", t.name, ino), err)
}

// highBase is where mount inode numbers for filesystem node numbers too
// large for treeIno start: a node numbered 2^48 or more (the FAT writer
// numbers new entries from there) gets the next number from here, kept
// for the mount's life, so each node still has exactly one number and
// the kernel one inode for it.
const highBase = 1 << 47

// ino is the mount's inode number of filesystem node fsIno.
func (t *wtree) ino(fsIno uint64) uint64 {
	if fsIno < highBase {
		return treeIno(t.part, fsIno)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	n, ok := t.high[fsIno]
	if !ok {
		n = highBase + uint64(len(t.high)) + 1
		t.high[fsIno] = n
	}
	return treeIno(t.part, n)
}

// fill copies a filesystem node's attributes into a FUSE reply.
func (t *wtree) fill(out *fuse.Attr, a fsdrivers.Attr) {
	out.Ino = t.ino(a.Ino)
	out.Mode = a.Mode
	out.Nlink = a.Nlink
	out.Uid, out.Gid = a.Uid, a.Gid
	out.Rdev = uint32(a.Rdev)
	out.Size = uint64(max(a.Size, 0))
	out.Blocks = uint64(max(a.Blocks, 0))
	out.Blksize = 4096
	setTimes(out, a.Atime, a.Mtime, a.Ctime)
}

// child returns the go-fuse Inode of filesystem node a (found or made in
// dir), holding the filesystem node for as long as the Inode lives.
func (n *wnode) child(ctx context.Context, a fsdrivers.Attr, out *fuse.EntryOut) *fs.Inode {
	n.t.fill(&out.Attr, a)
	out.SetEntryTimeout(writeTimeout)
	out.SetAttrTimeout(writeTimeout)
	c := &wnode{t: n.t, ino: a.Ino}
	ch := n.NewInode(ctx, c, fs.StableAttr{Mode: a.Mode & syscall.S_IFMT, Ino: n.t.ino(a.Ino)})
	if ch.Operations() == c {
		// A new Inode: the kernel's reference to it is ours to hold
		// until it forgets it.
		n.t.hold(a.Ino)
	}
	return ch
}

func (n *wnode) OnForget() {
	if n.ino != n.t.fs.Root() {
		n.t.release(n.ino)
	}
}

func (t *wtree) hold(ino uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.holds[ino]++
	t.fs.Hold(ino)
}

func (t *wtree) release(ino uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.holds[ino] == 0 {
		return
	}
	if t.holds[ino]--; t.holds[ino] == 0 {
		delete(t.holds, ino)
	}
	t.fs.Release(ino)
}

// releaseAll drops every hold left when the mount ends: the kernel does
// not forget its inodes at unmount, and a file unlinked while open must
// be freed before the filesystem is written out, as the kernel frees its
// orphans at unmount.
func (t *wtree) releaseAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for ino, n := range t.holds {
		for range n {
			t.fs.Release(ino)
		}
	}
	t.holds = map[uint64]int{}
}

func (n *wnode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	a, err := n.t.fs.Lookup(n.ino, name)
	if err != nil {
		return nil, toErrno(err)
	}
	return n.child(ctx, a, out), 0
}

func (n *wnode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	a, err := n.t.fs.Getattr(n.ino)
	if err != nil {
		return n.t.errno("stat", n.ino, err)
	}
	n.t.fill(&out.Attr, a)
	out.SetTimeout(writeTimeout)
	return 0
}

func (n *wnode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	var set fsdrivers.SetAttr
	if m, ok := in.GetMode(); ok {
		m &= fsdrivers.ModePerm
		set.Mode = &m
	}
	if u, ok := in.GetUID(); ok {
		set.Uid = &u
	}
	if g, ok := in.GetGID(); ok {
		set.Gid = &g
	}
	if s, ok := in.GetSize(); ok {
		sz := int64(s)
		set.Size = &sz
	}
	if t, ok := in.GetATime(); ok {
		set.Atime = &t
	}
	if t, ok := in.GetMTime(); ok {
		set.Mtime = &t
	}
	if set.Mode != nil && (set.Uid != nil || set.Gid != nil) {
		// chmod and chown are separate calls: a mode sent with an owner
		// is the kernel clearing set-user-ID and set-group-ID on chown,
		// and it drops the sticky bit with them. Do what chown(2)
		// documents from the current mode instead.
		if cur, err := n.t.fs.Getattr(n.ino); err == nil {
			m := cur.Mode & fsdrivers.ModePerm &^ syscall.S_ISUID
			if m&(syscall.S_ISGID|0o010) == syscall.S_ISGID|0o010 {
				m &^= syscall.S_ISGID
			}
			set.Mode = &m
		}
	}
	a, err := n.t.fs.Setattr(n.ino, set)
	if err != nil {
		return n.t.errno("setattr", n.ino, err)
	}
	n.t.fill(&out.Attr, a)
	out.SetTimeout(writeTimeout)
	return 0
}

func (n *wnode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	ents, err := n.t.fs.ReadDir(n.ino)
	if err != nil {
		return nil, n.t.errno("readdir", n.ino, err)
	}
	list := make([]fuse.DirEntry, 0, len(ents))
	for _, e := range ents {
		if !validName(e.Name) {
			continue // unsafe to hand to the kernel; the reader logs those
		}
		list = append(list, fuse.DirEntry{Name: e.Name, Ino: n.t.ino(e.Ino), Mode: e.Mode & syscall.S_IFMT})
	}
	return fs.NewListDirStream(list), 0
}

// owner is who makes a node in n: the caller of the request, with the
// group of a set-group-ID directory (which a new directory inherits
// too), as the kernel does for its own filesystems.
func (n *wnode) owner(ctx context.Context, mode uint32) (fsdrivers.Owner, uint32) {
	var o fsdrivers.Owner
	if c, ok := fuse.FromContext(ctx); ok {
		o = fsdrivers.Owner{Uid: c.Uid, Gid: c.Gid}
	}
	if d, err := n.t.fs.Getattr(n.ino); err == nil {
		return fsedit.Inherit(d, o, mode, mode&syscall.S_IFMT == syscall.S_IFDIR)
	}
	return o, mode
}

func (n *wnode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	own, mode := n.owner(ctx, fsdrivers.ModeFile|mode&fsdrivers.ModePerm)
	a, err := n.t.fs.Create(n.ino, name, mode, 0, own)
	if err != nil {
		return nil, nil, 0, toErrno(err)
	}
	return n.child(ctx, a, out), nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *wnode) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if mode&syscall.S_IFMT == 0 {
		mode |= fsdrivers.ModeFile
	}
	own, mode := n.owner(ctx, mode)
	a, err := n.t.fs.Create(n.ino, name, mode, uint64(dev), own)
	if err != nil {
		return nil, toErrno(err)
	}
	return n.child(ctx, a, out), 0
}

func (n *wnode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	own, mode := n.owner(ctx, fsdrivers.ModeDir|mode&fsdrivers.ModePerm)
	a, err := n.t.fs.Mkdir(n.ino, name, mode&fsdrivers.ModePerm, own)
	if err != nil {
		return nil, toErrno(err)
	}
	return n.child(ctx, a, out), 0
}

func (n *wnode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	own, _ := n.owner(ctx, fsdrivers.ModeLink)
	a, err := n.t.fs.Symlink(n.ino, name, target, own)
	if err != nil {
		return nil, toErrno(err)
	}
	return n.child(ctx, a, out), 0
}

func (n *wnode) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	tn, ok := target.(*wnode)
	if !ok || tn.t != n.t {
		return nil, syscall.EXDEV
	}
	a, err := n.t.fs.Link(tn.ino, n.ino, name)
	if err != nil {
		return nil, toErrno(err)
	}
	return n.child(ctx, a, out), 0
}

func (n *wnode) Unlink(ctx context.Context, name string) syscall.Errno {
	return toErrno(n.t.fs.Unlink(n.ino, name))
}

func (n *wnode) Rmdir(ctx context.Context, name string) syscall.Errno {
	return toErrno(n.t.fs.Rmdir(n.ino, name))
}

func (n *wnode) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*wnode)
	if !ok || np.t != n.t {
		return syscall.EXDEV
	}
	// Over a directory that holds the source: ENOTEMPTY, as the kernel
	// answers before asking a filesystem when its dentries show it (they
	// may not: an entry looked up again is a new dentry). Compared by
	// node number up the parents go-fuse knows.
	if a, err := n.t.fs.Lookup(np.ino, newName); err == nil && a.Mode&syscall.S_IFMT == syscall.S_IFDIR && !n.t.same(n.ino, name, a.Ino) {
		want, c := n.t.ino(a.Ino), np.GetChild(newName)
		for p, depth := n.EmbeddedInode(), 0; p != nil && depth < 4096; depth++ {
			if p.StableAttr().Ino == want || p == c {
				return syscall.ENOTEMPTY
			}
			_, p = p.Parent()
		}
	}
	return toErrno(n.t.fs.Rename(n.ino, name, np.ino, newName, fsdrivers.RenameFlags(flags)))
}

func (n *wnode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	s, err := n.t.fs.Readlink(n.ino)
	if err != nil {
		return nil, n.t.errno("readlink", n.ino, err)
	}
	return []byte(s), 0
}

// Open keeps the page cache across opens: nothing but this node's own
// writes changes the file.
func (n *wnode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *wnode) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	c, err := n.t.fs.ReadAt(n.ino, dest, off)
	if err != nil && c == 0 && !isEOF(err) {
		return nil, n.t.errno("read", n.ino, err)
	}
	return fuse.ReadResultData(dest[:c]), 0
}

func (n *wnode) Write(ctx context.Context, f fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	c, err := n.t.fs.WriteAt(n.ino, data, off)
	if err != nil {
		return uint32(c), n.t.errno("write", n.ino, err)
	}
	return uint32(c), 0
}

// Fsync makes the whole filesystem, as it stands, durable: the
// filesystem's caches go to the overlay and the overlay to its scratch
// file.
func (n *wnode) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	if err := n.t.fs.Sync(); err != nil {
		return n.t.errno("fsync", n.ino, err)
	}
	if w := n.t.root.wdisk; w != nil {
		if err := w.Sync(); err != nil {
			return n.t.errno("fsync", n.ino, err)
		}
	}
	return 0
}

// Flush answers ENOSYS: writes reach the filesystem before Write returns,
// so close has nothing to push, and the kernel then stops sending FLUSH on
// every close of the mount (one round trip less per file an untar writes).
// The read-only trees of the same mount answer the same, so this is one
// behaviour per connection.
func (n *wnode) Flush(ctx context.Context, f fs.FileHandle) syscall.Errno { return syscall.ENOSYS }

func (n *wnode) Allocate(ctx context.Context, f fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	return toErrno(n.t.fs.Fallocate(n.ino, int64(off), int64(size), fsdrivers.FallocFlags(mode)))
}

func (n *wnode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	v, err := n.t.fs.GetXattr(n.ino, attr)
	if err != nil {
		return 0, toErrno(err)
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *wnode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return toErrno(n.t.fs.SetXattr(n.ino, attr, data, fsdrivers.XattrFlags(flags)))
}

func (n *wnode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return toErrno(n.t.fs.RemoveXattr(n.ino, attr))
}

func (n *wnode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	names, err := n.t.fs.ListXattr(n.ino)
	if err != nil {
		return 0, toErrno(err)
	}
	size := 0
	for _, s := range names {
		size += len(s) + 1
	}
	if len(dest) < size {
		return uint32(size), syscall.ERANGE
	}
	off := 0
	for _, s := range names {
		off += copy(dest[off:], s)
		dest[off] = 0
		off++
	}
	return uint32(size), 0
}

func (n *wnode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	st, err := n.t.fs.Statfs()
	if err != nil {
		return n.t.errno("statfs", n.ino, err)
	}
	out.Bsize = uint32(st.BlockSize)
	out.Frsize = uint32(st.BlockSize)
	out.Blocks = uint64(st.Blocks)
	out.Bfree = uint64(st.BlocksFree)
	out.Bavail = uint64(st.BlocksAvail)
	out.Files = uint64(st.Files)
	out.Ffree = uint64(st.FilesFree)
	out.NameLen = uint32(st.NameMax)
	return 0
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }

// addWritableTree adds pN/ for partition p (the part-th) over wfs.
func (r *root) addWritableTree(ctx context.Context, p disk.Part, part int, wfs fsdrivers.WritableFS) {
	dir := fmt.Sprintf("p%d", p.Number)
	t := &wtree{fs: wfs, part: part, name: dir, root: r, log: r.log, holds: map[uint64]int{}, high: map[uint64]uint64{}}
	r.trees = append(r.trees, t)
	a, err := wfs.Getattr(wfs.Root())
	if err != nil {
		r.log.errno("stat", dir, err)
		return
	}
	n := &wnode{t: t, ino: a.Ino}
	ch := r.NewPersistentInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: t.ino(a.Ino)})
	r.AddChild(dir, ch, false)
}

// releaseTrees drops the holds of every writable tree (see releaseAll).
func releaseTrees(n fs.InodeEmbedder) {
	if r, ok := n.(*root); ok {
		for _, t := range r.trees {
			t.releaseAll()
		}
	}
}

// same reports whether dir/name is node ino.
func (t *wtree) same(dir uint64, name string, ino uint64) bool {
	a, err := t.fs.Lookup(dir, name)
	return err == nil && a.Ino == ino
}
