package remote_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dimg-project/dimg/cloneio/remote"
	"github.com/dimg-project/dimg/cloneio/remote/remotetest"
	"github.com/dimg-project/dimg/imagefmt"
)

const (
	testChunk = 64 << 10
	testDisk  = 8 << 20
)

// makeDisk returns a disk of compressible pseudo-random text with some
// zero chunks, different for each seed.
func makeDisk(seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	d := make([]byte, testDisk)
	words := []string{"alpha ", "beta ", "gamma ", "delta ", "epsilon ", "zeta\n"}
	for c := 0; c < testDisk/testChunk; c++ {
		if c%5 == 3 {
			continue // a zero chunk
		}
		b := d[c*testChunk : (c+1)*testChunk]
		for i := 0; i < len(b); {
			i += copy(b[i:], words[rng.IntN(len(words))])
		}
		b[0] = byte(c)
	}
	return d
}

// writeImage writes disk as an image file at path.
func writeImage(t testing.TB, path string, disk []byte) {
	t.Helper()
	var buf bytes.Buffer
	w, err := imagefmt.NewWriter(&buf, imagefmt.WriterOptions{DiskSize: int64(len(disk)), ChunkSize: testChunk,
		ToolVersion: "test", Metadata: []byte(`{"table":"none"}`)})
	if err != nil {
		t.Fatal(err)
	}
	var e imagefmt.Encoder
	fb := make([]byte, imagefmt.FrameBufSize(testChunk))
	for c := int64(0); c*testChunk < int64(len(disk)); c++ {
		data := disk[c*testChunk : (c+1)*testChunk]
		if imagefmt.IsZero(data) {
			if err := w.WriteZeroRun(c, 1); err != nil {
				t.Fatal(err)
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
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// lab is nginx serving one image, behind a fault proxy.
type lab struct {
	dir   string
	disk  []byte
	proxy *remotetest.Proxy
	url   string // the image through the proxy
}

func newLab(t *testing.T) *lab {
	dir := t.TempDir()
	disk := makeDisk(1)
	writeImage(t, filepath.Join(dir, "img.dimg"), disk)
	base := remotetest.Nginx(t, dir, remotetest.NginxOptions{})
	p := remotetest.NewProxy(t, base)
	return &lab{dir: dir, disk: disk, proxy: p, url: p.URL + "/img.dimg"}
}

func client(cache *remote.Cache) *remote.Client {
	h := remote.NewHTTP(remote.HTTPOptions{StallTimeout: 5 * time.Second})
	return remote.New(remote.Options{Backends: map[string]remote.Backend{"http": h}, Cache: cache,
		Retries: 4, Backoff: time.Millisecond})
}

func open(t *testing.T, c *remote.Client, url string) (*imagefmt.Reader, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return imagefmt.OpenChain(url, imagefmt.ReaderOptions{Opener: c.Opener(ctx)})
}

// readAll reads the whole disk through r, in pieces of odd sizes.
func readAll(r io.ReaderAt, size int) ([]byte, error) {
	out := make([]byte, size)
	for off := 0; off < size; {
		n := min(size-off, 100_000)
		if _, err := r.ReadAt(out[off:off+n], int64(off)); err != nil && err != io.EOF {
			return nil, err
		}
		off += n
	}
	return out, nil
}

func mustEqual(t *testing.T, r *imagefmt.Reader, want []byte) {
	t.Helper()
	got, err := readAll(r, len(want))
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the disk read over HTTP differs from the original")
	}
}

// TestFaults: every fault the proxy injects gives a retry that succeeds
// or a clear error, never wrong data.
func TestFaults(t *testing.T) {
	l := newLab(t)
	for _, tc := range []struct {
		name    string
		fault   remotetest.Fault
		after   int // requests after the open before the fault
		count   int
		wantErr error // nil: the read succeeds
	}{
		{"dropped connections", remotetest.Drop, 0, 3, nil},
		{"shifted range", remotetest.ShiftRange, 0, 2, nil},
		{"503 burst", remotetest.Unavailable, 0, 3, nil},
		{"503 for ever", remotetest.Unavailable, 0, -1, errors.New("gave up")},
		{"corrupt chunk", remotetest.Corrupt, 0, -1, imagefmt.ErrChecksum},
		{"lying range", remotetest.LieRange, 0, -1, imagefmt.ErrChecksum},
		{"forbidden", remotetest.Forbidden, 0, -1, remote.ErrDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l.proxy.Inject(remotetest.None, 0, 0)
			r, err := open(t, client(nil), l.url)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			l.proxy.Inject(tc.fault, tc.after, tc.count)
			got, err := readAll(r, len(l.disk))
			l.proxy.Inject(remotetest.None, 0, 0)
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("read: %v", err)
			case tc.wantErr == nil && !bytes.Equal(got, l.disk):
				t.Fatal("wrong data")
			case tc.wantErr == nil:
				if l.proxy.Faults.Load() == 0 {
					t.Fatal("no fault was injected")
				}
			case err == nil:
				t.Fatalf("read succeeded; want an error (%v)", tc.wantErr)
			case tc.wantErr == imagefmt.ErrChecksum:
				var ce *imagefmt.ChunkError
				if !errors.Is(err, imagefmt.ErrChecksum) && !errors.Is(err, imagefmt.ErrCorrupt) || !errors.As(err, &ce) {
					t.Fatalf("error %v: want a checksum error naming the chunk", err)
				}
				t.Logf("%v", err)
			case errors.Is(err, tc.wantErr):
			default:
				if !bytes.Contains([]byte(err.Error()), []byte(tc.wantErr.Error())) {
					t.Fatalf("error %v: want %v", err, tc.wantErr)
				}
				t.Logf("%v", err)
			}
		})
	}
}

// TestOpenErrors: 404, a server without Range, and redirects.
func TestOpenErrors(t *testing.T) {
	l := newLab(t)
	if _, err := open(t, client(nil), l.proxy.URL+"/missing.dimg"); !errors.Is(err, remote.ErrNotFound) {
		t.Fatalf("missing image: %v, want ErrNotFound", err)
	}
	l.proxy.Inject(remotetest.NoRange, 0, -1)
	if _, err := open(t, client(nil), l.url); !errors.Is(err, remote.ErrNoRange) {
		t.Fatalf("server without Range: %v, want ErrNoRange", err)
	}
	l.proxy.Inject(remotetest.None, 0, 0)

	// A chain of 4 redirects is followed once; the final URL is kept.
	r, err := open(t, client(nil), l.proxy.URL+"/r/3/img.dimg")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	mustEqual(t, r, l.disk)
	if n := l.proxy.Redirects.Load(); n != 4 {
		t.Fatalf("%d redirects followed, want 4 (once, at the open)", n)
	}
	// The target refuses (an expired signature): the redirect is
	// resolved again and the read succeeds.
	r.Close()
	r, err = open(t, client(nil), l.proxy.URL+"/r/1/img.dimg")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	l.proxy.Redirects.Store(0)
	l.proxy.Inject(remotetest.Forbidden, 0, 1)
	mustEqual(t, r, l.disk)
	if n := l.proxy.Redirects.Load(); n != 2 {
		t.Fatalf("%d redirects after a 403, want 2 (resolved again once)", n)
	}
}

// TestChanged: an image replaced on the server while it is read fails
// with ErrChanged, and never mixes the two.
func TestChanged(t *testing.T) {
	l := newLab(t)
	r, err := open(t, client(nil), l.url)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, testChunk)
	if _, err := r.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // another Last-Modified second
	other := makeDisk(2)
	writeImage(t, filepath.Join(l.dir, "img.dimg"), other)
	_, err = readAll(r, len(l.disk))
	if !errors.Is(err, remote.ErrChanged) {
		t.Fatalf("read of a replaced image: %v, want ErrChanged", err)
	}
}

