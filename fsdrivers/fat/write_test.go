package fat

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dimg-project/dimg/fsdrivers"
)

// The writer's tests: volumes made by mkfs.fat, edited through the
// WritableFS, then judged by fsck.fat -n and read back with mtools (names
// long and short, sizes, contents, times) and with our own reader.

// wvariant is one volume layout the writer is tested on.
type wvariant struct {
	name    string
	bits    int
	sizeMiB int
	sector  int // logical sector size, 0: mkfs default (512)
	spc     int // sectors per cluster, 0: mkfs default
	rootEnt int // FAT12/16 root entries, 0: mkfs default
	// cachePages, when set, bounds the writer's clean FAT pages (tests of
	// eviction).
	cachePages int
}

var wvariants = []wvariant{
	{name: "fat12", bits: 12, sizeMiB: 4},
	{name: "fat12-4k", bits: 12, sizeMiB: 8, sector: 4096, spc: 1},
	{name: "fat16-2k", bits: 16, sizeMiB: 24, spc: 4},
	{name: "fat16-4k-sectors", bits: 16, sizeMiB: 48, sector: 4096, spc: 1},
	{name: "fat32", bits: 32, sizeMiB: 40, spc: 1},
	{name: "fat32-4k-sectors", bits: 32, sizeMiB: 300, sector: 4096, spc: 1},
}

// mkfsImage formats a new image file for v and returns its path.
func mkfsImage(t testing.TB, v wvariant, extra ...string) string {
	t.Helper()
	needTools(t, "mkfs.fat", "fsck.fat", "mdir", "mcopy", "mdel")
	img := filepath.Join(t.TempDir(), v.name+".img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(v.sizeMiB) << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	args := []string{"-F", fmt.Sprint(v.bits), "-i", "2468ACE0", "-n", "WLABEL"}
	if v.sector != 0 {
		args = append(args, "-S", fmt.Sprint(v.sector))
	}
	if v.spc != 0 {
		args = append(args, "-s", fmt.Sprint(v.spc))
	}
	if v.rootEnt != 0 {
		args = append(args, "-r", fmt.Sprint(v.rootEnt))
	}
	args = append(args, extra...)
	mustTool(t, "mkfs.fat", append(args, img)...)
	return img
}

// wopen opens img for writing with a fake clock that advances 2 s per
// reading, so times are deterministic.
type wtest struct {
	t     testing.TB
	img   string
	f     *os.File
	w     *wfs
	clock time.Time
}

var wbase = time.Date(2024, 2, 29, 13, 14, 16, 0, time.UTC)

func wopen(t testing.TB, img string) *wtest {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	fsys, err := Driver{}.OpenWritable(f, st.Size())
	if err != nil {
		f.Close()
		t.Fatalf("OpenWritable: %v", err)
	}
	wt := &wtest{t: t, img: img, f: f, w: fsys.(*wfs), clock: wbase}
	wt.w.now = func() time.Time { return wt.clock }
	t.Cleanup(func() { wt.f.Close() })
	return wt
}

func (wt *wtest) tick() time.Time {
	wt.clock = wt.clock.Add(2 * time.Second)
	return wt.clock
}

// close closes the filesystem and the file, then requires fsck.fat -n clean.
func (wt *wtest) close() {
	wt.t.Helper()
	if err := wt.w.Close(); err != nil {
		wt.t.Fatalf("Close: %v", err)
	}
	wt.f.Close()
	fsckClean(wt.t, wt.img)
}

func (wt *wtest) must(err error) {
	wt.t.Helper()
	if err != nil {
		wt.t.Fatal(err)
	}
}

// path resolves a slash path to a node number.
func (wt *wtest) ino(p string) uint64 {
	wt.t.Helper()
	ino := wt.w.Root()
	if p == "" || p == "/" {
		return ino
	}
	for _, el := range strings.Split(strings.Trim(p, "/"), "/") {
		a, err := wt.w.Lookup(ino, el)
		if err != nil {
			wt.t.Fatalf("lookup %s: %v", p, err)
		}
		ino = a.Ino
	}
	return ino
}

func (wt *wtest) create(dir, name string, data []byte) uint64 {
	wt.t.Helper()
	wt.tick()
	a, err := wt.w.Create(wt.ino(dir), name, fsdrivers.ModeFile|0o644, 0, fsdrivers.Owner{})
	if err != nil {
		wt.t.Fatalf("create %s/%s: %v", dir, name, err)
	}
	if len(data) > 0 {
		if n, err := wt.w.WriteAt(a.Ino, data, 0); err != nil || n != len(data) {
			wt.t.Fatalf("write %s/%s: %d, %v", dir, name, n, err)
		}
	}
	return a.Ino
}

func (wt *wtest) mkdir(dir, name string) uint64 {
	wt.t.Helper()
	wt.tick()
	a, err := wt.w.Mkdir(wt.ino(dir), name, 0o755, fsdrivers.Owner{})
	if err != nil {
		wt.t.Fatalf("mkdir %s/%s: %v", dir, name, err)
	}
	return a.Ino
}

// mdirShort lists directory dir of img with mdir and returns, per listed
// long name (or short name when there is none), the short name as
// "BASE.EXT" (mdir prints "BASE     EXT").
var mdirLine = regexp.MustCompile(`^(\S.{7}) (.{3})\s+(<DIR>|\d+)\s+\S+\s+\S+\s?(.*)$`)

func mdirShort(t testing.TB, img, dir string) map[string]string {
	t.Helper()
	out := mustTool(t, "mdir", "-a", "-i", img, "::"+dir)
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		l := mdirLine.FindStringSubmatch(sc.Text())
		if l == nil {
			continue
		}
		base, ext := strings.TrimRight(l[1], " "), strings.TrimRight(l[2], " ")
		if base == "." || base == ".." {
			continue
		}
		short := base
		if ext != "" {
			short += "." + ext
		}
		long := strings.TrimSpace(l[4])
		if long == "" {
			long = short
		}
		m[long] = short
	}
	return m
}

