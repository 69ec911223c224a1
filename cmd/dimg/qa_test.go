package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runTimeout is run with a deadline: a command that hangs fails the test
// instead of the whole run.
func runTimeout(t *testing.T, d time.Duration, stdin io.Reader, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, dimgBin, args...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("dimg %s: still running after %v (hang)", strings.Join(args, " "), d)
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("dimg %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// noTemp fails if dir holds a temporary ".NAME.part-*" file.
func noTemp(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".part-") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

// TestSameSourceAndTarget: an output that is the input (the same file, a
// hard link, a loop device over it) is refused even with --force, and the
// input is left as it was. Before, `capture d d --force` replaced the disk
// by its image, `restore x.dimg x.dimg --force` the image by its disk, and
// `restore x.dimg /dev/loopN` (loopN over x.dimg) overwrote the image as
// it read it and exited 0.
func TestSameSourceAndTarget(t *testing.T) {
	src := disk(t, "bare")
	dir := t.TempDir()
	img := filepath.Join(dir, "d.dimg")
	mustRun(t, "capture", "-q", src, img)
	srcSum, imgSum := fileSum(t, src), fileSum(t, img)
	link := filepath.Join(dir, "link.img")
	if err := os.Link(src, link); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"capture", "--force", src, src},
		{"capture", "--force", src, link},
		{"clone", "--force", src, src},
		{"clone", "--force", link, src},
		{"restore", "--force", img, img},
	} {
		_, errs, code := runTimeout(t, time.Minute, nil, args...)
		if code != exitFailure || !strings.Contains(errs, "overlap") {
			t.Errorf("%s: exit %d, want %d and 'overlap': %s", strings.Join(args, " "), code, exitFailure, errs)
		}
	}
	if fileSum(t, src) != srcSum || fileSum(t, img) != imgSum {
		t.Fatal("a refused command changed its input")
	}
	noTemp(t, dir)

	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	// The image's file as the target disk, through a loop device. The
	// image must be larger than the disk or the size check refuses first:
	// pad it (the footer is then no longer at the end, so use a sector
	// image of random bytes, which is larger than its disk).
	rnd := filepath.Join(dir, "rnd.raw")
	b := make([]byte, 8<<20)
	rand.NewChaCha8([32]byte{1}).Read(b) // incompressible: the image is larger than the disk
	os.WriteFile(rnd, b, 0o644)
	rimg := filepath.Join(dir, "rnd.dimg")
	mustRun(t, "capture", "-q", "--sector", rnd, rimg)
	before := fileSum(t, rimg)
	out, err := exec.Command("losetup", "-f", "--show", rimg).Output()
	if err != nil {
		t.Skipf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	if st, _ := os.Stat(rimg); st.Size() < int64(len(b)) {
		t.Skipf("image (%d bytes) smaller than its disk: the size check covers it", st.Size())
	}
	_, errs, code := runTimeout(t, time.Minute, nil, "restore", rimg, dev)
	if code != exitFailure || !strings.Contains(errs, "overlap") {
		t.Errorf("restore onto a loop device over the image: exit %d: %s", code, errs)
	}
	_, errs, code = runTimeout(t, time.Minute, nil, "clone", "--force", dev, rimg)
	if code != exitFailure || !strings.Contains(errs, "overlap") {
		t.Errorf("clone of a loop device onto its own file: exit %d: %s", code, errs)
	}
	if fileSum(t, rimg) != before {
		t.Fatal("the image was overwritten")
	}
}

// TestImageIsPipe: a FIFO named as IMAGE is refused at once by the
// commands that need random access (before, they hung in open(2) and
// ignored Ctrl-C), and restore reads it as a stream, like "-".
func TestImageIsPipe(t *testing.T) {
	src := disk(t, "bare")
	dir := t.TempDir()
	img := filepath.Join(dir, "d.dimg")
	mustRun(t, "capture", "-q", src, img)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	for _, args := range [][]string{
		{"info", fifo}, {"verify", fifo}, {"ls", fifo}, {"cat", fifo, "/x"},
		{"extract", fifo, "/x", filepath.Join(dir, "x")}, {"mount", fifo, mnt},
	} {
		_, errs, code := runTimeout(t, 20*time.Second, nil, args...)
		if code != exitFailure || !strings.Contains(errs, "pipe") {
			t.Errorf("%s: exit %d, want %d naming the pipe: %s", strings.Join(args, " "), code, exitFailure, errs)
		}
	}
	// restore FIFO TARGET: a writer feeds the image in.
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		defer f.Close()
		in, _ := os.Open(img)
		defer in.Close()
		io.Copy(f, in)
	}()
	out := filepath.Join(dir, "out.raw")
	if _, errs, code := runTimeout(t, time.Minute, nil, "restore", "-q", fifo, out); code != 0 {
		t.Fatalf("restore from a FIFO: exit %d: %s", code, errs)
	}
	ref := filepath.Join(dir, "ref.raw")
	mustRun(t, "restore", "-q", img, ref)
	if fileSum(t, out) != fileSum(t, ref) {
		t.Fatal("restore from a FIFO differs from restore from the file")
	}
}

