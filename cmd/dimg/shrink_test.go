package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/cloneio"
	"github.com/dimg-project/dimg/testimages"
)

// Restore and clone onto a smaller disk (--shrink). The oracles: sgdisk -v
// or sfdisk -V for the table, e2fsck -fn, fsck.fat -n and ntfsfix -n for
// the filesystems, kernel mounts (ext), mtools (FAT) and ntfs-3g (NTFS)
// for the files, blkid for the swap's identity, sha256 for the image.

func requireShrink(t *testing.T, kind string) {
	t.Helper()
	testimages.Require(t, kind, "loop", "fuse", "resize2fs", "sgdisk")
}

// shrinkPlan runs --dry-run --json and returns the plan.
func shrinkPlan(t *testing.T, args ...string) cloneio.ShrinkPlan {
	t.Helper()
	out := mustRun(t, append([]string{"--dry-run", "--json"}, args...)...)
	var p cloneio.ShrinkPlan
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("plan JSON: %v\n%s", err, out)
	}
	return p
}

// attachDev attaches a file as a loop device (the target of a block
// device restore), detached with the test.
func attachDev(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("losetup", "-f", "--show", path).Output()
	if err != nil {
		t.Fatalf("losetup %s: %v", path, err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

func makeFile(t *testing.T, path string, size int64, mark []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, size / 2, size - int64(len(mark))} {
		f.WriteAt(mark, off)
	}
}

// partDev attaches one partition of a disk file read-only.
func partDev(t *testing.T, path string, p sfPart) string {
	t.Helper()
	out, err := exec.Command("losetup", "-f", "--show", "-r", "-o", fmt.Sprint(p.Start), "--sizelimit", fmt.Sprint(p.Size), path).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

func blkid(t *testing.T, dev, tag string) string {
	out, _ := exec.Command("blkid", "-p", "-o", "value", "-s", tag, dev).Output()
	return strings.TrimSpace(string(out))
}

// sameContent checks that tree b has every path of tree a with the same
// type, size and content (what FAT and NTFS copies can be compared by).
func sameContent(t *testing.T, a, b string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(a, p)
		q := filepath.Join(b, rel)
		ia, err := os.Lstat(p)
		if err != nil {
			return err
		}
		ib, err := os.Lstat(q)
		if err != nil {
			t.Errorf("%s: missing in the copy", rel)
			return nil
		}
		n++
		if ia.Mode().Type() != ib.Mode().Type() || (ia.Mode().IsRegular() && ia.Size() != ib.Size()) {
			t.Errorf("%s: %v %d vs %v %d", rel, ia.Mode(), ia.Size(), ib.Mode(), ib.Size())
		} else if ia.Mode().IsRegular() && sumFile(p) != sumFile(q) {
			t.Errorf("%s: content differs", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// mcopyOut copies a FAT partition's files out with mtools.
func mcopyOut(t *testing.T, img string, p sfPart) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("mcopy", "-s", "-n", "-i", fmt.Sprintf("%s@@%d", img, p.Start), "::/", dir)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mcopy: %v\n%s", err, out)
	}
	return dir
}

// checkShrunk checks a disk written by a shrinking restore or clone
// against its source: the same partitions in the same order with the
// plan's places, a clean table and clean filesystems, every file equal,
// swap with the same UUID and label.
func checkShrunk(t *testing.T, src, out string, plan cloneio.ShrinkPlan) {
	checkShrunkWith(t, src, out, plan, true)
}

// checkShrunkWith is checkShrunk; without contents the ext trees are
// compared by metadata only (names, types, sizes, owners, modes, times,
// links, xattrs), which e2fsck -fn complements.
func checkShrunkWith(t *testing.T, src, out string, plan cloneio.ShrinkPlan, contents bool) {
	t.Helper()
	st, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != plan.TargetBytes {
		t.Errorf("target is %d bytes, want %d", st.Size(), plan.TargetBytes)
	}
	sp, label := sfdiskJSON(t, src)
	op, _ := sfdiskJSON(t, out)
	if label == "gpt" {
		if o, err := exec.Command("sgdisk", "-v", out).CombinedOutput(); err != nil || !bytes.Contains(o, []byte("No problems found")) ||
			bytes.Contains(bytes.ToLower(o), []byte("caution")) || bytes.Contains(bytes.ToLower(o), []byte("warning")) {
			t.Errorf("sgdisk -v: %v\n%s", err, o)
		}
	} else if o, err := exec.Command("sfdisk", "-V", out).CombinedOutput(); err != nil || !bytes.Contains(o, []byte("No errors detected")) {
		t.Errorf("sfdisk -V: %v\n%s", err, o)
	}
	if len(sp) != len(op) {
		t.Fatalf("%d partitions, the source has %d", len(op), len(sp))
	}
	// The first MiB (boot code, the gap) is the source's, bar the table.
	a, b := make([]byte, 1<<20), make([]byte, 1<<20)
	fa, _ := os.Open(src)
	fb, _ := os.Open(out)
	fa.ReadAt(a, 0)
	fb.ReadAt(b, 0)
	fa.Close()
	fb.Close()
	if !bytes.Equal(a[:440], b[:440]) || (label == "gpt" && !bytes.Equal(a[34*512:], b[34*512:])) {
		t.Error("boot code or the gap before the first partition differs")
	}
	for i := range sp {
		s, o := sp[i], op[i]
		var want *cloneio.ShrinkPart
		for j := range plan.Partitions {
			if plan.Partitions[j].OldStart == s.Start {
				want = &plan.Partitions[j]
			}
		}
		if want == nil || o.Start != want.NewStart || o.Size != want.NewSize {
			t.Errorf("partition %s at %d, %d bytes; plan: %+v", o.Node, o.Start, o.Size, want)
			continue
		}
		if want.Extended {
			continue
		}
		sdev, odev := partDev(t, src, s), partDev(t, out, o)
		typ := blkid(t, sdev, "TYPE")
		if got := blkid(t, odev, "TYPE"); got != typ {
			t.Errorf("partition %d: %q, the source's is %q", want.Number, got, typ)
			continue
		}
		for _, tag := range []string{"UUID", "LABEL"} {
			if g, w := blkid(t, odev, tag), blkid(t, sdev, tag); g != w {
				t.Errorf("partition %d: %s %q, want %q", want.Number, tag, g, w)
			}
		}
		switch typ {
		case "":
			if want.NewSize != want.OldSize {
				t.Errorf("partition %d: unknown contents resized", want.Number)
			} else if !sameBytes(src, s.Start, out, o.Start, s.Size) {
				t.Errorf("partition %d: its bytes differ from the source's", want.Number)
			}
		case "ext2", "ext3", "ext4":
			if o, err := exec.Command("e2fsck", "-fn", odev).CombinedOutput(); err != nil {
				t.Errorf("partition %d: e2fsck -fn: %v\n%s", want.Number, err, o)
			}
			key := fmt.Sprintf("%s@%d/%v", src, s.Start, contents)
			if srcTrees[key] == nil {
				srcTrees[key] = treeDigest(t, loopMount(t, src, s.Start, s.Size), contents)
			}
			got := treeDigest(t, loopMount(t, out, o.Start, o.Size), contents)
			compareDigests(t, srcTrees[key], got)
			t.Logf("partition %d (%s): %d entries compared", want.Number, typ, len(got))
		case "vfat":
			if o, err := exec.Command("fsck.fat", "-n", odev).CombinedOutput(); err != nil || bytes.Contains(o, []byte("Leaving filesystem unchanged")) {
				t.Errorf("partition %d: fsck.fat -n: %v\n%s", want.Number, err, o)
			}
			n := sameContent(t, mcopyOut(t, src, s), mcopyOut(t, out, o))
			t.Logf("partition %d (FAT): %d entries equal", want.Number, n)
		case "ntfs":
			if o, err := exec.Command("ntfsfix", "-n", odev).CombinedOutput(); err != nil || bytes.Contains(o, []byte("BAD")) {
				t.Errorf("partition %d: ntfsfix -n: %v\n%s", want.Number, err, o)
			}
			n := sameContent(t, ntfsMount(t, sdev), ntfsMount(t, odev))
			t.Logf("partition %d (NTFS): %d entries equal", want.Number, n)
		}
	}
}

func sameBytes(a string, aoff int64, b string, boff, n int64) bool {
	fa, err := os.Open(a)
	if err != nil {
		return false
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false
	}
	defer fb.Close()
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); off < n; off += int64(len(ba)) {
		k := min(int64(len(ba)), n-off)
		if _, err := fa.ReadAt(ba[:k], aoff+off); err != nil {
			return false
		}
		if _, err := fb.ReadAt(bb[:k], boff+off); err != nil {
			return false
		}
		if !bytes.Equal(ba[:k], bb[:k]) {
			return false
		}
	}
	return true
}

// srcTrees caches the digests of source trees: every target is compared
// with the same source, which need not be read again.
var srcTrees = map[string]map[string]treeEntry{}

// treeEntry is what the kernel shows of one path: stat fields, link
// target, xattrs and the content's SHA-256.
type treeEntry struct {
	mode, uid, gid, nlink uint32
	size                  int64
	mtime                 unix.Timespec
	link, xattrs          string
	sum                   [32]byte
}

// treeDigest reads a mounted tree: metadata in one walk, contents hashed
// by four workers (the loop devices serve parallel reads much faster).
func treeDigest(t *testing.T, root string, contents bool) map[string]treeEntry {
	t.Helper()
	m := map[string]treeEntry{}
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := treeEntry{mode: st.Mode, uid: st.Uid, gid: st.Gid, nlink: uint32(st.Nlink), mtime: st.Mtim, xattrs: xattrs(p)}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			e.size = st.Size
			if contents {
				files = append(files, rel)
			}
		case unix.S_IFLNK:
			e.link, _ = os.Readlink(p)
		}
		m[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sums := make([][32]byte, len(files))
	work := make(chan int)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				sums[i] = sumFile(filepath.Join(root, files[i]))
			}
		}()
	}
	for i := range files {
		work <- i
	}
	close(work)
	wg.Wait()
	for i, f := range files {
		e := m[f]
		e.sum = sums[i]
		m[f] = e
	}
	return m
}

