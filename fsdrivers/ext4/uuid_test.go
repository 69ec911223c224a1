package ext4

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// uuidTree stages a tree with what carries checksums: an htree directory,
// a file whose extent tree has index blocks (many holes), xattrs in the
// inode and in an external block, symlinks, inline-sized files.
func uuidTree(t *testing.T) string {
	t.Helper()
	need(t, "setfattr")
	dir := t.TempDir()
	big := filepath.Join(dir, "many")
	if err := os.Mkdir(big, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 1500 {
		if err := os.WriteFile(filepath.Join(big, fmt.Sprintf("entry-with-a-long-name-%05d", i)), []byte{byte(i)}, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Create(filepath.Join(dir, "holes"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range int64(40) {
		if _, err := f.WriteAt([]byte("data"), i*8192*3); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	os.WriteFile(filepath.Join(dir, "small"), []byte("hello"), 0o644)
	os.Symlink("small", filepath.Join(dir, "link"))
	runCmd(t, "setfattr", "-n", "user.short", "-v", "x", filepath.Join(dir, "small"))
	runCmd(t, "setfattr", "-n", "user.big", "-v", strings.Repeat("v", 600), filepath.Join(dir, "holes"))
	return dir
}

func dumpUUID(t *testing.T, img string) string {
	t.Helper()
	for _, l := range strings.Split(runCmd(t, "dumpe2fs", "-h", img), "\n") {
		if v, ok := strings.CutPrefix(l, "Filesystem UUID:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("dumpe2fs shows no UUID")
	return ""
}

// TestSetUUID changes the UUID of filesystems with and without
// metadata_csum_seed, with gdt_csum, without checksums, with 1 KiB blocks
// and meta_bg: e2fsck -fn is clean afterwards, dumpe2fs shows the new
// UUID, and the reader (which verifies every checksum) reads the files.
func TestSetUUID(t *testing.T) {
	need(t, "mke2fs", "e2fsck", "dumpe2fs")
	src := uuidTree(t)
	cases := []struct {
		name string
		opts []string
	}{
		{"ext4-csum", []string{"-t", "ext4"}},
		{"ext4-csum-seed", []string{"-t", "ext4", "-O", "metadata_csum_seed"}},
		{"ext4-1k-metabg", []string{"-t", "ext4", "-b", "1024", "-O", "meta_bg,^resize_inode"}},
		{"ext4-gdt-csum", []string{"-t", "ext4", "-O", "^metadata_csum,uninit_bg"}},
		{"ext4-inline", []string{"-t", "ext4", "-O", "inline_data", "-I", "256"}},
		{"ext3", []string{"-t", "ext3"}},
		{"ext2", []string{"-t", "ext2"}},
	}
	const newUUID = "0f0e0d0c-0b0a-4908-8706-050403020100"
	want, err := ParseUUID(newUUID)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img := mkfs(t, 64<<20, src, c.opts...)
			f, err := os.OpenFile(img, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			ch, err := SetUUID(f, 64<<20, want)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%+v", *ch)
			if ch.Old != testUUID || ch.New != newUUID {
				t.Errorf("change %s -> %s, want %s -> %s", ch.Old, ch.New, testUUID, newUUID)
			}
			fsck(t, img)
			if got := dumpUUID(t, img); got != newUUID {
				t.Fatalf("dumpe2fs UUID %s, want %s", got, newUUID)
			}
			v := openImage(t, img)
			b, err := fs.ReadFile(v, "small")
			if err != nil || string(b) != "hello" {
				t.Fatalf("read small: %q %v", b, err)
			}
			ents, err := fs.ReadDir(v, "many")
			if err != nil || len(ents) != 1500 {
				t.Fatalf("read the htree directory: %d entries, %v", len(ents), err)
			}
			if _, err := fs.ReadFile(v, "holes"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestSetUUIDRefusesRecovery(t *testing.T) {
	need(t, "mke2fs", "debugfs")
	img := mkfs(t, 16<<20, "", "-t", "ext4")
	runCmd(t, "debugfs", "-w", "-R", "feature needs_recovery", img)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := SetUUID(f, 16<<20, [16]byte{1}); err == nil || !strings.Contains(err.Error(), "recovery") {
		t.Fatalf("SetUUID on a filesystem needing recovery: %v", err)
	}
}
