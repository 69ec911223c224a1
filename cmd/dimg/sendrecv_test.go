package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sendRecvTimeout bounds a whole send/receive session in these tests: a
// session that hangs fails the test instead of the suite's timeout.
const sendRecvTimeout = 2 * time.Minute

// dimgResult is how a dimg process started in the background ended.
type dimgResult struct {
	code int
	out  string // stdout and stderr
	err  error  // the process could not be run
}

// startDimg runs dimg in the background until it exits or ctx ends (it is
// then killed); the result arrives on the channel. Nothing in it touches
// t, so it is safe from any goroutine.
func startDimg(ctx context.Context, args ...string) <-chan dimgResult {
	ch := make(chan dimgResult, 1)
	cmd := exec.CommandContext(ctx, dimgBin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		ch <- dimgResult{err: err}
		return ch
	}
	go func() {
		err := cmd.Wait()
		res := dimgResult{out: out.String()}
		var ee *exec.ExitError
		switch {
		case ctx.Err() != nil:
			res.err = fmt.Errorf("killed after %v: %w", sendRecvTimeout, ctx.Err())
		case errors.As(err, &ee):
			res.code = ee.ExitCode()
		case err != nil:
			res.err = err
		}
		ch <- res
	}()
	return ch
}

// waitDimg waits for a background dimg; the context given to startDimg
// bounds the wait.
func waitDimg(t *testing.T, what string, ch <-chan dimgResult) dimgResult {
	t.Helper()
	r := <-ch
	if r.err != nil {
		t.Fatalf("%s: %v\n%s", what, r.err, r.out)
	}
	return r
}

// TestSendReceiveCLI deploys an image over multicast on loopback through
// the command line, two receivers at once: each target equals `dimg
// restore` of the same image, and the sender's summary lists both.
func TestSendReceiveCLI(t *testing.T) {
	src := disk(t, "bare")
	dir := t.TempDir()
	img := filepath.Join(dir, "d.dimg")
	mustRun(t, "capture", "-q", src, img)
	ref := filepath.Join(dir, "ref.img")
	mustRun(t, "restore", "-q", img, ref)

	ctx, cancel := context.WithTimeout(context.Background(), sendRecvTimeout)
	defer cancel()
	port := fmt.Sprint(42000 + int(fileSum(t, img)[0])) // a port unlikely to collide with other runs
	send := startDimg(ctx, "send", "--interface", "lo", "--port", port, "--min-receivers", "2",
		"--max-wait", "20s", "--max-rate", "400M", img)
	var rxs []<-chan dimgResult
	for i := range 2 {
		target := filepath.Join(dir, fmt.Sprintf("rx%d.img", i))
		rxs = append(rxs, startDimg(ctx, "receive", "-q", "--interface", "lo", "--port", port, "--wait", "60s", target))
	}
	for i, ch := range rxs {
		if r := waitDimg(t, fmt.Sprintf("receiver %d", i), ch); r.code != 0 {
			t.Fatalf("receive: exit %d: %s", r.code, r.out)
		}
	}
	s := waitDimg(t, "send", send)
	if s.code != 0 {
		t.Fatalf("send: exit %d\n%s", s.code, s.out)
	}
	for i := range 2 {
		sameFiles(t, ref, filepath.Join(dir, fmt.Sprintf("rx%d.img", i)))
	}
	if n := strings.Count(s.out, " ok "); n < 2 {
		t.Fatalf("sender summary lists %d successful receivers:\n%s", n, s.out)
	}
}

// emptyLoopDevice attaches a new sparse file of size bytes (all zeros) as
// a loop device, detached (once) when the test ends.
func emptyLoopDevice(t *testing.T, size int64) (dev, file string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop devices")
	}
	file = filepath.Join(t.TempDir(), "dev.img")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(file, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", file).Output()
	if err != nil {
		t.Skipf("losetup: %v", err)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev, file
}

// TestReceiveLargerGPT: receiving onto a disk larger than the image's
// moves the GPT backup to the end, as restore does (sgdisk -v clean), and
// the disk is byte for byte what `dimg restore` writes onto a disk of the
// same size.
func TestReceiveLargerGPT(t *testing.T) {
	if _, err := exec.LookPath("sgdisk"); err != nil {
		t.Skip("needs sgdisk")
	}
	src := disk(t, "gpt")
	st, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	size := st.Size() + 64<<20
	rxDev, rxFile := emptyLoopDevice(t, size)
	refDev, _ := emptyLoopDevice(t, size)
	dir := t.TempDir()
	img := filepath.Join(dir, "g.dimg")
	mustRun(t, "capture", "-q", src, img)
	mustRun(t, "restore", "-q", img, refDev)

	ctx, cancel := context.WithTimeout(context.Background(), sendRecvTimeout)
	defer cancel()
	port := fmt.Sprint(43000 + int(fileSum(t, img)[1])) // apart from TestSendReceiveCLI's
	send := startDimg(ctx, "send", "--interface", "lo", "--port", port, "--max-wait", "20s", "--max-rate", "400M", img)
	rx := waitDimg(t, "receive", startDimg(ctx, "receive", "--interface", "lo", "--port", port, "--wait", "60s", rxDev))
	if rx.code != 0 {
		t.Fatalf("receive: exit %d: %s", rx.code, rx.out)
	}
	if s := waitDimg(t, "send", send); s.code != 0 {
		t.Fatalf("send: exit %d\n%s", s.code, s.out)
	}
	if !strings.Contains(rx.out, "GPT backup") {
		t.Errorf("receive did not say it moved the GPT backup:\n%s", rx.out)
	}
	if out, err := exec.Command("sgdisk", "-v", rxFile).CombinedOutput(); err != nil || !strings.Contains(string(out), "No problems found") {
		t.Fatalf("sgdisk -v on the received disk: %v\n%s", err, out)
	}
	sameFiles(t, refDev, rxDev)
}
