package ext4

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dimg-project/dimg/fsdrivers"

	"github.com/dimg-project/dimg/fsdrivers/fstestutil"
)

// fsConfig is one mke2fs layout the tests run against.
type fsConfig struct {
	name string
	size int64
	opts []string
	typ  string // expected Volume.Type()
	// noMount: the kernel cannot mount it (64 KiB blocks on 4 KiB pages),
	// so compare with the source directory mke2fs copied instead.
	noMount bool
}

var configs = []fsConfig{
	{"ext2-1k", 48 << 20, []string{"-t", "ext2", "-b", "1024"}, "ext2", false},
	{"ext2-128-inode", 48 << 20, []string{"-t", "ext2", "-I", "128"}, "ext2", false},
	{"ext3-4k", 48 << 20, []string{"-t", "ext3"}, "ext3", false},
	{"ext3-2k", 48 << 20, []string{"-t", "ext3", "-b", "2048"}, "ext3", false},
	{"ext4", 64 << 20, []string{"-t", "ext4"}, "ext4", false},
	{"ext4-1k", 48 << 20, []string{"-t", "ext4", "-b", "1024"}, "ext4", false},
	{"ext4-no-csum", 64 << 20, []string{"-t", "ext4", "-O", "^metadata_csum,uninit_bg"}, "ext4", false},
	{"ext4-no-64bit", 64 << 20, []string{"-t", "ext4", "-O", "^64bit"}, "ext4", false},
	{"ext4-inline", 64 << 20, []string{"-t", "ext4", "-O", "inline_data"}, "ext4", false},
	{"ext4-blockmap", 64 << 20, []string{"-t", "ext4", "-O", "^extent,^flex_bg,^64bit"}, "ext4", false},
	{"ext4-meta_bg", 64 << 20, []string{"-t", "ext4", "-b", "1024", "-O", "meta_bg,^resize_inode"}, "ext4", false},
	{"ext4-sparse_super2", 64 << 20, []string{"-t", "ext4", "-O", "sparse_super2"}, "ext4", false},
	{"ext4-bigalloc", 128 << 20, []string{"-t", "ext4", "-O", "bigalloc", "-C", "16384"}, "ext4", false},
	{"ext4-csum_seed", 64 << 20, []string{"-t", "ext4", "-O", "metadata_csum_seed"}, "ext4", false},
	{"ext4-64k", 128 << 20, []string{"-t", "ext4", "-b", "65536"}, "ext4", true},
}

var (
	srcOnce sync.Once
	srcDir  string
	srcErr  error
)

// sourceTree builds the shared source directory once per test binary.
func sourceTree(t *testing.T) string {
	t.Helper()
	srcOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ext4-src-")
		if err != nil {
			srcErr = err
			return
		}
		srcDir = filepath.Join(dir, "root")
		os.Mkdir(srcDir, 0o755)
		buildTree(t, srcDir, true)
	})
	if srcErr != nil {
		t.Fatal(srcErr)
	}
	return srcDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if srcDir != "" {
		os.RemoveAll(filepath.Dir(srcDir))
	}
	os.Exit(code)
}

// TestTreeMatchesKernel builds each layout with mke2fs -d and compares our
// reading of every file with the kernel's (a read-only loop mount).
func TestTreeMatchesKernel(t *testing.T) {
	need(t, "mke2fs", "e2fsck")
	needLoop(t)
	src := sourceTree(t)
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			img := mkfs(t, c.size, src, c.opts...)
			fsck(t, img)
			v := openImage(t, img)
			if v.Type() != c.typ {
				t.Errorf("Type() = %q, want %q", v.Type(), c.typ)
			}
			if c.noMount {
				// mke2fs copied src: everything but inode numbers, link
				// counts (lost+found), atimes, ctimes, allocation and
				// sub-second mtimes (mke2fs -d keeps seconds) matches.
				n := fstestutil.CompareTreeWith(t, v, src, fstestutil.Options{
					IgnoreIno: true, IgnoreNlink: true, IgnoreCtime: true, IgnoreAtime: true,
					IgnoreBlocks: true, MtimeRound: time.Second,
					Skip: func(rel string) bool { return rel == "lost+found" },
				})
				t.Logf("%d entries compared with the source", n)
				return
			}
			dir, _ := mount(t, img, false)
			n := fstestutil.CompareTreeWith(t, v, dir, kernelView)
			t.Logf("%d entries compared", n)
			checkFSTest(t, v)
		})
	}
}

