package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/fsdrivers/disk"
)

// Options controls the served tree and the mount. The zero value is the
// default.
type Options struct {
	// ImagePath is the image file: shown as the mount's source
	// ("dimg:<path>") and checked not to lie under the mountpoint.
	ImagePath string
	// ImageTime is the time shown on disk.img, pN.img and the root; zero
	// means the time of mounting.
	ImageTime time.Time
	// Logger receives one line per I/O error served as EIO and go-fuse's
	// own warnings; nil means none.
	Logger *slog.Logger
	// AllowOther lets other users see the mount (needs root or
	// user_allow_other); the kernel then checks permissions
	// (default_permissions).
	AllowOther bool
	// Debug logs every FUSE request through Logger.
	Debug bool
	// CacheTimeout is how long the kernel may cache attributes and
	// entries; zero means one hour (the image never changes).
	CacheTimeout time.Duration
	// ReadWrite mounts read-write: disk.img and every pN.img take writes
	// into the disk, which must then be a WritableDisk; pN.img through a
	// view bounded to the partition. The pN/ trees are not shown: they are
	// read through the filesystem drivers' caches, which would go stale
	// under the kernel's writes.
	ReadWrite bool
	// SpacePath, in a read-write mount, is a file or directory on the
	// filesystem that receives the changes (the overlay's scratch file):
	// statfs reports its free space, at most the disk's size, as free.
	// Empty: statfs reports no free space.
	SpacePath string
	// Trees, in a read-write mount, are the writable filesystems of
	// partitions, by partition number: each is served as a writable pN/
	// (see wtree.go), and then its pN.img is read-only, and disk.img too
	// (one writer per byte: writes through a raw file under a filesystem
	// that dimg serves would corrupt it). Partitions not in Trees keep a
	// writable pN.img and no tree. The caller syncs and closes them after
	// the unmount, before it commits.
	Trees map[int]fsdrivers.WritableFS
	// SelfAccess: this process itself opens files under the mount (the
	// package's tests do). Mounting then first has the kernel learn that
	// the file system does not poll (go-fuse's poll hack, which opens a
	// file of the mount): without it, this process's first epoll of such
	// a file could deadlock it. A process that never opens its own files,
	// like dimg, leaves it false: a kill -9 while the hack's open is
	// being served leaves the killed process stuck in the kernel, waiting
	// for an answer only it could give, and the mount dead.
	SelfAccess bool
}

// WritableDisk is a disk that takes writes, such as an imagefmt.Overlay:
// what a read-write mount serves. Sync makes every write that returned
// before it durable; fsync on disk.img or pN.img calls it.
type WritableDisk interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// Ino of the fixed root entries; tree inode numbers have a partition index
// in their top 16 bits, so they never collide with these.
const (
	rootIno     = 1
	diskImgIno  = 2
	firstRawIno = 16 // pN.img of the i-th partition: firstRawIno + i
	partShift   = 48
)

// treeIno makes the mount-wide inode number of a file of the part-th
// partition (counted from 1). A number the scheme cannot hold becomes 0,
// which go-fuse replaces by a fresh number: the file is still served,
// but its hard links no longer share an inode number.
func treeIno(part int, fsIno uint64) uint64 {
	if fsIno == 0 || fsIno >= 1<<partShift || part <= 0 || part >= 1<<(64-partShift) {
		return 0
	}
	return uint64(part)<<partShift | fsIno
}

// root is the mount's top directory. Its children are fixed and made in
// OnAdd, so the kernel never needs a Lookup on it.
type root struct {
	fs.Inode
	disk  io.ReaderAt
	wdisk WritableDisk // nil unless the mount is read-write
	size  int64
	parts []disk.Part
	opt   Options
	log   *errLog
	mtime time.Time
	uid   uint32
	gid   uint32
	trees []*wtree // the writable trees (read-write mounts)
}

