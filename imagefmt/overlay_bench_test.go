package imagefmt

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkOverlayWrite writes through an overlay over a 256 MiB base file
// full of data (so copy-ups carry base bytes), next to the same writes on
// the raw file as the peer: compare the ns/op of each pair.
//
//	go test -run ^$ -bench OverlayWrite ./imagefmt/
func BenchmarkOverlayWrite(b *testing.B) {
	const size, cs = 256 << 20, DefaultChunkSize
	dir := b.TempDir()
	basePath := filepath.Join(dir, "base.raw")
	f, err := os.Create(basePath)
	if err != nil {
		b.Fatal(err)
	}
	blk := bytes.Repeat([]byte("base data "), (1<<20)/10+1)[:1<<20]
	for off := int64(0); off < size; off += 1 << 20 {
		if _, err := f.WriteAt(blk, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil { // no writeback of the setup in the timings
		b.Fatal(err)
	}
	f.Close()

	type target interface {
		WriteAt([]byte, int64) (int, error)
		Sync() error
	}
	open := func(b *testing.B, overlay bool) (target, func()) {
		if !overlay {
			raw := filepath.Join(b.TempDir(), "raw")
			data, err := os.ReadFile(basePath)
			if err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(raw, data, 0o600); err != nil {
				b.Fatal(err)
			}
			f, err := os.OpenFile(raw, os.O_RDWR, 0)
			if err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			return f, func() { f.Close() }
		}
		bf, err := os.Open(basePath)
		if err != nil {
			b.Fatal(err)
		}
		o, err := NewOverlay(filepath.Join(b.TempDir(), "scratch"), OverlayBase{R: bf, Size: size, ChunkSize: cs, ID: "bench"}, OverlayOptions{})
		if err != nil {
			b.Fatal(err)
		}
		return o, func() { o.Discard(); bf.Close() }
	}

	for _, kind := range []struct {
		name    string
		n       int
		random  bool
		syncEvy int
	}{
		{"random4K", 4096, true, 0},
		{"random4K-sync64", 4096, true, 64},
		{"seq1M", 1 << 20, false, 0},
	} {
		for _, overlay := range []bool{true, false} {
			name := kind.name + "/raw"
			if overlay {
				name = kind.name + "/overlay"
			}
			b.Run(name, func(b *testing.B) {
				t, done := open(b, overlay)
				defer done()
				rng := rand.New(rand.NewSource(1))
				p := make([]byte, kind.n)
				rng.Read(p)
				b.SetBytes(int64(kind.n))
				b.ResetTimer()
				off := int64(0)
				for i := range b.N {
					if kind.random {
						off = rng.Int63n(size/int64(kind.n)) * int64(kind.n)
					} else {
						off = (off + int64(kind.n)) % size
					}
					if _, err := t.WriteAt(p, off); err != nil {
						b.Fatal(err)
					}
					if kind.syncEvy > 0 && i%kind.syncEvy == kind.syncEvy-1 {
						if err := t.Sync(); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}

// BenchmarkOverlayRead reads random 4 KiB blocks of a disk whose every
// chunk is dirty, next to the same reads of a raw file. The two are close
// because both come from the page cache, which is why the overlay keeps no
// chunk cache of its own.
func BenchmarkOverlayRead(b *testing.B) {
	const size, cs = 64 << 20, DefaultChunkSize
	dir := b.TempDir()
	data := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	raw := filepath.Join(dir, "raw")
	if err := os.WriteFile(raw, data, 0o600); err != nil {
		b.Fatal(err)
	}
	rf, err := os.Open(raw)
	if err != nil {
		b.Fatal(err)
	}
	defer rf.Close()
	o, err := NewOverlay(filepath.Join(dir, "scratch"), OverlayBase{R: bytes.NewReader(make([]byte, size)), Size: size, ChunkSize: cs, ID: "bench"}, OverlayOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer o.Discard()
	if _, err := o.WriteAt(data, 0); err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		r    interface {
			ReadAt([]byte, int64) (int, error)
		}
	}{{"overlay", o}, {"raw", rf}} {
		b.Run(tc.name, func(b *testing.B) {
			rng := rand.New(rand.NewSource(1))
			p := make([]byte, 4096)
			b.SetBytes(4096)
			for range b.N {
				if _, err := tc.r.ReadAt(p, rng.Int63n(size/4096)*4096); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
