package imagefmt

import (
	"context"
	"errors"
	"math/rand"
	"slices"
	"testing"
)

// TestV2RootHashEveryPath: the newest commit's root records a sum its
// chunk does not have (CRC redone, so only the hashes tell). Every path
// refuses it at the commit's digest. Before, the random-access reader
// opened it (restore, ls and mount exited 0; only verify noticed), and
// then the stream reader alone accepted it.
func TestV2RootHashEveryPath(t *testing.T) {
	d := newDisk(1<<20, 64<<10) // 16 chunks: the root is a leaf
	mf := &memFile{b: writeV2(t, d, WriterOptions{})}
	ed, err := newEditor(mf, int64(len(mf.b)), EditorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(7))
	if _, err := ed.Commit(context.Background(), changesOf(d, mutate(rng, d, 3, false)), CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	img := slices.Clone(mf.bytes())
	r := openMem(t, img, ReaderOptions{})
	root, recOff := r.t.commit.rootOff, r.t.commitOff
	if r.t.root.level != 0 || len(r.t.root.stored) == 0 {
		t.Fatalf("want a leaf root with stored entries, got level %d", r.t.root.level)
	}
	r.Close()
	// The first stored entry's SHA-256 (entry at 24, sum at +16).
	img[root+24+16] ^= 1
	n := int(le.Uint32(img[root+12:]))
	le.PutUint32(img[root+int64(n)-4:], gcrc(img[root:root+int64(n)-4]))
	for _, p := range readPaths {
		_, err := p.read(img)
		var re *RuleError
		if !errors.As(err, &re) || !errors.Is(err, ErrCorrupt) || re.Rule != RuleTreeHash || re.Offset != recOff+64 {
			t.Errorf("%s: %v, want rule %s at %d", p.name, err, RuleTreeHash, recOff+64)
		}
	}
	// The unforged image passes every path.
	for _, p := range readPaths {
		if _, err := p.read(mf.bytes()); err != nil {
			t.Errorf("%s: %v", p.name, err)
		}
	}
}
