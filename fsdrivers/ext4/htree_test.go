package ext4

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/dimg-project/dimg/fsdrivers/fstestutil"
	"github.com/dimg-project/dimg/internal/lru"
)

// hashNames are names that exercise every branch of the hashes: empty
// tail words, multiples of 16 and 32 bytes, high bytes (signed vs
// unsigned char), the 255-byte maximum.
func hashNames() []string {
	names := []string{"a", "ab", "abc", "abcd", "hello", "héllo", "日本語のファイル名", "\xff\xfe\x80x",
		"lost+found", strings.Repeat("z", 255), strings.Repeat("é", 100)}
	for _, n := range []int{15, 16, 17, 31, 32, 33, 63, 64, 65, 100} {
		names = append(names, strings.Repeat("q", n-1)+"\xc3")
	}
	for i := range 20 {
		names = append(names, fmt.Sprintf("file-%05d.dat", i*7919))
	}
	return names
}

var dxHashRE = regexp.MustCompile(`^Hash of (.*) is 0x([0-9a-f]+) \(minor 0x[0-9a-f]+\)$`)

// TestDirHashMatchesDebugfs compares our six hash variants with debugfs's
// dx_hash for a fixed seed and for the all-zero seed (default constants).
func TestDirHashMatchesDebugfs(t *testing.T) {
	need(t, "debugfs", "mke2fs")
	img := mkfs(t, 4<<20, "")
	names := hashNames()
	seeds := map[string][4]uint32{
		testHashSeed:                           uuidWords(t, testHashSeed),
		"00000000-0000-0000-0000-000000000000": {},
	}
	for seedStr, seed := range seeds {
		var script strings.Builder
		for v := range 6 {
			for _, n := range names {
				fmt.Fprintf(&script, "dx_hash -h %d -s %s %s\n", v, seedStr, n)
			}
		}
		cmdFile := filepath.Join(t.TempDir(), "cmds")
		os.WriteFile(cmdFile, []byte(script.String()), 0o644)
		out := runCmd(t, "debugfs", "-f", cmdFile, img)
		var got []uint32
		for _, line := range strings.Split(out, "\n") {
			if m := dxHashRE.FindStringSubmatch(line); m != nil {
				h, _ := strconv.ParseUint(m[2], 16, 32)
				got = append(got, uint32(h))
			}
		}
		if len(got) != 6*len(names) {
			t.Fatalf("debugfs printed %d hashes, want %d:\n%s", len(got), 6*len(names), out[:min(2000, len(out))])
		}
		for v := range 6 {
			for i, n := range names {
				want := got[v*len(names)+i]
				h, ok := dirHash([]byte(n), uint8(v), seed)
				if !ok || h != want {
					t.Errorf("seed %s hash %d of %q = %#08x, debugfs %#08x", seedStr, v, n, h, want)
				}
			}
		}
	}
}

// uuidWords decodes a UUID string the way s_hash_seed stores it: 16 bytes
// read as four little-endian words.
func uuidWords(t testing.TB, s string) [4]uint32 {
	t.Helper()
	hex := strings.ReplaceAll(s, "-", "")
	var b [16]byte
	for i := range b {
		x, err := strconv.ParseUint(hex[2*i:2*i+2], 16, 8)
		if err != nil {
			t.Fatal(err)
		}
		b[i] = byte(x)
	}
	var w [4]uint32
	for i := range w {
		w[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return w
}

// bigDirNames are the names of the large test directory, with some
// non-ASCII ones so the signed and unsigned hashes differ.
func bigDirNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("name-%06d", i)
		if i%10 == 3 {
			names[i] = fmt.Sprintf("ñame-ü-%06d-%s", i, strings.Repeat("x", i%50))
		}
	}
	return names
}

