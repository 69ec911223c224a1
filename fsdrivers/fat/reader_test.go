package fat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/dimg-project/dimg/fsdrivers"
)

func openSynth(t *testing.T, s *synth) *Volume {
	t.Helper()
	v, err := Open(bytes.NewReader(s.img), int64(len(s.img)))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return v
}

// walkNodes calls fn for every node of a synthetic tree with its path.
func walkNodes(dir string, nodes []*snode, fn func(p string, n *snode)) {
	for _, n := range nodes {
		p := path.Join(dir, n.name)
		fn(p, n)
		walkNodes(p, n.children, fn)
	}
}

// synthVariants runs fn on the FAT12 and the FAT32-layout synthetic image.
func synthVariants(t *testing.T, fn func(t *testing.T, fat32 bool)) {
	for _, fat32 := range []bool{false, true} {
		name := "fat12"
		if fat32 {
			name = "fat32"
		}
		t.Run(name, func(t *testing.T) { fn(t, fat32) })
	}
}

func TestSynthRead(t *testing.T) { synthVariants(t, testSynthRead) }

func testSynthRead(t *testing.T, fat32 bool) {
	tree := synthTree()
	s := buildSynthFAT(t, 2048, fat32, tree)
	v := openSynth(t, s)

	want := "fat12"
	if fat32 {
		want = "fat32"
	}
	if got := v.Type(); got != want {
		t.Errorf("Type = %q, want %q", got, want)
	}
	if got, want := v.UUID(), "DEAD-BEEF"; got != want {
		t.Errorf("UUID = %q, want %q", got, want)
	}
	if got, want := v.Label(), "SYNTH VOL"; got != want {
		t.Errorf("Label = %q, want %q (the root entry wins over the boot sector's)", got, want)
	}

	wantBtime := time.Date(2021, 6, 15, 12, 34, 57, 500e6, time.UTC)
	wantAtime := time.Date(2021, 6, 15, 0, 0, 0, 0, time.UTC)
	walkNodes("", tree, func(p string, n *snode) {
		fi, err := v.Stat(p)
		if err != nil {
			t.Errorf("Stat(%q): %v", p, err)
			return
		}
		if fi.Name() != n.name {
			t.Errorf("%s: Name = %q", p, fi.Name())
		}
		if fi.IsDir() != n.dir {
			t.Errorf("%s: IsDir = %v", p, fi.IsDir())
		}
		wantMode := fs.FileMode(0o644)
		switch {
		case n.dir:
			wantMode = fs.ModeDir | 0o755
		case n.readOnly:
			wantMode = 0o444
		}
		if fi.Mode() != wantMode {
			t.Errorf("%s: Mode = %v, want %v", p, fi.Mode(), wantMode)
		}
		if !fi.ModTime().Equal(synthTime) {
			t.Errorf("%s: ModTime = %v, want %v", p, fi.ModTime(), synthTime)
		}
		st := fi.Sys().(*fsdrivers.Stat)
		if st.Ino != uint64(s.info[p].entryOff) || st.Nlink != 1 {
			t.Errorf("%s: Ino %d Nlink %d, want Ino %d Nlink 1", p, st.Ino, st.Nlink, s.info[p].entryOff)
		}
		if !st.Btime.Equal(wantBtime) || !st.Atime.Equal(wantAtime) || !st.Mtime.Equal(synthTime) {
			t.Errorf("%s: times b=%v a=%v m=%v", p, st.Btime, st.Atime, st.Mtime)
		}
		if n.dir {
			if want := int64(len(s.info[p].clusters)) * 512; fi.Size() != want {
				t.Errorf("%s: dir Size = %d, want %d", p, fi.Size(), want)
			}
			return
		}
		if fi.Size() != int64(len(n.data)) {
			t.Errorf("%s: Size = %d, want %d", p, fi.Size(), len(n.data))
		}
		if want := int64(len(s.info[p].clusters)); st.Blocks != want {
			t.Errorf("%s: Blocks = %d, want %d", p, st.Blocks, want)
		}
		got, err := fs.ReadFile(v, p)
		if err != nil {
			t.Errorf("ReadFile(%q): %v", p, err)
		} else if !bytes.Equal(got, n.data) {
			t.Errorf("%s: content differs", p)
		}
	})

	// Root listing: sorted, no label, no dot entries.
	ents, err := v.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	var wantNames []string
	for _, n := range tree {
		wantNames = append(wantNames, n.name)
	}
	slices.Sort(wantNames)
	if !slices.Equal(names, wantNames) {
		t.Errorf("ReadDir(.) = %q, want %q", names, wantNames)
	}
	root, err := v.Stat(".")
	if err != nil || !root.IsDir() || root.Sys().(*fsdrivers.Stat).Ino != 1 {
		t.Errorf("Stat(.) = %v, %v", root, err)
	}
}