// extract copies the whole volume out with mcopy (times kept) and returns
// the directory.
func extract(t testing.TB, img string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if len(mdirPaths(t, img)) > 0 {
		mustTool(t, "mcopy", "-s", "-m", "-n", "-i", img, "::/*", out)
	}
	return out
}

func TestShortNameAliases(t *testing.T) {
	taken := map[string]bool{}
	isTaken := func(raw [11]byte) bool { return taken[string(raw[:])] }
	for _, c := range []struct {
		long, raw string
		nt        byte
		lfn       bool
	}{
		{"README.TXT", "README  TXT", 0, false},
		{"readme.txt", "README  TXT", ntLowerBase | ntLowerExt, false},
		{"mixed.TXT", "MIXED   TXT", ntLowerBase, false},
		{"Makefile", "MAKEFILE   ", 0, true},
		{"ReadMe.md", "README  MD ", 0, true},
		{"Long File Name.txt", "LONGFI~1TXT", 0, true},
		{".bashrc", "BASHRC~1   ", 0, true},
		{"a+b.txt", "A_B~1   TXT", 0, true},
		{"a..b", "A~1     B  ", 0, true},
		{"foo bar", "FOOBAR~1   ", 0, true},
		{"x.tar.gz", "XTAR~1  GZ ", 0, true},
		{"abcdefghij", "ABCDEF~1   ", 0, true},
		{"README.TXT2", "README~1TXT", 0, true},
		{"Überfile.txt", "\x9aBERFILETXT", 0, true},
		{"日本語.txt", "___~1   TXT", 0, true},
		{"123.txt", "123     TXT", ntLowerExt, false},
	} {
		p, ok := makeShort(c.long, isTaken, nil)
		if !ok || string(p.raw[:]) != c.raw || p.nt != c.nt || p.needs != c.lfn {
			t.Errorf("%q: got %q nt %#x lfn %v ok %v, want %q nt %#x lfn %v", c.long, p.raw, p.nt, p.needs, ok, c.raw, c.nt, c.lfn)
		}
	}
	// Numeric tails count up past 9, the base shrinking to fit.
	for i := 1; i <= 12; i++ {
		p, _ := makeShort("Long File Name.txt", isTaken, nil)
		taken[string(p.raw[:])] = true
		want := fmt.Sprintf("LONGFI~%d", i)
		if i >= 10 {
			want = fmt.Sprintf("LONGF~%d", i)
		}
		if got := strings.TrimRight(string(p.raw[:8]), " "); got != want {
			t.Errorf("alias %d: %q, want %q", i, got, want)
		}
	}
	if _, ok := cleanName("a<b"); ok {
		t.Error("cleanName accepted '<'")
	}
	if n, ok := cleanName("trailing..."); !ok || n != "trailing" {
		t.Errorf("cleanName(trailing...) = %q, %v", n, ok)
	}
}

