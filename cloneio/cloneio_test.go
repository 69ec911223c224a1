package cloneio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dimg-project/dimg/imagefmt"
)

func randomDisk(t *testing.T, size int) (string, []byte) {
	t.Helper()
	rng := rand.New(rand.NewSource(7))
	d := make([]byte, size)
	for off := 0; off < size; off += 1 << 20 {
		if (off>>20)%3 != 0 { // one MiB in three stays zero
			rng.Read(d[off:min(off+1<<20, size)])
		}
	}
	p := filepath.Join(t.TempDir(), "src.img")
	if err := os.WriteFile(p, d, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, d
}

// TestCloneVerifyCatchesDamage: a byte changed in the target between the
// write and the verify is found and named.
func TestCloneVerifyCatchesDamage(t *testing.T) {
	src, data := randomDisk(t, 9<<20+4096)
	dev, err := OpenSource(src)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	plan := SectorPlan(dev.Size, 512)
	for _, damage := range []bool{false, true} {
		dst := filepath.Join(t.TempDir(), "dst.img")
		tg, err := OpenTarget(dst, dev.Size, 0, TargetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		opt := CloneOptions{Verify: true}
		if damage {
			opt.testHookBeforeVerify = func(t2 *Target) {
				t2.WriteAt([]byte{data[5<<20+77] ^ 0xFF}, 5<<20+77)
			}
		}
		res, err := Clone(context.Background(), dev, plan, tg, opt)
		if damage {
			if !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), "chunk 5 ") {
				t.Fatalf("damaged clone: %v", err)
			}
			tg.Abort()
			continue
		}
		if err != nil || !res.Verified {
			t.Fatalf("clone: %v", err)
		}
		if _, err := tg.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(dst)
		if !bytes.Equal(got, data) {
			t.Fatal("clone differs from source")
		}
	}
}

