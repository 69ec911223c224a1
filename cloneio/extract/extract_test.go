package extract

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/fsdrivers"
)

func isRoot() bool { return os.Geteuid() == 0 }

// sampleFS is a tree with every kind of entry Extract preserves.
func sampleFS() *fakeFS {
	sparse := make([]byte, 3<<20)
	copy(sparse[1<<20:], "island")
	sparse[len(sparse)-1] = 'z'
	sparseStat := stat(30, 1, 0, 0)
	sparseStat.Blocks = 16
	devStat := stat(31, 1, 0, 0)
	devStat.Rdev = unix.Mkdev(1, 3)
	m := fstest.MapFS{
		".":              {Mode: fs.ModeDir | 0o755, ModTime: t0, Sys: stat(2, 6, 0, 0)},
		"etc":            {Mode: fs.ModeDir | 0o755, ModTime: t0, Sys: stat(10, 2, 0, 0)},
		"etc/hosts":      {Data: []byte("127.0.0.1 localhost\n"), Mode: 0o644, ModTime: t0, Sys: stat(11, 1, 0, 0)},
		"etc/shadow":     {Data: []byte("root:*:1:0::::\n"), Mode: 0o640, ModTime: t0, Sys: stat(12, 1, 0, 42)},
		"etc/hardlinked": {Data: []byte("same inode\n"), Mode: 0o600, ModTime: t0, Sys: stat(20, 2, 1000, 1000)},
		"bin/su":         {Data: []byte("\x7fELF"), Mode: 0o755 | fs.ModeSetuid, ModTime: t0, Sys: stat(13, 1, 0, 0)},
		"tmp":            {Mode: fs.ModeDir | 0o777 | fs.ModeSticky, ModTime: t0, Sys: stat(14, 2, 0, 0)},
		"home/u/a":       {Data: []byte("user file"), Mode: 0o644, ModTime: t0, Sys: stat(15, 1, 1000, 1000)},
		"home/u/hard":    {Data: []byte("same inode\n"), Mode: 0o600, ModTime: t0, Sys: stat(20, 2, 1000, 1000)},
		"home/u/link":    {Data: []byte("../../etc/hosts"), Mode: fs.ModeSymlink | 0o777, ModTime: t0, Sys: stat(16, 1, 1000, 1000)},
		"abs":            {Data: []byte("/etc/passwd"), Mode: fs.ModeSymlink | 0o777, ModTime: t0, Sys: stat(17, 1, 0, 0)},
		"sparse":         {Data: sparse, Mode: 0o644, ModTime: t0, Sys: sparseStat},
		"empty":          {Mode: 0o644, ModTime: t0, Sys: stat(18, 1, 0, 0)},
		"fifo":           {Mode: fs.ModeNamedPipe | 0o620, ModTime: t0, Sys: stat(19, 1, 0, 0)},
		"dev/null":       {Mode: fs.ModeDevice | fs.ModeCharDevice | 0o666, ModTime: t0, Sys: devStat},
		"ro":             {Mode: fs.ModeDir | 0o555, ModTime: t0, Sys: stat(21, 2, 0, 0)},
		"ro/inside":      {Data: []byte("x"), Mode: 0o444, ModTime: t0, Sys: stat(22, 1, 0, 0)},
	}
	return &fakeFS{MapFS: m, xattrs: map[string]map[string][]byte{
		"etc/hosts": {"user.comment": []byte("hello")},
		"etc":       {"user.dir": []byte("d")},
	}}
}

