package imagefmt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ovlBaseBytes makes a deterministic base disk: chunks of random bytes,
// of text and of zeros, so copy-ups see both zero and non-zero bases.
func ovlBaseBytes(size int, seed int64) []byte {
	rng := rand.New(rand.NewSource(seed))
	d := make([]byte, size)
	for off := 0; off < size; off += 16 << 10 {
		end := min(off+16<<10, size)
		switch rng.Intn(3) {
		case 0:
			rng.Read(d[off:end])
		case 1:
			for i := off; i < end; i++ {
				d[i] = "overlay base "[i%13]
			}
		}
	}
	return d
}

// countingReaderAt counts base reads.
type countingReaderAt struct {
	r     io.ReaderAt
	reads atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.reads.Add(1)
	return c.r.ReadAt(p, off)
}

func newTestOverlay(t testing.TB, base []byte, cs int, id string) (*Overlay, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.dimg.scratch")
	o, err := NewOverlay(path, OverlayBase{R: bytes.NewReader(base), Size: int64(len(base)), ChunkSize: cs, ID: id}, OverlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.crash() })
	return o, path
}

// crash abandons the overlay the way kill -9 would: the descriptor goes,
// nothing is synced or removed.
func (o *Overlay) crash() {
	o.ioMu.Lock()
	defer o.ioMu.Unlock()
	if !o.closed {
		o.closed = true
		o.f.Close()
	}
}

