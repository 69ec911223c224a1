package fsdrivers

import (
	"io"
	"io/fs"
	"time"
)

// The capabilities below are small interfaces a Volume implements when its
// filesystem has the feature. Callers find them by type assertion; a driver
// never stubs one out. What each driver implements:
//
//	            UsedRanger HeaderOnly Warner Filesystem fs.ReadLinkFS XattrFS
//	ext2/3/4    yes        -          yes    yes        yes           yes
//	fat12/16/32 yes        -          -      yes        -             -
//	ntfs        yes        -          -      yes        yes           yes
//	swap        -          yes        -      -          -             -

// UsedRanger is implemented by volumes that can tell which bytes hold data
// or metadata. Everything outside the returned ranges may be skipped on
// capture and read back as zeros. Ranges are sorted, non-overlapping, and
// always include the filesystem's own metadata (superblocks, boot sectors,
// tables, journals).
type UsedRanger interface {
	UsedRanges() ([]Range, error)
}

// HeaderOnly is implemented by volumes whose contents are scratch space,
// worthless once the system that wrote them has stopped (swap: pages of a
// memory that no longer exists). Only the header ranges are needed for the
// volume to stay valid; capture copies those and records the partition's
// copy mode as "header" rather than "used".
type HeaderOnly interface {
	HeaderRanges() ([]Range, error)
}

// Warner is implemented by volumes that work around damage instead of
// failing (ext4 counts a group whose bitmap is unreadable as fully used).
// Warnings lists what the last UsedRanges worked around, for the user and
// the image's metadata.
type Warner interface {
	Warnings() []string
}

// Filesystem is the core of a read-only file tree, in the spirit of io/fs:
// what every volume with files implements. Names are io/fs paths:
// slash-separated, unrooted, "." is the root.
//
// Open and Stat follow symlinks (absolute targets resolve against the root
// of this filesystem, never the host); Lstat does not. Files returned by
// Open implement File; directories implement fs.ReadDirFile.
// FileInfo.Sys() returns *Stat.
//
// Features not every filesystem has are optional interfaces on the same
// value: fs.ReadLinkFS for symbolic links (read them with fs.ReadLink,
// which fails with fs.ErrInvalid where there are none, as readlink(2) does
// on a file that is not a link) and XattrFS for extended attributes.
type Filesystem interface {
	Volume
	fs.FS
	fs.StatFS
	fs.ReadDirFS
	// Lstat is Stat of a final symlink itself rather than its target.
	Lstat(name string) (fs.FileInfo, error)
}

// XattrFS is implemented by filesystems with extended attributes (on NTFS:
// named data streams, shown as ntfs-3g shows them). A Filesystem without it
// has none.
type XattrFS interface {
	Filesystem
	// Xattrs lists the extended attributes of name (not following a final
	// symlink): full names such as "user.comment", "security.selinux".
	Xattrs(name string) (map[string][]byte, error)
}

// Xattrs returns the extended attributes of name in fsys: none when fsys
// has no XattrFS capability.
func Xattrs(fsys Filesystem, name string) (map[string][]byte, error) {
	if x, ok := fsys.(XattrFS); ok {
		return x.Xattrs(name)
	}
	return nil, nil
}

// File is an open regular file. ReadAt must not read the whole file into
// memory; holes read as zeros.
type File interface {
	fs.File
	io.ReaderAt
}

// Stat is FileInfo.Sys() for every driver.
type Stat struct {
	Ino          uint64
	Nlink        uint32
	Uid, Gid     uint32
	Rdev         uint64 // device number for block/char devices
	Atime, Ctime time.Time
	Mtime        time.Time
	Btime        time.Time // creation time, zero if unknown
	Blocks       int64     // allocated bytes / 512, for sparse files
}

// StatOf returns the *Stat of fi, nil when fi comes from elsewhere.
func StatOf(fi fs.FileInfo) *Stat {
	if st, ok := fi.Sys().(*Stat); ok {
		return st
	}
	return nil
}