// TestAliasesLikeMtools makes the same names with mcopy in one volume and
// with the writer in another: every short alias must be the same.
func TestAliasesLikeMtools(t *testing.T) {
	v := wvariant{name: "alias", bits: 16, sizeMiB: 16}
	names := []string{"Long File Name.txt", "Long File Name 2.txt", "Long File Name 3.txt", ".bashrc",
		"readme.txt", "ReadMe.md", "a+b.txt", "a..b", "foo bar", "README.TXT2", "x.tar.gz",
		"abcdefghij", "Überfile.txt", "mixed.TXT", "UPPER.TXT", "My Documents", "Program Files",
		"program files (x86)", "abc def.jpeg", "a.b.c.d", "-dash-", "nospace12345.doc"}
	src := t.TempDir()
	ref := mkfsImage(t, v)
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(src, n), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
		mustTool(t, "mcopy", "-i", ref, filepath.Join(src, n), "::/"+n)
	}
	// A freed alias is found again: both sides delete the first name and
	// add another with its basis.
	mustTool(t, "mdel", "-i", ref, "::/"+names[0])
	later := "Long File Name 9.txt"
	if err := os.WriteFile(filepath.Join(src, later), []byte(later), 0o644); err != nil {
		t.Fatal(err)
	}
	mustTool(t, "mcopy", "-i", ref, filepath.Join(src, later), "::/"+later)
	img := mkfsImage(t, v)
	wt := wopen(t, img)
	for _, n := range names {
		wt.create("/", n, []byte(n))
	}
	wt.must(wt.w.Unlink(wt.w.Root(), names[0]))
	wt.create("/", later, []byte(later))
	names = append(names[1:], later)
	wt.close()
	want, got := mdirShort(t, ref, "/"), mdirShort(t, img, "/")
	if len(want) != len(names) {
		t.Fatalf("mtools listing has %d names, want %d: %v", len(want), len(names), want)
	}
	for _, n := range names {
		if got[n] != want[n] {
			t.Errorf("%q: alias %q, mtools makes %q", n, got[n], want[n])
		}
	}
}

