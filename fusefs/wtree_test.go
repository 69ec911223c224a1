package fusefs

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/fsdrivers/fstestutil"
)

// TestMountWritableTree drives a writable pN/ through the kernel over an
// in-memory WritableFS: POSIX calls land in the filesystem, a renamed or
// unlinked open file keeps working, disk.img and pN.img turn read-only.
func TestMountWritableTree(t *testing.T) {
	dbytes := testDisk()
	ovl := newTestOverlay(t, bytes.NewReader(dbytes), int64(len(dbytes)))
	mem := fstestutil.NewMemFS()
	opt := Options{ReadWrite: true, ImageTime: t0, Trees: map[int]fsdrivers.WritableFS{1: mem}}
	r := NewRoot(ovl, int64(len(dbytes)), testParts(ovl, sampleTree()), opt)
	dir, _ := mountTest(t, r, opt)
	p := filepath.Join(dir, "p1")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// One owner per byte.
	if _, err := os.OpenFile(filepath.Join(dir, "p1.img"), os.O_RDWR, 0); err == nil {
		t.Error("p1.img opens for writing beside a writable p1/")
	}
	if _, err := os.OpenFile(filepath.Join(dir, "disk.img"), os.O_RDWR, 0); err == nil {
		t.Error("disk.img opens for writing beside a writable p1/")
	}
	if f, err := os.OpenFile(filepath.Join(dir, "p3.img"), os.O_RDWR, 0); err != nil {
		t.Errorf("p3.img (no tree): %v", err)
	} else {
		f.Close()
	}

	must(os.MkdirAll(filepath.Join(p, "a/b"), 0o755))
	must(os.WriteFile(filepath.Join(p, "a/b/f"), []byte("hello"), 0o640))
	f, err := os.OpenFile(filepath.Join(p, "a/b/f"), os.O_RDWR, 0)
	must(err)
	defer f.Close()
	// Rename the open file across directories, then unlink it: the
	// descriptor keeps reading and writing the same node.
	must(os.Rename(filepath.Join(p, "a/b/f"), filepath.Join(p, "a/g")))
	_, err = f.WriteAt([]byte(" world"), 5)
	must(err)
	if b, err := os.ReadFile(filepath.Join(p, "a/g")); err != nil || string(b) != "hello world" {
		t.Errorf("after rename: %q %v", b, err)
	}
	must(os.Link(filepath.Join(p, "a/g"), filepath.Join(p, "hard")))
	must(os.Remove(filepath.Join(p, "a/g")))
	var st syscall.Stat_t
	must(syscall.Stat(filepath.Join(p, "hard"), &st))
	if st.Nlink != 1 {
		t.Errorf("nlink %d after unlinking one of two links", st.Nlink)
	}
	must(os.Remove(filepath.Join(p, "hard")))
	buf := make([]byte, 11)
	if n, err := f.ReadAt(buf, 0); n != 11 || string(buf) != "hello world" {
		t.Errorf("unlinked open file reads %q %v", buf[:n], err)
	}
	must(f.Close())

	must(os.Symlink("a/b", filepath.Join(p, "l")))
	if tgt, err := os.Readlink(filepath.Join(p, "l")); err != nil || tgt != "a/b" {
		t.Errorf("readlink %q %v", tgt, err)
	}
	must(unix.Mkfifo(filepath.Join(p, "fifo"), 0o600))
	must(unix.Setxattr(filepath.Join(p, "a"), "user.k", []byte("v"), 0))
	val := make([]byte, 16)
	if n, err := unix.Getxattr(filepath.Join(p, "a"), "user.k", val); err != nil || string(val[:n]) != "v" {
		t.Errorf("getxattr %q %v", val[:n], err)
	}
	must(os.Chmod(filepath.Join(p, "a"), 0o700))
	// RENAME_NOREPLACE and EXCHANGE reach the filesystem.
	must(os.WriteFile(filepath.Join(p, "x"), []byte("x"), 0o644))
	must(os.WriteFile(filepath.Join(p, "y"), []byte("y"), 0o644))
	if err := unix.Renameat2(unix.AT_FDCWD, filepath.Join(p, "x"), unix.AT_FDCWD, filepath.Join(p, "y"), unix.RENAME_NOREPLACE); err != unix.EEXIST {
		t.Errorf("RENAME_NOREPLACE: %v", err)
	}
	must(unix.Renameat2(unix.AT_FDCWD, filepath.Join(p, "x"), unix.AT_FDCWD, filepath.Join(p, "y"), unix.RENAME_EXCHANGE))
	if b, _ := os.ReadFile(filepath.Join(p, "x")); string(b) != "y" {
		t.Errorf("after exchange x reads %q", b)
	}
	if err := os.Remove(filepath.Join(p, "a")); err == nil {
		t.Error("rmdir of a non-empty directory worked")
	}
	ff, err := os.OpenFile(filepath.Join(p, "x"), os.O_RDWR, 0)
	must(err)
	syncs := mem.Syncs
	must(ff.Sync())
	ff.Close()
	if mem.Syncs == syncs {
		t.Error("fsync did not sync the filesystem")
	}
	// What the kernel did is what the filesystem holds.
	a, err := mem.Lookup(mem.Root(), "a")
	must(err)
	if a.Mode != fsdrivers.ModeDir|0o700 {
		t.Errorf("a mode %o", a.Mode)
	}
	ents, _ := mem.ReadDir(mem.Root())
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	if got := filepath.Join(names...); got != filepath.Join("a", "fifo", "l", "x", "y") {
		t.Errorf("root holds %v", names)
	}
	var sfs unix.Statfs_t
	must(unix.Statfs(p, &sfs))
	if sfs.Bsize != 4096 || sfs.Blocks == 0 {
		t.Errorf("statfs %+v", sfs)
	}
}

// TestWritableTreeSticky: chmod with the sticky bit then chown keeps it
// (the kernel's own suid/sgid clearing must not take it).
func TestWritableTreeSticky(t *testing.T) {
	dbytes := testDisk()
	ovl := newTestOverlay(t, bytes.NewReader(dbytes), int64(len(dbytes)))
	mem := fstestutil.NewMemFS()
	opt := Options{ReadWrite: true, ImageTime: t0, Trees: map[int]fsdrivers.WritableFS{1: mem}}
	dir, _ := mountTest(t, NewRoot(ovl, int64(len(dbytes)), testParts(ovl, sampleTree()), opt), opt)
	p := filepath.Join(dir, "p1", "f")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ mode, want uint32 }{{0o1551, 0o1551}, {0o7777, 0o1777}, {0o2775, 0o775}, {0o6745, 0o2745}} {
		mode := c.mode
		if err := unix.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, 1234, 5678); err != nil {
			t.Fatal(err)
		}
		a, _ := mem.Lookup(mem.Root(), "f")
		var st unix.Stat_t
		unix.Stat(p, &st)
		if a.Mode&0o7777 != c.want || st.Mode&0o7777 != c.want {
			t.Errorf("chmod %o, chown: fs %o, stat %o, want %o", mode, a.Mode&0o7777, st.Mode&0o7777, c.want)
		}
	}
}
