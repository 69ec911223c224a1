package ext4

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/fsdrivers"
)

// smallTree is a little source tree for the corruption tests.
func smallTree(t testing.TB) string {
	t.Helper()
	src := t.TempDir()
	os.WriteFile(src+"/a.txt", []byte("alpha\n"), 0o644)
	os.WriteFile(src+"/b.txt", []byte("bravo\n"), 0o644)
	os.Mkdir(src+"/d", 0o755)
	for i := range 200 {
		os.WriteFile(src+"/d/f"+strconv.Itoa(i), []byte(strconv.Itoa(i)), 0o644)
	}
	big := make([]byte, 3<<20)
	for i := range big {
		big[i] = byte(i / 4096)
	}
	os.WriteFile(src+"/big", big, 0o644)
	return src
}

func patch(t testing.TB, img string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func readAt(t testing.TB, img string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

// fsckFails asserts e2fsck -fn also sees the damage (the oracle agrees the
// image is corrupt, so our error is not a false alarm).
func fsckFails(t testing.TB, img string) {
	t.Helper()
	if out, err := runCmdErr("e2fsck", "-fn", img); err == nil {
		t.Fatalf("e2fsck -fn finds nothing wrong after the damage:\n%s", out)
	}
}

var imapRE = regexp.MustCompile(`located at block (\d+), offset 0x([0-9a-f]+)`)

// inodeOffset asks debugfs where name's inode is stored.
func inodeOffset(t testing.TB, img, name string, bs int64) int64 {
	t.Helper()
	out := runCmd(t, "debugfs", "-R", "imap "+name, img)
	m := imapRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("debugfs imap %s:\n%s", name, out)
	}
	blk, _ := strconv.ParseInt(m[1], 10, 64)
	off, _ := strconv.ParseInt(m[2], 16, 64)
	return blk*bs + off
}

func bmap(t testing.TB, img, name string, lblk int) int64 {
	t.Helper()
	out := strings.TrimSpace(runCmd(t, "debugfs", "-R", "bmap "+name+" "+strconv.Itoa(lblk), img))
	lines := strings.Split(out, "\n")
	n, err := strconv.ParseInt(strings.TrimSpace(lines[len(lines)-1]), 10, 64)
	if err != nil {
		t.Fatalf("debugfs bmap: %s", out)
	}
	return n
}

func wantCorrupt(t testing.TB, what string, err error) {
	t.Helper()
	if !errors.Is(err, fsdrivers.ErrCorrupt) {
		t.Errorf("%s: error %v, want one wrapping ErrCorrupt", what, err)
	}
}

// stillReads checks that damage to one file leaves another readable.
func stillReads(t testing.TB, v *Volume, name, want string) {
	t.Helper()
	b, err := fs.ReadFile(v, name)
	if err != nil || string(b) != want {
		t.Errorf("ReadFile(%s) = %q, %v; the rest of the filesystem should still read", name, b, err)
	}
}

func TestCorruptSuperblock(t *testing.T) {
	need(t, "mke2fs")
	img := mkfs(t, 8<<20, "", "-t", "ext4")
	good, _ := os.ReadFile(img)

	t.Run("no magic", func(t *testing.T) {
		b := bytes.Clone(good)
		b[1024+0x38] = 0
		if _, err := Open(bytes.NewReader(b), int64(len(b))); !errors.Is(err, fsdrivers.ErrNotFound) {
			t.Errorf("Open = %v, want ErrNotFound", err)
		}
	})
	t.Run("too small", func(t *testing.T) {
		if _, err := Open(bytes.NewReader(good[:1500]), 1500); !errors.Is(err, fsdrivers.ErrNotFound) {
			t.Errorf("Open = %v, want ErrNotFound", err)
		}
	})
	t.Run("checksum", func(t *testing.T) {
		b := bytes.Clone(good)
		b[1024+0x78] ^= 1 // a label byte: only the checksum notices
		_, err := Open(bytes.NewReader(b), int64(len(b)))
		wantCorrupt(t, "Open", err)
	})
	t.Run("truncated", func(t *testing.T) {
		_, err := Open(bytes.NewReader(good[:len(good)/2]), int64(len(good)/2))
		wantCorrupt(t, "Open", err)
		if err == nil || !strings.Contains(err.Error(), "truncated") {
			t.Errorf("error %v does not say truncated", err)
		}
	})
	// Geometry fields that would make sizes explode, on a filesystem
	// without checksums so only the range checks stand in the way.
	plain := mkfs(t, 8<<20, "", "-t", "ext2")
	pgood, _ := os.ReadFile(plain)
	for _, c := range []struct {
		name string
		off  int
		val  uint32
	}{
		{"log block size", 0x18, 30},
		{"blocks per group 0", 0x20, 0},
		{"blocks per group huge", 0x20, 1 << 30},
		{"inodes per group 0", 0x28, 0},
		{"inode size 3", 0x58, 3 | 0x00030000},
		{"inodes count", 0x0, 0xFFFFFFFF},
		{"first data block", 0x14, 0xFFFFFF},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := bytes.Clone(pgood)
			binary.LittleEndian.PutUint32(b[1024+c.off:], c.val)
			_, err := Open(bytes.NewReader(b), int64(len(b)))
			wantCorrupt(t, "Open", err)
		})
	}
}