// TestWriteScenario runs the named operations on every layout and checks
// the result with fsck.fat, mtools and the reader.
func TestWriteScenario(t *testing.T) {
	for _, v := range wvariants {
		t.Run(v.name, func(t *testing.T) {
			img := mkfsImage(t, v)
			wt := wopen(t, img)
			w := wt.w
			mirror := t.TempDir()
			put := func(p string, data []byte) {
				writeFile(t, mirror, p, data, wt.clock)
			}
			cs := w.g.clusterSize

			// Names of every kind, at the root.
			for _, n := range []string{"Long File Name.txt", "readme.txt", "ReadMe.md", ".bashrc", "Überfile.txt", "日本語 ファイル.txt", "emoji \U0001F600.txt"} {
				wt.create("/", n, []byte("content of "+n))
				put(n, []byte("content of "+n))
			}
			// An empty file: first cluster 0.
			ino := wt.create("/", "empty", nil)
			put("empty", nil)
			if n := w.nodes[ino]; w.first(n) != 0 {
				t.Errorf("empty file has first cluster %d", w.first(n))
			}
			// A deep tree and a big file crossing many clusters.
			p := ""
			for i := range 12 {
				p += fmt.Sprintf("/level %02d", i)
				wt.mkdir(filepath.Dir(p), filepath.Base(p))
				wt.must(os.MkdirAll(filepath.Join(mirror, p), 0o755))
			}
			big := bytes.Repeat([]byte("0123456789abcdef"), int(40*cs/16)+5)
			wt.create(p, "big.bin", big)
			put(p[1:]+"/big.bin", big)
			// Many files in one directory: past one cluster.
			wt.mkdir("/", "many")
			for i := range 150 {
				n := fmt.Sprintf("a file with a long name %03d.data", i)
				wt.create("/many", n, []byte(n))
				put("many/"+n, []byte(n))
			}
			if a, _ := w.Getattr(wt.ino("/many")); a.Size <= cs {
				t.Errorf("directory of 150 long names is %d bytes, want > one cluster", a.Size)
			}
			// Delete some (with their long-name entries), then reuse the slots.
			for i := 0; i < 150; i += 3 {
				n := fmt.Sprintf("a file with a long name %03d.data", i)
				wt.must(w.Unlink(wt.ino("/many"), n))
				wt.must(os.Remove(filepath.Join(mirror, "many", n)))
			}
			for i := range 20 {
				n := fmt.Sprintf("reused %d", i)
				wt.create("/many", n, nil)
				put("many/"+n, nil)
			}
			// Rename across directories, a directory too ('..' must follow).
			wt.must(w.Rename(wt.ino("/"), "readme.txt", wt.ino("/level 00/level 01"), "Moved Readme.txt", 0))
			wt.must(os.Rename(filepath.Join(mirror, "readme.txt"), filepath.Join(mirror, "level 00/level 01/Moved Readme.txt")))
			wt.must(w.Rename(wt.ino("/level 00/level 01"), "level 02", wt.ino("/"), "moved tree", 0))
			wt.must(os.Rename(filepath.Join(mirror, "level 00/level 01/level 02"), filepath.Join(mirror, "moved tree")))
			// Over an existing file; NOREPLACE refuses; EXCHANGE swaps.
			wt.create("/", "victim.txt", []byte("old"))
			wt.must(w.Rename(wt.ino("/"), "ReadMe.md", wt.ino("/"), "victim.txt", 0))
			wt.must(os.Rename(filepath.Join(mirror, "ReadMe.md"), filepath.Join(mirror, "victim.txt")))
			if err := w.Rename(wt.ino("/"), "victim.txt", wt.ino("/"), ".bashrc", fsdrivers.RenameNoReplace); !errors.Is(err, syscall.EEXIST) {
				t.Errorf("RENAME_NOREPLACE over a file: %v, want EEXIST", err)
			}
			wt.must(w.Rename(wt.ino("/"), "victim.txt", wt.ino("/moved tree"), "level 03", fsdrivers.RenameExchange))
			wt.must(os.Rename(filepath.Join(mirror, "victim.txt"), filepath.Join(mirror, "tmp")))
			wt.must(os.Rename(filepath.Join(mirror, "moved tree/level 03"), filepath.Join(mirror, "victim.txt")))
			wt.must(os.Rename(filepath.Join(mirror, "tmp"), filepath.Join(mirror, "moved tree/level 03")))
			if err := w.Rename(wt.ino("/"), "empty", wt.ino("/"), "empty", fsdrivers.RenameNoReplace); !errors.Is(err, syscall.EEXIST) {
				t.Errorf("RENAME_NOREPLACE onto itself: %v, want EEXIST as Linux", err)
			}
			wt.must(w.Rename(wt.ino("/"), "empty", wt.ino("/"), "empty", 0))
			// A case-only rename keeps the entry.
			wt.must(w.Rename(wt.ino("/"), "empty", wt.ino("/"), "EMPTY", 0))
			wt.must(os.Rename(filepath.Join(mirror, "empty"), filepath.Join(mirror, "EMPTY")))
			// Truncate up (zeros) and down (clusters freed).
			f := wt.ino("/Long File Name.txt")
			size := int64(3*cs + 7)
			wt.tick()
			_, err := w.Setattr(f, fsdrivers.SetAttr{Size: &size})
			wt.must(err)
			data := append([]byte("content of Long File Name.txt"), make([]byte, size-29)...)
			put("Long File Name.txt", data)
			free0, _ := w.Statfs()
			size = 5
			wt.tick()
			_, err = w.Setattr(f, fsdrivers.SetAttr{Size: &size})
			wt.must(err)
			put("Long File Name.txt", data[:5])
			if free1, _ := w.Statfs(); free1.BlocksFree != free0.BlocksFree+3 {
				t.Errorf("truncate down freed %d clusters, want 3", free1.BlocksFree-free0.BlocksFree)
			}
			// A write past the end leaves zeros between.
			wt.tick()
			_, err = w.WriteAt(f, []byte("tail"), cs+100)
			wt.must(err)
			data = append(append(data[:5:5], make([]byte, cs+95)...), "tail"...)
			put("Long File Name.txt", data)
			// Times set explicitly; read-only by mode.
			mt := time.Date(2001, 9, 9, 1, 46, 40, 0, time.UTC)
			ro := uint32(0o444)
			_, err = w.Setattr(wt.ino("/.bashrc"), fsdrivers.SetAttr{Mtime: &mt, Mode: &ro})
			wt.must(err)
			wt.must(os.Chtimes(filepath.Join(mirror, ".bashrc"), mt, mt))
			// Remove a file and an emptied directory.
			wt.must(w.Unlink(wt.ino("/"), "Überfile.txt"))
			wt.must(os.Remove(filepath.Join(mirror, "Überfile.txt")))
			wt.mkdir("/", "gone")
			wt.must(w.Rmdir(wt.ino("/"), "gone"))
			if err := w.Rmdir(wt.ino("/"), "many"); !errors.Is(err, syscall.ENOTEMPTY) {
				t.Errorf("rmdir of a full directory: %v", err)
			}

			// Errors as vfat gives them.
			if _, err := w.Create(wt.ino("/"), "fifo", fsdrivers.ModeFIFO|0o644, 0, fsdrivers.Owner{}); !errors.Is(err, syscall.EPERM) {
				t.Errorf("mkfifo: %v, want EPERM", err)
			}
			if _, err := w.Symlink(wt.ino("/"), "l", "x", fsdrivers.Owner{}); !errors.Is(err, syscall.EPERM) {
				t.Errorf("symlink: %v, want EPERM", err)
			}
			uid := uint32(1000)
			if _, err := w.Setattr(f, fsdrivers.SetAttr{Uid: &uid}); !errors.Is(err, syscall.EPERM) {
				t.Errorf("chown: %v, want EPERM", err)
			}
			if _, err := w.Create(wt.ino("/"), "LONG FILE NAME.TXT", fsdrivers.ModeFile, 0, fsdrivers.Owner{}); !errors.Is(err, syscall.EEXIST) {
				t.Errorf("create of a case variant: %v, want EEXIST", err)
			}
			if _, err := w.Create(wt.ino("/"), "a:b", fsdrivers.ModeFile, 0, fsdrivers.Owner{}); !errors.Is(err, syscall.EINVAL) {
				t.Errorf("create with ':': %v, want EINVAL", err)
			}
			if err := w.Rename(wt.ino("/"), "level 00", wt.ino("/level 00/level 01"), "x", 0); !errors.Is(err, syscall.EINVAL) {
				t.Errorf("rename into itself: %v, want EINVAL", err)
			}
			if err := w.SetXattr(f, "user.x", nil, 0); !errors.Is(err, syscall.EOPNOTSUPP) {
				t.Errorf("setxattr: %v", err)
			}
			wt.must(w.Sync())
			fsckClean(t, img) // clean after Sync, before Close
			wt.close()

			got := extract(t, img)
			// mtools prints characters outside the BMP as "_".
			wt.must(os.Rename(filepath.Join(mirror, "emoji \U0001F600.txt"), filepath.Join(mirror, "emoji __.txt")))
			compareTrees(t, snapshot(t, os.DirFS(got)), snapshot(t, os.DirFS(mirror)))
			wt.must(os.Rename(filepath.Join(mirror, "emoji __.txt"), filepath.Join(mirror, "emoji \U0001F600.txt")))
			// Our reader sees the same.
			rf, err := os.Open(img)
			wt.must(err)
			defer rf.Close()
			st, _ := rf.Stat()
			vol, err := Open(rf, st.Size())
			wt.must(err)
			compareTrees(t, snapshot(t, vol), snapshot(t, os.DirFS(mirror)))
			if vol.Label() != "WLABEL" {
				t.Errorf("label %q, want WLABEL kept", vol.Label())
			}
			// FAT16/32 entry 1 keeps its clean-shutdown bits in every copy.
			if v.bits != 12 {
				g := w.g
				mask := map[int]uint32{16: 0xC000, 32: 0x0C000000}[v.bits]
				for i := range g.numFATs {
					b := make([]byte, 8)
					_, err := rf.ReadAt(b, g.fatOffset+int64(i)*g.fatBytes)
					wt.must(err)
					if e1 := decodeEntry(b, entryByte(v.bits, 1), 1, v.bits); e1&mask != mask {
						t.Errorf("FAT %d entry 1 is %#x: dirty", i, e1)
					}
				}
			}
			shorts := mdirShort(t, img, "/")
			for long, short := range map[string]string{"Long File Name.txt": "LONGFI~1.TXT", ".bashrc": "BASHRC~1", "EMPTY": "EMPTY", "victim.txt": "victim.txt" /* no LFN, NT case flags */} {
				if shorts[long] != short {
					t.Errorf("%q: short %q, want %q (%v)", long, shorts[long], short, shorts)
				}
			}
			fi, err := vol.Stat("level 00/level 01/Moved Readme.txt")
			wt.must(err)
			st2 := fsdrivers.StatOf(fi)
			if want := wbase.Add(4 * time.Second); !st2.Btime.Equal(want) { // the second file made
				t.Errorf("creation time %v, want %v", st2.Btime, want)
			}
			if fi, err := vol.Stat(".bashrc"); err != nil || fi.Mode().Perm() != 0o444 {
				t.Errorf(".bashrc: mode %v, %v; want read-only", fi.Mode(), err)
			}
		})
	}
}

