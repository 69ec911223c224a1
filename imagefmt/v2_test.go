package imagefmt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"iter"
	"math/rand"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// memFile is an in-memory image file an Editor can write.
type memFile struct {
	mu sync.Mutex
	b  []byte
}

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	return copy(m.b[off:], p), nil
}

func (m *memFile) Sync() error { return nil }

func (m *memFile) Truncate(n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n < int64(len(m.b)) {
		m.b = m.b[:n]
	}
	return nil
}

func (m *memFile) bytes() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.b)
}

// disk is a reference model: the logical bytes and each chunk's state.
type disk struct {
	chunk int
	data  []byte
	state []ChunkState
}

func (d *disk) chunkBytes(c int64) []byte {
	return d.data[c*int64(d.chunk) : min(int64(len(d.data)), (c+1)*int64(d.chunk))]
}

func (d *disk) clone() *disk {
	return &disk{chunk: d.chunk, data: slices.Clone(d.data), state: slices.Clone(d.state)}
}

// newDisk makes testDisk(size) with the states writeImage gives it: zero
// chunks in the first half in use, the rest unused.
func newDisk(size, chunk int) *disk {
	d := &disk{chunk: chunk, data: testDisk(size)}
	n := (size + chunk - 1) / chunk
	d.state = make([]ChunkState, n)
	for c := range int64(n) {
		switch {
		case !IsZero(d.chunkBytes(c)):
			d.state[c] = ChunkStored
		case c*int64(chunk) < int64(size)/2:
			d.state[c] = ChunkZero
		default:
			d.state[c] = ChunkUnused
		}
	}
	return d
}

