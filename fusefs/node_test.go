package fusefs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/imagefmt"
)

var errChunk = errors.New("imagefmt: chunk 12 (disk bytes 3145728-3407871): chunk checksum mismatch")

const (
	testDiskSize = 4 << 20
	testPartOff  = 1 << 20
	testPartSize = 2 << 20
)

// testDisk is a disk whose every byte differs from its neighbours, so an
// off-by-one in a partition's bounds shows.
func testDisk() []byte {
	b := make([]byte, testDiskSize)
	for i := range b {
		b[i] = byte(i*7 + i>>9)
	}
	return b
}

func sampleTree() *fakeFS {
	big := bytes.Repeat([]byte("0123456789abcdef"), 200_000) // 3.2 MB
	devStat := stat(40, 1, 0, 6)
	devStat.Rdev = unix.Mkdev(8, 1)
	sparseStat := stat(41, 1, 0, 0)
	sparseStat.Blocks = 8
	m := fstest.MapFS{
		".":            {Mode: fs.ModeDir | 0o755, ModTime: t0, Sys: stat(2, 5, 0, 0)},
		"etc":          {Mode: fs.ModeDir | 0o750, ModTime: t0, Sys: stat(11, 2, 0, 4)},
		"etc/hosts":    {Data: []byte("127.0.0.1 localhost\n"), Mode: 0o644, ModTime: t0, Sys: stat(12, 1, 0, 0)},
		"etc/zero":     {Data: []byte("mode zero"), Mode: 0, ModTime: t0, Sys: stat(13, 1, 0, 0)},
		"bin/su":       {Data: []byte("\x7fELF"), Mode: 0o755 | fs.ModeSetuid, ModTime: t0, Sys: stat(14, 1, 0, 0)},
		"home/a":       {Data: []byte("shared"), Mode: 0o600, ModTime: t0, Sys: stat(20, 2, 1000, 100)},
		"home/b":       {Data: []byte("shared"), Mode: 0o600, ModTime: t0, Sys: stat(20, 2, 1000, 100)},
		"home/link":    {Data: []byte("../etc/hosts"), Mode: fs.ModeSymlink | 0o777, ModTime: t0, Sys: stat(21, 1, 1000, 100)},
		"home/abs":     {Data: []byte("/etc/passwd"), Mode: fs.ModeSymlink | 0o777, ModTime: t0, Sys: stat(22, 1, 0, 0)},
		"big":          {Data: big, Mode: 0o644, ModTime: t0, Sys: stat(30, 1, 0, 0)},
		"sparse":       {Data: make([]byte, 1<<20), Mode: 0o644, ModTime: t0, Sys: sparseStat},
		"empty":        {Mode: 0o644, ModTime: t0, Sys: stat(31, 1, 0, 0)},
		"dev/sda1":     {Mode: fs.ModeDevice | 0o660, ModTime: t0, Sys: devStat},
		"dev/fifo":     {Mode: fs.ModeNamedPipe | 0o600, ModTime: t0, Sys: stat(42, 1, 0, 0)},
		"bad/file":     {Data: []byte("never served"), Mode: 0o644, ModTime: t0, Sys: stat(50, 1, 0, 0)},
		"bad/dir/x":    {Data: []byte("x"), Mode: 0o644, ModTime: t0},
		"hostile/ok":   {Data: []byte("ok"), Mode: 0o644, ModTime: t0, Sys: stat(60, 1, 0, 0)},
		"nosys":        {Data: []byte("no Stat"), Mode: 0o640, ModTime: t0},
		"many/.keep":   {Mode: 0o644},
		"old":          {Data: []byte("1960"), Mode: 0o644, ModTime: t0, Sys: &fsdrivers.Stat{Ino: 70, Nlink: 1, Mtime: t0.AddDate(-62, 0, 0)}},
		"huge-ino":     {Data: []byte("ino"), Mode: 0o644, ModTime: t0, Sys: &fsdrivers.Stat{Ino: 1 << 50, Nlink: 2}},
		"etc/.hidden":  {Data: []byte("h"), Mode: 0o644, ModTime: t0, Sys: stat(15, 1, 0, 0)},
		"dev/.placeho": {Data: nil, Mode: 0o644, ModTime: t0, Sys: stat(43, 1, 0, 0)},
	}
	for i := range 168 {
		m[fmt.Sprintf("many/f%03d", i)] = &fstest.MapFile{Data: []byte{byte(i)}, Mode: 0o644, Sys: stat(uint64(1000+i), 1, 0, 0)}
	}
	return &fakeFS{MapFS: m,
		xattrs: map[string]map[string][]byte{
			"etc/hosts": {"user.comment": []byte("hello"), "security.selinux": []byte("system_u:object_r:etc_t:s0\x00")},
			"home/link": {"trusted.x": []byte("on a symlink")},
		},
		extra: map[string][]fs.DirEntry{"hostile": {
			fakeEntry{"..", fs.ModeDir}, fakeEntry{"a/b", 0}, fakeEntry{"", 0}, fakeEntry{".", fs.ModeDir}, fakeEntry{"nul\x00", 0},
		}},
		badMeta: map[string]error{"bad/dir": fmt.Errorf("fake: read inode 77: %w", fsdrivers.ErrCorrupt)},
		badData: map[string]error{"bad/file": errChunk},
	}
}

