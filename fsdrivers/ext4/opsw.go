package ext4

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/dimg-project/dimg/fsdrivers"
)

// The WritableFS operations. Each takes the lock, checks its arguments
// before changing anything, and leaves a consistent filesystem in the
// cache when it fails part way (e.g. ENOSPC after a directory grew).

var _ fsdrivers.WritableFS = (*wfs)(nil)

func (w *wfs) rlock() error {
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		return fmt.Errorf("ext4: filesystem closed: %w", syscall.EIO)
	}
	return nil
}

func (w *wfs) lock() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return fmt.Errorf("ext4: filesystem closed: %w", syscall.EIO)
	}
	return nil
}

// done ends a changing operation: bounded dirty memory.
func (w *wfs) done(err error) error {
	if ferr := w.maybeFlush(); err == nil {
		err = ferr
	}
	w.mu.Unlock()
	return err
}

func checkName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("ext4: invalid name %q: %w", name, syscall.EINVAL)
	case len(name) > ext4NameMax:
		return fmt.Errorf("ext4: name of %d bytes: %w", len(name), syscall.ENAMETOOLONG)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("ext4: invalid name %q: %w", name, syscall.EINVAL)
	}
	return nil
}

// dirInode loads directory n (ENOTDIR when it is not one).
func (w *wfs) dirInode(n uint64) (*winode, error) {
	d, err := w.liveInode(n)
	if err != nil {
		return nil, err
	}
	if !d.isDir() {
		return nil, fmt.Errorf("ext4: inode %d is not a directory: %w", n, syscall.ENOTDIR)
	}
	if d.flags()&(flagEncrypt|flagCasefold) != 0 {
		return nil, fmt.Errorf("ext4: directory inode %d is encrypted or casefolded: %w", n, syscall.EOPNOTSUPP)
	}
	return d, nil
}

func (w *wfs) lookupName(d *winode, name string) (*winode, error) {
	switch name {
	case ".":
		return d, nil
	case "..":
		ri, err := w.rinode(d)
		if err != nil {
			return nil, err
		}
		p, err := w.v.parent(ri)
		if err != nil {
			return nil, err
		}
		return w.loadInode(p)
	}
	if isInline(d) {
		return w.lookupInline(d, name) // inlinew.go
	}
	loc, err := w.findEntry(d, []byte(name))
	if err != nil {
		return nil, err
	}
	return w.loadInode(loc.rec.ino)
}

// Lookup finds name in directory dir.
func (w *wfs) Lookup(dir uint64, name string) (fsdrivers.Attr, error) {
	if err := w.rlock(); err != nil {
		return fsdrivers.Attr{}, err
	}
	defer w.mu.RUnlock()
	d, err := w.dirInode(dir)
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	i, err := w.lookupName(d, name)
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	return w.attr(i)
}

// Getattr describes node ino.
func (w *wfs) Getattr(ino uint64) (fsdrivers.Attr, error) {
	if err := w.rlock(); err != nil {
		return fsdrivers.Attr{}, err
	}
	defer w.mu.RUnlock()
	i, err := w.liveInode(ino)
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	return w.attr(i)
}

var ftypeModeBits = [...]uint32{1: fsdrivers.ModeFile, 2: fsdrivers.ModeDir, 3: fsdrivers.ModeChar,
	4: fsdrivers.ModeBlock, 5: fsdrivers.ModeFIFO, 6: fsdrivers.ModeSocket, 7: fsdrivers.ModeLink}

// ReadDir lists dir in on-disk order.
func (w *wfs) ReadDir(dir uint64) ([]fsdrivers.DirEntry, error) {
	if err := w.rlock(); err != nil {
		return nil, err
	}
	defer w.mu.RUnlock()
	d, err := w.dirInode(dir)
	if err != nil {
		return nil, err
	}
	ri, err := w.rinode(d)
	if err != nil {
		return nil, err
	}
	var out []fsdrivers.DirEntry
	err = w.v.scanDir(ri, func(e dirent) bool {
		name := string(e.name)
		if name == "." || name == ".." {
			return true
		}
		de := fsdrivers.DirEntry{Name: name, Ino: uint64(e.ino)}
		if int(e.ftype) < len(ftypeModeBits) && e.ftype != 0 {
			de.Mode = ftypeModeBits[e.ftype]
		} else if i, err := w.loadInode(e.ino); err == nil {
			de.Mode = uint32(i.mode()) & fsdrivers.ModeType
		}
		out = append(out, de)
		return true
	})
	return out, err
}