// TestRestoreVerify: restore --verify passes on a good restore; a target
// that changes under it is caught.
func TestRestoreVerifyAndSparse(t *testing.T) {
	src, data := randomDisk(t, 6<<20)
	dev, _ := OpenSource(src)
	defer dev.Close()
	var img bytes.Buffer
	if _, err := Capture(context.Background(), dev, SectorPlan(dev.Size, 512), &img, CaptureOptions{ChunkSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	r, err := imagefmt.NewReader(bytes.NewReader(img.Bytes()), int64(img.Len()), imagefmt.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "out.img")
	tg, err := OpenTarget(dst, r.Size(), 0, TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := RestoreImage(context.Background(), r, tg, RestoreOptions{Verify: true})
	if err != nil || !res.Verified {
		t.Fatal(err)
	}
	if _, err := tg.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got, data) {
		t.Fatal("restore differs")
	}
	// Zero MiBs are holes in the file target.
	out, err := exec.Command("du", "-k", dst).Output()
	if err == nil {
		var kb int
		if _, err := fmtSscan(string(out), &kb); err == nil && kb > 5<<10 {
			t.Errorf("restored file uses %d KiB: not sparse", kb)
		}
	}
}

// TestRangeIter checks the planner's range walk against a brute force.
func TestRangeIterAndMerge(t *testing.T) {
	rs := mergeRanges([]Range{{100, 50}, {0, 10}, {140, 100}, {10, 5}, {500, 1}, {1000, 100}}, 1050)
	want := []Range{{0, 15}, {100, 140}, {500, 1}, {1000, 50}}
	if len(rs) != len(want) {
		t.Fatalf("merge: %v", rs)
	}
	for i := range want {
		if rs[i] != want[i] {
			t.Fatalf("merge: %v, want %v", rs, want)
		}
	}
	it := newRangeIter(rs, 1050)
	var total int64
	for off := int64(0); off < 1050; off += 64 {
		for _, p := range it.within(off, min(64, 1050-off)) {
			if p.Off < off || p.Off+p.Len > off+64 {
				t.Fatalf("part %v outside chunk %d", p, off)
			}
			total += p.Len
		}
	}
	if total != 15+140+1+50 {
		t.Fatalf("iter covered %d bytes", total)
	}
}

func fmtSscan(s string, kb *int) (int, error) { return fmt.Sscan(s, kb) }

// TestRestoreCommitsAndDelta: an image with commits restores to its newest
// state from the file and through a pipe (the stream replays the
// commits), and a delta chain restores from its file.
func TestRestoreCommitsAndDelta(t *testing.T) {
	ctx := context.Background()
	src, data := randomDisk(t, 6<<20)
	dev, _ := OpenSource(src)
	defer dev.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "img.dimg")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Capture(ctx, dev, SectorPlan(dev.Size, 512), f, CaptureOptions{ChunkSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	const cs = 64 << 10
	// Two commits: new bytes over chunk 3, chunk 20 zeroed, chunk 40
	// unused; then chunk 3 again and chunk 60.
	ed, err := imagefmt.OpenEditor(path, imagefmt.EditorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	change := func(c int64, state imagefmt.ChunkState, fill byte) imagefmt.ChunkChange {
		ch := imagefmt.ChunkChange{Chunk: c, State: state}
		clear(data[c*cs : (c+1)*cs])
		if state == imagefmt.ChunkStored {
			for i := c * cs; i < (c+1)*cs; i += 7 {
				data[i] = fill
			}
			ch.Data = data[c*cs : (c+1)*cs]
		}
		return ch
	}
	for i, chs := range [][]imagefmt.ChunkChange{
		{change(3, imagefmt.ChunkStored, 1), change(20, imagefmt.ChunkZero, 0), change(40, imagefmt.ChunkUnused, 0)},
		{change(3, imagefmt.ChunkStored, 2), change(60, imagefmt.ChunkStored, 3)},
	} {
		if _, err := ed.Commit(ctx, func(yield func(imagefmt.ChunkChange, error) bool) {
			for _, ch := range chs {
				if !yield(ch, nil) {
					return
				}
			}
		}, imagefmt.CommitOptions{Message: fmt.Sprint("commit ", i+2)}); err != nil {
			t.Fatal(err)
		}
	}
	base := ed.Reader()
	restore := func(name string, run func(tg *Target) (*RestoreResult, error), want []byte) {
		t.Helper()
		dst := filepath.Join(dir, name+".img")
		tg, err := OpenTarget(dst, int64(len(want)), 0, TargetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if res, err := run(tg); err != nil || !res.Verified {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := tg.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(dst); !bytes.Equal(got, want) {
			t.Fatalf("%s: restored disk differs", name)
		}
	}
	restore("file", func(tg *Target) (*RestoreResult, error) {
		return RestoreImage(ctx, base, tg, RestoreOptions{Verify: true})
	}, data)
	raw, _ := os.ReadFile(path)
	restore("pipe", func(tg *Target) (*RestoreResult, error) {
		s, err := imagefmt.NewStreamReader(bytes.NewReader(raw))
		if err != nil {
			return nil, err
		}
		if s.Commits() != 3 {
			t.Fatalf("stream of %d commits", s.Commits())
		}
		return RestoreStream(ctx, s, tg, RestoreOptions{Verify: true})
	}, data)

	// A delta over the newest commit changes chunk 5.
	flat := bytes.Clone(data)
	for i := 5 * cs; i < 6*cs; i++ {
		flat[i] = 9
	}
	dpath := filepath.Join(dir, "delta.dimg")
	de, err := imagefmt.CreateDelta(ctx, dpath, base, path, func(yield func(imagefmt.ChunkChange, error) bool) {
		yield(imagefmt.ChunkChange{Chunk: 5, State: imagefmt.ChunkStored, Data: flat[5*cs : 6*cs]}, nil)
	}, imagefmt.CommitOptions{Message: "delta"}, imagefmt.EditorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	restore("delta", func(tg *Target) (*RestoreResult, error) {
		return RestoreImage(ctx, de.Reader(), tg, RestoreOptions{Verify: true})
	}, flat)
	de.Close()
	ed.Close()
}

// damagedLeafImage captures a 20 MiB disk at 64 KiB chunks (two leaves
// under the root) into a file and breaks the second leaf's CRC.
func damagedLeafImage(t *testing.T) string {
	t.Helper()
	src, _ := randomDisk(t, 20<<20)
	dev, err := OpenSource(src)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	var img bytes.Buffer
	if _, err := Capture(context.Background(), dev, SectorPlan(dev.Size, 512), &img, CaptureOptions{ChunkSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	b := img.Bytes()
	// Index node records: "DNOD", level at 4, number at 16 (FORMAT.md).
	at := -1
	for i := 0; i+24 <= len(b); i++ {
		if string(b[i:i+4]) == "DNOD" && b[i+4] == 0 && b[i+16] == 1 {
			at = i
		}
	}
	if at < 0 {
		t.Fatal("no second leaf in the image")
	}
	b[at+30] ^= 0xff
	p := filepath.Join(t.TempDir(), "leaf.dimg")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRestoreDamagedIndex: a damaged index node is reported as what it
// is, before anything is written. Before, Entries stopped at it silently:
// restore wrote the chunks before it (16 MiB on a device in the field)
// and then failed on the digest, without naming the node.
func TestRestoreDamagedIndex(t *testing.T) {
	r, err := imagefmt.Open(damagedLeafImage(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	tg, err := OpenTarget(filepath.Join(t.TempDir(), "out.img"), r.Size(), 0, TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Abort()
	_, err = RestoreImage(context.Background(), r, tg, RestoreOptions{})
	if !errors.Is(err, imagefmt.ErrCorrupt) || !strings.Contains(err.Error(), "index node (level 0, number 1)") {
		t.Fatalf("restore: %v, want the damaged node named", err)
	}
	got := make([]byte, r.Size())
	if _, err := tg.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !imagefmt.IsZero(got) {
		t.Fatal("restore wrote to the target before it found the damaged index")
	}
}

// TestCreateAtomicNotRegular: a directory in the way is refused as such,
// with or without force. Before, without force, the message said "use
// --force to overwrite", and --force was then refused too.
func TestCreateAtomicNotRegular(t *testing.T) {
	dir := t.TempDir()
	for _, force := range []bool{false, true} {
		a, err := CreateAtomic(dir, force)
		if err == nil {
			a.Abort()
			t.Fatalf("force %v: a directory was accepted", force)
		}
		if !strings.Contains(err.Error(), "not a regular file") || strings.Contains(err.Error(), "--force") {
			t.Errorf("force %v: %v", force, err)
		}
	}
}
