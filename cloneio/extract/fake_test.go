package extract

import (
	"io/fs"
	"sort"
	"testing/fstest"
	"time"

	"github.com/dimg-project/dimg/fsdrivers"
)

// fakeFS is an fsdrivers.Filesystem over fstest.MapFS, with extended
// attributes and injectable directory entries (names a real io/fs could
// not hold: "..", "a/b", NUL) to play a hostile image.
type fakeFS struct {
	fstest.MapFS
	xattrs map[string]map[string][]byte
	// extra entries appended to ReadDir(dir); their Lstat goes to the
	// MapFS under the (invalid) joined path, or to lstat below.
	extra map[string][]fs.DirEntry
	lstat map[string]fs.FileInfo
}

var (
	_ fsdrivers.Filesystem = (*fakeFS)(nil)
	_ fs.ReadLinkFS        = (*fakeFS)(nil)
	_ fsdrivers.XattrFS    = (*fakeFS)(nil)
)

func (f *fakeFS) Type() string  { return "fake" }
func (f *fakeFS) UUID() string  { return "" }
func (f *fakeFS) Label() string { return "" }

func (f *fakeFS) ReadDir(name string) ([]fs.DirEntry, error) {
	ents, err := f.MapFS.ReadDir(name)
	if err != nil {
		return nil, err
	}
	ents = append(ents, f.extra[name]...)
	return ents, nil
}

func (f *fakeFS) Lstat(name string) (fs.FileInfo, error) {
	if fi, ok := f.lstat[name]; ok {
		return fi, nil
	}
	return f.MapFS.Lstat(name)
}

func (f *fakeFS) Xattrs(name string) (map[string][]byte, error) {
	return f.xattrs[name], nil
}

// fakeEntry is a directory entry with any name.
type fakeEntry struct {
	name string
	mode fs.FileMode
}

func (e fakeEntry) Name() string               { return e.name }
func (e fakeEntry) IsDir() bool                { return e.mode.IsDir() }
func (e fakeEntry) Type() fs.FileMode          { return e.mode.Type() }
func (e fakeEntry) Info() (fs.FileInfo, error) { return fakeInfo{e.name, e.mode, nil}, nil }

type fakeInfo struct {
	name string
	mode fs.FileMode
	sys  *fsdrivers.Stat
}

func (i fakeInfo) Name() string       { return i.name }
func (i fakeInfo) Size() int64        { return 0 }
func (i fakeInfo) Mode() fs.FileMode  { return i.mode }
func (i fakeInfo) ModTime() time.Time { return time.Unix(0, 0) }
func (i fakeInfo) IsDir() bool        { return i.mode.IsDir() }
func (i fakeInfo) Sys() any           { return i.sys }

var t0 = time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC)

// stat is a shorthand for the Sys of a MapFile.
func stat(ino uint64, nlink uint32, uid, gid uint32) *fsdrivers.Stat {
	return &fsdrivers.Stat{Ino: ino, Nlink: nlink, Uid: uid, Gid: gid,
		Mtime: t0, Atime: t0.Add(time.Hour), Ctime: t0}
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	k := make([]string, 0, len(m))
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}
