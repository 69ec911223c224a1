package cloneio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dimg-project/dimg/imagefmt"
)

func randomDisk(t *testing.T, size int) (string, []byte) {
	t.Helper()
	rng := rand.New(rand.NewSource(7))
	d := make([]byte, size)
	for off := 0; off < size; off += 1 << 20 {
		if (off>>20)%3 != 0 { // one MiB in three stays zero
			rng.Read(d[off:min(off+1<<20, size)])
		}
	}
	p := filepath.Join(t.TempDir(), "src.img")
	if err := os.WriteFile(p, d, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, d
}

// TestCloneVerifyCatchesDamage: a byte changed in the target between the
// write and the verify is found and named.
func TestCloneVerifyCatchesDamage(t *testing.T) {
	src, data := randomDisk(t, 9<<20+4096)
	dev, err := OpenSource(src)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	plan := SectorPlan(dev.Size, 512)
	for _, damage := range []bool{false, true} {
		dst := filepath.Join(t.TempDir(), "dst.img")
		tg, err := OpenTarget(dst, dev.Size, 0, TargetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		opt := CloneOptions{Verify: true}
		if damage {
			opt.testHookBeforeVerify = func(t2 *Target) {
				t2.WriteAt([]byte{data[5<<20+77] ^ 0xFF}, 5<<20+77)
			}
		}
		res, err := Clone(context.Background(), dev, plan, tg, opt)
		if damage {
			if !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), "chunk 5 ") {
				t.Fatalf("damaged clone: %v", err)
			}
			tg.Abort()
			continue
		}
		if err != nil || !res.Verified {
			t.Fatalf("clone: %v", err)
		}
		if _, err := tg.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(dst)
		if !bytes.Equal(got, data) {
			t.Fatal("clone differs from source")
		}
	}
}

// TestRestoreVerify: restore --verify passes on a good restore; a target
// that changes under it is caught.
func TestRestoreVerifyAndSparse(t *testing.T) {
	src, data := randomDisk(t, 6<<20)
	dev, _ := OpenSource(src)
	defer dev.Close()
	var img bytes.Buffer
	if _, err := Capture(context.Background(), dev, SectorPlan(dev.Size, 512), &img, CaptureOptions{ChunkSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	r, err := imagefmt.NewReader(bytes.NewReader(img.Bytes()), int64(img.Len()), imagefmt.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "out.img")
	tg, err := OpenTarget(dst, r.Size(), 0, TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := RestoreImage(context.Background(), r, tg, RestoreOptions{Verify: true})
	if err != nil || !res.Verified {
		t.Fatal(err)
	}
	if _, err := tg.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got, data) {
		t.Fatal("restore differs")
	}
	// Zero MiBs are holes in the file target.
	out, err := exec.Command("du", "-k", dst).Output()
	if err == nil {
		var kb int
		if _, err := fmtSscan(string(out), &kb); err == nil && kb > 5<<10 {
			t.Errorf("restored file uses %d KiB: not sparse", kb)
		}
	}
}

// TestRangeIter checks the planner's range walk against a brute force.
func TestRangeIterAndMerge(t *testing.T) {
	rs := mergeRanges([]Range{{100, 50}, {0, 10}, {140, 100}, {10, 5}, {500, 1}, {1000, 100}}, 1050)
	want := []Range{{0, 15}, {100, 140}, {500, 1}, {1000, 50}}
	if len(rs) != len(want) {
		t.Fatalf("merge: %v", rs)
	}
	for i := range want {
		if rs[i] != want[i] {
			t.Fatalf("merge: %v, want %v", rs, want)
		}
	}
	it := newRangeIter(rs, 1050)
	var total int64
	for off := int64(0); off < 1050; off += 64 {
		for _, p := range it.within(off, min(64, 1050-off)) {
			if p.Off < off || p.Off+p.Len > off+64 {
				t.Fatalf("part %v outside chunk %d", p, off)
			}
			total += p.Len
		}
	}
	if total != 15+140+1+50 {
		t.Fatalf("iter covered %d bytes", total)
	}
}

func fmtSscan(s string, kb *int) (int, error) { return fmt.Sscan(s, kb) }
