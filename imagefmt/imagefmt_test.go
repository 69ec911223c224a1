package imagefmt

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"sync"
	"testing"
	"time"
)

// testDisk makes a deterministic disk: compressible text, random bytes,
// zero runs, and a short last chunk.
func testDisk(size int) []byte {
	rng := rand.New(rand.NewSource(1))
	d := make([]byte, size)
	for off := 0; off < size; off += 64 << 10 {
		end := min(off+64<<10, size)
		switch (off / (64 << 10)) % 5 {
		case 0: // text
			for i := off; i < end; i++ {
				d[i] = "the quick brown fox "[i%20]
			}
		case 1: // random
			rng.Read(d[off:end])
		case 2, 3: // zeros
		case 4: // mixed
			for i := off; i < end; i += 512 {
				d[i] = byte(i)
			}
		}
	}
	return d
}

func writeImage(t testing.TB, disk []byte, chunk int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, WriterOptions{DiskSize: int64(len(disk)), ChunkSize: chunk, ToolVersion: "test",
		Created: time.Unix(1700000000, 0), UUID: [16]byte{1, 2, 3}, Metadata: []byte(`{"table":"none"}`), Version: Version})
	if err != nil {
		t.Fatal(err)
	}
	var e Encoder
	fb := make([]byte, FrameBufSize(chunk))
	for c := int64(0); c*int64(chunk) < int64(len(disk)); c++ {
		data := disk[c*int64(chunk) : min(int64(len(disk)), (c+1)*int64(chunk))]
		if IsZero(data) {
			// Zero chunks in the first half count as used, the rest unused.
			if c*int64(chunk) < int64(len(disk))/2 {
				if err := w.WriteZeroRun(c, 1); err != nil {
					t.Fatal(err)
				}
			}
			continue
		}
		f, err := e.Encode(fb, c, data)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		size  int
		chunk int
	}{
		{"aligned", 4 << 20, 64 << 10},
		{"short-last", 3<<20 + 12345, 256 << 10},
		{"one-chunk", 1000, 64 << 10},
		{"big-chunk", 5 << 20, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disk := testDisk(tc.size)
			img := writeImage(t, disk, tc.chunk)
			r, err := NewReader(bytes.NewReader(img), int64(len(img)), ReaderOptions{CacheBytes: 1})
			if err != nil {
				t.Fatal(err)
			}
			if r.Size() != int64(tc.size) {
				t.Fatalf("size %d", r.Size())
			}
			got := make([]byte, tc.size)
			if _, err := r.ReadAt(got, 0); err != nil && err != io.EOF {
				t.Fatal(err)
			}
			if !bytes.Equal(got, disk) {
				t.Fatal("content differs")
			}
			// Random reads, in parallel.
			var wg sync.WaitGroup
			for g := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewSource(int64(g)))
					for range 200 {
						off := rng.Intn(tc.size)
						n := rng.Intn(300000)
						p := make([]byte, n)
						k, err := r.ReadAt(p, int64(off))
						if off+n > tc.size {
							if err != io.EOF || k != tc.size-off {
								t.Errorf("read past end: n=%d err=%v", k, err)
								return
							}
						} else if err != nil {
							t.Error(err)
							return
						}
						if !bytes.Equal(p[:k], disk[off:off+k]) {
							t.Errorf("random read at %d differs", off)
							return
						}
					}
				}()
			}
			wg.Wait()
			for c := int64(0); c < r.Header().NumChunks(); c++ {
				data := disk[c*int64(tc.chunk) : min(int64(tc.size), (c+1)*int64(tc.chunk))]
				want := ChunkStored
				if IsZero(data) {
					want = ChunkUnused
					if c*int64(tc.chunk) < int64(tc.size)/2 {
						want = ChunkZero
					}
				}
				if got := r.ChunkState(c); got != want {
					t.Fatalf("chunk %d state %d, want %d", c, got, want)
				}
			}
			res, err := r.Verify(context.Background(), nil)
			if err != nil || !res.OK() {
				t.Fatalf("verify: %v %+v", err, res)
			}
			// The stream reader sees the same frames and digest.
			s, err := NewStreamReader(bytes.NewReader(img))
			if err != nil {
				t.Fatal(err)
			}
			restored := make([]byte, tc.size)
			for {
				f, err := s.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if f.Zeros > 0 {
					continue
				}
				data, err := f.Decode(nil)
				if err != nil {
					t.Fatal(err)
				}
				copy(restored[f.Chunk*int64(tc.chunk):], data)
			}
			if !bytes.Equal(restored, disk) {
				t.Fatal("stream restore differs")
			}
		})
	}
}