// Readlink returns a symlink's target.
func (w *wfs) Readlink(ino uint64) (string, error) {
	if err := w.rlock(); err != nil {
		return "", err
	}
	defer w.mu.RUnlock()
	i, err := w.liveInode(ino)
	if err != nil {
		return "", err
	}
	if i.mode()&sIFMT != sIFLNK {
		return "", fmt.Errorf("ext4: inode %d is not a symlink: %w", ino, syscall.EINVAL)
	}
	ri, err := w.rinode(i)
	if err != nil {
		return "", err
	}
	return w.v.readLink(ri)
}

// ReadAt reads a regular file.
func (w *wfs) ReadAt(ino uint64, p []byte, off int64) (int, error) {
	if err := w.rlock(); err != nil {
		return 0, err
	}
	defer w.mu.RUnlock()
	i, err := w.liveInode(ino)
	if err != nil {
		return 0, err
	}
	if i.isDir() {
		return 0, fmt.Errorf("ext4: read inode %d: %w", ino, syscall.EISDIR)
	}
	if off < 0 {
		return 0, fmt.Errorf("ext4: read inode %d at %d: %w", ino, off, syscall.EINVAL)
	}
	size := int64(min(i.size(), 1<<62))
	if !i.isReg() {
		size = 0
	}
	if off >= size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), size-off))
	ri, err := w.rinode(i)
	if err != nil {
		return 0, err
	}
	if _, err := w.v.readData(ri, p[:n], off, run{}); err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// ListXattr lists the extended attribute names of ino.
func (w *wfs) ListXattr(ino uint64) ([]string, error) {
	m, err := w.xattrs(ino)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	return names, nil
}

// GetXattr returns one extended attribute (ENODATA when absent).
func (w *wfs) GetXattr(ino uint64, name string) ([]byte, error) {
	m, err := w.xattrs(ino)
	if err != nil {
		return nil, err
	}
	val, ok := m[name]
	if !ok {
		return nil, fmt.Errorf("ext4: inode %d has no xattr %q: %w", ino, name, syscall.ENODATA)
	}
	return val, nil
}

func (w *wfs) xattrs(ino uint64) (map[string][]byte, error) {
	if err := w.rlock(); err != nil {
		return nil, err
	}
	defer w.mu.RUnlock()
	i, err := w.liveInode(ino)
	if err != nil {
		return nil, err
	}
	ri, err := w.rinode(i)
	if err != nil {
		return nil, err
	}
	return w.v.xattrMap(ri)
}

// SetXattr sets one extended attribute (xattrw.go).
func (w *wfs) SetXattr(ino uint64, name string, value []byte, flags fsdrivers.XattrFlags) error {
	return w.changeXattr(ino, name, value, flags, false)
}

// RemoveXattr removes one extended attribute (ENODATA when absent).
func (w *wfs) RemoveXattr(ino uint64, name string) error {
	return w.changeXattr(ino, name, nil, 0, true)
}

// WriteAt writes a regular file.
func (w *wfs) WriteAt(ino uint64, p []byte, off int64) (n int, err error) {
	if err := w.lock(); err != nil {
		return 0, err
	}
	defer func() { err = w.done(err) }()
	i, err := w.liveInode(ino)
	if err != nil {
		return 0, err
	}
	if !i.isReg() {
		if i.isDir() {
			return 0, fmt.Errorf("ext4: write inode %d: %w", ino, syscall.EISDIR)
		}
		return 0, fmt.Errorf("ext4: write inode %d: not a regular file: %w", ino, syscall.EINVAL)
	}
	if isInline(i) {
		n, err = w.writeInline(i, p, off) // inlinew.go
	} else {
		n, err = w.writeData(i, p, off)
	}
	if serr := w.store(i); serr != nil && err == nil {
		err = serr
	}
	return n, err
}