// TestCache: a second open (a restart: a new client on the same
// directory) fetches nothing but the open's probe; a truncated entry is
// fetched again; two users of one directory at once, with evictions,
// always read the right bytes.
func TestCache(t *testing.T) {
	l := newLab(t)
	dir := t.TempDir()
	cache := func(max int64) *remote.Cache {
		c, err := remote.OpenCache(dir, max)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	r, err := open(t, client(cache(0)), l.url)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, r, l.disk)
	r.Close()
	first := l.proxy.BodyBytes.Load()

	r, err = open(t, client(cache(0)), l.url)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, r, l.disk)
	r.Close()
	if n := l.proxy.BodyBytes.Load() - first; n > 1 {
		t.Fatalf("second read fetched %d bytes, want only the open's 1-byte probe", n)
	}

	// Truncate and damage entries: they are fetched again.
	var entries []string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && filepath.Base(filepath.Dir(p)) != "tmp" && info.Name() != "lock" {
			entries = append(entries, p)
		}
		return nil
	})
	if len(entries) < 10 {
		t.Fatalf("%d cache entries, want one per chunk read", len(entries))
	}
	for i, p := range entries[:len(entries)/2] {
		b, _ := os.ReadFile(p)
		if i%2 == 0 {
			b = b[:len(b)/2]
		} else {
			b[len(b)-1] ^= 1
		}
		os.WriteFile(p, b, 0o600)
	}
	before := l.proxy.BodyBytes.Load()
	r, err = open(t, client(cache(0)), l.url)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, r, l.disk)
	r.Close()
	if l.proxy.BodyBytes.Load() == before+1 {
		t.Fatal("damaged entries were not fetched again")
	}

	// Four users at once of a new cache too small for the image:
	// evictions under concurrent reads and writes.
	dir = t.TempDir()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := client(cache(testDisk / 4))
			r, err := imagefmt.OpenChain(l.url, imagefmt.ReaderOptions{Opener: c.Opener(context.Background())})
			if err != nil {
				errs <- err
				return
			}
			defer r.Close()
			for pass := 0; pass < 2; pass++ {
				got, err := readAll(r, len(l.disk))
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, l.disk) {
					errs <- errors.New("wrong data under concurrent cache use")
					return
				}
			}
			_ = i
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	info, err := cache(testDisk / 4).List()
	if err != nil {
		t.Fatal(err)
	}
	if info.Bytes > testDisk/4 {
		t.Fatalf("cache holds %d bytes, bound %d", info.Bytes, testDisk/4)
	}
}