// TestRootFull fills the FAT12/16 fixed root: ENOSPC at its entry limit,
// the label entry kept, the volume still clean.
func TestRootFull(t *testing.T) {
	for _, v := range []wvariant{{name: "fat12", bits: 12, sizeMiB: 4, rootEnt: 32}, {name: "fat16", bits: 16, sizeMiB: 20, rootEnt: 64}} {
		t.Run(v.name, func(t *testing.T) {
			img := mkfsImage(t, v)
			wt := wopen(t, img)
			made := 0
			for i := 0; ; i++ {
				_, err := wt.w.Create(wt.w.Root(), fmt.Sprintf("F%d.TXT", i), fsdrivers.ModeFile|0o644, 0, fsdrivers.Owner{})
				if errors.Is(err, syscall.ENOSPC) {
					break
				}
				wt.must(err)
				made++
			}
			if made != v.rootEnt-1 { // one entry holds the label
				t.Errorf("made %d files in a root of %d entries with a label", made, v.rootEnt)
			}
			// A long name needs several entries: also ENOSPC after a delete of one.
			wt.must(wt.w.Unlink(wt.w.Root(), "F0.TXT"))
			if _, err := wt.w.Create(wt.w.Root(), "a long name that needs three entries", fsdrivers.ModeFile, 0, fsdrivers.Owner{}); !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("long name in a root with one free entry: %v", err)
			}
			if _, err := wt.w.Mkdir(wt.w.Root(), "D", 0o755, fsdrivers.Owner{}); err != nil {
				t.Errorf("mkdir in the last root entry: %v", err)
			}
			if wt.w.Label() != "WLABEL" {
				t.Errorf("label %q", wt.w.Label())
			}
			wt.close()
			if n := len(mdirPaths(t, img)); n != made {
				t.Errorf("mdir lists %d entries, want %d", n, made)
			}
		})
	}
}

