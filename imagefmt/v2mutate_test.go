package imagefmt

import (
	"bytes"
	"context"
	"math/rand"
	"testing"
	"time"
)

// readEverything reads img through every reading path.
func readEverything(img []byte) {
	r, err := NewReader(bytes.NewReader(img), int64(len(img)), ReaderOptions{})
	if err == nil {
		p := make([]byte, 256<<10)
		for off := int64(0); off < min(r.Size(), 4<<20); off += int64(len(p)) {
			r.ReadAt(p, off)
		}
		r.Log()
		for range r.Entries() {
		}
		r.ZeroRuns()
		if r.Header().NumChunks() < 1<<16 {
			r.VerifyWith(context.Background(), VerifyOptions{AllCommits: true})
		}
	}
	s, err := NewStreamReader(bytes.NewReader(img))
	for i := 0; err == nil && i < 1000; i++ {
		var fr Frame
		fr, err = s.Next()
		if err == nil && fr.Zeros == 0 {
			fr.Decode(nil)
		}
	}
}

// TestV2Mutations feeds damaged copies of small images (random bytes
// changed, cut short) to every reading path: errors, never a panic or a
// hang. (FuzzReaderV2 does the same, guided, under go test -fuzz.)
func TestV2Mutations(t *testing.T) {
	d := textDisk(300)
	img := writeV2(t, d, WriterOptions{})
	mf := &memFile{b: bytes.Clone(img)}
	ed, err := newEditor(mf, int64(len(img)), EditorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ed.Commit(context.Background(), changesOf(d, []int64{0, 4, 255, 299}), CommitOptions{Message: "x"}); err != nil {
		t.Fatal(err)
	}
	seeds := [][]byte{img, mf.bytes()}
	rng := rand.New(rand.NewSource(1))
	var worst time.Duration
	for i := 0; i < 1500; i++ {
		b := bytes.Clone(seeds[i%2])
		for k := rng.Intn(4) + 1; k > 0; k-- {
			b[rng.Intn(len(b))] = byte(rng.Intn(256))
		}
		if rng.Intn(5) == 0 {
			b = b[:rng.Intn(len(b))]
		}
		t0 := time.Now()
		readEverything(b)
		worst = max(worst, time.Since(t0))
	}
	t.Logf("slowest of 1500 damaged images: %v", worst)
}