var (
	_ = (fs.NodeOnAdder)((*root)(nil))
	_ = (fs.NodeGetattrer)((*root)(nil))
	_ = (fs.NodeStatfser)((*root)(nil))
)

// ErrNotWritable: a read-write mount was asked of a disk that takes no
// writes.
var ErrNotWritable = errors.New("fusefs: the disk takes no writes (not a WritableDisk)")

// NewRoot builds the root node of the tree for the disk d (size bytes) and
// its partitions, as fsdrivers/disk opened them: each one shows as
// pNumber.img (its Reader) and, when its Volume is a fsdrivers.Filesystem,
// as pNumber/. Extended containers are left out. Mount uses it; tests can
// call its nodes without mounting (see fs.NewNodeFS). With opt.ReadWrite,
// d must be a WritableDisk (Mount refuses one that is not; NewRoot serves
// it read-only) and each pNumber.img reads and writes d at the
// partition's Start.
func NewRoot(d io.ReaderAt, size int64, parts []disk.Part, opt Options) fs.InodeEmbedder {
	t := opt.ImageTime
	if t.IsZero() {
		t = time.Now()
	}
	r := &root{
		disk: d, size: size, parts: parts, opt: opt,
		log:   newErrLog(opt.Logger),
		mtime: t,
		uid:   uint32(os.Getuid()),
		gid:   uint32(os.Getgid()),
	}
	if w, ok := d.(WritableDisk); ok && opt.ReadWrite {
		r.wdisk = w
	}
	return r
}

func (r *root) OnAdd(ctx context.Context) {
	add := func(name string, ra io.ReaderAt, w io.WriterAt, size int64, ino uint64) {
		n := &rawFile{r: ra, w: w, size: size, root: r, name: name}
		n.mtime.Store(r.mtime.UnixNano())
		ch := r.NewPersistentInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFREG, Ino: ino})
		r.AddChild(name, ch, false)
	}
	var dw io.WriterAt
	if r.wdisk != nil && len(r.opt.Trees) == 0 {
		dw = r.wdisk
	}
	add("disk.img", r.disk, dw, r.size, diskImgIno)
	i := 0
	for _, p := range r.parts {
		if p.Extended {
			continue // its space belongs to the logical partitions
		}
		i++
		// Writable: read through the writable view too, so reads see
		// the writes.
		ra, w := io.ReaderAt(p.Reader), io.WriterAt(nil)
		wfs := r.opt.Trees[p.Number]
		if r.wdisk == nil {
			wfs = nil
		}
		if s := r.partWriter(p); s != nil {
			ra = s
			if wfs == nil {
				w = s
			}
		}
		add(fmt.Sprintf("p%d.img", p.Number), ra, w, p.Size, firstRawIno+uint64(i-1))
		if wfs != nil {
			r.addWritableTree(ctx, p, i, wfs)
			continue
		}
		fsys, ok := p.Volume.(fsdrivers.Filesystem)
		if !ok || r.wdisk != nil {
			// A read-write mount shows no trees: the drivers cache
			// what they read, and the kernel's writes through
			// pN.img would leave those caches stale.
			continue
		}
		dir := fmt.Sprintf("p%d", p.Number)
		fi, err := fsys.Lstat(".")
		if err != nil {
			// A filesystem whose root cannot be read shows as
			// missing; its raw pN.img is still there.
			r.log.errno("stat", dir, err)
			continue
		}
		t := &tree{fsys: fsys, part: i, name: dir, size: p.Size, log: r.log}
		n := &node{tree: t, path: ".", fi: fi}
		ch := r.NewPersistentInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: treeIno(i, inoOf(fi))})
		r.AddChild(dir, ch, false)
	}
}

func (r *root) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o555
	out.Nlink = 2
	out.Uid, out.Gid = r.uid, r.gid
	out.SetTimes(&r.mtime, &r.mtime, &r.mtime)
	out.Blksize = 4096
	return 0
}

