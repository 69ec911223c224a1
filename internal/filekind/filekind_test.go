package filekind

import (
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestOf(t *testing.T) {
	for _, c := range []struct {
		mode fs.FileMode
		want Kind
	}{
		{0o644, Regular},
		{fs.ModeDir | 0o755, Dir},
		{fs.ModeDevice | 0o660, Block},
		{fs.ModeDevice | fs.ModeCharDevice | 0o666, Stream},
		{fs.ModeNamedPipe | 0o600, Stream},
		{fs.ModeSocket | 0o600, Stream},
		{fs.ModeSymlink | 0o777, Other},
		{fs.ModeIrregular, Other},
	} {
		if got := Of(c.mode); got != c.want {
			t.Errorf("Of(%v) = %v, want %v", c.mode, got, c.want)
		}
	}
}

// TestStat classifies real paths, and a FIFO without blocking on it.
func TestStat(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cases := map[string]Kind{file: Regular, dir: Dir, fifo: Stream, sock: Stream, "/dev/null": Stream}
	// A block device when the machine has one to look at.
	if st, err := os.Stat("/dev/loop0"); err == nil && st.Mode()&fs.ModeDevice != 0 {
		cases["/dev/loop0"] = Block
	}
	for p, want := range cases {
		got, st, err := Stat(p)
		if err != nil || got != want || st == nil {
			t.Errorf("Stat(%s) = %v, %v, want %v", p, got, err, want)
		}
		if !Is(p, want) {
			t.Errorf("Is(%s, %v) = false", p, want)
		}
	}
	if k, _, err := Stat(filepath.Join(dir, "missing")); err == nil || k != Other {
		t.Errorf("missing path: %v, %v", k, err)
	}
	if Regular.RandomAccess() != true || Block.RandomAccess() != true || Stream.RandomAccess() || Dir.RandomAccess() {
		t.Error("RandomAccess: only regular files and block devices")
	}
	if Kind(42).String() != "other" || Stream.String() != "stream" {
		t.Error("String")
	}
}