// checkTree compares every entry of the source tree under src with the host
// tree under dir: type, mode, size, content, link target, times, owner
// (as root) and hard links.
func checkTree(t *testing.T, fsys fsdrivers.Filesystem, src, dir string, skip ...string) {
	t.Helper()
	inoOf := map[uint64]uint64{} // source ino → host ino
	err := Walk(context.Background(), fsys, src, func(p string, fi fs.FileInfo, err error) error {
		if err != nil {
			t.Errorf("walk %s: %v", p, err)
			return nil
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p, src), "/")
		if src == "." {
			rel = p
		}
		host := filepath.Join(dir, rel)
		hfi, err := os.Lstat(host)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			return nil
		}

		if slices.Contains(skip, p) {
			return nil
		}
		hst := hfi.Sys().(*syscall.Stat_t)
		m := fi.Mode()
		if TypeName(m) != TypeName(hfi.Mode()) {
			t.Errorf("%s: type %v, want %v", p, hfi.Mode().Type(), m.Type())
			return nil
		}
		if m&fs.ModeSymlink == 0 && hfi.Mode() != m {
			t.Errorf("%s: mode %v, want %v", p, hfi.Mode(), m)
		}
		st := fsdrivers.StatOf(fi)
		if st != nil {
			if isRoot() && (hst.Uid != st.Uid || hst.Gid != st.Gid) {
				t.Errorf("%s: owner %d:%d, want %d:%d", p, hst.Uid, hst.Gid, st.Uid, st.Gid)
			}
			if !hfi.ModTime().Equal(st.Mtime) {
				t.Errorf("%s: mtime %v, want %v", p, hfi.ModTime(), st.Mtime)
			}
			if at := time.Unix(hst.Atim.Sec, hst.Atim.Nsec); !at.Equal(st.Atime) {
				t.Errorf("%s: atime %v, want %v", p, at, st.Atime)
			}
			if st.Nlink > 1 && !m.IsDir() {
				if h, ok := inoOf[st.Ino]; ok && h != hst.Ino {
					t.Errorf("%s: not hard-linked to its other name", p)
				}
				inoOf[st.Ino] = hst.Ino
			}
			if m&fs.ModeDevice != 0 && uint64(hst.Rdev) != st.Rdev {
				t.Errorf("%s: rdev %x, want %x", p, hst.Rdev, st.Rdev)
			}
			if m.IsRegular() && st.Blocks > 0 && st.Blocks*512 < fi.Size() && hst.Blocks*512 >= fi.Size() {
				t.Errorf("%s: sparse source extracted without holes (%d blocks)", p, hst.Blocks)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Contents in a second pass: reading updates atimes, which the first
	// pass compares (hard links share them).
	err = Walk(context.Background(), fsys, src, func(p string, fi fs.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p, src), "/")
		if src == "." {
			rel = p
		}
		host := filepath.Join(dir, rel)
		m := fi.Mode()
		switch {
		case m.IsRegular():
			want, err := fs.ReadFile(fsys, p)
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(host)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s: content differs (%d vs %d bytes)", p, len(got), len(want))
			}
		case m&fs.ModeSymlink != 0:
			want, _ := fs.ReadLink(fsys, p)
			got, err := os.Readlink(host)
			if err != nil || got != want {
				t.Errorf("%s: link %q (%v), want %q", p, got, err, want)
			}
		}
		xa, _ := fsdrivers.Xattrs(fsys, p)
		for k, v := range xa {
			buf := make([]byte, 256)
			n, err := unix.Lgetxattr(host, k, buf)
			if err != nil || !bytes.Equal(buf[:n], v) {
				t.Errorf("%s: xattr %s = %q (%v), want %q", p, k, buf[:max(n, 0)], err, v)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestExtractTree(t *testing.T) {
	fsys := sampleFS()
	dest := filepath.Join(t.TempDir(), "out")
	res, err := Extract(context.Background(), fsys, "/", dest, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkTree(t, fsys, ".", dest)
	if res.HardLinks != 1 || res.Symlinks != 2 {
		t.Errorf("result %+v: want 1 hard link, 2 symlinks", res)
	}
	if !isRoot() && res.Skipped != 1 {
		t.Errorf("result %+v: want the device skipped", res)
	}
}

func TestExtractSingle(t *testing.T) {
	fsys := sampleFS()
	tests := []struct {
		src, dest string // dest relative to a temp dir; "" = the dir itself
		want      string // host path relative to the temp dir
	}{
		{"/etc/hosts", "", "hosts"},
		{"etc/hosts", "h.txt", "h.txt"},
		{"/home/u/link", "", "link"},
		{"/etc", "", "etc"},
		{"/etc/", "e2", "e2"},
		{"/abs", "x", "x"},
	}
	for _, tc := range tests {
		t.Run(tc.src+"→"+tc.dest, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := Extract(context.Background(), fsys, tc.src, filepath.Join(dir, tc.dest), Options{}); err != nil {
				t.Fatal(err)
			}
			src, _ := fsdrivers.CleanPath(tc.src)
			checkTree(t, fsys, src, filepath.Join(dir, tc.want))
		})
	}
}

func TestExtractOverwrite(t *testing.T) {
	fsys := sampleFS()
	dir := t.TempDir()
	dest := filepath.Join(dir, "hosts")
	if err := os.WriteFile(dest, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Extract(context.Background(), fsys, "/etc/hosts", dest, Options{})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("err = %v, want ErrExists", err)
	}
	if b, _ := os.ReadFile(dest); string(b) != "mine" {
		t.Fatalf("existing file changed without force: %q", b)
	}
	if _, err := Extract(context.Background(), fsys, "/etc/hosts", dest, Options{Force: true}); err != nil {
		t.Fatal(err)
	}
	checkTree(t, fsys, "etc/hosts", dest)

	// A tree over an existing tree: directories merge, files need force.
	out := filepath.Join(dir, "tree")
	if _, err := Extract(context.Background(), fsys, ".", out, Options{}); err != nil {
		t.Fatal(err)
	}
	res, err := Extract(context.Background(), fsys, ".", out, Options{})
	if !errors.Is(err, ErrExists) || res.Files != 0 {
		t.Fatalf("second extraction: %+v, %v; want ErrExists for every file", res, err)
	}
	if _, err := Extract(context.Background(), fsys, ".", out, Options{Force: true}); err != nil {
		t.Fatal(err)
	}
	// Not the root: dest existed, so it keeps its own (just modified) times.
	checkTree(t, fsys, ".", out, ".")

	// Never replace a directory with a file, even with force.
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "d", "keep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Extract(context.Background(), &fakeFS{MapFS: fstest.MapFS{"d": {Data: []byte("f")}}}, ".", dir, Options{Force: true})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("file over directory: err = %v, want ErrExists", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "d", "keep")); err != nil {
		t.Fatal("directory replaced by a file")
	}
}

// snapshot lists every path under dir with its type, size and mtime.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		m[p] = fi.Mode().String() + " " + fi.ModTime().String() + " " + string(rune(fi.Size()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestExtractHostile extracts trees crafted to escape dest and checks, by
// walking a sentinel directory beside it, that nothing was written outside.
func TestExtractHostile(t *testing.T) {
	base := t.TempDir()
	sentinel := filepath.Join(base, "sentinel")
	if err := os.MkdirAll(filepath.Join(sentinel, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sentinel, "etc", "passwd"), []byte("original"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, sentinel)

	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s), Mode: 0o644} }
	link := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s), Mode: fs.ModeSymlink | 0o777} }
	bad := func(name string) fs.DirEntry { return fakeEntry{name, 0o644} }
	badDir := func(name string) fs.DirEntry { return fakeEntry{name, fs.ModeDir | 0o755} }
	evil := fakeInfo{"evil", 0o644, nil}

	tests := []struct {
		name    string
		fsys    *fakeFS
		force   bool
		prepare func(dest string) // host state before extraction
		wantErr error
	}{
		{"dotdot names", &fakeFS{MapFS: fstest.MapFS{"ok": file("ok")},
			extra: map[string][]fs.DirEntry{".": {bad(".."), badDir(".."), bad("."), bad("")}},
		}, false, nil, fsdrivers.ErrUnsafeName},
		{"slash names", &fakeFS{MapFS: fstest.MapFS{"ok": file("ok")},
			extra: map[string][]fs.DirEntry{".": {bad("../sentinel/etc/passwd"), bad("/" + sentinel + "/etc/passwd"), bad("a/b"), badDir("../sentinel")}},
			lstat: map[string]fs.FileInfo{"../sentinel/etc/passwd": evil, "a/b": evil},
		}, false, nil, fsdrivers.ErrUnsafeName},
		{"NUL and long names", &fakeFS{MapFS: fstest.MapFS{"ok": file("ok")},
			extra: map[string][]fs.DirEntry{".": {bad("x\x00/../../y"), bad(strings.Repeat("n", 256))}},
		}, false, nil, fsdrivers.ErrUnsafeName},
		{"absolute symlink to /etc then etc/passwd", &fakeFS{MapFS: fstest.MapFS{
			"etc": link(sentinel + "/etc"), "etc/passwd": file("pwned"),
		}}, false, nil, nil},
		{"relative symlink out, then a file through it", &fakeFS{MapFS: fstest.MapFS{
			"up": link("../sentinel"), "up/etc/passwd": file("pwned"),
		}}, false, nil, nil},
		{"duplicate name: symlink then directory", &fakeFS{MapFS: fstest.MapFS{
			"etc": link(sentinel + "/etc"),
		}, extra: map[string][]fs.DirEntry{".": {badDir("etc")}},
		}, false, nil, fsdrivers.ErrUnsafeName},
		{"host symlink already in dest", &fakeFS{MapFS: fstest.MapFS{
			"etc/passwd": file("pwned"), "etc": {Mode: fs.ModeDir | 0o755},
		}}, false, func(dest string) {
			_ = os.MkdirAll(dest, 0o755)
			_ = os.Symlink(filepath.Join(sentinel, "etc"), filepath.Join(dest, "etc"))
		}, ErrExists},
		{"host symlink already in dest, force", &fakeFS{MapFS: fstest.MapFS{
			"etc/passwd": file("pwned"), "etc": {Mode: fs.ModeDir | 0o755}, "f": file("pwned"),
		}}, true, func(dest string) {
			_ = os.MkdirAll(dest, 0o755)
			_ = os.Symlink(filepath.Join(sentinel, "etc"), filepath.Join(dest, "etc"))
			_ = os.Symlink(filepath.Join(sentinel, "etc", "passwd"), filepath.Join(dest, "f"))
		}, nil},
		{"hard link to a symlink", &fakeFS{MapFS: fstest.MapFS{
			"l":  {Data: []byte(sentinel + "/etc/passwd"), Mode: fs.ModeSymlink | 0o777, Sys: stat(5, 2, 0, 0)},
			"l2": {Data: []byte("pwned"), Mode: 0o644, Sys: stat(5, 2, 0, 0)},
		}}, false, nil, nil},
		{"directory loop", &fakeFS{MapFS: fstest.MapFS{
			".":     {Mode: fs.ModeDir | 0o755, Sys: stat(2, 3, 0, 0)},
			"a":     {Mode: fs.ModeDir | 0o755, Sys: stat(7, 3, 0, 0)},
			"a/b":   {Mode: fs.ModeDir | 0o755, Sys: stat(2, 3, 0, 0)},
			"a/b/c": file("c"),
		}}, false, nil, ErrLoop},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dest := filepath.Join(base, "dest", string(rune('a'+i)))
			if tc.prepare != nil {
				tc.prepare(dest)
			}
			_, err := Extract(context.Background(), tc.fsys, "/", dest, Options{Force: tc.force})
			if tc.wantErr == nil && err != nil {
				t.Fatalf("err = %v", err)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			after := snapshot(t, sentinel)
			for p, v := range after {
				if before[p] != v {
					t.Errorf("outside dest: %s changed: %s", p, v)
				}
			}
			if len(after) != len(before) {
				t.Errorf("outside dest: %d entries, want %d", len(after), len(before))
			}
			ents, _ := os.ReadDir(base)
			for _, e := range ents {
				if e.Name() != "sentinel" && e.Name() != "dest" {
					t.Errorf("outside dest: %s created", e.Name())
				}
			}
			if b, _ := os.ReadFile(filepath.Join(sentinel, "etc", "passwd")); string(b) != "original" {
				t.Errorf("sentinel overwritten: %q", b)
			}
			// Whatever was created inside dest must be a real file or
			// a symlink, never content written through one.
			if tc.name == "hard link to a symlink" {
				fi, err := os.Lstat(filepath.Join(dest, "l2"))
				if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
					t.Errorf("l2: %v %v; want a hard link to the symlink", fi, err)
				}
			}
		})
	}
}

