package fusefs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/fsdrivers/disk"
	"github.com/dimg-project/dimg/fsdrivers/parttable"
	"github.com/dimg-project/dimg/imagefmt"
)

// newTestOverlay makes an overlay over base whose scratch file lives in a
// test directory; it is discarded at cleanup.
func newTestOverlay(t *testing.T, base io.ReaderAt, size int64) *imagefmt.Overlay {
	t.Helper()
	o, err := imagefmt.NewOverlay(filepath.Join(t.TempDir(), "scratch"), imagefmt.OverlayBase{R: base, Size: size, ChunkSize: 64 << 10, ID: "test"}, imagefmt.OverlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Discard() })
	return o
}

// TestRawWrite drives the writable raw files' handlers without mounting:
// writes land in the overlay at the partition's offset and never past its
// end; the size cannot change; fallocate zeroes.
func TestRawWrite(t *testing.T) {
	dbytes := testDisk()
	model := bytes.Clone(dbytes)
	ovl := newTestOverlay(t, bytes.NewReader(dbytes), int64(len(dbytes)))
	r := NewRoot(ovl, int64(len(dbytes)), testParts(ovl, sampleTree()), Options{ReadWrite: true, ImageTime: t0}).(*root)
	newNodeFS(r)
	if r.GetChild("p1") != nil {
		t.Error("a read-write mount shows the tree p1/")
	}
	ctx := context.Background()
	p1 := childOps(t, r.EmbeddedInode(), "p1.img").(*rawFile)
	p3 := childOps(t, r.EmbeddedInode(), "p3.img").(*rawFile)
	dimg := childOps(t, r.EmbeddedInode(), "disk.img").(*rawFile)

	var attr fuse.AttrOut
	p1.Getattr(ctx, nil, &attr)
	if attr.Mode != syscall.S_IFREG|0o644 || attr.Size != testPartSize {
		t.Errorf("p1.img mode %o size %d", attr.Mode, attr.Size)
	}
	if _, flags, errno := p1.Open(ctx, syscall.O_RDWR); errno != 0 || flags&fuse.FOPEN_KEEP_CACHE != 0 || flags&fuse.FOPEN_DIRECT_IO == 0 {
		t.Errorf("open O_RDWR: %v flags %#x, want direct I/O without KEEP_CACHE", errno, flags)
	}
	if _, _, errno := p1.Open(ctx, syscall.O_WRONLY|syscall.O_TRUNC); errno != syscall.EPERM {
		t.Errorf("open O_TRUNC: %v, want EPERM", errno)
	}

	write := func(n *rawFile, base int64, data []byte, off int64, want uint32, wantErr syscall.Errno) {
		t.Helper()
		got, errno := n.Write(ctx, nil, data, off)
		if got != want || errno != wantErr {
			t.Errorf("%s: write %d bytes at %d: %d, %v; want %d, %v", n.name, len(data), off, got, errno, want, wantErr)
		}
		copy(model[base+off:base+off+int64(got)], data)
	}
	fill := func(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }
	write(p1, testPartOff, fill(5000, 1), 100, 5000, 0)
	write(p1, testPartOff, fill(8192, 2), testPartSize-4096, 4096, 0) // runs past the end: short
	write(p1, testPartOff, fill(10, 3), testPartSize, 0, syscall.ENOSPC)
	write(p1, testPartOff, fill(10, 3), testPartSize+1<<20, 0, syscall.ENOSPC)
	write(p3, testPartOff+testPartSize, fill(4096, 4), 0, 4096, 0)
	write(p3, testPartOff+testPartSize, fill(1, 5), 4096, 0, syscall.ENOSPC)
	write(dimg, 0, fill(3000, 6), testDiskSize-3000, 3000, 0)
	write(dimg, 0, fill(1, 6), testDiskSize, 0, syscall.ENOSPC)
	write(dimg, 0, fill(70000, 7), testPartOff-1000, 70000, 0) // across the partition's start

	// Reads through every file see the writes of every other.
	for _, n := range []*rawFile{dimg, p1, p3} {
		buf := make([]byte, n.size)
		res, errno := n.Read(ctx, nil, buf, 0)
		if errno != 0 {
			t.Fatal(errno)
		}
		got, _ := res.Bytes(nil)
		var want []byte
		switch n {
		case dimg:
			want = model
		case p1:
			want = model[testPartOff : testPartOff+testPartSize]
		case p3:
			want = model[testPartOff+testPartSize : testPartOff+testPartSize+4096]
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: read back differs from the model", n.name)
		}
	}
	if errno := p1.Fsync(ctx, nil, 0); errno != 0 {
		t.Errorf("fsync: %v", errno)
	}

	// Size: only the same size is accepted.
	for _, tc := range []struct {
		in   fuse.SetAttrIn
		want syscall.Errno
	}{
		{fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{Valid: fuse.FATTR_SIZE, Size: testPartSize}}, 0},
		{fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{Valid: fuse.FATTR_SIZE, Size: 0}}, syscall.EPERM},
		{fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{Valid: fuse.FATTR_SIZE, Size: testPartSize + 1}}, syscall.EPERM},
		{fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{Valid: fuse.FATTR_MODE, Mode: 0o777}}, syscall.EPERM},
		{fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{Valid: fuse.FATTR_MTIME, Mtime: 12345}}, 0},
	} {
		var out fuse.AttrOut
		if errno := p1.Setattr(ctx, nil, &tc.in, &out); errno != tc.want {
			t.Errorf("setattr %+v: %v, want %v", tc.in.SetAttrInCommon, errno, tc.want)
		}
	}
	p1.Getattr(ctx, nil, &attr)
	if attr.Size != testPartSize || attr.Mtime != 12345 {
		t.Errorf("after setattr: size %d mtime %d", attr.Size, attr.Mtime)
	}

	// fallocate: zeroing inside, never growing.
	for _, tc := range []struct {
		off, n uint64
		mode   uint32
		want   syscall.Errno
	}{
		{0, 4096, 0, 0},
		{testPartSize - 10, 20, 0, syscall.ENOSPC},
		{testPartSize - 10, 20, unix.FALLOC_FL_KEEP_SIZE, 0},
		{50, 3 << 20, unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, 0}, // clipped at the end
		{0, 10, unix.FALLOC_FL_PUNCH_HOLE, syscall.EINVAL},
		{0, 10, unix.FALLOC_FL_COLLAPSE_RANGE, syscall.EOPNOTSUPP},
	} {
		if errno := p1.Allocate(ctx, nil, tc.off, tc.n, tc.mode); errno != tc.want {
			t.Errorf("fallocate %d+%d mode %#x: %v, want %v", tc.off, tc.n, tc.mode, errno, tc.want)
		}
	}
	clear(model[testPartOff+50 : testPartOff+testPartSize])
	got := make([]byte, len(model))
	if _, err := ovl.ReadAt(got, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Error("disk differs from the model after PUNCH_HOLE")
	}

	var st fuse.StatfsOut
	r.Statfs(ctx, &st)
	if st.Blocks != testDiskSize/4096 || st.Bfree != 0 {
		t.Errorf("statfs without SpacePath: %d blocks, %d free", st.Blocks, st.Bfree)
	}
}

