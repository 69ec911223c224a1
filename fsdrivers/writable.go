package fsdrivers

import (
	"errors"
	"io"
	"time"
)

// Writing is addressed by node (inode number), not by path, so that a
// rename never breaks an open file and FUSE, which speaks in nodes, maps
// onto it one to one. Path-based edits (dimg add, rm, mv, ...) resolve
// paths with Lookup first (package fsedit).
//
// Errors of the node operations wrap a syscall.Errno (ENOENT, EEXIST,
// ENOTDIR, EISDIR, ENOTEMPTY, ENOSPC, ENAMETOOLONG, EMLINK, EINVAL, EXDEV,
// EOPNOTSUPP, ENODATA, ERANGE, EROFS, EIO for damage) so errors.Is works
// with fs.ErrNotExist / fs.ErrExist and FUSE returns the right code; the
// message names the node and the name involved.

// ReadWriterAt is a partition that can be read and written in place: the
// copy-on-write overlay's section of one partition, a file, a device.
type ReadWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// WritableDriver is implemented by drivers that can write their
// filesystem. OpenWritable refuses, with an error wrapping ErrReadOnly
// that names the reason (an unsupported feature by name, a journal that
// cannot be replayed, damage found), a filesystem it cannot write
// correctly; reading it keeps working through Open.
//
// OpenWritable may write to dev before returning (journal replay, clearing
// an orphan list); everything it writes leaves a valid filesystem.
type WritableDriver interface {
	Driver
	OpenWritable(dev ReadWriterAt, size int64) (WritableFS, error)
}

// ErrReadOnly is wrapped when a filesystem is opened for writing but cannot
// be written (unsupported feature, needs a repair first, a type dimg does
// not write).
var ErrReadOnly = errors.New("fsdrivers: filesystem cannot be written")

// Attr is what stat(2) shows of a node.
type Attr struct {
	Ino    uint64
	Mode   uint32 // st_mode: S_IFMT type bits and permission bits (07777)
	Nlink  uint32
	Uid    uint32
	Gid    uint32
	Rdev   uint64 // device number of a block or character device
	Size   int64
	Blocks int64 // allocated bytes / 512
	Atime  time.Time
	Mtime  time.Time
	Ctime  time.Time
	Btime  time.Time // creation time, zero when the filesystem has none
}

// Unix file type bits of Attr.Mode (as in <sys/stat.h>).
const (
	ModeType   = 0o170000
	ModeSocket = 0o140000
	ModeLink   = 0o120000
	ModeFile   = 0o100000
	ModeBlock  = 0o060000
	ModeDir    = 0o040000
	ModeChar   = 0o020000
	ModeFIFO   = 0o010000
	ModePerm   = 0o7777 // permission, setuid, setgid and sticky bits
)

// DirEntry is one entry of a directory listing ("." and ".." excluded).
type DirEntry struct {
	Name string
	Ino  uint64
	Mode uint32 // type bits only (ModeDir, ModeFile, ...)
}

// SetAttr says which attributes Setattr changes: nil fields stay.
type SetAttr struct {
	Mode  *uint32 // permission bits only; the type never changes
	Uid   *uint32
	Gid   *uint32
	Size  *int64 // truncate up (a hole) or down
	Atime *time.Time
	Mtime *time.Time
	// Ctime is set to now by every change unless given here (restoring a
	// tree's times when copying it in).
	Ctime *time.Time
}

// Owner is who a new node belongs to.
type Owner struct {
	Uid, Gid uint32
}

// RenameFlags are rename2(2)'s flags.
type RenameFlags uint32

const (
	RenameNoReplace RenameFlags = 1 << 0 // RENAME_NOREPLACE
	RenameExchange  RenameFlags = 1 << 1 // RENAME_EXCHANGE
)

// FallocFlags are fallocate(2)'s mode flags that a WritableFS may support
// (others fail with EOPNOTSUPP).
type FallocFlags uint32

const (
	FallocKeepSize  FallocFlags = 0x01 // FALLOC_FL_KEEP_SIZE
	FallocPunchHole FallocFlags = 0x02 // FALLOC_FL_PUNCH_HOLE (with KeepSize)
	FallocZeroRange FallocFlags = 0x10 // FALLOC_FL_ZERO_RANGE
)

