package fat

import (
	"bytes"
	"encoding/binary"
	"io"
	"io/fs"
	"testing"
)

// FuzzOpen opens arbitrary bytes as a FAT volume and, when that works, walks
// the whole tree, reads every file and computes the used ranges — with the
// work bounded so that a hostile image cannot make one input run long. The
// seeds are synthetic FAT12 and FAT32-layout images, healthy and damaged.
func FuzzOpen(f *testing.F) {
	small := []*snode{
		{name: "hello.txt", data: []byte("hello\n")},
		{name: "A long name ünïcode 😀.txt", data: pattern(1, 700)},
		{name: "frag.bin", data: pattern(2, 1200), fragment: true},
		{name: "readme.txt", short: "README  TXT", nt: ntLowerBase | ntLowerExt, data: []byte("x")},
		{name: "empty"},
		{name: "d", dir: true, children: []*snode{{name: "in.txt", data: []byte("in")}}},
	}
	for _, fat32 := range []bool{false, true} {
		s := buildSynthFAT(f, 40, fat32, small)
		f.Add(bytes.Clone(s.img))
		loop := buildSynthFAT(f, 40, fat32, small)
		c := loop.info["frag.bin"].clusters
		loop.SetFAT(c[len(c)-1], c[0])
		f.Add(loop.img)
		self := buildSynthFAT(f, 40, fat32, small)
		binary.LittleEndian.PutUint16(self.img[self.info["d"].entryOff+26:], 0)
		f.Add(self.img)
	}
	f.Add(make([]byte, 512))

	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := Open(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		_ = v.Type() + v.UUID() + v.Label()
		rs, err := v.UsedRanges()
		if err == nil {
			var end int64
			for i, r := range rs {
				if r.Len <= 0 || r.Off < end || (i > 0 && r.Off == end) || r.Off+r.Len > int64(len(data)) {
					t.Fatalf("bad range %d %+v after end %d (size %d)", i, r, end, len(data))
				}
				end = r.Off + r.Len
			}
		}
		budget := 2000 // entries visited
		buf := make([]byte, 4096)
		fs.WalkDir(v, ".", func(p string, d fs.DirEntry, err error) error {
			if budget--; budget < 0 {
				return fs.SkipAll
			}
			if err != nil || d.IsDir() {
				return nil
			}
			d.Info()
			f, err := v.Open(p)
			if err != nil {
				return nil
			}
			defer f.Close()
			// At most 16 reads per file: enough to cross runs.
			for range 16 {
				if _, err := f.Read(buf); err != nil {
					if err != io.EOF {
						return nil
					}
					break
				}
			}
			return nil
		})
	})
}