// Create makes a regular file, FIFO, socket or device node.
func (w *wfs) Create(dir uint64, name string, mode uint32, rdev uint64, owner fsdrivers.Owner) (fsdrivers.Attr, error) {
	typ := mode & fsdrivers.ModeType
	if typ == 0 {
		typ = fsdrivers.ModeFile
	}
	switch typ {
	case fsdrivers.ModeFile, fsdrivers.ModeFIFO, fsdrivers.ModeSocket, fsdrivers.ModeChar, fsdrivers.ModeBlock:
	default:
		return fsdrivers.Attr{}, fmt.Errorf("ext4: create %q: mode %#o: %w", name, mode, syscall.EINVAL)
	}
	return w.makeNode(dir, name, uint16(typ|mode&fsdrivers.ModePerm), owner, func(i *winode) error {
		if typ == fsdrivers.ModeChar || typ == fsdrivers.ModeBlock {
			major := uint32((rdev>>8)&0xfff | (rdev>>32)&^0xfff)
			minor := uint32(rdev&0xff | (rdev>>12)&^0xff)
			b := i.iblock()
			if major < 256 && minor < 256 {
				le.PutUint32(b[0:], major<<8|minor)
			} else {
				le.PutUint32(b[4:], minor&0xff|major<<8|(minor&^0xff)<<12)
			}
		}
		return nil
	})
}

// makeNode allocates an inode in dir's group, lets fill complete it, and
// links it as dir/name; everything is undone on failure.
func (w *wfs) makeNode(dir uint64, name string, mode uint16, owner fsdrivers.Owner, fill func(*winode) error) (attr fsdrivers.Attr, err error) {
	if err := checkName(name); err != nil {
		return fsdrivers.Attr{}, err
	}
	if err := w.lock(); err != nil {
		return fsdrivers.Attr{}, err
	}
	defer func() { err = w.done(err) }()
	d, err := w.dirForWrite(dir)
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	isDir := mode&sIFMT == sIFDIR
	if isDir && d.links() >= ext4LinkMax && w.v.sb.roCompat&roCompatDirNlink == 0 {
		return fsdrivers.Attr{}, fmt.Errorf("ext4: directory inode %d has too many links: %w", dir, syscall.EMLINK)
	}
	if _, err := w.findEntry(d, []byte(name)); err == nil {
		return fsdrivers.Attr{}, fmt.Errorf("ext4: %q exists in directory inode %d: %w", name, dir, syscall.EEXIST)
	} else if !errors.Is(err, syscall.ENOENT) {
		return fsdrivers.Attr{}, err
	}
	if d.mode()&0o2000 != 0 {
		// A setgid directory hands its group down, and its setgid bit to
		// subdirectories (the kernel's inode_init_owner; under FUSE the
		// filesystem has to do it).
		owner.Gid = d.gid()
		if isDir {
			mode |= 0o2000
		}
	}
	n, err := w.allocInode((d.num-1)/w.v.sb.inodesPerGroup, isDir)
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	i := w.newInode(n, mode, owner)
	undo := func(err error) (fsdrivers.Attr, error) {
		if ferr := w.freeInodeAndData(i); ferr != nil {
			return fsdrivers.Attr{}, errors.Join(err, ferr)
		}
		return fsdrivers.Attr{}, err
	}
	if err := fill(i); err != nil {
		return undo(err)
	}
	if err := w.addEntry(d, []byte(name), n, w.ftypeFor(mode)); err != nil {
		return undo(err)
	}
	if err := w.store(i); err != nil {
		return fsdrivers.Attr{}, err
	}
	if isDir {
		w.incLinks(d)
	}
	w.touch(d, true)
	if err := w.store(d); err != nil {
		return fsdrivers.Attr{}, err
	}
	return w.attr(i)
}

// incLinks counts one more subdirectory (dir_nlink: past the limit a
// directory's count is 1, meaning "not counted").
func (w *wfs) incLinks(d *winode) {
	if n := d.links(); n != 1 {
		if n+1 >= ext4LinkMax {
			d.setLinks(1)
		} else {
			d.setLinks(n + 1)
		}
	}
}

func (w *wfs) decLinks(d *winode) {
	if n := d.links(); n > 2 {
		d.setLinks(n - 1)
	}
}

