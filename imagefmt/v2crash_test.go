package imagefmt

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"slices"
	"testing"
)

var errCrash = errors.New("crash")

// crashFile models a disk under power loss: writes land in a volatile
// view at once, and become durable only at Sync. The crash comes when the
// write budget runs out (the write in progress lands partly: a torn
// write) or at a given Sync (before it syncs). After the crash, image()
// is what a reboot finds: the durable bytes plus any subset of the writes
// made since the last Sync, each one possibly torn at 512-byte sectors.
type crashFile struct {
	durable   []byte
	cur       []byte
	pending   []pendingWrite
	budget    int64 // bytes that may still be written
	syncsLeft int   // Syncs that may still complete (<0: no limit)
	crashed   bool
}

type pendingWrite struct {
	off      int64
	b        []byte
	truncate bool // a Truncate to off
}

func newCrashFile(img []byte, budget int64, syncs int) *crashFile {
	return &crashFile{durable: slices.Clone(img), cur: slices.Clone(img), budget: budget, syncsLeft: syncs}
}

func (f *crashFile) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(f.cur)) {
		return 0, errEOF(0)
	}
	n := copy(p, f.cur[off:])
	if n < len(p) {
		return n, errEOF(n)
	}
	return n, nil
}

func errEOF(int) error { return io.EOF }

func put(b []byte, off int64, p []byte) []byte {
	if end := off + int64(len(p)); end > int64(len(b)) {
		b = append(b, make([]byte, end-int64(len(b)))...)
	}
	copy(b[off:], p)
	return b
}

func (f *crashFile) WriteAt(p []byte, off int64) (int, error) {
	if f.crashed {
		return 0, errCrash
	}
	if int64(len(p)) > f.budget {
		p = p[:f.budget]
		f.crashed = true
	}
	f.budget -= int64(len(p))
	f.cur = put(f.cur, off, p)
	f.pending = append(f.pending, pendingWrite{off: off, b: slices.Clone(p)})
	if f.crashed {
		return len(p), errCrash
	}
	return len(p), nil
}

func (f *crashFile) Sync() error {
	if f.crashed {
		return errCrash
	}
	if f.syncsLeft == 0 {
		f.crashed = true
		return errCrash
	}
	f.syncsLeft--
	f.durable = slices.Clone(f.cur)
	f.pending = nil
	return nil
}

func (f *crashFile) Truncate(n int64) error {
	if f.crashed {
		return errCrash
	}
	if n < int64(len(f.cur)) {
		f.cur = f.cur[:n]
	}
	f.pending = append(f.pending, pendingWrite{off: n, truncate: true})
	return nil
}

// image is what survives the crash.
func (f *crashFile) image(rng *rand.Rand) []byte {
	b := slices.Clone(f.durable)
	for _, w := range f.pending {
		if rng.Intn(2) == 0 {
			continue
		}
		if w.truncate {
			if w.off < int64(len(b)) {
				b = b[:w.off]
			}
			continue
		}
		// Each 512-byte sector of the write lands or not.
		for s := int64(0); s < int64(len(w.b)); s += 512 {
			if rng.Intn(4) != 0 {
				b = put(b, w.off+s, w.b[s:min(int64(len(w.b)), s+512)])
			}
		}
	}
	return b
}

// countFile counts what a commit writes and syncs, to place crash points.
type countFile struct {
	memFile
	written int64
	syncs   int
}

func (f *countFile) WriteAt(p []byte, off int64) (int, error) {
	f.written += int64(len(p))
	return f.memFile.WriteAt(p, off)
}

func (f *countFile) Sync() error { f.syncs++; return nil }

// TestCommitCrash interrupts commits at random points (a torn write, or
// a Sync that never happens) and checks that what survives opens, without
// repair, at the commit before or the one being made, verifies, reads as
// that commit's disk, and takes the next commit.
func TestCommitCrash(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewSource(42))
	d0 := newDisk(40*64<<10+333, 64<<10)
	stream := writeV2(t, d0, WriterOptions{})
	// A second starting point: an image with a commit in place already.
	d1 := d0.clone()
	mf := &memFile{b: slices.Clone(stream)}
	ed, err := newEditor(mf, int64(len(mf.b)), EditorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ed.Commit(ctx, changesOf(d1, mutate(rng, d1, 6, false)), CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	committed := mf.bytes()

	const trials = 60
	outcomes := map[string]int{}
	for trial := range trials {
		start, before := stream, d0
		if trial%2 == 1 {
			start, before = committed, d1
		}
		after := before.clone()
		chunks := mutate(rng, after, 1+rng.Intn(8), false)
		// Measure the commit, then crash it somewhere inside.
		cf := &countFile{memFile: memFile{b: slices.Clone(start)}}
		e0, err := newEditor(cf, int64(len(cf.b)), EditorOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e0.Commit(ctx, changesOf(after, chunks), CommitOptions{Message: "m"}); err != nil {
			t.Fatal(err)
		}
		budget, syncs := int64(1<<40), -1
		switch rng.Intn(3) {
		case 0: // before some Sync
			syncs = rng.Intn(cf.syncs + 1)
		case 1: // anywhere
			budget = rng.Int63n(cf.written + 1)
		case 2: // near the end: the slot write
			budget = cf.written - rng.Int63n(min(cf.written, 2*slotSize)+1)
		}
		f := newCrashFile(start, budget, syncs)
		e, err := newEditor(f, int64(len(start)), EditorOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, cerr := e.Commit(ctx, changesOf(after, chunks), CommitOptions{Message: "m"})
		if cerr != nil && !errors.Is(cerr, errCrash) {
			t.Fatalf("trial %d: commit: %v", trial, cerr)
		}
		img := f.image(rng)
		r, err := NewReader(bytes.NewReader(img), int64(len(img)), ReaderOptions{})
		if err != nil {
			t.Fatalf("trial %d (budget %d of %d, syncs %d of %d): open after crash: %v", trial, budget, cf.written, syncs, cf.syncs, err)
		}
		var want *disk
		switch r.Digest() {
		case digestOf(r.Header(), before):
			want = before
			outcomes["previous"]++
		case digestOf(r.Header(), after):
			want = after
			outcomes["new"]++
		default:
			t.Fatalf("trial %d: opened at a digest that is neither commit's", trial)
		}
		checkReader(t, r, want)
		verifyOK(t, r, true)
		out, _, err := streamRead(img, len(want.data))
		if err != nil || !bytes.Equal(out, want.data) {
			t.Fatalf("trial %d: stream read after crash: %v", trial, err)
		}
		// The next commit writes over the torn tail.
		next := want.clone()
		mf := &memFile{b: img}
		e2, err := newEditor(mf, int64(len(img)), EditorOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e2.Commit(ctx, changesOf(next, mutate(rng, next, 3, false)), CommitOptions{}); err != nil {
			t.Fatalf("trial %d: commit after crash: %v", trial, err)
		}
		r2 := openMem(t, mf.bytes(), ReaderOptions{})
		checkReader(t, r2, next)
		verifyOK(t, r2, true)
	}
	t.Logf("%d trials: %v", trials, outcomes)
	if outcomes["previous"] == 0 || outcomes["new"] == 0 {
		t.Fatalf("the crash points never gave both outcomes: %v", outcomes)
	}
}
