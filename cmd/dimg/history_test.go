package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dimg-project/dimg/imagefmt"
)

// These tests make commits and deltas through imagefmt (what a read-write
// mount does underneath) and check everything else through the command:
// log, --at, revert, flatten, compact, convert, restore, verify, info.

// copyFile copies src to dst.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// randomChanges picks n distinct chunks of a disk of size bytes and gives
// each new content: random bytes over part of it, or zeros. It applies
// them to the raw reference file ref (what a restore must give) and
// returns them for a commit, in chunk order.
func randomChanges(t *testing.T, rng *rand.Rand, ref string, chunkSize int, n int) []imagefmt.ChunkChange {
	t.Helper()
	f, err := os.OpenFile(ref, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	chunks := (st.Size() + int64(chunkSize) - 1) / int64(chunkSize)
	picked := map[int64]bool{}
	for len(picked) < n {
		picked[rng.Int63n(chunks)] = true
	}
	var out []imagefmt.ChunkChange
	for c := range chunks {
		if !picked[c] {
			continue
		}
		off := c * int64(chunkSize)
		l := min(int64(chunkSize), st.Size()-off)
		b := make([]byte, l)
		if _, err := f.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		ch := imagefmt.ChunkChange{Chunk: c, State: imagefmt.ChunkStored}
		if rng.Intn(4) == 0 {
			clear(b)
			ch.State = imagefmt.ChunkZero
		} else {
			s := rng.Intn(len(b))
			rng.Read(b[s : s+rng.Intn(len(b)-s)+1])
			ch.Data = b
		}
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
		out = append(out, ch)
	}
	return out
}

func changeSeq(chs []imagefmt.ChunkChange) iter.Seq2[imagefmt.ChunkChange, error] {
	return func(yield func(imagefmt.ChunkChange, error) bool) {
		for _, c := range chs {
			if !yield(c, nil) {
				return
			}
		}
	}
}

// commitRandom appends a commit of n random chunk changes to the image
// (a delta's base is opened by its path hint) and applies them to ref.
func commitRandom(t *testing.T, rng *rand.Rand, img, ref string, n int, msg string) {
	t.Helper()
	cur, err := imagefmt.OpenChain(img, imagefmt.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	e, err := imagefmt.OpenEditor(img, imagefmt.EditorOptions{Base: cur.Base()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	chs := randomChanges(t, rng, ref, cur.Header().ChunkSize, n)
	if _, err := e.Commit(context.Background(), changeSeq(chs), imagefmt.CommitOptions{Message: msg}); err != nil {
		t.Fatal(err)
	}
}

// deltaRandom makes a new delta image over base (its newest commit) with
// n random changes, recording hint as the base's path; ref is a raw copy
// of base's disk that takes the changes.
func deltaRandom(t *testing.T, rng *rand.Rand, base, delta, hint, ref string, n int) {
	t.Helper()
	b, err := imagefmt.OpenChain(base, imagefmt.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	chs := randomChanges(t, rng, ref, b.Header().ChunkSize, n)
	e, err := imagefmt.CreateDelta(context.Background(), delta, b, hint, changeSeq(chs), imagefmt.CommitOptions{Message: "delta"}, imagefmt.EditorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

type logJSON struct {
	Commits []struct {
		Number        int64
		Message       string
		ChunksChanged int64 `json:"chunks_changed"`
		Digest        string
	}
	Bases []struct {
		Image  string
		Commit int64
	}
}

func imageLog(t *testing.T, img string, args ...string) logJSON {
	t.Helper()
	var l logJSON
	if err := json.Unmarshal([]byte(mustRun(t, append([]string{"log", "--json", img}, args...)...)), &l); err != nil {
		t.Fatal(err)
	}
	return l
}

// restoreCmp restores img (with args such as --at N) and compares the
// result with ref.
func restoreCmp(t *testing.T, ref, img string, args ...string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "restored.img")
	mustRun(t, append(append([]string{"restore", "-q"}, args...), img, out)...)
	sameFiles(t, ref, out)
	os.Remove(out)
}

// historyImage captures the bare test disk and makes commits 2 to 4 of
// random changes: it returns the image and refs[n] = the disk of commit n.
func historyImage(t *testing.T, dir string) (string, []string) {
	t.Helper()
	src := disk(t, "bare")
	img := filepath.Join(dir, "h.dimg")
	mustRun(t, "capture", "-q", src, img)
	refs := []string{"", filepath.Join(dir, "ref1.img")}
	mustRun(t, "restore", "-q", img, refs[1])
	rng := rand.New(rand.NewSource(42))
	for n := 2; n <= 4; n++ {
		ref := filepath.Join(dir, fmt.Sprintf("ref%d.img", n))
		copyFile(t, refs[n-1], ref)
		commitRandom(t, rng, img, ref, 5+rng.Intn(20), fmt.Sprintf("change %d", n))
		refs = append(refs, ref)
	}
	return img, refs
}

// TestHistoryCommands: log lists the commits; --at reads each; a pipe
// gives the newest; revert, flatten and compact give the expected disks.
func TestHistoryCommands(t *testing.T) {
	dir := t.TempDir()
	img, refs := historyImage(t, dir)

	l := imageLog(t, img)
	if len(l.Commits) != 4 || l.Commits[0].Number != 4 || l.Commits[0].Message != "change 4" || l.Commits[3].Number != 1 {
		t.Fatalf("log: %+v", l)
	}
	for _, c := range l.Commits[:3] {
		if c.ChunksChanged < 5 {
			t.Fatalf("commit %d changed %d chunks", c.Number, c.ChunksChanged)
		}
	}
	text := mustRun(t, "log", img)
	if !strings.Contains(text, "change 3") || !strings.Contains(text, "(capture)") {
		t.Fatalf("log:\n%s", text)
	}
	for n := 1; n <= 4; n++ {
		restoreCmp(t, refs[n], img, "--at", fmt.Sprint(n))
		mustRun(t, "verify", "-q", "--at", fmt.Sprint(n), img)
	}
	restoreCmp(t, refs[4], img)
	mustRun(t, "verify", "-q", "--all", img)
	var in struct{ Commit, Commits int64 }
	json.Unmarshal([]byte(mustRun(t, "info", "--json", "--at", "2", img)), &in)
	if in.Commit != 2 || in.Commits != 4 {
		t.Fatalf("info --at 2: %+v", in)
	}
	// A multi-commit image through a pipe restores its newest commit.
	piped := filepath.Join(dir, "piped.img")
	sh := fmt.Sprintf("cat %q | %q restore -q - %q", img, dimgBin, piped)
	if b, err := exec.Command("bash", "-o", "pipefail", "-c", sh).CombinedOutput(); err != nil {
		t.Fatalf("pipe: %v\n%s", err, b)
	}
	sameFiles(t, refs[4], piped)
	os.Remove(piped)
	t.Run("device", func(t *testing.T) {
		st, _ := os.Stat(refs[4])
		dev, _ := emptyLoopDevice(t, st.Size())
		sh := fmt.Sprintf("cat %q | %q restore -q - %q", img, dimgBin, dev)
		if b, err := exec.Command("bash", "-o", "pipefail", "-c", sh).CombinedOutput(); err != nil {
			t.Fatalf("pipe to a device: %v\n%s", err, b)
		}
		sameFiles(t, refs[4], dev)
		// Chunks commit 2 does not use keep what commit 4 wrote there,
		// unless discarded.
		mustRun(t, "restore", "-q", "--discard", "--at", "2", img, dev)
		sameFiles(t, refs[2], dev)
	})
	if _, errs, code := run(t, nil, "restore", "--at", "2", "-", piped); code != 2 || !strings.Contains(errs, "--at") {
		t.Fatalf("restore --at from a pipe: exit %d %s", code, errs)
	}
	for _, bad := range []string{"0", "5", "-1"} {
		if _, errs, code := run(t, nil, "info", "--at", bad, img); code == 0 || strings.Contains(errs, "panic") {
			t.Fatalf("info --at %s: exit %d %s", bad, code, errs)
		}
	}

	// flatten --at N: a standalone image of commit N, same digest.
	flat := filepath.Join(dir, "flat2.dimg")
	mustRun(t, "flatten", "-q", "--at", "2", img, flat)
	if fl := imageLog(t, flat); len(fl.Commits) != 1 || fl.Commits[0].Digest != l.Commits[2].Digest {
		t.Fatalf("flattened commit 2: %+v, want digest %s", fl, l.Commits[2].Digest)
	}
	restoreCmp(t, refs[2], flat)
	if _, errs, code := run(t, nil, "flatten", img, flat); code == 0 || !strings.Contains(errs, "--force") {
		t.Fatalf("flatten over an existing file: exit %d %s", code, errs)
	}
	if _, errs, code := run(t, nil, "flatten", "--force", img, img); code == 0 || !strings.Contains(errs, "same") {
		t.Fatalf("flatten onto itself: exit %d %s", code, errs)
	}

	// revert 2: a fifth commit equal to commit 2; history kept.
	mustRun(t, "revert", "-q", img, "2")
	l = imageLog(t, img)
	if len(l.Commits) != 5 || l.Commits[0].Digest != l.Commits[3].Digest || l.Commits[0].Message != "revert to commit 2" {
		t.Fatalf("log after revert: %+v", l)
	}
	restoreCmp(t, refs[2], img)
	restoreCmp(t, refs[4], img, "--at", "4")
	mustRun(t, "revert", "-q", "-m", "forward again", img, "4")
	restoreCmp(t, refs[4], img)
	if _, errs, code := run(t, nil, "revert", img, "9"); code == 0 || !strings.Contains(errs, "no commit 9") {
		t.Fatalf("revert to a missing commit: exit %d %s", code, errs)
	}
	mustRun(t, "verify", "-q", "--all", img)

	// compact: one commit, same digest, smaller file, same disk.
	before, _ := os.Stat(img)
	digest := imageLog(t, img).Commits[0].Digest
	mustRun(t, "compact", "-q", img)
	after, _ := os.Stat(img)
	l = imageLog(t, img)
	if len(l.Commits) != 1 || l.Commits[0].Digest != digest || after.Size() >= before.Size() {
		t.Fatalf("compact: %d -> %d bytes, log %+v (digest %s)", before.Size(), after.Size(), l, digest)
	}
	restoreCmp(t, refs[4], img)
	mustRun(t, "verify", "-q", "--all", img)
	noTemp(t, dir)
}

// TestDeltaChain: base -> d1 -> d2 restores to the same bytes as its
// flattened image; the base file is never written; a missing, moved,
// wrong or modified base is refused naming both files; a delta cannot
// come through a pipe.
func TestDeltaChain(t *testing.T) {
	dir := t.TempDir()
	src := disk(t, "bare")
	base := filepath.Join(dir, "base.dimg")
	mustRun(t, "capture", "-q", src, base)
	ref := filepath.Join(dir, "ref.img")
	mustRun(t, "restore", "-q", base, ref)
	baseSum := fileSum(t, base)
	rng := rand.New(rand.NewSource(7))

	// d1 names its base by an absolute path, d2 its base relative to d2.
	d1, d2 := filepath.Join(dir, "d1.dimg"), filepath.Join(dir, "d2.dimg")
	deltaRandom(t, rng, base, d1, base, ref, 20)
	commitRandom(t, rng, d1, ref, 10, "d1 again")
	ref1 := filepath.Join(dir, "ref1.img")
	copyFile(t, ref, ref1)
	deltaRandom(t, rng, d1, d2, "d1.dimg", ref, 15)

	restoreCmp(t, ref, d2)
	restoreCmp(t, ref1, d1)
	t.Run("device", func(t *testing.T) {
		st, _ := os.Stat(ref)
		dev, _ := emptyLoopDevice(t, st.Size())
		mustRun(t, "restore", "-q", d2, dev)
		sameFiles(t, ref, dev)
	})
	mustRun(t, "verify", "-q", d2)
	l := imageLog(t, d2)
	if len(l.Bases) != 2 || l.Bases[0].Image != d1 || l.Bases[1].Image != base || l.Bases[0].Commit != 2 {
		t.Fatalf("log of d2: %+v", l)
	}
	flat := filepath.Join(dir, "flat.dimg")
	mustRun(t, "flatten", "-q", d2, flat)
	restoreCmp(t, ref, flat)
	flatOut, chainOut := filepath.Join(dir, "flat.raw"), filepath.Join(dir, "chain.raw")
	mustRun(t, "restore", "-q", flat, flatOut)
	mustRun(t, "restore", "-q", d2, chainOut)
	sameFiles(t, flatOut, chainOut)
	if info(t, flat).DiskSize != info(t, d2).DiskSize || imageLog(t, flat).Commits[0].Digest != l.Commits[0].Digest {
		t.Fatal("the flattened image has another disk or digest than the chain")
	}
	// --at on a delta reads its own commit over the same base.
	restoreCmp(t, ref1, d1, "--at", "2")
	// A delta through a pipe is refused before the target exists.
	target := filepath.Join(dir, "piped.img")
	f, _ := os.Open(d2)
	_, errs, code := run(t, f, "restore", "-", target)
	f.Close()
	if code == 0 || !strings.Contains(errs, "delta") {
		t.Fatalf("restore - of a delta: exit %d: %s", code, errs)
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Fatal("a refused delta stream left a target file")
	}

	// Compacting d1 keeps it a delta over base, and d2 still opens over it.
	mustRun(t, "compact", "-q", d1)
	if l := imageLog(t, d1); len(l.Commits) != 1 || len(l.Bases) != 1 {
		t.Fatalf("compacted d1: %+v", l)
	}
	restoreCmp(t, ref1, d1)
	restoreCmp(t, ref, d2)
	if fileSum(t, base) != baseSum {
		t.Fatal("delta work changed the base image")
	}

	// The base moved: refused, naming both; --base finds it.
	moved := filepath.Join(t.TempDir(), "moved.dimg")
	if err := os.Rename(base, moved); err != nil {
		t.Fatal(err)
	}
	_, errs, code = run(t, nil, "restore", d1, filepath.Join(dir, "x.img"))
	if code != 1 || !strings.Contains(errs, "d1.dimg") || !strings.Contains(errs, "base.dimg") {
		t.Fatalf("restore with the base gone: exit %d: %s", code, errs)
	}
	t.Logf("base gone: %s", errs)
	restoreCmp(t, ref1, d1, "--base", moved)
	if _, errs, code := run(t, nil, "info", "--base", d1, moved); code == 0 || !strings.Contains(errs, "not a delta") {
		t.Fatalf("--base on a standalone image: exit %d: %s", code, errs)
	}

	// Another image in the base's place: refused, naming both files.
	other := filepath.Join(dir, "other.dimg")
	mustRun(t, "capture", "-q", src, other)
	if err := os.Rename(other, base); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"restore", d2, filepath.Join(dir, "y.img")}, {"info", d1}, {"verify", d2}, {"ls", d2}} {
		_, errs, code := run(t, nil, args...)
		if code == 0 || !strings.Contains(errs, "d1.dimg") || !strings.Contains(errs, "base.dimg") || !strings.Contains(errs, "is image") {
			t.Fatalf("%v over another base: exit %d: %s", args, code, errs)
		}
		t.Logf("%v over another base: %s", args, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "y.img")); !os.IsNotExist(err) {
		t.Fatal("a refused restore left its target")
	}

	// The same image, modified: its state is not the one d1 was made over.
	if err := os.Rename(moved, base); err != nil {
		t.Fatal(err)
	}
	changed := filepath.Join(dir, "changed.img")
	copyFile(t, ref1, changed)
	commitRandom(t, rng, base, changed, 3, "the base changes")
	mustRun(t, "compact", "-q", base)
	_, errs, code = run(t, nil, "restore", d1, filepath.Join(dir, "z.img"))
	if code == 0 || !strings.Contains(errs, "d1.dimg") || !strings.Contains(errs, "base.dimg") || !strings.Contains(errs, "digest") {
		t.Fatalf("restore over a modified base: exit %d: %s", code, errs)
	}
	t.Logf("modified base: %s", errs)
	noTemp(t, dir)
}

// TestInterruptedRewrites: compact and flatten killed at random points
// leave the image intact and verifying, with the same disk; flatten's
// OUT is absent or complete.
func TestInterruptedRewrites(t *testing.T) {
	dir := t.TempDir()
	img, refs := historyImage(t, dir)
	want := imageLog(t, img).Commits[0].Digest
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	seed := rng.Int63()
	t.Logf("seed %d", seed)
	rng = rand.New(rand.NewSource(seed))
	deadline := time.Now().Add(20 * time.Second)
	trials, killed, temps := 0, 0, 0
	for ; trials < 40 && (trials < 20 || time.Now().Before(deadline)); trials++ {
		out := filepath.Join(dir, "flat.dimg")
		os.Remove(out)
		args := []string{"compact", "-q", img}
		switch rng.Intn(4) {
		case 0:
			args = []string{"compact", "-q", "--compress", "zstd:3", img}
		case 1:
			args = []string{"flatten", "-q", img, out}
		case 2:
			args = []string{"convert", "-q", "--compress", "zstd", img, out}
		}
		cmd := exec.Command(dimgBin, args...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.Intn(400)) * time.Millisecond)
		cmd.Process.Kill()
		if cmd.Wait() != nil {
			killed++
		}
		var v struct {
			OK     bool
			Digest string
		}
		if err := json.Unmarshal([]byte(mustRun(t, "verify", "--json", img)), &v); err != nil || !v.OK || v.Digest != want {
			t.Fatalf("trial %d (%v): image after the kill: %+v %v", trials, args, v, err)
		}
		if _, err := os.Stat(out); err == nil {
			json.Unmarshal([]byte(mustRun(t, "verify", "--json", out)), &v)
			if !v.OK || v.Digest != want {
				t.Fatalf("trial %d (%v): output after the kill: %+v", trials, args, v)
			}
		}
		// What a kill leaves: temporary files, never a damaged image.
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.Contains(e.Name(), ".part-") {
				temps++
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	restoreCmp(t, refs[4], img)
	t.Logf("%d trials: %d killed before they ended, %d temporary files left", trials, killed, temps)
}

// TestZstdCapture: a zstd capture restores to the same disk as an lz4
// one, from a file and a pipe, and is smaller; convert goes both ways.
func TestZstdCapture(t *testing.T) {
	src := disk(t, "gpt")
	dir := t.TempDir()
	lz, zs := filepath.Join(dir, "lz4.dimg"), filepath.Join(dir, "zstd.dimg")
	mustRun(t, "capture", "-q", src, lz)
	mustRun(t, "capture", "-q", "--compress", "zstd", src, zs)
	a, _ := os.Stat(lz)
	b, _ := os.Stat(zs)
	t.Logf("lz4 %d bytes, zstd %d bytes (%.1f%%)", a.Size(), b.Size(), 100*float64(b.Size())/float64(a.Size()))
	if b.Size() >= a.Size() {
		t.Fatalf("zstd image %d bytes, lz4 %d", b.Size(), a.Size())
	}
	ref := filepath.Join(dir, "ref.img")
	mustRun(t, "restore", "-q", lz, ref)
	restoreCmp(t, ref, zs)
	mustRun(t, "verify", "-q", zs)
	piped := filepath.Join(dir, "piped.img")
	sh := fmt.Sprintf("%q capture -q --compress zstd:3 %q - | %q restore -q - %q", dimgBin, src, dimgBin, piped)
	if out, err := exec.Command("bash", "-o", "pipefail", "-c", sh).CombinedOutput(); err != nil {
		t.Fatalf("pipe: %v\n%s", err, out)
	}
	sameFiles(t, ref, piped)
	os.Remove(piped)
	back := filepath.Join(dir, "back.dimg")
	mustRun(t, "convert", "-q", "--compress", "lz4", zs, back)
	if in := mustRun(t, "info", back); !strings.Contains(in, "lz4 chunks") {
		t.Fatalf("converted to lz4:\n%s", in)
	}
	restoreCmp(t, ref, back)
	for _, bad := range []string{"gzip", "zstd:0", "zstd:23", "lz4:1"} {
		if _, errs, code := run(t, nil, "capture", "--compress", bad, src, filepath.Join(dir, "x.dimg")); code != 2 {
			t.Fatalf("capture --compress %s: exit %d %s", bad, code, errs)
		}
	}
}

// TestVersion1Images: a version 1 image (today's readers' format, written
// by imagefmt's version 1 writer) still opens, lists, mounts and restores
// unchanged; convert makes it version 2; revert refuses it clearly.
func TestVersion1Images(t *testing.T) {
	dir := t.TempDir()
	src := disk(t, "bare")
	v2 := filepath.Join(dir, "v2.dimg")
	mustRun(t, "capture", "-q", src, v2)
	v1 := filepath.Join(dir, "v1.dimg")
	writeVersion1(t, v2, v1)
	ref := filepath.Join(dir, "ref.img")
	mustRun(t, "restore", "-q", v2, ref)
	restoreCmp(t, ref, v1)
	mustRun(t, "verify", "-q", "--all", v1)
	var in struct {
		FormatVersion int `json:"format_version"`
		Commits       int64
	}
	json.Unmarshal([]byte(mustRun(t, "info", "--json", v1)), &in)
	if in.FormatVersion != 1 || in.Commits != 1 {
		t.Fatalf("info of a version 1 image: %+v", in)
	}
	if l := imageLog(t, v1); len(l.Commits) != 1 {
		t.Fatalf("log of a version 1 image: %+v", l)
	}
	if ls := mustRun(t, "ls", v1, "/"); !strings.Contains(ls, "lost+found") {
		t.Fatalf("ls of a version 1 image:\n%s", ls)
	}
	if _, errs, code := run(t, nil, "revert", v1, "1"); code == 0 || !strings.Contains(errs, "version 1") {
		t.Fatalf("revert of a version 1 image: exit %d %s", code, errs)
	}
	conv := filepath.Join(dir, "conv.dimg")
	mustRun(t, "convert", "-q", "--compress", "lz4", v1, conv)
	json.Unmarshal([]byte(mustRun(t, "info", "--json", conv)), &in)
	if in.FormatVersion != 2 {
		t.Fatalf("converted image is version %d", in.FormatVersion)
	}
	restoreCmp(t, ref, conv)
	// Mounted, disk.img is the restored disk.
	if os.Geteuid() != 0 {
		t.Skip("mount needs root")
	}
	mnt := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mnt, 0o755)
	mustRun(t, "mount", "--background", v1, mnt)
	defer exec.Command("umount", mnt).Run()
	sameFiles(t, ref, filepath.Join(mnt, "disk.img"))
	if _, err := os.Stat(filepath.Join(mnt, "p1", "lost+found")); err != nil {
		t.Fatalf("mounted version 1 image: %v", err)
	}
}

// writeVersion1 rewrites the image src as a version 1 image dst: what
// dimg wrote before version 2, frame for frame.
func writeVersion1(t *testing.T, src, dst string) {
	t.Helper()
	r, err := imagefmt.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h := r.Header()
	var buf bytes.Buffer
	w, err := imagefmt.NewWriter(&buf, imagefmt.WriterOptions{Version: 1, DiskSize: h.DiskSize, ChunkSize: h.ChunkSize,
		SectorSize: h.SectorSize, ToolVersion: "dimg v1 test", Metadata: h.Metadata})
	if err != nil {
		t.Fatal(err)
	}
	runs := r.ZeroRuns()
	ri := 0
	fb := make([]byte, imagefmt.FrameBufSize(h.ChunkSize))
	for e := range r.Entries() {
		for ; ri < len(runs) && runs[ri].Start < e.Chunk; ri++ {
			if err := w.WriteZeroRun(runs[ri].Start, runs[ri].Count); err != nil {
				t.Fatal(err)
			}
		}
		f, _, err := r.ReadFrame(e.Chunk, fb)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
	}
	for ; ri < len(runs); ri++ {
		if err := w.WriteZeroRun(runs[ri].Start, runs[ri].Count); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSendCommitAndDelta: send --at N deploys commit N, and send of a
// delta deploys the disk its chain composes.
func TestSendCommitAndDelta(t *testing.T) {
	dir := t.TempDir()
	img, refs := historyImage(t, dir)
	d := filepath.Join(dir, "d.dimg")
	ref := filepath.Join(dir, "dref.img")
	copyFile(t, refs[4], ref)
	deltaRandom(t, rand.New(rand.NewSource(3)), img, d, "h.dimg", ref, 12)
	zs := filepath.Join(dir, "z.dimg")
	mustRun(t, "convert", "-q", "--compress", "zstd", img, zs)
	for i, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--at", "2", img}, refs[2]},
		{[]string{d}, ref},
		{[]string{zs}, refs[4]},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), sendRecvTimeout)
		port := fmt.Sprint(43000 + 10*i + int(fileSum(t, img)[0]))
		target := filepath.Join(dir, fmt.Sprintf("rx%d.img", i))
		send := startDimg(ctx, append([]string{"send", "--interface", "lo", "--port", port, "--min-receivers", "1",
			"--max-rate", "400M"}, tc.args...)...)
		rx := startDimg(ctx, "receive", "-q", "--interface", "lo", "--port", port, "--wait", "60s", target)
		if r := waitDimg(t, "receive", rx); r.code != 0 {
			cancel()
			t.Fatalf("receive %v: exit %d: %s", tc.args, r.code, r.out)
		}
		if s := waitDimg(t, "send", send); s.code != 0 {
			cancel()
			t.Fatalf("send %v: exit %d\n%s", tc.args, s.code, s.out)
		}
		cancel()
		sameFiles(t, tc.want, target)
	}
}

// TestMountAtAndWriters: mount --at N shows commit N; mount --rw --delta
// --at N makes a delta over commit N; while a read-write mount holds the
// image, compact and revert are refused naming it, and readers (flatten,
// restore) keep working.
func TestMountAtAndWriters(t *testing.T) {
	requireRW(t)
	dir := t.TempDir()
	img, refs := historyImage(t, dir)
	for _, n := range []int{1, 4} {
		mnt := filepath.Join(t.TempDir(), "mnt")
		os.Mkdir(mnt, 0o755)
		mustRun(t, "mount", "--background", "--at", fmt.Sprint(n), img, mnt)
		sameFiles(t, refs[n], filepath.Join(mnt, "disk.img"))
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Fatalf("umount: %v %s", err, out)
		}
	}
	if _, errs, code := run(t, nil, "mount", "--rw", "--at", "2", img, t.TempDir()); code != 2 || !strings.Contains(errs, "--delta") {
		t.Fatalf("mount --rw --at without --delta: exit %d %s", code, errs)
	}

	// A delta over commit 2, without changes, is commit 2's disk.
	delta := filepath.Join(dir, "at2.dimg")
	m := startRW(t, img, "--delta", delta, "--at", "2")
	if err, errs := m.unmount(t); err != nil {
		t.Fatalf("mount --rw --delta --at 2: %v\n%s", err, errs)
	}
	restoreCmp(t, refs[2], delta)
	if l := imageLog(t, delta); len(l.Bases) != 1 || l.Bases[0].Commit != 2 {
		t.Fatalf("delta over commit 2: %+v", l)
	}

	m = startRW(t, img, "-m", "held")
	pid := fmt.Sprintf("pid %d", m.cmd.Process.Pid)
	for _, args := range [][]string{{"compact", img}, {"revert", img, "1"}} {
		_, errs, code := run(t, nil, args...)
		if code != 1 || !strings.Contains(errs, pid) {
			t.Errorf("%v while mounted read-write: exit %d: %s", args, code, errs)
		}
		t.Logf("%v while mounted read-write: %s", args, errs)
	}
	flat := filepath.Join(dir, "flat.dimg")
	mustRun(t, "flatten", "-q", img, flat)
	restoreCmp(t, refs[4], flat)
	if err, errs := m.unmount(t); err != nil {
		t.Fatalf("unmount: %v\n%s", err, errs)
	}
	mustRun(t, "compact", "-q", img)
	restoreCmp(t, refs[4], img)
	// The delta over commit 2 no longer finds its base state: refused.
	if _, errs, code := run(t, nil, "info", delta); code == 0 || !strings.Contains(errs, "at2.dimg") || !strings.Contains(errs, "h.dimg") {
		t.Fatalf("delta over a compacted-away commit: exit %d %s", code, errs)
	} else {
		t.Logf("delta over a compacted-away commit: %s", errs)
	}
}