// Mkdir makes a directory.
func (w *wfs) Mkdir(dir uint64, name string, mode uint32, owner fsdrivers.Owner) (fsdrivers.Attr, error) {
	return w.makeNode(dir, name, uint16(sIFDIR|mode&fsdrivers.ModePerm), owner, func(i *winode) error {
		i.setLinks(2)
		return w.initDir(i, uint32(dir))
	})
}

// Symlink makes a symbolic link: the target in i_block when shorter than
// 60 bytes, else in a data block.
func (w *wfs) Symlink(dir uint64, name, target string, owner fsdrivers.Owner) (fsdrivers.Attr, error) {
	if len(target) == 0 || len(target) > maxSymlinkLen {
		return fsdrivers.Attr{}, fmt.Errorf("ext4: symlink target of %d bytes: %w", len(target), syscall.ENAMETOOLONG)
	}
	return w.makeNode(dir, name, sIFLNK|0o777, owner, func(i *winode) error {
		if len(target) < iBlockSize {
			copy(i.iblock(), target)
			i.setSize(uint64(len(target)))
			return nil
		}
		if w.v.sb.incompat&incompatExtents != 0 {
			i.setFlags(i.flags() | flagExtents)
			initExtentRoot(i.iblock())
		}
		_, err := w.writeData(i, []byte(target), 0)
		return err
	})
}

// Link adds dir/name as another name of ino.
func (w *wfs) Link(ino, dir uint64, name string) (attr fsdrivers.Attr, err error) {
	if err := checkName(name); err != nil {
		return fsdrivers.Attr{}, err
	}
	if err := w.lock(); err != nil {
		return fsdrivers.Attr{}, err
	}
	defer func() { err = w.done(err) }()
	d, err := w.dirForWrite(dir)
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	i, err := w.liveInode(ino)
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	if i.isDir() {
		return fsdrivers.Attr{}, fmt.Errorf("ext4: hard link to directory inode %d: %w", ino, syscall.EPERM)
	}
	if i.links() == 0 {
		return fsdrivers.Attr{}, fmt.Errorf("ext4: link to unlinked inode %d: %w", ino, syscall.ENOENT)
	}
	if i.links() >= ext4LinkMax {
		return fsdrivers.Attr{}, fmt.Errorf("ext4: inode %d has %d links: %w", ino, i.links(), syscall.EMLINK)
	}
	if _, err := w.findEntry(d, []byte(name)); err == nil {
		return fsdrivers.Attr{}, fmt.Errorf("ext4: %q exists in directory inode %d: %w", name, dir, syscall.EEXIST)
	} else if !errors.Is(err, syscall.ENOENT) {
		return fsdrivers.Attr{}, err
	}
	if err := w.addEntry(d, []byte(name), i.num, w.ftypeFor(i.mode())); err != nil {
		return fsdrivers.Attr{}, err
	}
	i.setLinks(i.links() + 1)
	w.touch(i, false)
	w.touch(d, true)
	if err := w.store(d); err != nil {
		return fsdrivers.Attr{}, err
	}
	if err := w.store(i); err != nil {
		return fsdrivers.Attr{}, err
	}
	return w.attr(i)
}

// dropLink removes one link of i (already unlinked from its directory):
// at zero the inode is freed, or put on the orphan list while held.
func (w *wfs) dropLink(i *winode) error {
	if i.isDir() {
		i.setLinks(0)
	} else if n := i.links(); n > 0 {
		i.setLinks(n - 1)
	}
	w.touch(i, false)
	if i.links() > 0 {
		return w.store(i)
	}
	if w.holds[i.num] > 0 {
		return w.orphanAdd(i)
	}
	return w.freeInodeAndData(i)
}

// Unlink removes a non-directory entry.
func (w *wfs) Unlink(dir uint64, name string) error {
	return w.removeName(dir, name, false)
}

// Rmdir removes an empty directory.
func (w *wfs) Rmdir(dir uint64, name string) error {
	if name == "." {
		return fmt.Errorf("ext4: rmdir %q: %w", name, syscall.EINVAL)
	}
	if name == ".." {
		return fmt.Errorf("ext4: rmdir %q: %w", name, syscall.ENOTEMPTY)
	}
	return w.removeName(dir, name, true)
}

