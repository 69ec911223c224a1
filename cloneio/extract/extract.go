package extract

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/internal/progress"
)

// Sentinel errors; entry errors wrap one of them, fsdrivers.ErrUnsafeName
// (a name from the image is not a single safe component) or the
// underlying cause.
var (
	// ErrExists: the destination exists and Options.Force is not set, or it
	// is a directory that a non-directory would replace.
	ErrExists = errors.New("extract: destination exists")
	// ErrLoop: a directory contains one of its own ancestors (corrupt
	// filesystem), or the tree is deeper than MaxDepth.
	ErrLoop = errors.New("extract: directory loop or tree too deep")
	// ErrProtected: with Force, an existing file at the destination would
	// be replaced, but it is one of Options.Protect (the image being read).
	ErrProtected = errors.New("extract: destination is protected")
)

// MaxDepth bounds directory nesting. A real tree cannot be deeper than
// PATH_MAX/2 (4096/2, every level costs a name and a slash); anything deeper
// comes from a corrupt or hostile image and would exhaust descriptors.
const MaxDepth = 2048

// maxReported bounds how many entry errors Extract keeps; the rest are
// counted only, so a badly damaged image cannot fill memory with errors.
const maxReported = 50

// copyBufSize is the unit of reads from the source and writes to the host:
// large enough to amortise a chunk lookup in the image, small enough to keep
// one per extraction.
const copyBufSize = 1 << 20

// sparseBlock is the granularity at which runs of zeros are skipped (left as
// holes) when the source file is sparse.
const sparseBlock = 4096

// Options controls Extract. The zero value is the default.
type Options struct {
	// Force replaces existing non-directories at the destination. Existing
	// directories are always merged into; a directory is never replaced by
	// a file.
	Force bool
	// NoOwner skips chown even when running as root.
	NoOwner bool
	// NoXattrs skips extended attributes.
	NoXattrs bool
	// Progress is told of an "extracting" phase in content bytes (with a
	// total when the source is one regular file) and, as a note, of each
	// entry's path; nil means none.
	Progress progress.Reporter
	// Logger receives warnings about things skipped on purpose (device
	// nodes without root, xattrs the host refuses); nil means none.
	Logger *slog.Logger
	// Protect names host files that are never replaced, even with Force:
	// the image the tree is read from.
	Protect []string
}

// Result counts what Extract created.
type Result struct {
	Dirs, Files, Symlinks, HardLinks, Special int64
	Bytes                                     int64 // content bytes copied
	Skipped                                   int64 // entries not created (errors, or not creatable here)
	XattrsSkipped                             int64 // attributes the host refused
}

// EntryError is the error for one entry of the source tree.
type EntryError struct {
	Path string // source path
	Err  error
}

func (e *EntryError) Error() string { return fmt.Sprintf("%s: %v", e.Path, e.Err) }
func (e *EntryError) Unwrap() error { return e.Err }

// joinPath joins a checked name to an io/fs directory path.
func joinPath(dir, name string) string {
	if dir == "." {
		return name
	}
	return dir + "/" + name
}