// logBuf collects log lines.
type logBuf struct{ bytes.Buffer }

func (l *logBuf) logger() *slog.Logger { return slog.New(slog.NewTextHandler(&l.Buffer, nil)) }

// newTestRoot builds the tree without mounting: go-fuse's bridge gives
// the nodes an identity so Lookup, NewInode and friends work.
func newTestRoot(t *testing.T, fsys *fakeFS, log *slog.Logger) (*root, []byte) {
	t.Helper()
	disk := testDisk()
	ra := bytes.NewReader(disk)
	parts := testParts(ra, fsys)
	r := NewRoot(ra, int64(len(disk)), parts, Options{Logger: log, ImageTime: t0}).(*root)
	gofs.NewNodeFS(r, &gofs.Options{RootStableAttr: &gofs.StableAttr{Ino: rootIno}})
	return r, disk
}

func childOps(t *testing.T, parent *gofs.Inode, name string) gofs.InodeEmbedder {
	t.Helper()
	ch := parent.GetChild(name)
	if ch == nil {
		t.Fatalf("no child %q", name)
	}
	return ch.Operations()
}

// lookupPath walks p from the partition's root node with Lookup.
func lookupPath(t *testing.T, top *node, p string) (*node, fuse.EntryOut, syscall.Errno) {
	t.Helper()
	n := top
	var out fuse.EntryOut
	for _, c := range strings.Split(p, "/") {
		out = fuse.EntryOut{}
		ch, errno := n.Lookup(context.Background(), c, &out)
		if errno != 0 {
			return nil, out, errno
		}
		n = ch.Operations().(*node)
	}
	return n, out, 0
}

func TestRootEntries(t *testing.T) {
	fsys := sampleTree()
	r, _ := newTestRoot(t, fsys, nil)
	var names []string
	for name := range r.Children() {
		names = append(names, name)
	}
	want := map[string]bool{"disk.img": true, "p1.img": true, "p3.img": true, "p1": true}
	if len(names) != len(want) {
		t.Errorf("root holds %v, want %v", names, want)
	}
	for _, n := range names {
		if !want[n] {
			t.Errorf("unexpected root entry %q", n)
		}
	}
	if got := fsys.readDirs.Load(); got != 0 {
		t.Errorf("building the root read %d directories; mounting must not walk the tree", got)
	}
	p1 := childOps(t, r.EmbeddedInode(), "p1").(*node)
	if ino := p1.StableAttr().Ino; ino != 1<<48|2 {
		t.Errorf("p1 root ino %#x, want %#x", ino, uint64(1<<48|2))
	}
}

