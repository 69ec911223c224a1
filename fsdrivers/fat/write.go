package fat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/dimg-project/dimg/fsdrivers"
)

var _ fsdrivers.WritableDriver = Driver{}

// OpenWritable opens the FAT volume in dev (size bytes) for writing. It
// refuses, wrapping fsdrivers.ErrReadOnly, a volume whose FAT copies
// disagree, whose FAT holds values that are neither cluster numbers nor
// marks, whose root directory cannot be read, or whose FAT32 mirroring is
// disabled (only one FAT live). Nothing is written before the first change.
func (Driver) OpenWritable(dev fsdrivers.ReadWriterAt, size int64) (fsdrivers.WritableFS, error) {
	return OpenWritable(dev, size)
}

// wfs is a FAT volume open for writing; see doc.go for the model.
type wfs struct {
	mu        sync.Mutex
	dev       fsdrivers.ReadWriterAt
	g         *geometry
	fat       *fatCache
	root      *node
	nodes     map[uint64]*node
	nextIno   uint64
	dirtyDirs map[*node]bool
	orphans   map[*node]bool // unlinked while held: clusters kept, hidden on disk
	rootLabel []byte
	fsInfo    int64 // FSInfo sector offset, 0 when absent or invalid
	// fsInfoVals are FSI_Free_Count and FSI_Nxt_Free as on disk, so Sync
	// writes them only when they change.
	fsInfoVals [8]byte
	closed     bool
	now        func() time.Time
}

// OpenWritable is Driver.OpenWritable returning the concrete type's
// interface.
func OpenWritable(dev fsdrivers.ReadWriterAt, size int64) (fsdrivers.WritableFS, error) {
	g, err := readBootSector(dev, size)
	if err != nil {
		if errors.Is(err, fsdrivers.ErrNotFound) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", fsdrivers.ErrReadOnly, err)
	}
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("fat: cannot write this volume: "+format+": %w", append(args, fsdrivers.ErrReadOnly)...)
	}
	if g.bits == 32 && g.activeFAT != 0 || g.bits == 32 && fatMirroringOff(dev) {
		return nil, refuse("FAT mirroring is disabled (only FAT %d is live)", g.activeFAT)
	}
	w := &wfs{
		dev:       dev,
		g:         g,
		fat:       newFATCache(dev, g),
		nodes:     map[uint64]*node{},
		nextIno:   newInoBase,
		dirtyDirs: map[*node]bool{},
		orphans:   map[*node]bool{},
		now:       time.Now,
	}
	if why := dirtyMark(dev, g); why != "" {
		return nil, refuse("%s: check it with fsck.fat first", why)
	}
	if err := w.fat.scan(); err != nil {
		return nil, refuse("%w", err)
	}
	if g.bits == 32 && g.fsInfoSector > 0 && g.fsInfoSector != 0xFFFF && int64(g.fsInfoSector)*g.sectorSize < g.fatOffset {
		off := int64(g.fsInfoSector) * g.sectorSize
		s := make([]byte, 512)
		le := binary.LittleEndian
		if readFull(dev, s, off) == nil && le.Uint32(s[0:]) == 0x41615252 && le.Uint32(s[484:]) == 0x61417272 && le.Uint32(s[508:]) == 0xAA550000 {
			w.fsInfo = off
			copy(w.fsInfoVals[:], s[488:496])
			if nxt := le.Uint32(s[492:]); nxt >= 2 && nxt <= g.maxCluster() {
				w.fat.hint = nxt
			}
		}
	}
	w.root = &node{ino: 1, name: "/"}
	w.root.ent[11] = attrDirectory
	w.setFirst(w.root, g.rootCluster)
	w.nodes[1] = w.root
	if _, err := w.loadDir(w.root); err != nil {
		return nil, refuse("root directory: %w", err)
	}
	return w, nil
}

