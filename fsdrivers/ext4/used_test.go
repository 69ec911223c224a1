package ext4

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/fsdrivers/fstestutil"
)

// dumpe2fsInfo is what dumpe2fs says about block usage.
type dumpe2fsInfo struct {
	blockSize, blockCount, freeBlocks int64
	free                              []blockRun // from the per-group "Free blocks:" lists
}

var headerRE = regexp.MustCompile(`^(Block size|Cluster size|Block count|Free blocks):\s+(\d+)$`)

func dumpe2fs(t testing.TB, img string) dumpe2fsInfo {
	t.Helper()
	need(t, "dumpe2fs")
	out := runCmd(t, "dumpe2fs", img)
	var d dumpe2fsInfo
	var clusterSize int64
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := headerRE.FindStringSubmatch(line); m != nil {
			n, _ := strconv.ParseInt(m[2], 10, 64)
			switch m[1] {
			case "Block size":
				d.blockSize = n
			case "Cluster size":
				clusterSize = n
			case "Block count":
				d.blockCount = n
			case "Free blocks":
				d.freeBlocks = n
			}
			continue
		}
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "Free blocks: ")
		if !ok || !strings.HasPrefix(line, "  ") {
			continue
		}
		for _, r := range strings.Split(rest, ", ") {
			a, b, isRange := strings.Cut(strings.TrimSpace(r), "-")
			s, err1 := strconv.ParseUint(a, 10, 64)
			e := s
			var err2 error
			if isRange {
				e, err2 = strconv.ParseUint(b, 10, 64)
			}
			if err1 != nil || err2 != nil {
				t.Fatalf("dumpe2fs free list %q", rest)
			}
			if clusterSize > d.blockSize {
				// bigalloc: both ends are the first blocks of clusters.
				e += uint64(clusterSize/d.blockSize) - 1
			}
			d.free = append(d.free, blockRun{s, e - s + 1})
		}
	}
	if d.blockSize == 0 || d.blockCount == 0 {
		t.Fatalf("dumpe2fs output without geometry:\n%s", out[:min(len(out), 2000)])
	}
	return d
}

// usedBlocks turns byte ranges into a per-block map (test images are small).
func usedBlocks(t testing.TB, rs []fsdrivers.Range, bs, count int64) []bool {
	t.Helper()
	used := make([]bool, count)
	var prevEnd int64 = -1
	for _, r := range rs {
		if r.Len <= 0 || r.Off <= prevEnd {
			t.Fatalf("ranges not sorted, merged and non-empty at %+v", r)
		}
		prevEnd = r.Off + r.Len
		if r.Off+r.Len > bs*count {
			t.Fatalf("range %+v past the filesystem end %d", r, bs*count)
		}
		for b := r.Off / bs; b < (r.Off+r.Len+bs-1)/bs; b++ {
			used[b] = true
		}
	}
	return used
}

// checkUsedAgainstDumpe2fs asserts that our used map is exactly the
// complement of dumpe2fs's free lists, and that its size agrees with the
// superblock's free count.
func checkUsedAgainstDumpe2fs(t *testing.T, v *Volume, img string) []fsdrivers.Range {
	t.Helper()
	rs, err := v.UsedRanges()
	if err != nil {
		t.Fatalf("UsedRanges: %v", err)
	}
	if w := v.Warnings(); len(w) > 0 {
		t.Errorf("warnings on a clean filesystem: %v", w)
	}
	d := dumpe2fs(t, img)
	var sum int64
	for _, r := range rs {
		sum += r.Len
	}
	want := (d.blockCount - d.freeBlocks) * d.blockSize
	if sum != want {
		t.Errorf("used bytes %d, dumpe2fs says (%d - %d free) * %d = %d", sum, d.blockCount, d.freeBlocks, d.blockSize, want)
	}
	if sbWant := int64(v.sb.blocksCount-v.sb.freeBlocksCount) * v.blockSize; sum != sbWant {
		t.Errorf("used bytes %d, superblock says %d", sum, sbWant)
	}
	used := usedBlocks(t, rs, d.blockSize, d.blockCount)
	free := make([]bool, d.blockCount)
	for _, f := range d.free {
		for b := f.start; b < f.start+f.count; b++ {
			free[b] = true
		}
	}
	bad := 0
	for b := range used {
		if used[b] == free[b] {
			if bad < 10 {
				t.Errorf("block %d: used=%v but dumpe2fs free=%v", b, used[b], free[b])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d blocks disagree with dumpe2fs", bad)
	}
	return rs
}

// TestUsedRangesMatchDumpe2fs checks the used map of every layout
// (BLOCK_UNINIT groups, flex_bg, meta_bg, sparse_super2, bigalloc, 1 KiB
// to 64 KiB blocks) against dumpe2fs, block by block.
func TestUsedRangesMatchDumpe2fs(t *testing.T) {
	need(t, "mke2fs", "dumpe2fs")
	src := sourceTree(t)
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			img := mkfs(t, c.size, src, c.opts...)
			v := openImage(t, img)
			checkUsedAgainstDumpe2fs(t, v, img)
		})
	}
	// Many small groups, so most are BLOCK_UNINIT and flex_bg packs
	// their metadata into the first ones; and the same without flex_bg.
	for _, opts := range [][]string{
		{"-t", "ext4", "-b", "1024", "-g", "1024", "-N", "4096"},
		{"-t", "ext4", "-b", "1024", "-g", "1024", "-O", "^flex_bg"},
		{"-t", "ext4", "-G", "4", "-g", "8192"},
	} {
		t.Run(strings.Join(opts, ""), func(t *testing.T) {
			img := mkfs(t, 96<<20, src, opts...)
			v := openImage(t, img)
			checkUsedAgainstDumpe2fs(t, v, img)
		})
	}
}

