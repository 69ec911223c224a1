package ext4

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/fsdrivers"
)

// The writer is tested differentially: every operation is applied through
// the WritableFS and, as a mirror, to a host directory with the same
// system calls; after Close the image must pass e2fsck -fn and a kernel
// mount of it must show the mirror's tree exactly.

type wpair struct {
	t    *testing.T
	w    fsdrivers.WritableFS
	host string
}

func openW(t *testing.T, img string) fsdrivers.WritableFS {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, _ := f.Stat()
	w, err := Driver{}.OpenWritable(f, fi.Size())
	if err != nil {
		t.Fatalf("OpenWritable: %v", err)
	}
	return w
}

// resolve walks a slash path to its node (no symlinks followed).
func (p *wpair) resolve(rel string) (uint64, error) {
	n := p.w.Root()
	if rel == "" || rel == "." {
		return n, nil
	}
	for _, c := range strings.Split(rel, "/") {
		a, err := p.w.Lookup(n, c)
		if err != nil {
			return 0, err
		}
		n = a.Ino
	}
	return n, nil
}

func (p *wpair) parent(rel string) (uint64, string) {
	p.t.Helper()
	dir, name := path.Split(rel)
	n, err := p.resolve(strings.TrimSuffix(dir, "/"))
	if err != nil {
		p.t.Fatalf("resolve %s: %v", dir, err)
	}
	return n, name
}

func (p *wpair) hp(rel string) string { return filepath.Join(p.host, rel) }

var testOwner = fsdrivers.Owner{Uid: 1000, Gid: 100}

