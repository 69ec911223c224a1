package fat

import (
	"encoding/binary"
	"io"
	"syscall"

	"github.com/dimg-project/dimg/fsdrivers"
)

// maxFileSize is the largest size DIR_FileSize holds.
const maxFileSize = 0xFFFFFFFF

// attrArchive marks a file changed since the last backup; Linux sets it on
// every file it creates or writes, and so does this package.
const attrArchive = 0x20

// file returns the live regular file ino with its chain loaded.
func (w *wfs) file(ino uint64) (*node, error) {
	n, err := w.get(ino)
	if err != nil {
		return nil, err
	}
	if n.isDir() {
		return nil, errno(syscall.EISDIR, "node %d (%q) is a directory", ino, n.name)
	}
	if _, err := w.chain(n); err != nil {
		return nil, err
	}
	return n, nil
}

// span calls fn for each piece of [off, off+length) of n's clusters: the
// partition offset and the piece's bounds relative to off.
func (w *wfs) span(n *node, off, length int64, fn func(disk, lo, hi int64) error) error {
	cs := w.g.clusterSize
	for pos, end := off, off+length; pos < end; {
		k := pos / cs
		c, cnt := n.ch.at(k)
		in := pos - k*cs
		chunk := min(end-pos, cnt*cs-in)
		if err := fn(w.g.clusterOffset(c)+in, pos-off, pos-off+chunk); err != nil {
			return err
		}
		pos += chunk
	}
	return nil
}

