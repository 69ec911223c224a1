package ext4

import (
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dimg-project/dimg/fsdrivers"
)

func needRoot(t *testing.T) {
	t.Helper()
	need(t, "mke2fs", "e2fsck")
	if os.Geteuid() != 0 {
		t.Skip("needs root for chown and mknod in the mirror")
	}
}

// checkImage runs e2fsck and, when kernel, compares a kernel mount with
// the mirror.
func checkImage(t *testing.T, img, host string, kernel bool) {
	t.Helper()
	fsck(t, img)
	if kernel {
		mnt, unmount := mount(t, img, false)
		compareHost(t, host, mnt)
		unmount()
	}
}

// TestWriteHtreeGrowShrink grows a directory to 5,000 entries (two index
// levels with 1 KiB blocks) and shrinks it again.
func TestWriteHtreeGrowShrink(t *testing.T) {
	needRoot(t)
	for _, c := range []struct {
		wConfig
		entries int
	}{
		{wConfig{"ext4-1k", 64 << 20, []string{"-t", "ext4", "-b", "1024"}, true, true}, 5000},
		{wConfig{"ext4", 64 << 20, []string{"-t", "ext4"}, true, true}, 1500},
		{wConfig{"ext3-gdtcsum", 64 << 20, []string{"-t", "ext3", "-b", "1024", "-O", "uninit_bg"}, true, false}, 1000},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := mkfs(t, c.size, "", c.opts...)
			p := &wpair{t: t, w: openW(t, img), host: t.TempDir()}
			must(t, os.Chmod(p.host, 0o755))
			p.mkdir("d", 0o755)
			r := rand.New(rand.NewPCG(3, 4))
			names := make([]string, c.entries)
			for k := range names {
				names[k] = fmt.Sprintf("f%d-%s", k, strings.Repeat("z", r.IntN(40)))
				p.write("d/"+names[k], nil, 0)
			}
			d, _ := p.resolve("d")
			for _, n := range names {
				if _, err := p.w.Lookup(d, n); err != nil {
					t.Fatalf("Lookup %s: %v", n, err)
				}
			}
			ents, err := p.w.ReadDir(d)
			must(t, err)
			if len(ents) != len(names) {
				t.Fatalf("ReadDir: %d entries, want %d", len(ents), len(names))
			}
			// The index must have grown to two levels with 1 KiB blocks.
			wf := p.w.(*wfs)
			di, err := wf.loadInode(uint32(d))
			must(t, err)
			root, err := wf.v.dirBlock(wf.quick(di), 0)
			must(t, err)
			if levels := root[dxInfoLevels]; di.flags()&flagIndex == 0 || (c.name == "ext4-1k") != (levels == 1) {
				t.Errorf("htree flag %v, %d index levels", di.flags()&flagIndex != 0, levels+1)
			}
			p.stampTimes()
			must(t, p.w.Sync())
			checkImage(t, img, p.host, c.kernel)
			for k, n := range names {
				if k%5 != 0 {
					p.unlink("d/" + n)
				}
			}
			p.rename("d/"+names[0], "d/renamed-into-the-same-directory", 0)
			// Grow again into the space the removals left.
			for k := range c.entries / 4 {
				p.write(fmt.Sprintf("d/again-%d-%s", k, strings.Repeat("y", r.IntN(60))), nil, 0)
			}
			p.rename("d/"+names[5], "d/"+names[10], 0) // over an entry
			p.mkdir("other", 0o755)
			p.rename("d", "other/d", 0) // the htree root's ".." changes
			p.stampTimes()
			must(t, p.w.Close())
			checkImage(t, img, p.host, c.kernel)
			// e2fsck -fD would rebuild it; -fn must not even suggest that
			// the index is damaged.
			out, _ := runCmdErr("e2fsck", "-fn", img)
			if strings.Contains(out, "HTREE") || strings.Contains(out, "htree") {
				t.Errorf("e2fsck mentions the htree:\n%s", out)
			}
		})
	}
}