// Extract copies src (a file, symlink, device or a whole tree) from fsys to
// dest on the host. When dest is an existing directory, src is created
// inside it under its own base name; otherwise src is created as dest. The
// root (src "." or "/") is extracted into dest itself, creating it if
// needed. Per-entry failures do not stop the extraction; they are returned
// joined (see EntryError) together with what was done.
func Extract(ctx context.Context, fsys fsdrivers.Filesystem, src, dest string, opt Options) (Result, error) {
	x := &extractor{
		ctx:   ctx,
		fsys:  fsys,
		opt:   opt,
		root:  os.Geteuid() == 0,
		links: make(map[uint64]linkRef),
		buf:   make([]byte, copyBufSize),
		prog:  progress.Or(opt.Progress),
	}
	for _, p := range opt.Protect {
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil {
			x.protect = append(x.protect, [2]uint64{uint64(st.Dev), st.Ino})
		}
	}
	src, err := fsdrivers.CleanPath(src)
	if err != nil {
		return x.res, err
	}
	fi, err := fsys.Lstat(src)
	if err != nil {
		return x.res, fmt.Errorf("extract: %s: %w", src, err)
	}
	total := int64(0) // a tree's size is not known before it is walked
	if fi.Mode().IsRegular() {
		total = fi.Size()
	}
	x.prog.Start("extracting", total)
	if dest == "" {
		return x.res, errors.New("extract: empty destination")
	}

	// Work out the host directory we write into (trusted: the user named
	// it, so it may itself be a symlink) and the one name we create there.
	var parent, base string
	if src == "." {
		if !fi.IsDir() {
			return x.res, fmt.Errorf("extract: root of the filesystem is not a directory")
		}
		_, serr := os.Lstat(dest)
		created := errors.Is(serr, fs.ErrNotExist)
		if err := os.MkdirAll(dest, 0o700); err != nil {
			return x.res, fmt.Errorf("extract: %w", err)
		}
		// Fill dest itself with the root's children. The root's own
		// mode, owner and times go to dest only when we created it: an
		// existing directory the user named keeps its own.
		return x.topDir(dest, fi, created)
	}
	if st, err := os.Stat(dest); err == nil && st.IsDir() {
		parent, base = dest, path.Base(src)
	} else {
		parent, base = filepath.Dir(dest), filepath.Base(dest)
	}
	if err := fsdrivers.CheckName(base); err != nil {
		return x.res, err
	}
	pfd, err := unix.Open(parent, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return x.res, fmt.Errorf("extract: open %s: %w", parent, err)
	}
	defer unix.Close(pfd)
	x.top = pfd
	x.entry(pfd, nil, base, src, fi, 0, nil)
	return x.res, x.err()
}

// topDir extracts the root directory's children into dest, and the root's
// metadata onto dest when created says dest is ours.
func (x *extractor) topDir(dest string, fi fs.FileInfo, created bool) (Result, error) {
	fd, err := unix.Open(dest, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return x.res, fmt.Errorf("extract: open %s: %w", dest, err)
	}
	defer unix.Close(fd)
	x.top = fd
	x.res.Dirs++
	x.children(fd, nil, ".", fi, 0, nil)
	if created && x.ctx.Err() == nil {
		pfd, err := unix.Open(filepath.Dir(dest), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err == nil {
			if err := x.meta(pfd, filepath.Base(dest), fd, ".", fi); err != nil {
				x.fail(".", err)
			}
			unix.Close(pfd)
		}
	}
	return x.res, x.err()
}

// linkRef remembers where the first name of a hard-linked inode was
// created: its directory as components below x.top, and its name.
type linkRef struct {
	dir  []string
	name string
}

type extractor struct {
	ctx   context.Context
	fsys  fsdrivers.Filesystem
	opt   Options
	root  bool // running as root: chown, mknod of devices
	top   int  // descriptor of the directory everything is created below
	links map[uint64]linkRef
	buf   []byte
	prog  progress.Reporter
	res   Result

	errs   []error
	nErrs  int
	warned map[string]bool

	protect [][2]uint64 // device and inode of Options.Protect
	// fatal is an error of the host filesystem (full, read-only) that
	// every further entry would hit too: extraction stops at it.
	fatal error
}

// stopped reports whether the extraction must not go on.
func (x *extractor) stopped() bool { return x.ctx.Err() != nil || x.fatal != nil }

// hostFatal reports whether err means the destination cannot take any more.
func hostFatal(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) || errors.Is(err, unix.EROFS)
}

// fail records an entry error.
func (x *extractor) fail(src string, err error) {
	e := &EntryError{Path: src, Err: err}
	if x.fatal == nil && hostFatal(err) {
		x.fatal = e
		x.res.Skipped++
		x.nErrs++
		return
	}
	x.res.Skipped++
	x.nErrs++
	if len(x.errs) < maxReported {
		x.errs = append(x.errs, e)
	}
}