// removeName is unlink (isDir false) and rmdir (isDir true): the entry
// name of dir goes, and the node loses the link it held.
func (w *wfs) removeName(dir uint64, name string, isDir bool) (err error) {
	if err := checkName(name); err != nil {
		return err
	}
	if err := w.lock(); err != nil {
		return err
	}
	defer func() { err = w.done(err) }()
	d, err := w.dirForWrite(dir)
	if err != nil {
		return err
	}
	i, err := w.lookupName(d, name)
	if err != nil {
		return err
	}
	switch {
	case !isDir && i.isDir():
		return fmt.Errorf("ext4: unlink %q: %w", name, syscall.EISDIR)
	case isDir && !i.isDir():
		return fmt.Errorf("ext4: rmdir %q: %w", name, syscall.ENOTDIR)
	case isDir:
		if empty, err := w.emptyDir(i); err != nil {
			return err
		} else if !empty {
			return fmt.Errorf("ext4: rmdir %q: %w", name, syscall.ENOTEMPTY)
		}
	}
	if _, err := w.removeEntry(d, []byte(name)); err != nil {
		return err
	}
	if isDir {
		w.decLinks(d) // its ".." no longer links d
	}
	w.touch(d, true)
	if err := w.store(d); err != nil {
		return err
	}
	return w.dropLink(i)
}

// isAncestor reports whether directory a is dir or one of its ancestors.
func (w *wfs) isAncestor(a uint32, dir *winode) (bool, error) {
	cur := dir
	for range w.v.sb.inodesCount {
		if cur.num == a {
			return true, nil
		}
		if cur.num == rootIno {
			return false, nil
		}
		ri, err := w.rinode(cur)
		if err != nil {
			return false, err
		}
		p, err := w.v.parent(ri)
		if err != nil {
			return false, err
		}
		if cur, err = w.loadInode(p); err != nil {
			return false, err
		}
	}
	return false, corruptf("directory inode %d: \"..\" chain does not reach the root", dir.num)
}

