package fusefs

import (
	"errors"
	"io"
	"io/fs"
	"sync/atomic"
	"testing/fstest"
	"time"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/fsdrivers/disk"
	"github.com/dimg-project/dimg/fsdrivers/parttable"
)

// fakeFS is an fsdrivers.Filesystem over fstest.MapFS with xattrs, extra
// (hostile) directory entries, paths that fail as damaged ones do, and a
// count of ReadDir calls to prove laziness.
type fakeFS struct {
	fstest.MapFS
	xattrs   map[string]map[string][]byte
	extra    map[string][]fs.DirEntry
	badMeta  map[string]error // path → error of Lstat and ReadDir
	badData  map[string]error // path → error of ReadAt
	readDirs atomic.Int64
}

var (
	_ fsdrivers.Filesystem = (*fakeFS)(nil)
	_ fsdrivers.XattrFS    = (*fakeFS)(nil)
)

func (f *fakeFS) Type() string  { return "fake" }
func (f *fakeFS) UUID() string  { return "" }
func (f *fakeFS) Label() string { return "FAKE" }

func (f *fakeFS) ReadDir(name string) ([]fs.DirEntry, error) {
	f.readDirs.Add(1)
	if err := f.badMeta[name]; err != nil {
		return nil, err
	}
	ents, err := f.MapFS.ReadDir(name)
	if err != nil {
		return nil, err
	}
	return append(ents, f.extra[name]...), nil
}

func (f *fakeFS) Lstat(name string) (fs.FileInfo, error) {
	if err := f.badMeta[name]; err != nil {
		return nil, err
	}
	return f.MapFS.Lstat(name)
}

func (f *fakeFS) Open(name string) (fs.File, error) {
	file, err := f.MapFS.Open(name)
	if err != nil {
		return nil, err
	}
	if err := f.badData[name]; err != nil {
		return damagedFile{file, err}, nil
	}
	return file, nil
}

func (f *fakeFS) Xattrs(name string) (map[string][]byte, error) {
	return f.xattrs[name], nil
}

// damagedFile fails every ReadAt, as a file over a corrupt chunk does.
type damagedFile struct {
	fs.File
	err error
}

func (d damagedFile) ReadAt(b []byte, off int64) (int, error) { return 0, d.err }

type fakeEntry struct {
	name string
	mode fs.FileMode
}

func (e fakeEntry) Name() string               { return e.name }
func (e fakeEntry) IsDir() bool                { return e.mode.IsDir() }
func (e fakeEntry) Type() fs.FileMode          { return e.mode.Type() }
func (e fakeEntry) Info() (fs.FileInfo, error) { return nil, errors.New("no info") }

var t0 = time.Date(2022, 1, 2, 3, 4, 5, 600000000, time.UTC)

func stat(ino uint64, nlink uint32, uid, gid uint32) *fsdrivers.Stat {
	return &fsdrivers.Stat{Ino: ino, Nlink: nlink, Uid: uid, Gid: gid,
		Mtime: t0, Atime: t0.Add(time.Minute), Ctime: t0.Add(time.Hour)}
}

// testParts are the partitions of testDisk: 1 holds fsys, 2 is an extended
// container (not shown), 3 has no filesystem (only p3.img is shown).
func testParts(ra io.ReaderAt, fsys *fakeFS) []disk.Part {
	part := func(n int, off, size int64) parttable.Partition {
		return parttable.Partition{Number: n, Start: off, Size: size}
	}
	ext := part(2, testPartOff+testPartSize, 4096)
	ext.Extended = true
	return []disk.Part{
		{Partition: part(1, testPartOff, testPartSize), Reader: io.NewSectionReader(ra, testPartOff, testPartSize), Volume: fsys},
		{Partition: ext, Reader: io.NewSectionReader(ra, testPartOff+testPartSize, 4096)},
		{Partition: part(3, testPartOff+testPartSize, 4096), Reader: io.NewSectionReader(ra, testPartOff+testPartSize, 4096)},
	}
}
