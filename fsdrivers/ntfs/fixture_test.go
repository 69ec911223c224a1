package ntfs

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The fixtures are real NTFS volumes: made by mkntfs (-T: fixed times and
// serial), filled through an ntfs-3g FUSE mount, then mounted read-only
// by ntfs-3g again as the oracle.

func needNTFS3G(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting ntfs-3g needs root")
	}
	for _, tool := range []string{"mkntfs", "ntfs-3g", "ntfsfix", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
}

func runCmd(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// mount mounts img with ntfs-3g at a new directory; ro for the oracle.
func mount(t testing.TB, img string, ro bool) string {
	t.Helper()
	dir := t.TempDir()
	args := []string{img, dir}
	if ro {
		args = []string{"-o", "ro", img, dir}
	}
	runCmd(t, "ntfs-3g", args...)
	t.Cleanup(func() { unmount(t, dir) })
	return dir
}

func unmount(t testing.TB, dir string) {
	if !isMounted(dir) {
		return
	}
	if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
		t.Errorf("umount %s: %v\n%s", dir, err, out)
	}
}

func isMounted(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	return bytes.Contains(b, []byte(" "+dir+" "))
}

type fixture struct {
	img  string // the volume
	mnt  string // ntfs-3g read-only mount of it
	size int64
}

// makeVolume creates a volume of size bytes with mkntfs, fills it with
// fill through a read-write ntfs-3g mount, and mounts it read-only.
func makeVolume(t testing.TB, size int64, mkntfsArgs []string, fill func(t testing.TB, root string)) fixture {
	t.Helper()
	needNTFS3G(t)
	img := filepath.Join(t.TempDir(), "ntfs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	runCmd(t, "mkntfs", append(append([]string{"-F", "-Q", "-T"}, mkntfsArgs...), img)...)
	if fill != nil {
		rw := mount(t, img, false)
		fill(t, rw)
		unmount(t, rw)
	}
	return fixture{img: img, mnt: mount(t, img, true), size: size}
}

func open(t testing.TB, img string) *Volume {
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
		t.Fatalf("Open(%s): %v", img, err)
	}
	return v
}

// setAttrib sets the NTFS file attributes through ntfs-3g's xattr.
func setAttrib(t testing.TB, p string, attrs uint32) {
	t.Helper()
	v := []byte{byte(attrs >> 24), byte(attrs >> 16), byte(attrs >> 8), byte(attrs)}
	if err := unix.Setxattr(p, "system.ntfs_attrib_be", v, 0); err != nil {
		t.Fatalf("set attributes of %s: %v", p, err)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// randBytes is deterministic pseudo-random content.
func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// text is compressible content.
func text(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "line %d of a compressible text file, the quick brown fox\n", i)
	}
	return b.Bytes()[:n]
}

// manyName names the files of the big directory.
func manyName(i int) string { return fmt.Sprintf("many/file-%04d-with-a-longish-name.txt", i) }

// fillTree is the everyday content: every kind of file ntfs-3g can write.
func fillTree(compress bool) func(t testing.TB, root string) {
	return func(t testing.TB, root string) {
		p := func(rel string) string { return filepath.Join(root, rel) }
		write := func(rel string, data []byte) { must(t, os.WriteFile(p(rel), data, 0o644)) }
		for _, d := range []string{"dir/sub", "links", "日本語", "many", "comp", "deep/a/b/c/d"} {
			must(t, os.MkdirAll(p(d), 0o755))
		}
		write("small.txt", []byte("hello\n"))
		write("empty", nil)
		write("medium.bin", randBytes(1, 50_000))
		write("dir/big.bin", randBytes(2, 3<<20+123))
		write("deep/a/b/c/d/leaf.txt", []byte("deep\n"))
		write("ünïcødé ✓.txt", []byte("unicode\n"))
		write("日本語/ファイル.txt", []byte("nihongo\n"))
		write(strings.Repeat("l", 255), []byte("long name\n"))
		write("ro.txt", []byte("read only\n"))
		setAttrib(t, p("ro.txt"), 0x21)

		// Sparse: islands of data in a 20 MiB file.
		f, err := os.Create(p("sparse.bin"))
		must(t, err)
		must(t, f.Truncate(20<<20))
		for _, off := range []int64{1 << 20, 7<<20 + 4321, 20<<20 - 10} {
			_, err := f.WriteAt([]byte("island of data"), off)
			must(t, err)
		}
		must(t, f.Close())
		// Fragmented: a 1-byte island every 128 KiB gives ~1000 runs, more
		// than one record holds, so the runlist spreads over extension
		// records listed in an $ATTRIBUTE_LIST.
		f, err = os.Create(p("dir/fragmented.bin"))
		must(t, err)
		must(t, f.Truncate(64<<20))
		for off := int64(0); off < 64<<20; off += 128 << 10 {
			_, err := f.WriteAt([]byte{byte(off>>16) | 1}, off)
			must(t, err)
		}
		must(t, f.Close())

		if compress {
			setAttrib(t, p("comp"), 0x810) // a compressed directory: new files compress
		}
		write("comp/text.txt", text(1<<20+17))
		write("comp/random.bin", randBytes(3, 200_000)) // incompressible: raw units
		write("comp/tiny.txt", []byte("tiny\n"))
		f, err = os.Create(p("comp/holes.bin"))
		must(t, err)
		must(t, f.Truncate(3<<20))
		_, err = f.WriteAt(text(100_000), 0)
		must(t, err)
		_, err = f.WriteAt(text(70_000), 2<<20+12345)
		must(t, err)
		must(t, f.Close())

		// Hard links, in one directory and across directories.
		must(t, os.Link(p("small.txt"), p("dir/hardlink.txt")))
		write("links/a", []byte("linked\n"))
		must(t, os.Link(p("links/a"), p("links/b")))
		must(t, os.Link(p("links/a"), p("links/c")))

		// Symlinks (ntfs-3g writes Interix symlinks).
		for name, target := range map[string]string{
			"sym": "small.txt", "dir/up": "../small.txt", "abssym": "/dir", "dangling": "nowhere",
			"chain": "sym", "dirsym": "dir/sub", "links/unicode": "../ünïcødé ✓.txt",
		} {
			must(t, os.Symlink(target, p(name)))
		}
		// Special files (Interix too).
		must(t, unix.Mkfifo(p("fifo"), 0o644))
		must(t, unix.Mknod(p("chr"), unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3))))
		must(t, unix.Mknod(p("blk"), unix.S_IFBLK|0o644, int(unix.Mkdev(8, 1))))

		// Named streams.
		must(t, unix.Setxattr(p("small.txt"), "user.stream1", []byte("ads value"), 0))
		must(t, unix.Setxattr(p("dir"), "user.dirstream", []byte("on a directory"), 0))
		must(t, unix.Setxattr(p("medium.bin"), "user.bin", randBytes(4, 3000), 0))

		// A directory big enough for a multi-level index, then deletions
		// that leave stale entries in freed index blocks.
		for i := 0; i < 1500; i++ {
			write(manyName(i), []byte(fmt.Sprint(i)))
		}
		for i := 0; i < 1500; i++ {
			if i%3 == 0 || i >= 400 && i < 1000 {
				must(t, os.Remove(p(manyName(i))))
			}
		}
	}
}