// Rename moves olddir/oldname to newdir/newname.
func (w *wfs) Rename(olddir uint64, oldname string, newdir uint64, newname string, flags fsdrivers.RenameFlags) (err error) {
	if err := checkName(oldname); err != nil {
		return err
	}
	if err := checkName(newname); err != nil {
		return err
	}
	if flags&^(fsdrivers.RenameNoReplace|fsdrivers.RenameExchange) != 0 || flags == fsdrivers.RenameNoReplace|fsdrivers.RenameExchange {
		return fmt.Errorf("ext4: rename flags %#x: %w", uint32(flags), syscall.EINVAL)
	}
	if err := w.lock(); err != nil {
		return err
	}
	defer func() { err = w.done(err) }()
	od, err := w.dirForWrite(olddir)
	if err != nil {
		return err
	}
	nd := od
	if newdir != olddir {
		if nd, err = w.dirForWrite(newdir); err != nil {
			return err
		}
	}
	src, err := w.lookupName(od, oldname)
	if err != nil {
		return err
	}
	dst, err := w.lookupName(nd, newname)
	if err != nil && !errors.Is(err, syscall.ENOENT) {
		return err
	}
	if err != nil {
		dst = nil
	}
	if flags&fsdrivers.RenameExchange != 0 {
		if dst == nil {
			return fmt.Errorf("ext4: exchange with missing %q: %w", newname, syscall.ENOENT)
		}
		return w.exchange(od, oldname, src, nd, newname, dst)
	}
	if dst != nil && flags&fsdrivers.RenameNoReplace != 0 {
		return fmt.Errorf("ext4: rename onto existing %q: %w", newname, syscall.EEXIST)
	}
	if dst != nil && dst.num == src.num {
		return nil // two names of one inode: nothing to do, as rename(2)
	}
	if src.isDir() && od.num != nd.num {
		if in, err := w.isAncestor(src.num, nd); err != nil {
			return err
		} else if in {
			return fmt.Errorf("ext4: rename directory %q into itself: %w", oldname, syscall.EINVAL)
		}
	}
	if dst != nil {
		switch {
		case src.isDir() && !dst.isDir():
			return fmt.Errorf("ext4: rename directory over %q: %w", newname, syscall.ENOTDIR)
		case !src.isDir() && dst.isDir():
			return fmt.Errorf("ext4: rename over directory %q: %w", newname, syscall.EISDIR)
		case dst.isDir():
			if empty, err := w.emptyDir(dst); err != nil {
				return err
			} else if !empty {
				return fmt.Errorf("ext4: rename over %q: %w", newname, syscall.ENOTEMPTY)
			}
		}
		if err := w.setEntry(nd, []byte(newname), src.num, w.ftypeFor(src.mode())); err != nil {
			return err
		}
		if dst.isDir() {
			w.decLinks(nd) // its ".." is gone
		}
		if err := w.dropLink(dst); err != nil {
			return err
		}
	} else {
		if src.isDir() && nd.num != od.num && nd.links() >= ext4LinkMax && w.v.sb.roCompat&roCompatDirNlink == 0 {
			return fmt.Errorf("ext4: directory inode %d has too many links: %w", nd.num, syscall.EMLINK)
		}
		if err := w.addEntry(nd, []byte(newname), src.num, w.ftypeFor(src.mode())); err != nil {
			return err
		}
	}
	if od.num == nd.num {
		od = nd // one directory: keep one copy of its inode
	} else if err := w.store(nd); err != nil {
		return err
	}
	// Removing after adding: od may have been restructured by the add when
	// it is the same directory, so look the old name up again.
	if _, err := w.removeEntry(od, []byte(oldname)); err != nil {
		return err
	}
	if src.isDir() && od.num != nd.num {
		if err := w.setDotDot(src, nd.num); err != nil {
			return err
		}
		w.decLinks(od)
		if nd, err = w.loadInode(nd.num); err != nil {
			return err
		}
		w.incLinks(nd)
		w.touch(nd, true)
		if err := w.store(nd); err != nil {
			return err
		}
	}
	w.touch(od, true)
	if od.num == nd.num {
		w.touch(od, true)
	}
	if err := w.store(od); err != nil {
		return err
	}
	if od.num != nd.num {
		if nd, err = w.loadInode(nd.num); err != nil {
			return err
		}
		w.touch(nd, true)
		if err := w.store(nd); err != nil {
			return err
		}
	}
	w.touch(src, false)
	return w.store(src)
}

// exchange swaps two entries (RENAME_EXCHANGE).
func (w *wfs) exchange(od *winode, oldname string, src *winode, nd *winode, newname string, dst *winode) error {
	if src.num == dst.num {
		return nil
	}
	if od.num != nd.num {
		for _, c := range []struct {
			moving *winode
			into   *winode
		}{{src, nd}, {dst, od}} {
			if c.moving.isDir() {
				if in, err := w.isAncestor(c.moving.num, c.into); err != nil {
					return err
				} else if in {
					return fmt.Errorf("ext4: exchange a directory into itself: %w", syscall.EINVAL)
				}
			}
		}
	}
	if err := w.setEntry(od, []byte(oldname), dst.num, w.ftypeFor(dst.mode())); err != nil {
		return err
	}
	if err := w.setEntry(nd, []byte(newname), src.num, w.ftypeFor(src.mode())); err != nil {
		return err
	}
	if od.num != nd.num {
		if src.isDir() {
			if err := w.setDotDot(src, nd.num); err != nil {
				return err
			}
			w.incLinks(nd)
			w.decLinks(od)
		}
		if dst.isDir() {
			if err := w.setDotDot(dst, od.num); err != nil {
				return err
			}
			w.incLinks(od)
			w.decLinks(nd)
		}
		w.touch(nd, true)
		if err := w.store(nd); err != nil {
			return err
		}
	}
	w.touch(od, true)
	if err := w.store(od); err != nil {
		return err
	}
	w.touch(src, false)
	w.touch(dst, false)
	if err := w.store(src); err != nil {
		return err
	}
	return w.store(dst)
}

