package ext4

import (
	"bytes"
	"encoding/binary"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/fsdrivers/fstestutil"
)

// kernelLayouts writes, through a kernel mount, the layouts mke2fs -d does
// not produce: deep extent trees, holes and unwritten extents, files over
// 4 GiB, triple-indirect blocks, xattr blocks and EA inodes, ACLs,
// timestamps beyond 2038 and before 1970, inline data written by the
// kernel.
func kernelLayouts(t *testing.T, dir string, bs int64) map[string][]byte {
	t.Helper()
	at := map[string][]byte{} // name -> expected bytes at offset 5 GiB (for huge sparse files)
	p := func(name string) string { return filepath.Join(dir, name) }
	pattern := func(n int, seed byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7) ^ seed
		}
		return b
	}

	// 1000 one-block extents separated by holes: an extent tree of depth
	// 1 (4 KiB blocks) or 2 (1 KiB), or single/double indirect blocks.
	f, err := os.Create(p("frag"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range int64(1000) {
		f.WriteAt(pattern(int(bs), byte(i)), i*2*bs)
	}
	f.Close()

	// Over 4 GiB (i_size_high), data past the triple-indirect boundary on
	// 1 KiB block maps, a trailing hole.
	f, _ = os.Create(p("huge"))
	f.Write([]byte("start"))
	want := pattern(10000, 0x5A)
	f.WriteAt(want, 5<<30)
	f.Truncate(5<<30 + 1<<20)
	f.Close()
	at["huge"] = want

	// Trailing hole only.
	f, _ = os.Create(p("trailing"))
	f.Write(pattern(100, 1))
	f.Truncate(1 << 20)
	f.Close()

	// Unwritten extents around a written block, and preallocation past EOF.
	f, _ = os.Create(p("prealloc"))
	if err := unix.Fallocate(int(f.Fd()), 0, 0, 1<<20); err == nil {
		f.WriteAt(pattern(10, 2), 300000)
		unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 1<<20, 1<<20)
	}
	f.Close()

	// A file grown by many interleaved appends (fragmented, contiguous runs).
	a, _ := os.Create(p("interleave-a"))
	b, _ := os.Create(p("interleave-b"))
	for i := range 30 {
		a.Write(pattern(3*int(bs)+7, byte(i)))
		a.Sync()
		b.Write(pattern(2*int(bs), byte(i+1)))
		b.Sync()
	}
	a.Close()
	b.Close()

	// Extended attributes: in-inode, an external block, an EA inode (when
	// the filesystem has ea_inode), on a directory and on a symlink.
	os.WriteFile(p("xattrs"), []byte("x"), 0o644)
	setx := func(name, attr string, val []byte) {
		if err := unix.Lsetxattr(p(name), attr, val, 0); err != nil {
			t.Fatalf("setxattr %s %s (%d bytes): %v", name, attr, len(val), err)
		}
	}
	setx("xattrs", "user.small", []byte("s"))
	setx("xattrs", "user.medium", bytes.Repeat([]byte("m"), int(min(bs-200, 900))))
	setx("xattrs", "trusted.t", []byte("trusted"))
	setx("xattrs", "security.s", []byte("sec"))
	os.Mkdir(p("xdir"), 0o755)
	setx("xdir", "user.d", []byte("dir attr"))
	os.Symlink("xattrs", p("xlink"))
	setx("xlink", "trusted.onlink", []byte("l"))
	if hasFeature(t, dir, "ea_inode") {
		setx("xattrs", "user.huge", pattern(20000, 3))
	}
	if _, err := os.Stat("/usr/bin/setfacl"); err == nil {
		runCmd(t, "setfacl", "-m", "u:1234:rw,g:5678:r", p("xattrs"))
		runCmd(t, "setfacl", "-d", "-m", "u:42:rwx", p("xdir"))
	}

	// Timestamps with epoch bits and nanoseconds.
	os.WriteFile(p("future"), []byte("f"), 0o644)
	os.Chtimes(p("future"), time.Date(2250, 1, 2, 3, 4, 5, 678, time.UTC), time.Date(2200, 1, 1, 0, 0, 0, 999999999, time.UTC))
	os.WriteFile(p("past"), []byte("p"), 0o644)
	os.Chtimes(p("past"), time.Date(1901, 12, 14, 0, 0, 0, 0, time.UTC), time.Date(1950, 5, 5, 5, 5, 5, 5, time.UTC))

	// Small files and directories (inline with inline_data), a slow
	// symlink, links, special files, deep nesting, renames.
	os.MkdirAll(p("a/b/c/d/e/f/g"), 0o750)
	os.WriteFile(p("a/b/c/d/e/f/g/leaf"), []byte("leaf"), 0o600)
	os.WriteFile(p("a/tiny"), []byte("tiny file"), 0o644)
	os.WriteFile(p("a/exactly60"), bytes.Repeat([]byte("6"), 60), 0o644)
	os.WriteFile(p("a/inline-plus"), bytes.Repeat([]byte("7"), 100), 0o644)
	for i := range 8 {
		os.WriteFile(p("a/b/n"+string(rune('0'+i))), []byte{byte(i)}, 0o644)
	}
	os.MkdirAll(p("a/"+strings.Repeat("long/", 20)), 0o755)
	os.WriteFile(p("a/"+strings.Repeat("long/", 20)+"target"), []byte("t"), 0o644)
	os.Symlink(strings.Repeat("long/", 20)+"target", p("a/slowlink"))
	os.Symlink("/a/b/c/../c/d/e/f/g/leaf", p("a/abs-dotdot"))
	os.Link(p("a/tiny"), p("a/b/tiny-link"))
	os.Link(p("a/tiny"), p("a/b/c/tiny-link2"))
	syscall.Mknod(p("a/fifo"), syscall.S_IFIFO|0o600, 0)
	syscall.Mknod(p("a/tty"), syscall.S_IFCHR|0o620, mkdev(4, 64))
	os.Rename(p("a/b/n3"), p("a/renamed"))
	os.Remove(p("a/b/n5"))
	return at
}

