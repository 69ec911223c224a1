package imagefmt

import (
	"bytes"
	"context"
	"math/rand"
	"os"
	"testing"
)

// TestDiffRevert: committing Diff(newest, commit n) makes a commit equal
// to commit n, for every n, in a plain image and in a delta.
func TestDiffRevert(t *testing.T) {
	ctx := context.Background()
	d := newDisk(600*64<<10+1000, 64<<10)
	mf := &memFile{b: writeV2(t, d, WriterOptions{})}
	ed, err := newEditor(mf, int64(len(mf.b)), EditorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(11))
	states := []*disk{d.clone()}
	for range 4 {
		if _, err := ed.Commit(ctx, changesOf(d, mutate(rng, d, 1+rng.Intn(40), false)), CommitOptions{}); err != nil {
			t.Fatal(err)
		}
		states = append(states, d.clone())
	}
	for n := int64(1); n <= 5; n++ {
		img := mf.bytes()
		old := openMem(t, img, ReaderOptions{Commit: n})
		var changed int
		for ch, err := range Diff(ed.Reader(), old) {
			if err != nil {
				t.Fatal(err)
			}
			changed++
			_ = ch
		}
		ci, err := ed.Commit(ctx, Diff(ed.Reader(), old), CommitOptions{Message: "revert"})
		if err != nil {
			t.Fatal(err)
		}
		if ci.Digest != old.Digest() || int(ci.ChunksChanged) != changed {
			t.Fatalf("revert to %d: digest %x want %x, %d changed of %d", n, ci.Digest[:4], old.Digest(), ci.ChunksChanged, changed)
		}
		checkReader(t, ed.Reader(), states[n-1])
		// Nothing left to change.
		for _, err := range Diff(ed.Reader(), old) {
			t.Fatalf("diff after revert: %v", err)
		}
	}
	verifyOK(t, openMem(t, mf.bytes(), ReaderOptions{}), true)
}

func TestDiffDelta(t *testing.T) {
	ctx := context.Background()
	d := newDisk(300*64<<10, 64<<10)
	base := openMem(t, writeV2(t, d, WriterOptions{}), ReaderOptions{})
	rng := rand.New(rand.NewSource(5))
	d1 := d.clone()
	f1 := &memFile{}
	e1, err := newDelta(ctx, f1, base, "base.dimg", changesOf(d1, mutate(rng, d1, 30, true)), CommitOptions{}, EditorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e1.Commit(ctx, changesOf(d1, mutate(rng, d1, 30, true)), CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	old := openMem(t, f1.bytes(), ReaderOptions{Base: base, Commit: 1})
	ci, err := e1.Commit(ctx, Diff(e1.Reader(), old), CommitOptions{})
	if err != nil || ci.Digest != old.Digest() {
		t.Fatalf("revert a delta: %v", err)
	}
	// Reverting a delta to the base: a diff against the base itself.
	if _, err := e1.Commit(ctx, Diff(e1.Reader(), base), CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	checkReader(t, e1.Reader(), d)
}

// TestOpenChainByDigest: a delta opens over its base after the base was
// rewritten with another history (compacted), found by digest.
func TestOpenChainByDigest(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := newDisk(200*64<<10, 64<<10)
	basePath := dir + "/base.dimg"
	if err := os.WriteFile(basePath, writeV2(t, d, WriterOptions{}), 0o644); err != nil {
		t.Fatal(err)
	}
	eb, err := OpenEditor(basePath, EditorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	if _, err := eb.Commit(ctx, changesOf(d, mutate(rng, d, 5, false)), CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	d1 := d.clone()
	e1, err := CreateDelta(ctx, dir+"/d1.dimg", eb.Reader(), "base.dimg", changesOf(d1, mutate(rng, d1, 5, true)), CommitOptions{}, EditorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e1.Close()
	eb.Close()
	// The base compacted: one commit, same UUID, same disk.
	if err := os.WriteFile(basePath, writeV2(t, d, WriterOptions{}), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := OpenChain(dir+"/d1.dimg", ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkReader(t, r, d1)
	r.Close()
	// --base names the base elsewhere.
	other := dir + "/moved.dimg"
	os.Rename(basePath, other)
	if _, err := OpenChain(dir+"/d1.dimg", ReaderOptions{}); err == nil {
		t.Fatal("opened a delta whose base is gone")
	}
	r, err = OpenChain(dir+"/d1.dimg", ReaderOptions{BasePath: other})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if _, err := OpenChain(other, ReaderOptions{BasePath: other}); err == nil || !bytes.Contains([]byte(err.Error()), []byte("not a delta")) {
		t.Fatalf("--base on a plain image: %v", err)
	}
}