func (p *wpair) mkdir(rel string, mode uint32) {
	p.t.Helper()
	d, name := p.parent(rel)
	if _, err := p.w.Mkdir(d, name, mode, testOwner); err != nil {
		p.t.Fatalf("Mkdir %s: %v", rel, err)
	}
	must(p.t, os.Mkdir(p.hp(rel), fs.FileMode(mode&0o777)))
	fi, err := os.Stat(p.hp(rel))
	must(p.t, err)
	// Keep the setgid bit the host inherited from a setgid parent.
	must(p.t, os.Chmod(p.hp(rel), fs.FileMode(mode&0o777)|modeBits(mode)|fi.Mode()&fs.ModeSetgid))
	must(p.t, os.Lchown(p.hp(rel), int(testOwner.Uid), int(testOwner.Gid)))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (p *wpair) write(rel string, data []byte, off int64) {
	p.t.Helper()
	n, err := p.resolve(rel)
	if errors.Is(err, syscall.ENOENT) {
		d, name := p.parent(rel)
		a, err := p.w.Create(d, name, fsdrivers.ModeFile|0o644, 0, testOwner)
		if err != nil {
			p.t.Fatalf("Create %s: %v", rel, err)
		}
		n = a.Ino
		f, err := os.OpenFile(p.hp(rel), os.O_CREATE|os.O_WRONLY, 0o644)
		must(p.t, err)
		f.Close()
		must(p.t, os.Chmod(p.hp(rel), 0o644))
		must(p.t, os.Lchown(p.hp(rel), int(testOwner.Uid), int(testOwner.Gid)))
	} else if err != nil {
		p.t.Fatal(err)
	}
	if k, err := p.w.WriteAt(n, data, off); err != nil || k != len(data) {
		p.t.Fatalf("WriteAt %s %d+%d: %d, %v", rel, off, len(data), k, err)
	}
	f, err := os.OpenFile(p.hp(rel), os.O_WRONLY, 0)
	must(p.t, err)
	_, err = f.WriteAt(data, off)
	must(p.t, err)
	f.Close()
}

func (p *wpair) truncate(rel string, size int64) {
	p.t.Helper()
	n, err := p.resolve(rel)
	must(p.t, err)
	if _, err := p.w.Setattr(n, fsdrivers.SetAttr{Size: &size}); err != nil {
		p.t.Fatalf("truncate %s: %v", rel, err)
	}
	must(p.t, os.Truncate(p.hp(rel), size))
}

func (p *wpair) symlink(target, rel string) {
	p.t.Helper()
	d, name := p.parent(rel)
	if _, err := p.w.Symlink(d, name, target, testOwner); err != nil {
		p.t.Fatalf("Symlink %s: %v", rel, err)
	}
	must(p.t, os.Symlink(target, p.hp(rel)))
	must(p.t, os.Lchown(p.hp(rel), int(testOwner.Uid), int(testOwner.Gid)))
}

func (p *wpair) link(old, rel string) {
	p.t.Helper()
	n, err := p.resolve(old)
	must(p.t, err)
	d, name := p.parent(rel)
	if _, err := p.w.Link(n, d, name); err != nil {
		p.t.Fatalf("Link %s %s: %v", old, rel, err)
	}
	must(p.t, os.Link(p.hp(old), p.hp(rel)))
}

func (p *wpair) mknod(rel string, mode uint32, dev uint64) {
	p.t.Helper()
	d, name := p.parent(rel)
	if _, err := p.w.Create(d, name, mode, dev, testOwner); err != nil {
		p.t.Fatalf("Create %s: %v", rel, err)
	}
	must(p.t, unix.Mknod(p.hp(rel), mode, int(dev)))
	must(p.t, os.Chmod(p.hp(rel), fs.FileMode(mode&0o777)))
	must(p.t, os.Lchown(p.hp(rel), int(testOwner.Uid), int(testOwner.Gid)))
}

func (p *wpair) rename(old, rel string, flags fsdrivers.RenameFlags) {
	p.t.Helper()
	od, on := p.parent(old)
	nd, nn := p.parent(rel)
	if err := p.w.Rename(od, on, nd, nn, flags); err != nil {
		p.t.Fatalf("Rename %s %s: %v", old, rel, err)
	}
	must(p.t, unix.Renameat2(unix.AT_FDCWD, p.hp(old), unix.AT_FDCWD, p.hp(rel), uint(flags)))
}

func (p *wpair) unlink(rel string) {
	p.t.Helper()
	d, name := p.parent(rel)
	if err := p.w.Unlink(d, name); err != nil {
		p.t.Fatalf("Unlink %s: %v", rel, err)
	}
	must(p.t, os.Remove(p.hp(rel)))
}

func (p *wpair) rmdir(rel string) {
	p.t.Helper()
	d, name := p.parent(rel)
	if err := p.w.Rmdir(d, name); err != nil {
		p.t.Fatalf("Rmdir %s: %v", rel, err)
	}
	must(p.t, os.Remove(p.hp(rel)))
}

func (p *wpair) chmod(rel string, mode uint32) {
	p.t.Helper()
	n, err := p.resolve(rel)
	must(p.t, err)
	if _, err := p.w.Setattr(n, fsdrivers.SetAttr{Mode: &mode}); err != nil {
		p.t.Fatal(err)
	}
	must(p.t, os.Chmod(p.hp(rel), fs.FileMode(mode&0o777)|modeBits(mode)))
}

func modeBits(m uint32) fs.FileMode {
	var f fs.FileMode
	if m&0o4000 != 0 {
		f |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		f |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		f |= fs.ModeSticky
	}
	return f
}

// stampTimes gives every entry the same distinct mtime on both sides so
// the comparison can include times (nanoseconds and all).
func (p *wpair) stampTimes() {
	p.t.Helper()
	k := 0
	filepath.WalkDir(p.host, func(hp string, d fs.DirEntry, err error) error {
		must(p.t, err)
		rel, _ := filepath.Rel(p.host, hp)
		if rel == "." || strings.HasPrefix(rel, "lost+found") {
			return nil
		}
		k++
		mt := time.Unix(1600000000+int64(k)*1000, int64(k)*1234567)
		at := time.Unix(1500000000+int64(k), 999999999)
		n, err := p.resolve(filepath.ToSlash(rel))
		must(p.t, err)
		if _, err := p.w.Setattr(n, fsdrivers.SetAttr{Mtime: &mt, Atime: &at}); err != nil {
			p.t.Fatal(err)
		}
		ts := []unix.Timespec{unix.NsecToTimespec(at.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}
		must(p.t, unix.UtimesNanoAt(unix.AT_FDCWD, hp, ts, unix.AT_SYMLINK_NOFOLLOW))
		return nil
	})
}

// compareHost checks that the kernel mount shows exactly the mirror's tree.
func compareHost(t *testing.T, host, mnt string) {
	t.Helper()
	type ent struct {
		mode        fs.FileMode
		uid, gid    uint32
		nlink       uint64
		size        int64
		mtime       int64
		rdev        uint64
		sum, target string
	}
	scan := func(root string) map[string]ent {
		m := map[string]ent{}
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				t.Errorf("walk %s: %v", p, err)
				return nil
			}
			rel, _ := filepath.Rel(root, p)
			if rel == "." || rel == "lost+found" {
				if rel == "lost+found" {
					return filepath.SkipDir
				}
				return nil
			}
			fi, err := os.Lstat(p)
			if err != nil {
				t.Error(err)
				return nil
			}
			st := fi.Sys().(*syscall.Stat_t)
			e := ent{mode: fi.Mode(), uid: st.Uid, gid: st.Gid, nlink: uint64(st.Nlink), mtime: st.Mtim.Nano(), rdev: uint64(st.Rdev)}
			switch {
			case fi.Mode().IsRegular():
				e.size = fi.Size()
				h := sha256.New()
				f, err := os.Open(p)
				if err == nil {
					_, err = io.Copy(h, f)
					f.Close()
				}
				if err != nil {
					t.Errorf("read %s: %v", p, err)
				}
				e.sum = fmt.Sprintf("%x", h.Sum(nil))
			case fi.Mode()&fs.ModeSymlink != 0:
				e.target, _ = os.Readlink(p)
				e.size = fi.Size()
			}
			m[rel] = e
			return nil
		})
		return m
	}
	want, got := scan(host), scan(mnt)
	for rel, w := range want {
		g, ok := got[rel]
		if !ok {
			t.Errorf("%s: missing in the image", rel)
			continue
		}
		if g != w {
			t.Errorf("%s: image has %+v, want %+v", rel, g, w)
		}
	}
	for rel := range got {
		if _, ok := want[rel]; !ok {
			t.Errorf("%s: in the image but not expected", rel)
		}
	}
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