func checkDisk(t testing.TB, r io.ReaderAt, want []byte) {
	t.Helper()
	got := make([]byte, len(want))
	n, err := r.ReadAt(got, 0)
	if n != len(want) || (err != nil && err != io.EOF) {
		t.Fatalf("read whole disk: %d of %d bytes, %v", n, len(want), err)
	}
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("disk differs from the model at byte %d (chunk of 64K %d): got %#x want %#x", i, i/(64<<10), got[i], want[i])
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func TestOverlayRandomWritesMatchModel(t *testing.T) {
	for _, cs := range []int{4096, 64 << 10, 256 << 10} {
		t.Run(fmt.Sprint(cs), func(t *testing.T) {
			size := 8<<20 + 12345 // a short last chunk
			base := ovlBaseBytes(size, 1)
			model := bytes.Clone(base)
			o, _ := newTestOverlay(t, base, cs, "base")
			rng := rand.New(rand.NewSource(int64(cs)))
			for i := range 1500 {
				n := 1 + rng.Intn(200<<10)
				if rng.Intn(4) == 0 {
					n = 1 + rng.Intn(64)
				}
				off := rng.Intn(size - n + 1)
				p := make([]byte, n)
				switch rng.Intn(4) {
				case 0: // zeros
				case 1:
					for j := range p {
						p[j] = byte(i)
					}
				default:
					rng.Read(p)
				}
				if w, err := o.WriteAt(p, int64(off)); w != n || err != nil {
					t.Fatalf("write %d bytes at %d: %d, %v", n, off, w, err)
				}
				copy(model[off:], p)
				if i%10 == 0 {
					roff := rng.Intn(size)
					got := make([]byte, rng.Intn(300<<10))
					rn, err := o.ReadAt(got, int64(roff))
					wantN := min(len(got), size-roff)
					if rn != wantN || (err != nil && !(err == io.EOF && wantN < len(got))) {
						t.Fatalf("read %d at %d: %d, %v", len(got), roff, rn, err)
					}
					if !bytes.Equal(got[:rn], model[roff:roff+rn]) {
						t.Fatalf("read %d at %d differs from the model", len(got), roff)
					}
				}
				if i%500 == 0 {
					if err := o.Sync(); err != nil {
						t.Fatal(err)
					}
				}
			}
			checkDisk(t, o, model)

			// Dirty yields exactly the chunks that differ from the base (or
			// were written), in order, with the model's bytes.
			prev := int64(-1)
			rebuilt := bytes.Clone(base)
			for d, err := range o.Dirty() {
				if err != nil {
					t.Fatal(err)
				}
				if d.Chunk <= prev {
					t.Fatalf("Dirty out of order: %d after %d", d.Chunk, prev)
				}
				prev = d.Chunk
				start, end := int(d.Chunk)*cs, min(int(d.Chunk+1)*cs, size)
				if d.Zero != IsZero(model[start:end]) || (!d.Zero && !bytes.Equal(d.Data, model[start:end])) {
					t.Fatalf("Dirty chunk %d (zero %v) differs from the model", d.Chunk, d.Zero)
				}
				copy(rebuilt[start:end], make([]byte, end-start))
				copy(rebuilt[start:end], d.Data)
			}
			if i := firstDiff(rebuilt, model); i >= 0 {
				t.Fatalf("base + Dirty differs from the model at byte %d", i)
			}
		})
	}
}

func TestOverlayOverImageReader(t *testing.T) {
	// The base can be an image: the overlay only sees its io.ReaderAt.
	const cs = 64 << 10
	disk := ovlBaseBytes(2<<20+4096, 7)
	var img bytes.Buffer
	w, err := NewWriter(&img, WriterOptions{DiskSize: int64(len(disk)), ChunkSize: cs, ToolVersion: "test", UUID: [16]byte{9}})
	if err != nil {
		t.Fatal(err)
	}
	var e Encoder
	fb := make([]byte, FrameBufSize(cs))
	for c := 0; c*cs < len(disk); c++ {
		data := disk[c*cs : min(len(disk), (c+1)*cs)]
		if IsZero(data) {
			continue
		}
		f, err := e.Encode(fb, int64(c), data)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
	}
	digest, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(bytes.NewReader(img.Bytes()), int64(img.Len()), ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id := BaseIdentity(r.Header().UUID, digest)
	if !strings.HasPrefix(id, "dimg:") {
		t.Fatalf("BaseIdentity = %q", id)
	}
	o, err := NewOverlay(filepath.Join(t.TempDir(), "s"), OverlayBase{R: r, Size: r.Size(), ChunkSize: cs, ID: id}, OverlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.crash()
	model := bytes.Clone(disk)
	p := bytes.Repeat([]byte("x"), 100<<10)
	off := cs - 5000
	if _, err := o.WriteAt(p, int64(off)); err != nil {
		t.Fatal(err)
	}
	copy(model[off:], p)
	checkDisk(t, o, model)
}

func TestOverlayWriteSpansChunks(t *testing.T) {
	const cs = 64 << 10
	base := ovlBaseBytes(1<<20, 2)
	cr := &countingReaderAt{r: bytes.NewReader(base)}
	path := filepath.Join(t.TempDir(), "s")
	o, err := NewOverlay(path, OverlayBase{R: cr, Size: 1 << 20, ChunkSize: cs, ID: "b"}, OverlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.crash()
	model := bytes.Clone(base)
	// From the middle of chunk 1 across all of chunk 2 to the middle of
	// chunk 3: two partial copy-ups (two base reads) and one whole chunk
	// (no base read).
	p := bytes.Repeat([]byte{0xa5}, 2*cs)
	off := int64(cs + cs/2)
	if n, err := o.WriteAt(p, off); n != len(p) || err != nil {
		t.Fatalf("WriteAt: %d, %v", n, err)
	}
	copy(model[off:], p)
	if got := o.DirtyChunks(); got != 3 {
		t.Fatalf("DirtyChunks = %d, want 3", got)
	}
	if got := cr.reads.Load(); got != 2 {
		t.Fatalf("base reads for the copy-ups = %d, want 2 (a whole-chunk write needs no base bytes)", got)
	}
	checkDisk(t, o, model)
	// A read across dirty and clean chunks.
	got := make([]byte, 4*cs)
	if _, err := o.ReadAt(got, cs/3); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model[cs/3:cs/3+4*cs]) {
		t.Fatal("read across dirty and clean chunks differs")
	}
}

func TestOverlayBounds(t *testing.T) {
	const size = 1<<20 + 100
	base := ovlBaseBytes(size, 3)
	o, _ := newTestOverlay(t, base, 64<<10, "b")
	for _, tc := range []struct {
		off int64
		n   int
	}{{size - 1, 2}, {size, 1}, {size + 10, 1}, {-1, 1}, {0, size + 1}, {1 << 62, 1}} {
		n, err := o.WriteAt(make([]byte, tc.n), tc.off)
		if n != 0 || !errors.Is(err, ErrBeyondEnd) {
			t.Errorf("WriteAt(%d bytes at %d) = %d, %v; want 0, ErrBeyondEnd", tc.n, tc.off, n, err)
		} else if !strings.Contains(err.Error(), fmt.Sprint(tc.off)) {
			t.Errorf("error %q does not name the offset", err)
		}
	}
	if o.DirtyChunks() != 0 {
		t.Fatal("a refused write dirtied a chunk")
	}
	if n, err := o.WriteAt([]byte{1, 2}, size-2); n != 2 || err != nil {
		t.Fatalf("write of the last bytes: %d, %v", n, err)
	}
	if n, err := o.WriteAt(nil, size); n != 0 || err != nil {
		t.Fatalf("empty write at the end: %d, %v", n, err)
	}
	p := make([]byte, 10)
	if n, err := o.ReadAt(p, size-4); n != 4 || err != io.EOF || !bytes.Equal(p[:4], []byte{base[size-4], base[size-3], 1, 2}) {
		t.Fatalf("read over the end: %d, %v, %v", n, err, p[:4])
	}
	if n, err := o.ReadAt(p, size); n != 0 || err != io.EOF {
		t.Fatalf("read at the end: %d, %v", n, err)
	}
	if _, err := o.ReadAt(p, -1); err == nil {
		t.Fatal("read at a negative offset succeeded")
	}
}

func TestOverlaySection(t *testing.T) {
	const size = 1 << 20
	base := ovlBaseBytes(size, 4)
	o, _ := newTestOverlay(t, base, 64<<10, "b")
	model := bytes.Clone(base)
	start, n := int64(100<<10+512), int64(300<<10)
	s, err := o.Section(start, n)
	if err != nil {
		t.Fatal(err)
	}
	if s.Size() != n || s.Start() != start {
		t.Fatalf("section %d+%d", s.Start(), s.Size())
	}
	p := bytes.Repeat([]byte{7}, 8192)
	for _, off := range []int64{0, n - 8192, 12345} {
		if w, err := s.WriteAt(p, off); w != len(p) || err != nil {
			t.Fatalf("write inside the section at %d: %d, %v", off, w, err)
		}
		copy(model[start+off:], p)
	}
	for _, off := range []int64{n - 8191, n, -1, n + 1} {
		if w, err := s.WriteAt(p, off); w != 0 || !errors.Is(err, ErrBeyondEnd) {
			t.Fatalf("write past the section at %d: %d, %v", off, w, err)
		}
	}
	checkDisk(t, o, model) // nothing leaked before or after the section
	got := make([]byte, 10000)
	if r, err := s.ReadAt(got, n-100); r != 100 || err != io.EOF || !bytes.Equal(got[:100], model[start+n-100:start+n]) {
		t.Fatalf("read past the section's end: %d, %v", r, err)
	}
	if r, err := s.ReadAt(got, n); r != 0 || err != io.EOF {
		t.Fatalf("read at the section's end: %d, %v", r, err)
	}
	if r, err := s.ReadAt(got, 0); r != len(got) || err != nil || !bytes.Equal(got, model[start:start+int64(len(got))]) {
		t.Fatalf("read inside the section: %d, %v", r, err)
	}
	for _, b := range [][2]int64{{-1, 10}, {0, size + 1}, {size, 1}, {10, -1}, {size - 10, 11}} {
		if _, err := o.Section(b[0], b[1]); err == nil {
			t.Errorf("Section(%d, %d) outside the disk accepted", b[0], b[1])
		}
	}
	if _, err := o.Section(size, 0); err != nil {
		t.Errorf("empty section at the end: %v", err)
	}
	if _, err := NewSection(o, -5, 10); err == nil {
		t.Error("NewSection at a negative offset accepted")
	}
}

func TestOverlayMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 512 MiB")
	}
	const size, cs = 1 << 30, 256 << 10
	dir := t.TempDir()
	bf, err := os.Create(filepath.Join(dir, "base.raw"))
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	if err := bf.Truncate(size); err != nil { // sparse
		t.Fatal(err)
	}
	// Some non-zero chunks in the base, so copy-ups also write base bytes.
	for off := int64(0); off < size; off += 7 * cs {
		if _, err := bf.WriteAt(bytes.Repeat([]byte{0x55}, 4096), off+cs/2); err != nil {
			t.Fatal(err)
		}
	}
	opt := OverlayOptions{CopyUpBytes: 4 * cs}
	o, err := NewOverlay(filepath.Join(dir, "scratch"), OverlayBase{R: bf, Size: size, ChunkSize: cs, ID: "sparse"}, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Discard()

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	rng := rand.New(rand.NewSource(5))
	p := make([]byte, 1<<20)
	rng.Read(p)
	var written int64
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	var mu sync.Mutex
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(g)))
			for {
				n := 4096 << r.Intn(9) // 4 KiB .. 1 MiB
				off := r.Int63n(size-int64(n)) &^ 511
				mu.Lock()
				if written >= 512<<20 {
					mu.Unlock()
					return
				}
				written += int64(n)
				mu.Unlock()
				if _, err := o.WriteAt(p[:n], off); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if err := o.Sync(); err != nil {
		t.Fatal(err)
	}

	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)

	o.mu.RLock()
	dirty, pend := len(o.slots), cap(o.pending)
	o.mu.RUnlock()
	bufs := o.bufHigh.Load()
	est := int64(dirty)*21 + int64(pend)*8 + bufs*cs
	t.Logf("dirty chunks %d, pending cap %d, copy-up buffers high-water %d; estimate %d KiB; heap %d -> %d KiB",
		dirty, pend, bufs, est>>10, before.HeapAlloc>>10, after.HeapAlloc>>10)
	if bufs > int64(cap(o.bufSem)) || int64(cap(o.bufSem))*cs > max(opt.CopyUpBytes, 2*cs) {
		t.Errorf("copy-up buffers: %d in use at once, bound %d", bufs, cap(o.bufSem))
	}
	if dirty > size/cs || est > 64<<20 {
		t.Errorf("in-memory structures: %d dirty chunks, estimate %d bytes", dirty, est)
	}
	if grow := int64(after.HeapAlloc) - int64(before.HeapAlloc); grow > 16<<20 {
		t.Errorf("heap grew by %d MiB while writing 512 MiB", grow>>20)
	}
}