// TestFullVolume writes until ENOSPC: the volume is still clean, FSInfo's
// free count right (fsck checks it), and deleting frees everything.
func TestFullVolume(t *testing.T) {
	for _, v := range []wvariant{{name: "fat12", bits: 12, sizeMiB: 2}, {name: "fat32", bits: 32, sizeMiB: 34, spc: 1}} {
		t.Run(v.name, func(t *testing.T) {
			img := mkfsImage(t, v)
			wt := wopen(t, img)
			w := wt.w
			st0, _ := w.Statfs()
			a := wt.create("/", "filler.bin", nil)
			chunk := bytes.Repeat([]byte{0xA5}, 1<<20)
			var off int64
			for {
				n, err := w.WriteAt(a, chunk, off)
				if errors.Is(err, syscall.ENOSPC) {
					break
				}
				wt.must(err)
				off += int64(n)
			}
			// The last partial chunk: fill cluster by cluster.
			cs := w.g.clusterSize
			for {
				_, err := w.WriteAt(a, chunk[:cs], off)
				if errors.Is(err, syscall.ENOSPC) {
					break
				}
				wt.must(err)
				off += cs
			}
			if st, _ := w.Statfs(); st.BlocksFree != 0 {
				t.Errorf("after ENOSPC %d clusters free", st.BlocksFree)
			}
			if _, err := w.Mkdir(w.Root(), "nospace", 0o755, fsdrivers.Owner{}); !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("mkdir on a full volume: %v", err)
			}
			wt.must(w.Sync())
			fsckClean(t, img)
			wt.must(w.Unlink(w.Root(), "filler.bin"))
			if st, _ := w.Statfs(); st.BlocksFree != st0.BlocksFree {
				t.Errorf("after unlink %d clusters free, want %d", st.BlocksFree, st0.BlocksFree)
			}
			wt.close()
		})
	}
}

// TestHeldUnlink: a file unlinked while held stays readable and writable;
// a Sync meanwhile leaves a clean volume; its clusters come back at Release.
func TestHeldUnlink(t *testing.T) {
	img := mkfsImage(t, wvariant{name: "fat32", bits: 32, sizeMiB: 34, spc: 1})
	wt := wopen(t, img)
	w := wt.w
	st0, _ := w.Statfs()
	data := bytes.Repeat([]byte("held"), 5000)
	ino := wt.create("/", "held file.bin", data)
	w.Hold(ino)
	wt.must(w.Unlink(w.Root(), "held file.bin"))
	if _, err := w.Lookup(w.Root(), "held file.bin"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("lookup after unlink: %v", err)
	}
	if _, err := w.WriteAt(ino, []byte("more"), int64(len(data))); err != nil {
		t.Errorf("write to held unlinked file: %v", err)
	}
	wt.must(w.Sync())
	fsckClean(t, img)
	buf := make([]byte, len(data)+4)
	if n, err := w.ReadAt(ino, buf, 0); n != len(buf) || (err != nil && err != io.EOF) || !bytes.Equal(buf, append(data, "more"...)) {
		t.Errorf("read of held unlinked file: %d, %v", n, err)
	}
	if st, _ := w.Statfs(); st.BlocksFree >= st0.BlocksFree {
		t.Errorf("held file's clusters counted free before Release")
	}
	w.Release(ino)
	if st, _ := w.Statfs(); st.BlocksFree != st0.BlocksFree {
		t.Errorf("after Release %d free, want %d", st.BlocksFree, st0.BlocksFree)
	}
	if _, err := w.Getattr(ino); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("getattr after last release: %v", err)
	}
	wt.close()
}