func TestCorruptInodeChecksum(t *testing.T) {
	need(t, "mke2fs", "debugfs", "e2fsck")
	img := mkfs(t, 16<<20, smallTree(t), "-t", "ext4", "-b", "4096")
	off := inodeOffset(t, img, "a.txt", 4096)
	b := readAt(t, img, off+0x10, 1)
	patch(t, img, off+0x10, []byte{b[0] ^ 0x40}) // mtime: only the checksum notices
	fsckFails(t, img)
	v := openImage(t, img)
	_, err := v.Stat("a.txt")
	wantCorrupt(t, "Stat(a.txt)", err)
	if err == nil || !strings.Contains(err.Error(), "inode") {
		t.Errorf("error %v does not name the inode", err)
	}
	stillReads(t, v, "b.txt", "bravo\n")
	// Listing the directory still works: the entry is there, its Info fails.
	ents, err := v.ReadDir(".")
	if err != nil {
		t.Fatalf("ReadDir: %v", err)
	}
	for _, e := range ents {
		if e.Name() == "a.txt" {
			if _, err := e.Info(); err == nil {
				t.Errorf("Info of the damaged inode succeeded")
			}
		}
	}
}

func TestCorruptDirBlock(t *testing.T) {
	need(t, "mke2fs", "debugfs", "e2fsck")
	for _, csum := range []bool{true, false} {
		name := map[bool]string{true: "csum", false: "nocsum"}[csum]
		t.Run(name, func(t *testing.T) {
			opts := []string{"-t", "ext4", "-b", "4096", "-O", "^dir_index"}
			if !csum {
				opts = []string{"-t", "ext4", "-b", "4096", "-O", "^metadata_csum,^dir_index"}
			}
			img := mkfs(t, 16<<20, smallTree(t), opts...)
			blk := bmap(t, img, "d", 0)
			// The third entry follows "." (12 bytes) and ".." (12 bytes).
			if csum {
				// A name byte: only the checksum notices.
				b := readAt(t, img, blk*4096+24+8, 1)
				patch(t, img, blk*4096+24+8, []byte{b[0] ^ 1})
			} else {
				// rec_len 5: malformed.
				patch(t, img, blk*4096+24+4, []byte{5, 0})
			}
			fsckFails(t, img)
			v := openImage(t, img)
			_, err := v.ReadDir("d")
			wantCorrupt(t, "ReadDir(d)", err)
			stillReads(t, v, "a.txt", "alpha\n")
		})
	}
}

func TestCorruptHtree(t *testing.T) {
	need(t, "mke2fs", "debugfs", "e2fsck")
	src := t.TempDir()
	os.Mkdir(src+"/big", 0o755)
	for _, n := range bigDirNames(3000) {
		os.WriteFile(src+"/big/"+n, nil, 0o644)
	}
	img := mkfs(t, 32<<20, src, "-t", "ext4", "-b", "1024")
	runCmd(t, "e2fsck", "-fyD", img)
	fsck(t, img)
	root := bmap(t, img, "big", 0)
	// Flip a bit in a dx_entry hash: the dx_tail checksum catches it.
	b := readAt(t, img, root*1024+0x28, 1)
	patch(t, img, root*1024+0x28, []byte{b[0] ^ 0x10})
	fsckFails(t, img)
	v := openImage(t, img)
	_, err := v.Stat("big/name-000001")
	wantCorrupt(t, "Stat through a damaged htree root", err)
}