func hasFeature(t *testing.T, mnt, feature string) bool {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	dev := ""
	out, _ := os.ReadFile("/proc/self/mounts")
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == mnt {
			dev = f[0]
		}
	}
	if dev == "" {
		return false
	}
	return strings.Contains(runCmd(t, "dumpe2fs", "-h", dev), feature)
}

// TestKernelWrittenLayouts has the kernel write tricky layouts, then
// compares our view with the kernel's and checks the layouts really have
// the shape under test.
func TestKernelWrittenLayouts(t *testing.T) {
	need(t, "mke2fs", "e2fsck", "dumpe2fs")
	needLoop(t)
	for _, c := range []fsConfig{
		{name: "ext4-4k", size: 64 << 20, opts: []string{"-t", "ext4", "-O", "ea_inode"}},
		{name: "ext4-1k-inline", size: 64 << 20, opts: []string{"-t", "ext4", "-b", "1024", "-O", "inline_data,ea_inode"}},
		{name: "ext4-nocsum-4k", size: 64 << 20, opts: []string{"-t", "ext4", "-O", "^metadata_csum"}},
		{name: "ext3-1k", size: 64 << 20, opts: []string{"-t", "ext3", "-b", "1024"}},
		{name: "ext2-4k", size: 64 << 20, opts: []string{"-t", "ext2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := mkfs(t, c.size, "", c.opts...)
			dir, unmount := mount(t, img, true)
			bs := int64(4096)
			if strings.Contains(c.name, "1k") {
				bs = 1024
			}
			start := time.Now()
			huge := kernelLayouts(t, dir, bs)
			t.Logf("layouts %v", time.Since(start))
			unmount()
			t.Logf("unmount %v", time.Since(start))
			fsck(t, img)
			t.Logf("fsck %v", time.Since(start))

			v := openImage(t, img)
			rdir, _ := mount(t, img, false)
			n := fstestutil.CompareTreeWith(t, v, rdir, fstestutil.Options{HashLimit: 1 << 30, CompareBtime: true})
			t.Logf("%d entries compared %v", n, time.Since(start))
			for name, want := range huge {
				f, err := v.Open(name)
				if err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(want)+10)
				if n, err := f.(io.ReaderAt).ReadAt(got, 5<<30-5); n != len(got) || err != nil {
					t.Fatalf("ReadAt 5 GiB: %d, %v", n, err)
				}
				if !bytes.Equal(got[5:len(want)+5], want) || !bytes.Equal(got[:5], make([]byte, 5)) {
					t.Errorf("%s: wrong bytes around 5 GiB", name)
				}
				f.Close()
			}
			// The shapes under test.
			frag, err := v.walk("t", "frag", false)
			if err != nil {
				t.Fatal(err)
			}
			if frag.flags&flagExtents != 0 {
				root, _ := v.parseExtNode(frag.block[:], extLoc{})
				if wantDepth := map[int64]uint16{4096: 1, 1024: 2}[bs]; root.depth < wantDepth {
					t.Errorf("frag extent tree depth %d, want >= %d", root.depth, wantDepth)
				}
			}
			if frag.flags&flagExtents == 0 {
				hugeIno, err := v.walk("t", "huge", false)
				if err != nil {
					t.Fatal(err)
				}
				if bs == 1024 && binary.LittleEndian.Uint32(hugeIno.block[14*4:]) == 0 {
					t.Errorf("huge has no triple indirect block")
				}
			}
			if v.sb.incompat&incompatInlineData != 0 {
				for _, name := range []string{"a/tiny", "a/inline-plus", "xdir", "a/b/c/d/e/f"} {
					ino, err := v.walk("t", name, false)
					if err != nil || ino.flags&flagInlineData == 0 {
						t.Errorf("%s is not inline (%v)", name, err)
					}
				}
			}
			if xs, err := v.Xattrs("xattrs"); err != nil || len(xs["user.medium"]) == 0 {
				t.Errorf("Xattrs(xattrs) = %d attributes, %v", len(xs), err)
			} else if _, ok := xs["user.huge"]; !ok && v.sb.incompat&incompatEAInode != 0 {
				t.Errorf("no EA-inode attribute user.huge")
			}
			checkFSTest(t, v)
			t.Logf("fstest %v", time.Since(start))
		})
	}
}

