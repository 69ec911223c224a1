package fat

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkRead reads a 64 MiB file of a FAT32 volume made by mkfs.vfat
// and mcopy, sequentially in 8 KiB reads (the size at which go-diskfs
// managed 3 MB/s: FINDINGS.md) and in 1 MiB reads, beside a raw read of
// the same number of bytes of the image for comparison. It runs in make
// bench (scripts/bench-drivers.sh), not in make test:
// go test -run '^$' -bench Read ./fsdrivers/fat
func BenchmarkRead(b *testing.B) {
	needTools(b, "mkfs.vfat", "mcopy")
	const size = 64 << 20
	src := filepath.Join(b.TempDir(), "src")
	genTree(b, src, srcTree{bigSize: size})
	img := filepath.Join(b.TempDir(), "fat.img")
	makeImage(b, img, 32, 300, 0, src)
	raw, err := os.Open(img)
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	st, err := raw.Stat()
	if err != nil {
		b.Fatal(err)
	}
	v, err := Open(raw, st.Size())
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		req  int
		open func() (io.Reader, func())
	}{
		{"fat32-8KiB", 8 << 10, func() (io.Reader, func()) { return openRead(b, v, "big.bin") }},
		{"fat32-1MiB", 1 << 20, func() (io.Reader, func()) { return openRead(b, v, "big.bin") }},
		{"raw-1MiB", 1 << 20, func() (io.Reader, func()) { return io.NewSectionReader(raw, 0, size), func() {} }},
	} {
		b.Run(c.name, func(b *testing.B) {
			buf := make([]byte, c.req)
			b.SetBytes(size)
			for b.Loop() {
				r, done := c.open()
				// Hide WriterTo/ReaderFrom: read in requests of c.req bytes.
				n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, struct{ io.Reader }{r}, buf)
				done()
				if err != nil || n != size {
					b.Fatalf("read %d bytes: %v", n, err)
				}
			}
		})
	}
}

// openRead opens name for a sequential read; the second result closes it.
func openRead(b *testing.B, v *Volume, name string) (io.Reader, func()) {
	f, err := v.Open(name)
	if err != nil {
		b.Fatal(err)
	}
	return f, func() { f.Close() }
}