type wConfig struct {
	name   string
	size   int64
	opts   []string
	kernel bool // mount with the kernel (64 KiB blocks need 64 KiB pages)
	ext    bool // extents (fallocate works)
}

var writeConfigs = []wConfig{
	{"ext4", 64 << 20, []string{"-t", "ext4"}, true, true},
	{"ext4-1k-nocsum", 64 << 20, []string{"-t", "ext4", "-b", "1024", "-O", "^metadata_csum,uninit_bg"}, true, true},
	{"ext3", 64 << 20, []string{"-t", "ext3"}, true, false},
	{"ext2", 32 << 20, []string{"-t", "ext2", "-b", "2048"}, true, false},
	{"ext4-64k", 256 << 20, []string{"-t", "ext4", "-b", "65536"}, false, true},
	{"ext4-orphanfile-seed", 64 << 20, []string{"-t", "ext4", "-O", "orphan_file,metadata_csum_seed"}, true, true},
	{"ext4-metabg-2k", 64 << 20, []string{"-t", "ext4", "-b", "2048", "-O", "meta_bg,^resize_inode"}, true, true},
	{"ext4-nojournal-sparse2", 64 << 20, []string{"-t", "ext4", "-O", "^has_journal,sparse_super2"}, true, true},
	{"ext2-old", 32 << 20, []string{"-t", "ext2", "-b", "1024", "-O", "^filetype,^dir_index,^sparse_super,^resize_inode,^large_file"}, true, false},
}