// TestWriteDeepExtents makes a file of thousands of extents (index blocks,
// depth 2 with 1 KiB blocks), then shrinks it step by step.
func TestWriteDeepExtents(t *testing.T) {
	needRoot(t)
	for _, c := range []wConfig{
		{"ext4-1k", 64 << 20, []string{"-t", "ext4", "-b", "1024"}, true, true},
		{"ext4", 128 << 20, []string{"-t", "ext4"}, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := mkfs(t, c.size, "", c.opts...)
			p := &wpair{t: t, w: openW(t, img), host: t.TempDir()}
			must(t, os.Chmod(p.host, 0o755))
			st, _ := p.w.Statfs()
			bs := st.BlockSize
			r := rand.New(rand.NewPCG(5, 6))
			// Every other block: each write is its own extent.
			for k := int64(0); k < 2500; k++ {
				p.write("frag", randBytes(r, int(bs/2)), 2*k*bs+int64(k%7))
			}
			// Interleaved appends to two files fragment both.
			for k := range 400 {
				p.write("i1", randBytes(r, int(bs)), int64(k)*bs)
				p.write("i2", randBytes(r, int(bs)), int64(k)*bs)
			}
			p.stampTimes()
			must(t, p.w.Sync())
			checkImage(t, img, p.host, c.kernel)
			p.truncate("frag", 3000*bs+5)
			p.truncate("i1", 10*bs+1)
			p.truncate("frag", 100*bs)
			p.write("frag", []byte("tail"), 200*bs)
			p.stampTimes()
			must(t, p.w.Close())
			checkImage(t, img, p.host, c.kernel)
		})
	}
}

// TestWriteBlockMapLarge writes a block-mapped file reaching the double
// indirect blocks and truncates it back.
func TestWriteBlockMapLarge(t *testing.T) {
	needRoot(t)
	img := mkfs(t, 64<<20, "", "-t", "ext3", "-b", "1024")
	p := &wpair{t: t, w: openW(t, img), host: t.TempDir()}
	must(t, os.Chmod(p.host, 0o755))
	r := rand.New(rand.NewPCG(1, 1))
	p.write("f", randBytes(r, 600<<10), 0)       // direct, single and double indirect
	p.write("f", randBytes(r, 4096), 20<<20)     // far: more double indirect
	p.write("sparse", randBytes(r, 100), 70<<20) // triple indirect (1 KiB blocks)
	p.truncate("f", 300<<10)
	p.truncate("sparse", 10)
	p.stampTimes()
	must(t, p.w.Close())
	checkImage(t, img, p.host, true)
}

// TestWriteFull fills the filesystem: ENOSPC, a short write, and still a
// clean filesystem after.
func TestWriteFull(t *testing.T) {
	needRoot(t)
	for _, c := range []wConfig{
		{"ext4", 8 << 20, []string{"-t", "ext4", "-N", "64"}, true, true},
		{"ext2", 8 << 20, []string{"-t", "ext2", "-b", "1024", "-N", "64"}, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := mkfs(t, c.size, "", c.opts...)
			w := openW(t, img)
			a, err := w.Create(w.Root(), "big", fsdrivers.ModeFile|0o644, 0, testOwner)
			must(t, err)
			chunk := make([]byte, 1<<20)
			var total int64
			for {
				n, err := w.WriteAt(a.Ino, chunk, total)
				total += int64(n)
				if err != nil {
					t.Logf("after %d bytes: %v", total, err)
					if !errors.Is(err, syscall.ENOSPC) {
						t.Fatalf("WriteAt: %v, want ENOSPC", err)
					}
					break
				}
				if total > 64<<20 {
					t.Fatal("no ENOSPC")
				}
			}
			st, _ := w.Statfs()
			if st.BlocksFree > 8 {
				t.Errorf("ENOSPC with %d blocks free", st.BlocksFree)
			}
			got, _ := w.Getattr(a.Ino)
			if got.Size != total {
				t.Errorf("size %d after writing %d", got.Size, total)
			}
			// Inodes run out too.
			var k int
			for k = 0; k < 200; k++ {
				_, err := w.Create(w.Root(), fmt.Sprintf("e%d", k), fsdrivers.ModeFile|0o644, 0, testOwner)
				if err != nil {
					if !errors.Is(err, syscall.ENOSPC) {
						t.Fatalf("Create: %v, want ENOSPC", err)
					}
					break
				}
			}
			if k == 200 {
				t.Fatal("no ENOSPC for inodes")
			}
			_, err = w.Mkdir(w.Root(), "nodir", 0o755, testOwner)
			if !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("Mkdir on a full filesystem: %v", err)
			}
			must(t, w.Sync())
			fsck(t, img)
			// Freeing makes room again.
			size := int64(0)
			_, err = w.Setattr(a.Ino, fsdrivers.SetAttr{Size: &size})
			must(t, err)
			must(t, w.Unlink(w.Root(), "e0"))
			_, err = w.Mkdir(w.Root(), "dir", 0o755, testOwner)
			must(t, err)
			must(t, w.Close())
			fsck(t, img)
		})
	}
}