// XattrFlags are setxattr(2)'s flags.
type XattrFlags uint32

const (
	XattrCreate  XattrFlags = 1 // XATTR_CREATE: fail with EEXIST if present
	XattrReplace XattrFlags = 2 // XATTR_REPLACE: fail with ENODATA if absent
)

// Statfs is what statfs(2) shows, and what "no space left" messages use.
type Statfs struct {
	BlockSize   int64
	Blocks      int64 // total data blocks
	BlocksFree  int64 // free for root
	BlocksAvail int64 // free for others (reserved blocks excluded)
	Files       int64 // total inodes (0 when the filesystem has no limit)
	FilesFree   int64
	NameMax     int
}

// NodeFS is a file tree addressed by node numbers: the read half of
// WritableFS, coherent with its writes.
type NodeFS interface {
	Volume
	// Root is the root directory's node number.
	Root() uint64
	// Lookup finds name in directory dir.
	Lookup(dir uint64, name string) (Attr, error)
	Getattr(ino uint64) (Attr, error)
	// ReadDir lists dir, "." and ".." excluded, in the filesystem's order.
	ReadDir(dir uint64) ([]DirEntry, error)
	Readlink(ino uint64) (string, error)
	// ReadAt reads a regular file; holes read as zeros; io.EOF at the end.
	ReadAt(ino uint64, p []byte, off int64) (int, error)
	// ListXattr and GetXattr read extended attributes by full name
	// ("user.x", "security.selinux", "system.posix_acl_access" in the
	// kernel's xattr format). A filesystem without them lists none and
	// fails GetXattr with ENODATA.
	ListXattr(ino uint64) ([]string, error)
	GetXattr(ino uint64, name string) ([]byte, error)
	Statfs() (Statfs, error)
}

// WritableFS is a filesystem open for writing over a ReadWriterAt.
//
// Writes may be cached; Sync writes everything out, after which the device
// holds a filesystem its own checker (e2fsck -fn, fsck.fat -n) finds clean
// and the kernel mounts — the state an image commit captures. Close syncs.
// A WritableFS is safe for concurrent use by several goroutines (FUSE
// calls it from many).
type WritableFS interface {
	NodeFS
	// WriteAt writes a regular file, extending it (and leaving a hole)
	// when off is past its end.
	WriteAt(ino uint64, p []byte, off int64) (int, error)
	// Create makes a regular file, FIFO, socket, or block or character
	// device (mode's type bits say which; rdev for devices).
	Create(dir uint64, name string, mode uint32, rdev uint64, owner Owner) (Attr, error)
	Mkdir(dir uint64, name string, mode uint32, owner Owner) (Attr, error)
	Symlink(dir uint64, name, target string, owner Owner) (Attr, error)
	// Link adds a hard link to ino (not a directory) as dir/name.
	Link(ino, dir uint64, name string) (Attr, error)
	// Unlink removes a non-directory entry; the node is freed when its
	// last link is gone and no Hold is outstanding.
	Unlink(dir uint64, name string) error
	// Rmdir removes an empty directory.
	Rmdir(dir uint64, name string) error
	// Rename moves olddir/oldname to newdir/newname, replacing an existing
	// newname (a file by a file, an empty directory by a directory) unless
	// flags say otherwise. The node keeps its number.
	Rename(olddir uint64, oldname string, newdir uint64, newname string, flags RenameFlags) error
	Setattr(ino uint64, set SetAttr) (Attr, error)
	Fallocate(ino uint64, off, length int64, flags FallocFlags) error
	SetXattr(ino uint64, name string, value []byte, flags XattrFlags) error
	RemoveXattr(ino uint64, name string) error
	// Hold and Release count open handles (FUSE's lookup/forget): a node
	// unlinked while held stays readable and writable, and is freed at
	// its last Release (or kept on the orphan list across a Sync, as the
	// kernel does).
	Hold(ino uint64)
	Release(ino uint64)
	// Sync writes every cached change to the device (see above).
	Sync() error
	// Close syncs and releases the filesystem; the WritableFS is unusable
	// afterwards.
	Close() error
}
