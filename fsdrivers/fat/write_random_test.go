package fat

import (
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/internal/lru"
)

// TestWriteRandom applies random operations to a volume through the writer
// and to a local directory (the mirror), then requires fsck.fat -n clean
// (also at Syncs on the way) and mtools to copy out exactly the mirror's
// tree: names, sizes, contents, modification times. FATW_SEED replays a
// seed; FATW_OPS sets the number of operations (default 400).
func TestWriteRandom(t *testing.T) {
	ops := 400
	if s := os.Getenv("FATW_OPS"); s != "" {
		ops, _ = strconv.Atoi(s)
	}
	for i, v := range []wvariant{
		{name: "fat12", bits: 12, sizeMiB: 3},
		{name: "fat16", bits: 16, sizeMiB: 20, spc: 1},
		{name: "fat32", bits: 32, sizeMiB: 34, spc: 1},
		// One cached FAT page out of five: clean pages are evicted and
		// read again, dirty ones must survive until Sync.
		{name: "fat32-tiny-cache", bits: 32, sizeMiB: 34, spc: 1, cachePages: 1},
		{name: "fat32-4k", bits: 32, sizeMiB: 270, sector: 4096, spc: 1}, // mtools reads FAT32 only past 65,524 clusters
	} {
		t.Run(v.name, func(t *testing.T) {
			seed := uint64(time.Now().UnixNano()) + uint64(i)
			if s := os.Getenv("FATW_SEED"); s != "" {
				seed, _ = strconv.ParseUint(s, 10, 64)
			}
			t.Logf("seed %d (FATW_SEED=%d replays it)", seed, seed)
			r := &randomRun{t: t, rnd: rand.New(rand.NewPCG(seed, 7)), mirror: t.TempDir()}
			r.wt = wopen(t, mkfsImage(t, v))
			if v.cachePages > 0 {
				r.wt.w.fat.clean = lru.New[int64, []byte](v.cachePages)
			}
			for n := range ops {
				r.step()
				if n%100 == 99 {
					r.wt.must(r.wt.w.Sync())
					fsckClean(t, r.wt.img)
				}
			}
			r.wt.close()
			if os.Getenv("FATW_KEEP") != "" {
				b, _ := os.ReadFile(r.wt.img)
				os.WriteFile(os.Getenv("FATW_KEEP"), b, 0o644)
			}
			compareTrees(t, snapshot(t, os.DirFS(extract(t, r.wt.img))), snapshot(t, os.DirFS(r.mirror)))
		})
	}
}

// randomNames are distinct even ignoring case, so a case-sensitive mirror
// holds the same tree; they cover aliases with and without tails, case
// flags, CP850 and wider Unicode. (mtools prints characters outside the
// BMP as "_", so names with surrogate pairs are tested in TestWriteScenario
// with the reader.)
var randomNames = []string{
	"a.txt", "Long File Name.txt", "Long File Name 2.txt", ".hidden", "UPPER.TXT", "lower.txt",
	"Mixed.Case", "x.tar.gz", "data 1.bin", "data 2.bin", "café", "Überfile.txt", "日本語.txt",
	"a+b=c.txt", "name with  two spaces", "Program Files", "abcdefghijkl.mnopq", "z",
	"12345678.123", "with;semi", "[brackets]", "ünïcödé long name with accents.text",
	"~tilde~1", "sub", "deep",
}

type randomRun struct {
	t      *testing.T
	rnd    *rand.Rand
	wt     *wtest
	mirror string
}

// entries lists the mirror: directories ("" for the root) and files.
func (r *randomRun) entries() (dirs, files []string) {
	dirs = []string{""}
	filepath.WalkDir(r.mirror, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(r.mirror, p)
		if rel == "." {
			return nil
		}
		if d.IsDir() {
			dirs = append(dirs, filepath.ToSlash(rel))
		} else {
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	return dirs, files
}

// existing returns the name in mirror directory dir that equals name
// ignoring case, "" if none.
func (r *randomRun) existing(dir, name string) string {
	ents, _ := os.ReadDir(filepath.Join(r.mirror, dir))
	for _, e := range ents {
		if strings.EqualFold(e.Name(), name) {
			return e.Name()
		}
	}
	return ""
}

func (r *randomRun) pick(s []string) string { return s[r.rnd.IntN(len(s))] }

func (r *randomRun) data(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.rnd.Uint32())
	}
	return b
}

