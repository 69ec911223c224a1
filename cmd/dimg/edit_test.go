package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/fsdrivers/fat"
)

// writable reports whether dimg has a writer for the driver's filesystem;
// tests of edits skip, naming it, until it has.
func writable(t *testing.T, d fsdrivers.Driver) {
	t.Helper()
	if _, ok := d.(fsdrivers.WritableDriver); !ok {
		t.Skipf("the %s driver has no writer yet (fsdrivers.WritableDriver)", d.Name())
	}
}

// TestEditRefusals: every refusal is explained, exits 1 or 2 and leaves
// the image byte for byte as it was.
func TestEditRefusals(t *testing.T) {
	_, img := featureImage(t)
	local := filepath.Join(t.TempDir(), "f")
	os.WriteFile(local, []byte("x"), 0o644)
	before := fileSum(t, img)
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"add", img, local, "9:/x/"}, 1, "partition"},
		{[]string{"add", img, local, "7:/x/"}, 1, "partition 7 holds no files"},
		{[]string{"add", img, local, "6:/x/"}, 1, "ntfs-3g"},
		{[]string{"add", img, "/nonexistent/file", "3:/x/"}, 1, "no such file"},
		{[]string{"add", img, local}, 2, "add needs"},
		{[]string{"chmod", img, "99x", "3:/x"}, 2, "octal"},
		{[]string{"chown", img, "root", "3:/x"}, 2, "numbers"},
		{[]string{"mv", img, "3:/a", "4:/b"}, 2, "one partition"},
		{[]string{"rm", "--delta", img, img, "3:/x"}, 1, "exists"},
	}
	for _, c := range cases {
		_, errs, code := run(t, nil, c.args...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("dimg %s: exit %d, want %d with %q:\n%s", strings.Join(c.args[:1], " "), code, c.code, c.want, errs)
		}
	}
	if fileSum(t, img) != before {
		t.Fatal("a refused edit changed the image")
	}
	if _, err := os.Stat(img + ".scratch"); err == nil {
		t.Error("a refused edit left a scratch file")
	}
}

// TestEditFAT runs every edit command on the FAT partitions and checks
// the result with fsck.fat and dimg's own reader.
func TestEditFAT(t *testing.T) {
	writable(t, fat.Driver{})
	if _, err := exec.LookPath("fsck.fat"); err != nil {
		t.Skip("needs fsck.fat")
	}
	_, img := featureImage(t)
	src := t.TempDir()
	tree := filepath.Join(src, "drivers")
	os.MkdirAll(filepath.Join(tree, "net"), 0o755)
	os.WriteFile(filepath.Join(tree, "net", "e1000e.ko"), []byte(strings.Repeat("module ", 50000)), 0o644)
	os.WriteFile(filepath.Join(tree, "README"), []byte("drivers\n"), 0o644)
	for _, part := range []string{"3", "4", "5"} {
		mustRun(t, "add", "-q", img, tree, part+":/lib/extra/")
		if got := mustRun(t, "cat", img, part+":/lib/extra/drivers/README"); got != "drivers\n" {
			t.Errorf("%s: README reads %q", part, got)
		}
		_, errs, code := run(t, nil, "add", img, tree, part+":/lib/extra/")
		if code != 1 || !strings.Contains(errs, "already exists") {
			t.Errorf("second add: exit %d %s", code, errs)
		}
		mustRun(t, "add", "-q", "--force", img, tree, part+":/lib/extra/")
		mustRun(t, "mkdir", "-q", "-p", img, part+":/a/b/c")
		mustRun(t, "mv", "-q", img, part+":/lib/extra/drivers/README", part+":/a/b/c/")
		if _, err := runStdin(t, "config=1\n", "put", "-q", img, part+":/a/b/c/site.conf"); err != nil {
			t.Fatal(err)
		}
		if got := mustRun(t, "cat", img, part+":/a/b/c/site.conf"); got != "config=1\n" {
			t.Errorf("put: %q", got)
		}
		mustRun(t, "rm", "-q", "-r", img, part+":/a")
		checkFAT(t, img, part)
	}
	out := mustRun(t, "log", img)
	if !strings.Contains(out, "add "+tree+" to 5:/lib/extra") {
		t.Errorf("log lacks the default message:\n%s", out)
	}
}

func runStdin(t *testing.T, in string, args ...string) (string, error) {
	t.Helper()
	out, errs, code := run(t, strings.NewReader(in), args...)
	if code != 0 {
		t.Fatalf("dimg %s: exit %d\n%s", strings.Join(args, " "), code, errs)
	}
	return out, nil
}

// checkFAT restores img to a raw disk and runs fsck.fat -n on a copy of
// partition part.
func checkFAT(t *testing.T, img, part string) {
	t.Helper()
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.img")
	mustRun(t, "restore", "-q", img, raw)
	n, _ := strconv.Atoi(part)
	p := featurePart(t, raw, n)
	pf := filepath.Join(dir, "p.img")
	if out, err := exec.Command("dd", "if="+raw, "of="+pf, "bs=512", fmt.Sprintf("skip=%d", p.Start/512), fmt.Sprintf("count=%d", p.Size/512), "status=none").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v %s", err, out)
	}
	if out, err := exec.Command("fsck.fat", "-n", pf).CombinedOutput(); err != nil {
		t.Errorf("fsck.fat -n partition %s: %v\n%s", part, err, out)
	}
}