func TestExtentTreeLoop(t *testing.T) {
	need(t, "mke2fs", "debugfs", "e2fsck")
	// No checksums, so only the structural checks can catch it.
	src := t.TempDir()
	f, _ := os.Create(src + "/frag")
	for i := range int64(40) {
		f.WriteAt([]byte("x"), i*8192)
	}
	f.Close()
	os.WriteFile(src+"/ok", []byte("fine"), 0o644)
	img := mkfs(t, 16<<20, src, "-t", "ext4", "-b", "4096", "-O", "^metadata_csum")
	v := openImage(t, img)
	ino, err := v.walk("t", "frag", false)
	if err != nil {
		t.Fatal(err)
	}
	root, err := v.parseExtNode(ino.block[:], extLoc{})
	if err != nil || root.depth != 1 {
		t.Fatalf("frag root depth %v, %v: want an index root", root, err)
	}
	leaf := int64(root.entries[0].phys)
	// Turn the leaf into an index node that points to itself.
	hdr := readAt(t, img, leaf*4096, 12)
	binary.LittleEndian.PutUint16(hdr[2:], 1) // entries
	binary.LittleEndian.PutUint16(hdr[6:], 1) // depth
	ent := make([]byte, 12)
	binary.LittleEndian.PutUint32(ent[4:], uint32(leaf))
	patch(t, img, leaf*4096, append(hdr, ent...))
	fsckFails(t, img)

	v = openImage(t, img)
	fr, err := v.Open("frag")
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(fr)
	wantCorrupt(t, "reading a file whose extent tree loops", err)
	stillReads(t, v, "ok", "fine")
}

func TestCorruptBitmapFallsBackToUsed(t *testing.T) {
	need(t, "mke2fs", "e2fsck")
	img := mkfs(t, 32<<20, smallTree(t), "-t", "ext4", "-b", "1024", "-O", "^flex_bg", "-g", "2048")
	v := openImage(t, img)
	before, err := v.UsedRanges()
	if err != nil {
		t.Fatal(err)
	}
	gd, err := v.groupDesc(0)
	if err != nil {
		t.Fatal(err)
	}
	// Clear a byte in group 0's block bitmap: its checksum no longer matches.
	patch(t, img, int64(gd.blockBitmap)*1024+100, []byte{0})
	v = openImage(t, img)
	after, err := v.UsedRanges()
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Warnings()) != 1 || !strings.Contains(v.Warnings()[0], "group 0") {
		t.Errorf("warnings %q, want one about group 0", v.Warnings())
	}
	sum := func(rs []fsdrivers.Range) (n int64) {
		for _, r := range rs {
			n += r.Len
		}
		return n
	}
	if sum(after) < sum(before) {
		t.Errorf("a damaged bitmap lost data: %d used bytes before, %d after", sum(before), sum(after))
	}
	if after[0].Off != 0 || after[0].Len < 2048*1024 {
		t.Errorf("group 0 is not counted as fully used: first range %+v", after[0])
	}

	// A damaged group descriptor: same fallback, and no inode in that group reads.
	blk, off := v.descLocation(1)
	patch(t, img, int64(blk)*1024+int64(off)+0x0C, []byte{0x77})
	v = openImage(t, img)
	if _, err := v.UsedRanges(); err != nil {
		t.Fatal(err)
	}
	if len(v.Warnings()) != 2 {
		t.Errorf("warnings %q, want groups 0 and 1", v.Warnings())
	}
}

