package fat

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dimg-project/dimg/fsdrivers"
)

// errNotDir / errIsDir are the io/fs-style reasons for using a file as a
// directory and the other way round.
var (
	errNotDir = errors.New("fat: not a directory")
	errIsDir  = errors.New("fat: is a directory")
)

// lookup resolves an io/fs path, case-insensitively, to its entry.
func (v *Volume) lookup(op, name string) (*dirent, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	cur := v.root
	if name == "." {
		return cur, nil
	}
	// The first clusters of the directories on the way: a directory that
	// contains one of its ancestors would make the tree infinitely deep.
	var ancestors []uint32
	for comp := range strings.SplitSeq(name, "/") {
		if !cur.isDir() {
			return nil, &fs.PathError{Op: op, Path: name, Err: fmt.Errorf("%w: %w", errNotDir, fs.ErrNotExist)}
		}
		ancestors = append(ancestors, cur.first)
		l, err := v.dirList(cur)
		if err != nil {
			return nil, &fs.PathError{Op: op, Path: name, Err: err}
		}
		e := l.find(comp)
		if e == nil {
			return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
		}
		// Cluster 0 (no clusters) is reported by dirList when it is read.
		if e.isDir() && e.first != 0 && slices.Contains(ancestors, e.first) {
			return nil, &fs.PathError{Op: op, Path: name, Err: fmt.Errorf("fat: directory %q at cluster %d is its own ancestor: %w", comp, e.first, fsdrivers.ErrCorrupt)}
		}
		cur = e
	}
	return cur, nil
}

// Open opens the named file or directory. Files implement fsdrivers.File
// and io.Seeker; directories implement fs.ReadDirFile.
func (v *Volume) Open(name string) (fs.File, error) {
	d, err := v.lookup("open", name)
	if err != nil {
		return nil, err
	}
	info, err := v.info(d)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	if d.isDir() {
		l, err := v.dirList(d)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		return &dirFile{v: v, path: name, info: info, entries: l.entries}, nil
	}
	cs := v.g.clusterSize
	need := (int64(d.size) + cs - 1) / cs
	ch, err := v.fat.walk(d.first, need, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	if ch.total < need {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf(
			"fat: size %d needs %d clusters, chain from %d has %d: %w", d.size, need, d.first, ch.total, fsdrivers.ErrCorrupt)}
	}
	return &file{v: v, path: name, info: info, ch: ch}, nil
}

// Stat describes the named file.
func (v *Volume) Stat(name string) (fs.FileInfo, error) { return v.stat("stat", name) }

// Lstat is Stat: FAT has no symbolic links (so Volume implements neither
// fs.ReadLinkFS nor fsdrivers.XattrFS).
func (v *Volume) Lstat(name string) (fs.FileInfo, error) { return v.stat("lstat", name) }

func (v *Volume) stat(op, name string) (fs.FileInfo, error) {
	d, err := v.lookup(op, name)
	if err != nil {
		return nil, err
	}
	info, err := v.info(d)
	if err != nil {
		return nil, &fs.PathError{Op: op, Path: name, Err: err}
	}
	return info, nil
}

// ReadDir lists the named directory sorted by name, without "." and "..".
func (v *Volume) ReadDir(name string) ([]fs.DirEntry, error) {
	d, err := v.lookup("readdir", name)
	if err != nil {
		return nil, err
	}
	if !d.isDir() {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: errNotDir}
	}
	l, err := v.dirList(d)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
	}
	out := make([]fs.DirEntry, len(l.entries))
	for i, e := range l.entries {
		out[i] = &dirEntry{v: v, d: e}
	}
	slices.SortFunc(out, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return out, nil
}

// info builds the FileInfo of d. A directory's size is the bytes of its
// clusters (as Linux reports it), which needs a walk of its chain in the
// cached FAT; a chain that loops makes Stat of that directory fail.
func (v *Volume) info(d *dirent) (*fileInfo, error) {
	fi := &fileInfo{v: v, d: d, name: d.name, size: int64(d.size)}
	if d == v.root {
		fi.name = "."
	}
	if d.isDir() {
		switch {
		case d == v.root && v.g.bits != 32:
			fi.size = v.g.rootBytes
		default:
			maxClusters := max(maxDirBytes/v.g.clusterSize, 1)
			ch, err := v.fat.walk(d.first, 0, maxClusters)
			if err != nil {
				return nil, err
			}
			fi.size = ch.total * v.g.clusterSize
		}
	}
	return fi, nil
}

// fileInfo implements fs.FileInfo; Sys returns *fsdrivers.Stat.
type fileInfo struct {
	v    *Volume
	d    *dirent
	name string
	size int64
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return fi.size }
func (fi *fileInfo) ModTime() time.Time { return fi.d.mtime }
func (fi *fileInfo) IsDir() bool        { return fi.d.isDir() }

func (fi *fileInfo) Mode() fs.FileMode {
	switch {
	case fi.d.isDir():
		return fs.ModeDir | 0o755
	case fi.d.attr&attrReadOnly != 0:
		return 0o444
	default:
		return 0o644
	}
}

