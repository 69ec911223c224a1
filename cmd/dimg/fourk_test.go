package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dimg-project/dimg/testimages"
)

// TestFourKnDisk: a GPT disk with 4096-byte logical sectors (built through
// a 4K loop device) is recognised from a plain file, captured
// filesystem-aware, and restored to a disk whose ext4 is clean.
func TestFourKnDisk(t *testing.T) {
	testimages.Require(t, "loop", "sgdisk", "mkfs.ext4")
	dir := t.TempDir()
	src := filepath.Join(dir, "4kn.img")
	if err := os.WriteFile(src, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(src, 64<<20)
	sh := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	dev := sh("losetup", "-f", "--show", "--sector-size", "4096", src)
	sh("sgdisk", "-n", "1:256:0", "-t", "1:8300", dev)
	exec.Command("losetup", "-d", dev).Run()
	pdev := sh("losetup", "-f", "--show", "-o", fmt.Sprint(1<<20), "--sizelimit", fmt.Sprint(60<<20), src)
	sh("mkfs.ext4", "-q", "-b", "4096", "-E", "root_owner=0:0", pdev)
	exec.Command("losetup", "-d", pdev).Run()

	img := filepath.Join(dir, "4kn.dimg")
	mustRun(t, "capture", "-q", src, img)
	in := info(t, img)
	if in.Table != "gpt" || len(in.Partitions) != 1 || in.Partitions[0].FS != "ext4" || in.Partitions[0].Copy != "used" {
		t.Fatalf("4Kn disk read as %+v", in)
	}
	out := filepath.Join(dir, "out.img")
	mustRun(t, "restore", "-q", "--verify", img, out)
	pdev = sh("losetup", "-f", "--show", "-r", "-o", fmt.Sprint(1<<20), "--sizelimit", fmt.Sprint(60<<20), out)
	defer exec.Command("losetup", "-d", pdev).Run()
	if b, err := exec.Command("e2fsck", "-fn", pdev).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck on the restored 4Kn disk: %v\n%s", err, b)
	}
	if !strings.Contains(mustRun(t, "info", img), "4096-byte sectors") {
		t.Fatal("info does not show 4096-byte sectors")
	}
}
