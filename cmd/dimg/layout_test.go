package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/testimages"
)

// sfdiskParts lists (number, start byte, size bytes) as sfdisk sees them.
type sfPart struct {
	Node        string
	Start, Size int64
}

func sfdiskJSON(t *testing.T, path string) (parts []sfPart, label string) {
	t.Helper()
	out, err := exec.Command("sfdisk", "-J", path).Output()
	if err != nil {
		t.Fatalf("sfdisk -J %s: %v", path, err)
	}
	var v struct {
		PartitionTable struct {
			Label      string
			SectorSize int64
			Partitions []sfPart
		}
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	ss := v.PartitionTable.SectorSize
	if ss == 0 {
		ss = 512
	}
	for i := range v.PartitionTable.Partitions {
		v.PartitionTable.Partitions[i].Start *= ss
		v.PartitionTable.Partitions[i].Size *= ss
	}
	return v.PartitionTable.Partitions, v.PartitionTable.Label
}

// loopMount attaches [start, start+size) of path read-only and mounts it,
// returning the mount point (cleaned up with the test).
func loopMount(t *testing.T, path string, start, size int64) string {
	t.Helper()
	out, err := exec.Command("losetup", "-f", "--show", "-r", "-o", fmt.Sprint(start), "--sizelimit", fmt.Sprint(size), path).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	dir := t.TempDir()
	if b, err := exec.Command("mount", "-o", "ro", dev, dir).CombinedOutput(); err != nil {
		exec.Command("losetup", "-d", dev).Run()
		t.Fatalf("mount %s: %v: %s", dev, err, b)
	}
	t.Cleanup(func() {
		exec.Command("umount", dir).Run()
		exec.Command("losetup", "-d", dev).Run()
	})
	return dir
}

// compareTrees compares two mounted trees: type, size, mode, owner, mtime,
// link target, xattrs and content.
func compareTrees(t *testing.T, a, b string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(a, p)
		q := filepath.Join(b, rel)
		var sa, sb unix.Stat_t
		if err := unix.Lstat(p, &sa); err != nil {
			return err
		}
		if err := unix.Lstat(q, &sb); err != nil {
			t.Errorf("%s: missing in the copy: %v", rel, err)
			return nil
		}
		n++
		if sa.Mode != sb.Mode || sa.Uid != sb.Uid || sa.Gid != sb.Gid || sa.Nlink != sb.Nlink ||
			(sa.Mode&syscall.S_IFMT != syscall.S_IFDIR && sa.Size != sb.Size) || sa.Mtim != sb.Mtim {
			t.Errorf("%s: stat differs: %+v vs %+v", rel, sa, sb)
			return nil
		}
		switch sa.Mode & syscall.S_IFMT {
		case syscall.S_IFLNK:
			la, _ := os.Readlink(p)
			lb, _ := os.Readlink(q)
			if la != lb {
				t.Errorf("%s: link %q vs %q", rel, la, lb)
			}
		case syscall.S_IFREG:
			if sumFile(p) != sumFile(q) {
				t.Errorf("%s: content differs", rel)
			}
		}
		if xa, xb := xattrs(p), xattrs(q); xa != xb {
			t.Errorf("%s: xattrs %q vs %q", rel, xa, xb)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func sumFile(p string) [32]byte {
	f, err := os.Open(p)
	if err != nil {
		return [32]byte{}
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	var s [32]byte
	h.Sum(s[:0])
	return s
}

func xattrs(p string) string {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return ""
	}
	var out []string
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		v := make([]byte, 64<<10)
		m, _ := unix.Lgetxattr(p, name, v)
		if m < 0 {
			m = 0
		}
		out = append(out, name+"="+string(v[:m]))
	}
	return strings.Join(out, ";")
}

// TestUsedRoundTrip: a filesystem-aware capture of a kernel-written disk
// with deleted data restores to a disk that the field's tools find clean,
// with every file equal and the boot areas byte-identical, from an image
// smaller than the sector-mode image by about the deleted data.
func TestUsedRoundTrip(t *testing.T) {
	for _, kind := range []string{"gpt", "mbr", "bare"} {
		t.Run(kind, func(t *testing.T) {
			src := disk(t, kind)
			dir := t.TempDir()
			img, simg := filepath.Join(dir, "d.dimg"), filepath.Join(dir, "s.dimg")
			mustRun(t, "capture", "-q", src, img)
			mustRun(t, "capture", "-q", "--sector", src, simg)
			out := filepath.Join(dir, "restored.img")
			mustRun(t, "restore", "-q", "--verify", img, out)
			if _, err := testimages.Validate(context.Background(), out); err != nil {
				t.Fatalf("restored disk: %v", err)
			}
			if kind != "bare" {
				// CheckPattern reads where the pattern went from the sidecar.
				if b, err := os.ReadFile(src + ".json"); err == nil {
					os.WriteFile(out+".json", b, 0o644)
				}
				if err := testimages.CheckPattern(out); err != nil {
					t.Fatal(err)
				}
				a, b := make([]byte, 1<<20), make([]byte, 1<<20)
				fa, _ := os.Open(src)
				fb, _ := os.Open(out)
				fa.ReadAt(a, 0)
				fb.ReadAt(b, 0)
				fa.Close()
				fb.Close()
				if !bytes.Equal(a, b) {
					t.Fatal("the first MiB (boot code, gap) differs")
				}
			}
			inf, err := testimages.ReadInfo(src)
			if err != nil {
				t.Fatal(err)
			}
			used, sector := info(t, img), info(t, simg)
			var deleted int64
			for _, p := range inf.Parts {
				deleted += p.DeletedBytes
			}
			t.Logf("image %d bytes, sector image %d bytes, deleted data %d bytes", used.ImageBytes, sector.ImageBytes, deleted)
			// Deleted data is random-ish: its compressed share is most of it.
			if deleted > 0 && sector.ImageBytes-used.ImageBytes < deleted/2 {
				t.Errorf("filesystem-aware image saves only %d bytes over sector mode; %d bytes were deleted", sector.ImageBytes-used.ImageBytes, deleted)
			}
			for _, p := range used.Partitions {
				if p.FS == "" && p.Copy != "" {
					t.Errorf("partition %d: no filesystem recognised", p.Number)
				}
			}
			if os.Geteuid() != 0 {
				return
			}
			// Every file equal, through the kernel's own ext4.
			var parts []sfPart
			if kind == "bare" {
				st, _ := os.Stat(src)
				parts = []sfPart{{Node: "bare", Start: 0, Size: st.Size()}}
			} else {
				parts, _ = sfdiskJSON(t, src)
			}
			for _, p := range parts {
				typ, _ := exec.Command("blkid", "-p", "-o", "value", "-s", "TYPE", "-O", fmt.Sprint(p.Start), src).Output()
				if !strings.HasPrefix(strings.TrimSpace(string(typ)), "ext") {
					continue
				}
				n := compareTrees(t, loopMount(t, src, p.Start, p.Size), loopMount(t, out, p.Start, p.Size))
				t.Logf("%s: %d entries equal", p.Node, n)
			}
		})
	}
}

// TestLargerAndSmallerTargets: restore to a larger file moves the GPT
// backup (sgdisk -v clean); --grow extends the last partition and its ext4
// (e2fsck clean); a smaller target is refused before anything is written.
func TestLargerAndSmallerTargets(t *testing.T) {
	dir := t.TempDir()
	gpt := disk(t, "gpt")
	img := filepath.Join(dir, "g.dimg")
	mustRun(t, "capture", "-q", gpt, img)
	st, _ := os.Stat(gpt)
	big := filepath.Join(dir, "big.img")
	mustRun(t, "restore", "-q", "--size", fmt.Sprint(st.Size()+64<<20), img, big)
	if out, err := exec.Command("sgdisk", "-v", big).CombinedOutput(); err != nil || !strings.Contains(string(out), "No problems found") {
		t.Fatalf("sgdisk -v on the larger target: %v\n%s", err, out)
	}
	if _, err := testimages.Validate(context.Background(), big); err != nil {
		t.Fatal(err)
	}

	// --new-disk-guid: a different disk GUID, table still valid.
	ng := filepath.Join(dir, "ng.img")
	mustRun(t, "restore", "-q", "--new-disk-guid", img, ng)
	g1, _ := exec.Command("sgdisk", "-p", gpt).Output()
	g2, _ := exec.Command("sgdisk", "-p", ng).Output()
	if bytes.Equal(guidLine(g1), guidLine(g2)) || len(guidLine(g2)) == 0 {
		t.Fatalf("disk GUID unchanged: %s", guidLine(g2))
	}
	if out, err := exec.Command("sgdisk", "-v", ng).CombinedOutput(); err != nil || !strings.Contains(string(out), "No problems found") {
		t.Fatalf("sgdisk -v after --new-disk-guid: %v\n%s", err, out)
	}

	// Smaller target: a loop device 1 MiB short of the disk.
	if os.Geteuid() == 0 {
		small := filepath.Join(dir, "small.img")
		os.WriteFile(small, bytes.Repeat([]byte{0xAB}, 1<<20), 0o644)
		os.Truncate(small, st.Size()-1<<20)
		before := fileSum(t, small)
		out, err := exec.Command("losetup", "-f", "--show", small).Output()
		if err != nil {
			t.Fatal(err)
		}
		dev := strings.TrimSpace(string(out))
		defer exec.Command("losetup", "-d", dev).Run()
		_, errs, code := run(t, nil, "restore", img, dev)
		if code == 0 || !strings.Contains(errs, "too small") || !strings.Contains(errs, fmt.Sprint(st.Size())) {
			t.Fatalf("restore to a smaller device: exit %d: %s", code, errs)
		}
		// Detached once, by the deferred call: detaching twice could detach
		// a device another test attached under the same number meanwhile.
		if fileSum(t, small) != before {
			t.Fatal("the refused target was written")
		}
	}

	// --grow on a GPT disk whose last partition holds an ext4.
	if os.Geteuid() != 0 {
		t.Skip("--grow needs root (a loop device for resize2fs)")
	}
	bare := disk(t, "bare")
	bst, _ := os.Stat(bare)
	src := filepath.Join(dir, "ext4last.img")
	if err := os.WriteFile(src, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(src, bst.Size()+2<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sgdisk", "-n", "1:2048:0", "-t", "1:8300", src).CombinedOutput(); err != nil {
		t.Fatalf("sgdisk: %v: %s", err, out)
	}
	if out, err := exec.Command("dd", "if="+bare, "of="+src, "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v: %s", err, out)
	}
	mimg := filepath.Join(dir, "m.dimg")
	mustRun(t, "capture", "-q", src, mimg)
	for _, grow := range []bool{false, true} {
		grown := filepath.Join(dir, fmt.Sprintf("grown-%v.img", grow))
		args := []string{"restore", "--size", fmt.Sprint(bst.Size() + 130<<20), mimg, grown}
		if grow {
			args = append([]string{"restore", "--grow"}, args[1:]...)
		}
		_, errs, code := run(t, nil, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errs)
		}
		parts, _ := sfdiskJSON(t, grown)
		end := parts[0].Start + parts[0].Size
		if grow != (end > bst.Size()+100<<20) {
			t.Fatalf("grow=%v: partition ends at %d", grow, end)
		}
		if out, err := exec.Command("sgdisk", "-v", grown).CombinedOutput(); err != nil || !strings.Contains(string(out), "No problems found") {
			t.Fatalf("sgdisk -v: %v\n%s", err, out)
		}
		if _, err := testimages.Validate(context.Background(), grown); err != nil {
			t.Fatal(err)
		}
		if grow {
			// The filesystem fills the partition: e2fsck and the kernel agree.
			mnt := loopMount(t, grown, parts[0].Start, parts[0].Size)
			var sfs unix.Statfs_t
			unix.Statfs(mnt, &sfs)
			if fsBytes := int64(sfs.Blocks) * sfs.Bsize; fsBytes < bst.Size()+64<<20 {
				t.Fatalf("filesystem not grown: %d bytes", fsBytes)
			}
			t.Logf("grow: %s", strings.TrimSpace(errs))
		}
	}
}

func guidLine(b []byte) []byte {
	for _, l := range bytes.Split(b, []byte("\n")) {
		if bytes.HasPrefix(l, []byte("Disk identifier (GUID)")) {
			return l
		}
	}
	return nil
}
