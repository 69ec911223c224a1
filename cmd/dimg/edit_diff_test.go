package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dimg-project/dimg/cloneio/edit"
	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/fsdrivers/ext4"
	"github.com/dimg-project/dimg/fsdrivers/fat"
)

// fsVariant is a filesystem the differential tests run on.
type fsVariant struct {
	name string
	fat  bool
	size int64
	mkfs []string // the command, the image path appended
}

var diffVariants = []fsVariant{
	{"ext4", false, 160 << 20, []string{"mkfs.ext4", "-q", "-F"}},
	{"ext4-1k-nocsum", false, 160 << 20, []string{"mkfs.ext4", "-q", "-F", "-b", "1024", "-O", "^metadata_csum"}},
	{"ext3", false, 160 << 20, []string{"mkfs.ext3", "-q", "-F"}},
	{"ext4-inline", false, 160 << 20, []string{"mkfs.ext4", "-q", "-F", "-O", "inline_data"}},
	{"fat32", true, 96 << 20, []string{"mkfs.fat", "-F", "32", "-s", "1"}},
	{"fat16", true, 48 << 20, []string{"mkfs.fat", "-F", "16"}},
	{"fat12", true, 8 << 20, []string{"mkfs.fat", "-F", "12"}},
}

// diffOps is how many random operations a differential run makes:
// DIMG_DIFF_OPS, else 200 (make test); make fuzz and make bench set 1000.
func diffOps(short int) int {
	if n, err := strconv.Atoi(os.Getenv("DIMG_DIFF_OPS")); err == nil && n > 0 {
		return n
	}
	return short
}

// diffSeed is DIMG_DIFF_SEED (to replay a failure), else a new seed.
func diffSeed() int64 {
	if n, err := strconv.ParseInt(os.Getenv("DIMG_DIFF_SEED"), 10, 64); err == nil {
		return n
	}
	return time.Now().UnixNano()
}

func (v fsVariant) driver() fsdrivers.Driver {
	if v.fat {
		return fat.Driver{}
	}
	return ext4.Driver{}
}

// makeFS makes the empty filesystem of v in a raw file.
func (v fsVariant) makeFS(t *testing.T) string {
	t.Helper()
	writable(t, v.driver())
	if _, err := exec.LookPath(v.mkfs[0]); err != nil {
		t.Skip("needs", v.mkfs[0])
	}
	raw := filepath.Join(t.TempDir(), v.name+".raw")
	if err := os.Truncate(raw, 0); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(v.size)
	f.Close()
	args := append(append([]string{}, v.mkfs[1:]...), raw)
	if out, err := exec.Command(v.mkfs[0], args...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v %s", strings.Join(v.mkfs, " "), err, out)
	}
	return raw
}

// mirror is the oracle's tree: a kernel loop mount of a copy of raw (ext)
// or an empty host directory (FAT: the kernel here has no vfat).
func (v fsVariant) mirror(t *testing.T, raw string) string {
	t.Helper()
	if v.fat {
		return t.TempDir()
	}
	cp := filepath.Join(t.TempDir(), "mirror.raw")
	if err := exec.Command("cp", "--sparse=always", raw, cp).Run(); err != nil {
		t.Fatal(err)
	}
	dir, _ := loopMountFS(t, cp, 0, 0, false)
	return dir
}

// checkResult restores img and checks the filesystem with its own checker
// and, for ext, the kernel: it mounts the result and reads every file,
// which must equal want.
func (v fsVariant) checkResult(t *testing.T, img string, want map[string]string, noTimes bool) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "result.raw")
	mustRun(t, "restore", "-q", img, out)
	if v.fat {
		if b, err := exec.Command("fsck.fat", "-n", out).CombinedOutput(); err != nil {
			t.Errorf("fsck.fat -n: %v\n%s", err, b)
		}
		if _, err := exec.LookPath("mcopy"); err != nil {
			return
		}
		dst := t.TempDir()
		cmd := exec.Command("mcopy", "-s", "-m", "-n", "-i", out, "::/", dst)
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("mcopy: %v %s", err, b)
			return
		}
		// mcopy copies "::/" into dst as dst's own contents.
		compareDesc(t, "mtools' copy vs mirror", strip(treeDesc(t, dst, true), true), strip(want, true))
		return
	}
	if b, err := exec.Command("e2fsck", "-fn", out).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, b)
	}
	dir, _ := loopMountFS(t, out, 0, 0, true)
	compareDesc(t, "kernel mount of the result vs mirror", strip(treeDesc(t, dir, false), noTimes), strip(want, noTimes))
}

