package ext4

import (
	"bytes"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dimg-project/dimg/fsdrivers/fstestutil"
)

// Fixed identities make every generated image byte-for-byte reproducible
// (together with E2FSPROGS_FAKE_TIME and fixed source timestamps).
const (
	testUUID     = "6f1c3a52-9d0e-4b7a-8c21-5e4d3f2a1b00"
	testHashSeed = "0b5c4e8a-1234-4f6e-9a7b-c0ffee000001"
	fakeTime     = "1700000000"
)

// kernelView compares everything, birth times included, with a kernel
// mount of the same image.
var kernelView = fstestutil.Options{CompareBtime: true}

func need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

// needLoop skips unless we can attach loop devices and mount ext4.
func needLoop(t testing.TB) {
	t.Helper()
	need(t, "losetup", "mount", "umount")
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop mounts")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("no loop devices")
	}
}

// runCmd runs a command with a fixed clock for e2fsprogs and fails the
// test with its output on error.
func runCmd(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := runCmdErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runCmdErr(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME="+fakeTime, "LC_ALL=C")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// mkfs creates a size-byte image in a temp dir with mke2fs and the given
// options, filled from src when src is not "".
func mkfs(t testing.TB, size int64, src string, opts ...string) string {
	t.Helper()
	need(t, "mke2fs")
	img := filepath.Join(t.TempDir(), "fs.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	args := append([]string{"-q", "-F", "-U", testUUID, "-E", "hash_seed=" + testHashSeed}, opts...)
	if src != "" {
		args = append(args, "-d", src)
	}
	runCmd(t, "mke2fs", append(args, img)...)
	return img
}

// fsck runs e2fsck -fn and fails the test unless the filesystem is clean.
func fsck(t testing.TB, img string) {
	t.Helper()
	need(t, "e2fsck")
	if out, err := runCmdErr("e2fsck", "-fn", img); err != nil {
		t.Fatalf("e2fsck -fn %s: %v\n%s", img, err, out)
	}
}

func openImage(t testing.TB, img string) *Volume {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(f, fi.Size())
	if err != nil {
		t.Fatalf("Open %s: %v", img, err)
	}
	return v
}

// mount attaches img to a loop device and mounts it (read-only unless rw).
// The returned function unmounts and detaches; it also runs at cleanup.
func mount(t testing.TB, img string, rw bool) (string, func()) {
	t.Helper()
	needLoop(t)
	dev := strings.TrimSpace(runCmd(t, "losetup", "-f", "--show", img))
	dir := t.TempDir()
	opts := "ro,noload"
	if rw {
		opts = "rw"
	}
	if out, err := runCmdErr("mount", "-t", "ext4", "-o", opts, dev, dir); err != nil {
		runCmdErr("losetup", "-d", dev)
		t.Fatalf("mount %s: %v\n%s", img, err, out)
	}
	var done atomic.Bool
	unmount := func() {
		if done.Swap(true) {
			return
		}
		if out, err := runCmdErr("umount", dir); err != nil {
			t.Errorf("umount %s: %v\n%s", dir, err, out)
		}
		runCmdErr("losetup", "-d", dev)
	}
	t.Cleanup(unmount)
	return dir, unmount
}

// buildTree fills dir with the kinds of entries the reader must handle.
// Special files and ownership need root and are left out otherwise.
func buildTree(t testing.TB, dir string, extras bool) {
	t.Helper()
	root := os.Geteuid() == 0
	rnd := rand.New(rand.NewPCG(1, 2))
	data := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}
	write := func(name string, b []byte, mode os.FileMode) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("empty", nil, 0o644)
	write("small.txt", []byte("hello, world\n"), 0o644)
	write("block", data(4096), 0o644)
	write("block+1", data(4097), 0o640)
	write("random.bin", data(1<<20+12345), 0o600)
	write("dir/sub/deep/file", []byte("deep\n"), 0o644)
	write("héllo wörld ✓.txt", []byte("unicode\n"), 0o644)
	write(strings.Repeat("n", 255), []byte("long name\n"), 0o644)
	write("dir/"+strings.Repeat("é", 127)+"x", []byte("255 bytes of UTF-8\n"), 0o644)
	write("setuid", []byte("#!/bin/sh\n"), 0o4755)
	write("setgid", []byte("x"), 0o2711)
	if err := os.Mkdir(filepath.Join(dir, "sticky"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(dir, "sticky"), 0o1777)

	// A sparse file: data, a hole, data, and a trailing hole.
	sp, err := os.Create(filepath.Join(dir, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	sp.Write(data(5000))
	sp.WriteAt(data(70000), 3<<20)
	sp.Truncate(6<<20 + 123)
	sp.Close()

	// Hard links.
	write("hard1", []byte("linked\n"), 0o644)
	if err := os.Link(filepath.Join(dir, "hard1"), filepath.Join(dir, "dir/hard2")); err != nil {
		t.Fatal(err)
	}

	// Symlinks: fast (in i_block), slow (a data block), absolute, to a
	// directory, dangling, and a chain.
	links := map[string]string{
		"fastlink":      "small.txt",
		"slowlink":      strings.Repeat("../dir/", 12) + "sub/deep/file",
		"abslink":       "/dir/sub",
		"dirlink":       "dir",
		"dangling":      "nowhere",
		"dir/uplink":    "../small.txt",
		"chain1":        "chain2",
		"chain2":        "dir/sub/deep/file",
		"dir/sub/rel59": strings.Repeat("a", 59),
		"dir/sub/rel60": strings.Repeat("b", 60),
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}

	// Many entries: more than one directory block.
	for i := range 300 {
		write(filepath.Join("many", "entry-"+strings.Repeat("x", i%40)+"-"+strconv.Itoa(i)), nil, 0o644)
	}

	// Extended attributes: small (in the inode) and large (external block).
	setx := func(name, attr string, val []byte) {
		if err := syscall.Setxattr(filepath.Join(dir, name), attr, val, 0); err != nil {
			t.Logf("setxattr %s on the test directory: %v (left out)", attr, err)
		}
	}
	setx("small.txt", "user.comment", []byte("a comment"))
	setx("block", "user.big", bytes.Repeat([]byte("X"), 600)) // too big for the inode: external block
	setx("dir", "user.dirattr", []byte{0, 1, 2, 3})
	if root {
		setx("block+1", "trusted.secret", []byte("t"))
	}

	if root && extras {
		mknod := func(name string, mode uint32, dev int) {
			if err := syscall.Mknod(filepath.Join(dir, name), mode, dev); err != nil {
				t.Fatalf("mknod %s: %v", name, err)
			}
		}
		mknod("fifo", syscall.S_IFIFO|0o644, 0)
		mknod("null", syscall.S_IFCHR|0o666, mkdev(1, 3))
		mknod("disk", syscall.S_IFBLK|0o660, mkdev(8, 1))
		mknod("bigdev", syscall.S_IFCHR|0o600, mkdev(259, 300000))
		sock := filepath.Join(dir, "sock")
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		l.SetUnlinkOnClose(false)
		l.Close()
		for _, o := range []struct {
			name     string
			uid, gid int
		}{{"small.txt", 1234, 5678}, {"block", 100000, 200000}, {"dir/sub", 70000, 3}} {
			if err := os.Lchown(filepath.Join(dir, o.name), o.uid, o.gid); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Lchown(filepath.Join(dir, "fastlink"), 4321, 8765); err != nil {
			t.Fatal(err)
		}
	}

	// Timestamps last (writing children changes a directory's mtime):
	// nanoseconds, before 1970. (mke2fs -d stores whole seconds in 32
	// bits; the kernel-written tests cover the epoch bits.)
	times := map[string]time.Time{
		"small.txt":  time.Date(2001, 2, 3, 4, 5, 6, 123456789, time.UTC),
		"block":      time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC),
		"random.bin": time.Date(2037, 6, 7, 8, 9, 10, 999999999, time.UTC),
		"dir/sub":    time.Date(2020, 1, 1, 0, 0, 0, 1, time.UTC),
	}
	base := time.Date(2023, 11, 14, 22, 13, 20, 0, time.UTC)
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.Mode()&os.ModeSymlink != 0 {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		ts, ok := times[rel]
		if !ok {
			ts = base
		}
		return os.Chtimes(p, ts, ts)
	})
}

func mkdev(major, minor uint32) int {
	return int(uint64(minor&0xff) | uint64(major&0xfff)<<8 | uint64(minor&^0xff)<<12 | uint64(major&^0xfff)<<32)
}

// countingReaderAt counts ReadAt calls, for tests of how much a lookup reads.
type countingReaderAt struct {
	r interface {
		ReadAt([]byte, int64) (int, error)
	}
	n atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.n.Add(1)
	return c.r.ReadAt(p, off)
}
