package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/dimg-project/dimg/cloneio/personalize"
	"github.com/dimg-project/dimg/testimages"
)

// bootDisk returns a private copy of a bootable test disk ("bios" or
// "uefi") and what it boots to; the test skips when qemu or the boot kit
// is missing.
func bootDisk(t *testing.T, kind string) (string, *testimages.BootInfo) {
	t.Helper()
	testimages.RequireBoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	src, err := testimages.Cached(ctx, kind, testimages.Spec{})
	if err != nil {
		t.Fatalf("generate %s disk: %v", kind, err)
	}
	in, err := testimages.ReadInfo(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), kind+".img")
	if err := testimages.CopyDisk(src, dst); err != nil {
		t.Fatal(err)
	}
	return dst, in.Boot
}

// bootCheck boots disk and checks the console against want; it also has
// the field's tools check the disk (sgdisk -v, e2fsck -fn, fsck.fat -n).
func bootCheck(t *testing.T, disk, firmware string, want *testimages.BootInfo) *testimages.BootResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := testimages.Validate(ctx, disk); err != nil {
		t.Errorf("the deployed disk: %v", err)
	}
	res, err := testimages.Boot(ctx, disk, testimages.BootOptions{Firmware: firmware})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s booted in %.1fs", filepath.Base(disk), res.Elapsed.Seconds())
	testimages.CheckBoot(t, res, want)
	return res
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// bootMatrix says whether a deploy path is booted for a disk kind: every
// one with DIMG_BOOT_ALL=1 (make boottest), else a subset that still
// covers each path and each firmware once (each boot costs 10-30 s of
// TCG).
func bootMatrix(t *testing.T, kind, path string) {
	t.Helper()
	if os.Getenv("DIMG_BOOT_ALL") == "1" {
		return
	}
	switch kind + "/" + path {
	case "bios/restore-grow", "bios/receive", "uefi/clone-grow":
		return
	}
	t.Skip("booted with DIMG_BOOT_ALL=1 (make boottest)")
}

// TestBootAfterDeploy: each bootable disk still boots after capture and
// restore --grow onto a larger file, after clone --grow onto a larger
// file, and after a multicast receive onto a larger file (all six with
// DIMG_BOOT_ALL=1, three by default; see bootMatrix).
func TestBootAfterDeploy(t *testing.T) {
	for _, kind := range []string{"bios", "uefi"} {
		t.Run(kind, func(t *testing.T) {
			src, want := bootDisk(t, kind)
			dir := t.TempDir()
			img := filepath.Join(dir, kind+".dimg")
			mustRun(t, "capture", "-q", src, img)
			bigger := fmt.Sprint(fileSize(t, src) + 128<<20)

			t.Run("restore-grow", func(t *testing.T) {
				bootMatrix(t, kind, "restore-grow")
				dst := filepath.Join(t.TempDir(), "restored.img")
				mustRun(t, "restore", "-q", "--grow", "--size", bigger, img, dst)
				bootCheck(t, dst, kind, want)
			})
			t.Run("clone-grow", func(t *testing.T) {
				bootMatrix(t, kind, "clone-grow")
				dst := filepath.Join(t.TempDir(), "cloned.img")
				mustRun(t, "clone", "-q", "--grow", "--size", bigger, src, dst)
				bootCheck(t, dst, kind, want)
			})
			t.Run("receive", func(t *testing.T) {
				bootMatrix(t, kind, "receive")
				rxDev, rxFile := emptyLoopDevice(t, fileSize(t, src)+64<<20)
				ctx, cancel := context.WithTimeout(context.Background(), sendRecvTimeout)
				defer cancel()
				port := fmt.Sprint(44000 + int(fileSum(t, img)[2])) // apart from the other send tests
				send := startDimg(ctx, "send", "--interface", "lo", "--port", port, "--max-wait", "20s", "--max-rate", "400M", img)
				rx := waitDimg(t, "receive", startDimg(ctx, "receive", "-q", "--interface", "lo", "--port", port, "--wait", "60s", rxDev))
				if rx.code != 0 {
					t.Fatalf("receive: exit %d: %s", rx.code, rx.out)
				}
				if s := waitDimg(t, "send", send); s.code != 0 {
					t.Fatalf("send: exit %d\n%s", s.code, s.out)
				}
				bootCheck(t, rxFile, kind, want)
			})
		})
	}
}