func TestRawRead(t *testing.T) {
	r, disk := newTestRoot(t, sampleTree(), nil)
	part := disk[testPartOff : testPartOff+testPartSize]
	tests := []struct {
		file string
		want []byte
		off  int64
		n    int
	}{
		{"disk.img", disk, 0, 4096},
		{"disk.img", disk, testDiskSize - 100, 4096}, // short at the end
		{"disk.img", disk, testDiskSize, 4096},       // at EOF
		{"disk.img", disk, testDiskSize + 5, 10},     // past EOF
		{"p1.img", part, 0, 1 << 20},
		{"p1.img", part, testPartSize - 1, 4096}, // exactly one byte left
		{"p1.img", part, testPartSize, 4096},     // bounded: nothing past the partition
		{"p1.img", part, 12345, 777},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s@%d", tc.file, tc.off), func(t *testing.T) {
			n := childOps(t, r.EmbeddedInode(), tc.file).(*rawFile)
			var attr fuse.AttrOut
			n.Getattr(context.Background(), nil, &attr)
			if attr.Size != uint64(len(tc.want)) || attr.Mode != syscall.S_IFREG|0o444 {
				t.Errorf("attr size %d mode %o, want %d, %o", attr.Size, attr.Mode, len(tc.want), syscall.S_IFREG|0o444)
			}
			_, flags, errno := n.Open(context.Background(), syscall.O_RDONLY)
			if errno != 0 || flags&fuse.FOPEN_KEEP_CACHE == 0 {
				t.Errorf("open: %v, flags %#x", errno, flags)
			}
			if _, _, errno := n.Open(context.Background(), syscall.O_RDWR); errno != syscall.EROFS {
				t.Errorf("open for writing: %v, want EROFS", errno)
			}
			buf := make([]byte, tc.n)
			res, errno := n.Read(context.Background(), nil, buf, tc.off)
			if errno != 0 {
				t.Fatal(errno)
			}
			got, _ := res.Bytes(nil)
			want := tc.want[min(tc.off, int64(len(tc.want))):min(tc.off+int64(tc.n), int64(len(tc.want)))]
			if !bytes.Equal(got, want) {
				t.Errorf("read %d bytes, want %d (first differ)", len(got), len(want))
			}
		})
	}
}

func TestTreeAttrs(t *testing.T) {
	fsys := sampleTree()
	r, _ := newTestRoot(t, fsys, nil)
	top := childOps(t, r.EmbeddedInode(), "p1").(*node)
	tests := []struct {
		path      string
		mode      uint32
		size      uint64
		uid, gid  uint32
		nlink     uint32
		ino       uint64
		rdev      uint32
		blocks    uint64
		checkTime bool
	}{
		{"etc", syscall.S_IFDIR | 0o750, 0, 0, 4, 2, 1<<48 | 11, 0, 0, true},
		{"etc/hosts", syscall.S_IFREG | 0o644, 20, 0, 0, 1, 1<<48 | 12, 0, 0, true},
		{"etc/zero", syscall.S_IFREG, 9, 0, 0, 1, 1<<48 | 13, 0, 0, true},
		{"bin/su", syscall.S_IFREG | syscall.S_ISUID | 0o755, 4, 0, 0, 1, 1<<48 | 14, 0, 0, true},
		{"home/a", syscall.S_IFREG | 0o600, 6, 1000, 100, 2, 1<<48 | 20, 0, 0, true},
		{"home/link", syscall.S_IFLNK | 0o777, 12, 1000, 100, 1, 1<<48 | 21, 0, 0, true},
		{"dev/sda1", syscall.S_IFBLK | 0o660, 0, 0, 6, 1, 1<<48 | 40, uint32(unix.Mkdev(8, 1)), 0, true},
		{"dev/fifo", syscall.S_IFIFO | 0o600, 0, 0, 0, 1, 1<<48 | 42, 0, 0, true},
		{"sparse", syscall.S_IFREG | 0o644, 1 << 20, 0, 0, 1, 1<<48 | 41, 0, 8, true},
		{"nosys", syscall.S_IFREG | 0o640, 7, 0, 0, 1, 0, 0, 0, false},
		{"huge-ino", syscall.S_IFREG | 0o644, 3, 0, 0, 2, 0, 0, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			n, out, errno := lookupPath(t, top, tc.path)
			if errno != 0 {
				t.Fatal(errno)
			}
			var ga fuse.AttrOut
			if errno := n.Getattr(context.Background(), nil, &ga); errno != 0 {
				t.Fatal(errno)
			}
			for _, a := range []fuse.Attr{out.Attr, ga.Attr} {
				if a.Mode != tc.mode || a.Size != tc.size || a.Uid != tc.uid || a.Gid != tc.gid || a.Nlink != tc.nlink || a.Rdev != tc.rdev {
					t.Errorf("attr mode %o size %d owner %d:%d nlink %d rdev %x; want %o %d %d:%d %d %x",
						a.Mode, a.Size, a.Uid, a.Gid, a.Nlink, a.Rdev, tc.mode, tc.size, tc.uid, tc.gid, tc.nlink, tc.rdev)
				}
				if tc.blocks != 0 && a.Blocks != tc.blocks {
					t.Errorf("blocks %d, want %d", a.Blocks, tc.blocks)
				}
				if tc.checkTime && (a.Mtime != uint64(t0.Unix()) || a.Mtimensec != uint32(t0.Nanosecond()) ||
					a.Atime != uint64(t0.Add(time.Minute).Unix()) || a.Ctime != uint64(t0.Add(time.Hour).Unix())) {
					t.Errorf("times a=%d m=%d.%d c=%d", a.Atime, a.Mtime, a.Mtimensec, a.Ctime)
				}
			}
			if tc.ino != 0 && n.StableAttr().Ino != tc.ino {
				t.Errorf("ino %#x, want %#x", n.StableAttr().Ino, tc.ino)
			}
			if tc.ino == 0 && n.StableAttr().Ino < 1<<63 {
				t.Errorf("ino %#x, want an automatic one", n.StableAttr().Ino)
			}
		})
	}

	// Hard links are the same inode.
	a, _, _ := lookupPath(t, top, "home/a")
	b, _, _ := lookupPath(t, top, "home/b")
	if a.StableAttr() != b.StableAttr() {
		t.Errorf("hard links: %+v vs %+v", a.StableAttr(), b.StableAttr())
	}

	// Times before 1970 go to the kernel as two's complement.
	_, out, _ := lookupPath(t, top, "old")
	if got, want := int64(out.Attr.Mtime), t0.AddDate(-62, 0, 0).Unix(); got != want {
		t.Errorf("pre-1970 mtime shows as %d, want %d", got, want)
	}

	if _, _, errno := lookupPath(t, top, "etc/nonexistent"); errno != syscall.ENOENT {
		t.Errorf("missing file: %v, want ENOENT", errno)
	}
}