func TestSynthLookup(t *testing.T) { synthVariants(t, testSynthLookup) }

func testSynthLookup(t *testing.T, fat32 bool) {
	s := buildSynthFAT(t, 2048, fat32, synthTree())
	v := openSynth(t, s)
	for _, tc := range []struct {
		path, want string // want: the stored name, "" for not found
	}{
		{"HELLO.TXT", "hello.txt"},
		{"SUB/Inner File.TXT", "inner file.txt"},
		{"sub/DEEPER/leaf.BIN", "leaf.bin"},
		{"N0000001", "hello.txt"}, // the 8.3 alias
		{"README.TXT", "readme.txt"},
		{"ÉMOJI 😀 AND 日本.TXT", "émoji 😀 and 日本.txt"},
		{"nope", ""},
		{"hello.txt/x", ""},
		{"sub/nope/x", ""},
	} {
		fi, err := v.Stat(tc.path)
		if tc.want == "" {
			if !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Stat(%q) = %v, want ErrNotExist", tc.path, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Stat(%q): %v", tc.path, err)
			continue
		}
		if !strings.EqualFold(fi.Name(), tc.want) {
			t.Errorf("Stat(%q).Name() = %q, want %q", tc.path, fi.Name(), tc.want)
		}
	}
	for _, bad := range []string{"/hello.txt", "sub/", "./sub", "sub/../hello.txt", ""} {
		if _, err := v.Open(bad); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("Open(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestSynthFSInterfaces(t *testing.T) { synthVariants(t, testSynthFSInterfaces) }

func testSynthFSInterfaces(t *testing.T, fat32 bool) {
	s := buildSynthFAT(t, 2048, fat32, synthTree())
	v := openSynth(t, s)
	if err := fstest.TestFS(v, "hello.txt", "sub/deeper/leaf.bin", "empty", "emptydir"); err != nil {
		t.Fatal(err)
	}
	// No symlinks and no xattrs: the capabilities are absent, not stubbed.
	var fsys fsdrivers.Filesystem = v
	if _, ok := fsys.(fs.ReadLinkFS); ok {
		t.Error("FAT volume implements fs.ReadLinkFS")
	}
	if _, ok := fsys.(fsdrivers.XattrFS); ok {
		t.Error("FAT volume implements fsdrivers.XattrFS")
	}
	if _, err := fs.ReadLink(v, "hello.txt"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("fs.ReadLink = %v, want ErrInvalid", err)
	}
	if _, err := v.ReadDir("hello.txt"); err == nil {
		t.Error("ReadDir of a file succeeded")
	}
	lfi, err := v.Lstat("sub/deeper")
	if err != nil || !lfi.IsDir() {
		t.Errorf("Lstat = %v, %v", lfi, err)
	}

	// ReadAt, Seek, concurrency and closed-file behaviour.
	f, err := v.Open("frag.bin")
	if err != nil {
		t.Fatal(err)
	}
	ff := f.(*file)
	if len(ff.ch.runs) != 6 {
		t.Errorf("fragmented file has %d runs, want 6", len(ff.ch.runs))
	}
	want := pattern(3, 5*512+17)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for off := g; off < len(want); off += 97 {
				buf := make([]byte, 700)
				n, err := ff.ReadAt(buf, int64(off))
				wantN := min(700, len(want)-off)
				if n != wantN || (n < 700) != (err == io.EOF) || (err != nil && err != io.EOF) {
					t.Errorf("ReadAt(%d) = %d, %v", off, n, err)
					return
				}
				if !bytes.Equal(buf[:n], want[off:off+n]) {
					t.Errorf("ReadAt(%d): wrong bytes", off)
					return
				}
			}
		})
	}
	wg.Wait()
	if pos, err := ff.Seek(-17, io.SeekEnd); err != nil || pos != int64(len(want)-17) {
		t.Errorf("Seek = %d, %v", pos, err)
	}
	tail, err := io.ReadAll(ff)
	if err != nil || !bytes.Equal(tail, want[len(want)-17:]) {
		t.Errorf("read after Seek = %d bytes, %v", len(tail), err)
	}
	if n, err := ff.ReadAt(make([]byte, 4), int64(len(want))); n != 0 || err != io.EOF {
		t.Errorf("ReadAt(size) = %d, %v", n, err)
	}
	if _, err := ff.ReadAt(make([]byte, 4), -1); err == nil {
		t.Error("ReadAt(-1) succeeded")
	}
	f.Close()
	if _, err := ff.ReadAt(make([]byte, 4), 0); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("ReadAt after Close = %v", err)
	}
}