// copyRanges copies only the used ranges of img into a new file whose
// other bytes are fill.
func copyRanges(t testing.TB, img string, rs []fsdrivers.Range, fill byte) string {
	t.Helper()
	in, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	fi, _ := in.Stat()
	outPath := filepath.Join(t.TempDir(), "copy.img")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if fill == 0 {
		out.Truncate(fi.Size())
	} else {
		pat := bytes.Repeat([]byte{fill}, 1<<20)
		for off := int64(0); off < fi.Size(); off += int64(len(pat)) {
			out.WriteAt(pat[:min(int64(len(pat)), fi.Size()-off)], off)
		}
	}
	for _, r := range rs {
		if _, err := io.Copy(io.NewOffsetWriter(out, r.Off), io.NewSectionReader(in, r.Off, r.Len)); err != nil {
			t.Fatal(err)
		}
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return outPath
}

// TestUsedRangesCopyIsComplete is the end-to-end check: a kernel-written
// filesystem with deleted files is copied through its used ranges only,
// into zeros and into garbage; both copies must pass e2fsck and show every
// file exactly as the original.
func TestUsedRangesCopyIsComplete(t *testing.T) {
	need(t, "mke2fs", "e2fsck", "dumpe2fs")
	needLoop(t)
	for _, c := range []fsConfig{
		{name: "ext4", size: 96 << 20, opts: []string{"-t", "ext4"}},
		{name: "ext4-1k", size: 64 << 20, opts: []string{"-t", "ext4", "-b", "1024"}},
		{name: "ext3", size: 64 << 20, opts: []string{"-t", "ext3"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := mkfs(t, c.size, sourceTree(t), c.opts...)
			dir, unmount := mount(t, img, true)
			// Write, then delete a large file: its blocks hold stale data
			// that must not be in the used map.
			big := filepath.Join(dir, "deleted.bin")
			writeRandom(t, big, 24<<20)
			writeRandom(t, filepath.Join(dir, "kept.bin"), 3<<20+17)
			if err := os.MkdirAll(filepath.Join(dir, "newdir/a/b"), 0o755); err != nil {
				t.Fatal(err)
			}
			writeRandom(t, filepath.Join(dir, "newdir/a/b/c"), 100000)
			syncFS(t, dir)
			deletedBlocks := fileBlocks(t, big)
			if err := os.Remove(big); err != nil {
				t.Fatal(err)
			}
			unmount()
			fsck(t, img)

			v := openImage(t, img)
			rs := checkUsedAgainstDumpe2fs(t, v, img)
			used := usedBlocks(t, rs, v.blockSize, int64(v.sb.blocksCount))
			inUse := 0
			for _, b := range deletedBlocks {
				if used[b] {
					inUse++
				}
			}
			if inUse > 0 {
				t.Errorf("%d of the deleted file's %d blocks are in the used ranges", inUse, len(deletedBlocks))
			}

			for _, fill := range []byte{0, 0xAA} {
				cp := copyRanges(t, img, rs, fill)
				fsck(t, cp)
				cdir, _ := mount(t, cp, false)
				fstestutil.CompareTreeWith(t, v, cdir, kernelView)
			}
		})
	}
}

func writeRandom(t testing.TB, p string, n int64) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, n); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func syncFS(t testing.TB, dir string) {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
}

var filefragRE = regexp.MustCompile(`^\s*\d+:\s+\d+\.\.\s*\d+:\s+(\d+)\.\.\s*(\d+):`)

// fileBlocks lists a mounted file's physical blocks with filefrag -v.
func fileBlocks(t testing.TB, p string) []int64 {
	t.Helper()
	need(t, "filefrag")
	out := runCmd(t, "filefrag", "-v", p) // physical offsets in filesystem blocks
	var blocks []int64
	for _, line := range strings.Split(out, "\n") {
		m := filefragRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		s, _ := strconv.ParseInt(m[1], 10, 64)
		e, _ := strconv.ParseInt(m[2], 10, 64)
		for b := s; b <= e; b++ {
			blocks = append(blocks, b)
		}
	}
	if len(blocks) == 0 {
		t.Fatalf("no extents from filefrag:\n%s", out)
	}
	return blocks
}
