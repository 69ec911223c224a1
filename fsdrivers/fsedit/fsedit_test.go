package fsedit_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/fsdrivers/fsedit"
	"github.com/dimg-project/dimg/fsdrivers/fstestutil"
)

func newFS(t *testing.T) (*fsedit.FS, *fstestutil.MemFS) {
	m := fstestutil.NewMemFS()
	return fsedit.New(m, "2:"), m
}

func read(t *testing.T, f *fsedit.FS, p string) string {
	t.Helper()
	a, err := f.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, a.Size)
	if _, err := f.W.ReadAt(a.Ino, b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return string(b)
}

func TestResolveSymlinksStayInside(t *testing.T) {
	f, _ := newFS(t)
	if _, err := f.MkdirAll("a/b/c", 0o755, fsdrivers.Owner{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Put("a/b/c/file", strings.NewReader("hi"), fsedit.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	// Absolute targets start at the filesystem's root, ".." stops there.
	for target, want := range map[string]string{"/a/b": "hi", "../../../../../a/b": "hi", "b": "hi"} {
		if err := f.Symlink(target, "a/l", fsdrivers.Owner{}); err != nil {
			t.Fatal(err)
		}
		if target == "b" {
			if got := read(t, f, "a/l/c/file"); got != want {
				t.Errorf("via %q: %q", target, got)
			}
		} else if got := read(t, f, "a/l/c/file"); got != want {
			t.Errorf("via %q: %q", target, got)
		}
		if err := f.Remove("a/l"); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Symlink("loop", "loop", fsdrivers.Owner{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Stat("loop/x"); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("loop: %v", err)
	}
	_, err := f.Stat("a/nope")
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "2:/a/nope") {
		t.Errorf("missing: %v", err)
	}
	if _, err := f.Stat("a/b/c/file/x"); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("through a file: %v", err)
	}
}

func TestOps(t *testing.T) {
	f, _ := newFS(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := f.MkdirAll("d/e", 0o700, fsdrivers.Owner{Uid: 5})
	must(err)
	_, err = f.Put("d/e/x", strings.NewReader("one"), fsedit.PutOptions{})
	must(err)
	if _, err := f.Put("d/e/x", strings.NewReader("two"), fsedit.PutOptions{}); !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), "--force") {
		t.Errorf("put over: %v", err)
	}
	_, err = f.Put("d/e/x", strings.NewReader("three"), fsedit.PutOptions{Force: true})
	must(err)
	if got := read(t, f, "d/e/x"); got != "three" {
		t.Errorf("forced put: %q", got)
	}
	must(f.Link("d/e/x", "d/hard"))
	must(f.Move("d/hard", "d/e", false)) // into the directory
	if got := read(t, f, "d/e/hard"); got != "three" {
		t.Errorf("moved link: %q", got)
	}
	if err := f.Move("d/e/hard", "d/e/x", false); !errors.Is(err, fs.ErrExist) {
		t.Errorf("move over: %v", err)
	}
	must(f.Move("d/e/hard", "d/e/x", true))
	must(f.Chmod("d/e/x", 0o600))
	uid := uint32(7)
	must(f.Chown("d/e/x", &uid, nil))
	a, err := f.Stat("d/e/x")
	must(err)
	if a.Mode != fsdrivers.ModeFile|0o600 || a.Uid != 7 {
		t.Errorf("attr %+v", a)
	}
	if err := f.Remove("d"); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Errorf("remove non-empty: %v", err)
	}
	if err := f.RemoveAll("."); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("remove root: %v", err)
	}
	must(f.RemoveAll("d"))
	if ok, _ := f.Exists("d"); ok {
		t.Error("d still there")
	}
	// Sparse put: zeros stay holes, the size is right.
	data := append(append([]byte("head"), make([]byte, 3<<20)...), "tail"...)
	n, err := f.Put("sparse", bytes.NewReader(data), fsedit.PutOptions{})
	must(err)
	if n != int64(len(data)) || read(t, f, "sparse") != string(data) {
		t.Errorf("sparse put: %d", n)
	}
}