func (x *extractor) err() error {
	if err := x.ctx.Err(); err != nil {
		return fmt.Errorf("extract: %w", err)
	}
	if x.nErrs == 0 {
		return nil
	}
	errs := x.errs
	more := x.nErrs - len(errs)
	if x.fatal != nil {
		// The reason extraction stopped comes first.
		errs = append([]error{fmt.Errorf("extract: stopped, the destination cannot take more: %w", x.fatal)}, errs...)
		more--
	}
	if more > 0 {
		errs = append(errs[:len(errs):len(errs)], fmt.Errorf("extract: and %d more errors", more))
	}
	return errors.Join(errs...)
}

// warn logs a condition once per key.
func (x *extractor) warn(key, msg string, args ...any) {
	if x.opt.Logger == nil || x.warned[key] {
		return
	}
	if x.warned == nil {
		x.warned = make(map[string]bool)
	}
	x.warned[key] = true
	x.opt.Logger.Warn(msg, args...)
}

// entry creates name in the directory dirfd (whose path below x.top is
// dir) from the source entry src described by fi.
func (x *extractor) entry(dirfd int, dir []string, name, src string, fi fs.FileInfo, depth int, up *ancestors) {
	if x.stopped() {
		return
	}
	st := fsdrivers.StatOf(fi)
	mode := fi.Mode()
	progress.Note(x.prog, src)

	// A second name of a hard-linked inode becomes a hard link.
	if !mode.IsDir() && st != nil && st.Nlink > 1 && st.Ino != 0 {
		if ref, ok := x.links[st.Ino]; ok {
			if err := x.link(ref, dirfd, name); err != nil {
				x.fail(src, err)
				return
			}
			x.res.HardLinks++
			return
		}
	}

	var err error
	switch {
	case mode.IsDir():
		err = x.dir(dirfd, dir, name, src, fi, depth, up)
	case mode.IsRegular():
		err = x.file(dirfd, name, src, fi)
	case mode&fs.ModeSymlink != 0:
		err = x.symlink(dirfd, name, src, fi)
	default:
		err = x.special(dirfd, name, src, fi)
	}
	if err != nil {
		if !errors.Is(err, errSkipped) {
			x.fail(src, err)
		}
		return
	}
	if !mode.IsDir() && st != nil && st.Nlink > 1 && st.Ino != 0 {
		x.links[st.Ino] = linkRef{dir: dir, name: name}
	}
}

// errSkipped marks an entry skipped on purpose (already counted and logged).
var errSkipped = errors.New("skipped")

// create runs mk to create name in dirfd. When it fails with EEXIST and
// Force is set, an existing non-directory is removed and mk retried once.
func (x *extractor) create(dirfd int, name string, mk func() error) error {
	err := mk()
	if !errors.Is(err, unix.EEXIST) {
		return err
	}
	var st unix.Stat_t
	if serr := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); serr != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("%w: a directory is in the way", ErrExists)
	}
	if !x.opt.Force {
		return fmt.Errorf("%w (use --force to overwrite)", ErrExists)
	}
	if err := x.replaceable(&st); err != nil {
		return err
	}
	if err := unix.Unlinkat(dirfd, name, 0); err != nil {
		return fmt.Errorf("remove existing: %w", err)
	}
	return mk()
}

// replaceable refuses to replace a protected file (Options.Protect).
func (x *extractor) replaceable(st *unix.Stat_t) error {
	for _, p := range x.protect {
		if p == [2]uint64{uint64(st.Dev), st.Ino} {
			return fmt.Errorf("%w: it is the image being read, and is not replaced even with --force", ErrProtected)
		}
	}
	return nil
}