// writeV2 writes d as a version 2 image through the streaming Writer.
func writeV2(t testing.TB, d *disk, opt WriterOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	opt.DiskSize, opt.ChunkSize = int64(len(d.data)), d.chunk
	if opt.ToolVersion == "" {
		opt.ToolVersion = "test"
	}
	if opt.Created.IsZero() {
		opt.Created = time.Unix(1700000000, 0)
	}
	if opt.UUID == ([16]byte{}) {
		opt.UUID = [16]byte{1, 2, 3}
	}
	if opt.Metadata == nil {
		opt.Metadata = []byte(`{"table":"none"}`)
	}
	w, err := NewWriter(&buf, opt)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := NewEncoder(opt.Compression)
	if err != nil {
		t.Fatal(err)
	}
	fb := make([]byte, FrameBufSize(d.chunk))
	for c := int64(0); c < int64(len(d.state)); c++ {
		switch d.state[c] {
		case ChunkStored:
			f, err := enc.Encode(fb, c, d.chunkBytes(c))
			if err != nil {
				t.Fatal(err)
			}
			if err := w.WriteFrame(f); err != nil {
				t.Fatal(err)
			}
		case ChunkZero:
			if err := w.WriteZeroRun(c, 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// digestOf computes the digest of d's content the way hdr's version does.
func digestOf(hdr *Header, d *disk) [32]byte {
	dg := NewDigester(hdr)
	for c := int64(0); c < int64(len(d.state)); c++ {
		if b := d.chunkBytes(c); !IsZero(b) {
			dg.Add(c, sha256Sum(b))
		}
	}
	return dg.Sum()
}

// checkReader compares everything r shows with d.
func checkReader(t testing.TB, r *Reader, d *disk) {
	t.Helper()
	got := make([]byte, len(d.data))
	if _, err := r.ReadAt(got, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if !bytes.Equal(got, d.data) {
		for i := range got {
			if got[i] != d.data[i] {
				c := int64(i / d.chunk)
				t.Fatalf("content differs first at byte %d (chunk %d, state %d, want state %d)", i, c, r.ChunkState(c), d.state[c])
			}
		}
	}
	stored := 0
	for c := int64(0); c < int64(len(d.state)); c++ {
		if s := r.ChunkState(c); s != d.state[c] {
			t.Fatalf("chunk %d state %d, want %d", c, s, d.state[c])
		}
		if d.state[c] == ChunkStored {
			stored++
		}
	}
	if r.StoredChunks() != stored {
		t.Fatalf("StoredChunks %d, want %d", r.StoredChunks(), stored)
	}
	var ents []int64
	for e := range r.Entries() {
		ents = append(ents, e.Chunk)
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if len(ents) != stored {
		t.Fatalf("Entries yields %d chunks, want %d", len(ents), stored)
	}
	var zeros int64
	for _, z := range r.ZeroRuns() {
		for c := z.Start; c < z.Start+z.Count; c++ {
			if d.state[c] != ChunkZero {
				t.Fatalf("zero run covers chunk %d of state %d", c, d.state[c])
			}
		}
		zeros += z.Count
	}
	want := int64(0)
	for _, s := range d.state {
		if s == ChunkZero {
			want++
		}
	}
	if zeros != want {
		t.Fatalf("zero runs cover %d chunks, want %d", zeros, want)
	}
	if dg := digestOf(r.Header(), d); r.Digest() != dg {
		t.Fatalf("digest %x, the content's is %x", r.Digest(), dg)
	}
}

// streamRead restores img from a stream: frames and runs applied in order.
func streamRead(img []byte, size int) ([]byte, *StreamReader, error) {
	s, err := NewStreamReader(bytes.NewReader(img))
	if err != nil {
		return nil, nil, err
	}
	out := make([]byte, size)
	cs := s.Header().ChunkSize
	for {
		f, err := s.Next()
		if err == io.EOF {
			return out, s, nil
		}
		if err != nil {
			return nil, s, err
		}
		off := f.Chunk * int64(cs)
		if f.Zeros > 0 {
			clear(out[off:min(int64(size), off+f.Zeros*int64(cs))])
			continue
		}
		data, err := f.Decode(nil)
		if err != nil {
			return nil, s, err
		}
		copy(out[off:], data)
	}
}

func openMem(t testing.TB, img []byte, opt ReaderOptions) *Reader {
	t.Helper()
	r, err := NewReader(bytes.NewReader(img), int64(len(img)), opt)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func verifyOK(t testing.TB, r *Reader, all bool) *VerifyResult {
	t.Helper()
	res, err := r.VerifyWith(context.Background(), VerifyOptions{AllCommits: all})
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK() {
		t.Fatalf("verify: bad %v, index %v, digest ok %v", res.Bad, res.Index, res.DigestOK)
	}
	return res
}

func TestV2RoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		size  int
		chunk int
		comp  Compression
	}{
		{"one-chunk", 1000, 64 << 10, Compression{}},
		{"short-last", 3<<20 + 12345, 64 << 10, Compression{}},
		{"two-levels", 300 * 64 << 10, 64 << 10, Compression{}}, // 300 chunks: two leaves
		{"zstd", 2<<20 + 99, 64 << 10, Compression{Method: "zstd", Level: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d *disk
			if tc.size > 64<<20 {
				// Sparse: data in a few places only.
				d = &disk{chunk: tc.chunk, data: make([]byte, tc.size)}
				d.state = make([]ChunkState, (tc.size+tc.chunk-1)/tc.chunk)
				for _, c := range []int64{0, 1, 255, 256, 300, 65535, 65536, 66000} {
					copy(d.chunkBytes(c), fmt.Sprintf("chunk %d", c))
					d.state[c] = ChunkStored
				}
				for c := 1000; c < 1600; c++ {
					d.state[c] = ChunkZero
				}
			} else {
				d = newDisk(tc.size, tc.chunk)
			}
			img := writeV2(t, d, WriterOptions{Compression: tc.comp})
			r := openMem(t, img, ReaderOptions{CacheBytes: 1})
			if r.Header().Version != Version2 || r.Commits() != 1 {
				t.Fatalf("version %d, %d commits", r.Header().Version, r.Commits())
			}
			if got := r.Features()&IncompatZstd != 0; got != (tc.comp.Method == "zstd") {
				t.Fatalf("zstd feature %v", got)
			}
			checkReader(t, r, d)
			verifyOK(t, r, false)
			out, s, err := streamRead(img, tc.size)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, d.data) || s.Commits() != 1 {
				t.Fatal("stream restore differs")
			}
			if string(r.Header().Metadata) != `{"table":"none"}` || string(s.Header().Metadata) != `{"table":"none"}` {
				t.Fatalf("metadata %q", r.Header().Metadata)
			}
		})
	}
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

// changesOf yields the changes that make d into d2 (chunks that differ in
// state or bytes), and applies nothing itself.
func changesOf(d2 *disk, chunks []int64) iter.Seq2[ChunkChange, error] {
	return func(yield func(ChunkChange, error) bool) {
		for _, c := range chunks {
			ch := ChunkChange{Chunk: c, State: d2.state[c]}
			if ch.State == ChunkStored {
				ch.Data = d2.chunkBytes(c)
			}
			if !yield(ch, nil) {
				return
			}
		}
	}
}

// mutate changes n random chunks of d (new bytes, zero, unused) and
// returns the sorted chunk numbers.
func mutate(rng *rand.Rand, d *disk, n int, delta bool) []int64 {
	set := map[int64]bool{}
	for len(set) < n {
		set[rng.Int63n(int64(len(d.state)))] = true
	}
	var chunks []int64
	for c := range set {
		chunks = append(chunks, c)
	}
	slices.Sort(chunks)
	for _, c := range chunks {
		b := d.chunkBytes(c)
		switch rng.Intn(4) {
		case 0, 1:
			rng.Read(b[:rng.Intn(len(b))+1])
			d.state[c] = ChunkStored
		case 2:
			clear(b)
			d.state[c] = ChunkZero
		case 3:
			clear(b)
			d.state[c] = ChunkUnused
		}
	}
	return chunks
}

func TestV2Commits(t *testing.T) {
	d := newDisk(600*64<<10+1000, 64<<10) // three leaves
	mf := &memFile{b: writeV2(t, d, WriterOptions{})}
	ed, err := newEditor(mf, int64(len(mf.b)), EditorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(7))
	states := []*disk{d.clone()}
	for i := 2; i <= 6; i++ {
		var chunks []int64
		if i != 4 { // commit 4 is empty
			chunks = mutate(rng, d, 1+rng.Intn(40), false)
		}
		ci, err := ed.Commit(context.Background(), changesOf(d, chunks), CommitOptions{Message: fmt.Sprintf("commit %d", i), Time: time.Unix(1700000000+int64(i), 0)})
		if err != nil {
			t.Fatal(err)
		}
		if ci.Number != int64(i) || ci.ChunksChanged != int64(len(chunks)) || ci.Message != fmt.Sprintf("commit %d", i) {
			t.Fatalf("commit info %+v", ci)
		}
		states = append(states, d.clone())
		checkReader(t, ed.Reader(), d)
	}
	img := mf.bytes()
	r := openMem(t, img, ReaderOptions{})
	checkReader(t, r, d)
	verifyOK(t, r, true)
	log, err := r.Log()
	if err != nil || len(log) != 6 {
		t.Fatalf("log: %v %d", err, len(log))
	}
	for i, c := range log {
		n := int64(6 - i)
		if c.Number != n {
			t.Fatalf("log entry %d is commit %d", i, c.Number)
		}
		old := openMem(t, img, ReaderOptions{Commit: n})
		checkReader(t, old, states[n-1])
		if old.Digest() != c.Digest {
			t.Fatalf("commit %d digest", n)
		}
		verifyOK(t, old, false)
	}
	// A pipe gives the newest state.
	out, s, err := streamRead(img, len(d.data))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, d.data) || s.Commits() != 6 {
		t.Fatalf("stream restore of %d commits differs", s.Commits())
	}
	if _, err := NewReader(bytes.NewReader(img), int64(len(img)), ReaderOptions{Commit: 7}); err == nil {
		t.Fatal("opened commit 7 of 6")
	}
}

func TestV2Delta(t *testing.T) {
	ctx := context.Background()
	d := newDisk(700*64<<10, 64<<10)
	baseImg := writeV2(t, d, WriterOptions{})
	baseFile := &memFile{b: slices.Clone(baseImg)}
	base, err := NewReader(baseFile, int64(len(baseImg)), ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	base.name = "base.dimg"
	rng := rand.New(rand.NewSource(3))

	// d1 over base, with a first commit of changes and a second one.
	d1 := d.clone()
	ch1 := mutate(rng, d1, 30, true)
	f1 := &memFile{}
	e1, err := newDelta(ctx, f1, base, "base.dimg", changesOf(d1, ch1), CommitOptions{Message: "d1"}, EditorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkReader(t, e1.Reader(), d1)
	ch1b := mutate(rng, d1, 20, true)
	if _, err := e1.Commit(ctx, changesOf(d1, ch1b), CommitOptions{Message: "d1 again"}); err != nil {
		t.Fatal(err)
	}
	r1 := e1.Reader()
	checkReader(t, r1, d1)
	verifyOK(t, r1, true)

	// d2 over d1.
	d2 := d1.clone()
	ch2 := mutate(rng, d2, 25, true)
	f2 := &memFile{}
	e2, err := newDelta(ctx, f2, r1, "d1.dimg", changesOf(d2, ch2), CommitOptions{}, EditorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r2 := e2.Reader()
	checkReader(t, r2, d2)
	verifyOK(t, r2, false)

	// The chain's digest is the flattened disk's: write d2 standalone.
	flat := openMem(t, writeV2(t, d2, WriterOptions{}), ReaderOptions{})
	if flat.Digest() != r2.Digest() {
		t.Fatal("delta chain digest differs from the flattened image's")
	}
	if !bytes.Equal(baseFile.bytes(), baseImg) {
		t.Fatal("delta work changed the base file")
	}

	// Reopen d2 from its bytes over a reopened chain.
	b2 := openMem(t, baseImg, ReaderOptions{})
	rd1 := openMem(t, f1.bytes(), ReaderOptions{Base: b2})
	rd2 := openMem(t, f2.bytes(), ReaderOptions{Base: rd1})
	checkReader(t, rd2, d2)

	// Wrong bases are refused, naming both.
	for _, tc := range []struct {
		name string
		img  []byte
		base *Reader
		want string
	}{
		{"none", f1.bytes(), nil, "open its base first"},
		{"other-image", f2.bytes(), b2, "is image"},
		{"older-commit", f2.bytes(), openMem(t, f1.bytes(), ReaderOptions{Base: b2, Commit: 1}), "commit 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.base != nil {
				tc.base.name = "given.dimg"
			}
			_, err := NewReader(bytes.NewReader(tc.img), int64(len(tc.img)), ReaderOptions{Base: tc.base})
			if !errors.Is(err, ErrBase) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v", err)
			}
		})
	}
	// A delta cannot come through a pipe.
	if _, err := NewStreamReader(bytes.NewReader(f1.bytes())); !errors.Is(err, ErrBase) {
		t.Fatalf("stream of a delta: %v", err)
	}
}

// TestOpenChain opens a chain of delta files by their path hints, and at
// the commit each delta was made over even when its base moved on.
func TestOpenChain(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := newDisk(300*64<<10, 64<<10)
	basePath := dir + "/base.dimg"
	if err := os.WriteFile(basePath, writeV2(t, d, WriterOptions{}), 0o644); err != nil {
		t.Fatal(err)
	}
	base, err := Open(basePath)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(9))
	d1 := d.clone()
	e1, err := CreateDelta(ctx, dir+"/d1.dimg", base, "base.dimg", changesOf(d1, mutate(rng, d1, 10, true)), CommitOptions{}, EditorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d2 := d1.clone()
	e2, err := CreateDelta(ctx, dir+"/d2.dimg", e1.Reader(), "d1.dimg", changesOf(d2, mutate(rng, d2, 10, true)), CommitOptions{}, EditorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e2.Close()
	e1.Close()
	base.Close()
	// The base takes a commit after the deltas were made.
	eb, err := OpenEditor(basePath, EditorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	moved := d.clone()
	if _, err := eb.Commit(ctx, changesOf(moved, mutate(rng, moved, 3, false)), CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	if eb.Reader().Digest() == digestOf(eb.Reader().Header(), d) {
		t.Fatal("the base did not change")
	}
	// A second editor of the same file is refused.
	if _, err := OpenEditor(basePath, EditorOptions{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second editor: %v", err)
	}
	eb.Close()
	r, err := OpenChain(dir+"/d2.dimg", ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkReader(t, r, d2)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// Another image in the base's place is refused, naming both.
	if err := os.WriteFile(basePath, writeV2(t, d, WriterOptions{UUID: [16]byte{9}}), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = OpenChain(dir+"/d2.dimg", ReaderOptions{})
	if !errors.Is(err, ErrBase) || !strings.Contains(err.Error(), "base.dimg") || !strings.Contains(err.Error(), "d1.dimg") {
		t.Fatalf("chain over another base: %v", err)
	}
}

// textDisk is a disk of n chunks that compresses well (small fuzz seeds):
// text in a few chunks, zeros in a few, the rest unused.
func textDisk(n int) *disk {
	const cs = 64 << 10
	d := &disk{chunk: cs, data: make([]byte, n*cs-3), state: make([]ChunkState, n)}
	for c := range int64(n) {
		if c%50 == 4 {
			d.state[c] = ChunkZero
			continue
		}
		if c%50 != 0 && c != 255 && c != int64(n)-1 {
			continue
		}
		b := d.chunkBytes(c)
		for i := range b {
			b[i] = "chunk text "[(i+int(c))%11]
		}
		d.state[c] = ChunkStored
	}
	return d
}

func FuzzReaderV2(f *testing.F) {
	d := textDisk(300)
	img := writeV2(f, d, WriterOptions{})
	f.Add(img)
	mf := &memFile{b: bytes.Clone(img)}
	ed, err := newEditor(mf, int64(len(img)), EditorOptions{})
	if err != nil {
		f.Fatal(err)
	}
	d2 := d.clone()
	if _, err := ed.Commit(context.Background(), changesOf(d2, mutate(rand.New(rand.NewSource(1)), d2, 5, false)), CommitOptions{Message: "x"}); err != nil {
		f.Fatal(err)
	}
	f.Add(mf.bytes())
	f.Add(writeV2(f, textDisk(3), WriterOptions{Compression: Compression{Method: "zstd"}}))
	f.Fuzz(func(t *testing.T, img []byte) { readEverything(img) })
}