func TestTreeReadlinkXattr(t *testing.T) {
	r, _ := newTestRoot(t, sampleTree(), nil)
	top := childOps(t, r.EmbeddedInode(), "p1").(*node)
	ctx := context.Background()

	l, _, _ := lookupPath(t, top, "home/link")
	if got, errno := l.Readlink(ctx); errno != 0 || string(got) != "../etc/hosts" {
		t.Errorf("readlink %q, %v", got, errno)
	}
	abs, _, _ := lookupPath(t, top, "home/abs")
	if got, _ := abs.Readlink(ctx); string(got) != "/etc/passwd" {
		t.Errorf("absolute link %q: must be shown as is", got)
	}

	h, _, _ := lookupPath(t, top, "etc/hosts")
	buf := make([]byte, 64)
	n, errno := h.Getxattr(ctx, "user.comment", buf)
	if errno != 0 || string(buf[:n]) != "hello" {
		t.Errorf("getxattr %q, %v", buf[:n], errno)
	}
	if n, errno := h.Getxattr(ctx, "user.comment", buf[:2]); errno != syscall.ERANGE || n != 5 {
		t.Errorf("small buffer: %d, %v; want 5, ERANGE", n, errno)
	}
	if _, errno := h.Getxattr(ctx, "user.none", buf); errno != syscall.ENODATA {
		t.Errorf("missing attr: %v, want ENODATA", errno)
	}
	n, errno = h.Listxattr(ctx, buf)
	if want := "security.selinux\x00user.comment\x00"; errno != 0 || string(buf[:n]) != want {
		t.Errorf("listxattr %q, %v; want %q", buf[:n], errno, want)
	}
	if n, errno := h.Listxattr(ctx, buf[:3]); errno != syscall.ERANGE || n != 30 {
		t.Errorf("listxattr small: %d, %v", n, errno)
	}
	if n, errno := l.Listxattr(ctx, buf); errno != 0 || string(buf[:n]) != "trusted.x\x00" {
		t.Errorf("symlink xattrs %q, %v", buf[:n], errno)
	}
}

