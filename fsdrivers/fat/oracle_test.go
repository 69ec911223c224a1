package fat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/fsdrivers/fstestutil"
)

// The oracle tests build real FAT images with mkfs.vfat, fill them from a
// generated directory tree with mcopy, and check our reader against the
// source tree and against mtools (mdir, mtype, mcopy), and our used-range
// map against fsck.fat. All tools run on plain files: no root, no loop
// devices (the kernel here has no vfat driver anyway).

// srcTree describes a generated source tree.
type srcTree struct {
	many    int   // files in many/
	bigSize int64 // size of big.bin
	deep    int   // directory levels under deep/
}

var srcBase = time.Date(2020, 1, 2, 3, 4, 6, 0, time.UTC)

// genTree writes the tree into dir. Every file gets a distinct even-second
// mtime (FAT keeps 2-second resolution). Names outside Unicode's Basic
// Multilingual Plane are left out: mtools 4.0.32 stores only the low 16
// bits of such characters (the synthetic images test them instead).
func genTree(t testing.TB, dir string, o srcTree) {
	t.Helper()
	n := 0
	put := func(rel string, data []byte) {
		n++
		writeFile(t, dir, rel, data, srcBase.Add(time.Duration(n)*2*time.Second))
	}
	put("readme.txt", []byte("all lower case: a short name with NT case flags\n"))
	put("UPPER.TXT", []byte("all upper case\n"))
	put("lower.TXT", []byte("lower base, upper extension\n"))
	put("UPPER.txt.bak", []byte("two dots\n"))
	put("Mixed Case Name.Txt", []byte("mixed\n"))
	put("name with  two spaces and a trailing dot.", []byte("dot\n"))
	put(strings.Repeat("A long file name ", 11)+"end.data", pattern(10, 3000))
	put("café au lait.txt", []byte("café\n"))
	put("日本語のファイル名.txt", []byte("日本\n"))
	put("Ελληνικά.txt", []byte("greek\n"))
	// Not "ñandú.txt": mtools would store that as a bare 8.3 name with NT
	// lower-case flags and then print it as "ÑandÚ.txt" (it lowers ASCII
	// only); Linux and Windows, and this package, give "ñandú.txt".
	put("Ünïcödé dir/ñandú y cóndor.txt", []byte("ñ\n"))
	put("中文目录/文件.txt", pattern(11, 5000))
	put("empty.bin", nil)
	put("case/Makefile", []byte("all:\n"))
	put("case/ReadMe.MD", []byte("# readme\n"))
	if err := os.MkdirAll(filepath.Join(dir, "emptydir"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, size := range []int{0, 1, 511, 512, 513, 2047, 2048, 2049, 4095, 4096, 4097, 32768, 32769, 100000} {
		put(fmt.Sprintf("sizes/size-%06d", size), pattern(100+i, size))
	}
	deep := "deep"
	for i := 1; i <= o.deep; i++ {
		deep += fmt.Sprintf("/level%02d", i)
	}
	put(deep+"/leaf.txt", []byte("at the bottom\n"))
	// Names whose 8.3 aliases differ in their first six characters: with
	// a common prefix mtools probes ~1, ~2, ... per file, quadratic work
	// (100 s for 1,000 files). tails/ keeps a few numeric-tail aliases.
	for i := range o.many {
		put(fmt.Sprintf("many/%04d is a file with a long name.txt", i), pattern(1000+i, 100+i%700))
	}
	for i := range 12 {
		put(fmt.Sprintf("tails/Long common prefix %02d.txt", i), []byte{byte(i)})
	}
	if o.bigSize > 0 {
		p := filepath.Join(dir, "big.bin")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		block := pattern(7, 1<<20)
		for off := int64(0); off < o.bigSize; off += int64(len(block)) {
			block[0], block[1] = byte(off>>20), byte(off>>28) // every MiB differs
			if _, err := f.Write(block[:min(int64(len(block)), o.bigSize-off)]); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, srcBase, srcBase); err != nil {
			t.Fatal(err)
		}
	}
}

// makeImage formats a sizeMiB image with mkfs.vfat (FAT bits, optional
// logical sector size) and copies src into it with mcopy, preserving mtimes.
func makeImage(t testing.TB, img string, bits, sizeMiB, sector int, src string) {
	t.Helper()
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(sizeMiB) << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	args := []string{"-F", fmt.Sprint(bits), "-i", "12345678", "-n", "LABEL"}
	if sector != 0 {
		args = append(args, "-S", fmt.Sprint(sector))
	}
	mustTool(t, "mkfs.vfat", append(args, img)...)
	mustTool(t, "mcopy", append(append([]string{"-s", "-m", "-i", img}, topLevel(t, src)...), "::/")...)
}

// fatCompare is what FAT cannot store: owners, permissions, link counts,
// inode numbers, xattrs, atime (a date), ctime; times have 2 s resolution.
var fatCompare = fstestutil.Options{
	IgnoreOwner: true, IgnorePerm: true, IgnoreNlink: true, IgnoreIno: true,
	IgnoreXattrs: true, IgnoreAtime: true, IgnoreCtime: true, IgnoreBlocks: true,
	MtimeRound: 2 * time.Second,
}

// rootTimed gives the root of v the mtime of the host directory src: a FAT
// root directory has no timestamps (we report the zero time), which is the
// one thing fstestutil would otherwise flag.
func rootTimed(t testing.TB, v *Volume, src string) fsdrivers.Filesystem {
	hfi, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	return rootMtime{v, hfi.ModTime()}
}

type rootMtime struct {
	*Volume
	mtime time.Time
}

func (r rootMtime) Lstat(name string) (fs.FileInfo, error) {
	fi, err := r.Volume.Lstat(name)
	if err != nil || name != "." {
		return fi, err
	}
	if !fi.ModTime().IsZero() {
		return nil, errors.New("the FAT root has an mtime")
	}
	st := *fi.Sys().(*fsdrivers.Stat)
	st.Mtime = r.mtime
	return timedInfo{fi, &st}, nil
}

type timedInfo struct {
	fs.FileInfo
	st *fsdrivers.Stat
}

func (ti timedInfo) ModTime() time.Time { return ti.st.Mtime }
func (ti timedInfo) Sys() any           { return ti.st }

var oracleImages = []struct {
	name          string
	bits, sizeMiB int
	sector        int
	tree          string
	opts          srcTree
	fstest        bool
}{
	{"fat12", 12, 4, 0, "small", srcTree{many: 100, bigSize: 1 << 20, deep: 20}, true},
	{"fat16", 16, 64, 0, "big", srcTree{many: 1000, bigSize: 50 << 20, deep: 20}, false},
	{"fat32", 32, 300, 0, "big", srcTree{many: 1000, bigSize: 50 << 20, deep: 20}, false},
	// fstest.TestFS reads every file in many small pieces: not on 50 MiB.
	{"fat32-4k", 32, 300, 4096, "big", srcTree{many: 1000, bigSize: 50 << 20, deep: 20}, false},
}

// TestOracle checks each image against its source tree and mtools, then
// checks UsedRanges by copying only the used bytes into fresh images.
func TestOracle(t *testing.T) {
	needTools(t, "mkfs.vfat", "fsck.fat", "mcopy", "mdir", "mtype")
	trees := map[string]string{} // source trees shared by the subtests
	treeRoot := t.TempDir()
	for _, im := range oracleImages {
		t.Run(im.name, func(t *testing.T) {
			if testing.Short() && im.sizeMiB > 64 {
				t.Skip("big image in -short mode")
			}
			src, ok := trees[im.tree]
			if !ok {
				src = filepath.Join(treeRoot, im.tree)
				genTree(t, src, im.opts)
				trees[im.tree] = src
			}
			img := filepath.Join(t.TempDir(), "fat.img")
			makeImage(t, img, im.bits, im.sizeMiB, im.sector, src)
			fsckClean(t, img)

			f, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			st, _ := f.Stat()
			vol, err := Driver{}.Open(f, st.Size())
			if err != nil {
				t.Fatal(err)
			}
			v := vol.(*Volume)
			checkIdentity(t, v, img, fmt.Sprintf("fat%d", im.bits))

			// Against the source tree, with the drivers' shared helper
			// (names both ways, types, sizes, mtimes to FAT's 2 s,
			// content by Read and ReadAt) and with our snapshot.
			fstestutil.CompareTreeWith(t, rootTimed(t, v, src), src, fatCompare)
			want := snapshot(t, os.DirFS(src))
			compareTrees(t, snapshot(t, v), want)

			// Against mtools: the same paths, the same bytes.
			got, listed := fsPaths(t, v), mdirPaths(t, img)
			if !slices.Equal(got, listed) {
				t.Errorf("paths differ from mdir: ours %d, mdir %d\n%s", len(got), len(listed), diffLists(got, listed))
			}
			checkMtype(t, v, img)

			// Case-insensitive lookups, as on Windows.
			for _, p := range []string{"CASE/MAKEFILE", "case/readme.md", "README.TXT", "Upper.Txt", "SIZES/SIZE-000001"} {
				if _, err := v.Stat(p); err != nil {
					t.Errorf("Stat(%q): %v", p, err)
				}
			}
			if im.fstest {
				if err := fstest.TestFS(v, "readme.txt", "big.bin", "case/Makefile", "emptydir"); err != nil {
					t.Errorf("fstest.TestFS: %v", err)
				}
			}

			checkUsedRanges(t, v, img, st.Size(), want)
		})
	}
}

// checkIdentity compares Type, UUID and Label with what mkfs was told and,
// when blkid is installed, with blkid's own reading.
func checkIdentity(t *testing.T, v *Volume, img, typ string) {
	t.Helper()
	if v.Type() != typ || v.UUID() != "1234-5678" || v.Label() != "LABEL" {
		t.Errorf("Type %q UUID %q Label %q; want %q 1234-5678 LABEL", v.Type(), v.UUID(), v.Label(), typ)
	}
	if _, err := tool("blkid", "-V"); err != nil {
		return
	}
	out := mustTool(t, "blkid", "-p", "-o", "export", img)
	for _, kv := range []string{"UUID=" + v.UUID(), "LABEL=" + v.Label(), "VERSION=" + strings.ToUpper(v.Type())} {
		if !bytes.Contains(out, []byte(kv+"\n")) {
			t.Errorf("blkid does not say %s:\n%s", kv, out)
		}
	}
}

// checkMtype compares the bytes of a sample of files with mtype's output:
// everything outside many/ and every 50th file in it.
func checkMtype(t *testing.T, v *Volume, img string) {
	t.Helper()
	i := 0
	fs.WalkDir(v, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if strings.HasPrefix(p, "many/") {
			if i++; i%50 != 0 {
				return nil
			}
		}
		ours, err := fs.ReadFile(v, p)
		if err != nil {
			t.Errorf("ReadFile(%q): %v", p, err)
			return nil
		}
		theirs := mustTool(t, "mtype", "-i", img, "::/"+p)
		if !bytes.Equal(ours, theirs) {
			t.Errorf("%s: %d bytes, mtype gives %d different ones", p, len(ours), len(theirs))
		}
		return nil
	})
}

// checkUsedRanges copies only the used ranges of img into a zeroed image and
// into one filled with garbage; both must pass fsck.fat -n, hold the same
// files (read back by mcopy and by us), and fsck.fat must count exactly the
// clusters we call used.
func checkUsedRanges(t *testing.T, v *Volume, img string, size int64, want map[string]treeEntry) {
	t.Helper()
	start := time.Now()
	rs, err := v.UsedRanges()
	if err != nil {
		t.Fatalf("UsedRanges: %v", err)
	}
	el := time.Since(start)
	var used int64
	for i, r := range rs {
		used += r.Len
		if r.Len <= 0 || r.Off+r.Len > size || (i > 0 && r.Off <= rs[i-1].Off+rs[i-1].Len) {
			t.Fatalf("range %d %+v is empty, out of bounds or not sorted and merged", i, r)
		}
	}
	dataClusters := (used - v.g.dataOffset) / v.g.clusterSize
	t.Logf("UsedRanges: %d ranges, %.1f MiB of %d MiB used (%d clusters), computed in %v",
		len(rs), float64(used)/(1<<20), size>>20, dataClusters, el.Round(time.Microsecond))

	fsckUsed, fsckTotal := fsckClean(t, img)
	if fsckUsed != dataClusters || fsckTotal != int64(v.g.clusterCount) {
		t.Errorf("fsck.fat counts %d/%d clusters used, we %d/%d", fsckUsed, fsckTotal, dataClusters, v.g.clusterCount)
	}

	for _, fill := range []string{"zero", "garbage"} {
		copyImg := filepath.Join(t.TempDir(), fill+".img")
		copyUsed(t, img, copyImg, size, rs, fill == "garbage")
		fsckClean(t, copyImg)
		// mtools reads the copy back.
		out := filepath.Join(t.TempDir(), "extract")
		if err := os.Mkdir(out, 0o755); err != nil {
			t.Fatal(err)
		}
		mustTool(t, "mcopy", "-s", "-m", "-n", "-i", copyImg, "::/*", out)
		compareTrees(t, snapshot(t, os.DirFS(out)), want)
		// So do we.
		f, err := os.Open(copyImg)
		if err != nil {
			t.Fatal(err)
		}
		cv, err := Open(f, size)
		if err != nil {
			t.Fatal(err)
		}
		compareTrees(t, snapshot(t, cv), want)
		f.Close()
	}
}

// copyUsed writes a file of size bytes holding src's bytes in rs; the rest
// is zeros or, with garbage, a byte pattern that is not a valid anything.
func copyUsed(t testing.TB, src, dst string, size int64, rs []fsdrivers.Range, garbage bool) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := out.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if garbage {
		junk := pattern(99, 1<<20)
		for off := int64(0); off < size; off += int64(len(junk)) {
			if _, err := out.WriteAt(junk[:min(int64(len(junk)), size-off)], off); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, r := range rs {
		if _, err := io.Copy(io.NewOffsetWriter(out, r.Off), io.NewSectionReader(in, r.Off, r.Len)); err != nil {
			t.Fatal(err)
		}
	}
}

// diffLists shows the first differences between two sorted lists.
func diffLists(a, b []string) string {
	var sb strings.Builder
	onlyA := slices.DeleteFunc(slices.Clone(a), func(s string) bool { _, ok := slices.BinarySearch(b, s); return ok })
	onlyB := slices.DeleteFunc(slices.Clone(b), func(s string) bool { _, ok := slices.BinarySearch(a, s); return ok })
	fmt.Fprintf(&sb, "only ours: %q\nonly mdir: %q", onlyA[:min(10, len(onlyA))], onlyB[:min(10, len(onlyB))])
	return sb.String()
}

// TestDeletedFile: the clusters of a file deleted with mdel still hold its
// bytes but are free in the FAT, so they are not used; a copy of the used
// ranges over garbage stays clean and complete.
func TestDeletedFile(t *testing.T) {
	needTools(t, "mkfs.vfat", "fsck.fat", "mcopy", "mdel", "mdir")
	src := t.TempDir()
	genTree(t, src, srcTree{many: 50, deep: 3})
	gone := pattern(77, 10<<20)
	writeFile(t, src, "gone.bin", gone, srcBase)
	img := filepath.Join(t.TempDir(), "fat.img")
	makeImage(t, img, 16, 32, 0, src)

	open := func() (*Volume, *os.File, int64) {
		f, err := os.Open(img)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		v, err := Open(f, st.Size())
		if err != nil {
			t.Fatal(err)
		}
		return v, f, st.Size()
	}
	v, f, size := open()
	gf, err := v.Open("gone.bin")
	if err != nil {
		t.Fatal(err)
	}
	goneRuns := gf.(*file).ch.runs
	gf.Close()
	before, err := v.UsedRanges()
	if err != nil {
		t.Fatal(err)
	}
	f.Close()

	mustTool(t, "mdel", "-i", img, "::/gone.bin")
	if err := os.Remove(filepath.Join(src, "gone.bin")); err != nil {
		t.Fatal(err)
	}
	v, f, _ = open()
	defer f.Close()
	after, err := v.UsedRanges()
	if err != nil {
		t.Fatal(err)
	}
	total := func(rs []fsdrivers.Range) (n int64) {
		for _, r := range rs {
			n += r.Len
		}
		return n
	}
	freed := total(before) - total(after)
	if want := int64(len(gone)); freed != want {
		t.Errorf("deleting a %d-byte file freed %d used bytes", want, freed)
	}
	for _, run := range goneRuns {
		lo := v.g.clusterOffset(run.first)
		hi := lo + int64(run.n)*v.g.clusterSize
		for _, r := range after {
			if r.Off < hi && lo < r.Off+r.Len {
				t.Errorf("freed clusters %d..%d are still in used range %+v", run.first, run.first+run.n-1, r)
			}
		}
		// mdel does not wipe: the stale bytes are there, just unused.
		b := make([]byte, 512)
		if _, err := f.ReadAt(b, lo); err != nil || !bytes.Contains(gone, b) {
			t.Errorf("cluster %d no longer holds the deleted file's bytes", run.first)
		}
	}
	if _, err := v.Stat("gone.bin"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat(gone.bin) after mdel = %v", err)
	}
	checkUsedRanges(t, v, img, size, snapshot(t, os.DirFS(src)))
}

// TestBadClusters: clusters marked bad in the FAT count as used (copied) and
// fsck.fat agrees on the count.
func TestBadClusters(t *testing.T) {
	needTools(t, "mkfs.vfat", "fsck.fat", "mcopy", "mdir")
	src := t.TempDir()
	genTree(t, src, srcTree{many: 10, deep: 2})
	img := filepath.Join(t.TempDir(), "fat.img")
	makeImage(t, img, 32, 40, 0, src)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	v, err := Open(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	if err := fstest.TestFS(v, "readme.txt", "case/Makefile", "emptydir", "deep/level01/level02/leaf.txt"); err != nil {
		t.Errorf("fstest.TestFS: %v", err)
	}
	// Mark the last two clusters bad in both FATs, and lower the FSInfo
	// free count to match (fsck.fat checks it).
	bad := []uint32{v.g.maxCluster() - 1, v.g.maxCluster()}
	for _, c := range bad {
		for i := range v.g.numFATs {
			off := v.g.fatOffset + int64(i)*v.g.fatBytes + int64(c)*4
			if _, err := f.WriteAt([]byte{0xF7, 0xFF, 0xFF, 0x0F}, off); err != nil {
				t.Fatal(err)
			}
		}
	}
	fsinfo := make([]byte, 4)
	freeOff := int64(v.g.fsInfoSector)*v.g.sectorSize + 488
	if _, err := f.ReadAt(fsinfo, freeOff); err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint32(fsinfo, binary.LittleEndian.Uint32(fsinfo)-uint32(len(bad)))
	if _, err := f.WriteAt(fsinfo, freeOff); err != nil {
		t.Fatal(err)
	}
	v, err = Open(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	rs, err := v.UsedRanges()
	if err != nil {
		t.Fatal(err)
	}
	last := rs[len(rs)-1]
	if end := v.g.clusterOffset(v.g.maxCluster()) + v.g.clusterSize; last.Off+last.Len != end || last.Len < 2*v.g.clusterSize {
		t.Errorf("last used range %+v does not cover the two bad clusters ending at %d", last, end)
	}
	checkUsedRanges(t, v, img, st.Size(), snapshot(t, os.DirFS(src)))
}