// TestHtreeLookup indexes directories with e2fsck -D (e2fsprogs' htree
// writer) for each hash and char signedness and checks that every name is
// found through the index and absent names are not.
func TestHtreeLookup(t *testing.T) {
	need(t, "mke2fs", "e2fsck", "debugfs", "tune2fs")
	const n = 2500
	src := t.TempDir()
	os.Mkdir(filepath.Join(src, "big"), 0o755)
	names := bigDirNames(n)
	for _, name := range names {
		os.WriteFile(filepath.Join(src, "big", name), nil, 0o644)
	}
	// Two base images (populating is the slow part); each variant re-hashes
	// a copy.
	bases := map[string]string{
		"ext4-1k": mkfs(t, 32<<20, src, "-t", "ext4", "-b", "1024"),
		"ext3-2k": mkfs(t, 32<<20, src, "-t", "ext3", "-b", "2048"),
	}
	for _, c := range []struct {
		base, hash string
		signed     bool
	}{
		{"ext4-1k", "half_md4", true},
		{"ext3-2k", "half_md4", false},
		{"ext4-1k", "tea", false},
		{"ext3-2k", "tea", true},
		{"ext4-1k", "legacy", true},
		{"ext3-2k", "legacy", false},
	} {
		sign := map[bool]string{true: "signed", false: "unsigned"}[c.signed]
		t.Run(c.base+"-"+c.hash+"-"+sign, func(t *testing.T) {
			b, err := os.ReadFile(bases[c.base])
			if err != nil {
				t.Fatal(err)
			}
			img := filepath.Join(t.TempDir(), "fs.img")
			os.WriteFile(img, b, 0o644)
			runCmd(t, "tune2fs", "-E", "hash_alg="+c.hash, img)
			runCmd(t, "debugfs", "-w", "-R", "ssv flags "+map[bool]string{true: "1", false: "2"}[c.signed], img)
			// Rebuild every directory's index with the new hash.
			if out, err := runCmdErr("e2fsck", "-fyD", img); err != nil && !strings.Contains(err.Error(), "exit status 1") {
				t.Fatalf("e2fsck -fyD: %v\n%s", err, out)
			}
			fsck(t, img)
			htree := runCmd(t, "debugfs", "-R", "htree big", img)
			version := map[string]string{"legacy": "0", "half_md4": "1", "tea": "2"}[c.hash]
			if !strings.Contains(htree, "Hash Version: "+version+"\n") {
				t.Fatalf("big is not indexed with hash %s:\n%s", version, htree[:min(len(htree), 500)])
			}
			v := openImage(t, img)
			big, err := v.walk("test", "big", false)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range names {
				// Through the index itself: no fallback to a scan.
				if _, err := v.dxLookup(big, []byte(name)); err != nil {
					t.Fatalf("dxLookup(%s): %v", name, err)
				}
			}
			for _, name := range names {
				fi, err := v.Lstat("big/" + name)
				if err != nil {
					t.Fatalf("Lstat(big/%s): %v", name, err)
				}
				if fi.Name() != name || !fi.Mode().IsRegular() {
					t.Fatalf("Lstat(big/%s) = %s %v", name, fi.Name(), fi.Mode())
				}
			}
			for _, absent := range []string{"name-999999", "nope", "ñame-ü-000003-"} {
				if _, err := v.Lstat("big/" + absent); !os.IsNotExist(err) {
					t.Errorf("Lstat(big/%s) = %v, want not-exist", absent, err)
				}
			}
			ents, err := v.ReadDir("big")
			if err != nil || len(ents) != n {
				t.Fatalf("ReadDir(big): %d entries, %v", len(ents), err)
			}
		})
	}
}

// TestHtreeKernel20000 lets the kernel build a 20,000-entry directory and
// checks lookups use the index: a cold Stat of one name reads fewer than
// 20 times from the device, where a scan would read the whole directory.
func TestHtreeKernel20000(t *testing.T) {
	need(t, "mke2fs", "e2fsck", "debugfs")
	needLoop(t)
	const n = 20000
	// 1 KiB blocks: ~500 leaves, more than the root holds, so the index
	// has a second level.
	img := mkfs(t, 64<<20, "", "-t", "ext4", "-b", "1024", "-N", "30000")
	dir, unmount := mount(t, img, true)
	os.Mkdir(filepath.Join(dir, "big"), 0o755)
	names := bigDirNames(n)
	for _, name := range names {
		f, err := os.Create(filepath.Join(dir, "big", name))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	unmount()
	fsck(t, img)
	if htree := runCmd(t, "debugfs", "-R", "htree big", img); !strings.Contains(htree, "Indirect levels: 1") {
		t.Fatalf("the kernel did not build a two-level index for big:\n%s", htree[:min(len(htree), 500)])
	}

	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	cr := &countingReaderAt{r: f}
	v, err := Open(cr, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1, 4999, 12345, 19999, 13} {
		v.blocks = lru.New[uint64, []byte](1) // cold caches: count real reads
		v.inodes = lru.New[uint32, *inode](1)
		v.nodes = lru.New[uint64, *extNode](1)
		cr.n.Store(0)
		if _, err := v.Stat("big/" + names[i]); err != nil {
			t.Fatalf("Stat(big/%s): %v", names[i], err)
		}
		if reads := cr.n.Load(); reads >= 20 {
			t.Errorf("Stat(big/%s) took %d reads; the htree should need a handful", names[i], reads)
		} else {
			t.Logf("Stat(big/%s): %d reads", names[i], reads)
		}
	}
	rdir, _ := mount(t, img, false)
	fstestutil.CompareTreeWith(t, v, rdir, kernelView)
}