// Setattr changes mode, owner, size and times.
func (w *wfs) Setattr(ino uint64, set fsdrivers.SetAttr) (attr fsdrivers.Attr, err error) {
	if err := w.lock(); err != nil {
		return fsdrivers.Attr{}, err
	}
	defer func() { err = w.done(err) }()
	i, err := w.liveInode(ino)
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	if set.Size != nil {
		switch {
		case i.isDir():
			return fsdrivers.Attr{}, fmt.Errorf("ext4: truncate directory inode %d: %w", ino, syscall.EISDIR)
		case !i.isReg():
			return fsdrivers.Attr{}, fmt.Errorf("ext4: truncate inode %d: not a regular file: %w", ino, syscall.EINVAL)
		case *set.Size < 0:
			return fsdrivers.Attr{}, fmt.Errorf("ext4: truncate inode %d to %d: %w", ino, *set.Size, syscall.EINVAL)
		}
		if uint64(*set.Size) != i.size() {
			truncate := w.truncate
			if isInline(i) {
				truncate = w.truncateInline // inlinew.go
			}
			if err := truncate(i, uint64(*set.Size)); err != nil {
				return fsdrivers.Attr{}, err
			}
			i.setTime(inMtime, inMtimeX, w.now())
		}
	}
	if set.Mode != nil {
		i.setMode(i.mode()&sIFMT | uint16(*set.Mode&fsdrivers.ModePerm))
	}
	if set.Uid != nil || set.Gid != nil {
		uid, gid := i.uid(), i.gid()
		if set.Uid != nil {
			uid = *set.Uid
		}
		if set.Gid != nil {
			gid = *set.Gid
		}
		i.setOwner(uid, gid)
	}
	if set.Atime != nil {
		i.setTime(inAtime, inAtimeX, *set.Atime)
	}
	if set.Mtime != nil {
		i.setTime(inMtime, inMtimeX, *set.Mtime)
	}
	ctime := w.now()
	if set.Ctime != nil {
		ctime = *set.Ctime
	}
	i.setTime(inCtime, inCtimeX, ctime)
	if err := w.store(i); err != nil {
		return fsdrivers.Attr{}, err
	}
	return w.attr(i)
}

// Fallocate preallocates or punches a hole in a regular file.
func (w *wfs) Fallocate(ino uint64, off, length int64, flags fsdrivers.FallocFlags) (err error) {
	if err := w.lock(); err != nil {
		return err
	}
	defer func() { err = w.done(err) }()
	i, err := w.liveInode(ino)
	if err != nil {
		return err
	}
	if !i.isReg() {
		return fmt.Errorf("ext4: fallocate inode %d: not a regular file: %w", ino, syscall.ENODEV)
	}
	if isInline(i) {
		if err := w.uninlineFile(i); err != nil { // inlinew.go
			return err
		}
	}
	if err := w.fallocate(i, off, length, flags); err != nil {
		if serr := w.store(i); serr != nil {
			return errors.Join(err, serr)
		}
		return err
	}
	return w.store(i)
}

// Orphans: the classic list threaded through i_dtime from s_last_orphan,
// which both the kernel and e2fsck process (also with orphan_file).

func (w *wfs) orphanAdd(i *winode) error {
	le.PutUint32(i.raw[inDtime:], le.Uint32(w.sbRaw[sbLastOrphan:]))
	le.PutUint32(w.sbRaw[sbLastOrphan:], i.num)
	return w.store(i)
}

func (w *wfs) orphanRemove(n uint32) error {
	cur := le.Uint32(w.sbRaw[sbLastOrphan:])
	if cur == n {
		i, err := w.loadInode(n)
		if err != nil {
			return err
		}
		le.PutUint32(w.sbRaw[sbLastOrphan:], le.Uint32(i.raw[inDtime:]))
		return nil
	}
	for range w.v.sb.inodesCount {
		if cur == 0 {
			return fmt.Errorf("ext4: inode %d not on the orphan list: %w", n, syscall.ENOENT)
		}
		p, err := w.loadInode(cur)
		if err != nil {
			return err
		}
		next := le.Uint32(p.raw[inDtime:])
		if next == n {
			i, err := w.loadInode(n)
			if err != nil {
				return err
			}
			le.PutUint32(p.raw[inDtime:], le.Uint32(i.raw[inDtime:]))
			return w.store(p)
		}
		cur = next
	}
	return corruptf("orphan list loops")
}