// TestWriteHeldUnlink: an unlinked node stays usable while held, goes on
// the orphan list across a Sync, and is freed at Release; one left on the
// list is freed by the next OpenWritable.
func TestWriteHeldUnlink(t *testing.T) {
	needRoot(t)
	img := mkfs(t, 32<<20, "", "-t", "ext4")
	w := openW(t, img)
	mk := func(name string) uint64 {
		a, err := w.Create(w.Root(), name, fsdrivers.ModeFile|0o644, 0, testOwner)
		must(t, err)
		_, err = w.WriteAt(a.Ino, make([]byte, 100000), 0)
		must(t, err)
		return a.Ino
	}
	a, b := mk("a"), mk("b")
	w.Hold(a)
	w.Hold(b)
	must(t, w.Unlink(w.Root(), "a"))
	must(t, w.Unlink(w.Root(), "b"))
	if _, err := w.WriteAt(a, []byte("still here"), 5); err != nil {
		t.Fatalf("write to a held unlinked node: %v", err)
	}
	if got := readAllW(t, w, a); string(got[5:15]) != "still here" {
		t.Errorf("read back %q", got[5:15])
	}
	before, _ := w.Statfs()
	w.Release(a)
	after, _ := w.Statfs()
	if after.BlocksFree <= before.BlocksFree || after.FilesFree != before.FilesFree+1 {
		t.Errorf("Release freed nothing: %+v -> %+v", before, after)
	}
	if _, err := w.Getattr(a); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("Getattr of a released node: %v", err)
	}
	// b stays held across Close: on the orphan list.
	must(t, w.Close())
	out, _ := runCmdErr("dumpe2fs", "-h", img)
	if !strings.Contains(out, "First orphan inode") {
		t.Errorf("no orphan list after closing with a held unlinked node:\n%s", out)
	}
	// The kernel processes it at mount...
	cp := img + ".copy"
	must(t, exec.Command("cp", img, cp).Run())
	if mntOut, err := runCmdErr("sh", "-c", "d=$(mktemp -d) && mount -o loop "+cp+" $d && umount $d && rmdir $d"); err != nil {
		t.Logf("kernel mount of the orphaned image: %v %s", err, mntOut)
	}
	fsck(t, cp)
	// ... and so does OpenWritable.
	w = openW(t, img)
	must(t, w.Close())
	fsck(t, img)
	out, _ = runCmdErr("dumpe2fs", "-h", img)
	if strings.Contains(out, "First orphan inode") {
		t.Errorf("orphan list left after OpenWritable")
	}
}

// TestWriteKernelWritten edits a tree the kernel wrote (xattr blocks,
// kernel-made htree and extents) and checks the result with e2fsck and the
// kernel.
func TestWriteKernelWritten(t *testing.T) {
	needRoot(t)
	needLoop(t)
	for _, c := range []wConfig{
		{"ext4", 64 << 20, []string{"-t", "ext4"}, true, true},
		{"ext3", 64 << 20, []string{"-t", "ext3", "-b", "1024"}, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := mkfs(t, c.size, "", c.opts...)
			mnt, unmount := mount(t, img, true)
			buildTree(t, mnt, true)
			unmount()
			host := t.TempDir()
			mnt, unmount = mount(t, img, false)
			runCmd(t, "cp", "-a", mnt+"/.", host)
			unmount()
			os.RemoveAll(host + "/lost+found")
			p := &wpair{t: t, w: openW(t, img), host: host}
			r := rand.New(rand.NewPCG(8, 8))
			p.unlink("block") // external xattr block freed
			p.unlink("small.txt")
			p.write("random.bin", randBytes(r, 10000), 1<<20)
			p.write("sparse", randBytes(r, 3000), 5<<20)
			p.truncate("sparse", 4<<20)
			for k := range 200 {
				p.write(fmt.Sprintf("many/new-%d", k), []byte("n"), 0)
			}
			p.rename("dir", "many/dir", 0)
			p.rmdir("sticky")
			p.unlink("hard1")
			p.stampTimes()
			must(t, p.w.Close())
			checkImage(t, img, host, c.kernel)
		})
	}
}