func TestCopyIn(t *testing.T) {
	f, m := newFS(t)
	src := t.TempDir()
	tree := filepath.Join(src, "drivers")
	os.MkdirAll(filepath.Join(tree, "sub"), 0o750)
	os.WriteFile(filepath.Join(tree, "a.ko"), []byte("module"), 0o644)
	os.Link(filepath.Join(tree, "a.ko"), filepath.Join(tree, "sub", "hard.ko"))
	os.Symlink("../a.ko", filepath.Join(tree, "sub", "soft"))
	syscall.Mkfifo(filepath.Join(tree, "fifo"), 0o600)
	sp, _ := os.Create(filepath.Join(tree, "sparse"))
	sp.WriteAt([]byte("x"), 10<<20)
	sp.Close()
	xattrOK := unix.Lsetxattr(filepath.Join(tree, "a.ko"), "user.test", []byte("v"), 0) == nil
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	os.Chtimes(filepath.Join(tree, "sub"), old, old)
	os.Chtimes(filepath.Join(tree, "a.ko"), old, old)

	res, err := f.CopyIn(context.Background(), []string{tree}, "lib/extra", true, fsedit.CopyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != 2 || res.HardLinks != 1 || res.Symlinks != 1 || res.Dirs != 2 || res.Special != 1 {
		t.Errorf("result %+v", res)
	}
	if got := read(t, f, "lib/extra/drivers/sub/soft"); got != "module" {
		t.Errorf("through symlink: %q", got)
	}
	a, _ := f.Stat("lib/extra/drivers/a.ko")
	h, _ := f.Stat("lib/extra/drivers/sub/hard.ko")
	if a.Ino != h.Ino || a.Nlink != 2 || !a.Mtime.Equal(old) {
		t.Errorf("hard link / time: %+v %+v", a, h)
	}
	if d, _ := f.Stat("lib/extra/drivers/sub"); !d.Mtime.Equal(old) || d.Mode != fsdrivers.ModeDir|0o750 {
		t.Errorf("dir attrs: %+v", d)
	}
	if s, _ := f.Stat("lib/extra/drivers/sparse"); s.Size != 10<<20+1 {
		t.Errorf("sparse size %d", s.Size)
	}
	if xattrOK {
		if v, err := m.GetXattr(a.Ino, "user.test"); err != nil || string(v) != "v" {
			t.Errorf("xattr: %q %v", v, err)
		}
	}
	// Again: everything is in the way; nothing is written.
	syncs := m.Syncs
	_, err = f.CopyIn(context.Background(), []string{tree}, "lib/extra/", true, fsedit.CopyOptions{})
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), "2:/lib/extra/drivers/") {
		t.Errorf("second copy: %v", err)
	}
	_ = syncs
	mode := uint32(0o600)
	if _, err := f.CopyIn(context.Background(), []string{tree}, "lib/extra/", true, fsedit.CopyOptions{Force: true, Mode: &mode, Owner: &fsdrivers.Owner{Uid: 1, Gid: 2}}); err != nil {
		t.Fatal(err)
	}
	if a, _ := f.Stat("lib/extra/drivers/a.ko"); a.Mode != fsdrivers.ModeFile|0o600 || a.Uid != 1 || a.Gid != 2 || a.Nlink != 2 {
		t.Errorf("forced copy attrs: %+v", a)
	}
	// One file onto a new name.
	if _, err := f.CopyIn(context.Background(), []string{filepath.Join(tree, "a.ko")}, "etc/renamed", false, fsedit.CopyOptions{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing parent: %v", err)
	}
	if _, err := f.CopyIn(context.Background(), []string{filepath.Join(tree, "a.ko")}, "renamed", false, fsedit.CopyOptions{}); err != nil || read(t, f, "renamed") != "module" {
		t.Errorf("copy to a name: %v", err)
	}
}

func TestCopyInNoSpace(t *testing.T) {
	f, m := newFS(t)
	m.Capacity = 1 << 20
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "big"), make([]byte, 3<<20), 0o644)
	os.WriteFile(filepath.Join(src, "big"), bytes.Repeat([]byte{1}, 3<<20), 0o644)
	_, err := f.CopyIn(context.Background(), []string{src}, "x/", true, fsedit.CopyOptions{})
	var se *fsedit.SpaceError
	if !errors.As(err, &se) || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("got %v", err)
	}
	if ok, _ := f.Exists("x"); ok {
		t.Error("a refused copy wrote something")
	}
	t.Log(err)
}
