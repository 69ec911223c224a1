package ntfs

import (
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/fsdrivers/fstestutil"
)

var variants = []struct {
	name     string
	size     int64
	args     []string
	compress bool
}{
	{"4k clusters", 96 << 20, []string{"-L", "dimg test"}, true},
	{"512 clusters", 96 << 20, []string{"-c", "512", "-L", "small clusters"}, true},
	{"64k clusters", 160 << 20, []string{"-c", "65536"}, false},
	{"4k sectors", 96 << 20, []string{"-s", "4096", "-c", "4096"}, true},
}

// treeOptions: ntfs-3g shows every file as 0777 without a user mapping;
// we present 0755/0644 (see fileInfo.Mode), so permissions are not
// compared; everything else is.
var treeOptions = fstestutil.Options{IgnorePerm: true}

func TestVolumes(t *testing.T) {
	for _, vt := range variants {
		t.Run(vt.name, func(t *testing.T) {
			fx := makeVolume(t, vt.size, vt.args, fillTree(vt.compress))
			v := open(t, fx.img)
			t.Run("tree", func(t *testing.T) {
				n := fstestutil.CompareTreeWith(t, v, fx.mnt, treeOptions)
				if n < 500 {
					t.Errorf("compared only %d entries", n)
				}
				t.Logf("%d entries compared", n)
			})
			t.Run("fixture covers", func(t *testing.T) { checkCoverage(t, v, vt.compress) })
			t.Run("identity", func(t *testing.T) {
				want := map[string]string{}
				for _, tag := range []string{"TYPE", "UUID", "LABEL"} {
					out, err := exec.Command("blkid", "-p", "-s", tag, "-o", "value", fx.img).Output()
					if err != nil {
						t.Skipf("blkid: %v", err)
					}
					want[tag] = strings.TrimSpace(string(out))
				}
				if v.Type() != want["TYPE"] || v.UUID() != want["UUID"] || v.Label() != want["LABEL"] {
					t.Errorf("type %q uuid %q label %q; blkid %v", v.Type(), v.UUID(), v.Label(), want)
				}
			})
			t.Run("used ranges", func(t *testing.T) { testUsedRanges(t, v, fx) })
		})
	}
}

// testUsedRanges copies only the used ranges into a zeroed file: ntfsfix
// must find it clean and ntfs-3g must show the same tree.
func testUsedRanges(t *testing.T, v *Volume, fx fixture) {
	rs, err := v.UsedRanges()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(fx.img)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	cp := t.TempDir() + "/copy.img"
	dst, err := os.Create(cp)
	if err != nil {
		t.Fatal(err)
	}
	must(t, dst.Truncate(fx.size))
	var used, prevEnd int64
	buf := make([]byte, 1<<20)
	for _, r := range rs {
		if r.Off < prevEnd || r.Len <= 0 || r.Off+r.Len > fx.size {
			t.Fatalf("range %+v after %d: not sorted, empty or past the end", r, prevEnd)
		}
		prevEnd = r.Off + r.Len
		used += r.Len
		for off := r.Off; off < r.Off+r.Len; {
			n := min(int64(len(buf)), r.Off+r.Len-off)
			if _, err := src.ReadAt(buf[:n], off); err != nil {
				t.Fatal(err)
			}
			if _, err := dst.WriteAt(buf[:n], off); err != nil {
				t.Fatal(err)
			}
			off += n
		}
	}
	must(t, dst.Close())
	if last := rs[len(rs)-1]; last.Off+last.Len != fx.size {
		t.Errorf("last range %+v does not end with the backup boot sector at %d", last, fx.size)
	}
	t.Logf("%d ranges, %d of %d bytes used", len(rs), used, fx.size)
	out := runCmd(t, "ntfsfix", "-n", cp)
	if !strings.Contains(out, "processed successfully") || strings.Contains(strings.ToLower(out), "error") {
		t.Errorf("ntfsfix -n on the used-ranges copy:\n%s", out)
	}
	// ntfs-3g reading the copy sees what we see in the original.
	fstestutil.CompareTreeWith(t, v, mount(t, cp, true), treeOptions)
}

var _ fsdrivers.Filesystem = (*Volume)(nil)

// checkCoverage makes sure the fixture holds the structures the tree
// comparison is meant to exercise, so a change in ntfs-3g's behaviour
// cannot quietly make the test weaker.
func checkCoverage(t *testing.T, v *Volume, compress bool) {
	ino := func(name string) *inode {
		i, err := v.resolve("test", name, false)
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	// With 4 KiB records (4 KiB sectors) the runlist fits one record.
	if v.boot.recordSize == 1024 {
		if len(pick(ino("dir/fragmented.bin").attrs, atAttributeList, "")) == 0 {
			t.Error("dir/fragmented.bin has no $ATTRIBUTE_LIST")
		}
		if n := len(pick(ino("dir/fragmented.bin").attrs, atData, "")); n < 2 {
			t.Errorf("dir/fragmented.bin $DATA in %d extents, want several", n)
		}
	}
	if compress {
		for _, name := range []string{"comp/text.txt", "comp/holes.bin", "comp/random.bin"} {
			if d := pick(ino(name).attrs, atData, ""); d[0].flags&attrFlagCompressed == 0 {
				t.Errorf("%s is not compressed", name)
			}
		}
	}
	if d := pick(ino("sparse.bin").attrs, atData, ""); d[0].flags&attrFlagSparse == 0 {
		t.Error("sparse.bin is not sparse")
	}
	// The big directory: a tree of more than two levels.
	idx, err := v.openIndex(ino("many"))
	if err != nil {
		t.Fatal(err)
	}
	depth := 0
	for es := idx.root; ; depth++ {
		last := es[len(es)-1]
		if last.child < 0 {
			break
		}
		if es, err = idx.block(last.child); err != nil {
			t.Fatal(err)
		}
	}
	if depth < 1 {
		t.Errorf("many/ index has depth %d", depth)
	}
	t.Logf("many/ index depth %d", depth)
	for name, kind := range map[string]fileKind{"sym": kindSymlink, "fifo": kindFIFO, "chr": kindChar, "blk": kindBlock, "dir": kindDir} {
		if k := ino(name).kind; k != kind {
			t.Errorf("%s: kind %d, want %d", name, k, kind)
		}
	}
}

func fsReadFile(v *Volume, name string) ([]byte, error) {
	return fs.ReadFile(v, name)
}