// TestRefuseDamaged: FAT copies that disagree are refused with ErrReadOnly.
func TestRefuseDamaged(t *testing.T) {
	img := mkfsImage(t, wvariant{name: "fat16", bits: 16, sizeMiB: 20})
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	g, err := readBootSector(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	// Cluster 10 allocated in the second FAT only.
	if _, err := f.WriteAt([]byte{0xFF, 0xFF}, g.fatOffset+g.fatBytes+20); err != nil {
		t.Fatal(err)
	}
	_, err = Driver{}.OpenWritable(f, st.Size())
	if !errors.Is(err, fsdrivers.ErrReadOnly) || !strings.Contains(err.Error(), "disagree") {
		t.Errorf("OpenWritable of a volume whose FATs disagree: %v", err)
	}
	if _, err := Open(f, st.Size()); err != nil {
		t.Errorf("reading must keep working: %v", err)
	}
}

// TestRefuseDirty: a volume marked as not cleanly unmounted (boot sector
// state bit, FAT entry 1 bits) is refused, as fsck.fat -n flags it.
func TestRefuseDirty(t *testing.T) {
	for _, c := range []struct {
		name string
		v    wvariant
		off  func(g *geometry) int64
		b    []byte
	}{
		{"fat16-boot", wvariant{name: "f", bits: 16, sizeMiB: 20}, func(*geometry) int64 { return 37 }, []byte{0x01}},
		{"fat32-boot", wvariant{name: "f", bits: 32, sizeMiB: 34, spc: 1}, func(*geometry) int64 { return 65 }, []byte{0x01}},
		{"fat16-entry1", wvariant{name: "f", bits: 16, sizeMiB: 20}, func(g *geometry) int64 { return g.fatOffset + 2 }, []byte{0xFF, 0x7F}},
		{"fat32-entry1", wvariant{name: "f", bits: 32, sizeMiB: 34, spc: 1}, func(g *geometry) int64 { return g.fatOffset + 4 }, []byte{0xFF, 0xFF, 0xFF, 0x07}},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := mkfsImage(t, c.v)
			f, err := os.OpenFile(img, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			st, _ := f.Stat()
			g, err := readBootSector(f, st.Size())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := (Driver{}).OpenWritable(f, st.Size()); err != nil {
				t.Fatalf("clean volume refused: %v", err)
			}
			if _, err := f.WriteAt(c.b, c.off(g)); err != nil {
				t.Fatal(err)
			}
			if _, err := (Driver{}).OpenWritable(f, st.Size()); !errors.Is(err, fsdrivers.ErrReadOnly) || !strings.Contains(err.Error(), "dirty") {
				t.Errorf("OpenWritable of a dirty volume: %v", err)
			}
		})
	}
}

// TestDirLimit grows one directory to FAT's 65,536 entries: the next entry
// is ENOSPC, every name listed, and many long names sharing a basis get
// distinct aliases.
func TestDirLimit(t *testing.T) {
	img := mkfsImage(t, wvariant{name: "fat16", bits: 16, sizeMiB: 24, spc: 1})
	wt := wopen(t, img)
	w := wt.w
	d := wt.mkdir("/", "full")
	for i := range 300 {
		if _, err := w.Create(d, fmt.Sprintf("Long File Name %d.txt", i), fsdrivers.ModeFile, 0, fsdrivers.Owner{}); err != nil {
			t.Fatal(err)
		}
	}
	made := 300
	for i := 0; ; i++ {
		_, err := w.Create(d, fmt.Sprintf("F%07d", i), fsdrivers.ModeFile, 0, fsdrivers.Owner{})
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		wt.must(err)
		made++
	}
	ents, err := w.ReadDir(d)
	wt.must(err)
	if len(ents) != made {
		t.Errorf("ReadDir lists %d, made %d", len(ents), made)
	}
	if a, _ := w.Getattr(d); a.Size != maxDirBytes {
		t.Errorf("full directory is %d bytes, want %d", a.Size, maxDirBytes)
	}
	wt.must(w.Close())
	// fsck.fat compares every pair of names in a directory: too slow for
	// 65,536 entries; mtools reads it, and so does the reader.
	shorts := mdirShort(t, img, "/full")
	if len(shorts) != made {
		t.Errorf("mdir lists %d names, want %d", len(shorts), made)
	}
	seen := map[string]bool{}
	for long, short := range shorts {
		if seen[short] {
			t.Errorf("alias %q used twice (%q)", short, long)
		}
		seen[short] = true
	}
	if shorts["Long File Name 299.txt"] == "" {
		t.Errorf("long name missing from mdir")
	}
}

