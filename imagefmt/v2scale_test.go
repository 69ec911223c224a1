package imagefmt

import (
	"bytes"
	"context"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// sparseImage writes, straight to a file, an image of a disk of n chunks
// of 256 KiB whose chunks c with c%every == 0 are stored (all with the
// same tiny zstd frame, its chunk number changed), the rest unused.
func sparseImage(t testing.TB, path string, n, every int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const cs = 256 << 10
	comp := Compression{Method: "zstd"}
	w, err := NewWriter(f, WriterOptions{DiskSize: n * cs, ChunkSize: cs, Compression: comp, ToolVersion: "scale test",
		Metadata: []byte(`{"table":"none"}`)})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := NewEncoder(comp)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{'x'}, cs)
	proto, err := enc.Encode(make([]byte, FrameBufSize(cs)), 0, data)
	if err != nil {
		t.Fatal(err)
	}
	for c := int64(0); c < n; c += every {
		fr := proto
		fr.Chunk = c
		putFrameHeader(fr.Raw, &fr)
		if err := w.WriteFrame(fr); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// Flushed now, so that the first commit's sync does not pay for it.
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// scaleDisks are the two disks of TestCommitScale and of
// scripts/bench-commit.sh: n chunks of 256 KiB, every each-th stored.
var scaleDisks = []struct {
	name         string
	chunks, each int64
}{
	{"4GiB", 16384, 2},    // 8,192 stored chunks
	{"2TiB", 8 << 20, 28}, // 299,594 stored chunks
}

// TestWriteScaleImages writes the images of scaleDisks, as sparseImage
// makes them, into $DIMG_SCALE_IMAGES (NAME.dimg): what
// scripts/bench-commit.sh commits to through dimg mount --rw.
func TestWriteScaleImages(t *testing.T) {
	dir := os.Getenv("DIMG_SCALE_IMAGES")
	if dir == "" {
		t.Skip("set DIMG_SCALE_IMAGES=DIR to write the commit benchmark's images into DIR")
	}
	for _, d := range scaleDisks {
		t0 := time.Now()
		sparseImage(t, filepath.Join(dir, d.name+".dimg"), d.chunks, d.each)
		t.Logf("%s: %d chunks, %d stored, written in %v", d.name, d.chunks, (d.chunks+d.each-1)/d.each, time.Since(t0).Round(time.Millisecond))
	}
}

// openCounter counts what an open reads.
type openCounter struct {
	r            io.ReaderAt
	reads, bytes atomic.Int64
}

func (c *openCounter) ReadAt(p []byte, off int64) (int, error) {
	c.reads.Add(1)
	c.bytes.Add(int64(len(p)))
	return c.r.ReadAt(p, off)
}

// TestCommitScale commits 1 MiB to an image of a 4 GiB disk and to one of
// a 2 TiB disk (generated sparse, about 300,000 stored chunks): the time
// and the file growth must be about the same, the growth the changed
// chunks plus a small constant, and opening must read a bounded amount.
func TestCommitScale(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 2 TiB-disk image (about 40 MB)")
	}
	ctx := context.Background()
	dir := t.TempDir()
	type result struct {
		name       string
		gen, open  time.Duration
		openBytes  int64
		openReads  int64
		commits    []time.Duration
		growth     []int64
		fileSize   int64
		storedPrev int64
	}
	var results []result
	for _, tc := range scaleDisks {
		res := result{name: tc.name}
		path := filepath.Join(dir, tc.name+".dimg")
		t0 := time.Now()
		sparseImage(t, path, tc.chunks, tc.each)
		res.gen = time.Since(t0)

		// Opening reads the header region, a commit record and the root.
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		cr := &openCounter{r: f}
		t0 = time.Now()
		r, err := NewReader(cr, st.Size(), ReaderOptions{})
		if err != nil {
			t.Fatal(err)
		}
		res.open = time.Since(t0)
		res.openBytes, res.openReads = cr.bytes.Load(), cr.reads.Load()
		res.storedPrev = int64(r.StoredChunks())
		f.Close()
		if res.openBytes > 128<<10 || res.openReads > 5 {
			t.Errorf("%s: opening read %d bytes in %d reads", tc.name, res.openBytes, res.openReads)
		}

		rng := rand.New(rand.NewSource(1))
		ed, err := OpenEditor(path, EditorOptions{})
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, 4*256<<10)
		for i := range 5 {
			rng.Read(data)
			first := rng.Int63n(tc.chunks - 4)
			changes := func(yield func(ChunkChange, error) bool) {
				for k := range int64(4) {
					if !yield(ChunkChange{Chunk: first + k, State: ChunkStored, Data: data[k*256<<10 : (k+1)*256<<10]}, nil) {
						return
					}
				}
			}
			before, _ := os.Stat(path)
			t0 := time.Now()
			if _, err := ed.Commit(ctx, changes, CommitOptions{Message: "1 MiB"}); err != nil {
				t.Fatal(err)
			}
			res.commits = append(res.commits, time.Since(t0))
			after, _ := os.Stat(path)
			res.growth = append(res.growth, after.Size()-before.Size())
			_ = i
		}
		ed.Close()
		st2, _ := os.Stat(path)
		res.fileSize = st2.Size()
		r2, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if r2.Commits() != 6 {
			t.Fatalf("%s: %d commits", tc.name, r2.Commits())
		}
		r2.Close()
		results = append(results, res)
	}
	const changed = 4 * (FrameHeaderSize + 256<<10)
	for _, res := range results {
		slices.Sort(res.commits)
		for _, g := range res.growth {
			// The frames, up to three 12 KiB nodes and a commit record.
			if g > changed+48<<10 {
				t.Errorf("%s: a 1 MiB commit grew the file by %d bytes (changed %d)", res.name, g, changed)
			}
		}
		t.Logf("%s: image %.1f MB written in %v; open %v (%d reads, %d bytes); 1 MiB commit median %v (min %v, max %v); growth %v bytes",
			res.name, float64(res.fileSize)/1e6, res.gen.Round(time.Millisecond), res.open.Round(time.Microsecond), res.openReads, res.openBytes,
			res.commits[2].Round(time.Microsecond), res.commits[0].Round(time.Microsecond), res.commits[4].Round(time.Microsecond), res.growth)
	}
	// Time is only logged: what a commit writes and what an open reads are
	// asserted above, and they decide its cost; wall-time ratios on a shared
	// machine belong to make bench (scripts/bench-commit.sh), not make test.
	small, big := results[0], results[1]
	t.Logf("best of five 1 MiB commits: 2 TiB disk %v, 4 GiB disk %v (ratio %.2f)",
		big.commits[0], small.commits[0], float64(big.commits[0])/float64(small.commits[0]))
}