// dirtyMark says why the volume is marked as not cleanly unmounted, ""
// when it is not: the boot sector's state byte (bit 0, set by Linux while
// mounted), or FAT16/32 entry 1's clean-shutdown and no-hard-error bits
// (cleared by Windows while mounted, and on I/O errors). fsck.fat -n
// reports such a volume; it is refused rather than written, as its FAT
// may be mid-change.
func dirtyMark(dev fsdrivers.ReadWriterAt, g *geometry) string {
	state := int64(37)
	if g.bits == 32 {
		state = 65
	}
	b := make([]byte, 4)
	if readFull(dev, b[:1], state) != nil || b[0]&0x01 != 0 {
		return "the boot sector's dirty bit is set (not cleanly unmounted)"
	}
	if g.bits == 12 {
		return ""
	}
	if readFull(dev, b, g.fatOffset+int64(g.activeFAT)*g.fatBytes+entryByte(g.bits, 1)) != nil {
		return "FAT entry 1 cannot be read"
	}
	e1 := decodeEntry(b, 0, 1, g.bits)
	clean, noErr := uint32(0x8000), uint32(0x4000)
	if g.bits == 32 {
		clean, noErr = 0x08000000, 0x04000000
	}
	switch {
	case e1&clean == 0:
		return "FAT entry 1 marks the volume dirty (not cleanly unmounted)"
	case e1&noErr == 0:
		return "FAT entry 1 records disk errors"
	}
	return ""
}

// fatMirroringOff reads BPB_ExtFlags bit 7 of a FAT32 boot sector.
func fatMirroringOff(dev fsdrivers.ReadWriterAt) bool {
	b := make([]byte, 2)
	if readFull(dev, b, 40) != nil {
		return true
	}
	return binary.LittleEndian.Uint16(b)&0x80 != 0
}

func (w *wfs) Type() string { return w.g.typeName() }
func (w *wfs) UUID() string { return w.g.uuid() }

// Label is the root directory's volume-label entry, else the boot sector's;
// the writer never changes either.
func (w *wfs) Label() string {
	if w.rootLabel != nil {
		return labelString(w.rootLabel)
	}
	return labelString(w.g.bootLabel)
}

func (w *wfs) Root() uint64 { return 1 }

// errno wraps an errno with a message naming what failed.
func errno(e syscall.Errno, format string, args ...any) error {
	return fmt.Errorf("fat: "+format+": %w", append(args, e)...)
}

// asErrno makes sure err wraps a syscall.Errno (EIO for anything else:
// damage found or the device failing).
func asErrno(err error) error {
	if err == nil {
		return nil
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return err
	}
	return fmt.Errorf("%w: %w", err, syscall.EIO)
}

// lock takes the mutex and fails when the filesystem was closed.
func (w *wfs) lock() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return errno(syscall.EBADF, "filesystem closed")
	}
	return nil
}

// locked takes the lock and finds node ino with find (w.get, w.file or
// w.getDir): the opening every operation on one node shares. On success
// the caller holds w.mu and must unlock it; on failure it is released.
func (w *wfs) locked(find func(uint64) (*node, error), ino uint64) (*node, error) {
	if err := w.lock(); err != nil {
		return nil, err
	}
	n, err := find(ino)
	if err != nil {
		w.mu.Unlock()
		return nil, err
	}
	return n, nil
}

// get returns the live node ino.
func (w *wfs) get(ino uint64) (*node, error) {
	n := w.nodes[ino]
	if n == nil {
		return nil, errno(syscall.ENOENT, "no node %d", ino)
	}
	return n, nil
}

// getDir returns the live directory ino, loaded.
func (w *wfs) getDir(ino uint64) (*node, error) {
	n, err := w.get(ino)
	if err != nil {
		return nil, err
	}
	if !n.isDir() {
		return nil, errno(syscall.ENOTDIR, "node %d (%q) is not a directory", ino, n.name)
	}
	if n.gone {
		return nil, errno(syscall.ENOENT, "directory %d (%q) was removed", ino, n.name)
	}
	if _, err := w.loadDir(n); err != nil {
		return nil, asErrno(err)
	}
	return n, nil
}

