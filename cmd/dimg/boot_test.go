package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

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

// TestBootAfterDeploy: each bootable disk still boots after capture and
// restore --grow onto a larger file, after clone --grow onto a larger
// file, and after a multicast receive onto a larger file. The deploy
// paths run for both disks; booting is ~10 s per disk under TCG.
func TestBootAfterDeploy(t *testing.T) {
	for _, kind := range []string{"bios", "uefi"} {
		t.Run(kind, func(t *testing.T) {
			src, want := bootDisk(t, kind)
			dir := t.TempDir()
			img := filepath.Join(dir, kind+".dimg")
			mustRun(t, "capture", "-q", src, img)
			bigger := fmt.Sprint(fileSize(t, src) + 128<<20)

			t.Run("restore-grow", func(t *testing.T) {
				dst := filepath.Join(t.TempDir(), "restored.img")
				mustRun(t, "restore", "-q", "--grow", "--size", bigger, img, dst)
				bootCheck(t, dst, kind, want)
			})
			t.Run("clone-grow", func(t *testing.T) {
				dst := filepath.Join(t.TempDir(), "cloned.img")
				mustRun(t, "clone", "-q", "--grow", "--size", bigger, src, dst)
				bootCheck(t, dst, kind, want)
			})
			t.Run("receive", func(t *testing.T) {
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
