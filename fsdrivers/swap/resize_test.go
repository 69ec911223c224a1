package swap

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestResize shrinks a swap area made by mkswap and compares its header
// with what mkswap writes for the new size with the same UUID and label.
func TestResize(t *testing.T) {
	if _, err := exec.LookPath("mkswap"); err != nil {
		t.Skip("mkswap not installed")
	}
	dir := t.TempDir()
	mk := func(name string, size int64) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, size); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("mkswap", "-U", "0a1b2c3d-4e5f-4061-8273-94a5b6c7d8e9", "-L", "myswap", p).CombinedOutput()
		if err != nil {
			t.Fatalf("mkswap: %v\n%s", err, out)
		}
		return p
	}
	big, small := mk("big", 16<<20), mk("small", 8<<20)
	f, err := os.OpenFile(big, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Resize(f, 16<<20, 8<<20); err != nil {
		t.Fatal(err)
	}
	got, want := make([]byte, 4096), make([]byte, 4096)
	f.ReadAt(got, 0)
	w, _ := os.ReadFile(small)
	copy(want, w)
	if !bytes.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("header differs from mkswap's at byte %d: %#x, want %#x", i, got[i], want[i])
			}
		}
	}
	if err := Resize(f, 16<<20, 4096*9); err == nil {
		t.Error("9 pages: not refused")
	}
}