func TestTreeRead(t *testing.T) {
	fsys := sampleTree()
	var log logBuf
	r, _ := newTestRoot(t, fsys, log.logger())
	top := childOps(t, r.EmbeddedInode(), "p1").(*node)
	ctx := context.Background()

	n, _, _ := lookupPath(t, top, "big")
	fh, flags, errno := n.Open(ctx, syscall.O_RDONLY)
	if errno != 0 || flags&fuse.FOPEN_KEEP_CACHE == 0 {
		t.Fatalf("open: %v flags %#x", errno, flags)
	}
	want := fsys.MapFS["big"].Data
	for _, off := range []int64{0, 1, 1 << 20, int64(len(want)) - 10, int64(len(want)), int64(len(want)) + 1} {
		buf := make([]byte, 1<<20)
		res, errno := n.Read(ctx, fh, buf, off)
		if errno != 0 {
			t.Fatalf("read at %d: %v", off, errno)
		}
		got, _ := res.Bytes(nil)
		w := want[min(off, int64(len(want))):min(off+1<<20, int64(len(want)))]
		if !bytes.Equal(got, w) {
			t.Errorf("read at %d: %d bytes, want %d", off, len(got), len(w))
		}
	}
	n.Release(ctx, fh)

	if _, _, errno := n.Open(ctx, syscall.O_WRONLY); errno != syscall.EROFS {
		t.Errorf("open for writing: %v, want EROFS", errno)
	}

	// A file over a damaged chunk: EIO, never bytes, and one log line
	// naming the file and the chunk.
	bad, _, _ := lookupPath(t, top, "bad/file")
	fh, _, errno = bad.Open(ctx, syscall.O_RDONLY)
	if errno != 0 {
		t.Fatal(errno)
	}
	for range 3 {
		if res, errno := bad.Read(ctx, fh, make([]byte, 4096), 0); errno != syscall.EIO || res != nil {
			t.Errorf("damaged read: %v, %v; want EIO", res, errno)
		}
	}
	lines := strings.Count(log.String(), "\n")
	if lines != 1 || !strings.Contains(log.String(), "p1/bad/file") || !strings.Contains(log.String(), "chunk 12") {
		t.Errorf("log: %q; want one line naming p1/bad/file and chunk 12", log.String())
	}

	// A damaged directory: EIO on its lookup, the rest still served.
	if _, _, errno := lookupPath(t, top, "bad/dir"); errno != syscall.EIO {
		t.Errorf("damaged dir: %v, want EIO", errno)
	}
	if _, _, errno := lookupPath(t, top, "etc/hosts"); errno != 0 {
		t.Errorf("healthy file after damage: %v", errno)
	}
}