func TestZeroChunksNotStored(t *testing.T) {
	disk := make([]byte, 8<<20)
	copy(disk[3<<20:], "hello")
	img := writeImage(t, disk, 1<<20)
	r, err := NewReader(bytes.NewReader(img), int64(len(img)), ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.StoredChunks() != 1 || !r.IsStored(3) {
		t.Fatalf("stored %d chunks", r.StoredChunks())
	}
	if len(img) > 64<<10 {
		t.Fatalf("image of a nearly empty disk is %d bytes", len(img))
	}
}

// TestFlipEveryChunk flips one byte in each stored frame in turn: Verify
// names exactly that chunk and a read of it fails, never returning data.
func TestFlipEveryChunk(t *testing.T) {
	disk := testDisk(2<<20 + 777)
	img := writeImage(t, disk, 64<<10)
	r0, err := NewReader(bytes.NewReader(img), int64(len(img)), ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for e := range r0.Entries() {
		// One byte in the payload, and one in the frame header.
		for _, pos := range []int64{e.Offset + FrameHeaderSize + int64(e.StoredLen)/2, e.Offset + 30} {
			bad := bytes.Clone(img)
			bad[pos] ^= 0x40
			r, err := NewReader(bytes.NewReader(bad), int64(len(bad)), ReaderOptions{})
			if err != nil {
				t.Fatal(err)
			}
			res, err := r.Verify(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Bad) != 1 || res.Bad[0].Chunk != e.Chunk || res.Bad[0].Off != e.Chunk*(64<<10) {
				t.Fatalf("flip at %d in chunk %d: verify reported %v", pos, e.Chunk, res.Bad)
			}
			p := make([]byte, 100)
			_, err = r.ReadAt(p, e.Chunk*(64<<10)+10)
			var ce *ChunkError
			if !errors.As(err, &ce) || ce.Chunk != e.Chunk {
				t.Fatalf("read of damaged chunk %d: %v", e.Chunk, err)
			}
		}
	}
}

func TestBadImages(t *testing.T) {
	disk := testDisk(1 << 20)
	img := writeImage(t, disk, 64<<10)
	r0, _ := NewReader(bytes.NewReader(img), int64(len(img)), ReaderOptions{})
	idxOff := r0.ft.indexOff
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(img)) }
	for _, tc := range []struct {
		name string
		img  []byte
		want error
	}{
		{"empty", nil, ErrCorrupt},
		{"magic", mut(func(b []byte) []byte { b[1] = 'X'; return b }), ErrFormat},
		{"version", mut(func(b []byte) []byte { b[8] = 9; return b }), ErrFormat},
		{"header-crc", mut(func(b []byte) []byte { b[40]++; return b }), ErrCorrupt},
		{"truncated-half", img[:len(img)/2], ErrCorrupt},
		{"truncated-1", img[:len(img)-1], ErrCorrupt},
		{"footer", mut(func(b []byte) []byte { b[len(b)-FooterSize+20]++; return b }), ErrCorrupt},
		{"index", mut(func(b []byte) []byte { b[idxOff+20]++; return b }), ErrCorrupt},
		{"garbage", bytes.Repeat([]byte{0xff}, 4096), ErrFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewReader(bytes.NewReader(tc.img), int64(len(tc.img)), ReaderOptions{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// A truncated stream must fail, not end quietly.
	for _, cut := range []int{10, 200, len(img) / 2, len(img) - FooterSize - 1, len(img) - 1} {
		s, err := NewStreamReader(bytes.NewReader(img[:cut]))
		for err == nil {
			_, err = s.Next()
		}
		if err == io.EOF || !errors.Is(err, ErrCorrupt) {
			t.Fatalf("stream cut at %d: %v", cut, err)
		}
	}
}

func FuzzReader(f *testing.F) {
	f.Add(writeImage(f, testDisk(300<<10), 64<<10))
	f.Add(writeImage(f, make([]byte, 100<<10), 64<<10))
	f.Add([]byte("\x89DIMG\r\n\x1a"))
	f.Add(goldenV1Spec().build().b)
	for _, fg := range v1Forgeries() {
		s := goldenV1Spec()
		if fg.spec != nil {
			fg.spec(s)
		}
		g := s.build()
		if fg.bytes != nil {
			fg.bytes(g)
		}
		f.Add(g.b)
	}
	f.Fuzz(func(t *testing.T, img []byte) {
		r, err := NewReader(bytes.NewReader(img), int64(len(img)), ReaderOptions{})
		if err == nil {
			p := make([]byte, 100<<10)
			for off := int64(0); off < min(r.Size(), 4<<20); off += int64(len(p)) {
				r.ReadAt(p, off)
			}
		}
		// The paths that check a whole image accept exactly the same
		// files. (Skip disks too large to check quickly: the digest covers
		// every chunk.)
		if s, err := NewStreamReader(bytes.NewReader(img)); err == nil && s.Header().NumChunks() > 1<<12 {
			return
		}
		var errs []error
		for _, p := range []func([]byte) error{fuzzStream, fuzzVerify, fuzzRestore} {
			errs = append(errs, p(img))
		}
		if (errs[0] == nil) != (errs[1] == nil) || (errs[1] == nil) != (errs[2] == nil) {
			t.Fatalf("paths disagree: stream %v; verify %v; restore %v", errs[0], errs[1], errs[2])
		}
		for _, err := range errs {
			if err != nil && !errors.Is(err, ErrFormat) && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrChecksum) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
		}
	})
}

// The fuzz target's reading paths: like readPaths, without building the
// disk (a fuzzed header can announce a huge one).
func fuzzStream(img []byte) error {
	s, err := NewStreamReader(bytes.NewReader(img))
	if err != nil {
		return err
	}
	for {
		f, err := s.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if f.Zeros == 0 {
			if _, err := f.Decode(nil); err != nil {
				return err
			}
		}
	}
}

func fuzzVerify(img []byte) error {
	r, err := NewReader(bytes.NewReader(img), int64(len(img)), ReaderOptions{})
	if err != nil {
		return err
	}
	res, err := r.Verify(context.Background(), nil)
	if err != nil {
		return err
	}
	return res.Err()
}

func fuzzRestore(img []byte) error {
	r, err := NewReader(bytes.NewReader(img), int64(len(img)), ReaderOptions{})
	if err != nil {
		return err
	}
	if err := r.CheckRecords(); err != nil {
		return err
	}
	d := NewDigester(r.Header())
	for e := range r.Entries() {
		f, _, err := r.ReadFrame(e.Chunk, nil)
		if err != nil {
			return err
		}
		if _, err := f.Decode(nil); err != nil {
			return err
		}
		d.Add(e.Chunk, f.Sum)
	}
	return r.CheckDigest(d.Sum())
}