func TestTruncatedReads(t *testing.T) {
	need(t, "mke2fs")
	img := mkfs(t, 16<<20, smallTree(t), "-t", "ext4", "-b", "4096")
	b, _ := os.ReadFile(img)
	v := openImage(t, img)
	ino, err := v.walk("t", "big", false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := v.mapBlock(ino, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A device that ends in the middle of big's data (the image was cut
	// short but claims its full size): Open works, the read fails with an
	// error, and metadata before the cut still reads.
	cut := &cutReader{b: b, cut: int64(r.phys)*4096 + 1<<20}
	v, err = Open(cut, int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	f, err := v.Open("big")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(f); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("reading past the cut: %v, want io.ErrUnexpectedEOF", err)
	}
	if ents, err := v.ReadDir("."); err != nil || len(ents) != 5 {
		t.Errorf("ReadDir(.) = %d entries, %v", len(ents), err)
	}
	if fi, err := v.Stat("a.txt"); err != nil || fi.Size() != 6 {
		t.Errorf("Stat(a.txt) = %v, %v", fi, err)
	}
}

type cutReader struct {
	b   []byte
	cut int64
}

func (c *cutReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= c.cut {
		return 0, io.EOF
	}
	n := copy(p, c.b[off:min(int64(len(c.b)), c.cut)])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// TestCorruptChecksummedBlocks flips a byte only a checksum covers in an
// extent block and in an xattr block.
func TestCorruptChecksummedBlocks(t *testing.T) {
	need(t, "mke2fs", "e2fsck")
	src := t.TempDir()
	f, _ := os.Create(src + "/frag")
	for i := range int64(40) {
		f.WriteAt([]byte("x"), i*8192)
	}
	f.Close()
	os.WriteFile(src+"/attrs", []byte("a"), 0o644)
	if err := unix.Setxattr(src+"/attrs", "user.big", bytes.Repeat([]byte("v"), 600), 0); err != nil {
		t.Skipf("setxattr: %v", err)
	}
	os.WriteFile(src+"/ok", []byte("fine"), 0o644)
	img := mkfs(t, 16<<20, src, "-t", "ext4", "-b", "4096")
	v := openImage(t, img)
	frag, err := v.walk("t", "frag", false)
	if err != nil {
		t.Fatal(err)
	}
	root, err := v.parseExtNode(frag.block[:], extLoc{})
	if err != nil || root.depth != 1 {
		t.Fatalf("frag root %v, %v: want an index root", root, err)
	}
	attrs, err := v.walk("t", "attrs", false)
	if err != nil || attrs.fileACL == 0 {
		t.Fatalf("attrs has no xattr block (%v)", err)
	}
	leaf := int64(root.entries[0].phys)
	g := readAt(t, img, leaf*4096+8, 1) // eh_generation
	patch(t, img, leaf*4096+8, []byte{g[0] ^ 1})
	x := readAt(t, img, int64(attrs.fileACL)*4096+4000, 1) // in the value area
	patch(t, img, int64(attrs.fileACL)*4096+4000, []byte{x[0] ^ 1})
	fsckFails(t, img)

	v = openImage(t, img)
	fr, err := v.Open("frag")
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(fr)
	wantCorrupt(t, "reading through a damaged extent block", err)
	_, err = v.Xattrs("attrs")
	wantCorrupt(t, "Xattrs with a damaged xattr block", err)
	stillReads(t, v, "ok", "fine")
}

// TestNeedsRecoveryCountsEverything: with an unreplayed journal the
// bitmaps cannot be trusted, so the whole filesystem is used.
func TestNeedsRecoveryCountsEverything(t *testing.T) {
	need(t, "mke2fs", "debugfs")
	img := mkfs(t, 16<<20, smallTree(t), "-t", "ext4")
	runCmd(t, "debugfs", "-w", "-R", "feature needs_recovery", img)
	v := openImage(t, img)
	rs, err := v.UsedRanges()
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || rs[0].Off != 0 || rs[0].Len != 16<<20 || len(v.Warnings()) != 1 {
		t.Errorf("UsedRanges = %v, warnings %q; want everything and a warning", rs, v.Warnings())
	}
	stillReads(t, v, "a.txt", "alpha\n")
}

// TestUnknownIncompatFeature: identification works, everything that
// depends on the layout refuses with ErrUnsupported.
func TestUnknownIncompatFeature(t *testing.T) {
	need(t, "mke2fs", "debugfs")
	img := mkfs(t, 16<<20, smallTree(t), "-t", "ext4", "-L", "dd")
	runCmd(t, "debugfs", "-w", "-R", "feature dirdata", img)
	v := openImage(t, img)
	if v.Type() != "ext4" || v.Label() != "dd" {
		t.Errorf("identification: %s %q", v.Type(), v.Label())
	}
	if _, err := v.UsedRanges(); !errors.Is(err, ErrUnsupported) {
		t.Errorf("UsedRanges = %v, want ErrUnsupported", err)
	}
	if _, err := v.Stat("a.txt"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Stat = %v, want ErrUnsupported", err)
	}
}
