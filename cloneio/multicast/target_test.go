package multicast

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dimg-project/dimg/cloneio"
	"github.com/dimg-project/dimg/imagefmt"
)

// loopDevice attaches a new file of size bytes filled with fill.
func loopDevice(t *testing.T, size int64, fill byte) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop devices")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("losetup not installed")
	}
	file := filepath.Join(t.TempDir(), "dev.img")
	if err := os.WriteFile(file, bytes.Repeat([]byte{fill}, int(size)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", file).Output()
	if err != nil {
		t.Skipf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// TestLoopbackBlockDevice deploys to a loop device full of 0xff and
// restores the same image with cloneio to another: the two devices must
// be identical (zero runs zeroed, unused chunks left alone), and the
// receiver's verification must pass without reading unused chunks.
func TestLoopbackBlockDevice(t *testing.T) {
	loopbackOK(t)
	fx := newFixture(t, 6<<20, 64<<10, 7)
	dev := loopDevice(t, 8<<20, 0xff)
	ref := loopDevice(t, 8<<20, 0xff)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	grp, port := loopEndpoint()
	out := make(chan rxOut, 1)
	go func() {
		r, err := Receive(ctx, dev, ReceiveOptions{Group: grp, Port: port, Interface: "lo", Wait: 20 * time.Second})
		out <- rxOut{r, err}
	}()
	if _, err := Send(ctx, fx.img, SendOptions{Group: grp, Port: port, Interface: "lo", MaxWait: 20 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if o := await(t, "receiver", out); o.err != nil {
		t.Fatal(o.err)
	}

	img, err := imagefmt.Open(fx.img)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if len(img.ZeroRuns()) == 0 {
		t.Fatal("fixture has no zero runs")
	}
	tg, err := cloneio.OpenTarget(ref, img.Size(), img.SectorSize(), cloneio.TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cloneio.RestoreImage(ctx, img, tg, cloneio.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := tg.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("cmp", dev, ref).CombinedOutput(); err != nil {
		t.Fatalf("multicast target and restore differ: %v %s", err, b)
	}
	// And unused chunks really were left alone (still 0xff).
	b := make([]byte, img.Size())
	f, _ := os.Open(dev)
	defer f.Close()
	f.ReadAt(b, 0)
	left := false
	for c := int64(0); c < img.Header().NumChunks(); c++ {
		if img.ChunkState(c) == imagefmt.ChunkUnused && b[c*64<<10] == 0xff {
			left = true
		}
	}
	if !left {
		t.Fatal("no unused chunk was left alone")
	}
}

// TestLoopbackForce: an existing file is refused without Force, as
// restore refuses it.
func TestLoopbackForce(t *testing.T) {
	loopbackOK(t)
	path := filepath.Join(t.TempDir(), "exists")
	os.WriteFile(path, []byte("keep me"), 0o644)
	fx := newFixture(t, 1<<20, 64<<10, 8)
	for _, force := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		grp, port := loopEndpoint()
		out := make(chan rxOut, 1)
		go func() {
			r, err := Receive(ctx, path, ReceiveOptions{Group: grp, Port: port, Interface: "lo", Wait: 10 * time.Second,
				Target: cloneio.TargetOptions{Force: force}})
			out <- rxOut{r, err}
		}()
		_, serr := Send(ctx, fx.img, SendOptions{Group: grp, Port: port, Interface: "lo", MaxWait: 2 * time.Second})
		o := await(t, "receiver", out)
		cancel()
		if !force {
			if o.err == nil || !strings.Contains(o.err.Error(), "exists") {
				t.Fatalf("existing file without force: %v", o.err)
			}
			if b, _ := os.ReadFile(path); string(b) != "keep me" {
				t.Fatal("existing file was touched")
			}
			continue
		}
		if serr != nil || o.err != nil {
			t.Fatalf("with force: %v %v", serr, o.err)
		}
		sameFile(t, fx.disk, path)
	}
}