// checkFSTest runs testing/fstest over the whole tree (it checks ReadDir,
// Stat, Open, Read/ReadAt/Seek consistency and io/fs error behaviour).
func checkFSTest(t *testing.T, v *Volume) {
	t.Helper()
	view := fstestView{v}
	var expected []string
	ents, err := view.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		expected = append(expected, e.Name())
	}
	if err := fstest.TestFS(view, expected...); err != nil {
		t.Errorf("fstest.TestFS: %v", err)
	}
}

// fstestView hides from fstest the entries it cannot take: dangling
// symlinks (it opens every entry) and files over fstestMaxSize (it reads
// each many times in tiny pieces; CompareTree already checked them).
type fstestView struct{ *Volume }

func (w fstestView) keep(dir string, e fs.DirEntry) bool {
	fi, err := w.Volume.Stat(path.Join(dir, e.Name()))
	return err == nil && fi.Size() <= fstestMaxSize
}

func (w fstestView) ReadDir(name string) ([]fs.DirEntry, error) {
	ents, err := w.Volume.ReadDir(name)
	return slices.DeleteFunc(ents, func(e fs.DirEntry) bool { return !w.keep(name, e) }), err
}

func (w fstestView) Open(name string) (fs.File, error) {
	f, err := w.Volume.Open(name)
	if d, ok := f.(*dirFile); ok && err == nil {
		return &fstestDir{d, w}, nil
	}
	return f, err
}

type fstestDir struct {
	*dirFile
	w fstestView
}

func (d *fstestDir) ReadDir(n int) ([]fs.DirEntry, error) {
	for {
		ents, err := d.dirFile.ReadDir(n)
		ents = slices.DeleteFunc(ents, func(e fs.DirEntry) bool { return !d.w.keep(d.name, e) })
		if len(ents) > 0 || err != nil || n <= 0 {
			return ents, err
		}
	}
}

const fstestMaxSize = 256 << 10