// TestWriteUninitGroups allocates inodes and blocks in groups that were
// never initialised (INODE_UNINIT, BLOCK_UNINIT) and flushes early.
func TestWriteUninitGroups(t *testing.T) {
	needRoot(t)
	old := maxDirtyBytes
	maxDirtyBytes = 64 << 10
	defer func() { maxDirtyBytes = old }()
	for _, c := range []wConfig{
		{"ext4-1k", 256 << 20, []string{"-t", "ext4", "-b", "1024", "-N", "2048"}, true, true},
		{"ext4-gdtcsum", 256 << 20, []string{"-t", "ext4", "-b", "1024", "-N", "2048", "-O", "^metadata_csum,uninit_bg"}, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := mkfs(t, c.size, "", c.opts...)
			p := &wpair{t: t, w: openW(t, img), host: t.TempDir()}
			must(t, os.Chmod(p.host, 0o755))
			r := rand.New(rand.NewPCG(2, 2))
			for k := range 300 {
				if k%50 == 0 {
					p.mkdir(fmt.Sprintf("d%d", k), 0o755)
				}
				p.write(fmt.Sprintf("d%d/f%d", k/50*50, k), randBytes(r, 3000), 0)
			}
			p.write("big", randBytes(r, 40<<20), 0)
			p.stampTimes()
			must(t, p.w.Close())
			checkImage(t, img, p.host, c.kernel)
		})
	}
}

// TestWriteRefused: features the writer does not keep right are refused
// by name; reading still works.
func TestWriteRefused(t *testing.T) {
	need(t, "mke2fs")
	for _, c := range []struct {
		opts []string
		want string
	}{
		{[]string{"-t", "ext4", "-O", "bigalloc", "-C", "16384"}, "bigalloc"},
		{[]string{"-t", "ext4", "-O", "quota"}, "quota"},
		{[]string{"-t", "ext4", "-O", "encrypt"}, "encrypt"},
	} {
		img := mkfs(t, 64<<20, "", c.opts...)
		f, err := os.OpenFile(img, os.O_RDWR, 0)
		must(t, err)
		_, err = Driver{}.OpenWritable(f, 64<<20)
		if !errors.Is(err, fsdrivers.ErrReadOnly) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: OpenWritable: %v, want a refusal naming %s", c.opts, err, c.want)
		}
		if _, err := (Driver{}).Open(f, 64<<20); err != nil {
			t.Errorf("%v: reading refused too: %v", c.opts, err)
		}
		f.Close()
	}
	// A journal that needs recovery is replayed (replay_test.go).
}

