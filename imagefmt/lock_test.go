package imagefmt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLockWriter(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.dimg")
	if err := os.WriteFile(img, []byte("image"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := LockWriter(img)
	if err != nil {
		t.Fatal(err)
	}
	if l.Previous != nil {
		t.Errorf("first lock: previous holder %v", l.Previous)
	}
	// A second writer, even in this process and through a symbolic link,
	// is refused and told who.
	link := filepath.Join(t.TempDir(), "link.dimg")
	if err := os.Symlink(img, link); err != nil {
		t.Fatal(err)
	}
	if _, err := LockWriter(link); !errors.Is(err, ErrLocked) {
		t.Errorf("lock through a symbolic link: %v", err)
	}
	_, err = LockWriter(img)
	var le *LockedError
	if !errors.As(err, &le) || !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock: %v, want a *LockedError", err)
	}
	if le.Holder == nil || le.Holder.PID != os.Getpid() || le.Holder.Command == "" || time.Since(le.Holder.Since) > time.Minute {
		t.Errorf("holder %+v", le.Holder)
	}
	if msg := err.Error(); !strings.Contains(msg, fmt.Sprintf("pid %d", os.Getpid())) || !strings.Contains(msg, img) {
		t.Errorf("message %q names neither the holder nor the image", msg)
	}
	if h := ReadLockHolder(img); h == nil || h.PID != os.Getpid() {
		t.Errorf("ReadLockHolder: %v", h)
	}
	// The image's own lock (an editor's) refused names the same holder.
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := lockFile(f, img); err != nil {
		t.Fatal(err)
	}
	g, _ := os.Open(img)
	defer g.Close()
	if err := lockFile(g, img); !errors.As(err, &le) || le.Holder == nil || le.Holder.PID != os.Getpid() {
		t.Errorf("a second lock of the image itself: %v", err)
	}
	// Readers are not writers: the image opens for reading meanwhile.
	if b, err := os.ReadFile(img); err != nil || string(b) != "image" {
		t.Errorf("read while locked: %q, %v", b, err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(); err != nil {
		t.Errorf("second unlock: %v", err)
	}
	if _, err := os.Stat(LockPath(img)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("lock file left after Unlock: %v", err)
	}
	l2, err := LockWriter(img)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	defer l2.Unlock()
	if l2.Previous != nil {
		t.Errorf("after a clean unlock: previous holder %v", l2.Previous)
	}
}

func TestLockWriterRefusedDirectory(t *testing.T) {
	_, err := LockWriter(filepath.Join(t.TempDir(), "missing-dir", "disk.dimg"))
	if err == nil || errors.Is(err, ErrLocked) {
		t.Errorf("lock in a missing directory: %v", err)
	}
}

// TestLockWriterOtherProcess: another process's lock is refused with its
// pid, and its death (kill -9) releases it; the next holder learns that
// the previous one did not end cleanly.
func TestLockWriterOtherProcess(t *testing.T) {
	if img := os.Getenv("DIMG_LOCK_HELPER"); img != "" {
		if _, err := LockWriter(img); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		os.Stdout.WriteString("locked\n")
		time.Sleep(time.Minute)
		os.Exit(3)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	img := filepath.Join(t.TempDir(), "disk.dimg")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-test.run=^TestLockWriterOtherProcess$")
	cmd.Env = append(os.Environ(), "DIMG_LOCK_HELPER="+img)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	if line, err := bufio.NewReader(out).ReadString('\n'); line != "locked\n" {
		t.Fatalf("helper did not lock: %q, %v", line, err)
	}
	_, err = LockWriter(img)
	var le *LockedError
	if !errors.As(err, &le) || le.Holder == nil || le.Holder.PID != cmd.Process.Pid || !strings.Contains(le.Holder.Command, "TestLockWriterOtherProcess") {
		t.Fatalf("lock held by the helper: %v (holder %+v), want pid %d", err, le, cmd.Process.Pid)
	}
	cmd.Process.Kill() // SIGKILL: no cleanup runs
	cmd.Wait()
	if h := ReadLockHolder(img); h != nil {
		t.Errorf("a dead holder is still named: %v", h)
	}
	l, err := LockWriter(img)
	if err != nil {
		t.Fatalf("lock after the holder was killed: %v", err)
	}
	defer l.Unlock()
	if l.Previous == nil || l.Previous.PID != cmd.Process.Pid {
		t.Errorf("previous holder %v, want pid %d", l.Previous, cmd.Process.Pid)
	}
}
