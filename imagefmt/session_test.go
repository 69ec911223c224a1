package imagefmt

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sessionImage writes d as a version 2 (or 1) image file.
func sessionImage(t *testing.T, d *disk, version int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.dimg")
	if err := os.WriteFile(path, writeV2(t, d, WriterOptions{Version: version}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func readImage(t *testing.T, path string, opt ReaderOptions) ([]byte, *Reader) {
	t.Helper()
	r, err := OpenOptions(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	got := make([]byte, r.Size())
	if _, err := r.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	return got, r
}

// sessionWrite writes a pattern at off through s and into the model.
func sessionWrite(t *testing.T, s *Session, model []byte, off int64, n int, b byte) {
	t.Helper()
	p := bytes.Repeat([]byte{b}, n)
	if _, err := s.Disk().WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
	copy(model[off:], p)
}

func TestSessionCommitInPlace(t *testing.T) {
	const size, cs = 4<<20 + 4096, 64 << 10
	d := newDisk(size, cs)
	path := sessionImage(t, d, 0)
	model := bytes.Clone(d.data)

	s, err := OpenSession(path, SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Recovered != nil || s.Target() != path {
		t.Errorf("fresh session: recovered %v target %s", s.Recovered, s.Target())
	}
	// A second writer is refused and told who; readers read the base.
	if _, err := OpenSession(path, SessionOptions{}); !errors.Is(err, ErrLocked) {
		t.Errorf("second session: %v, want ErrLocked", err)
	}
	sessionWrite(t, s, model, 100, 5000, 1)
	sessionWrite(t, s, model, size-10, 10, 2)
	sessionWrite(t, s, model, 2<<20, cs, 0) // a chunk that becomes zero
	if got, _ := readImage(t, path, ReaderOptions{}); !bytes.Equal(got, d.data) {
		t.Error("a reader sees uncommitted changes")
	}
	info, changed, err := s.Commit(context.Background(), "first edit")
	if err != nil || !changed {
		t.Fatalf("commit: %v, changed %v", err, changed)
	}
	if info.Number != 2 || info.Message != "first edit" || info.ChunksChanged != 3 {
		t.Errorf("commit %+v", info)
	}
	if _, err := os.Stat(ScratchPath(path)); !errors.Is(err, fs.ErrNotExist) {
		t.Error("scratch file left after the commit")
	}
	if _, err := os.Stat(LockPath(path)); !errors.Is(err, fs.ErrNotExist) {
		t.Error("lock file left after the commit")
	}
	got, r := readImage(t, path, ReaderOptions{})
	if !bytes.Equal(got, model) {
		t.Error("the committed image differs from the model")
	}
	if r.Commit().Session != info.Session || info.Session == ([16]byte{}) {
		t.Error("the commit does not record the session")
	}
	old, _ := readImage(t, path, ReaderOptions{Commit: 1})
	if !bytes.Equal(old, d.data) {
		t.Error("commit 1 changed")
	}

	// No changes: no commit.
	s, err = OpenSession(path, SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, changed, err := s.Commit(context.Background(), "nothing"); err != nil || changed {
		t.Errorf("empty commit: %v, changed %v", err, changed)
	}
	if _, r := readImage(t, path, ReaderOptions{}); r.Commits() != 2 {
		t.Errorf("an empty session made commit %d", r.Commits())
	}
}

// TestSessionRecover: changes synced by a session that ended without
// committing (Close, or a crash) are taken up by the next session; a
// crash after the commit leaves nothing to offer twice; changes made over
// an older state are refused, and DropScratch drops them.
func TestSessionRecover(t *testing.T) {
	const size, cs = 2 << 20, 64 << 10
	d := newDisk(size, cs)
	path := sessionImage(t, d, 0)
	model := bytes.Clone(d.data)

	s, err := OpenSession(path, SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sessionWrite(t, s, model, 70000, 100000, 7)
	if err := s.Disk().Sync(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenSession(path, SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Recovered == nil || s.Recovered.Chunks != 2 {
		t.Fatalf("recovered %+v, want 2 chunks", s.Recovered)
	}
	got := make([]byte, size)
	s.Disk().ReadAt(got, 0)
	if !bytes.Equal(got, model) {
		t.Error("the recovered disk differs from the model")
	}
	// Crash between the commit and the scratch file's removal: keep a
	// copy of the scratch file and put it back after the commit.
	scratch := ScratchPath(path)
	saved, err := os.ReadFile(scratch)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Commit(context.Background(), "recovered"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(scratch, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = OpenSession(path, SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Recovered != nil || !s.StaleScratchRemoved {
		t.Errorf("after a crash past the commit: recovered %v, stale removed %v", s.Recovered, s.StaleScratchRemoved)
	}
	sessionWrite(t, s, model, 0, 10, 9)
	s.Disk().Sync()
	s.Close()

	// The image moves on (another session's commit) under the scratch
	// file: the changes cannot be applied.
	saved, _ = os.ReadFile(scratch)
	os.Remove(scratch)
	s, err = OpenSession(path, SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sessionWrite(t, s, model, 4096, 10, 8)
	if _, _, err := s.Commit(context.Background(), "other"); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(scratch, saved, 0o600)
	_, err = OpenSession(path, SessionOptions{})
	if !errors.Is(err, ErrBaseMismatch) || !strings.Contains(err.Error(), "commit 2 of") || !strings.Contains(err.Error(), "now at commit 3") || !strings.Contains(err.Error(), "--drop") {
		t.Fatalf("stale changes: %v", err)
	}
	if dropped, err := DropScratch(path); !dropped || err != nil {
		t.Fatalf("drop: %v %v", dropped, err)
	}
	if dropped, err := DropScratch(path); dropped || err != nil {
		t.Errorf("second drop: %v %v", dropped, err)
	}
	s, err = OpenSession(path, SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Discard()
	if _, err := os.Stat(scratch); !errors.Is(err, fs.ErrNotExist) {
		t.Error("scratch file left after Discard")
	}
}

func TestSessionDelta(t *testing.T) {
	const size, cs = 2 << 20, 64 << 10
	d := newDisk(size, cs)
	path := sessionImage(t, d, 0)
	before, _ := os.ReadFile(path)
	model := bytes.Clone(d.data)
	delta := filepath.Join(t.TempDir(), "d1.dimg")

	s, err := OpenSession(path, SessionOptions{Delta: delta})
	if err != nil {
		t.Fatal(err)
	}
	// The base is not locked: an in-place session could run, but the
	// delta is.
	if _, err := OpenSession(path, SessionOptions{Delta: delta}); !errors.Is(err, ErrLocked) {
		t.Errorf("second delta session: %v", err)
	}
	sessionWrite(t, s, model, 12345, 200000, 3)
	info, changed, err := s.Commit(context.Background(), "delta")
	if err != nil || !changed || info.Number != 1 {
		t.Fatalf("delta commit: %+v %v %v", info, changed, err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("the base changed")
	}
	_, base := readImage(t, path, ReaderOptions{})
	got, _ := readImage(t, delta, ReaderOptions{Base: base})
	if !bytes.Equal(got, model) {
		t.Error("base + delta differs from the model")
	}
	if _, err := OpenSession(path, SessionOptions{Delta: delta}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("delta over an existing file: %v", err)
	}
	// A delta over the delta (found through the chain's path hints), then
	// a commit into that second delta in place.
	d2 := filepath.Join(filepath.Dir(delta), "d2.dimg")
	s, err = OpenSession(delta, SessionOptions{Delta: d2})
	if err != nil {
		t.Fatal(err)
	}
	sessionWrite(t, s, model, 1<<20, 70000, 4)
	if _, _, err := s.Commit(context.Background(), "d2"); err != nil {
		t.Fatal(err)
	}
	s, err = OpenSession(d2, SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sessionWrite(t, s, model, 0, 4096, 5)
	if info, _, err := s.Commit(context.Background(), "in d2"); err != nil || info.Number != 2 {
		t.Fatalf("commit into a delta: %+v %v", info, err)
	}
	chain, err := OpenChain(d2, ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer chain.Close()
	got = make([]byte, size)
	if _, err := chain.ReadAt(got, 0); err != nil || !bytes.Equal(got, model) {
		t.Errorf("base -> d1 -> d2 differs from the model (%v)", err)
	}
	// Without changes the delta is still made.
	empty := filepath.Join(t.TempDir(), "empty.dimg")
	s, err = OpenSession(path, SessionOptions{Delta: empty})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Commit(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	if got, _ := readImage(t, empty, ReaderOptions{Base: base}); !bytes.Equal(got, d.data) {
		t.Error("an empty delta differs from its base")
	}
}

func TestSessionVersion1(t *testing.T) {
	d := newDisk(1<<20, 64<<10)
	path := sessionImage(t, d, Version)
	for _, opt := range []SessionOptions{{}, {Delta: filepath.Join(t.TempDir(), "d.dimg")}} {
		_, err := OpenSession(path, opt)
		if !errors.Is(err, ErrVersion1) {
			t.Errorf("session %+v on a version 1 image: %v", opt, err)
		}
		if _, err := os.Stat(LockPath(path)); !errors.Is(err, fs.ErrNotExist) {
			t.Error("a refused session left its lock file")
		}
	}
}