// size is a random file length: mostly a few clusters, sometimes many.
func (r *randomRun) size() int {
	cs := int(r.wt.w.g.clusterSize)
	if r.rnd.IntN(10) == 0 {
		return r.rnd.IntN(40 * cs)
	}
	return r.rnd.IntN(3 * cs)
}

func (r *randomRun) local(p string) string { return filepath.Join(r.mirror, filepath.FromSlash(p)) }

// touch sets a mirror file's mtime to the writer's clock.
func (r *randomRun) touch(p string) {
	c := r.wt.clock
	if err := os.Chtimes(r.local(p), c, c); err != nil {
		r.t.Fatal(err)
	}
}

// ok reports whether err is nil; ENOSPC is allowed (the operation must
// then have changed nothing, which the final comparison checks), any other
// error fails the test.
func (r *randomRun) ok(op string, err error) bool {
	if err == nil {
		return true
	}
	if errors.Is(err, syscall.ENOSPC) {
		return false
	}
	r.t.Fatalf("%s: %v", op, err)
	return false
}

func (r *randomRun) step() {
	w := r.wt.w
	r.wt.tick()
	if r.rnd.IntN(8) == 0 {
		// Allocate from anywhere next: fragmented files, many FAT pages.
		w.fat.hint = 2 + uint32(r.rnd.IntN(int(w.g.clusterCount)))
	}
	dirs, files := r.entries()
	switch op := r.rnd.IntN(100); {
	case op < 25 || len(files) == 0: // create and write
		dir, name := r.pick(dirs), r.pick(randomNames)
		if r.existing(dir, name) != "" {
			return
		}
		a, err := w.Create(r.wt.ino(dir), name, fsdrivers.ModeFile|0o644, 0, fsdrivers.Owner{})
		if !r.ok("create "+dir+"/"+name, err) {
			return
		}
		p := path.Join(dir, name)
		r.wt.must(os.WriteFile(r.local(p), nil, 0o644))
		r.touch(p)
		data := r.data(r.size())
		if _, err := w.WriteAt(a.Ino, data, 0); len(data) > 0 && r.ok("write "+p, err) {
			r.wt.must(os.WriteFile(r.local(p), data, 0o644))
			r.touch(p)
		}
	case op < 45: // write somewhere, maybe past the end
		p := r.pick(files)
		st, _ := os.Stat(r.local(p))
		off := r.rnd.Int64N(st.Size() + 2*r.wt.w.g.clusterSize + 1)
		data := r.data(1 + r.rnd.IntN(r.size()+1))
		if _, err := w.WriteAt(r.wt.ino(p), data, off); r.ok("write "+p, err) {
			f, err := os.OpenFile(r.local(p), os.O_WRONLY, 0)
			r.wt.must(err)
			_, err = f.WriteAt(data, off)
			f.Close()
			r.wt.must(err)
			r.touch(p)
		}
	case op < 55: // truncate up or down
		p := r.pick(files)
		st, _ := os.Stat(r.local(p))
		size := r.rnd.Int64N(2*st.Size() + r.wt.w.g.clusterSize + 1)
		if _, err := w.Setattr(r.wt.ino(p), fsdrivers.SetAttr{Size: &size}); r.ok("truncate "+p, err) {
			r.wt.must(os.Truncate(r.local(p), size))
			r.touch(p)
		}
	case op < 63: // mkdir
		dir, name := r.pick(dirs), r.pick(randomNames)
		if strings.Count(dir, "/") > 6 || r.existing(dir, name) != "" {
			return
		}
		if _, err := w.Mkdir(r.wt.ino(dir), name, 0o755, fsdrivers.Owner{}); r.ok("mkdir", err) {
			r.wt.must(os.Mkdir(r.local(path.Join(dir, name)), 0o755))
		}
	case op < 71: // unlink
		p := r.pick(files)
		r.wt.must(w.Unlink(r.wt.ino(path.Dir("/"+p)), path.Base(p)))
		r.wt.must(os.Remove(r.local(p)))
	case op < 75: // rmdir (fails unless empty, on both sides)
		if len(dirs) == 1 {
			return
		}
		p := r.pick(dirs[1:])
		err := w.Rmdir(r.wt.ino(path.Dir("/"+p)), path.Base(p))
		merr := os.Remove(r.local(p))
		if (err == nil) != (merr == nil) {
			r.t.Fatalf("rmdir %s: writer %v, mirror %v", p, err, merr)
		}
	case op < 92: // rename, over an existing entry at times
		all := append(slices.Clone(dirs[1:]), files...)
		if len(all) == 0 {
			return
		}
		src, ddir := r.pick(all), r.pick(dirs)
		name := r.pick(randomNames)
		if ddir == src || strings.HasPrefix(ddir, src+"/") {
			return
		}
		old := r.existing(ddir, name)
		target := path.Join(ddir, old)
		var flags fsdrivers.RenameFlags
		if r.rnd.IntN(4) == 0 {
			flags = fsdrivers.RenameNoReplace
		}
		err := w.Rename(r.wt.ino(path.Dir("/"+src)), path.Base(src), r.wt.ino(ddir), name, flags)
		switch {
		case old == "" || target == src && flags == 0:
			if r.ok("rename "+src, err) {
				r.wt.must(syscall.Rename(r.local(src), r.local(path.Join(ddir, name))))
			}
		case flags == fsdrivers.RenameNoReplace:
			if !errors.Is(err, syscall.EEXIST) {
				r.t.Fatalf("rename %s over %s with NOREPLACE: %v", src, target, err)
			}
		default:
			srcDir := isDir(r.local(src))
			dstDir := isDir(r.local(target))
			ents, _ := os.ReadDir(r.local(target))
			switch {
			case srcDir && !dstDir && !errors.Is(err, syscall.ENOTDIR),
				!srcDir && dstDir && !errors.Is(err, syscall.EISDIR),
				srcDir && dstDir && len(ents) > 0 && !errors.Is(err, syscall.ENOTEMPTY):
				r.t.Fatalf("rename %s over %s: %v", src, target, err)
			case err == nil:
				r.wt.must(os.RemoveAll(r.local(target)))
				r.wt.must(os.Rename(r.local(src), r.local(path.Join(ddir, name))))
			case errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.EISDIR), errors.Is(err, syscall.ENOTEMPTY):
			default:
				r.ok("rename "+src, err)
			}
		}
	case op < 96: // exchange
		all := append(slices.Clone(dirs[1:]), files...)
		if len(all) < 2 {
			return
		}
		a, b := r.pick(all), r.pick(all)
		if a == b || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/") {
			return
		}
		r.wt.must(w.Rename(r.wt.ino(path.Dir("/"+a)), path.Base(a), r.wt.ino(path.Dir("/"+b)), path.Base(b), fsdrivers.RenameExchange))
		tmp := filepath.Join(r.mirror, "..", "exchange-tmp")
		r.wt.must(os.Rename(r.local(a), tmp))
		r.wt.must(os.Rename(r.local(b), r.local(a)))
		r.wt.must(os.Rename(tmp, r.local(b)))
	default: // set the modification time
		p := r.pick(files)
		mt := time.Date(1990+r.rnd.IntN(100), time.Month(1+r.rnd.IntN(12)), 1+r.rnd.IntN(28), r.rnd.IntN(24), r.rnd.IntN(60), 2*r.rnd.IntN(30), 0, time.UTC)
		_, err := w.Setattr(r.wt.ino(p), fsdrivers.SetAttr{Mtime: &mt})
		r.wt.must(err)
		r.wt.must(os.Chtimes(r.local(p), mt, mt))
	}
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
