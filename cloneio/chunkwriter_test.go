package cloneio

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/dimg-project/dimg/imagefmt"
)

// writerDisk is a disk of 20 chunks of 4 KiB plus a short last one: chunks
// 2, 3 and 11 are a zero run, 5-8 and the last are unused, the rest stored.
func writerDisk(t *testing.T) (disk []byte, stored []int64, zero imagefmt.ZeroRun) {
	t.Helper()
	const cs = 4096
	disk = make([]byte, 20*cs+1000)
	rng := rand.New(rand.NewSource(3))
	for c := int64(0); c < 21; c++ {
		switch {
		case c == 2 || c == 3 || c >= 5 && c <= 8 || c == 11 || c == 20:
			continue
		}
		stored = append(stored, c)
		rng.Read(disk[c*cs : min((c+1)*cs, int64(len(disk)))])
	}
	return disk, stored, imagefmt.ZeroRun{Start: 2, Count: 2}
}

func openTestTarget(t *testing.T, size int64) *Target {
	t.Helper()
	tg, err := OpenTarget(filepath.Join(t.TempDir(), "t.img"), size, 0, TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tg.Abort)
	return tg
}

// TestChunkWriterAnyOrder writes stored chunks from several goroutines in
// reverse order, zero runs and one explicit unused range, and leaves the
// rest to Finish: the target holds the disk, Verify passes, and the byte
// counts cover the disk exactly once.
func TestChunkWriterAnyOrder(t *testing.T) {
	disk, stored, zero := writerDisk(t)
	tg := openTestTarget(t, int64(len(disk)))
	w := NewChunkWriter(tg, 4096, nil)
	if err := w.Unused(5, 4); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(stored)+2)
	for i := len(stored) - 1; i >= 0; i-- {
		c := stored[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := disk[c*4096 : c*4096+w.ChunkLen(c)]
			errs <- w.WriteChunk(c, b, sha256.Sum256(b))
		}()
	}
	errs <- w.ZeroRun(imagefmt.ZeroRun{Start: 11, Count: 1})
	errs <- w.ZeroRun(zero)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Finish(); err != nil {
		t.Fatal(err)
	}
	st := w.Stats()
	if st.Written+st.Zeroed+st.Unused != int64(len(disk)) || st.Zeroed != 3*4096 || st.Unused != 4*4096+1000 {
		t.Fatalf("stats %+v for a %d-byte disk", st, len(disk))
	}
	want, err := w.Digest()
	if err != nil {
		t.Fatal(err)
	}
	got, err := w.Verify(context.Background(), want, nil)
	if err != nil || got != want {
		t.Fatalf("verify: %v (digest %x, want %x)", err, got, want)
	}
	b, _ := os.ReadFile(tg.atomic.Name())
	if !bytes.Equal(b, disk) {
		t.Fatal("target differs from the disk")
	}
}

// TestChunkWriterRefuses: a chunk accounted twice, a zero run over a
// stored chunk, a chunk of the wrong length or outside the disk is a clear
// error, never a silent overwrite.
func TestChunkWriterRefuses(t *testing.T) {
	disk, _, _ := writerDisk(t)
	tg := openTestTarget(t, int64(len(disk)))
	w := NewChunkWriter(tg, 4096, nil)
	chunk := disk[:4096]
	if err := w.WriteChunk(0, chunk, [32]byte{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"twice", w.WriteChunk(0, chunk, [32]byte{})},
		{"zero run over a stored chunk", w.ZeroRun(imagefmt.ZeroRun{Start: 0, Count: 2})},
		{"unused over a stored chunk", w.Unused(0, 1)},
		{"short chunk", w.WriteChunk(1, chunk[:100], [32]byte{})},
		{"outside the disk", w.WriteChunk(21, chunk, [32]byte{})},
		{"zero run past the end", w.ZeroRun(imagefmt.ZeroRun{Start: 19, Count: 5})},
	} {
		if !errors.Is(tc.err, imagefmt.ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", tc.name, tc.err)
		}
	}
}

// TestChunkWriterVerifyFinds: a stored chunk changed, a zero-run chunk
// that is not zero, and a digest that is not the expected one are each
// reported, with the chunks named in disk order.
func TestChunkWriterVerifyFinds(t *testing.T) {
	disk, stored, zero := writerDisk(t)
	tg := openTestTarget(t, int64(len(disk)))
	w := NewChunkWriter(tg, 4096, nil)
	for _, c := range stored {
		b := disk[c*4096 : c*4096+w.ChunkLen(c)]
		if err := w.WriteChunk(c, b, sha256.Sum256(b)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.ZeroRun(zero); err != nil {
		t.Fatal(err)
	}
	if err := w.Finish(); err != nil {
		t.Fatal(err)
	}
	want, _ := w.Digest()
	if _, err := w.Verify(context.Background(), [32]byte{1}, nil); !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), "digest") {
		t.Fatalf("wrong digest: %v", err)
	}
	tg.WriteAt([]byte{0xAA}, 15*4096+7) // stored chunk 15
	tg.WriteAt([]byte{0xBB}, 3*4096+9)  // zero-run chunk 3
	tg.WriteAt([]byte{0xCC}, 6*4096)    // unused: may hold anything
	_, err := w.Verify(context.Background(), want, nil)
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Count != 2 || len(ve.Bad) != 2 || ve.Bad[0] != (ChunkRange{3, 1}) || ve.Bad[1] != (ChunkRange{15, 1}) {
		t.Fatalf("verify: %v (%+v)", err, ve)
	}
	if msg := err.Error(); !strings.Contains(msg, "chunk 3 ") || !strings.Contains(msg, "not zero") || !strings.Contains(msg, "chunk 15 ") {
		t.Fatalf("message does not name the chunks: %s", msg)
	}
}
