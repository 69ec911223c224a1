package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

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

	port := fmt.Sprint(42000 + int(fileSum(t, img)[0])) // a port unlikely to collide with other runs
	send := exec.Command(dimgBin, "send", "--interface", "lo", "--port", port, "--min-receivers", "2",
		"--max-wait", "20s", "--max-rate", "400M", img)
	var sendOut bytes.Buffer
	send.Stdout, send.Stderr = &sendOut, &sendOut
	if err := send.Start(); err != nil {
		t.Fatal(err)
	}
	defer send.Process.Kill()
	type result struct {
		code int
		out  string
	}
	done := make(chan result, 2)
	for i := range 2 {
		go func() {
			target := filepath.Join(dir, fmt.Sprintf("rx%d.img", i))
			out, errs, code := run(t, nil, "receive", "-q", "--interface", "lo", "--port", port, target)
			done <- result{code, out + errs}
		}()
	}
	for range 2 {
		if r := <-done; r.code != 0 {
			t.Fatalf("receive: exit %d: %s", r.code, r.out)
		}
	}
	if err := send.Wait(); err != nil {
		t.Fatalf("send: %v\n%s", err, sendOut.String())
	}
	for i := range 2 {
		sameFiles(t, ref, filepath.Join(dir, fmt.Sprintf("rx%d.img", i)))
	}
	if n := strings.Count(sendOut.String(), " ok "); n < 2 {
		t.Fatalf("sender summary lists %d successful receivers:\n%s", n, sendOut.String())
	}
}