func (r *root) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	r.statfs(out)
	return 0
}

// statfs reports a filesystem of the disk's size. A read-only mount has
// all of it used; a read-write one reports as free what the changes can
// still take: the free space where they go, at most the disk's size.
func (r *root) statfs(out *fuse.StatfsOut) {
	statfs(out, r.size)
	if r.wdisk == nil || r.opt.SpacePath == "" {
		return
	}
	var st unix.Statfs_t
	if err := unix.Statfs(r.opt.SpacePath, &st); err != nil {
		return
	}
	free := min(st.Bavail*uint64(st.Bsize)/4096, out.Blocks)
	out.Bfree, out.Bavail = free, free
}

// statfs reports a filesystem of size bytes, all of them used.
func statfs(out *fuse.StatfsOut, size int64) {
	out.Bsize = 4096
	out.Frsize = 4096
	out.Blocks = uint64(size+4095) / 4096
	out.NameLen = 255
}

// rawFile is disk.img or pN.img: bytes of the disk, read-only unless w is
// set (see write.go).
type rawFile struct {
	fs.Inode
	r     io.ReaderAt
	w     io.WriterAt // nil: read-only
	size  int64
	root  *root
	name  string
	mtime atomic.Int64 // Unix nanoseconds: the image's time, then the last write's
}

var (
	_ = (fs.NodeOpener)((*rawFile)(nil))
	_ = (fs.NodeReader)((*rawFile)(nil))
	_ = (fs.NodeFlusher)((*rawFile)(nil))
	_ = (fs.NodeGetattrer)((*rawFile)(nil))
	_ = (fs.NodeStatfser)((*rawFile)(nil))
)

func (n *rawFile) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	r := n.root
	out.Mode = syscall.S_IFREG | 0o444
	if n.w != nil {
		out.Mode |= 0o200
	}
	out.Nlink = 1
	out.Size = uint64(n.size)
	out.Blksize = 4096
	out.Blocks = (out.Size + 511) / 512
	out.Uid, out.Gid = r.uid, r.gid
	mt := time.Unix(0, n.mtime.Load())
	out.SetTimes(&r.mtime, &mt, &mt)
	return 0
}

func (n *rawFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if n.w != nil {
		return n.openWritable(flags)
	}
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	if n.root.wdisk != nil {
		// Read-only here, but written under a writable tree: no page
		// cache to go stale. It shows what the tree last synced.
		return nil, fuse.FOPEN_DIRECT_IO, 0
	}
	// The bytes never change: let the kernel keep its page cache across
	// opens.
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

// Flush answers ENOSYS, as node.Flush does.
func (n *rawFile) Flush(ctx context.Context, f fs.FileHandle) syscall.Errno { return syscall.ENOSYS }

func (n *rawFile) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	got, errno := readAt(n.r, n.size, dest, off, n.root.log, n.name)
	if errno != 0 {
		return nil, errno
	}
	return fuse.ReadResultData(dest[:got]), 0
}

func (n *rawFile) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	n.root.statfs(out)
	return 0
}

// readAt serves one read request of a file of size bytes into dest.
func readAt(r io.ReaderAt, size int64, dest []byte, off int64, log *errLog, name string) (int, syscall.Errno) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	if off >= size {
		return 0, 0
	}
	if rest := size - off; int64(len(dest)) > rest {
		dest = dest[:rest]
	}
	got, err := r.ReadAt(dest, off)
	if got == len(dest) {
		return got, 0 // io.EOF at the very end is fine
	}
	if err == nil || err == io.EOF {
		err = fmt.Errorf("short read: %d of %d bytes at offset %d: %w", got, len(dest), off, io.ErrUnexpectedEOF)
	}
	// Even with some bytes in hand, a failed read is an error: serving
	// a short read would make the reader think the file ends here.
	return 0, log.errno("read", name, err)
}