// TestWriteErrors: argument and state errors come back as the right errno
// and change nothing.
func TestWriteErrors(t *testing.T) {
	need(t, "mke2fs", "e2fsck")
	img := mkfs(t, 16<<20, "", "-t", "ext4")
	w := openW(t, img)
	root := w.Root()
	d, err := w.Mkdir(root, "d", 0o755, testOwner)
	must(t, err)
	f, err := w.Create(d.Ino, "f", fsdrivers.ModeFile|0o644, 0, testOwner)
	must(t, err)
	check := func(what string, err error, want syscall.Errno) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", what, err, want)
		}
	}
	_, err = w.Create(d.Ino, "f", fsdrivers.ModeFile|0o644, 0, testOwner)
	check("create existing", err, syscall.EEXIST)
	_, err = w.Lookup(d.Ino, "nope")
	check("lookup missing", err, syscall.ENOENT)
	_, err = w.Lookup(f.Ino, "x")
	check("lookup in a file", err, syscall.ENOTDIR)
	check("rmdir non-empty", w.Rmdir(root, "d"), syscall.ENOTEMPTY)
	check("unlink a directory", w.Unlink(root, "d"), syscall.EISDIR)
	check("rmdir a file", w.Rmdir(d.Ino, "f"), syscall.ENOTDIR)
	_, err = w.Create(root, strings.Repeat("n", 256), 0o644, 0, testOwner)
	check("long name", err, syscall.ENAMETOOLONG)
	_, err = w.Create(root, "a/b", 0o644, 0, testOwner)
	check("slash in a name", err, syscall.EINVAL)
	check("rename into itself", w.Rename(root, "d", d.Ino, "sub", 0), syscall.EINVAL)
	_, err = w.Create(root, "g", fsdrivers.ModeFile|0o644, 0, testOwner)
	must(t, err)
	check("rename noreplace", w.Rename(root, "g", d.Ino, "f", fsdrivers.RenameNoReplace), syscall.EEXIST)
	check("rename dir over file", w.Rename(root, "d", root, "g", 0), syscall.ENOTDIR)
	_, err = w.Link(d.Ino, root, "dl")
	check("hard link a directory", err, syscall.EPERM)
	_, err = w.WriteAt(d.Ino, []byte("x"), 0)
	check("write a directory", err, syscall.EISDIR)
	check("setxattr in an unknown namespace", w.SetXattr(f.Ino, "os2.x", []byte("1"), 0), syscall.EOPNOTSUPP)
	_, err = w.GetXattr(f.Ino, "user.missing")
	check("getxattr missing", err, syscall.ENODATA)
	must(t, w.Close())
	fsck(t, img)
}

// TestWriteConcurrent runs operations from several goroutines (run it with
// -race); the result must be a clean filesystem holding everything.
func TestWriteConcurrent(t *testing.T) {
	need(t, "mke2fs", "e2fsck")
	img := mkfs(t, 64<<20, "", "-t", "ext4")
	w := openW(t, img)
	const workers, files = 4, 60
	errs := make(chan error, workers)
	for g := range workers {
		go func() {
			errs <- func() error {
				d, err := w.Mkdir(w.Root(), fmt.Sprintf("w%d", g), 0o755, testOwner)
				if err != nil {
					return err
				}
				data := make([]byte, 10000+g)
				for k := range files {
					name := fmt.Sprintf("f%d", k)
					a, err := w.Create(d.Ino, name, fsdrivers.ModeFile|0o644, 0, testOwner)
					if err != nil {
						return err
					}
					data[0] = byte(k)
					if _, err := w.WriteAt(a.Ino, data, int64(k)*100); err != nil {
						return err
					}
					buf := make([]byte, len(data))
					if _, err := w.ReadAt(a.Ino, buf, int64(k)*100); err != nil {
						return err
					}
					if buf[0] != byte(k) {
						return fmt.Errorf("read back %d, want %d", buf[0], k)
					}
					if _, err := w.Lookup(d.Ino, name); err != nil {
						return err
					}
					if k%3 == 0 {
						if err := w.Unlink(d.Ino, name); err != nil {
							return err
						}
					}
					if _, err := w.ReadDir(w.Root()); err != nil {
						return err
					}
				}
				return nil
			}()
		}()
	}
	for range workers {
		select {
		case err := <-errs:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("workers hung")
		}
	}
	must(t, w.Close())
	fsck(t, img)
	v := openImage(t, img)
	for g := range workers {
		ents, err := v.ReadDir(fmt.Sprintf("w%d", g))
		if err != nil || len(ents) != files-files/3 {
			t.Errorf("w%d: %d entries, %v", g, len(ents), err)
		}
	}
}

