package multicast

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dimg-project/dimg/imagefmt"
)

// genDisk writes a deterministic disk of size bytes to path: runs of
// text (compressible), random bytes (stored raw), zeros (absent chunks),
// and sparse patterns, in pieces that do not line up with chunks.
func genDisk(t testing.TB, path string, size int64, seed int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	rng := rand.New(rand.NewSource(seed))
	buf := make([]byte, 1<<20)
	text := []byte("the quick brown fox jumps over the lazy dog; dimg multicast test 0123456789\n")
	for off := int64(0); off < size; {
		n := min(int64(64<<10+rng.Intn(768<<10)), size-off)
		b := buf[:n]
		switch rng.Intn(6) {
		case 0, 1: // text with a counter so chunks differ
			for i := range b {
				b[i] = text[(int64(i)+off)%int64(len(text))]
			}
			for i := 0; i+8 <= len(b); i += 4096 {
				copy(b[i:], fmt.Sprintf("%08x", off+int64(i)))
			}
		case 2: // random
			rng.Read(b)
		case 3, 4: // zeros
			clear(b)
		case 5: // sparse words
			clear(b)
			for i := 0; i < len(b); i += 512 + rng.Intn(4096) {
				b[i] = byte(rng.Intn(255) + 1)
			}
		}
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
		off += n
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
}

// makeImage turns the disk file into an image (imagefmt Writer + Encoder,
// zero chunks left out) and returns the image path.
func makeImage(t testing.TB, disk, img string, chunk int) {
	t.Helper()
	in, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	st, _ := in.Stat()
	out, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	w, err := imagefmt.NewWriter(out, imagefmt.WriterOptions{DiskSize: st.Size(), ChunkSize: chunk, ToolVersion: "multicast-test",
		UUID: [16]byte{0xd1, 0x3c, 5}, Created: time.Unix(1700000000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	var e imagefmt.Encoder
	data := make([]byte, chunk)
	fb := make([]byte, imagefmt.FrameBufSize(chunk))
	for c := int64(0); c*int64(chunk) < st.Size(); c++ {
		n, err := in.ReadAt(data, c*int64(chunk))
		if n == 0 {
			t.Fatal(err)
		}
		if imagefmt.IsZero(data[:n]) {
			// Every third zero chunk was "in use" on the source: a zero
			// run a device target must zero; the others were unused.
			if c%3 == 0 {
				if err := w.WriteZeroRun(c, 1); err != nil {
					t.Fatal(err)
				}
			}
			continue
		}
		f, err := e.Encode(fb, c, data[:n])
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
}

type fixture struct {
	disk, img string
	size      int64
}

// newFixture generates a disk and its image in a temp dir.
func newFixture(t testing.TB, size int64, chunk int, seed int64) fixture {
	dir := t.TempDir()
	fx := fixture{disk: filepath.Join(dir, "disk.raw"), img: filepath.Join(dir, "disk.dimg"), size: size}
	genDisk(t, fx.disk, size, seed)
	makeImage(t, fx.disk, fx.img, chunk)
	return fx
}

// sameFile compares with cmp(1) when present (the oracle), else in Go.
func sameFile(t testing.TB, a, b string) {
	t.Helper()
	if p, err := exec.LookPath("cmp"); err == nil {
		out, err := exec.Command(p, a, b).CombinedOutput()
		if err != nil {
			t.Fatalf("cmp %s %s: %v: %s", a, b, err, out)
		}
		return
	}
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Fatalf("%s and %s differ", a, b)
	}
}

// sameAsImage compares a target with the image read through
// imagefmt.Reader (what restore writes).
func sameAsImage(t testing.TB, img, target string) {
	t.Helper()
	r, err := imagefmt.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f, err := os.Open(target)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	if st.Size() != r.Size() {
		t.Fatalf("target %d bytes, image disk %d", st.Size(), r.Size())
	}
	a := make([]byte, 1<<20)
	b := make([]byte, 1<<20)
	for off := int64(0); off < r.Size(); off += int64(len(a)) {
		n := int(min(int64(len(a)), r.Size()-off))
		if _, err := r.ReadAt(a[:n], off); err != nil {
			t.Fatal(err)
		}
		if _, err := f.ReadAt(b[:n], off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a[:n], b[:n]) {
			t.Fatalf("target differs from the image near byte %d", off)
		}
	}
}

var portSeq atomic.Int32

// loopEndpoint returns a group and port unlikely to collide with other
// tests running on the machine.
func loopEndpoint() (string, int) {
	r := rand.New(rand.NewSource(time.Now().UnixNano() + int64(os.Getpid())))
	n := portSeq.Add(1)
	return fmt.Sprintf("239.255.%d.%d", 1+r.Intn(250), 1+r.Intn(250)), 20000 + r.Intn(30000) + int(n)
}

func loopbackOK(t testing.TB) {
	t.Helper()
	grp, port := loopEndpoint()
	ep, err := resolveEndpoint(grp, port, "lo")
	if err != nil {
		t.Skipf("no loopback interface: %v", err)
	}
	c, err := openGroupSocket(context.Background(), ep)
	if err != nil {
		t.Skipf("cannot join a multicast group on lo: %v", err)
	}
	c.Close()
}

// awaitTimeout bounds every wait of a test on a goroutine it started.
const awaitTimeout = 90 * time.Second

// await receives from ch, failing the test (instead of hanging the suite)
// when nothing arrives within awaitTimeout.
func await[T any](t testing.TB, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(awaitTimeout):
		t.Fatalf("%s: nothing after %v", what, awaitTimeout)
	}
	panic("unreachable")
}
