package fusefs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/fsdrivers/disk"
	"github.com/dimg-project/dimg/fsdrivers/ext4"
	"github.com/dimg-project/dimg/fsdrivers/parttable"
)

// requireFUSE skips unless this process can mount FUSE file systems.
func requireFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			t.Skip("needs root or fusermount3 to mount FUSE")
		}
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse:", err)
	}
}

// mountTest mounts root on a fresh directory and unmounts at cleanup.
func mountTest(t *testing.T, root gofs.InodeEmbedder, opt Options) (string, *Mounted) {
	t.Helper()
	requireFUSE(t)
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	opt.SelfAccess = true // the tests read their mounts
	m, err := MountTree(context.Background(), dir, root, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return dir, m
}

func fakeRoot(fsys *fakeFS, disk []byte, opt Options) gofs.InodeEmbedder {
	ra := bytes.NewReader(disk)
	parts := testParts(ra, fsys)
	return NewRoot(ra, int64(len(disk)), parts, opt)
}

// TestMountTree compares the mounted tree, as the kernel presents it to
// any program, with the filesystem it serves.
func TestMountTree(t *testing.T) {
	requireFUSE(t)
	fsys := sampleTree()
	for i := range 20000 {
		fsys.MapFS[fmt.Sprintf("huge/entry-%05d", i)] = &fstest.MapFile{Mode: 0o644, Sys: stat(uint64(100000+i), 1, 0, 0)}
	}
	disk := testDisk()
	var log logBuf
	start := time.Now()
	mnt, _ := mountTest(t, fakeRoot(fsys, disk, Options{Logger: log.logger(), ImageTime: t0}), Options{})
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("mount took %v", d)
	}
	if n := fsys.readDirs.Load(); n != 0 {
		t.Errorf("mounting read %d directories", n)
	}

	// Raw images are the disk's bytes, exactly bounded.
	for name, want := range map[string][]byte{
		"disk.img": disk,
		"p1.img":   disk[testPartOff : testPartOff+testPartSize],
		"p3.img":   disk[testPartOff+testPartSize : testPartOff+testPartSize+4096],
	} {
		got, err := os.ReadFile(filepath.Join(mnt, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes (%v), want %d identical", name, len(got), err, len(want))
		}
	}

	// Every entry: type, mode, size, owner, times, nlink, ino, rdev,
	// link target, content, xattrs.
	inos := map[uint64]uint64{}
	err := fs.WalkDir(fsys.MapFS, ".", func(p string, d fs.DirEntry, err error) error { // not fsys: its ".." entries would loop
		if err != nil {
			if p == "bad/dir" {
				return fs.SkipDir
			}
			return err
		}
		if p == "bad/dir" {
			return fs.SkipDir
		}
		host := filepath.Join(mnt, "p1", p)
		fi, err := fsys.Lstat(p)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(host, &st); err != nil {
			t.Errorf("%s: %v", p, err)
			return nil
		}
		want := unixMode(fi.Mode())
		if p == "." {
			want = syscall.S_IFDIR | 0o755
		}
		if st.Mode != want {
			t.Errorf("%s: mode %o, want %o", p, st.Mode, want)
		}
		if fi.Mode().IsRegular() && st.Size != fi.Size() {
			t.Errorf("%s: size %d, want %d", p, st.Size, fi.Size())
		}
		if s := fsdrivers.StatOf(fi); s != nil {
			if st.Uid != s.Uid || st.Gid != s.Gid || st.Nlink != uint64(s.Nlink) {
				t.Errorf("%s: owner %d:%d nlink %d, want %d:%d %d", p, st.Uid, st.Gid, st.Nlink, s.Uid, s.Gid, s.Nlink)
			}
			mt := s.Mtime
			if mt.IsZero() {
				mt = fi.ModTime()
			}
			if st.Mtim.Sec != mt.Unix() || st.Mtim.Nsec != int64(mt.Nanosecond()) {
				t.Errorf("%s: mtime %v, want %v", p, st.Mtim, mt)
			}
			if want := treeIno(1, s.Ino); want != 0 && st.Ino != want {
				t.Errorf("%s: ino %#x, want %#x", p, st.Ino, want)
			}
			if s.Nlink > 1 && !fi.IsDir() {
				if prev, ok := inos[s.Ino]; ok && prev != st.Ino {
					t.Errorf("%s: hard link with another inode number", p)
				}
				inos[s.Ino] = st.Ino
			}
			if fi.Mode()&fs.ModeDevice != 0 && st.Rdev != s.Rdev {
				t.Errorf("%s: rdev %x, want %x", p, st.Rdev, s.Rdev)
			}
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			want, _ := fs.ReadLink(fsys, p)
			if got, err := os.Readlink(host); got != want {
				t.Errorf("%s: link %q (%v), want %q", p, got, err, want)
			}
		case fi.Mode().IsRegular() && p != "bad/file":
			want, _ := fs.ReadFile(fsys, p)
			if got, err := os.ReadFile(host); !bytes.Equal(got, want) {
				t.Errorf("%s: content differs (%v)", p, err)
			}
		}
		xa, _ := fsys.Xattrs(p)
		for k, v := range xa {
			buf := make([]byte, 128)
			n, err := unix.Lgetxattr(host, k, buf)
			if err != nil || !bytes.Equal(buf[:n], v) {
				t.Errorf("%s: xattr %s: %q %v", p, k, buf[:max(n, 0)], err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Listings: sorted names, ".." and friends from a hostile image
	// hidden, 20,000 entries.
	for dir, want := range map[string]int{"home": 4, "hostile": 1, "huge": 20000, "many": 169} {
		ents, err := os.ReadDir(filepath.Join(mnt, "p1", dir))
		if err != nil || len(ents) != want {
			t.Errorf("%s: %d entries (%v), want %d", dir, len(ents), err, want)
		}
	}

	// Errors: ENOENT, EROFS, EIO for damaged parts, the rest still works.
	checkErrno := func(what string, err error, want syscall.Errno) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", what, err, want)
		}
	}
	_, err = os.Stat(filepath.Join(mnt, "p1/etc/missing"))
	checkErrno("missing file", err, syscall.ENOENT)
	_, err = os.OpenFile(filepath.Join(mnt, "p1/etc/hosts"), os.O_WRONLY, 0)
	checkErrno("open for writing", err, syscall.EROFS)
	_, err = os.OpenFile(filepath.Join(mnt, "disk.img"), os.O_RDWR, 0)
	checkErrno("disk.img for writing", err, syscall.EROFS)
	err = os.WriteFile(filepath.Join(mnt, "p1/new"), nil, 0o644)
	checkErrno("create", err, syscall.EROFS)
	err = os.Mkdir(filepath.Join(mnt, "p1/newdir"), 0o755)
	checkErrno("mkdir", err, syscall.EROFS)
	err = os.Remove(filepath.Join(mnt, "p1/etc/hosts"))
	checkErrno("unlink", err, syscall.EROFS)
	err = unix.Setxattr(filepath.Join(mnt, "p1/etc/hosts"), "user.x", []byte("y"), 0)
	checkErrno("setxattr", err, syscall.EROFS)
	_, err = os.ReadFile(filepath.Join(mnt, "p1/bad/file"))
	checkErrno("damaged file", err, syscall.EIO)
	_, err = os.ReadDir(filepath.Join(mnt, "p1/bad/dir"))
	checkErrno("damaged dir", err, syscall.EIO)
	if _, err := os.ReadFile(filepath.Join(mnt, "p1/etc/hosts")); err != nil {
		t.Errorf("healthy file after damage: %v", err)
	}
	if !strings.Contains(log.String(), "p1/bad/file") || !strings.Contains(log.String(), "chunk 12") {
		t.Errorf("log does not name the damaged file and chunk:\n%s", log.String())
	}

	var sfs unix.Statfs_t
	if err := unix.Statfs(mnt, &sfs); err != nil || sfs.Blocks != testDiskSize/4096 || sfs.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("statfs: %+v %v", sfs, err)
	}
}

// TestMountParallelReads reads one file from many goroutines at once and
// at scattered offsets, through the kernel.
func TestMountParallelReads(t *testing.T) {
	fsys := sampleTree()
	mnt, _ := mountTest(t, fakeRoot(fsys, testDisk(), Options{}), Options{})
	want := fsys.MapFS["big"].Data
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.Open(filepath.Join(mnt, "p1/big"))
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			buf := make([]byte, 70_001)
			for i := range 20 {
				off := int64((g*7919 + i*104729) % len(want))
				n, err := f.ReadAt(buf, off)
				if err != nil && err != io.EOF {
					errs <- err
					return
				}
				if !bytes.Equal(buf[:n], want[off:off+int64(n)]) {
					errs <- fmt.Errorf("goroutine %d: wrong bytes at %d", g, off)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestMountLoopExt4 loop-mounts pN.img of a generated ext4 partition
// through the kernel and compares what the kernel reads with the source
// directory mke2fs was given: proves pN.img is the partition, byte-exact
// and exactly bounded, at any offset the kernel asks for.
func TestMountLoopExt4(t *testing.T) {
	requireFUSE(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root for a loop mount")
	}
	for _, tool := range []string{"mke2fs", "sgdisk", "losetup", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip("needs", tool)
		}
	}
	src := filepath.Join(t.TempDir(), "src")
	writeTree(t, src)
	imgPath, start, size := makeExt4Disk(t, src)
	img, err := os.Open(imgPath)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	st, _ := img.Stat()
	raw := io.NewSectionReader(img, start, size)
	vol, err := ext4.Open(raw, size)
	if err != nil {
		t.Fatal(err)
	}
	parts := []disk.Part{{Partition: parttable.Partition{Number: 1, Start: start, Size: size}, Reader: raw, Volume: vol}}
	mnt, _ := mountTest(t, NewRoot(img, st.Size(), parts, Options{}), Options{ImagePath: imgPath})

	// The file tree through our ext4 reader is the source tree.
	compareDirs(t, src, filepath.Join(mnt, "p1"))
	var a, b unix.Stat_t
	unix.Lstat(filepath.Join(mnt, "p1/hardlink"), &a)
	unix.Lstat(filepath.Join(mnt, "p1/etc/hosts"), &b)
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hard links: ino %d/%d nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	unix.Lstat(filepath.Join(mnt, "p1/sparse"), &a)
	if a.Blocks*512 >= a.Size {
		t.Errorf("sparse file shows %d blocks for %d bytes", a.Blocks, a.Size)
	}

	if out, err := exec.Command("cmp", filepath.Join(mnt, "disk.img"), imgPath).CombinedOutput(); err != nil {
		t.Fatalf("cmp disk.img: %v %s", err, out)
	}
	kmnt := filepath.Join(t.TempDir(), "k")
	if err := os.Mkdir(kmnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "ro,loop", filepath.Join(mnt, "p1.img"), kmnt).CombinedOutput(); err != nil {
		t.Skipf("loop mount of p1.img failed (no loop devices?): %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", kmnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v %s", err, out)
		}
	})
	compareDirs(t, src, kmnt)
	if out, err := exec.Command("e2fsck", "-fn", filepath.Join(mnt, "p1.img")).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn p1.img: %v\n%s", err, out)
	}
}

// writeTree creates a small tree with the kinds of entries a root
// filesystem has.
func writeTree(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "etc/deep/er/still"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "etc/hosts"), []byte("127.0.0.1 localhost\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "etc/deep/er/still/file"), bytes.Repeat([]byte("deep "), 3000), 0o600))
	big := make([]byte, 5<<20+123)
	for i := range big {
		big[i] = byte(i ^ i>>11)
	}
	must(os.WriteFile(filepath.Join(dir, "big"), big, 0o644))
	must(os.Symlink("etc/hosts", filepath.Join(dir, "link")))
	must(os.Symlink(strings.Repeat("long/", 40)+"target", filepath.Join(dir, "longlink")))
	must(os.Link(filepath.Join(dir, "etc/hosts"), filepath.Join(dir, "hardlink")))
	f, err := os.Create(filepath.Join(dir, "sparse"))
	must(err)
	_, err = f.WriteAt([]byte("island"), 3<<20)
	must(err)
	must(f.Truncate(8 << 20))
	must(f.Close())
	must(os.Chmod(filepath.Join(dir, "etc/hosts"), 0o640))
	must(os.Chtimes(filepath.Join(dir, "big"), t0, t0))
}

// makeExt4Disk builds a GPT disk image holding one ext4 partition made by
// mke2fs -d from src; it returns the image and the partition's bounds.
func makeExt4Disk(t *testing.T, src string) (string, int64, int64) {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	part := filepath.Join(dir, "part.img")
	const start, size = 1 << 20, 32 << 20
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME=1600000000")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, start+size+1<<20); err != nil {
		t.Fatal(err)
	}
	run("sgdisk", "-n", fmt.Sprintf("1:%d:%d", start/512, (start+size)/512-1), "-t", "1:8300", "-U", "11111111-2222-3333-4444-555555555555", img)
	run("mke2fs", "-q", "-t", "ext4", "-b", "4096", "-U", "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "-E", "hash_seed=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "-d", src, part, fmt.Sprintf("%dk", size/1024))
	run("dd", "if="+part, "of="+img, "bs=1M", fmt.Sprintf("seek=%d", start>>20), "conv=notrunc,sparse", "status=none")
	return img, start, size
}

// compareDirs checks that two host trees hold the same entries with the
// same type, permissions, size, content and link targets.
func compareDirs(t *testing.T, want, got string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		g := filepath.Join(got, rel)
		wfi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		gfi, err := os.Lstat(g)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		n++
		if rel != "." && wfi.Mode() != gfi.Mode() {
			t.Errorf("%s: mode %v, want %v", rel, gfi.Mode(), wfi.Mode())
		}
		switch {
		case wfi.Mode().IsRegular():
			a, _ := os.ReadFile(p)
			b, err := os.ReadFile(g)
			if err != nil || !bytes.Equal(a, b) {
				t.Errorf("%s: content differs (%v)", rel, err)
			}
			// mke2fs -d keeps whole seconds only.
			if wfi.ModTime().Unix() != gfi.ModTime().Unix() {
				t.Errorf("%s: mtime %v, want %v", rel, gfi.ModTime(), wfi.ModTime())
			}
		case wfi.Mode()&fs.ModeSymlink != 0:
			a, _ := os.Readlink(p)
			if b, err := os.Readlink(g); a != b {
				t.Errorf("%s: link %q (%v), want %q", rel, b, err, a)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Errorf("compared only %d entries", n)
	}
}

func TestCheckMountpoint(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	full := filepath.Join(dir, "full")
	file := filepath.Join(dir, "file")
	for _, d := range []string{empty, full} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(full, "x.dimg"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dir, filepath.Join(dir, "alias")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		dir, image string
		ok         bool
		msg        string
	}{
		{empty, file, true, ""},
		{empty, "", true, ""},
		{filepath.Join(dir, "missing"), file, false, "no such file"},
		{file, "", false, "not a directory"},
		{full, "", false, "not empty"},
		{full, filepath.Join(full, "x.dimg"), false, "inside the mountpoint"},
		{dir, file, false, "inside the mountpoint"},
		{filepath.Join(dir, "alias"), file, false, "inside the mountpoint"},
	}
	for _, tc := range tests {
		err := CheckMountpoint(tc.dir, tc.image)
		if tc.ok != (err == nil) || (err != nil && (!errors.Is(err, ErrMountpoint) || !strings.Contains(err.Error(), tc.msg))) {
			t.Errorf("CheckMountpoint(%s, %s) = %v; want ok=%v %q", tc.dir, tc.image, err, tc.ok, tc.msg)
		}
	}
}

// TestMountDevice: the mount's device number, read from mountinfo (its
// path escaped there), is the one stat reports; as root the readahead of
// that device was raised.
func TestMountDevice(t *testing.T) {
	requireFUSE(t)
	dir := filepath.Join(t.TempDir(), "a mount\tpoint")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := MountTree(context.Background(), dir, fakeRoot(sampleTree(), testDisk(), Options{}), Options{SelfAccess: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmount()
	real, err := filepath.EvalSymlinks(filepath.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	if got := mountDevice(filepath.Join(real, filepath.Base(dir))); got != want {
		t.Fatalf("mountDevice: %q, stat says %s", got, want)
	}
	if os.Geteuid() == 0 {
		if b, err := os.ReadFile("/sys/class/bdi/" + want + "/read_ahead_kb"); err != nil || strings.TrimSpace(string(b)) != fmt.Sprint(readAheadKB) {
			t.Errorf("read_ahead_kb: %q (%v)", b, err)
		}
	}
}

// TestUnmountBusyAndCancel: Unmount refuses while a file is open; a
// cancelled context unmounts as soon as it is closed.
func TestUnmountBusyAndCancel(t *testing.T) {
	requireFUSE(t)
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m, err := MountTree(ctx, dir, fakeRoot(sampleTree(), testDisk(), Options{}), Options{SelfAccess: true})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "p1/etc/hosts"))
	if err != nil {
		m.Unmount()
		t.Fatal(err)
	}
	if err := m.Unmount(); !errors.Is(err, ErrBusy) {
		t.Errorf("unmount with an open file: %v, want ErrBusy", err)
	}
	cancel()
	time.Sleep(100 * time.Millisecond)
	f.Close()
	select {
	case <-m.Done():
	case <-time.After(10 * time.Second):
		m.Unmount()
		t.Fatal("cancel did not unmount once the file was closed")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("mountpoint still shows %d entries", len(ents))
	}
}

// dirent is one linux_dirent64.
type dirent struct {
	ino  uint64
	off  int64
	typ  uint8
	name string
}

func parseDirents(b []byte) []dirent {
	var out []dirent
	for len(b) >= 19 {
		reclen := int(binary.LittleEndian.Uint16(b[16:]))
		if reclen < 19 || reclen > len(b) {
			break
		}
		name := b[19:reclen]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		out = append(out, dirent{binary.LittleEndian.Uint64(b), int64(binary.LittleEndian.Uint64(b[8:])), b[18], string(name)})
		b = b[reclen:]
	}
	return out
}

// TestMountPosixReadOnly runs the read-only kinds of go-fuse's posixtest
// checks through the kernel: seeking in a directory stream (xfstests
// generic/257), listings that agree when read concurrently, and one getdents
// entry at a time.
func TestMountPosixReadOnly(t *testing.T) {
	mnt, _ := mountTest(t, fakeRoot(sampleTree(), testDisk(), Options{}), Options{})
	dir := filepath.Join(mnt, "p1/many")

	t.Run("DirSeek", func(t *testing.T) {
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		buf := make([]byte, 1<<16)
		var all []dirent
		for {
			n, err := unix.Getdents(fd, buf)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				break
			}
			all = append(all, parseDirents(buf[:n])...)
		}
		if len(all) != 2+169 {
			t.Fatalf("%d entries, want 171", len(all))
		}
		small := make([]byte, 64) // room for one entry
		for i := len(all) - 1; i >= 0; i-- {
			var to int64
			if i > 0 {
				to = all[i-1].off
			}
			if _, err := unix.Seek(fd, to, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			n, err := unix.Getdents(fd, small)
			if err != nil || n == 0 {
				t.Fatalf("getdents after seek to %d: %d, %v", to, n, err)
			}
			if got := parseDirents(small[:n])[0]; got != all[i] {
				t.Fatalf("entry %d after seek: %+v, want %+v", i, got, all[i])
			}
		}
	})

	t.Run("ReadDirConsistency", func(t *testing.T) {
		want, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 20 {
					got, err := os.ReadDir(dir)
					if err != nil || len(got) != len(want) {
						errs <- fmt.Errorf("%d entries (%v), want %d", len(got), err, len(want))
						return
					}
					for i := range got {
						if got[i].Name() != want[i].Name() {
							errs <- fmt.Errorf("entry %d: %s, want %s", i, got[i].Name(), want[i].Name())
							return
						}
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("FdLeak", func(t *testing.T) {
		before := countFDs(t)
		for range 200 {
			b, err := os.ReadFile(filepath.Join(mnt, "p1/etc/hosts"))
			if err != nil || len(b) != 20 {
				t.Fatal(err)
			}
		}
		if after := countFDs(t); after > before+2 {
			t.Errorf("open descriptors grew from %d to %d", before, after)
		}
	})
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip(err)
	}
	return len(ents)
}