// personalizeReport runs dimg personalize --json with args and decodes
// the report.
func personalizeReport(t *testing.T, args ...string) personalize.Report {
	t.Helper()
	out := mustRun(t, append([]string{"personalize", "--json", "-q"}, args...)...)
	var rep personalize.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("personalize --json: %v\n%s", err, out)
	}
	return rep
}

// newID returns the new value of the identity what of partition part.
func newID(t *testing.T, rep personalize.Report, part int, what string) string {
	t.Helper()
	for _, id := range rep.IDs {
		if id.Part == part && id.What == what {
			return id.New
		}
	}
	t.Fatalf("the report changes no %s of partition %d: %+v", what, part, rep.IDs)
	return ""
}

// dumpTrees copies every ext and FAT filesystem of disk out with the
// field's tools (debugfs rdump, mcopy) into dir/pN, for comparing trees.
func dumpTrees(t *testing.T, disk, dir string) {
	t.Helper()
	parts, err := testimages.Partitions(disk)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		dst := filepath.Join(dir, fmt.Sprintf("p%d", p.Number))
		if err := os.MkdirAll(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.HasPrefix(p.FS, "ext"):
			cmd := exec.Command("debugfs", "-R", "rdump / "+dst, fmt.Sprintf("%s?offset=%d", disk, p.Start))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("debugfs rdump: %v\n%s", err, out)
			}
		case strings.HasPrefix(p.FS, "fat"):
			cmd := exec.Command("mcopy", "-s", "-n", "-i", fmt.Sprintf("%s@@%d", disk, p.Start), "::/", dst)
			cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("mcopy: %v\n%s", err, out)
			}
		}
	}
}

