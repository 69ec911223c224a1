package fsedit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/internal/progress"
)

// CopyOptions configure CopyIn and Put; the zero value keeps what the
// local files have and refuses to replace anything.
type CopyOptions struct {
	// Force replaces an existing non-directory in the way (and an existing
	// non-directory where a directory goes). Directories are merged
	// either way, as cp -a does.
	Force bool
	// Owner, if set, owns every node made instead of the local owner.
	Owner *fsdrivers.Owner
	// Mode, if set, is the permission bits of every regular file made;
	// directories get it with search (x) added where read is allowed.
	Mode *uint32
	// Progress counts the bytes of file data copied (phase "adding").
	Progress progress.Reporter
}

// Result says what CopyIn made.
type Result struct {
	Files, Dirs, Symlinks, HardLinks, Special int
	Bytes                                     int64 // file data copied
	// Warnings name what could not be kept because the filesystem cannot
	// hold it (xattrs on FAT, a FIFO on FAT, owners on FAT).
	Warnings []string
}

// item is one local node to copy and where it goes.
type item struct {
	local  string
	dest   string // io/fs path in the filesystem
	fi     fs.FileInfo
	st     *syscall.Stat_t
	data   int64  // bytes of data outside holes
	link   string // symlink target
	first  int    // index of the first item of the same local inode (hard link), or -1
	exists bool   // dest exists and must be replaced (Force)
	merge  bool   // dest is an existing directory taken as it is
}

// plan is CopyIn's work list, built and checked before anything is written.
type plan struct {
	items []item
	dir   string // existing directory everything goes into ("" : dest is new)
	mkdir string // directory to make (with parents) first, "" if none
}

// CopyIn copies the local files and trees locals into the filesystem at
// dst, as cp -a does: a directory dst (existing, or named with a trailing
// slash, or given several locals; made with its parents when missing)
// receives each local under its base name; otherwise the one local
// becomes dst. Modes, owners, times, xattrs, symlinks, hard links within
// what is copied, FIFOs and devices are kept where the filesystem can
// hold them (Warnings say what it could not); sparse local files keep
// their holes. Everything is checked first (names in the way, space,
// inodes): a refused copy writes nothing.
func (f *FS) CopyIn(ctx context.Context, locals []string, dst string, dstIsDir bool, opt CopyOptions) (Result, error) {
	pl, err := f.planCopy(locals, dst, dstIsDir, opt)
	if err != nil {
		return Result{}, err
	}
	if err := f.checkSpace(pl, opt); err != nil {
		return Result{}, err
	}
	return f.runCopy(ctx, pl, opt)
}

