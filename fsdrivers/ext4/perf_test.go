package ext4

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestConcurrentReads reads random ranges of several files from many
// goroutines, through one shared open file and through separate ones,
// and checks every byte (run with -race to check the locking too).
func TestConcurrentReads(t *testing.T) {
	need(t, "mke2fs")
	src := t.TempDir()
	rnd := rand.New(rand.NewPCG(3, 4))
	contents := map[string][]byte{}
	for i, size := range []int{1 << 20, 3<<20 + 5, 70000, 100} {
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(rnd.Uint32())
		}
		name := "f" + string(rune('0'+i))
		contents[name] = b
		os.WriteFile(filepath.Join(src, name), b, 0o644)
	}
	img := mkfs(t, 32<<20, src, "-t", "ext4", "-b", "1024")
	v := openImage(t, img)
	shared, err := v.Open("f1")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 9))
			for range 200 {
				name := "f" + string(rune('0'+r.IntN(4)))
				want := contents[name]
				var f io.ReaderAt
				if name == "f1" && r.IntN(2) == 0 {
					f = shared.(io.ReaderAt)
				} else {
					fh, err := v.Open(name)
					if err != nil {
						t.Error(err)
						return
					}
					defer fh.Close()
					f = fh.(io.ReaderAt)
				}
				off := r.Int64N(int64(len(want)))
				buf := make([]byte, r.IntN(300000)+1)
				n, err := f.ReadAt(buf, off)
				end := min(off+int64(len(buf)), int64(len(want)))
				if n != int(end-off) || (n < len(buf) && err != io.EOF) || !bytes.Equal(buf[:n], want[off:end]) {
					t.Errorf("%s ReadAt(%d bytes at %d) = %d, %v", name, len(buf), off, n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkReadLargeFile reads a 1 GiB file (page cache warm after the
// first pass) in 1 MiB and 128 KiB requests, beside a raw read of the
// image for comparison: go test -bench ReadLargeFile -run '^$'.
func BenchmarkReadLargeFile(b *testing.B) {
	need(b, "mke2fs")
	src := b.TempDir()
	f, err := os.Create(filepath.Join(src, "large"))
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	rnd := rand.New(rand.NewPCG(5, 6))
	for i := range chunk {
		chunk[i] = byte(rnd.Uint32())
	}
	const size = 1 << 30
	for off := 0; off < size; off += len(chunk) {
		chunk[0] = byte(off >> 20) // no two chunks alike
		f.Write(chunk)
	}
	f.Close()
	img := mkfs(b, size+size/8, src, "-t", "ext4")
	os.Remove(filepath.Join(src, "large"))
	v := openImage(b, img)
	lf, err := v.Open("large")
	if err != nil {
		b.Fatal(err)
	}
	raw, err := os.Open(img)
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	for _, c := range []struct {
		name string
		r    io.ReaderAt
		req  int
	}{
		{"ext4-1MiB", lf.(io.ReaderAt), 1 << 20},
		{"ext4-128KiB", lf.(io.ReaderAt), 128 << 10},
		{"raw-1MiB", raw, 1 << 20},
	} {
		b.Run(c.name, func(b *testing.B) {
			buf := make([]byte, c.req)
			b.SetBytes(size)
			for b.Loop() {
				for off := int64(0); off < size; off += int64(len(buf)) {
					if _, err := c.r.ReadAt(buf, off); err != nil && err != io.EOF {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
