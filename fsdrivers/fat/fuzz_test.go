package fat

import (
	"bytes"
	"encoding/binary"
	"io"
	"io/fs"
	"math/rand/v2"
	"testing"
)

// FuzzOpen opens arbitrary bytes as a FAT volume and, when that works, walks
// the whole tree, reads every file and computes the used ranges — with the
// work bounded so that a hostile image cannot make one input run long. The
// seeds are synthetic FAT12 and FAT32-layout images, healthy and damaged.
func FuzzOpen(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(exercise)
}

// exercise opens data as a volume and uses everything, with bounded work.
func exercise(t *testing.T, data []byte) {
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
}

// fuzzSeeds are small images (the fuzzer works poorly on inputs over
// 64 KiB): FAT12 and FAT32-layout, healthy, with a loop, with a directory
// without clusters.
func fuzzSeeds(tb testing.TB) [][]byte {
	small := []*snode{
		{name: "hello.txt", data: []byte("hello\n")},
		{name: "A long name ünïcode 😀.txt", data: pattern(1, 700)},
		{name: "frag.bin", data: pattern(2, 1200), fragment: true},
		{name: "readme.txt", short: "README  TXT", nt: ntLowerBase | ntLowerExt, data: []byte("x")},
		{name: "empty"},
		{name: "d", dir: true, children: []*snode{{name: "in.txt", data: []byte("in")}}},
	}
	var seeds [][]byte
	for _, fat32 := range []bool{false, true} {
		s := buildSynthFAT(tb, 40, fat32, small)
		seeds = append(seeds, bytes.Clone(s.img))
		c := s.info["frag.bin"].clusters
		s.SetFAT(c[len(c)-1], c[0])
		seeds = append(seeds, bytes.Clone(s.img))
		s.SetFAT(c[len(c)-1], 0x0FFFFFFF)
		binary.LittleEndian.PutUint16(s.img[s.info["d"].entryOff+26:], 0)
		seeds = append(seeds, s.img)
	}
	return append(seeds, make([]byte, 512))
}

// TestMutations runs exercise on seeded random mutations of the fuzz seeds:
// a quick, deterministic stand-in for fuzzing in every test run.
func TestMutations(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	seeds := fuzzSeeds(t)
	n := 20000 // about a second
	if testing.Short() {
		n = 2000
	}
	for i := range n {
		d := bytes.Clone(seeds[i%len(seeds)])
		for range 1 + rng.IntN(8) {
			d[rng.IntN(len(d))] = byte(rng.Uint32())
		}
		if rng.IntN(3) == 0 { // the boot sector is where most checks are
			d[rng.IntN(100)] = byte(rng.Uint32())
		}
		if rng.IntN(10) == 0 {
			d = d[:rng.IntN(len(d))]
		}
		exercise(t, d)
	}
}