func TestWriteOperations(t *testing.T) {
	need(t, "mke2fs", "e2fsck")
	if os.Geteuid() != 0 {
		t.Skip("needs root for chown and mknod in the mirror")
	}
	for _, c := range writeConfigs {
		t.Run(c.name, func(t *testing.T) {
			img := mkfs(t, c.size, "", c.opts...)
			p := &wpair{t: t, w: openW(t, img), host: t.TempDir()}
			must(t, os.Chmod(p.host, 0o755))
			r := rand.New(rand.NewPCG(7, 9))
			bs := int64(1024)
			if st, err := p.w.Statfs(); err == nil {
				bs = st.BlockSize
			}
			p.mkdir("a", 0o755)
			p.mkdir("a/b", 0o700)
			p.mkdir("c", 0o2775)
			p.write("a/small", []byte("hello, world\n"), 0)
			// A file crossing many blocks, with holes between pieces.
			for k := int64(0); k < 20; k++ {
				p.write("a/b/holes", randBytes(r, int(bs)+100), k*3*bs+17)
			}
			p.write("big", randBytes(r, 3<<20), 0)
			p.write("big", randBytes(r, 5000), 1<<20+3)      // overwrite in the middle
			p.write("big", randBytes(r, 10), 8<<20)          // far past the end: a hole
			p.write("indirect", randBytes(r, 100), 300*bs+5) // beyond the direct blocks
			p.truncate("big", 2<<20+77)
			p.truncate("a/small", 5)
			p.truncate("a/small", 10000) // up: a hole after the kept bytes
			p.symlink("small", "a/fast")
			p.symlink(strings.Repeat("long/", 30)+"target", "slow")
			p.link("a/small", "c/hard")
			p.mkdir("c/inherits", 0o755) // setgid and group from c
			p.mknod("fifo", unix.S_IFIFO|0o640, 0)
			p.mknod("sock", unix.S_IFSOCK|0o600, 0)
			p.mknod("chr", unix.S_IFCHR|0o600, uint64(unix.Mkdev(1, 3)))
			p.mknod("blk", unix.S_IFBLK|0o600, uint64(unix.Mkdev(259, 70000)))
			p.chmod("a/small", 0o4751)
			// Renames: within a directory, across, over a file, exchange,
			// a directory across (its ".." fixed).
			p.write("x1", []byte("one"), 0)
			p.write("x2", []byte("two"), 0)
			p.rename("x1", "x1r", 0)
			p.rename("x1r", "a/x1", 0)
			p.rename("x2", "a/x1", 0)
			p.write("y", []byte("yyy"), 0)
			p.rename("y", "a/x1", fsdrivers.RenameExchange)
			p.rename("a/b", "c/b", 0)
			p.mkdir("d", 0o755)
			p.mkdir("e", 0o755)
			p.rename("d", "e", 0) // a directory over an empty one
			p.rename("c/b", "e", fsdrivers.RenameExchange)
			p.write("gone", randBytes(r, 50000), 0)
			p.unlink("gone")
			p.mkdir("gone-dir", 0o755)
			p.rmdir("gone-dir")
			// A directory grown through the linear-to-htree conversion.
			p.mkdir("many", 0o755)
			for k := range 300 {
				p.write(fmt.Sprintf("many/entry-with-a-longish-name-%04d", k), []byte{byte(k)}, 0)
			}
			for k := 0; k < 300; k += 3 {
				p.unlink(fmt.Sprintf("many/entry-with-a-longish-name-%04d", k))
			}
			if c.ext {
				n, err := p.resolve("big")
				must(t, err)
				if err := p.w.Fallocate(n, 1<<20, 1<<20, fsdrivers.FallocPunchHole|fsdrivers.FallocKeepSize); err != nil {
					t.Fatalf("punch: %v", err)
				}
				f, _ := os.OpenFile(p.hp("big"), os.O_RDWR, 0)
				must(t, unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 1<<20, 1<<20))
				f.Close()
				p.write("pre", []byte("x"), 0)
				n, _ = p.resolve("pre")
				must(t, p.w.Fallocate(n, 0, 1<<20, 0))
				f, _ = os.OpenFile(p.hp("pre"), os.O_RDWR, 0)
				must(t, unix.Fallocate(int(f.Fd()), 0, 0, 1<<20))
				f.Close()
				p.write("pre", []byte("inside"), 5000)
			}
			if c.name == "ext2-old" {
				// Past 2 GiB (triple indirect blocks): large_file gets
				// turned on, which e2fsck checks. Reading 3 GiB back
				// through the kernel is slow, so the file goes again.
				p.write("huge-sparse", []byte("end"), 3<<30)
				n, _ := p.resolve("huge-sparse")
				got := make([]byte, 10)
				if k, _ := p.w.ReadAt(n, got, 3<<30-7); string(got[:k]) != "\x00\x00\x00\x00\x00\x00\x00end" {
					t.Errorf("huge-sparse ends in %q", got[:k])
				}
				must(t, p.w.Sync())
				fsck(t, img)
				if out, _ := runCmdErr("dumpe2fs", "-h", img); !strings.Contains(out, "large_file") {
					t.Errorf("large_file not turned on")
				}
				p.unlink("huge-sparse")
			}
			p.stampTimes()
			must(t, p.w.Close())
			fsck(t, img)
			if c.kernel {
				mnt, _ := mount(t, img, false)
				compareHost(t, p.host, mnt)
			}
			// Our own reader agrees too.
			v := openImage(t, img)
			if _, err := fs.ReadFile(v, "a/x1"); err != nil {
				t.Error(err)
			}
		})
	}
}

// readAllW reads a whole file through the WritableFS.
func readAllW(t *testing.T, w fsdrivers.WritableFS, ino uint64) []byte {
	t.Helper()
	a, err := w.Getattr(ino)
	must(t, err)
	b := make([]byte, a.Size)
	n, err := w.ReadAt(ino, b, 0)
	if err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return b[:n]
}

var _ = bytes.Equal
var _ = slices.Sort[[]int]