func (x *extractor) dir(dirfd int, dir []string, name, src string, fi fs.FileInfo, depth int, up *ancestors) error {
	if depth >= MaxDepth {
		return fmt.Errorf("%w: deeper than %d levels", ErrLoop, MaxDepth)
	}
	if st := fsdrivers.StatOf(fi); st != nil && st.Ino != 0 && up.has(st.Ino) {
		return fmt.Errorf("%w: directory contains its own ancestor (inode %d)", ErrLoop, st.Ino)
	}
	err := unix.Mkdirat(dirfd, name, 0o700)
	merged := false
	if errors.Is(err, unix.EEXIST) {
		var st unix.Stat_t
		if serr := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); serr != nil {
			return fmt.Errorf("mkdir: %w", err)
		}
		switch {
		case st.Mode&unix.S_IFMT == unix.S_IFDIR:
			merged = true // merge into the existing directory
		case !x.opt.Force:
			return fmt.Errorf("%w (use --force to overwrite)", ErrExists)
		default:
			if err := x.replaceable(&st); err != nil {
				return err
			}
			if err := unix.Unlinkat(dirfd, name, 0); err != nil {
				return fmt.Errorf("remove existing: %w", err)
			}
			err = unix.Mkdirat(dirfd, name, 0o700)
		}
		if merged {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("mkdir: %w", err)
	}
	// O_NOFOLLOW: name is what we just made or an existing real directory;
	// if anything swapped in a symlink meanwhile, this fails instead of
	// following it.
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open directory: %w", err)
	}
	defer unix.Close(fd)
	if merged {
		// We need to write into it even if its mode says otherwise; the
		// image's mode is applied at the end.
		_ = unix.Fchmod(fd, 0o700)
	}
	x.res.Dirs++
	sub := append(dir[:len(dir):len(dir)], name)
	x.children(fd, sub, src, fi, depth+1, up)
	return x.meta(dirfd, name, fd, src, fi)
}

// ancestors is the chain of directory inode numbers above the directory
// being read, to detect a directory that contains itself.
type ancestors struct {
	ino  uint64
	next *ancestors
}

func (a *ancestors) has(ino uint64) bool {
	for ; a != nil; a = a.next {
		if a.ino == ino {
			return true
		}
	}
	return false
}

// children extracts the entries of the source directory src into fd.
func (x *extractor) children(fd int, dir []string, src string, fi fs.FileInfo, depth int, up *ancestors) {
	if st := fsdrivers.StatOf(fi); st != nil && st.Ino != 0 {
		up = &ancestors{ino: st.Ino, next: up}
	}
	ents, err := x.fsys.ReadDir(src)
	if err != nil {
		// Entries read before the error are still extracted below.
		x.fail(src, fmt.Errorf("read directory: %w", err))
	}
	seen := make(map[string]bool, len(ents))
	for _, e := range ents {
		if x.stopped() {
			return
		}
		name := e.Name()
		if err := fsdrivers.CheckName(name); err != nil {
			x.fail(joinPath(src, strings.ToValidUTF8(name, "?")), err)
			continue
		}
		if seen[name] {
			x.fail(joinPath(src, name), fmt.Errorf("%w: name appears twice in its directory", fsdrivers.ErrUnsafeName))
			continue
		}
		seen[name] = true
		child := joinPath(src, name)
		cfi, err := x.fsys.Lstat(child)
		if err != nil {
			x.fail(child, err)
			continue
		}
		x.entry(fd, dir, name, child, cfi, depth, up)
	}
}

func (x *extractor) file(dirfd int, name, src string, fi fs.FileInfo) error {
	f, err := x.fsys.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	var fd int
	err = x.create(dirfd, name, func() error {
		var err error
		fd, err = unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		return err
	})
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	out := os.NewFile(uintptr(fd), name)
	defer out.Close()

	st := fsdrivers.StatOf(fi)
	sparse := st != nil && st.Blocks*512 < fi.Size()
	if err := x.copy(out, f, fi.Size(), sparse); err != nil {
		// Leave no file whose end silently differs from the image's.
		_ = unix.Unlinkat(dirfd, name, 0)
		return err
	}
	x.res.Files++
	return x.meta(dirfd, name, fd, src, fi)
}

