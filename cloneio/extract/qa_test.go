package extract

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"golang.org/x/sys/unix"
)

// TestExtractProtect: with Force, a file named in Options.Protect (the image
// being read) is not replaced, whether it is the destination itself or an
// entry of a tree extracted over its directory; other files still are.
func TestExtractProtect(t *testing.T) {
	fsys := sampleFS()
	dir := t.TempDir()
	img := filepath.Join(dir, "hosts") // the "image", in the way of etc/hosts
	if err := os.WriteFile(img, []byte("the image"), 0o644); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "shadow")
	if err := os.WriteFile(other, []byte("replace me"), 0o644); err != nil {
		t.Fatal(err)
	}
	opt := Options{Force: true, Protect: []string{img}}
	_, err := Extract(context.Background(), fsys, "/etc/hosts", img, opt)
	if !errors.Is(err, ErrProtected) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("extract over the image: err = %v, want ErrProtected", err)
	}
	// The tree case: a tree extracted into the image's directory, with
	// an entry of the image's name.
	_, err = Extract(context.Background(), &fakeFS{MapFS: fstest.MapFS{
		"hosts":  fsys.MapFS["etc/hosts"],
		"shadow": fsys.MapFS["etc/shadow"],
	}}, ".", dir, opt)
	if !errors.Is(err, ErrProtected) {
		t.Fatalf("tree over the image's directory: err = %v, want ErrProtected", err)
	}
	if b, _ := os.ReadFile(img); string(b) != "the image" {
		t.Fatalf("protected file replaced: %q", b)
	}
	if b, _ := os.ReadFile(other); !bytes.Equal(b, fsys.MapFS["etc/shadow"].Data) {
		t.Fatalf("unprotected file not replaced with --force: %q", b)
	}
}

// TestExtractStopsWhenFull: on a full destination Extract stops at the
// first ENOSPC (it does not try, and report, every remaining file), names
// it first, and leaves no partial file.
func TestExtractStopsWhenFull(t *testing.T) {
	if !isRoot() {
		t.Skip("needs root to mount a small tmpfs")
	}
	if _, err := exec.LookPath("mount"); err != nil {
		t.Skip("no mount")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	m := fstest.MapFS{".": {Mode: fs.ModeDir | 0o755}}
	data := bytes.Repeat([]byte("x"), 300<<10)
	for i := range 20 {
		m[fmt.Sprintf("f%02d", i)] = &fstest.MapFile{Data: data, Mode: 0o644}
	}
	res, err := Extract(context.Background(), &fakeFS{MapFS: m}, ".", filepath.Join(dir, "out"), Options{})
	if !errors.Is(err, unix.ENOSPC) || !strings.Contains(err.Error(), "stopped") {
		t.Fatalf("err = %v, want a stop on ENOSPC", err)
	}
	if n := strings.Count(err.Error(), "no space left"); n != 1 {
		t.Errorf("ENOSPC reported %d times, want once (stop at the first):\n%v", n, err)
	}
	if res.Files > 3 || res.Files == 0 {
		t.Errorf("files written: %d", res.Files)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "out"))
	for _, e := range ents {
		fi, _ := e.Info()
		if fi.Size() != int64(len(data)) {
			t.Errorf("partial file left: %s (%d bytes)", e.Name(), fi.Size())
		}
	}
}

// TestLsMode: the "mode" of ls --json is what ls -l prints, not io/fs's
// own letters (before: "Lrwxrwxrwx", "dtrwxrwxrwx", "urwxr-xr-x").
func TestLsMode(t *testing.T) {
	for _, c := range []struct {
		mode fs.FileMode
		want string
	}{
		{0o644, "-rw-r--r--"},
		{fs.ModeSymlink | 0o777, "lrwxrwxrwx"},
		{fs.ModeDir | fs.ModeSticky | 0o777, "drwxrwxrwt"},
		{fs.ModeDir | fs.ModeSticky | 0o776, "drwxrwxrwT"},
		{fs.ModeSetuid | 0o755, "-rwsr-xr-x"},
		{fs.ModeSetgid | 0o745, "-rwxr-Sr-x"},
		{fs.ModeDevice | fs.ModeCharDevice | 0o666, "crw-rw-rw-"},
		{fs.ModeDevice | 0o660, "brw-rw----"},
		{fs.ModeNamedPipe | 0o620, "prw--w----"},
		{fs.ModeSocket | 0o755, "srwxr-xr-x"},
	} {
		if got := LsMode(c.mode); got != c.want {
			t.Errorf("LsMode(%v) = %q, want %q", c.mode, got, c.want)
		}
		if e := NewEntry(sampleFS(), "etc/hosts", fakeInfo{"x", c.mode, nil}); e.Mode != c.want {
			t.Errorf("NewEntry mode %v: %q, want %q", c.mode, e.Mode, c.want)
		}
	}
}
