package ext4

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"testing"
)

// fuzzSeeds builds tiny real images (no journal, 1 KiB blocks) covering
// block maps, extent trees, inline data, htree, xattrs and symlinks.
func fuzzSeeds(f *testing.F) [][]byte {
	if _, err := runCmdErr("mke2fs", "-V"); err != nil {
		return nil
	}
	src := f.TempDir()
	os.WriteFile(src+"/small", []byte("hello"), 0o644)
	runCmdErr("setfattr", "-n", "user.x", "-v", "y", src+"/small")
	os.WriteFile(src+"/inline60", bytes.Repeat([]byte("i"), 90), 0o644)
	frag, _ := os.Create(src + "/frag")
	for i := range int64(12) {
		frag.WriteAt([]byte("x"), i*2048)
	}
	frag.Close()
	os.Mkdir(src+"/dir", 0o755)
	for i := range 40 {
		os.WriteFile(src+"/dir/entry-with-a-longish-name-"+strings.Repeat("z", i), nil, 0o644)
	}
	os.Symlink("small", src+"/fast")
	os.Symlink(strings.Repeat("dir/../", 12)+"small", src+"/slow")
	os.Symlink("/dir", src+"/abs")
	os.Link(src+"/small", src+"/dir/hard")
	var seeds [][]byte
	for i, opts := range [][]string{
		{"-t", "ext2", "-b", "1024", "-N", "64"},
		{"-t", "ext4", "-b", "1024", "-N", "64", "-O", "^has_journal,^resize_inode"},
		{"-t", "ext4", "-b", "1024", "-N", "64", "-O", "^has_journal,^resize_inode,inline_data,^metadata_csum"},
	} {
		img := f.TempDir() + "/seed.img"
		os.WriteFile(img, nil, 0o644)
		os.Truncate(img, 96<<10) // small inputs keep the fuzzer fast
		args := append([]string{"-q", "-F", "-U", testUUID, "-E", "hash_seed=" + testHashSeed}, opts...)
		if out, err := runCmdErr("mke2fs", append(args, "-d", src, img)...); err != nil {
			f.Fatalf("seed %d: %v\n%s", i, err, out)
		}
		if i == 0 {
			runCmdErr("e2fsck", "-fyD", img) // index dir: an htree seed
		}
		b, err := os.ReadFile(img)
		if err != nil {
			f.Fatal(err)
		}
		// A seed must be a working filesystem, or the fuzzer starts from noise.
		v, err := Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			f.Fatalf("seed %d: %v", i, err)
		}
		if ents, err := v.ReadDir("dir"); err != nil || len(ents) != 41 {
			f.Fatalf("seed %d: ReadDir(dir) = %d entries, %v", i, len(ents), err)
		}
		seeds = append(seeds, b)
	}
	return seeds
}

// FuzzOpen opens arbitrary bytes as a filesystem and, when that works,
// computes the used map and walks the tree. Damaged input must give
// errors, never a panic or a hang. Work per input is bounded by the walk
// budget below.
func FuzzOpen(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Add(make([]byte, 4096))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		_ = v.Type() + v.UUID() + v.Label()
		if rs, err := v.UsedRanges(); err == nil {
			for _, r := range rs {
				if r.Off < 0 || r.Len <= 0 || r.Off+r.Len > int64(len(b)) {
					t.Fatalf("range %+v outside the %d-byte device", r, len(b))
				}
			}
		}
		budget := 300
		fuzzWalk(v, ".", map[uint64]bool{}, &budget, 0)
	})
}

func fuzzWalk(v *Volume, dir string, seen map[uint64]bool, budget *int, depth int) {
	if depth > 16 {
		return
	}
	ents, err := v.ReadDir(dir)
	if err != nil {
		return
	}
	buf := make([]byte, 8192)
	for _, e := range ents {
		if *budget--; *budget < 0 {
			return
		}
		name := path.Join(dir, e.Name())
		fi, err := v.Lstat(name)
		if err != nil {
			continue
		}
		v.Xattrs(name)
		if fi.Mode()&fs.ModeSymlink != 0 {
			v.ReadLink(name)
			v.Stat(name)
		}
		if fi.IsDir() {
			ino := fi.(*fileInfo).ino.num
			if seen[uint64(ino)] {
				continue // a directory loop in a hostile image
			}
			seen[uint64(ino)] = true
			fuzzWalk(v, name, seen, budget, depth+1)
			continue
		}
		f, err := v.Open(name)
		if err != nil {
			continue
		}
		if ra, ok := f.(io.ReaderAt); ok {
			for _, off := range []int64{0, 5000, 1 << 20, fi.Size() - 100} {
				ra.ReadAt(buf, off)
			}
		}
		io.CopyN(io.Discard, f, 64<<10)
		f.Close()
	}
}