// TestIdentityMatchesBlkid compares Type, UUID and Label with blkid -p.
func TestIdentityMatchesBlkid(t *testing.T) {
	need(t, "mke2fs", "blkid")
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			img := mkfs(t, c.size, "", append([]string{"-L", "lbl-" + c.name[:min(len(c.name), 10)]}, c.opts...)...)
			want := map[string]string{}
			for _, line := range strings.Split(runCmd(t, "blkid", "-p", "-o", "export", img), "\n") {
				if k, v, ok := strings.Cut(line, "="); ok {
					want[k] = v
				}
			}
			var d Driver
			f, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fi, _ := f.Stat()
			vol, err := d.Open(f, fi.Size())
			if err != nil {
				t.Fatal(err)
			}
			if vol.Type() != want["TYPE"] || vol.Type() != c.typ || vol.UUID() != want["UUID"] || vol.Label() != want["LABEL"] {
				t.Errorf("got %s %s %q, blkid %s %s %q", vol.Type(), vol.UUID(), vol.Label(), want["TYPE"], want["UUID"], want["LABEL"])
			}
		})
	}
	if _, err := (Driver{}).Open(bytes.NewReader(make([]byte, 1<<20)), 1<<20); !errors.Is(err, fsdrivers.ErrNotFound) {
		t.Errorf("Open(zeros) = %v, want ErrNotFound", err)
	}
}

// TestSymlinkResolution follows symlinks the way the kernel does, within
// the filesystem: relative, absolute (against our root), chains, "..",
// through directories, loops (ELOOP), and a symlink as a middle component.
func TestSymlinkResolution(t *testing.T) {
	need(t, "mke2fs")
	src := sourceTree(t)
	extra := filepath.Join(t.TempDir(), "root")
	runCmd(t, "cp", "-a", src, extra)
	os.Symlink("loop2", filepath.Join(extra, "loop1"))
	os.Symlink("loop1", filepath.Join(extra, "loop2"))
	os.Symlink("../../../../../../small.txt", filepath.Join(extra, "dir/escape"))
	os.Symlink("/../../small.txt", filepath.Join(extra, "absescape"))
	os.Symlink("small.txt/", filepath.Join(extra, "notdir"))
	img := mkfs(t, 64<<20, extra, "-t", "ext4")
	v := openImage(t, img)
	for _, c := range []struct {
		name, want string
	}{
		{"fastlink", "hello, world\n"},
		{"chain1", "deep\n"},
		{"slowlink", "deep\n"},
		{"dirlink/sub/deep/file", "deep\n"},
		{"abslink/deep/file", "deep\n"},
		{"dir/uplink", "hello, world\n"},
		{"dir/escape", "hello, world\n"}, // ".." stops at our root
		{"absescape", "hello, world\n"},
	} {
		b, err := fs.ReadFile(v, c.name)
		if err != nil || string(b) != c.want {
			t.Errorf("ReadFile(%s) = %q, %v; want %q", c.name, b, err, c.want)
		}
	}
	if _, err := v.Open("loop1"); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("Open(loop1) = %v, want ELOOP", err)
	}
	if _, err := v.Lstat("loop1"); err != nil {
		t.Errorf("Lstat(loop1) = %v", err)
	}
	if _, err := v.Open("notdir"); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("Open(notdir) = %v, want ENOTDIR", err)
	}
	if _, err := v.Open("dangling"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open(dangling) = %v, want ErrNotExist", err)
	}
	if _, err := v.Stat("small.txt/x"); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("Stat(small.txt/x) = %v, want ENOTDIR", err)
	}
	for _, bad := range []string{"/small.txt", "dir/../small.txt", "", "dir/"} {
		if _, err := v.Open(bad); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("Open(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if fi, err := v.Stat("dirlink"); err != nil || !fi.IsDir() || fi.Name() != "dirlink" {
		t.Errorf("Stat(dirlink) = %v, %v", fi, err)
	}
	if fi, err := v.Lstat("dirlink"); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("Lstat(dirlink) = %v, %v", fi, err)
	}
	if _, err := v.ReadLink("small.txt"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("ReadLink(regular file) = %v, want ErrInvalid", err)
	}

	// One contiguous file, one read: no per-block ReadAt calls.
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	cr := &countingReaderAt{r: f}
	v2, err := Open(cr, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	rf, err := v2.Open("random.bin")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	cr.n.Store(0)
	if _, err := rf.(io.ReaderAt).ReadAt(buf, 4096); err != nil {
		t.Fatal(err)
	}
	if n := cr.n.Load(); n > 2 {
		t.Errorf("a 1 MiB read of a contiguous file took %d ReadAt calls", n)
	}
}