// TestRawReadOnlyInRWRoot: a partition outside the disk stays read-only;
// a read-only root refuses every write handler.
func TestRawWriteRefused(t *testing.T) {
	dbytes := testDisk()
	ra := bytes.NewReader(dbytes)
	r := NewRoot(ra, int64(len(dbytes)), testParts(ra, sampleTree()), Options{ImageTime: t0}).(*root)
	newNodeFS(r)
	p1 := childOps(t, r.EmbeddedInode(), "p1.img").(*rawFile)
	ctx := context.Background()
	if _, errno := p1.Write(ctx, nil, []byte("x"), 0); errno != syscall.EROFS {
		t.Errorf("write to a read-only file: %v", errno)
	}
	if errno := p1.Allocate(ctx, nil, 0, 1, 0); errno != syscall.EROFS {
		t.Errorf("fallocate on a read-only file: %v", errno)
	}
	if _, err := Mount(ctx, t.TempDir(), ra, int64(len(dbytes)), nil, Options{ReadWrite: true}); !errors.Is(err, ErrNotWritable) {
		t.Errorf("read-write mount of a bytes.Reader: %v, want ErrNotWritable", err)
	}

	ovl := newTestOverlay(t, ra, int64(len(dbytes)))
	parts := []disk.Part{{Partition: parttable.Partition{Number: 9, Start: testDiskSize - 4096, Size: 8192}, Reader: io.NewSectionReader(ra, testDiskSize-4096, 8192)}}
	r = NewRoot(ovl, int64(len(dbytes)), parts, Options{ReadWrite: true}).(*root)
	newNodeFS(r)
	p9 := childOps(t, r.EmbeddedInode(), "p9.img").(*rawFile)
	if _, errno := p9.Write(ctx, nil, []byte("x"), 0); errno != syscall.EROFS {
		t.Errorf("write to a partition past the disk's end: %v, want EROFS", errno)
	}
}

