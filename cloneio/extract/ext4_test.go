package extract

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/dimg-project/dimg/fsdrivers/ext4"
)

// hostileExt4 builds an ext4 image with mke2fs -d and then patches its
// directory blocks (no metadata_csum, no htree, so the kernel's checks do
// not get in the way) into what only a hostile image holds:
//
//	s/EVIL/SLASH/NAME  a name with slashes
//	z/..               a regular file named ".."
//	d/.                a file named "."
//	"etc"              twice: a symlink to the sentinel's etc, then a
//	                   directory holding passwd
//	"up"               a symlink to the sentinel, beside up2/ holding a file
//	d/LOOPDIR          a directory entry pointing back at the root inode
func hostileExt4(t *testing.T, sentinel string) string {
	t.Helper()
	for _, tool := range []string{"mke2fs", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip("needs", tool)
		}
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "etc"), 0o755))
	must(os.MkdirAll(filepath.Join(src, "d", "LOOPDIR"), 0o755))
	must(os.MkdirAll(filepath.Join(src, "up2"), 0o755))
	must(os.WriteFile(filepath.Join(src, "etc", "passwd"), []byte("pwned"), 0o644))
	must(os.WriteFile(filepath.Join(src, "up2", "passwd"), []byte("pwned"), 0o644))
	must(os.MkdirAll(filepath.Join(src, "s"), 0o755))
	must(os.MkdirAll(filepath.Join(src, "z"), 0o755))
	must(os.WriteFile(filepath.Join(src, "s", "EVILxSLASHxNAME"), []byte("a"), 0o644))
	must(os.WriteFile(filepath.Join(src, "z", "ZZ"), []byte("b"), 0o644))
	must(os.WriteFile(filepath.Join(src, "d", "Z"), []byte("c"), 0o644))
	must(os.Symlink(filepath.Join(sentinel, "etc"), filepath.Join(src, "etX")))
	must(os.Symlink(sentinel, filepath.Join(src, "up")))
	img := filepath.Join(dir, "fs.img")
	cmd := exec.Command("mke2fs", "-q", "-t", "ext4", "-O", "^metadata_csum,^dir_index", "-b", "1024",
		"-U", "01234567-89ab-cdef-0123-456789abcdef", "-d", src, img, "4M")
	cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME=1600000000")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mke2fs: %v\n%s", err, out)
	}
	b, err := os.ReadFile(img)
	must(err)
	// A directory entry: inode u32, rec_len u16, name_len u8, type u8, name.
	patch := func(old, new []byte) int {
		t.Helper()
		i := bytes.Index(b, old)
		if i < 0 || bytes.Count(b, old) != 1 {
			t.Fatalf("patch %q: found %d times", old, bytes.Count(b, old))
		}
		copy(b[i:], new)
		return i
	}
	patch([]byte("\x0f\x01EVILxSLASHxNAME"), []byte("\x0f\x01EVIL/SLASH/NAME"))
	patch([]byte("\x02\x01ZZ"), []byte("\x02\x01.."))
	patch([]byte("\x01\x01Z"), []byte("\x01\x01."))
	patch([]byte("\x03\x07etX"), []byte("\x03\x07etc"))
	i := patch([]byte("\x07\x02LOOPDIR"), []byte("\x07\x02LOOPDIR"))
	binary.LittleEndian.PutUint32(b[i-6:], 2) // → the root directory
	must(os.WriteFile(img, b, 0o644))
	return img
}

// TestExtractHostileExt4 extracts the patched image with our ext4 reader:
// every trick is refused or confined, nothing changes outside dest, and
// the honest entries are extracted.
func TestExtractHostileExt4(t *testing.T) {
	base := t.TempDir()
	sentinel := filepath.Join(base, "sentinel")
	if err := os.MkdirAll(filepath.Join(sentinel, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sentinel, "etc", "passwd"), []byte("original"), 0o644); err != nil {
		t.Fatal(err)
	}
	img := hostileExt4(t, sentinel)
	before := snapshot(t, sentinel)

	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	vol, err := ext4.Open(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	for _, force := range []bool{false, true} {
		dest := filepath.Join(base, "dest")
		_, err = Extract(context.Background(), vol, "/", dest, Options{Force: force})
		// Each trick is refused, by our reader (a corrupt directory)
		// or by Extract (an unsafe name, a loop): all are reported.
		if err == nil {
			t.Fatalf("force=%v: no error for a hostile image", force)
		}
		t.Logf("force=%v: %v", force, err)
		after := snapshot(t, sentinel)
		if len(after) != len(before) {
			t.Errorf("outside dest: %d entries, want %d", len(after), len(before))
		}
		for p, v := range after {
			if before[p] != v {
				t.Errorf("outside dest changed: %s", p)
			}
		}
		if b, _ := os.ReadFile(filepath.Join(sentinel, "etc", "passwd")); string(b) != "original" {
			t.Fatalf("sentinel overwritten: %q", b)
		}
		ents, _ := os.ReadDir(base)
		for _, e := range ents {
			if e.Name() != "sentinel" && e.Name() != "dest" {
				t.Errorf("outside dest: %s created", e.Name())
			}
		}
		// The honest parts are there; "up" stays a symlink, up2 a dir.
		if b, err := os.ReadFile(filepath.Join(dest, "up2", "passwd")); err != nil || string(b) != "pwned" {
			t.Errorf("up2/passwd: %q %v", b, err)
		}
		if fi, err := os.Lstat(filepath.Join(dest, "up")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("up: %v %v; want a symlink", fi, err)
		}
	}
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err == nil {
		t.Logf("e2fsck did not notice the patches:\n%s", out)
	}
}