// readAll lists a directory through its handle as the kernel would.
func readAll(t *testing.T, n *node) []fuse.DirEntry {
	t.Helper()
	fh, flags, errno := n.OpendirHandle(context.Background(), 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	if flags&fuse.FOPEN_CACHE_DIR == 0 {
		t.Errorf("opendir flags %#x: want FOPEN_CACHE_DIR", flags)
	}
	d := fh.(*dirHandle)
	var ents []fuse.DirEntry
	for i := 0; ; i++ {
		de, errno := d.Readdirent(context.Background())
		if errno != 0 {
			t.Fatal(errno)
		}
		if de == nil {
			break
		}
		if i > 100000 {
			t.Fatal("endless listing")
		}
		ents = append(ents, *de)
	}
	return ents
}

func TestReaddir(t *testing.T) {
	fsys := sampleTree()
	var log logBuf
	r, _ := newTestRoot(t, fsys, log.logger())
	top := childOps(t, r.EmbeddedInode(), "p1").(*node)

	home, _, _ := lookupPath(t, top, "home")
	ents := readAll(t, home)
	var got []string
	for _, e := range ents {
		got = append(got, fmt.Sprintf("%s:%o:%x", e.Name, e.Mode&syscall.S_IFMT, e.Ino))
	}
	want := []string{
		fmt.Sprintf(".:%o:%x", syscall.S_IFDIR, home.StableAttr().Ino), fmt.Sprintf("..:%o:0", syscall.S_IFDIR),
		fmt.Sprintf("a:%o:%x", syscall.S_IFREG, 1<<48|20), fmt.Sprintf("abs:%o:%x", syscall.S_IFLNK, 1<<48|22),
		fmt.Sprintf("b:%o:%x", syscall.S_IFREG, 1<<48|20), fmt.Sprintf("link:%o:%x", syscall.S_IFLNK, 1<<48|21),
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("listing\n%v\nwant\n%v", got, want)
	}

	// Names the kernel cannot take are hidden and logged.
	hostile, _, _ := lookupPath(t, top, "hostile")
	got = got[:0]
	for _, e := range readAll(t, hostile) {
		got = append(got, e.Name)
	}
	if strings.Join(got, ",") != ".,..,ok" {
		t.Errorf("hostile listing %q", got)
	}
	if !strings.Contains(log.String(), `a/b`) {
		t.Errorf("hidden names not logged: %s", log.String())
	}
	if _, _, errno := lookupPath(t, top, "hostile/.."); errno != syscall.ENOENT {
		t.Errorf("lookup '..' in the tree: %v", errno)
	}

	// Seeking back gives the same entries again.
	many, _, _ := lookupPath(t, top, "many")
	all := readAll(t, many)
	if len(all) != 2+169 {
		t.Fatalf("many: %d entries", len(all))
	}
	fh, _, _ := many.OpendirHandle(context.Background(), 0)
	d := fh.(*dirHandle)
	for i := len(all) - 1; i >= 0; i-- {
		var off uint64
		if i > 0 {
			off = all[i-1].Off
		}
		if errno := d.Seekdir(context.Background(), off); errno != 0 {
			t.Fatal(errno)
		}
		de, _ := d.Readdirent(context.Background())
		if de == nil || *de != all[i] {
			t.Fatalf("after seek to %d: %v, want %v", off, de, all[i])
		}
	}

	// READDIRPLUS: the handle's Lookup reuses the Lstat of the entry.
	fh, _, _ = home.OpendirHandle(context.Background(), 0)
	d = fh.(*dirHandle)
	for {
		de, _ := d.Readdirent(context.Background())
		if de == nil {
			break
		}
		if de.Name == "." || de.Name == ".." {
			continue
		}
		var out fuse.EntryOut
		ch, errno := d.Lookup(context.Background(), de.Name, &out)
		if errno != 0 || ch.StableAttr().Ino != de.Ino || out.Attr.Mode&syscall.S_IFMT != de.Mode&syscall.S_IFMT {
			t.Errorf("readdirplus lookup %s: %v %v", de.Name, ch, errno)
		}
	}

	// A directory that cannot be read gives EIO on readdir.
	etc, _, _ := lookupPath(t, top, "etc")
	fsys.badMeta["etc"] = errChunk
	fh, _, _ = etc.OpendirHandle(context.Background(), 0)
	if _, errno := fh.(*dirHandle).Readdirent(context.Background()); errno != syscall.EIO {
		t.Errorf("damaged directory listing: %v, want EIO", errno)
	}
}

func TestToErrno(t *testing.T) {
	tests := []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{fs.ErrNotExist, syscall.ENOENT},
		{fmt.Errorf("ext4: lookup x: %w", fs.ErrNotExist), syscall.ENOENT},
		{&fs.PathError{Op: "open", Path: "x", Err: syscall.ENOTDIR}, syscall.ENOTDIR},
		{fs.ErrPermission, syscall.EACCES},
		{fmt.Errorf("x: %w", fsdrivers.ErrCorrupt), syscall.EIO},
		{errChunk, syscall.EIO},
		{io.ErrUnexpectedEOF, syscall.EIO},
		{context.Canceled, syscall.EINTR},
		{fmt.Errorf("section: %w", imagefmt.ErrBeyondEnd), syscall.ENOSPC},
		{&os.PathError{Op: "write", Path: "scratch", Err: syscall.ENOSPC}, syscall.ENOSPC},
	}
	for _, tc := range tests {
		if got := toErrno(tc.err); got != tc.want {
			t.Errorf("toErrno(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