// processOrphans does what the kernel does at mount with leftover orphans
// (the classic list, and the orphan file when RO_COMPAT_ORPHAN_PRESENT
// says it may hold entries): free unlinked inodes, cut the others back to
// their size.
func (w *wfs) processOrphans() error {
	done := false
	cur := le.Uint32(w.sbRaw[sbLastOrphan:])
	for k := uint32(0); cur != 0; k++ {
		if k >= w.v.sb.inodesCount || cur > w.v.sb.inodesCount {
			return refuse("damage found: orphan list broken at inode %d", cur)
		}
		i, err := w.loadInode(cur)
		if err != nil {
			return refuse("damage found: orphan inode %d: %v", cur, err)
		}
		next := le.Uint32(i.raw[inDtime:])
		if err := w.processOrphan(i); err != nil {
			return err
		}
		cur = next
		done = true
	}
	le.PutUint32(w.sbRaw[sbLastOrphan:], 0)
	if w.v.sb.roCompat&roCompatOrphanPresent != 0 {
		if err := w.processOrphanFile(); err != nil {
			return err
		}
		w.v.sb.roCompat &^= roCompatOrphanPresent
		le.PutUint32(w.sbRaw[sbRoCompat:], w.v.sb.roCompat)
		done = true
	}
	if !done {
		return nil
	}
	return w.flush()
}

func (w *wfs) processOrphan(i *winode) error {
	var err error
	if i.links() == 0 {
		err = w.freeInodeAndData(i)
	} else {
		le.PutUint32(i.raw[inDtime:], 0)
		if i.isReg() {
			err = w.truncate(i, i.size())
		}
		if err == nil {
			err = w.store(i)
		}
	}
	if err != nil {
		return fmt.Errorf("ext4: processing orphan inode %d: %w", i.num, err)
	}
	return nil
}

// Orphan file blocks: __le32 inode numbers, then a tail of the magic and a
// crc32c of the block number and the entries, seeded with the orphan
// file's inode seed.
const (
	sbRoCompat       = 0x64
	sbOrphanFileInum = 0x280
	orphanBlockMagic = 0x0b10ca04
	orphanTailLen    = 8
)

func (w *wfs) processOrphanFile() error {
	n := le.Uint32(w.sbRaw[sbOrphanFileInum:])
	of, err := w.loadInode(n)
	if err != nil || n == 0 || !of.isReg() {
		return refuse("damage found: orphan file inode %d: %v", n, err)
	}
	bs := w.v.blockSize
	per := int(bs-orphanTailLen) / 4
	seed := w.inodeSeed(of)
	for l := uint64(0); l < of.size()>>w.v.blockBits; l++ {
		r, err := w.v.mapBlock(w.quick(of), l)
		if err != nil {
			return refuse("damage found: orphan file block %d: %v", l, err)
		}
		if r.kind != runData {
			continue
		}
		phys := r.phys + (l - r.lblk)
		b, err := w.block(phys)
		if err != nil {
			return err
		}
		if le.Uint32(b[bs-orphanTailLen:]) != orphanBlockMagic {
			return refuse("damage found: orphan file block %d without its magic", l)
		}
		changed := false
		for k := range per {
			ino := le.Uint32(b[4*k:])
			if ino == 0 {
				continue
			}
			if ino > w.v.sb.inodesCount {
				return refuse("damage found: orphan file names inode %d", ino)
			}
			i, err := w.loadInode(ino)
			if err != nil {
				return refuse("damage found: orphan inode %d: %v", ino, err)
			}
			if err := w.processOrphan(i); err != nil {
				return err
			}
			if b, err = w.mut(phys); err != nil {
				return err
			}
			le.PutUint32(b[4*k:], 0)
			changed = true
		}
		if changed && w.v.metaCsum {
			var nr [8]byte
			le.PutUint64(nr[:], phys)
			c := crc32c(seed, nr[:])
			c = crc32c(c, b[:4*per])
			le.PutUint32(b[bs-4:], c)
		}
	}
	return nil
}

// now is replaceable in tests; the zero time is never stored.
var _ = time.Now

// ensure fs.ErrNotExist matches ENOENT errors as the seam promises.
var _ = fs.ErrNotExist