// TestInterruptBlockedRestore: Ctrl-C while restore waits on a stalled
// standard input ends it (exit 130) with no target or temporary file left.
// Before, the signal was caught but nothing watched it: the process hung.
func TestInterruptBlockedRestore(t *testing.T) {
	src := disk(t, "bare")
	dir := t.TempDir()
	img := filepath.Join(dir, "d.dimg")
	mustRun(t, "capture", "-q", src, img)
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	target := filepath.Join(dir, "out.raw")
	cmd := exec.Command(dimgBin, "restore", "-q", "-", target)
	cmd.Stdin = pr
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pr.Close()
	pw.Write(data[:len(data)/3]) // then stall, the pipe held open
	time.Sleep(time.Second)
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		t.Fatal("restore ignored SIGINT while blocked on standard input")
	}
	if code := cmd.ProcessState.ExitCode(); code != exitCanceled {
		t.Errorf("exit %d, want %d: %s", code, exitCanceled, errb.String())
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Error("interrupted restore left its target")
	}
	noTemp(t, dir)
}

// TestExitCodesQA: a missing or unreadable IMAGE is a failure (1), not
// damage (3); damage found when opening is 3 like damage found later; an
// unknown command is a usage error (2).
func TestExitCodesQA(t *testing.T) {
	src := disk(t, "bare")
	dir := t.TempDir()
	img := filepath.Join(dir, "d.dimg")
	mustRun(t, "capture", "-q", src, img)
	b, _ := os.ReadFile(img)
	trunc := filepath.Join(dir, "trunc.dimg")
	os.WriteFile(trunc, b[:len(b)/2], 0o644)
	// The one-line result goes to stderr, as the README says (and as
	// capture, restore and clone do); stdout is for --json.
	if out, errs, code := runTimeout(t, time.Minute, nil, "verify", img); code != 0 || out != "" || !strings.Contains(errs, "OK") {
		t.Errorf("verify: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"verify", filepath.Join(dir, "missing.dimg")}, exitFailure},
		{[]string{"verify", dir}, exitFailure},
		{[]string{"info", trunc}, exitCorrupt},
		{[]string{"verify", trunc}, exitCorrupt},
		{[]string{"restore", trunc, filepath.Join(dir, "x.raw")}, exitCorrupt},
		{[]string{"no-such-command"}, exitUsage},
	} {
		if _, errs, code := runTimeout(t, time.Minute, nil, c.args...); code != c.code {
			t.Errorf("%s: exit %d, want %d: %s", strings.Join(c.args, " "), code, c.code, errs)
		}
	}
}

// TestLsNoTable: ls of a disk without a partition table says so in words
// (it said "none partition table").
func TestLsNoTable(t *testing.T) {
	src := disk(t, "bare")
	out, errs, code := runTimeout(t, time.Minute, nil, "ls", src)
	if code != 0 || !strings.Contains(out, ", no partition table\n") {
		t.Errorf("ls of a bare disk: exit %d: %s%s", code, out, errs)
	}
}

// TestLayoutFlagsQA: --grow and --new-disk-guid on a disk without a
// partition table are refused before anything is written (before, after
// the whole restore); the --json layout uses snake_case keys like the rest.
func TestLayoutFlagsQA(t *testing.T) {
	src := disk(t, "bare")
	dir := t.TempDir()
	img := filepath.Join(dir, "d.dimg")
	mustRun(t, "capture", "-q", src, img)
	for _, args := range [][]string{
		{"restore", "--grow", "--size", "200M", img, filepath.Join(dir, "a.raw")},
		{"restore", "--new-disk-guid", img, filepath.Join(dir, "b.raw")},
		{"clone", "--new-disk-guid", src, filepath.Join(dir, "c.raw")},
	} {
		_, errs, code := runTimeout(t, time.Minute, nil, args...)
		if code != exitUsage || !strings.Contains(errs, "no partition table") {
			t.Errorf("%s: exit %d: %s", strings.Join(args, " "), code, errs)
		}
		if _, err := os.Stat(args[len(args)-1]); !os.IsNotExist(err) {
			t.Errorf("%s left its target", strings.Join(args, " "))
		}
	}
	noTemp(t, dir)

	gpt := disk(t, "gpt")
	gimg := filepath.Join(dir, "g.dimg")
	mustRun(t, "capture", "-q", gpt, gimg)
	st, _ := os.Stat(gpt)
	out := mustRun(t, "restore", "--json", "--size", strconv.FormatInt(st.Size()+8<<20, 10), gimg, filepath.Join(dir, "g.raw"))
	var res struct {
		Layout map[string]any `json:"layout"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	if res.Layout["gpt_backup_moved"] != true {
		t.Fatalf("layout = %v, want gpt_backup_moved: true", res.Layout)
	}
}

// TestInterruptPipeline: Ctrl-C (or SIGTERM) reaches every process of
// `cat IMAGE | dimg restore - TARGET` at once; the feeder dies and its end
// of file may reach restore before restore's own signal is handled.
// Before, restore then said "image is corrupt: the file ends in the
// frame" (and exited 3 about once in fifteen) instead of reporting the
// interrupt.
func TestInterruptPipeline(t *testing.T) {
	src := disk(t, "bare")
	dir := t.TempDir()
	img := filepath.Join(dir, "d.dimg")
	mustRun(t, "capture", "-q", src, img)
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	for trial := range 5 {
		target := filepath.Join(dir, "out.raw")
		// The feeder sends part of the image, then stalls: restore is
		// blocked on standard input when the signal comes.
		feeder := exec.Command("sh", "-c", `head -c "$1" "$2"; exec sleep 60`, "sh", strconv.FormatInt(st.Size()/3, 10), img)
		feeder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		pipe, err := feeder.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := feeder.Start(); err != nil {
			t.Fatal(err)
		}
		restore := exec.Command(dimgBin, "restore", "-q", "-", target)
		restore.Stdin = pipe
		restore.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pgid: feeder.Process.Pid}
		var errb bytes.Buffer
		restore.Stderr = &errb
		if err := restore.Start(); err != nil {
			feeder.Process.Kill()
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		syscall.Kill(-feeder.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { restore.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			restore.Process.Kill()
			feeder.Process.Kill()
			t.Fatal("restore did not end after SIGTERM")
		}
		feeder.Wait()
		if code := restore.ProcessState.ExitCode(); code != exitCanceled || !strings.Contains(errb.String(), "interrupted") || strings.Contains(errb.String(), "corrupt") {
			t.Errorf("trial %d: exit %d, want %d and 'interrupted': %s", trial, code, exitCanceled, errb.String())
		}
		if _, err := os.Stat(target); !os.IsNotExist(err) {
			t.Errorf("trial %d: interrupted restore left its target", trial)
		}
		noTemp(t, dir)
	}
}

// TestRecoverMissingImage: recover of an IMAGE that does not exist fails
// (exit 1, naming it). Before, it said "nothing to recover" and exited 0,
// so a mistyped name looked like a clean image.
func TestRecoverMissingImage(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.dimg")
	for _, args := range [][]string{
		{"recover", missing},
		{"recover", "--drop", missing},
		{"recover", "--commit", missing},
	} {
		_, errs, code := runTimeout(t, time.Minute, nil, args...)
		if code != exitFailure || !strings.Contains(errs, "no such file") {
			t.Errorf("%s: exit %d, want %d and 'no such file': %s", strings.Join(args, " "), code, exitFailure, errs)
		}
	}
}
