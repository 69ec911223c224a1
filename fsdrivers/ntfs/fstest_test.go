package ntfs

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"sync"
	"testing"
	"testing/fstest"
)

// TestFSContract runs the standard library's io/fs conformance checks on a
// small tree (they read everything many times over). Dangling symlinks are
// left out: fstest expects every listed name to open.
func TestFSContract(t *testing.T) {
	fx := makeVolume(t, 16<<20, nil, func(t testing.TB, root string) {
		p := func(rel string) string { return root + "/" + rel }
		for _, d := range []string{"dir/sub", "comp", "日本語"} {
			must(t, os.MkdirAll(p(d), 0o755))
		}
		must(t, os.WriteFile(p("small.txt"), []byte("hello\n"), 0o644))
		must(t, os.WriteFile(p("dir/medium.bin"), randBytes(1, 300_000), 0o644))
		must(t, os.WriteFile(p("日本語/ファイル.txt"), []byte("nihongo\n"), 0o644))
		setAttrib(t, p("comp"), 0x810)
		must(t, os.WriteFile(p("comp/text.txt"), text(200_000), 0o644))
		must(t, os.Link(p("small.txt"), p("dir/hard")))
		must(t, os.Symlink("../small.txt", p("dir/sym")))
		must(t, os.Symlink("dir", p("dirsym")))
	})
	v := open(t, fx.img)
	if err := fstest.TestFS(v, "small.txt", "dir/medium.bin", "dir/hard", "dir/sym", "comp/text.txt", "日本語/ファイル.txt"); err != nil {
		t.Error(err)
	}

	// Concurrent readers share the record cache and a compressed stream's
	// unit cache (run with -race).
	want := map[string][]byte{"comp/text.txt": text(200_000), "dir/medium.bin": randBytes(1, 300_000)}
	f, err := v.Open("comp/text.txt")
	must(t, err)
	shared := f.(io.ReaderAt)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				for name, w := range want {
					b, err := fs.ReadFile(v, name)
					if err != nil || !bytes.Equal(b, w) {
						t.Errorf("%s: %d bytes, %v", name, len(b), err)
						return
					}
				}
				off := int64((g*7919 + i*104729) % 190_000)
				buf := make([]byte, 10_000)
				if _, err := shared.ReadAt(buf, off); err != nil || !bytes.Equal(buf, want["comp/text.txt"][off:off+10_000]) {
					t.Errorf("shared ReadAt(%d): %v", off, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
