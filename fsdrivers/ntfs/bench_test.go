package ntfs

import (
	"io"
	"os"
	"testing"
)

// BenchmarkRead reads a 64 MiB plain file and a 64 MiB compressed text
// file in 1 MiB ReadAt calls (the way FUSE and extract read).
func BenchmarkRead(b *testing.B) {
	fx := makeVolume(b, 256<<20, nil, func(t testing.TB, root string) {
		must(t, os.WriteFile(root+"/plain.bin", randBytes(9, 64<<20), 0o644))
		must(t, os.Mkdir(root+"/c", 0o755))
		setAttrib(t, root+"/c", 0x810)
		must(t, os.WriteFile(root+"/c/text.txt", text(64<<20), 0o644))
	})
	v := open(b, fx.img)
	for _, name := range []string{"plain.bin", "c/text.txt"} {
		b.Run(name, func(b *testing.B) {
			f, err := v.Open(name)
			if err != nil {
				b.Fatal(err)
			}
			ra := f.(io.ReaderAt)
			buf := make([]byte, 1<<20)
			b.SetBytes(64 << 20)
			for b.Loop() {
				for off := int64(0); off < 64<<20; off += int64(len(buf)) {
					if _, err := ra.ReadAt(buf, off); err != nil && err != io.EOF {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
