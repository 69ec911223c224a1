package cloneio

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// losetup attaches a loop device (args before the file: -o, --sizelimit)
// and detaches it at the end of the test; it skips without root or losetup.
func losetup(t *testing.T, file string, args ...string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop devices")
	}
	out, err := exec.Command("losetup", append(append([]string{"-f", "--show"}, args...), file)...).Output()
	if err != nil {
		t.Skipf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

func TestCheckDistinct(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, make([]byte, 4<<20), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hard := filepath.Join(dir, "hard.img")
	if err := os.Link(a, hard); err != nil {
		t.Fatal(err)
	}
	sym := filepath.Join(dir, "sym.img")
	if err := os.Symlink(a, sym); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		src, dst string
		same     bool
	}{
		{a, a, true},
		{a, hard, true},
		{sym, a, true},
		{a, b, false},
		{a, filepath.Join(dir, "new.img"), false}, // not there yet
		{"-", a, false},
	}
	for _, c := range cases {
		err := CheckDistinct(c.src, c.dst)
		if c.same != errors.Is(err, ErrSameDisk) {
			t.Errorf("CheckDistinct(%s, %s) = %v, want same=%v", c.src, c.dst, err, c.same)
		}
	}

	// Loop devices: over the file itself, over overlapping and over
	// disjoint ranges of it.
	whole := losetup(t, a)
	first := losetup(t, a, "--sizelimit", "1048576")
	second := losetup(t, a, "-o", "2097152", "--sizelimit", "1048576")
	other := losetup(t, b)
	for _, c := range []struct {
		src, dst string
		same     bool
	}{
		{a, whole, true},
		{whole, a, true},
		{whole, first, true},
		{second, whole, true},
		{first, second, false},
		{whole, other, false},
		{a, other, false},
		{whole, whole, true},
	} {
		err := CheckDistinct(c.src, c.dst)
		if c.same != errors.Is(err, ErrSameDisk) {
			t.Errorf("CheckDistinct(%s, %s) = %v, want same=%v", c.src, c.dst, err, c.same)
		}
	}
}

// TestInUseThroughOtherLoop: a loop device is in use when another loop
// device over the same bytes of the same file is mounted.
func TestInUseThroughOtherLoop(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("no mkfs.ext4")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(file, 16<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-E", "offset=1048576", file, "8M").CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4: %v: %s", err, out)
	}
	whole := losetup(t, file)
	part := losetup(t, file, "-o", "1048576", "--sizelimit", "8388608")
	if err := inUse(whole); err != nil {
		t.Fatalf("idle device reported in use: %v", err)
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", "-o", "ro", part, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	err := inUse(whole)
	if !errors.Is(err, ErrMounted) || !strings.Contains(err.Error(), mnt) {
		t.Fatalf("inUse(%s) with %s mounted = %v, want ErrMounted naming %s", whole, part, err, mnt)
	}
}