// TestMountRWLoopExt4 is the kernel's read-write ext4 through a loop
// device over pN.img of a read-write mount: it writes, the overlay holds
// the changes, e2fsck finds the result clean, and the base is untouched.
func TestMountRWLoopExt4(t *testing.T) {
	requireFUSE(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root for a loop mount")
	}
	for _, tool := range []string{"mke2fs", "sgdisk", "losetup", "mount", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip("needs", tool)
		}
	}
	src := filepath.Join(t.TempDir(), "src")
	writeTree(t, src)
	imgPath, start, size := makeExt4Disk(t, src)
	before, err := os.ReadFile(imgPath)
	if err != nil {
		t.Fatal(err)
	}
	img, err := os.Open(imgPath)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	st, _ := img.Stat()
	ovl := newTestOverlay(t, img, st.Size())
	parts := []disk.Part{{Partition: parttable.Partition{Number: 1, Start: start, Size: size}, Reader: io.NewSectionReader(ovl, start, size)}}
	opt := Options{ImagePath: imgPath, ReadWrite: true, SpacePath: ovl.Info().Path}
	mnt, m := mountTest(t, NewRoot(ovl, st.Size(), parts, opt), opt)

	var sfs unix.Statfs_t
	if err := unix.Statfs(mnt, &sfs); err != nil || sfs.Blocks != uint64(st.Size())/4096 || sfs.Bfree == 0 {
		t.Errorf("statfs: %d blocks, %d free (%v)", sfs.Blocks, sfs.Bfree, err)
	}
	kmnt := filepath.Join(t.TempDir(), "k")
	if err := os.Mkdir(kmnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "loop", filepath.Join(mnt, "p1.img"), kmnt).CombinedOutput(); err != nil {
		t.Skipf("loop mount of p1.img failed (no loop devices?): %v %s", err, out)
	}
	mounted := true
	umount := func() {
		if !mounted {
			return
		}
		mounted = false
		if out, err := exec.Command("umount", kmnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v %s", err, out)
		}
	}
	defer umount()
	compareDirs(t, src, kmnt)
	// The same changes on both sides: the kernel's ext4 over p1.img and
	// the host's filesystem.
	mirror := t.TempDir()
	if out, err := exec.Command("cp", "-a", src+"/.", mirror).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	for _, d := range []string{kmnt, mirror} {
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(os.WriteFile(filepath.Join(d, "new"), bytes.Repeat([]byte("written through the loop device\n"), 100000), 0o644))
		must(os.Rename(filepath.Join(d, "big"), filepath.Join(d, "etc/big-renamed")))
		must(os.Remove(filepath.Join(d, "etc/deep/er/still/file")))
		f, err := os.OpenFile(filepath.Join(d, "etc/hosts"), os.O_APPEND|os.O_WRONLY, 0)
		must(err)
		_, err = f.WriteString("10.0.0.1 appended\n")
		must(err)
		must(f.Sync())
		must(f.Close())
	}
	umount()
	withReadOnlyLoop(t, filepath.Join(mnt, "p1.img"), func(dir string) { compareDirs(t, mirror, dir) })
	if out, err := exec.Command("e2fsck", "-fn", filepath.Join(mnt, "p1.img")).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn p1.img: %v\n%s", err, out)
	}
	if ovl.DirtyChunks() == 0 {
		t.Error("no chunk became dirty")
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(imgPath)
	if !bytes.Equal(before, after) {
		t.Error("the base image changed")
	}
}

// withReadOnlyLoop loop-mounts an ext4 image read-only (without replaying
// its journal) for the time of fn.
func withReadOnlyLoop(t *testing.T, img string, fn func(dir string)) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "ro,loop,noload", img, dir).CombinedOutput(); err != nil {
		t.Fatalf("mount -o ro,loop %s: %v %s", img, err, out)
	}
	defer func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount: %v %s", err, out)
		}
	}()
	fn(dir)
}

func newNodeFS(r *root) {
	gofs.NewNodeFS(r, &gofs.Options{RootStableAttr: &gofs.StableAttr{Ino: rootIno}})
}