func TestExtractDeep(t *testing.T) {
	m := fstest.MapFS{}
	p := strings.Repeat("d/", MaxDepth+5) + "f"
	m[p] = &fstest.MapFile{Data: []byte("deep")}
	_, err := Extract(context.Background(), &fakeFS{MapFS: m}, "/", filepath.Join(t.TempDir(), "o"), Options{})
	if !errors.Is(err, ErrLoop) {
		t.Fatalf("err = %v, want ErrLoop", err)
	}
}

func TestExtractCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Extract(ctx, sampleFS(), "/", filepath.Join(t.TempDir(), "o"), Options{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// errFS fails reads of one file, as a damaged image would.
type errFS struct{ *fakeFS }

type errFile struct{ fs.File }

var errDamaged = errors.New("chunk 7: checksum mismatch")

func (errFile) ReadAt(b []byte, off int64) (int, error) { return 0, errDamaged }

func (f errFS) Open(name string) (fs.File, error) {
	file, err := f.fakeFS.Open(name)
	if err == nil && name == "etc/hosts" {
		return errFile{file}, nil
	}
	return file, err
}

func TestExtractDamagedFileContinues(t *testing.T) {
	fsys := errFS{sampleFS()}
	dest := filepath.Join(t.TempDir(), "o")
	res, err := Extract(context.Background(), fsys, "/", dest, Options{})
	var ee *EntryError
	if !errors.Is(err, errDamaged) || !errors.As(err, &ee) || ee.Path != "etc/hosts" {
		t.Fatalf("err = %v; want the damaged file named", err)
	}
	if res.Files < 5 {
		t.Errorf("result %+v: the rest should be extracted", res)
	}
	if _, err := os.Stat(filepath.Join(dest, "etc", "shadow")); err != nil {
		t.Error(err)
	}
	if _, err := os.Lstat(filepath.Join(dest, "etc", "hosts")); !os.IsNotExist(err) {
		t.Errorf("a file that failed to copy was left behind: %v", err)
	}
}

// countProgress counts what Extract reports: bytes, and entries as notes.
type countProgress struct{ entries, bytes int64 }

func (c *countProgress) Start(string, int64) {}
func (c *countProgress) Add(n int64)         { c.bytes += n }
func (c *countProgress) Note(string)         { c.entries++ }

func TestProgress(t *testing.T) {
	var p countProgress
	res, err := Extract(context.Background(), sampleFS(), "/", filepath.Join(t.TempDir(), "o"), Options{Progress: &p})
	if err != nil {
		t.Fatal(err)
	}
	if p.bytes != res.Bytes || p.entries < 15 {
		t.Errorf("progress %+v, result %+v", p, res)
	}
}

// FuzzExtractNames extracts a directory holding one entry with a fuzzed
// name and checks nothing appears outside dest.
func FuzzExtractNames(f *testing.F) {
	for _, s := range []string{"a", "..", ".", "", "a/b", "../x", "/abs", "x\x00y", strings.Repeat("z", 300), "ü"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, name string, dir bool) {
		base := t.TempDir()
		dest := filepath.Join(base, "d")
		mode := fs.FileMode(0o644)
		if dir {
			mode = fs.ModeDir | 0o755
		}
		fsys := &fakeFS{MapFS: fstest.MapFS{},
			extra: map[string][]fs.DirEntry{".": {fakeEntry{name, mode}}},
			lstat: map[string]fs.FileInfo{name: fakeInfo{"x", mode, nil}},
		}
		_, _ = Extract(context.Background(), fsys, "/", dest, Options{})
		ents, _ := os.ReadDir(base)
		if len(ents) > 1 || (len(ents) == 1 && ents[0].Name() != "d") {
			t.Fatalf("outside dest: %v", ents)
		}
		inside, _ := os.ReadDir(dest)
		if len(inside) > 1 || (len(inside) == 1 && inside[0].Name() != name) {
			t.Fatalf("created %v for name %q", inside, name)
		}
	})
}

func TestWalk(t *testing.T) {
	fsys := sampleFS()
	fsys.extra = map[string][]fs.DirEntry{"etc": {fakeEntry{"..", fs.ModeDir}, fakeEntry{"a/b", 0}}}
	fsys.MapFS["loop"] = &fstest.MapFile{Mode: fs.ModeDir | 0o755, Sys: stat(2, 2, 0, 0)} // the root's inode
	fsys.MapFS["loop/x"] = &fstest.MapFile{Data: []byte("x")}
	var seen, errs []string
	err := Walk(context.Background(), fsys, "/", func(p string, fi fs.FileInfo, err error) error {
		if err != nil {
			errs = append(errs, p+": "+err.Error())
			return nil
		}
		seen = append(seen, p)
		if p == "home" {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{".", "abs", "bin", "bin/su", "dev", "dev/null", "empty", "etc", "etc/hardlinked",
		"etc/hosts", "etc/shadow", "fifo", "home", "loop", "ro", "ro/inside", "sparse", "tmp"}
	if !slices.Equal(seen, want) {
		t.Errorf("walk\n got %v\nwant %v", seen, want)
	}
	if len(errs) != 3 || !strings.Contains(strings.Join(errs, "\n"), "ancestor") {
		t.Errorf("errors: %q; want '..', 'a/b' and the loop", errs)
	}

	// SkipDir from a file skips the rest of its directory; SkipAll ends.
	seen = seen[:0]
	Walk(context.Background(), fsys, "etc", func(p string, fi fs.FileInfo, err error) error {
		seen = append(seen, p)
		if p == "etc/hardlinked" {
			return fs.SkipDir
		}
		return nil
	})
	if !slices.Equal(seen, []string{"etc", "etc/hardlinked"}) {
		t.Errorf("SkipDir from a file: %v", seen)
	}
	n := 0
	Walk(context.Background(), fsys, ".", func(string, fs.FileInfo, error) error { n++; return fs.SkipAll })
	if n != 1 {
		t.Errorf("SkipAll: %d calls", n)
	}
}