// chain returns n's clusters, loading them. A file's chain must cover its
// size.
func (w *wfs) chain(n *node) (*extents, error) {
	if n.ch != nil {
		return n.ch, nil
	}
	limit := int64(w.g.clusterCount)
	if n.isDir() {
		limit = max(maxDirBytes/w.g.clusterSize, 1)
	}
	ch, err := w.walk(w.first(n), limit)
	if err != nil {
		return nil, fmt.Errorf("fat: %q: %w: %w", n.name, err, syscall.EIO)
	}
	if !n.isDir() && ch.n*w.g.clusterSize < n.size() {
		return nil, errno(syscall.EIO, "%q: size %d but %d clusters (%v)", n.name, n.size(), ch.n, fsdrivers.ErrCorrupt)
	}
	n.ch = ch
	return ch, nil
}

// attr is what stat shows of n, as the read-only tree shows it: owner 0,
// mode 0644 (0444 read-only) or 0755 for directories, one link, the change
// time equal to the modification time (FAT has none).
func (w *wfs) attr(n *node) (fsdrivers.Attr, error) {
	a := fsdrivers.Attr{Ino: n.ino, Nlink: 1}
	le := binary.LittleEndian
	e := n.ent[:]
	if n != w.root {
		a.Mtime = fatTime(le.Uint16(e[24:]), le.Uint16(e[22:]), 0)
		a.Atime = fatTime(le.Uint16(e[18:]), 0, 0)
		a.Btime = fatTime(le.Uint16(e[16:]), le.Uint16(e[14:]), e[13])
		a.Ctime = a.Mtime
	}
	cs := w.g.clusterSize
	switch {
	case n.isDir():
		a.Mode = fsdrivers.ModeDir | 0o755
		if n == w.root && w.g.bits != 32 {
			a.Size = w.g.rootBytes
		} else if !n.gone {
			ch, err := w.chain(n)
			if err != nil {
				return a, err
			}
			a.Size = ch.n * cs
		}
		a.Blocks = (a.Size + cs - 1) / cs * cs / 512
	default:
		a.Mode = fsdrivers.ModeFile | 0o644
		if n.ent[11]&attrReadOnly != 0 {
			a.Mode = fsdrivers.ModeFile | 0o444
		}
		a.Size = n.size()
		ch, err := w.chain(n)
		if err != nil {
			return a, err
		}
		a.Blocks = ch.n * cs / 512
	}
	return a, nil
}

func (w *wfs) Getattr(ino uint64) (fsdrivers.Attr, error) {
	n, err := w.locked(w.get, ino)
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	defer w.mu.Unlock()
	return w.attr(n)
}

func (w *wfs) Lookup(dir uint64, name string) (fsdrivers.Attr, error) {
	d, err := w.locked(w.getDir, dir)
	if err != nil {
		return fsdrivers.Attr{}, err
	}
	defer w.mu.Unlock()
	n := d.dir.find(name)
	if n == nil || name == "." || name == ".." {
		return fsdrivers.Attr{}, errno(syscall.ENOENT, "%q not in directory %d (%q)", name, dir, d.name)
	}
	return w.attr(n)
}

func (w *wfs) ReadDir(dir uint64) ([]fsdrivers.DirEntry, error) {
	d, err := w.locked(w.getDir, dir)
	if err != nil {
		return nil, err
	}
	defer w.mu.Unlock()
	slots := make([]int, 0, len(d.dir.kids))
	for s := range d.dir.kids {
		slots = append(slots, s)
	}
	slices.Sort(slots)
	out := make([]fsdrivers.DirEntry, 0, len(slots))
	for _, s := range slots {
		k := d.dir.kids[s]
		mode := uint32(fsdrivers.ModeFile)
		if k.isDir() {
			mode = fsdrivers.ModeDir
		}
		out = append(out, fsdrivers.DirEntry{Name: k.name, Ino: k.ino, Mode: mode})
	}
	return out, nil
}

func (w *wfs) Readlink(ino uint64) (string, error) {
	return "", errno(syscall.EINVAL, "node %d: FAT has no symbolic links", ino)
}

func (w *wfs) ListXattr(ino uint64) ([]string, error) {
	if err := w.lock(); err != nil {
		return nil, err
	}
	defer w.mu.Unlock()
	_, err := w.get(ino)
	return nil, err
}