// changedFiles lists "pN/path" of files (and symlinks) that differ
// between two dumps: changed content or target, added or removed.
func changedFiles(t *testing.T, a, b string) []string {
	t.Helper()
	read := func(root string) map[string]string {
		m := map[string]string{}
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			if d.Type()&os.ModeSymlink != 0 {
				l, _ := os.Readlink(p)
				m[rel] = "symlink:" + l
				return nil
			}
			c, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			m[rel] = string(c)
			return nil
		})
		return m
	}
	ma, mb := read(a), read(b)
	var out []string
	for k, v := range ma {
		if w, ok := mb[k]; !ok || w != v {
			out = append(out, k)
		}
	}
	for k := range mb {
		if _, ok := ma[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func reportFiles(rep personalize.Report) []string {
	var out []string
	for _, f := range rep.Files {
		out = append(out, fmt.Sprintf("p%d%s", f.Part, f.Path))
	}
	sort.Strings(out)
	return out
}

// TestBootAfterPersonalize: each bootable disk, captured, personalized on
// the image (--hostname --new-machine-id --new-fs-uuids
// --remove-ssh-host-keys) and restored, boots with the new hostname, an
// empty machine id and the new root UUID (blkid agrees); the disk passes
// sgdisk -v, e2fsck -fn and fsck.fat -n; --dry-run listed exactly the
// files the real run changed, as the field's tools see the trees.
func TestBootAfterPersonalize(t *testing.T) {
	for _, kind := range []string{"bios", "uefi"} {
		t.Run(kind, func(t *testing.T) {
			src, want := bootDisk(t, kind)
			dir := t.TempDir()
			img := filepath.Join(dir, kind+".dimg")
			mustRun(t, "capture", "-q", src, img)
			args := []string{"--hostname", "lab-7", "--new-machine-id", "--new-fs-uuids", "--remove-ssh-host-keys", img}
			dry := personalizeReport(t, append([]string{"--dry-run"}, args...)...)
			if log := mustRun(t, "log", img); strings.Count(log, "\n") != 2 {
				t.Fatalf("--dry-run made a commit:\n%s", log)
			}
			rep := personalizeReport(t, args...)
			if got, wantF := reportFiles(rep), reportFiles(dry); strings.Join(got, " ") != strings.Join(wantF, " ") {
				t.Errorf("the real run changed %v, --dry-run listed %v", got, wantF)
			}
			out := filepath.Join(dir, "out.img")
			mustRun(t, "restore", "-q", img, out)

			before, after := filepath.Join(dir, "before"), filepath.Join(dir, "after")
			dumpTrees(t, src, before)
			dumpTrees(t, out, after)
			if got, wantF := changedFiles(t, before, after), reportFiles(dry); strings.Join(got, " ") != strings.Join(wantF, " ") {
				t.Errorf("the trees differ in %v, --dry-run listed %v", got, wantF)
			}

			w := *want
			w.Hostname, w.MachineID = "lab-7", ""
			w.RootUUID = newID(t, rep, w.RootPart, "ext4 UUID")
			if kind == "uefi" {
				w.RootPartUUID = newID(t, rep, w.RootPart, "GPT partition GUID")
				w.CmdlineRoot = "PARTUUID=" + w.RootPartUUID
			} else {
				w.CmdlineRoot = "UUID=" + w.RootUUID
			}
			if w.RootUUID == want.RootUUID {
				t.Fatal("the root UUID did not change")
			}
			parts, err := testimages.Partitions(out)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range parts {
				if p.Number == w.RootPart && !strings.EqualFold(p.UUID, w.RootUUID) {
					t.Errorf("blkid: root UUID %s, the report says %s", p.UUID, w.RootUUID)
				}
			}
			res := bootCheck(t, out, kind, &w)
			if res.Get("ssh_host_keys") != "0" || res.Get("hosts") != "lab-7" || res.Get("dbus_machine_id") != "symlink" {
				t.Errorf("booted: %s", res.Line)
			}
		})
	}
}

// TestReceivePersonalized: two receivers of one multicast session with
// --hostname 'lab-{n}' (each its --index) and --new-fs-uuids come out with
// different hostnames and different UUIDs, both clean.
func TestReceivePersonalized(t *testing.T) {
	src := disk(t, "gpt")
	dir := t.TempDir()
	img := filepath.Join(dir, "g.dimg")
	mustRun(t, "capture", "-q", src, img)
	ctx, cancel := context.WithTimeout(context.Background(), sendRecvTimeout)
	defer cancel()
	port := fmt.Sprint(45000 + int(fileSum(t, img)[3]))
	send := startDimg(ctx, "send", "--interface", "lo", "--port", port, "--min-receivers", "2",
		"--max-wait", "20s", "--max-rate", "400M", img)
	var rxs []<-chan dimgResult
	for i := range 2 {
		target := filepath.Join(dir, fmt.Sprintf("rx%d.img", i))
		rxs = append(rxs, startDimg(ctx, "receive", "-q", "--interface", "lo", "--port", port, "--wait", "60s",
			"--hostname", "lab-{n}", "--index", fmt.Sprint(i+1), "--new-machine-id", "--new-fs-uuids", target))
	}
	for i, ch := range rxs {
		if r := waitDimg(t, fmt.Sprintf("receiver %d", i), ch); r.code != 0 {
			t.Fatalf("receive: exit %d: %s", r.code, r.out)
		}
	}
	if s := waitDimg(t, "send", send); s.code != 0 {
		t.Fatalf("send: exit %d\n%s", s.code, s.out)
	}
	orig, err := testimages.Partitions(src)
	if err != nil {
		t.Fatal(err)
	}
	uuids := map[string]string{}
	for i := range 2 {
		rx := filepath.Join(dir, fmt.Sprintf("rx%d.img", i))
		parts, err := testimages.Validate(context.Background(), rx)
		if err != nil {
			t.Fatalf("receiver %d: %v", i, err)
		}
		for k, p := range parts {
			for _, id := range []string{p.UUID, p.GUID} {
				if id == "" {
					continue
				}
				if id == orig[k].UUID || id == orig[k].GUID {
					t.Errorf("receiver %d: partition %d kept %s", i, p.Number, id)
				}
				if other, dup := uuids[id]; dup {
					t.Errorf("receiver %d and %s share %s", i, other, id)
				}
				uuids[id] = fmt.Sprint(i)
			}
		}
		root := parts[1]
		out, err := exec.Command("debugfs", "-R", "cat /etc/hostname", fmt.Sprintf("%s?offset=%d", rx, root.Start)).Output()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := strings.TrimSpace(string(out)), fmt.Sprintf("lab-%d", i+1); got != want {
			t.Errorf("receiver %d: hostname %q, want %q", i, got, want)
		}
	}
}