// TestWriteRandom applies random operations through the writer and to a
// mirror directory, checking with e2fsck along the way and with a kernel
// mount at the end. DIMG_EXT4_RANDOM=N runs N operations per filesystem
// (default 300); DIMG_EXT4_SEED replays one seed.
func TestWriteRandom(t *testing.T) {
	needRoot(t)
	ops := 300
	if s := os.Getenv("DIMG_EXT4_RANDOM"); s != "" {
		fmt.Sscan(s, &ops)
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("DIMG_EXT4_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	for _, c := range []wConfig{
		{"ext4", 64 << 20, []string{"-t", "ext4"}, true, true},
		{"ext4-1k-nocsum", 64 << 20, []string{"-t", "ext4", "-b", "1024", "-O", "^metadata_csum"}, true, true},
		{"ext3", 64 << 20, []string{"-t", "ext3", "-b", "1024"}, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Logf("seed %d (DIMG_EXT4_SEED=%d replays it)", seed, seed)
			img := mkfs(t, c.size, "", c.opts...)
			p := &wpair{t: t, w: openW(t, img), host: t.TempDir()}
			must(t, os.Chmod(p.host, 0o755))
			r := rand.New(rand.NewPCG(seed, 1))
			st, _ := p.w.Statfs()
			bs := st.BlockSize
			var files, dirs []string
			rescan := func() {
				files, dirs = nil, []string{""}
				filepath.WalkDir(p.host, func(hp string, d fs.DirEntry, err error) error {
					rel, _ := filepath.Rel(p.host, hp)
					if rel == "." {
						return nil
					}
					if d.IsDir() {
						dirs = append(dirs, rel)
					} else if d.Type().IsRegular() {
						files = append(files, rel)
					}
					return nil
				})
			}
			join := func(dir, name string) string {
				if dir == "" {
					return name
				}
				return dir + "/" + name
			}
			pick := func(xs []string) string { return xs[r.IntN(len(xs))] }
			for k := range ops {
				rescan()
				switch op := r.IntN(14); {
				case op < 4 || len(files) == 0: // write (new or existing file)
					name := join(pick(dirs), fmt.Sprintf("f%d", k))
					if len(files) > 0 && r.IntN(2) == 0 {
						name = pick(files)
					}
					size := r.IntN(3 * int(bs))
					if r.IntN(8) == 0 {
						size = r.IntN(300 << 10)
					}
					off := int64(r.IntN(4 * int(bs)))
					if r.IntN(4) == 0 {
						off = int64(r.IntN(2 << 20))
					}
					p.write(name, randBytes(r, size), off)
				case op == 4:
					p.truncate(pick(files), int64(r.IntN(1<<20)))
				case op == 5:
					p.mkdir(join(pick(dirs), fmt.Sprintf("d%d", k)), 0o755)
				case op == 6:
					d := pick(dirs)
					if ents, _ := os.ReadDir(p.hp(d)); d != "" && len(ents) == 0 {
						p.rmdir(d)
					}
				case op == 7:
					p.unlink(pick(files))
				case op == 8: // rename a file, maybe over another
					to := join(pick(dirs), fmt.Sprintf("r%d", k))
					if r.IntN(3) == 0 {
						to = pick(files)
					}
					if from := pick(files); from != to {
						p.rename(from, to, 0)
					}
				case op == 9: // rename a directory somewhere not inside itself
					from, into := pick(dirs), pick(dirs)
					if from != "" && into != from && !strings.HasPrefix(into+"/", from+"/") {
						p.rename(from, join(into, fmt.Sprintf("m%d", k)), 0)
					}
				case op == 10:
					target := strings.Repeat("t", 1+r.IntN(100))
					p.symlink(target, join(pick(dirs), fmt.Sprintf("s%d", k)))
				case op == 11:
					p.link(pick(files), join(pick(dirs), fmt.Sprintf("h%d", k)))
				case op == 12:
					p.chmod(pick(files), uint32(r.IntN(0o1000)))
				case op == 13 && c.ext:
					f := pick(files)
					n, err := p.resolve(f)
					must(t, err)
					off, ln := int64(r.IntN(1<<20)), int64(1+r.IntN(300<<10))
					flags := fsdrivers.FallocKeepSize
					hflags := uint32(unix.FALLOC_FL_KEEP_SIZE)
					if r.IntN(2) == 0 {
						flags |= fsdrivers.FallocPunchHole
						hflags |= unix.FALLOC_FL_PUNCH_HOLE
					} else if r.IntN(2) == 0 {
						flags, hflags = 0, 0
					}
					if err := p.w.Fallocate(n, off, ln, flags); err != nil {
						t.Fatalf("op %d: fallocate %s %d+%d %#x: %v", k, f, off, ln, flags, err)
					}
					hf, err := os.OpenFile(p.hp(f), os.O_RDWR, 0)
					must(t, err)
					must(t, unix.Fallocate(int(hf.Fd()), hflags, off, ln))
					hf.Close()
				}
				if k%100 == 99 {
					must(t, p.w.Sync())
					fsck(t, img)
				}
			}
			p.stampTimes()
			must(t, p.w.Close())
			checkImage(t, img, p.host, c.kernel)
		})
	}
}