// copy writes size bytes of f to out with positioned reads and writes.
// When sparse, aligned blocks of zeros are skipped so they stay holes.
func (x *extractor) copy(out *os.File, f fs.File, size int64, sparse bool) error {
	ra, _ := f.(io.ReaderAt)
	var off int64
	for off < size {
		if err := x.ctx.Err(); err != nil {
			return err
		}
		n := int64(len(x.buf))
		if size-off < n {
			n = size - off
		}
		b := x.buf[:n]
		var got int
		var err error
		if ra != nil {
			got, err = ra.ReadAt(b, off)
		} else {
			got, err = io.ReadFull(f, b)
		}
		if got < len(b) {
			if err == nil || err == io.EOF || err == io.ErrUnexpectedEOF {
				err = fmt.Errorf("read at %d: file ends after %d of %d bytes", off, off+int64(got), size)
			}
			return fmt.Errorf("read at %d: %w", off+int64(got), err)
		}
		if err := x.write(out, b, off, sparse); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		x.res.Bytes += n
		x.prog.Add(n)
		off += n
	}
	if sparse {
		// A trailing hole is not written; the size comes from truncate.
		if err := out.Truncate(size); err != nil {
			return fmt.Errorf("truncate: %w", err)
		}
	}
	return nil
}

func (x *extractor) write(out *os.File, b []byte, off int64, sparse bool) error {
	if !sparse {
		_, err := out.WriteAt(b, off)
		return err
	}
	for len(b) > 0 {
		n := min(sparseBlock, len(b))
		// Extend the current run while blocks are of the same kind.
		zero := allZero(b[:n])
		for n < len(b) {
			m := min(sparseBlock, len(b)-n)
			if allZero(b[n:n+m]) != zero {
				break
			}
			n += m
		}
		if !zero {
			if _, err := out.WriteAt(b[:n], off); err != nil {
				return err
			}
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

var zeroBlock [sparseBlock]byte

// allZero reports whether b (at most sparseBlock bytes) is all zeros;
// bytes.Equal runs at memory speed.
func allZero(b []byte) bool { return bytes.Equal(b, zeroBlock[:len(b)]) }

func (x *extractor) symlink(dirfd int, name, src string, fi fs.FileInfo) error {
	target, err := fs.ReadLink(x.fsys, src)
	if err != nil {
		return err
	}
	if target == "" || strings.IndexByte(target, 0) >= 0 || len(target) >= 4096 {
		return fmt.Errorf("%w: symlink target %q", fsdrivers.ErrUnsafeName, target)
	}
	// The link is created as it is in the image, absolute or relative:
	// it is never followed here, so it cannot make us write outside dest.
	if err := x.create(dirfd, name, func() error { return unix.Symlinkat(target, dirfd, name) }); err != nil {
		return fmt.Errorf("symlink: %w", err)
	}
	x.res.Symlinks++
	return x.meta(dirfd, name, -1, src, fi)
}

func (x *extractor) special(dirfd int, name, src string, fi fs.FileInfo) error {
	mode := fi.Mode()
	st := fsdrivers.StatOf(fi)
	var rdev uint64
	if st != nil {
		rdev = st.Rdev
	}
	var mk func() error
	switch {
	case mode&fs.ModeDevice != 0:
		if !x.root {
			x.res.Skipped++
			x.warn("device", "extract: device nodes are skipped when not running as root", "first", src)
			return errSkipped
		}
		typ := uint32(unix.S_IFBLK)
		if mode&fs.ModeCharDevice != 0 {
			typ = unix.S_IFCHR
		}
		mk = func() error { return unix.Mknodat(dirfd, name, typ|0o600, int(rdev)) }
	case mode&fs.ModeNamedPipe != 0:
		mk = func() error { return unix.Mkfifoat(dirfd, name, 0o600) }
	case mode&fs.ModeSocket != 0:
		mk = func() error { return unix.Mknodat(dirfd, name, unix.S_IFSOCK|0o600, 0) }
	default:
		return fmt.Errorf("unsupported file type %v", mode.Type())
	}
	if err := x.create(dirfd, name, mk); err != nil {
		return fmt.Errorf("mknod: %w", err)
	}
	x.res.Special++
	return x.meta(dirfd, name, -1, src, fi)
}

// link makes name in dirfd a hard link to the first name of the same inode.
func (x *extractor) link(ref linkRef, dirfd int, name string) error {
	pfd, err := x.openBelowTop(ref.dir)
	if err != nil {
		return fmt.Errorf("hard link: %w", err)
	}
	if pfd != x.top {
		defer unix.Close(pfd)
	}
	// Flags 0: linkat does not follow ref.name if it is a symlink.
	if err := x.create(dirfd, name, func() error { return unix.Linkat(pfd, ref.name, dirfd, name, 0) }); err != nil {
		return fmt.Errorf("hard link: %w", err)
	}
	return nil
}

// openBelowTop opens the directory dir (components below x.top) one
// component at a time, never following a symlink.
func (x *extractor) openBelowTop(dir []string) (int, error) {
	fd := x.top
	for _, c := range dir {
		nfd, err := unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if fd != x.top {
			unix.Close(fd)
		}
		if err != nil {
			return -1, err
		}
		fd = nfd
	}
	return fd, nil
}

// meta applies xattrs, owner, mode and times to name in dirfd. fd is an
// open descriptor of it (files and directories) or -1.
func (x *extractor) meta(dirfd int, name string, fd int, src string, fi fs.FileInfo) error {
	st := fsdrivers.StatOf(fi)
	if !x.opt.NoXattrs {
		x.xattrs(dirfd, name, fd, src)
	}
	if x.root && !x.opt.NoOwner && st != nil {
		// Before chmod: chown clears setuid and setgid.
		if err := unix.Fchownat(dirfd, name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	perm := unixPerm(fi.Mode())
	switch {
	case fd >= 0:
		if err := unix.Fchmod(fd, perm); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	case fi.Mode()&fs.ModeSymlink == 0:
		// Devices and fifos we just created with mknod: not a symlink,
		// so following is not a concern. Symlinks have no mode on Linux.
		if err := unix.Fchmodat(dirfd, name, perm, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	mtime := fi.ModTime()
	atime := mtime
	if st != nil {
		if !st.Mtime.IsZero() {
			mtime = st.Mtime
		}
		if !st.Atime.IsZero() {
			atime = st.Atime
		}
	}
	ts := []unix.Timespec{timespec(atime), timespec(mtime)}
	if err := unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

// timespec converts t for utimensat; a zero t leaves the time as it is.
// Not UnixNano: it overflows outside 1678-2262, and ext4 times reach 2446.
func timespec(t time.Time) unix.Timespec {
	if t.IsZero() {
		return unix.Timespec{Nsec: unix.UTIME_OMIT}
	}
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

// xattrs copies extended attributes. Failures are not entry errors: the host
// filesystem may not support them, or only root may set a namespace.
func (x *extractor) xattrs(dirfd int, name string, fd int, src string) {
	attrs, err := fsdrivers.Xattrs(x.fsys, src)
	if err != nil {
		x.warn("xattr-read:"+src, "extract: cannot read extended attributes", "path", src, "err", err)
		return
	}
	for k, v := range attrs {
		if k == "" || len(k) > 255 || strings.IndexByte(k, 0) >= 0 || len(v) > 64<<10 {
			x.res.XattrsSkipped++
			continue
		}
		var err error
		if fd >= 0 {
			err = unix.Fsetxattr(fd, k, v, 0)
		} else {
			// No descriptor (symlinks, devices, fifos: opening a fifo
			// would block). /proc/self/fd/N/name names the entry in our
			// directory without following it, like an *at call.
			err = unix.Lsetxattr(fmt.Sprintf("/proc/self/fd/%d/%s", dirfd, name), k, v, 0)
		}
		if err != nil {
			x.res.XattrsSkipped++
			ns, _, _ := strings.Cut(k, ".")
			x.warn("xattr:"+ns, "extract: extended attributes not set", "namespace", ns, "first", src, "err", err)
		}
	}
}

// unixPerm converts the permission and special bits of an io/fs mode.
func unixPerm(m fs.FileMode) uint32 {
	p := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		p |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		p |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		p |= unix.S_ISVTX
	}
	return p
}