func (w *wfs) ReadAt(ino uint64, p []byte, off int64) (int, error) {
	n, err := w.locked(w.file, ino)
	if err != nil {
		return 0, err
	}
	defer w.mu.Unlock()
	if off < 0 {
		return 0, errno(syscall.EINVAL, "read %q at %d", n.name, off)
	}
	size := n.size()
	if off >= size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), size-off)
	err = w.span(n, off, want, func(disk, lo, hi int64) error {
		if err := readFull(w.dev, p[lo:hi], disk); err != nil {
			return errno(syscall.EIO, "read %q at %d: %v", n.name, disk, err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if want < int64(len(p)) {
		return int(want), io.EOF
	}
	return int(want), nil
}

// zeros is a buffer of zeros for clearing clusters.
var zeros = make([]byte, 256<<10)

// zero writes zeros over [from, to) of n: FAT has no holes, so bytes a
// file grows by are cleared (including the stale tail of its last cluster).
func (w *wfs) zero(n *node, from, to int64) error {
	return w.span(n, from, to-from, func(disk, lo, hi int64) error {
		for lo < hi {
			k := min(hi-lo, int64(len(zeros)))
			if _, err := w.dev.WriteAt(zeros[:k], disk); err != nil {
				return errno(syscall.EIO, "clear %q at %d: %v", n.name, disk, err)
			}
			disk += k
			lo += k
		}
		return nil
	})
}

// grow gives n at least want clusters, allocating after its last cluster
// where that is free so files stay contiguous. Nothing changes on ENOSPC.
func (w *wfs) grow(n *node, want int64) error {
	ch, err := w.chain(n)
	if err != nil {
		return err
	}
	if want <= ch.n {
		return nil
	}
	if want-ch.n > w.fat.free {
		return errno(syscall.ENOSPC, "%q needs %d more clusters of %d bytes, %d are free", n.name, want-ch.n, w.g.clusterSize, w.fat.free)
	}
	last := ch.last()
	near := uint32(0)
	if last != 0 {
		near = last + 1
	}
	cl, err := w.fat.alloc(want-ch.n, last, near)
	if err != nil {
		return asErrno(err)
	}
	if ch.n == 0 {
		w.setFirst(n, cl[0])
		w.store(n)
	}
	for _, c := range cl {
		ch.add(c)
	}
	if n.gone {
		// An orphan's new clusters are hidden on disk too: see sync.
		for _, c := range cl {
			if err := w.fat.markDirty(c); err != nil {
				return asErrno(err)
			}
		}
	}
	return nil
}

// clustersFor is how many clusters size bytes take.
func (w *wfs) clustersFor(size int64) int64 {
	return (size + w.g.clusterSize - 1) / w.g.clusterSize
}

// resize sets file n's size: growing allocates and clears, shrinking frees
// the clusters past the new end (all of them at 0: an empty file has first
// cluster 0).
func (w *wfs) resize(n *node, size int64) error {
	old := n.size()
	need := w.clustersFor(size)
	if size > old {
		if err := w.grow(n, need); err != nil {
			return err
		}
		if err := w.zero(n, old, size); err != nil {
			return err
		}
	} else {
		ch, err := w.chain(n)
		if err != nil {
			return err
		}
		freed := ch.cut(need)
		if need == 0 {
			w.setFirst(n, 0)
		} else if len(freed) > 0 {
			if err := w.fat.set(ch.last(), w.g.eocMark()); err != nil {
				return asErrno(err)
			}
		}
		if err := w.fat.freeRuns(freed); err != nil {
			return asErrno(err)
		}
	}
	n.setSize(size)
	w.store(n)
	return nil
}

func (w *wfs) WriteAt(ino uint64, p []byte, off int64) (int, error) {
	n, err := w.locked(w.file, ino)
	if err != nil {
		return 0, err
	}
	defer w.mu.Unlock()
	end := off + int64(len(p))
	if off < 0 {
		return 0, errno(syscall.EINVAL, "write %q at %d", n.name, off)
	}
	if end > maxFileSize {
		return 0, errno(syscall.EFBIG, "write %q up to %d: FAT files end at %d bytes", n.name, end, int64(maxFileSize))
	}
	if len(p) == 0 {
		return 0, nil
	}
	if old := n.size(); end > old {
		if err := w.grow(n, w.clustersFor(end)); err != nil {
			return 0, err
		}
		if off > old {
			if err := w.zero(n, old, off); err != nil {
				return 0, err
			}
		}
		n.setSize(end)
	}
	err = w.span(n, off, int64(len(p)), func(disk, lo, hi int64) error {
		if _, err := w.dev.WriteAt(p[lo:hi], disk); err != nil {
			return errno(syscall.EIO, "write %q at %d: %v", n.name, disk, err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	setMtime(n.ent[:], w.now())
	n.ent[11] |= attrArchive
	w.store(n)
	return len(p), nil
}

// newBody is a fresh entry with attributes attr and all three times now.
func (w *wfs) newBody(attr byte) [entrySize]byte {
	var e [entrySize]byte
	e[11] = attr
	now := w.now()
	setBtime(e[:], now)
	setMtime(e[:], now)
	setAtime(e[:], now)
	return e
}

// touch sets directory d's modification time, as Linux does when an entry
// is added or removed (the root has no entry to hold it).
func (w *wfs) touch(d *node) {
	if d == w.root || d.gone {
		return
	}
	setMtime(d.ent[:], w.now())
	w.store(d)
}

// checkNew validates name for a new entry in d and returns it as stored.
func (w *wfs) checkNew(d *node, name string) (string, error) {
	clean, ok := cleanName(name)
	if !ok || name == "." || name == ".." {
		return "", errno(syscall.EINVAL, "invalid FAT name %q", name)
	}
	if nameTooLong(clean) {
		return "", errno(syscall.ENAMETOOLONG, "name %q is longer than %d UTF-16 units", name, maxNameUnits)
	}
	if d.dir.find(clean) != nil {
		return "", errno(syscall.EEXIST, "%q exists in directory %q", name, d.name)
	}
	return clean, nil
}

// Create makes an empty regular file (first cluster 0, no clusters). FAT
// holds no other file types (EPERM, as vfat answers mknod) and no owner:
// owner is ignored, as vfat ignores the creating process's ids.
func (w *wfs) Create(dir uint64, name string, mode uint32, rdev uint64, owner fsdrivers.Owner) (fsdrivers.Attr, error) {
	if err := w.lock(); err != nil {
		return fsdrivers.Attr{}, err
	}
	defer w.mu.Unlock()
	if t := mode & fsdrivers.ModeType; t != 0 && t != fsdrivers.ModeFile {
		return fsdrivers.Attr{}, errno(syscall.EPERM, "create %q: FAT holds only regular files and directories", name)
	}
	d, err := w.getDir(dir)
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	clean, err := w.checkNew(d, name)
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	attr := byte(attrArchive)
	if mode&0o222 == 0 {
		attr |= attrReadOnly
	}
	slot, lfn, ent, err := w.addEntry(d, clean, w.newBody(attr))
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	n := &node{ino: w.nextIno, parent: d, slot: slot, lfn: lfn, name: clean, ent: ent, ch: &extents{}}
	w.nextIno++
	w.nodes[n.ino] = n
	d.dir.index(n)
	w.touch(d)
	return w.attr(n)
}

// parentCluster is what a subdirectory's ".." entry holds for parent p:
// 0 for the root, also on FAT32.
func (w *wfs) parentCluster(p *node) uint32 {
	if p == w.root {
		return 0
	}
	return w.first(p)
}

// putCluster sets the first-cluster fields of raw entry e.
func (w *wfs) putCluster(e []byte, c uint32) {
	binary.LittleEndian.PutUint16(e[26:], uint16(c))
	if w.g.bits == 32 {
		binary.LittleEndian.PutUint16(e[20:], uint16(c>>16))
	}
}

// Mkdir makes a directory of one zeroed cluster holding "." and "..".
// Mode and owner are not stored (FAT has neither for directories).
func (w *wfs) Mkdir(dir uint64, name string, mode uint32, owner fsdrivers.Owner) (fsdrivers.Attr, error) {
	d, err := w.locked(w.getDir, dir)
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	defer w.mu.Unlock()
	clean, err := w.checkNew(d, name)
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	if w.fat.free < 1 {
		return fsdrivers.Attr{}, errno(syscall.ENOSPC, "mkdir %q: no free cluster", name)
	}
	cl, err := w.fat.alloc(1, 0, 0)
	if err != nil {
		return fsdrivers.Attr{}, asErrno(err)
	}
	body := w.newBody(attrDirectory)
	w.putCluster(body[:], cl[0])
	slot, lfn, ent, err := w.addEntry(d, clean, body)
	if err != nil {
		_ = w.fat.freeRuns([]run{{first: cl[0], n: 1}})
		return fsdrivers.Attr{}, err
	}
	n := &node{ino: w.nextIno, parent: d, slot: slot, lfn: lfn, name: clean, ent: ent, ch: &extents{}}
	n.ch.add(cl[0])
	w.nextIno++
	n.dir = newDirData()
	n.dir.raw = make([]byte, w.g.clusterSize)
	dot, dotdot := body, body
	copy(dot[:11], ".          ")
	copy(dotdot[:11], "..         ")
	w.putCluster(dotdot[:], w.parentCluster(d))
	w.putSlot(n, 0, dot[:])
	w.putSlot(n, 1, dotdot[:])
	w.nodes[n.ino] = n
	d.dir.index(n)
	w.touch(d)
	return w.attr(n)
}

func (w *wfs) Symlink(dir uint64, name, target string, owner fsdrivers.Owner) (fsdrivers.Attr, error) {
	return fsdrivers.Attr{}, errno(syscall.EPERM, "symlink %q: FAT has no symbolic links", name)
}

func (w *wfs) Link(ino, dir uint64, name string) (fsdrivers.Attr, error) {
	return fsdrivers.Attr{}, errno(syscall.EPERM, "link %q: FAT has no hard links", name)
}

// child finds name in directory dir.
func (w *wfs) child(dir uint64, name string) (*node, *node, error) {
	d, err := w.getDir(dir)
	if err != nil {
		return nil, nil, err
	}
	n := d.dir.find(name)
	if n == nil || name == "." || name == ".." {
		return nil, nil, errno(syscall.ENOENT, "%q not in directory %q", name, d.name)
	}
	return d, n, nil
}

func (w *wfs) Unlink(dir uint64, name string) error {
	if err := w.lock(); err != nil {
		return err
	}
	defer w.mu.Unlock()
	d, n, err := w.child(dir, name)
	if err != nil {
		return err
	}
	if n.isDir() {
		return errno(syscall.EISDIR, "unlink %q: a directory", name)
	}
	w.removeEntry(n)
	w.touch(d)
	w.unlinkNode(n)
	return nil
}

// unlinkNode finishes removing a file whose entry is gone: freed now, or,
// while held, kept as an orphan whose clusters the device shows free.
func (w *wfs) unlinkNode(n *node) {
	n.parent, n.gone = nil, true
	if n.holds == 0 {
		w.drop(n)
		return
	}
	if _, err := w.chain(n); err != nil {
		return // damaged chain: left as it is, fsck's business
	}
	w.orphans[n] = true
	for _, r := range n.ch.runs {
		for c := r.first; c < r.first+r.n; c++ {
			_ = w.fat.markDirty(c)
		}
	}
}

// removeDir forgets an (empty) directory whose entry is gone and frees its
// clusters; its unwritten blocks are never written.
func (w *wfs) removeDir(n *node) {
	n.parent, n.gone = nil, true
	delete(w.dirtyDirs, n)
	delete(w.nodes, n.ino)
	if n.ch != nil {
		_ = w.fat.freeRuns(n.ch.runs)
		n.ch = &extents{}
	}
}

func (w *wfs) Rmdir(dir uint64, name string) error {
	if err := w.lock(); err != nil {
		return err
	}
	defer w.mu.Unlock()
	d, n, err := w.child(dir, name)
	if err != nil {
		return err
	}
	if !n.isDir() {
		return errno(syscall.ENOTDIR, "rmdir %q: not a directory", name)
	}
	nd, err := w.loadDir(n)
	if err != nil {
		return asErrno(err)
	}
	if len(nd.kids) > 0 {
		return errno(syscall.ENOTEMPTY, "rmdir %q: directory not empty", name)
	}
	w.removeEntry(n)
	w.touch(d)
	w.removeDir(n)
	return nil
}

// within reports whether d is a or below a.
func within(d, a *node) bool {
	for x := d; x != nil; x = x.parent {
		if x == a {
			return true
		}
	}
	return false
}

// setDotDot points directory n's ".." entry at parent.
func (w *wfs) setDotDot(n, parent *node) {
	e := append([]byte(nil), n.dir.raw[entrySize:2*entrySize]...)
	if string(e[:11]) != "..         " {
		return // a damaged directory without "..": nothing to keep right
	}
	w.putCluster(e, w.parentCluster(parent))
	w.putSlot(n, 1, e)
}

// Rename moves an entry: its long name and alias are made anew in the new
// directory (the node keeps its number and clusters), a moved directory's
// ".." follows it, a replaced file is unlinked, a replaced directory must be
// empty. RENAME_EXCHANGE swaps the two entries' contents, names staying.
func (w *wfs) Rename(olddir uint64, oldname string, newdir uint64, newname string, flags fsdrivers.RenameFlags) error {
	if err := w.lock(); err != nil {
		return err
	}
	defer w.mu.Unlock()
	if flags&^(fsdrivers.RenameNoReplace|fsdrivers.RenameExchange) != 0 || flags == fsdrivers.RenameNoReplace|fsdrivers.RenameExchange {
		return errno(syscall.EINVAL, "rename %q: flags %#x", oldname, flags)
	}
	od, src, err := w.child(olddir, oldname)
	if err != nil {
		return err
	}
	nd, err := w.getDir(newdir)
	if err != nil {
		return err
	}
	clean, ok := cleanName(newname)
	if !ok || newname == "." || newname == ".." {
		return errno(syscall.EINVAL, "rename to invalid FAT name %q", newname)
	}
	if nameTooLong(clean) {
		return errno(syscall.ENAMETOOLONG, "name %q is longer than %d UTF-16 units", newname, maxNameUnits)
	}
	if src.isDir() && within(nd, src) {
		return errno(syscall.EINVAL, "rename %q into itself", oldname)
	}
	dst := nd.dir.find(clean)
	if flags&fsdrivers.RenameExchange != 0 {
		if dst == nil {
			return errno(syscall.ENOENT, "exchange %q with missing %q", oldname, newname)
		}
		if dst == src {
			return nil
		}
		if dst.isDir() && within(od, dst) {
			return errno(syscall.EINVAL, "exchange %q with its ancestor %q", oldname, newname)
		}
		return w.exchange(src, dst)
	}
	if dst == src {
		// As in Linux: NOREPLACE sees the target exist before it sees
		// that it is the same entry (vfat's lookup ignores case, so a
		// case-only rename with NOREPLACE fails too).
		if flags&fsdrivers.RenameNoReplace != 0 {
			return errno(syscall.EEXIST, "rename %q to %q: exists (the same entry)", oldname, newname)
		}
		if od == nd && src.name == clean {
			return nil
		}
		dst = nil // a new spelling of the same entry
	}
	if dst != nil {
		if flags&fsdrivers.RenameNoReplace != 0 {
			return errno(syscall.EEXIST, "rename to %q: exists", newname)
		}
		if src.isDir() && !dst.isDir() {
			return errno(syscall.ENOTDIR, "rename directory %q over file %q", oldname, newname)
		}
		if !src.isDir() && dst.isDir() {
			return errno(syscall.EISDIR, "rename file %q over directory %q", oldname, newname)
		}
		if dst.isDir() {
			dd, err := w.loadDir(dst)
			if err != nil {
				return asErrno(err)
			}
			if len(dd.kids) > 0 {
				return errno(syscall.ENOTEMPTY, "rename over %q: directory not empty", newname)
			}
		}
	}
	if src.isDir() && od != nd {
		if _, err := w.loadDir(src); err != nil {
			return asErrno(err)
		}
	}
	undoSrc := w.removeEntry(src)
	var undoDst func()
	if dst != nil {
		undoDst = w.removeEntry(dst)
	}
	slot, lfn, ent, err := w.addEntry(nd, clean, src.ent)
	if err != nil {
		if undoDst != nil {
			undoDst()
		}
		undoSrc()
		return err
	}
	src.parent, src.slot, src.lfn, src.name, src.ent = nd, slot, lfn, clean, ent
	nd.dir.index(src)
	if src.isDir() && od != nd {
		w.setDotDot(src, nd)
	}
	if dst != nil {
		if dst.isDir() {
			w.removeDir(dst)
		} else {
			w.unlinkNode(dst)
		}
	}
	w.touch(od)
	if nd != od {
		w.touch(nd)
	}
	return nil
}

// exchange swaps where a and b are: each takes the other's slot, long
// name, short name and case flags; the bodies (and so the nodes) move.
func (w *wfs) exchange(a, b *node) error {
	for _, n := range []*node{a, b} {
		if n.isDir() && a.parent != b.parent {
			if _, err := w.loadDir(n); err != nil {
				return asErrno(err)
			}
		}
	}
	pa, pb := a.parent, b.parent
	pa.dir.unindex(a)
	pb.dir.unindex(b)
	a.parent, b.parent = pb, pa
	a.slot, b.slot = b.slot, a.slot
	a.lfn, b.lfn = b.lfn, a.lfn
	a.name, b.name = b.name, a.name
	var tmp [13]byte
	copy(tmp[:], a.ent[:13])
	copy(a.ent[:11], b.ent[:11])
	a.ent[12] = b.ent[12]
	copy(b.ent[:11], tmp[:11])
	b.ent[12] = tmp[12]
	pb.dir.index(a)
	pa.dir.index(b)
	w.store(a)
	w.store(b)
	if pa != pb {
		if a.isDir() {
			w.setDotDot(a, pb)
		}
		if b.isDir() {
			w.setDotDot(b, pa)
		}
	}
	w.touch(pa)
	if pb != pa {
		w.touch(pb)
	}
	return nil
}

// Setattr changes what FAT can hold: the size, the read-only attribute
// (set when mode has no write bit; other mode bits are not stored), the
// modification time and access date. Owners other than 0 fail with EPERM,
// as vfat refuses chown; FAT has no change time to set.
func (w *wfs) Setattr(ino uint64, set fsdrivers.SetAttr) (fsdrivers.Attr, error) {
	n, err := w.locked(w.get, ino)
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	defer w.mu.Unlock()
	if set.Uid != nil && *set.Uid != 0 || set.Gid != nil && *set.Gid != 0 {
		return fsdrivers.Attr{}, errno(syscall.EPERM, "chown %q: FAT files belong to uid 0, gid 0", n.name)
	}
	if set.Size != nil {
		switch {
		case n.isDir():
			return fsdrivers.Attr{}, errno(syscall.EISDIR, "truncate %q: a directory", n.name)
		case *set.Size < 0:
			return fsdrivers.Attr{}, errno(syscall.EINVAL, "truncate %q to %d", n.name, *set.Size)
		case *set.Size > maxFileSize:
			return fsdrivers.Attr{}, errno(syscall.EFBIG, "truncate %q to %d: FAT files end at %d bytes", n.name, *set.Size, int64(maxFileSize))
		}
		if _, err := w.chain(n); err != nil {
			return fsdrivers.Attr{}, err
		}
		if err := w.resize(n, *set.Size); err != nil {
			return fsdrivers.Attr{}, err
		}
		setMtime(n.ent[:], w.now())
		n.ent[11] |= attrArchive
	}
	if set.Mode != nil && !n.isDir() {
		if *set.Mode&0o222 == 0 {
			n.ent[11] |= attrReadOnly
		} else {
			n.ent[11] &^= attrReadOnly
		}
	}
	if set.Atime != nil {
		setAtime(n.ent[:], *set.Atime)
	}
	if set.Mtime != nil {
		setMtime(n.ent[:], *set.Mtime)
	}
	w.store(n)
	return w.attr(n)
}

// Fallocate with mode 0 extends a file with allocated, zeroed clusters (FAT
// has no unwritten extents). Keeping the size, punching and zeroing ranges
// are not supported: FAT cannot hold clusters past a file's size.
func (w *wfs) Fallocate(ino uint64, off, length int64, flags fsdrivers.FallocFlags) error {
	n, err := w.locked(w.file, ino)
	if err != nil {
		return err
	}
	defer w.mu.Unlock()
	if flags != 0 {
		return errno(syscall.EOPNOTSUPP, "fallocate %q: mode %#x not supported on FAT", n.name, flags)
	}
	if off < 0 || length <= 0 {
		return errno(syscall.EINVAL, "fallocate %q: offset %d length %d", n.name, off, length)
	}
	end := off + length
	if end > maxFileSize {
		return errno(syscall.EFBIG, "fallocate %q to %d: FAT files end at %d bytes", n.name, end, int64(maxFileSize))
	}
	if end <= n.size() {
		return nil
	}
	return w.resize(n, end)
}
