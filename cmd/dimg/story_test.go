package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dimg-project/dimg/fsdrivers/ext4"
	"github.com/dimg-project/dimg/testimages"
)

// TestAdminStory runs the README's story: capture a golden disk, add a
// drivers tree and a config file with dimg add, deploy with send/receive
// over loopback multicast; the received disk has them (the kernel mounts
// its root partition and reads them back as added), and e2fsck finds it
// clean.
func TestAdminStory(t *testing.T) {
	writable(t, ext4.Driver{})
	requireRW(t)
	src := disk(t, "gpt")
	dir := t.TempDir()
	golden := filepath.Join(dir, "golden.dimg")
	mustRun(t, "capture", "-q", src, golden)
	os.Remove(src)

	local := t.TempDir()
	drivers := filepath.Join(local, "drivers")
	os.MkdirAll(filepath.Join(drivers, "net"), 0o755)
	os.WriteFile(filepath.Join(drivers, "net", "e1000e.ko"), []byte(strings.Repeat("\x7fELF module ", 40000)), 0o644)
	os.WriteFile(filepath.Join(drivers, "modules.order"), []byte("extra/net/e1000e.ko\n"), 0o644)
	os.Symlink("net/e1000e.ko", filepath.Join(drivers, "e1000e.ko"))
	conf := filepath.Join(local, "site.conf")
	os.WriteFile(conf, []byte("server=10.0.0.1\n"), 0o600)

	const extra = "lib/modules/6.1.0-18-amd64/extra"
	mustRun(t, "add", "-q", "-m", "site drivers", golden, drivers, "2:/"+extra+"/")
	mustRun(t, "add", "-q", golden, conf, "2:/etc/site.conf")
	if log := mustRun(t, "log", golden); !strings.Contains(log, "site drivers") || !strings.Contains(log, "add "+conf+" to 2:/etc/site.conf") {
		t.Errorf("dimg log:\n%s", log)
	}

	ctx, cancel := context.WithTimeout(context.Background(), sendRecvTimeout)
	defer cancel()
	port := fmt.Sprint(43000 + int(fileSum(t, golden)[1]))
	target := filepath.Join(dir, "received.img")
	send := startDimg(ctx, "send", "--interface", "lo", "--port", port, "--min-receivers", "1", "--max-wait", "20s", "--max-rate", "400M", golden)
	rx := waitDimg(t, "receive", startDimg(ctx, "receive", "-q", "--interface", "lo", "--port", port, "--wait", "60s", target))
	if rx.code != 0 {
		t.Fatalf("receive: exit %d\n%s", rx.code, rx.out)
	}
	if s := waitDimg(t, "send", send); s.code != 0 {
		t.Fatalf("send: exit %d\n%s", s.code, s.out)
	}

	parts, err := testimages.Partitions(target)
	if err != nil {
		t.Fatal(err)
	}
	var root testimages.Part
	for _, p := range parts {
		if p.Number == 2 {
			root = p
		}
	}
	pf := filepath.Join(dir, "p2.img")
	if b, err := exec.Command("dd", "if="+target, "of="+pf, "bs=512", fmt.Sprintf("skip=%d", root.Start/512), fmt.Sprintf("count=%d", root.Size/512), "status=none").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v %s", err, b)
	}
	if b, err := exec.Command("e2fsck", "-fn", pf).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn of the received root: %v\n%s", err, b)
	}
	mnt, _ := loopMountFS(t, pf, 0, 0, true)
	for _, c := range []struct{ local, inImage string }{
		{filepath.Join(drivers, "net", "e1000e.ko"), extra + "/drivers/net/e1000e.ko"},
		{filepath.Join(drivers, "modules.order"), extra + "/drivers/modules.order"},
		{filepath.Join(drivers, "e1000e.ko"), extra + "/drivers/e1000e.ko"}, // through the symlink
		{conf, "etc/site.conf"},
	} {
		want, _ := os.ReadFile(c.local)
		got, err := os.ReadFile(filepath.Join(mnt, c.inImage))
		if err != nil || string(got) != string(want) {
			t.Errorf("received disk: %s: %d bytes, %v (want %d bytes)", c.inImage, len(got), err, len(want))
		}
	}
	if fi, err := os.Stat(filepath.Join(mnt, "etc/site.conf")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("site.conf mode: %v %v", fi.Mode(), err)
	}
	if l, err := os.Readlink(filepath.Join(mnt, extra, "drivers/e1000e.ko")); err != nil || l != "net/e1000e.ko" {
		t.Errorf("symlink: %q %v", l, err)
	}
}