// TestNoEditNoWrite: opening, reading and closing without a change leaves
// every byte as it was (an edit that is refused later changes nothing).
func TestNoEditNoWrite(t *testing.T) {
	for _, v := range []wvariant{{name: "fat12", bits: 12, sizeMiB: 4}, {name: "fat32", bits: 32, sizeMiB: 34, spc: 1}} {
		t.Run(v.name, func(t *testing.T) {
			img := mkfsImage(t, v)
			wt := wopen(t, img)
			wt.create("/", "x.txt", []byte("x"))
			wt.close()
			before, err := os.ReadFile(img)
			wt.must(err)
			wt = wopen(t, img)
			if _, err := wt.w.ReadDir(wt.w.Root()); err != nil {
				t.Fatal(err)
			}
			// An entry present at open has the number the reader gives it.
			vol, err := Open(wt.f, int64(v.sizeMiB)<<20)
			wt.must(err)
			fi, err := vol.Stat("x.txt")
			wt.must(err)
			if a, err := wt.w.Lookup(wt.w.Root(), "x.txt"); err != nil || a.Ino != fsdrivers.StatOf(fi).Ino {
				t.Errorf("node %d (%v), reader says %d", a.Ino, err, fsdrivers.StatOf(fi).Ino)
			}
			if _, err := wt.w.Create(wt.w.Root(), "X.TXT", fsdrivers.ModeFile, 0, fsdrivers.Owner{}); !errors.Is(err, syscall.EEXIST) {
				t.Errorf("create over x.txt: %v", err)
			}
			wt.must(wt.w.Sync())
			wt.close()
			after, err := os.ReadFile(img)
			wt.must(err)
			if !bytes.Equal(before, after) {
				t.Error("a session without changes wrote to the volume")
			}
		})
	}
}

// TestWriteConcurrent: goroutines editing their own directories, one more
// listing and syncing, leave a clean volume with every file's content
// (run it with -race).
func TestWriteConcurrent(t *testing.T) {
	img := mkfsImage(t, wvariant{name: "fat32", bits: 32, sizeMiB: 34, spc: 1})
	wt := wopen(t, img)
	w := wt.w
	const workers, files = 4, 40
	dirs := make([]uint64, workers)
	for i := range dirs {
		dirs[i] = wt.mkdir("/", fmt.Sprintf("worker %d", i))
	}
	errs := make(chan error, workers+1)
	stop := make(chan struct{})
	for i := range workers {
		go func() {
			errs <- func() error {
				for j := range files {
					name := fmt.Sprintf("file number %d.bin", j)
					a, err := w.Create(dirs[i], name, fsdrivers.ModeFile|0o644, 0, fsdrivers.Owner{})
					if err != nil {
						return err
					}
					data := bytes.Repeat([]byte{byte(i), byte(j)}, 700*(j%5+1))
					if _, err := w.WriteAt(a.Ino, data, 0); err != nil {
						return err
					}
					got := make([]byte, len(data))
					if _, err := w.ReadAt(a.Ino, got, 0); err != nil && err != io.EOF {
						return err
					}
					if !bytes.Equal(got, data) {
						return fmt.Errorf("worker %d file %d reads back wrong", i, j)
					}
					if j%4 == 0 {
						if err := w.Rename(dirs[i], name, dirs[(i+1)%workers], fmt.Sprintf("moved %d-%d", i, j), 0); err != nil {
							return err
						}
					}
				}
				return nil
			}()
		}()
	}
	go func() {
		errs <- func() error {
			for {
				select {
				case <-stop:
					return nil
				default:
				}
				if _, err := w.ReadDir(w.Root()); err != nil {
					return err
				}
				if _, err := w.Statfs(); err != nil {
					return err
				}
				if err := w.Sync(); err != nil {
					return err
				}
			}
		}()
	}()
	for range workers {
		select {
		case err := <-errs:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("workers did not finish in 60 s")
		}
	}
	close(stop)
	if err := <-errs; err != nil {
		t.Error(err)
	}
	wt.close()
	if n := len(mdirPaths(t, img)); n != workers*(files+1) {
		t.Errorf("mdir lists %d paths, want %d", n, workers*(files+1))
	}
}
