package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dimg-project/dimg/testimages"
)

// TestFeatureDiskRoundTrip: the feature disk (ext4 with every oddity,
// inline data, FAT32/16/12, NTFS, an unknown filesystem, swap) survives a
// filesystem-aware capture and restore: each filesystem's own checker is
// clean, the unknown partition is byte-identical (sector fallback), and the
// ext4 trees match through the kernel.
func TestFeatureDiskRoundTrip(t *testing.T) {
	src := disk(t, "feature")
	dir := t.TempDir()
	img := filepath.Join(dir, "f.dimg")
	_, errs, code := run(t, nil, "capture", "-q", src, img)
	if code != 0 {
		t.Fatalf("capture: exit %d: %s", code, errs)
	}
	if !strings.Contains(errs, "partition 7") || !strings.Contains(errs, "sector by sector") {
		t.Errorf("no warning naming the unknown partition 7: %q", errs)
	}
	in := info(t, img)
	want := map[int]string{1: "ext4", 2: "ext4", 3: "fat32", 4: "fat16", 5: "fat12", 6: "ntfs", 8: "swap"}
	for _, p := range in.Partitions {
		if w, ok := want[p.Number]; ok && p.FS != w {
			t.Errorf("partition %d: fs %q, want %q", p.Number, p.FS, w)
		}
		if p.Number == 7 && p.Copy != "sector" {
			t.Errorf("partition 7 copied as %q, want sector", p.Copy)
		}
	}
	out := filepath.Join(dir, "restored.img")
	mustRun(t, "restore", "-q", "--verify", img, out)
	if _, err := testimages.Validate(context.Background(), out); err != nil {
		t.Fatalf("restored feature disk: %v", err)
	}
	parts, _ := sfdiskJSON(t, src)
	for _, p := range parts {
		if !strings.HasSuffix(p.Node, "7") {
			continue
		}
		a, b := readRange(t, src, p.Start, p.Size), readRange(t, out, p.Start, p.Size)
		if !bytes.Equal(a, b) {
			t.Fatal("partition 7 (unknown filesystem) is not byte-identical")
		}
	}
	for _, p := range parts {
		typ, _ := exec.Command("blkid", "-p", "-o", "value", "-s", "TYPE", "-O", fmt.Sprint(p.Start), src).Output()
		if strings.TrimSpace(string(typ)) != "ext4" {
			continue
		}
		n := compareTrees(t, loopMount(t, src, p.Start, p.Size), loopMount(t, out, p.Start, p.Size))
		t.Logf("%s: %d entries equal", p.Node, n)
	}
}

func readRange(t *testing.T, path string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return b
}

// TestCloneAndMountedTarget: clone to a larger file with --verify moves the
// GPT backup; restore and clone refuse a block device that is mounted.
func TestCloneAndMountedTarget(t *testing.T) {
	src := disk(t, "gpt")
	dir := t.TempDir()
	st, _ := os.Stat(src)
	dst := filepath.Join(dir, "clone.img")
	mustRun(t, "clone", "-q", "--verify", "--size", fmt.Sprint(st.Size()+32<<20), src, dst)
	if out, err := exec.Command("sgdisk", "-v", dst).CombinedOutput(); err != nil || !strings.Contains(string(out), "No problems found") {
		t.Fatalf("sgdisk -v on the clone: %v\n%s", err, out)
	}
	if _, err := testimages.Validate(context.Background(), dst); err != nil {
		t.Fatal(err)
	}

	testimages.Require(t, "loop")
	bare := disk(t, "bare")
	img := filepath.Join(dir, "b.dimg")
	mustRun(t, "capture", "-q", bare, img)
	out, err := exec.Command("losetup", "-f", "--show", bare).Output()
	if err != nil {
		t.Fatal(err)
	}
	dev := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", dev).Run()
	mnt := t.TempDir()
	if b, err := exec.Command("mount", "-o", "ro", dev, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v %s", err, b)
	}
	defer exec.Command("umount", mnt).Run()
	before := fileSum(t, bare)
	for _, args := range [][]string{{"restore", img, dev}, {"clone", src, dev}} {
		_, errs, code := run(t, nil, args...)
		if code == 0 || !strings.Contains(errs, "mounted") {
			t.Fatalf("%s onto a mounted device: exit %d: %s", args[0], code, errs)
		}
	}
	exec.Command("umount", mnt).Run()
	if fileSum(t, bare) != before {
		t.Fatal("a refused target was written")
	}

	// A device smaller than the source: clone refuses before writing.
	small := filepath.Join(dir, "small.img")
	os.WriteFile(small, bytes.Repeat([]byte{0x5A}, 1<<20), 0o644)
	os.Truncate(small, st.Size()-4096)
	sbefore := fileSum(t, small)
	out, err = exec.Command("losetup", "-f", "--show", small).Output()
	if err != nil {
		t.Fatal(err)
	}
	sdev := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", sdev).Run()
	_, errs, code := run(t, nil, "clone", src, sdev)
	if code == 0 || !strings.Contains(errs, "too small") {
		t.Fatalf("clone onto a smaller device: exit %d: %s", code, errs)
	}
	if fileSum(t, small) != sbefore { // sdev is detached once, by the defer
		t.Fatal("the refused smaller target was written")
	}
}