func (f *FS) planCopy(locals []string, dst string, dstIsDir bool, opt CopyOptions) (*plan, error) {
	if len(locals) == 0 {
		return nil, errors.New("nothing to copy")
	}
	pl := &plan{}
	da, err := f.Stat(dst)
	switch {
	case err == nil && IsDir(da):
		pl.dir = dst
	case err == nil && (dstIsDir || len(locals) > 1):
		return nil, f.pathErr("copy", dst, syscall.ENOTDIR)
	case err == nil:
		// One local onto an existing non-directory: replaced below
		// (Force) or refused.
	case !errors.Is(err, syscall.ENOENT):
		return nil, err
	case dstIsDir || len(locals) > 1:
		pl.mkdir, pl.dir = dst, dst
	default:
		pa, err := f.Stat(path.Dir(path.Clean(dst)))
		if err != nil {
			return nil, err
		}
		if !IsDir(pa) {
			return nil, f.pathErr("copy", dst, syscall.ENOTDIR)
		}
	}
	seen := map[[2]uint64]int{}
	newDirs := map[string]bool{}
	for _, l := range locals {
		target := dst
		if pl.dir != "" {
			target = path.Join(pl.dir, filepath.Base(filepath.Clean(l)))
		}
		err := filepath.WalkDir(l, func(lp string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(l, lp)
			if err != nil {
				return err
			}
			it := item{local: lp, dest: path.Clean(path.Join(target, filepath.ToSlash(rel))), first: -1}
			if it.fi, err = os.Lstat(lp); err != nil {
				return err
			}
			it.st, _ = it.fi.Sys().(*syscall.Stat_t)
			if err := fsdrivers.CheckName(path.Base(it.dest)); err != nil && it.dest != "." {
				return fmt.Errorf("%s: %w", lp, err)
			}
			switch m := it.fi.Mode(); {
			case m.IsRegular():
				if it.data, err = dataBytes(lp, it.fi.Size()); err != nil {
					return err
				}
			case m&fs.ModeSymlink != 0:
				if it.link, err = os.Readlink(lp); err != nil {
					return err
				}
			}
			if it.st != nil && !it.fi.IsDir() && it.st.Nlink > 1 {
				k := [2]uint64{uint64(it.st.Dev), it.st.Ino}
				if i, ok := seen[k]; ok {
					it.first = i
				} else {
					seen[k] = len(pl.items)
				}
			}
			if !newDirs[path.Dir(it.dest)] {
				if err := f.checkDest(&it, opt); err != nil {
					return err
				}
			}
			if it.fi.IsDir() && !it.merge {
				newDirs[it.dest] = true
			}
			pl.items = append(pl.items, it)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return pl, nil
}

// checkDest looks at what is at it.dest now and decides: new, merged
// (an existing directory for a directory), replaced (Force), or refused.
func (f *FS) checkDest(it *item, opt CopyOptions) error {
	a, err := f.Lstat(it.dest)
	if errors.Is(err, syscall.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	if it.fi.IsDir() {
		if sa, err := f.Stat(it.dest); err == nil && IsDir(sa) {
			it.merge = true
			return nil
		}
	} else if IsDir(a) {
		return f.pathErr("copy", it.dest, fmt.Errorf("is a directory, %s is not: remove it first (dimg rm -r): %w", it.local, syscall.EISDIR))
	}
	if !opt.Force {
		return f.pathErr("copy", it.dest, existsErr{syscall.EEXIST})
	}
	it.exists = true
	return nil
}

// dataBytes is how many bytes of a local file are data, not holes
// (SEEK_DATA/SEEK_HOLE; the whole size where they are not supported).
func dataBytes(name string, size int64) (int64, error) {
	if size == 0 {
		return 0, nil
	}
	fd, err := os.Open(name)
	if err != nil {
		return 0, err
	}
	defer fd.Close()
	var n int64
	err = dataRanges(fd, size, func(off, length int64) error { n += length; return nil })
	return n, err
}

// dataRanges calls fn for each range of data in fd (size bytes), skipping
// holes.
func dataRanges(fd *os.File, size int64, fn func(off, length int64) error) error {
	off := int64(0)
	for off < size {
		d, err := unix.Seek(int(fd.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, syscall.ENXIO) {
			return nil // only a hole is left
		}
		if err != nil {
			return fn(off, size-off) // no SEEK_DATA here: all data
		}
		h, err := unix.Seek(int(fd.Fd()), d, unix.SEEK_HOLE)
		if err != nil || h > size {
			h = size
		}
		if err := fn(d, h-d); err != nil {
			return err
		}
		off = h
	}
	return nil
}

// SpaceError is a copy refused before writing because it does not fit.
type SpaceError struct {
	Where      string // "2:/"
	Need, Free int64  // bytes
	Inodes     int64  // inodes needed when those are short, else 0
	FreeInodes int64
}

func (e *SpaceError) Error() string {
	if e.Inodes > 0 {
		return fmt.Sprintf("no space left on %s: the copy needs %d inodes, %d are free (%d missing)", e.Where, e.Inodes, e.FreeInodes, e.Inodes-e.FreeInodes)
	}
	return fmt.Sprintf("no space left on %s: the copy needs about %s, %s is free: %s missing", e.Where, HumanBytes(e.Need), HumanBytes(e.Free), HumanBytes(e.Need-e.Free))
}

func (e *SpaceError) Unwrap() error { return syscall.ENOSPC }

// checkSpace compares what the plan adds with the free space: every
// file's data rounded up to blocks, one block per directory and per long
// symlink, and the block map's own blocks (one per blockSize/4 blocks, as
// ext2/3 indirect blocks need; extents need fewer). Files a forced copy
// replaces give their blocks back.
func (f *FS) checkSpace(pl *plan, opt CopyOptions) error {
	st, err := f.W.Statfs()
	if err != nil || st.BlockSize <= 0 {
		return nil // nothing to go by: ENOSPC will say it if it comes
	}
	bs := st.BlockSize
	var need, inodes int64
	for i := range pl.items {
		it := &pl.items[i]
		if it.first >= 0 || it.merge {
			continue
		}
		inodes++
		switch {
		case it.fi.IsDir():
			need += bs
		case it.fi.Mode().IsRegular():
			blocks := (it.data + bs - 1) / bs
			need += (blocks + blocks/(bs/4)) * bs
		case it.link != "" && len(it.link) >= 60:
			need += bs
		}
		if it.exists {
			if a, err := f.Lstat(it.dest); err == nil {
				need -= a.Blocks * 512
			}
		}
	}
	if pl.mkdir != "" {
		need += bs * int64(len(split(pl.mkdir)))
	}
	free := st.BlocksFree * bs
	if need > free {
		return &SpaceError{Where: f.Show("."), Need: need, Free: free}
	}
	if st.Files > 0 && inodes > st.FilesFree {
		return &SpaceError{Where: f.Show("."), Inodes: inodes, FreeInodes: st.FilesFree}
	}
	return nil
}

func (f *FS) owner(it *item, opt CopyOptions) fsdrivers.Owner {
	if opt.Owner != nil {
		return *opt.Owner
	}
	if it.st != nil {
		return fsdrivers.Owner{Uid: it.st.Uid, Gid: it.st.Gid}
	}
	return fsdrivers.Owner{}
}

func (f *FS) mode(it *item, opt CopyOptions) uint32 {
	m := uint32(it.fi.Mode().Perm())
	if it.st != nil {
		m = it.st.Mode & fsdrivers.ModePerm
	}
	if opt.Mode == nil {
		return m
	}
	switch {
	case it.fi.Mode().IsRegular():
		return *opt.Mode & fsdrivers.ModePerm
	case it.fi.IsDir():
		o := *opt.Mode & fsdrivers.ModePerm
		return o | (o&0o444)>>2
	}
	return m
}

// noSupport reports errors that mean "this filesystem cannot hold that".
func noSupport(err error) bool {
	return errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOTSUP)
}

func (f *FS) runCopy(ctx context.Context, pl *plan, opt CopyOptions) (Result, error) {
	var res Result
	prog := progress.Or(opt.Progress)
	var total int64
	for _, it := range pl.items {
		if it.first < 0 {
			total += it.data
		}
	}
	prog.Start("adding", total)
	if pl.mkdir != "" {
		var own fsdrivers.Owner
		if opt.Owner != nil {
			own = *opt.Owner
		}
		if _, err := f.MkdirAll(pl.mkdir, 0o755, own); err != nil {
			return res, err
		}
	}
	inos := make([]uint64, len(pl.items))
	dirs := map[string]uint64{}
	type dirTimes struct {
		ino uint64
		it  *item
	}
	var later []dirTimes // directory times, set once their contents are in
	warned := map[string]bool{}
	warn := func(s string) {
		if !warned[s] {
			warned[s] = true
			res.Warnings = append(res.Warnings, s)
		}
	}
	for i := range pl.items {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		it := &pl.items[i]
		parent, ok := dirs[path.Dir(it.dest)]
		if !ok {
			pa, err := f.Stat(path.Dir(it.dest))
			if err != nil {
				return res, err
			}
			parent = pa.Ino
			dirs[path.Dir(it.dest)] = parent
		}
		name := path.Base(it.dest)
		if it.exists {
			if err := f.removeAll(parent, name, it.dest); err != nil {
				return res, f.pathErr("replace", it.dest, err)
			}
		}
		own, mode := f.owner(it, opt), f.mode(it, opt)
		var a fsdrivers.Attr
		var err error
		switch m := it.fi.Mode(); {
		case it.merge:
			if a, err = f.Stat(it.dest); err != nil {
				return res, err
			}
			dirs[it.dest] = a.Ino
			continue
		case it.first >= 0:
			if a, err = f.W.Link(inos[it.first], parent, name); err != nil {
				return res, f.pathErr("link", it.dest, err)
			}
			inos[i] = a.Ino
			res.HardLinks++
			continue
		case m.IsDir():
			if a, err = f.W.Mkdir(parent, name, mode, own); err != nil {
				return res, f.pathErr("mkdir", it.dest, err)
			}
			dirs[it.dest] = a.Ino
			res.Dirs++
		case m&fs.ModeSymlink != 0:
			if a, err = f.W.Symlink(parent, name, it.link, own); err != nil {
				return res, f.pathErr("symlink", it.dest, err)
			}
			res.Symlinks++
		case m.IsRegular():
			if a, err = f.W.Create(parent, name, fsdrivers.ModeFile|mode, 0, own); err != nil {
				return res, f.pathErr("create", it.dest, err)
			}
			if err := f.copyData(a.Ino, it, prog); err != nil {
				return res, f.pathErr("write", it.dest, err)
			}
			res.Files++
			res.Bytes += it.fi.Size()
		default:
			typ, rdev := specialType(it)
			if a, err = f.W.Create(parent, name, typ|mode, rdev, own); err != nil {
				if noSupport(err) {
					warn(fmt.Sprintf("%s: %s cannot hold a %s; left out", it.local, f.W.Type(), m.Type()))
					continue
				}
				return res, f.pathErr("create", it.dest, err)
			}
			res.Special++
		}
		inos[i] = a.Ino
		if err := f.keepAttrs(a, it, own, mode, warn); err != nil {
			return res, err
		}
		if it.fi.IsDir() {
			later = append(later, dirTimes{a.Ino, it})
		}
	}
	for i := len(later) - 1; i >= 0; i-- {
		d := later[i]
		at, mt := times(d.it)
		if _, err := f.W.Setattr(d.ino, fsdrivers.SetAttr{Atime: &at, Mtime: &mt}); err != nil && !noSupport(err) {
			return res, f.pathErr("utimes", d.it.dest, err)
		}
	}
	return res, nil
}

func specialType(it *item) (uint32, uint64) {
	var rdev uint64
	if it.st != nil {
		rdev = uint64(it.st.Rdev)
	}
	switch m := it.fi.Mode(); {
	case m&fs.ModeNamedPipe != 0:
		return fsdrivers.ModeFIFO, 0
	case m&fs.ModeSocket != 0:
		return fsdrivers.ModeSocket, 0
	case m&fs.ModeCharDevice != 0:
		return fsdrivers.ModeChar, rdev
	}
	return fsdrivers.ModeBlock, rdev
}

func times(it *item) (atime, mtime time.Time) {
	mtime = it.fi.ModTime()
	atime = mtime
	if it.st != nil {
		atime = time.Unix(it.st.Atim.Unix())
	}
	return atime, mtime
}

// keepAttrs gives a new node the local one's mode, owner, times and
// xattrs: after the data, since writing changes mtime.
func (f *FS) keepAttrs(a fsdrivers.Attr, it *item, own fsdrivers.Owner, mode uint32, warn func(string)) error {
	set := fsdrivers.SetAttr{}
	if !isType(a, fsdrivers.ModeLink) {
		if isType(a, fsdrivers.ModeDir) {
			// A directory made in a set-group-ID directory inherits the
			// bit; cp -a and mkdir keep it (coreutils clears a
			// directory's set-group-ID only when told to), so does add.
			mode |= a.Mode & 0o2000
		}
		if a.Mode&fsdrivers.ModePerm != mode {
			set.Mode = &mode
		}
	}
	if a.Uid != own.Uid || a.Gid != own.Gid {
		set.Uid, set.Gid = &own.Uid, &own.Gid
	}
	if !it.fi.IsDir() {
		at, mt := times(it)
		set.Atime, set.Mtime = &at, &mt
	}
	if _, err := f.W.Setattr(a.Ino, set); err != nil {
		if !noSupport(err) {
			return f.pathErr("setattr", it.dest, err)
		}
		warn(fmt.Sprintf("%s cannot hold every owner, mode or time (%v)", f.W.Type(), err))
	}
	names, err := xattrNames(it.local)
	if err != nil {
		return nil // no xattrs to read here: nothing to keep
	}
	for _, n := range names {
		v, err := lgetxattr(it.local, n)
		if err != nil {
			continue
		}
		if err := f.W.SetXattr(a.Ino, n, v, 0); err != nil {
			if noSupport(err) {
				warn(fmt.Sprintf("%s cannot hold extended attributes (%s of %s left out)", f.W.Type(), n, it.local))
				continue
			}
			return f.pathErr("setxattr "+n, it.dest, err)
		}
	}
	return nil
}

// copyData writes a local file's data, leaving its holes as holes.
func (f *FS) copyData(ino uint64, it *item, prog progress.Reporter) error {
	size := it.fi.Size()
	if size == 0 {
		return nil
	}
	fd, err := os.Open(it.local)
	if err != nil {
		return err
	}
	defer fd.Close()
	if f.buf == nil {
		f.buf = make([]byte, 1<<20) // one buffer for every file of a copy
	}
	buf := f.buf
	err = dataRanges(fd, size, func(off, length int64) error {
		for length > 0 {
			n := int(min(int64(len(buf)), length))
			n, err := io.ReadFull(io.NewSectionReader(fd, off, int64(n)), buf[:n])
			if err != nil {
				return fmt.Errorf("%s: %w (did it change while copied?)", it.local, err)
			}
			if _, err := f.W.WriteAt(ino, buf[:n], off); err != nil {
				return err
			}
			prog.Add(int64(n))
			off += int64(n)
			length -= int64(n)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// A trailing hole: the size still has to reach the end.
	if a, err := f.W.Getattr(ino); err == nil && a.Size < size {
		_, err = f.W.Setattr(ino, fsdrivers.SetAttr{Size: &size})
		return err
	}
	return nil
}

func xattrNames(p string) ([]string, error) {
	buf := make([]byte, 4096)
	for {
		n, err := unix.Llistxattr(p, buf)
		if errors.Is(err, syscall.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if err != nil {
			return nil, err
		}
		var out []string
		for _, s := range splitNul(buf[:n]) {
			out = append(out, s)
		}
		return out, nil
	}
}

func splitNul(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == 0 {
			if i > start {
				out = append(out, string(b[start:i]))
			}
			start = i + 1
		}
	}
	return out
}

func lgetxattr(p, name string) ([]byte, error) {
	buf := make([]byte, 4096)
	for {
		n, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, syscall.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// HumanBytes is n in the largest binary unit that keeps it ≥ 1: "1.5 MiB".
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