// Sys returns *fsdrivers.Stat. Ino is the byte offset of the short entry
// (1 for the root), stable for the life of the file; FAT has no ctime, so
// Ctime is the write time, as Linux reports it.
func (fi *fileInfo) Sys() any {
	ino := uint64(fi.d.off)
	if fi.d == fi.v.root {
		ino = 1
	}
	cs := fi.v.g.clusterSize
	return &fsdrivers.Stat{
		Ino:    ino,
		Nlink:  1,
		Atime:  fi.d.atime,
		Ctime:  fi.d.mtime,
		Mtime:  fi.d.mtime,
		Btime:  fi.d.btime,
		Blocks: (fi.size + cs - 1) / cs * cs / 512,
	}
}

// dirEntry implements fs.DirEntry.
type dirEntry struct {
	v *Volume
	d *dirent
}

func (e *dirEntry) Name() string { return e.d.name }
func (e *dirEntry) IsDir() bool  { return e.d.isDir() }
func (e *dirEntry) Type() fs.FileMode {
	if e.d.isDir() {
		return fs.ModeDir
	}
	return 0
}

func (e *dirEntry) Info() (fs.FileInfo, error) {
	fi, err := e.v.info(e.d)
	if err != nil {
		return nil, &fs.PathError{Op: "stat", Path: e.d.name, Err: err}
	}
	return fi, nil
}

// file is an open regular file. Its cluster chain is resolved at Open, so a
// ReadAt costs one ReadAt per run it touches. ReadAt is safe for concurrent
// use; Read and Seek share a position under mu.
type file struct {
	v      *Volume
	path   string
	info   *fileInfo
	ch     *chain
	closed atomic.Bool

	mu  sync.Mutex // guards pos
	pos int64
}

var (
	_ fsdrivers.File = (*file)(nil)
	_ io.Seeker      = (*file)(nil)
)

func (f *file) Stat() (fs.FileInfo, error) { return f.info, nil }

func (f *file) Close() error {
	if f.closed.Swap(true) {
		return &fs.PathError{Op: "close", Path: f.path, Err: fs.ErrClosed}
	}
	return nil
}

func (f *file) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.readAt("read", p, f.pos)
	f.pos += int64(n)
	return n, err
}

func (f *file) Seek(offset int64, whence int) (int64, error) {
	if f.closed.Load() {
		return 0, &fs.PathError{Op: "seek", Path: f.path, Err: fs.ErrClosed}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.pos
	case io.SeekEnd:
		offset += f.info.size
	default:
		return 0, &fs.PathError{Op: "seek", Path: f.path, Err: fs.ErrInvalid}
	}
	if offset < 0 {
		return 0, &fs.PathError{Op: "seek", Path: f.path, Err: fs.ErrInvalid}
	}
	f.pos = offset
	return offset, nil
}

func (f *file) ReadAt(p []byte, off int64) (int, error) { return f.readAt("readat", p, off) }

func (f *file) readAt(op string, p []byte, off int64) (int, error) {
	if f.closed.Load() {
		return 0, &fs.PathError{Op: op, Path: f.path, Err: fs.ErrClosed}
	}
	if off < 0 {
		return 0, &fs.PathError{Op: op, Path: f.path, Err: fs.ErrInvalid}
	}
	size := f.info.size
	if off >= size {
		return 0, io.EOF
	}
	want := p
	if int64(len(want)) > size-off {
		want = want[:size-off]
	}
	g := f.v.g
	n := 0
	for n < len(want) {
		pos := off + int64(n)
		k := pos / g.clusterSize // cluster index in the file
		i := f.ch.find(k)
		r := f.ch.runs[i]
		runStart := f.ch.before[i] * g.clusterSize // file offset of the run
		inRun := pos - runStart
		chunk := min(int64(len(want)-n), int64(r.n)*g.clusterSize-inRun)
		disk := g.clusterOffset(r.first) + inRun
		if err := readFull(f.v.r, want[n:n+int(chunk)], disk); err != nil {
			return n, &fs.PathError{Op: op, Path: f.path, Err: fmt.Errorf("fat: read at %d: %w", disk, err)}
		}
		n += int(chunk)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// dirFile is an open directory.
type dirFile struct {
	v       *Volume
	path    string
	info    *fileInfo
	entries []*dirent
	closed  atomic.Bool

	mu  sync.Mutex // guards pos
	pos int
}

var _ fs.ReadDirFile = (*dirFile)(nil)

func (d *dirFile) Stat() (fs.FileInfo, error) { return d.info, nil }

func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.path, Err: errIsDir}
}

func (d *dirFile) Close() error {
	if d.closed.Swap(true) {
		return &fs.PathError{Op: "close", Path: d.path, Err: fs.ErrClosed}
	}
	return nil
}

// ReadDir returns the next n entries in directory order (all remaining
// when n ≤ 0), as fs.ReadDirFile specifies.
func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	if d.closed.Load() {
		return nil, &fs.PathError{Op: "readdir", Path: d.path, Err: fs.ErrClosed}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	rest := d.entries[d.pos:]
	if n > 0 {
		if len(rest) == 0 {
			return nil, io.EOF
		}
		rest = rest[:min(n, len(rest))]
	}
	out := make([]fs.DirEntry, len(rest))
	for i, e := range rest {
		out[i] = &dirEntry{v: d.v, d: e}
	}
	d.pos += len(rest)
	return out, nil
}