func compareDigests(t *testing.T, want, got map[string]treeEntry) {
	t.Helper()
	bad := 0
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			t.Errorf("%s: missing in the copy", p)
		case g != w:
			t.Errorf("%s: %+v, the source has %+v", p, g, w)
		default:
			continue
		}
		if bad++; bad > 20 {
			t.Fatal("too many differences")
		}
	}
	if len(got) != len(want) {
		t.Errorf("the copy has %d entries, the source %d", len(got), len(want))
	}
}

func ntfsMount(t *testing.T, dev string) string {
	t.Helper()
	dir := t.TempDir()
	if o, err := exec.Command("ntfs-3g", "-o", "ro", dev, dir).CombinedOutput(); err != nil {
		t.Fatalf("ntfs-3g %s: %v\n%s", dev, err, o)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return dir
}

// TestShrinkGPT8G: an 8 GiB GPT disk (ESP, ext4 with 1 GiB of files, swap)
// restored onto 3 GiB and cloned onto a block device 1 MiB larger than the
// computed minimum; 1 MiB less than the minimum is refused with the
// minimum named and the device unchanged; without --shrink nothing is
// written either. The image never changes.
func TestShrinkGPT8G(t *testing.T) {
	requireShrink(t, "gpt")
	src, err := testimages.Cached(context.Background(), "gpt", testimages.Spec{Size: 8 << 30, Files: testimages.FileSource{MaxBytes: 1 << 30}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "src.dimg")
	mustRun(t, "capture", "-q", src, img)
	sum := fileSum(t, img)

	out3 := filepath.Join(dir, "3g.img")
	plan := shrinkPlan(t, "restore", "--size", "3G", img, out3)
	if _, err := os.Stat(out3); err == nil {
		t.Fatal("--dry-run created the target")
	}
	if plan.MinimumBytes <= 1<<30 || plan.MinimumBytes >= 3<<30 || len(plan.Partitions) != 3 || plan.Partitions[0].NewStart != 1<<20 {
		t.Fatalf("plan: %+v", plan)
	}
	t.Run("3G", func(t *testing.T) {
		mustRun(t, "restore", "-q", "--shrink", "--size", "3G", img, out3)
		checkShrunk(t, src, out3, plan)
		os.Remove(out3)
	})

	min := plan.MinimumBytes
	t.Run("min+1MiB clone to a device", func(t *testing.T) {
		f := filepath.Join(dir, "min.img")
		makeFile(t, f, min+1<<20, nil)
		dev := attachDev(t, f)
		p := shrinkPlan(t, "clone", src, dev)
		if p.TargetBytes != min+1<<20 || p.MinimumBytes != min {
			t.Fatalf("plan for the device: %+v", p)
		}
		mustRun(t, "clone", "-q", "--shrink", src, dev)
		exec.Command("losetup", "-d", dev).Run()
		// The 3 GiB case compared every file's content; here the 100,000
		// files' contents are hashed only with DIMG_SHRINK_FULL=1 (two
		// more minutes on a busy machine), metadata always.
		checkShrunkWith(t, src, f, p, os.Getenv("DIMG_SHRINK_FULL") != "")
		os.Remove(f)
	})

	t.Run("min-1MiB refused", func(t *testing.T) {
		f := filepath.Join(dir, "small.img")
		mark := []byte("untouched target")
		makeFile(t, f, min-1<<20, mark)
		before := fileSum(t, f)
		dev := attachDev(t, f)
		_, stderr, code := run(t, nil, "restore", "--shrink", img, dev)
		if code != exitFailure || !strings.Contains(stderr, fmt.Sprint(min)) || !strings.Contains(stderr, "nothing was written") {
			t.Errorf("exit %d, want %d naming the minimum %d:\n%s", code, exitFailure, min, stderr)
		}
		exec.Command("losetup", "-d", dev).Run()
		if fileSum(t, f) != before {
			t.Error("the refused target was written")
		}
		// Without --shrink (and no terminal): refused at once, with the way
		// forward.
		makeFile(t, f, min+1<<20, mark)
		before2 := fileSum(t, f)
		dev = attachDev(t, f)
		_, stderr, code = run(t, nil, "restore", img, dev)
		if code != exitFailure || !strings.Contains(stderr, "too small") || !strings.Contains(stderr, "--shrink") {
			t.Errorf("without --shrink: exit %d:\n%s", code, stderr)
		}
		exec.Command("losetup", "-d", dev).Run()
		if fileSum(t, f) != before2 {
			t.Error("the target was written without --shrink")
		}
	})
	if fileSum(t, img) != sum {
		t.Error("the image changed")
	}
}

// TestShrinkMBRLogical: an MBR disk with a primary ext4, an extended
// container and two logical partitions (ext2, FAT32) restored onto a
// smaller file: the EBR chain is rewritten at the new places.
func TestShrinkMBRLogical(t *testing.T) {
	requireShrink(t, "mbr")
	src := disk(t, "mbr")
	dir := t.TempDir()
	img := filepath.Join(dir, "mbr.dimg")
	mustRun(t, "capture", "-q", src, img)
	sum := fileSum(t, img)
	st, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	src0 := st.Size()
	full := shrinkPlan(t, "restore", "--size", fmt.Sprint(src0-1<<20), img, filepath.Join(dir, "x.img"))
	target := (full.MinimumBytes + src0) / 2 / (1 << 20) * (1 << 20)
	out := filepath.Join(dir, "small.img")
	plan := shrinkPlan(t, "restore", "--size", fmt.Sprint(target), img, out)
	moved := 0
	for _, p := range plan.Partitions {
		if p.Logical && p.NewStart < p.OldStart {
			moved++
		}
	}
	if moved == 0 {
		t.Fatalf("no logical partition moves: %+v", plan)
	}
	mustRun(t, "restore", "-q", "--shrink", "--verify", "--size", fmt.Sprint(target), img, out)
	checkShrunk(t, src, out, plan)
	if fileSum(t, img) != sum {
		t.Error("the image changed")
	}
}

// TestShrinkFeatureDisk clones the feature disk (ext4 with many features,
// an inline-data ext4, FAT32, FAT16, FAT12, NTFS, a partition of unknown
// contents, swap) onto a smaller file with --grow: NTFS through
// ntfsresize, every FAT type by dimg, the unknown partition moved as it
// is, the swap (last) given the free space.
func TestShrinkFeatureDisk(t *testing.T) {
	requireShrink(t, "feature")
	testimages.Require(t, "ntfsresize")
	src := disk(t, "feature")
	dir := t.TempDir()
	out := filepath.Join(dir, "small.img")
	plan := shrinkPlan(t, "clone", "--grow", "--size", "160M", src, out)
	for _, p := range plan.Partitions {
		if p.FS != "" && p.FS != "swap" && p.Action == "kept" {
			t.Errorf("partition %d (%s) is not shrunk or moved: %+v", p.Number, p.FS, p)
		}
	}
	last := plan.Partitions[len(plan.Partitions)-1]
	if last.NewStart+last.NewSize < plan.TargetBytes-2<<20 {
		t.Errorf("--grow: the last partition ends at %d of %d", last.NewStart+last.NewSize, plan.TargetBytes)
	}
	sum := fileSum(t, src)
	mustRun(t, "clone", "-q", "--grow", "--shrink", "--verify", "--size", "160M", src, out)
	checkShrunk(t, src, out, plan)
	if fileSum(t, src) != sum {
		t.Error("the source disk changed")
	}
}

// TestBootAfterShrink: the bootable disks (BIOS: GRUB's boot.img in the
// MBR and core.img in a BIOS boot partition; UEFI: an ESP) restored onto
// a smaller file still boot. The BIOS boot partition stays where it is;
// the root shrinks and the swap moves.
func TestBootAfterShrink(t *testing.T) {
	for _, kind := range []string{"bios", "uefi"} {
		t.Run(kind, func(t *testing.T) {
			src, want := bootDisk(t, kind)
			requireShrink(t, "gpt")
			dir := t.TempDir()
			img := filepath.Join(dir, kind+".dimg")
			mustRun(t, "capture", "-q", src, img)
			size := fileSize(t, src)
			p := shrinkPlan(t, "restore", "--size", fmt.Sprint(size-1<<20), img, filepath.Join(dir, "x.img"))
			target := (p.MinimumBytes + size) / 2 / (1 << 20) * (1 << 20)
			dst := filepath.Join(dir, "small.img")
			plan := shrinkPlan(t, "restore", "--size", fmt.Sprint(target), img, dst)
			shrunk := false
			for _, q := range plan.Partitions {
				shrunk = shrunk || q.NewSize < q.OldSize
				if q.FS == "" && (q.NewStart != q.OldStart || q.NewSize != q.OldSize) {
					t.Errorf("partition %d (no filesystem: the BIOS boot partition) changed: %+v", q.Number, q)
				}
			}
			if !shrunk {
				t.Fatalf("nothing shrinks: %+v", plan)
			}
			mustRun(t, "restore", "-q", "--shrink", "--size", fmt.Sprint(target), img, dst)
			checkShrunk(t, src, dst, plan)
			bootCheck(t, dst, kind, want)
		})
	}
}