func TestOverlayRecoverAfterCrash(t *testing.T) {
	const size, cs = 4<<20 + 3000, 64 << 10
	base := ovlBaseBytes(size, 6)
	bo := func() OverlayBase {
		return OverlayBase{R: bytes.NewReader(base), Size: size, ChunkSize: cs, ID: "dimg:abc@123"}
	}
	path := filepath.Join(t.TempDir(), "img.dimg.scratch")
	o, err := NewOverlay(path, bo(), OverlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	model := bytes.Clone(base)
	rng := rand.New(rand.NewSource(8))
	write := func(o *Overlay, lo, hi int) {
		t.Helper()
		for range 100 {
			n := 1 + rng.Intn(100<<10)
			off := lo + rng.Intn(hi-lo-n)
			p := make([]byte, n)
			rng.Read(p)
			if rng.Intn(5) == 0 {
				clear(p)
			}
			if _, err := o.WriteAt(p, int64(off)); err != nil {
				t.Fatal(err)
			}
			copy(model[off:], p)
		}
	}
	// Synced writes to the first half survive.
	write(o, 0, size/2)
	if err := o.Sync(); err != nil {
		t.Fatal(err)
	}
	synced := bytes.Clone(model)
	dirtyBefore := o.DirtyChunks()
	o.crash()

	o, err = OpenRecovered(path, bo(), OverlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if o.DirtyChunks() != dirtyBefore {
		t.Fatalf("recovered %d dirty chunks, had %d", o.DirtyChunks(), dirtyBefore)
	}
	checkDisk(t, o, synced)

	// Unsynced copy-ups into the second half were never promised: after a
	// crash those chunks are the base's again.
	write(o, size/2+cs, size)
	o.crash()
	o, err = OpenRecovered(path, bo(), OverlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkDisk(t, o, synced)
	model = bytes.Clone(synced)

	// The recovered overlay takes more writes (new slots after the old
	// ones), syncs and recovers again.
	write(o, 0, size)
	if err := o.Close(); err != nil { // Close syncs and keeps the scratch
		t.Fatal(err)
	}
	if _, err := o.WriteAt([]byte{1}, 0); !errors.Is(err, ErrOverlayClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	o, err = OpenRecovered(path, bo(), OverlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkDisk(t, o, model)

	// A torn slot header (a crash inside Sync) loses that slot only.
	o.crash()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff}, scratchHeaderSize+10); err != nil { // inside slot 0's header
		t.Fatal(err)
	}
	f.Close()
	o, err = OpenRecovered(path, bo(), OverlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.crash()
	if got := o.DirtyChunks(); got != dirtyAfterTear(t, path, cs) {
		t.Fatalf("after tearing one slot header: %d dirty chunks", got)
	}
}

// dirtyAfterTear counts valid slot headers the slow way.
func dirtyAfterTear(t *testing.T, path string, cs int) int {
	info, err := ReadScratchInfo(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for k := int64(0); scratchHeaderSize+k*int64(slotHeaderSize+cs) < int64(len(b)); k++ {
		off := scratchHeaderSize + k*int64(slotHeaderSize+cs)
		if _, ok := parseSlotHeader(b[off:min(int64(len(b)), off+slotHeaderUsed)], k, info.Session); ok {
			n++
		}
	}
	if n == 0 {
		t.Fatal("no valid slots at all")
	}
	return n
}

func TestOverlayScratchRefused(t *testing.T) {
	const size, cs = 1 << 20, 64 << 10
	base := ovlBaseBytes(size, 9)
	dir := t.TempDir()
	path := filepath.Join(dir, "s")
	mk := func(id string, sz int64, c int) OverlayBase {
		return OverlayBase{R: bytes.NewReader(base), Size: sz, ChunkSize: c, ID: id}
	}
	o, err := NewOverlay(path, mk("image-A@commit-1", size, cs), OverlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.WriteAt([]byte("hello"), 100); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	info, err := ReadScratchInfo(path)
	if err != nil || info.BaseID != "image-A@commit-1" || info.ChunkSize != cs || info.DiskSize != size {
		t.Fatalf("ReadScratchInfo = %+v, %v", info, err)
	}

	_, err = OpenRecovered(path, mk("image-A@commit-2", size, cs), OverlayOptions{})
	if !errors.Is(err, ErrBaseMismatch) || !strings.Contains(err.Error(), "commit-1") || !strings.Contains(err.Error(), "commit-2") {
		t.Fatalf("other base: %v (want ErrBaseMismatch naming both)", err)
	}
	if _, err := OpenRecovered(path, mk("image-A@commit-1", size-4096, cs), OverlayOptions{}); !errors.Is(err, ErrBaseMismatch) {
		t.Fatalf("other disk size: %v", err)
	}
	if _, err := OpenRecovered(path, mk("image-A@commit-1", size, 2*cs), OverlayOptions{}); !errors.Is(err, ErrBaseMismatch) {
		t.Fatalf("other chunk size: %v", err)
	}
	if _, err := NewOverlay(path, mk("x", size, cs), OverlayOptions{}); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("NewOverlay over an existing scratch: %v", err)
	}

	// Not a scratch file, or a damaged header.
	for name, b := range map[string][]byte{
		"empty":   {},
		"garbage": bytes.Repeat([]byte("not a scratch"), 500),
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o600)
		if _, err := OpenRecovered(p, mk("x", size, cs), OverlayOptions{}); !errors.Is(err, ErrScratch) {
			t.Errorf("%s: %v, want ErrScratch", name, err)
		}
	}
	b, _ := os.ReadFile(path)
	b[70] ^= 1 // inside the base identity
	p := filepath.Join(dir, "flipped")
	os.WriteFile(p, b, 0o600)
	if _, err := OpenRecovered(p, mk("image-A@commit-1", size, cs), OverlayOptions{}); !errors.Is(err, ErrScratch) {
		t.Errorf("flipped header byte: %v, want ErrScratch", err)
	}

	// Bad bases.
	for _, bo := range []OverlayBase{
		{R: nil, Size: size, ChunkSize: cs},
		{R: bytes.NewReader(base), Size: 0, ChunkSize: cs},
		{R: bytes.NewReader(base), Size: size, ChunkSize: 1000},
		{R: bytes.NewReader(base), Size: size, ChunkSize: cs, ID: strings.Repeat("x", 3000)},
	} {
		if _, err := NewOverlay(filepath.Join(dir, "bad"), bo, OverlayOptions{}); err == nil {
			t.Errorf("NewOverlay accepted base %+v", bo)
		}
	}

	if err := RemoveScratch(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("scratch still there: %v", err)
	}
}

func TestOverlayConcurrent(t *testing.T) {
	const size, cs, block = 2 << 20, 64 << 10, 4096
	const writers = 8
	base := ovlBaseBytes(size, 10)
	o, path := newTestOverlay(t, base, cs, "b")
	model := bytes.Clone(base)
	var wg sync.WaitGroup
	errc := make(chan error, 64)
	stop := make(chan struct{})
	// Writer g owns the blocks b with b%writers == g, so writers share every
	// chunk and race on its copy-up, but not on bytes.
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(g)))
			p := make([]byte, block)
			for range 400 {
				b := rng.Intn(size/block/writers)*writers + g
				rng.Read(p)
				if _, err := o.WriteAt(p, int64(b*block)); err != nil {
					errc <- err
					return
				}
				copy(model[b*block:], p)
			}
		}()
	}
	var rwg sync.WaitGroup
	for range 3 {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			p := make([]byte, 3*cs)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := o.ReadAt(p, int64(i*7919%(size-len(p)))); err != nil {
					errc <- err
					return
				}
				if i%50 == 0 {
					if err := o.Sync(); err != nil {
						errc <- err
						return
					}
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(stop); rwg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("concurrent writers did not finish in 2 minutes")
	}
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	checkDisk(t, o, model)
	if err := o.Sync(); err != nil {
		t.Fatal(err)
	}
	o.crash()
	r, err := OpenRecovered(path, OverlayBase{R: bytes.NewReader(base), Size: size, ChunkSize: cs, ID: "b"}, OverlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.crash()
	checkDisk(t, r, model)
}

// fakeCommitter records what it is handed.
type fakeCommitter struct {
	message string
	n       int
	chunks  []int64
	data    map[int64][]byte // nil value: zero
	err     error            // returned after consuming everything
	cancel  func()           // called before reading, to test ctx
}

func (f *fakeCommitter) CommitChunks(ctx context.Context, message string, n int, next func() (int64, []byte, bool, error)) error {
	f.message, f.n, f.data = message, n, map[int64][]byte{}
	if f.cancel != nil {
		f.cancel()
	}
	for {
		c, data, zero, err := next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if zero != (data == nil) {
			return fmt.Errorf("chunk %d: zero %v with %d bytes", c, zero, len(data))
		}
		f.chunks = append(f.chunks, c)
		f.data[c] = bytes.Clone(data)
	}
	return f.err
}

func TestOverlayCommit(t *testing.T) {
	const size, cs = 1<<20 + 5000, 64 << 10
	base := ovlBaseBytes(size, 11)
	base[5*cs+10] = 1 // chunk 5 has some data in the base
	o, path := newTestOverlay(t, base, cs, "b")
	model := bytes.Clone(base)
	w := func(p []byte, off int) {
		t.Helper()
		if _, err := o.WriteAt(p, int64(off)); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], p)
	}
	w([]byte("abc"), 3*cs+7)                      // chunk 3
	w(make([]byte, cs), 2*cs)                     // chunk 2: a whole-chunk zero write
	w(bytes.Repeat([]byte{9}, 300), size-100-200) // last (short) chunk
	w(make([]byte, cs), 5*cs)                     // chunk 5: written back to zeros
	w([]byte{1}, 0)                               // chunk 0
	want := []int64{0, 2, 3, 5, size / cs}

	// A failing committer leaves everything in place.
	bad := &fakeCommitter{err: errors.New("disk full")}
	if err := o.Commit(context.Background(), "m", bad); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("failed commit: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("scratch gone after a failed commit: %v", err)
	}
	// A cancelled context stops the hand-over.
	ctx, cancel := context.WithCancel(context.Background())
	if err := o.Commit(ctx, "m", &fakeCommitter{cancel: cancel}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled commit: %v", err)
	}
	w([]byte("still writable"), 4*cs)
	want = []int64{0, 2, 3, 4, 5, size / cs}

	fc := &fakeCommitter{}
	if err := o.Commit(context.Background(), "add drivers", fc); err != nil {
		t.Fatal(err)
	}
	if fc.message != "add drivers" || fc.n != len(want) || fmt.Sprint(fc.chunks) != fmt.Sprint(want) {
		t.Fatalf("committer got message %q, n %d, chunks %v; want %v", fc.message, fc.n, fc.chunks, want)
	}
	for _, c := range want {
		start, end := int(c)*cs, min(int(c+1)*cs, size)
		if d := fc.data[c]; IsZero(model[start:end]) {
			if d != nil {
				t.Errorf("chunk %d is all zero but was handed as data", c)
			}
		} else if !bytes.Equal(d, model[start:end]) {
			t.Errorf("chunk %d: committed bytes differ from the model", c)
		}
	}
	if fc.data[2] != nil || fc.data[5] != nil {
		t.Error("zero chunks 2 and 5 not marked zero")
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("scratch still there after a successful commit: %v", err)
	}
	if _, err := o.WriteAt([]byte{1}, 0); !errors.Is(err, ErrOverlayClosed) {
		t.Fatalf("write after commit: %v", err)
	}
	if _, err := o.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrOverlayClosed) {
		t.Fatalf("read after commit: %v", err)
	}

	// Nothing dirty: the committer is not called, the scratch goes.
	o2, path2 := newTestOverlay(t, base, cs, "b")
	if err := o2.Commit(context.Background(), "m", &fakeCommitter{err: errors.New("must not be called")}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path2); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("scratch of an empty commit not removed")
	}

	// Discard drops the changes and the file.
	o3, path3 := newTestOverlay(t, base, cs, "b")
	o3.WriteAt([]byte{1}, 0)
	if err := o3.Discard(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path3); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("scratch not removed by Discard")
	}
}