// strip drops the times from descriptions (offline commands stamp "now";
// mtools' copy of a FAT tree keeps only the files' times).
func strip(m map[string]string, noTimes bool) map[string]string {
	if !noTimes {
		return m
	}
	out := map[string]string{}
	for k, v := range m {
		f := strings.Fields(v)
		var keep []string
		for i := 0; i < len(f); i++ {
			if f[i] == "mtime" || f[i] == "mtime~" || strings.HasPrefix(f[i], "mtime~") {
				if f[i] == "mtime" {
					i++
				}
				continue
			}
			keep = append(keep, f[i])
		}
		out[k] = strings.Join(keep, " ")
	}
	return out
}

// TestDiffMount: random operations through DIR/p1/ of dimg mount --rw and
// on the mirror; the trees equal live, after the commit (restored, checked
// by e2fsck / fsck.fat, mounted by the kernel or read by mtools).
func TestDiffMount(t *testing.T) {
	requireRW(t)
	for _, v := range diffVariants {
		t.Run(v.name, func(t *testing.T) {
			raw := v.makeFS(t)
			img := filepath.Join(t.TempDir(), "fs.dimg")
			mustRun(t, "capture", "-q", raw, img)
			mirror := v.mirror(t, raw)
			m := startRWArgs(t, img, "-m", "differential")
			a := filepath.Join(m.dir, "p1")
			if _, err := os.Stat(a); err != nil {
				for i := 0; i < 100 && !strings.Contains(m.stderr.String(), "mounted on"); i++ {
					time.Sleep(50 * time.Millisecond)
				}
				if errs := m.stderr.String(); strings.Contains(errs, "cannot write") {
					t.Skipf("the writer refuses this filesystem:\n%s", errs)
				}
				t.Fatalf("no writable p1/: %v\n%s", err, m.stderr)
			}
			d := newDiffer(t, a, mirror, v.fat, v.size/3, diffSeed())
			n := diffOps(200)
			for i := 0; i < n && d.step(); i++ {
			}
			if t.Failed() {
				return
			}
			want := treeDesc(t, mirror, v.fat)
			compareDesc(t, "rw mount vs mirror", treeDesc(t, a, v.fat), want)
			if err, errs := m.unmount(t); err != nil {
				t.Fatalf("unmount: %v\n%s", err, errs)
			}
			v.checkResult(t, img, want, v.fat)
			t.Logf("%d operations, seed %d", d.op, d.seed)
		})
	}
}

// TestDiffOffline: random edits with the offline commands (one commit
// each) and the same on the mirror; the result is checked as above.
func TestDiffOffline(t *testing.T) {
	requireRW(t)
	for _, v := range diffVariants {
		t.Run(v.name, func(t *testing.T) {
			raw := v.makeFS(t)
			img := filepath.Join(t.TempDir(), "fs.dimg")
			mustRun(t, "capture", "-q", raw, img)
			if e, _, err := edit.Open(img, "1:/", edit.Options{Drivers: drivers()}); errors.Is(err, edit.ErrNotWritable) {
				t.Skipf("the writer refuses this filesystem: %v", err)
			} else if err != nil {
				t.Fatal(err)
			} else {
				e.Discard()
			}
			mirror := v.mirror(t, raw)
			o := newOfflineDiffer(t, img, mirror, v.fat, v.size/3, diffSeed())
			// A command is a process and a commit: a tenth as many.
			n := max(diffOps(200)/10, 10)
			for i := 0; i < n && o.step(); i++ {
			}
			if t.Failed() {
				return
			}
			v.checkResult(t, img, treeDesc(t, mirror, v.fat), true)
			t.Logf("%d commands, seed %d", o.op, o.seed)
		})
	}
}