func (w *wfs) GetXattr(ino uint64, name string) ([]byte, error) {
	return nil, errno(syscall.ENODATA, "node %d: no attribute %q: FAT has no extended attributes", ino, name)
}

func (w *wfs) SetXattr(ino uint64, name string, value []byte, flags fsdrivers.XattrFlags) error {
	return errno(syscall.EOPNOTSUPP, "node %d: set %q: FAT has no extended attributes", ino, name)
}

func (w *wfs) RemoveXattr(ino uint64, name string) error {
	return errno(syscall.EOPNOTSUPP, "node %d: remove %q: FAT has no extended attributes", ino, name)
}

func (w *wfs) Statfs() (fsdrivers.Statfs, error) {
	if err := w.lock(); err != nil {
		return fsdrivers.Statfs{}, err
	}
	defer w.mu.Unlock()
	return fsdrivers.Statfs{
		BlockSize:   w.g.clusterSize,
		Blocks:      int64(w.g.clusterCount),
		BlocksFree:  w.fat.free,
		BlocksAvail: w.fat.free,
		NameMax:     maxNameUnits,
	}, nil
}

// Sync writes the changed directory blocks, the FAT pages (to every copy)
// and, on FAT32, the FSInfo free count and next-free hint. Clusters of
// unlinked files still held are written as free (FAT has no orphan list),
// and counted free in FSInfo, so the device is always fsck-clean.
func (w *wfs) Sync() error {
	if err := w.lock(); err != nil {
		return err
	}
	defer w.mu.Unlock()
	return w.sync()
}

func (w *wfs) sync() error {
	for dir := range w.dirtyDirs {
		d := dir.dir
		bs := w.blockSize(d)
		for b := range d.dirty {
			off := w.slotOffset(dir, int(int64(b)*bs/entrySize))
			if _, err := w.dev.WriteAt(d.raw[int64(b)*bs:int64(b+1)*bs], off); err != nil {
				return errno(syscall.EIO, "write directory %q at %d: %v", dir.name, off, err)
			}
			delete(d.dirty, b)
		}
		delete(w.dirtyDirs, dir)
	}
	var hidden []run
	var hiddenN int64
	for n := range w.orphans {
		if n.ch != nil {
			hidden = append(hidden, n.ch.runs...)
			hiddenN += n.ch.n
		}
	}
	// FSInfo is rewritten only with a change of the FAT: a Sync without
	// edits writes nothing, even on a volume whose count was wrong.
	changed := len(w.fat.dirty) > 0
	if err := w.fat.flush(hidden); err != nil {
		return asErrno(err)
	}
	if w.fsInfo != 0 && changed {
		b := w.fsInfoVals
		le := binary.LittleEndian
		le.PutUint32(b[:], uint32(w.fat.free+hiddenN))
		if w.fat.lastAlloc != 0 {
			le.PutUint32(b[4:], w.fat.lastAlloc)
		}
		if b != w.fsInfoVals {
			if _, err := w.dev.WriteAt(b[:], w.fsInfo+488); err != nil {
				return errno(syscall.EIO, "write FSInfo: %v", err)
			}
			w.fsInfoVals = b
		}
	}
	return nil
}

func (w *wfs) Close() error {
	if err := w.lock(); err != nil {
		return err
	}
	defer w.mu.Unlock()
	err := w.sync()
	w.closed = true
	return err
}

func (w *wfs) Hold(ino uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := w.nodes[ino]; n != nil {
		n.holds++
	}
}

// Release drops a hold; an unlinked file's clusters are freed at its last.
func (w *wfs) Release(ino uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := w.nodes[ino]
	if n == nil || n.holds == 0 {
		return
	}
	n.holds--
	if n.holds == 0 && n.gone {
		w.drop(n)
	}
}

// drop forgets an unlinked node and frees its clusters. A failure to read
// the FAT leaves the clusters allocated (fsck reports them lost; nothing
// is damaged).
func (w *wfs) drop(n *node) {
	delete(w.nodes, n.ino)
	delete(w.orphans, n)
	if ch, err := w.chain(n); err == nil {
		_ = w.fat.freeRuns(ch.runs)
		n.ch = &extents{}
	}
}