// TestOverlayKill9 kills a process that writes through an overlay right
// after a Sync, and checks that the synced state comes back.
func TestOverlayKill9(t *testing.T) {
	if os.Getenv("DIMG_OVERLAY_HELPER") != "" {
		overlayKillHelper()
		return
	}
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	const size, cs = 8 << 20, 64 << 10
	dir := t.TempDir()
	base := ovlBaseBytes(size, 12)
	basePath := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(basePath, base, 0o600); err != nil {
		t.Fatal(err)
	}
	scratch := filepath.Join(dir, "scratch")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-test.run=^TestOverlayKill9$")
	cmd.Env = append(os.Environ(), "DIMG_OVERLAY_HELPER="+basePath+"|"+scratch)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 7)
	if _, err := io.ReadFull(out, line); err != nil || string(line) != "synced\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper did not report a sync: %q, %v", line, err)
	}
	time.Sleep(200 * time.Millisecond) // let it write unsynced chunks
	cmd.Process.Kill()                 // SIGKILL
	cmd.Wait()

	want := killHelperModel(base)
	o, err := OpenRecovered(scratch, OverlayBase{R: bytes.NewReader(base), Size: size, ChunkSize: cs, ID: "kill9"}, OverlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.crash()
	checkDisk(t, o, want)
}