// TestSynthDirEntries checks the directory parser's rules on hand-made
// entries: deleted entries, broken long-name sequences, 0x05, the end marker.
func TestSynthDirEntries(t *testing.T) {
	e := func(b []byte, mut func([]byte)) []byte { c := bytes.Clone(b); mut(c); return c }
	good := lfnEntries("Long Name.txt", shortSum([]byte("LONGNA~1TXT")))
	short := shortEntry("LONGNA~1TXT", 0x20, 0, 0, 0)
	cases := []struct {
		name    string
		entries [][]byte
		want    []string
	}{
		{"lfn", append(slices.Clone(good), short), []string{"Long Name.txt"}},
		{"bad checksum", append([][]byte{e(good[0], func(b []byte) { b[13]++ })}, short), []string{"LONGNA~1.TXT"}},
		{"lfn without last flag", append([][]byte{e(good[0], func(b []byte) { b[0] &^= 0x40 })}, short), []string{"LONGNA~1.TXT"}},
		{"deleted between", [][]byte{good[0], e(short, func(b []byte) { b[0] = 0xE5 }), short}, []string{"LONGNA~1.TXT"}},
		{"deleted", [][]byte{e(short, func(b []byte) { b[0] = 0xE5 })}, nil},
		{"0x05 lead", [][]byte{shortEntry("\x05ABC    TXT", 0x20, 0, 0, 0)}, []string{"\u00d5ABC.TXT"}},
		{"end marker", [][]byte{short, make([]byte, 32), shortEntry("AFTER   TXT", 0x20, 0, 0, 0)}, []string{"LONGNA~1.TXT"}},
		{"dots and label", [][]byte{shortEntry(".          ", 0x10, 0, 0, 0), shortEntry("..         ", 0x10, 0, 0, 0), shortEntry("VOL        ", 0x08, 0, 0, 0)}, nil},
		{"slash in name", [][]byte{shortEntry("A/B     TXT", 0x20, 0, 0, 0)}, nil},
		{"slash in lfn falls back to 8.3", append(lfnEntries("a/b", shortSum([]byte("AB      TXT"))), shortEntry("AB      TXT", 0x20, 0, 0, 0)), []string{"AB.TXT"}},
		{"last flag with count 0", [][]byte{e(good[0], func(b []byte) { b[0] = 0x40 }), short}, []string{"LONGNA~1.TXT"}},
		{"count 21", [][]byte{e(good[0], func(b []byte) { b[0] = 0x40 | 21 }), short}, []string{"LONGNA~1.TXT"}},
		{"surrogates", append(lfnEntries("\U0001F600x", shortSum([]byte("X       TXT"))), shortEntry("X       TXT", 0x20, 0, 0, 0)), []string{"\U0001F600x"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := &dirParser{}
			for i, b := range tc.entries {
				p.add(b, int64(i*32))
			}
			var got []string
			for _, d := range p.list.entries {
				got = append(got, d.name)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("names = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFatTime(t *testing.T) {
	for _, tc := range []struct {
		date, tm uint16
		tenth    byte
		want     time.Time
	}{
		{0, 0, 0, time.Time{}},
		{fatDate(synthTime), fatClock(synthTime), 0, synthTime},
		{fatDate(synthTime), fatClock(synthTime), 199, synthTime.Add(1990 * time.Millisecond)},
		{fatDate(synthTime), fatClock(synthTime), 200, synthTime}, // out of range: ignored
		{0x0000 | 13<<5 | 1, 0, 0, time.Time{}},                   // month 13
		{1<<5 | 0, 0, 0, time.Time{}},                             // day 0
		{127<<9 | 12<<5 | 31, 23<<11 | 59<<5 | 29, 0, time.Date(2107, 12, 31, 23, 59, 58, 0, time.UTC)},
		{1<<5 | 1, 24 << 11, 0, time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)}, // hour 24: date only
	} {
		if got := fatTime(tc.date, tc.tm, tc.tenth); !got.Equal(tc.want) {
			t.Errorf("fatTime(%#x, %#x, %d) = %v, want %v", tc.date, tc.tm, tc.tenth, got, tc.want)
		}
	}
}

func TestSynthUsedRanges(t *testing.T) { synthVariants(t, testSynthUsedRanges) }

func testSynthUsedRanges(t *testing.T, fat32 bool) {
	s := buildSynthFAT(t, 2048, fat32, synthTree())
	s.SetFAT(1000, s.BadMark()) // a bad-cluster mark is copied too
	v := openSynth(t, s)
	rs, err := v.UsedRanges()
	if err != nil {
		t.Fatal(err)
	}
	used := map[uint32]bool{1000: true}
	for _, c := range s.rootClusters {
		used[c] = true
	}
	for _, in := range s.info {
		for _, c := range in.clusters {
			used[c] = true
		}
	}
	if rs[0].Off != 0 || rs[0].Len < s.dataOffset {
		t.Errorf("first range %+v does not cover the metadata (%d bytes)", rs[0], s.dataOffset)
	}
	covered := func(off int64) bool {
		for _, r := range rs {
			if off >= r.Off && off < r.Off+r.Len {
				return true
			}
		}
		return false
	}
	for i := 1; i < len(rs); i++ {
		if rs[i].Off <= rs[i-1].Off+rs[i-1].Len {
			t.Errorf("ranges %d and %d overlap or touch: %+v %+v", i-1, i, rs[i-1], rs[i])
		}
	}
	for c := uint32(2); c <= s.clusters+1; c++ {
		if got := covered(s.ClusterOffset(c)); got != used[c] {
			t.Errorf("cluster %d: used %v, want %v", c, got, used[c])
		}
	}
}

// TestActiveFAT: on FAT32 with mirroring disabled (BPB_ExtFlags bit 7) only
// the FAT numbered in bits 0-3 is live; reads follow it, and UsedRanges
// still counts what any copy marks.
func TestActiveFAT(t *testing.T) {
	s := buildSynthFAT(t, 2048, true, synthTree())
	c := s.info["frag.bin"].clusters
	// Break the chain in FAT 0 only.
	off := s.reserved*512 + int(c[2])*4
	copy(s.img[off:], []byte{0, 0, 0, 0})
	want := pattern(3, 5*512+17)

	for _, tc := range []struct {
		flags uint16
		ok    bool
	}{{0x0000, false}, {0x0080, false}, {0x0081, true}} {
		binary.LittleEndian.PutUint16(s.img[40:], tc.flags)
		v := openSynth(t, s)
		got, err := fs.ReadFile(v, "frag.bin")
		if tc.ok != (err == nil) {
			t.Errorf("flags %#04x: ReadFile error %v", tc.flags, err)
		}
		if tc.ok && !bytes.Equal(got, want) {
			t.Errorf("flags %#04x: wrong content", tc.flags)
		}
		rs, err := v.UsedRanges()
		if err != nil {
			t.Fatal(err)
		}
		at := s.ClusterOffset(c[2])
		if !slices.ContainsFunc(rs, func(r fsdrivers.Range) bool { return at >= r.Off && at < r.Off+r.Len }) {
			t.Errorf("flags %#04x: a cluster FAT 1 marks used is not in UsedRanges", tc.flags)
		}
	}
}

// TestChainLongerThanSize: extra clusters after a file's size (fsck.fat
// would truncate the chain) are ignored, as Linux does; only the clusters the
// size needs are kept as runs, while the whole chain is still walked for loops.
func TestChainLongerThanSize(t *testing.T) {
	s := buildSynth(t, 2048, synthTree())
	binary.LittleEndian.PutUint32(s.img[s.info["frag.bin"].entryOff+28:], 600)
	v := openSynth(t, s)
	f, err := v.Open("frag.bin")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ch := f.(*file).ch
	if ch.kept != 2 || ch.total != 6 || len(ch.runs) != 2 {
		t.Errorf("kept %d of %d clusters in %d runs; want 2 of 6 in 2", ch.kept, ch.total, len(ch.runs))
	}
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, pattern(3, 5*512+17)[:600]) {
		t.Errorf("read %d bytes, %v", len(got), err)
	}
	// A loop past the size is still found.
	c := s.info["frag.bin"].clusters
	s.SetFAT(c[5], c[3])
	v = openSynth(t, s)
	if _, err := v.Open("frag.bin"); !errors.Is(err, fsdrivers.ErrCorrupt) {
		t.Errorf("Open with a loop past the size = %v", err)
	}
}