// TestWriteOrphanFile: a copy of a kernel-mounted filesystem taken while
// an unlinked file was still open has the entry in its orphan file
// (orphan_present); OpenWritable frees it as the kernel's mount would.
func TestWriteOrphanFile(t *testing.T) {
	needRoot(t)
	needLoop(t)
	img := mkfs(t, 32<<20, "", "-t", "ext4", "-O", "orphan_file")
	mnt, unmount := mount(t, img, true)
	f, err := os.Create(mnt + "/open-unlinked")
	must(t, err)
	_, err = f.Write(make([]byte, 1<<20))
	must(t, err)
	must(t, os.Remove(mnt+"/open-unlinked"))
	must(t, os.WriteFile(mnt+"/kept", []byte("kept"), 0o644))
	runCmd(t, "sync")
	// Push the journal home so the copy shows the orphan file itself.
	runCmdErr("fsfreeze", "-f", mnt)
	runCmdErr("fsfreeze", "-u", mnt)
	snap := img + ".snap"
	runCmd(t, "cp", "--sparse=always", img, snap)
	f.Close()
	unmount()
	out, _ := runCmdErr("dumpe2fs", "-h", snap)
	if !strings.Contains(out, "orphan_present") && !strings.Contains(out, "needs_recovery") {
		t.Skipf("the copy shows no orphan: %s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "Filesystem features:") {
			t.Log(line)
		}
	}
	// Without our orphan processing e2fsck would find the leaked inode.
	if _, err := runCmdErr("e2fsck", "-fn", snap); err == nil {
		t.Log("e2fsck finds the snapshot clean before processing")
	}
	w := openW(t, snap)
	must(t, w.Close())
	fsck(t, snap)
	out, _ = runCmdErr("dumpe2fs", "-h", snap)
	if strings.Contains(out, "orphan_present") {
		t.Errorf("orphan_present left set")
	}
}

// TestWriteCorrupt: damaged metadata gives errors, never a panic or a hang,
// when opening for writing and editing.
func TestWriteCorrupt(t *testing.T) {
	need(t, "mke2fs")
	src := t.TempDir()
	buildTree(t, src, false)
	for _, opts := range [][]string{{"-t", "ext4", "-b", "1024", "-O", "^metadata_csum"}, {"-t", "ext3", "-b", "1024"}} {
		img := mkfs(t, 16<<20, src, opts...)
		orig, err := os.ReadFile(img)
		must(t, err)
		r := rand.New(rand.NewPCG(11, 12))
		for trial := range 60 {
			b := slices.Clone(orig)
			// Damage a few bytes in the metadata-rich first 2 MiB.
			for range 1 + r.IntN(20) {
				b[1024+r.IntN(2<<20)] ^= byte(1 + r.IntN(255))
			}
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Errorf("%v trial %d: panic: %v", opts, trial, p)
					}
				}()
				w, err := Driver{}.OpenWritable(memDev(b), int64(len(b)))
				if err != nil {
					return
				}
				root := w.Root()
				ents, _ := w.ReadDir(root)
				for _, e := range ents {
					w.Getattr(e.Ino)
					w.WriteAt(e.Ino, []byte("x"), 5000)
					sz := int64(1)
					w.Setattr(e.Ino, fsdrivers.SetAttr{Size: &sz})
				}
				for k := range 40 {
					w.Create(root, fmt.Sprintf("new%d", k), fsdrivers.ModeFile|0o644, 0, testOwner)
				}
				w.Mkdir(root, "nd", 0o755, testOwner)
				w.Rename(root, "many", root, "many2", 0)
				for _, e := range ents {
					w.Unlink(root, e.Name)
					w.Rmdir(root, e.Name)
				}
				w.Close()
			}()
		}
	}
}