// killHelperModel is the disk after the helper's synced writes: the first
// half written, the second half (written only after the Sync, never
// synced) as in the base.
func killHelperModel(base []byte) []byte {
	m := bytes.Clone(base)
	rng := rand.New(rand.NewSource(13))
	for range 200 {
		n := 1 + rng.Intn(64<<10)
		off := rng.Intn(len(m)/2 - n)
		p := make([]byte, n)
		rng.Read(p)
		copy(m[off:], p)
	}
	return m
}

func overlayKillHelper() {
	basePath, scratch, _ := strings.Cut(os.Getenv("DIMG_OVERLAY_HELPER"), "|")
	base, err := os.ReadFile(basePath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	o, err := NewOverlay(scratch, OverlayBase{R: bytes.NewReader(base), Size: int64(len(base)), ChunkSize: 64 << 10, ID: "kill9"}, OverlayOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	m := killHelperModel(base)
	// Write the model's first half chunk by chunk where it differs.
	for off := 0; off < len(m)/2; off += 64 << 10 {
		if !bytes.Equal(m[off:off+64<<10], base[off:off+64<<10]) {
			if _, err := o.WriteAt(m[off:off+64<<10], int64(off)); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
		}
	}
	if err := o.Sync(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	os.Stdout.WriteString("synced\n")
	// Unsynced writes into the second half until killed.
	rng := rand.New(rand.NewSource(14))
	p := make([]byte, 8192)
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		rng.Read(p)
		o.WriteAt(p, int64(len(m)/2+rng.Intn(len(m)/2-len(p))))
	}
	os.Exit(3)
}
