package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/imagefmt"
	"github.com/dimg-project/dimg/testimages"
)

// requireRW skips unless the test can mount FUSE and loop devices.
func requireRW(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for FUSE and loop mounts")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
	for _, tool := range []string{"losetup", "mount", "umount", "e2fsck", "dd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip("needs", tool)
		}
	}
}

// rwMount is a foreground `dimg mount --rw` run as a child process.
type rwMount struct {
	cmd    *exec.Cmd
	dir    string
	stderr *lockedBuffer
	done   chan error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startRW runs dimg mount --rw --raw ARGS... IMAGE DIR (the raw disk and
// partitions writable, no trees) and waits until DIR serves disk.img. At
// cleanup it unmounts (if still mounted) and waits.
func startRW(t *testing.T, img string, args ...string) *rwMount {
	return startRWArgs(t, img, append([]string{"--raw"}, args...)...)
}

// startRWArgs runs dimg mount --rw ARGS... IMAGE DIR; see startRW.
func startRWArgs(t *testing.T, img string, args ...string) *rwMount {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m := &rwMount{dir: dir, stderr: &lockedBuffer{}, done: make(chan error, 1)}
	m.cmd = exec.Command(dimgBin, append(append([]string{"mount", "--rw"}, args...), img, dir)...)
	m.cmd.Stderr = m.stderr
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.done <- m.cmd.Wait() }()
	t.Cleanup(func() {
		exec.Command("umount", dir).Run()
		select {
		case <-m.done:
		case <-time.After(time.Minute):
			m.cmd.Process.Kill()
			t.Errorf("dimg mount --rw did not end after umount")
		}
	})
	for deadline := time.Now().Add(time.Minute); ; {
		if _, err := os.Stat(filepath.Join(dir, "disk.img")); err == nil {
			return m
		}
		select {
		case err := <-m.done:
			m.done <- err
			t.Fatalf("dimg mount --rw exited: %v\n%s", err, m.stderr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("dimg mount --rw not ready after a minute\n%s", m.stderr)
		}
	}
}

// unmount unmounts DIR and waits for dimg to commit and exit; it returns
// the exit error and stderr.
func (m *rwMount) unmount(t *testing.T) (error, string) {
	t.Helper()
	if out, err := exec.Command("umount", m.dir).CombinedOutput(); err != nil {
		t.Fatalf("umount %s: %v %s", m.dir, err, out)
	}
	select {
	case err := <-m.done:
		m.done <- err // for the cleanup
		return err, m.stderr.String()
	case <-time.After(2 * time.Minute):
		t.Fatalf("dimg mount --rw did not exit after umount\n%s", m.stderr)
	}
	return nil, ""
}

// loopMountFS mounts the filesystem in bytes [off, off+size) of file
// through a loop device (read-only with ro), unmounted at cleanup unless
// the returned function did it first.
func loopMountFS(t *testing.T, file string, off, size int64, ro bool) (string, func()) {
	t.Helper()
	args := []string{"-f", "--show"}
	if ro {
		args = append(args, "-r")
	}
	if size > 0 {
		args = append(args, "-o", fmt.Sprint(off), "--sizelimit", fmt.Sprint(size))
	}
	out, err := exec.Command("losetup", append(args, file)...).Output()
	if err != nil {
		t.Skipf("losetup %s: %v", file, err)
	}
	dev := strings.TrimSpace(string(out))
	dir := filepath.Join(t.TempDir(), "k")
	os.Mkdir(dir, 0o755)
	opts := "rw"
	if ro {
		opts = "ro,noload"
	}
	if b, err := exec.Command("mount", "-o", opts, dev, dir).CombinedOutput(); err != nil {
		exec.Command("losetup", "-d", dev).Run()
		t.Fatalf("mount %s (%s): %v %s", dev, file, err, b)
	}
	var once sync.Once
	umount := func() {
		once.Do(func() {
			if b, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v %s", dir, err, b)
			}
			exec.Command("losetup", "-d", dev).Run()
		})
	}
	t.Cleanup(umount)
	return dir, umount
}

// ext4Workload changes the tree under root the same way every time:
// creates (about 120 MiB in files of 1 KiB to 8 MiB and one of 24 MiB),
// appends, overwrites in place, renames (within and across directories),
// deletes (new files and files of the original tree), directories,
// symlinks and hard links, with fsyncs between.
func ext4Workload(t *testing.T, root string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewSource(42))
	data := func(n int) []byte {
		b := make([]byte, n)
		rng.Read(b)
		return b
	}
	// Files of the original tree, in a fixed order.
	var orig []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && !strings.Contains(p, "lost+found") {
			orig = append(orig, p)
		}
		return nil
	})
	slices.Sort(orig)
	if len(orig) < 50 {
		t.Fatalf("only %d files in the original tree", len(orig))
	}
	work := filepath.Join(root, "work")
	must(os.MkdirAll(filepath.Join(work, "a/b/c"), 0o755))
	must(os.Mkdir(filepath.Join(work, "moved"), 0o700))
	var made []string
	for i := range 160 {
		n := 1024 + rng.Intn(1<<20)
		if i%10 == 0 {
			n = 2<<20 + rng.Intn(6<<20)
		}
		p := filepath.Join(work, []string{"", "a", "a/b", "a/b/c"}[i%4], fmt.Sprintf("f%03d", i))
		must(os.WriteFile(p, data(n), 0o644))
		made = append(made, p)
		if i%40 == 39 {
			syncFS(t, root)
		}
	}
	big, err := os.Create(filepath.Join(work, "big"))
	must(err)
	for range 24 {
		_, err := big.Write(data(1 << 20))
		must(err)
	}
	must(big.Sync())
	must(big.Close())
	for i := 0; i < len(made); i += 3 { // appends
		f, err := os.OpenFile(made[i], os.O_APPEND|os.O_WRONLY, 0)
		must(err)
		_, err = f.Write(data(1 + rng.Intn(300<<10)))
		must(err)
		must(f.Close())
	}
	for i := 1; i < len(made); i += 7 { // overwrites in the middle
		f, err := os.OpenFile(made[i], os.O_WRONLY, 0)
		must(err)
		st, _ := f.Stat()
		_, err = f.WriteAt(data(4096+rng.Intn(64<<10)), st.Size()/3)
		must(err)
		must(f.Close())
	}
	for i := 2; i < len(made); i += 5 { // renames
		to := filepath.Join(work, "moved", filepath.Base(made[i])+".r")
		if i%2 == 0 {
			to = made[i] + ".renamed"
		}
		must(os.Rename(made[i], to))
		made[i] = to
	}
	for i := 4; i < len(made); i += 6 { // deletes of new files
		must(os.Remove(made[i]))
	}
	for i := 0; i < len(orig); i += len(orig) / 40 { // deletes and changes of original files
		if i%2 == 0 {
			must(os.Remove(orig[i]))
			continue
		}
		f, err := os.OpenFile(orig[i], os.O_APPEND|os.O_WRONLY, 0)
		must(err)
		_, err = f.Write([]byte("changed by the workload\n"))
		must(err)
		must(f.Close())
	}
	must(os.Symlink("a/b/c", filepath.Join(work, "link")))
	must(os.Link(made[0], filepath.Join(work, "hardlink")))
	must(os.Truncate(made[3], 1000))
	must(os.RemoveAll(filepath.Join(work, "a/b/c")))
	syncFS(t, root)
}

func syncFS(t *testing.T, dir string) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		t.Fatal(err)
	}
}

// rwImage captures a 512 MiB GPT test disk (ESP, a 415 MiB ext4 root,
// swap) as a version 2 image; it returns the raw disk, the image and
// partition 2's bounds.
func rwImage(t *testing.T) (raw, img string, root testimages.Part) {
	t.Helper()
	testimages.Require(t, "gpt")
	src, err := testimages.Cached(context.Background(), "gpt", testimages.Spec{Size: 512 << 20})
	if err != nil {
		t.Fatalf("generate the gpt disk: %v", err)
	}
	raw = filepath.Join(t.TempDir(), "gpt.img")
	if err := testimages.CopyDisk(src, raw); err != nil {
		t.Fatal(err)
	}
	img = filepath.Join(t.TempDir(), "gpt.dimg")
	mustRun(t, "capture", "-q", raw, img)
	parts, err := testimages.Partitions(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		if p.Number == 2 {
			return raw, img, p
		}
	}
	t.Fatal("no partition 2 on the gpt test disk")
	return
}

// TestMountRWExt4Workload is the kernel's read-write ext4 through a loop
// device over DIR/p2.img of `dimg mount --rw`: after the workload, the
// unmount and the commit, the restored partition passes e2fsck -fn and
// holds the same tree as a raw copy of the disk that got the same
// workload through a plain loop device.
func TestMountRWExt4Workload(t *testing.T) {
	requireRW(t)
	raw, img, p2 := rwImage(t)
	m := startRW(t, img, "-m", "workload")

	// A second writer is refused, naming the first; readers keep working.
	_, errs, code := run(t, nil, "mount", "--rw", img, t.TempDir())
	if code != exitFailure || !strings.Contains(errs, fmt.Sprintf("pid %d", m.cmd.Process.Pid)) || !strings.Contains(errs, "mount --rw") {
		t.Errorf("second mount --rw: exit %d: %s", code, errs)
	}
	ro := filepath.Join(t.TempDir(), "ro")
	os.Mkdir(ro, 0o755)
	mustRun(t, "mount", "--background", img, ro)
	if _, err := os.Stat(filepath.Join(ro, "p2/etc/fstab")); err != nil {
		t.Errorf("read-only mount beside a writer: %v", err)
	}
	exec.Command("umount", ro).Run()
	if _, err := os.Stat(filepath.Join(m.dir, "p2")); err == nil {
		t.Error("the read-write mount shows the tree p2/")
	}

	k, umountK := loopMountFS(t, filepath.Join(m.dir, "p2.img"), 0, 0, false)
	mirrorDisk := filepath.Join(t.TempDir(), "mirror.img")
	if err := testimages.CopyDisk(raw, mirrorDisk); err != nil {
		t.Fatal(err)
	}
	mirror, umountMirror := loopMountFS(t, mirrorDisk, p2.Start, p2.Size, false)
	start := time.Now()
	ext4Workload(t, k)
	t.Logf("workload through dimg: %v", time.Since(start))
	ext4Workload(t, mirror)
	umountK()
	umountMirror()
	if err, errs := m.unmount(t); err != nil || !strings.Contains(errs, "as commit 2") {
		t.Fatalf("mount --rw after umount: %v\n%s", err, errs)
	}
	if _, err := os.Stat(imagefmt.ScratchPath(img)); err == nil {
		t.Error("scratch file left after the commit")
	}

	mustRun(t, "verify", "-q", img)
	restored := filepath.Join(t.TempDir(), "restored.img")
	mustRun(t, "restore", "-q", img, restored)
	dev, err := exec.Command("losetup", "-f", "--show", "-r", "-o", fmt.Sprint(p2.Start), "--sizelimit", fmt.Sprint(p2.Size), restored).Output()
	if err != nil {
		t.Fatal(err)
	}
	fsck, err := exec.Command("e2fsck", "-fn", strings.TrimSpace(string(dev))).CombinedOutput()
	exec.Command("losetup", "-d", strings.TrimSpace(string(dev))).Run()
	if err != nil {
		t.Errorf("e2fsck -fn of the restored partition: %v\n%s", err, fsck)
	}
	got, _ := loopMountFS(t, restored, p2.Start, p2.Size, true)
	want, _ := loopMountFS(t, mirrorDisk, p2.Start, p2.Size, true)
	compareSnapshots(t, "restored vs mirror", snapshot(t, want, snapOpts{noTimes: true}), snapshot(t, got, snapOpts{noTimes: true}))
	// What the workload did not touch is the original's.
	if a, b := readRange(t, raw, 0, p2.Start), readRange(t, restored, 0, p2.Start); !bytes.Equal(a, b) {
		t.Error("bytes before partition 2 changed")
	}
}

// TestMountRWKill9: what was fsynced through DIR/pN.img before dimg was
// killed is offered by dimg recover and committed by recover --commit, or
// taken up by the next mount --rw.
func TestMountRWKill9(t *testing.T) {
	requireRW(t)
	raw, img, _ := rwImage(t)
	parts, _ := testimages.Partitions(raw)
	var swap testimages.Part
	for _, p := range parts {
		if p.Number == 3 {
			swap = p
		}
	}
	pattern := make([]byte, 3<<20)
	rand.New(rand.NewSource(9)).Read(pattern)
	patFile := filepath.Join(t.TempDir(), "pattern")
	os.WriteFile(patFile, pattern, 0o644)

	m := startRW(t, img)
	// Synced: dd with conv=fsync into the swap partition at 1 MiB.
	if b, err := exec.Command("dd", "if="+patFile, "of="+filepath.Join(m.dir, "p3.img"), "bs=1M", "seek=1", "conv=notrunc,fsync", "status=none").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v %s", err, b)
	}
	// Writes past the partition's end fail; the file never grows.
	out, err := exec.Command("dd", "if="+patFile, "of="+filepath.Join(m.dir, "p3.img"), "bs=1M", "count=1", fmt.Sprintf("seek=%d", swap.Size>>20), "conv=notrunc", "status=none").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "No space left on device") {
		t.Errorf("dd past the end of p3.img: %v %s", err, out)
	}
	if err := os.Truncate(filepath.Join(m.dir, "p3.img"), 0); err == nil {
		t.Error("truncate of p3.img succeeded")
	}
	m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.done
	m.done <- nil
	exec.Command("umount", m.dir).Run() // the connection is gone

	_, errs, code := run(t, nil, "recover", img)
	if code != 0 || !strings.Contains(errs, "changed chunks") || !strings.Contains(errs, "--commit") {
		t.Fatalf("recover: exit %d: %s", code, errs)
	}
	// The next mount --rw takes the changes up and says so; --discard
	// would drop them, so commit instead after writing nothing.
	m2 := startRW(t, img, "-m", "after the crash")
	if err, errs := m2.unmount(t); err != nil || !strings.Contains(errs, "ended without unmounting") || !strings.Contains(errs, "as commit 2") {
		t.Fatalf("second mount --rw: %v\n%s", err, errs)
	}
	restored := filepath.Join(t.TempDir(), "restored.img")
	mustRun(t, "restore", "-q", img, restored)
	if got := readRange(t, restored, swap.Start+1<<20, int64(len(pattern))); !bytes.Equal(got, pattern) {
		t.Error("the fsynced write did not survive kill -9")
	}
	if _, errs, code := run(t, nil, "recover", img); code != 0 || !strings.Contains(errs, "nothing to recover") {
		t.Errorf("recover after the commit: exit %d: %s", code, errs)
	}
}

// TestMountRWRecoverCommitDropDiscard: recover --commit and --drop, and
// mount --rw --discard.
func TestMountRWRecoverCommitDropDiscard(t *testing.T) {
	requireRW(t)
	_, img, p2 := rwImage(t)
	before := fileSum(t, img)
	write := func(dir string, b byte) {
		t.Helper()
		f, err := os.OpenFile(filepath.Join(dir, "p2.img"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(bytes.Repeat([]byte{b}, 8192), 64<<20); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	m := startRW(t, img, "--discard")
	write(m.dir, 1)
	if err, errs := m.unmount(t); err != nil || !strings.Contains(errs, "dropped") {
		t.Fatalf("--discard: %v %s", err, errs)
	}
	if fileSum(t, img) != before {
		t.Error("--discard changed the image")
	}

	for _, how := range []string{"--drop", "--commit"} {
		m := startRW(t, img)
		write(m.dir, 2)
		m.cmd.Process.Signal(syscall.SIGKILL)
		<-m.done
		m.done <- nil
		exec.Command("umount", m.dir).Run()
		args := []string{"recover", img, how}
		if how == "--commit" {
			args = append(args, "-m", "recovered by the test")
		}
		mustRun(t, args...)
	}
	restored := filepath.Join(t.TempDir(), "restored.img")
	mustRun(t, "restore", "-q", img, restored)
	if got := readRange(t, restored, p2.Start+64<<20, 8192); !bytes.Equal(got, bytes.Repeat([]byte{2}, 8192)) {
		t.Error("recover --commit did not commit the change")
	}
}

// TestMountRWDelta: with --delta the base image's bytes do not change and
// the changes become a new delta image that reads, over its base, as the
// changed disk.
func TestMountRWDelta(t *testing.T) {
	requireRW(t)
	_, img, p2 := rwImage(t)
	before := fileSum(t, img)
	delta := filepath.Join(filepath.Dir(img), "d1.dimg")
	m := startRW(t, img, "--delta", delta, "-m", "in a delta")
	f, err := os.OpenFile(filepath.Join(m.dir, "p2.img"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	pattern := bytes.Repeat([]byte("delta!"), 100000)
	if _, err := f.WriteAt(pattern, 3<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err, errs := m.unmount(t); err != nil || !strings.Contains(errs, "wrote "+delta) {
		t.Fatalf("mount --rw --delta: %v\n%s", err, errs)
	}
	if fileSum(t, img) != before {
		t.Error("the base image changed")
	}
	r, err := imagefmt.OpenChain(delta, imagefmt.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := make([]byte, len(pattern))
	if _, err := r.ReadAt(got, p2.Start+3<<20); err != nil || !bytes.Equal(got, pattern) {
		t.Errorf("the delta does not hold the change (%v)", err)
	}
	if msg := r.Commit().Message; msg != "in a delta" {
		t.Errorf("delta commit message %q", msg)
	}
	// A delta that exists is not overwritten.
	_, errs, code := run(t, nil, "mount", "--rw", "--delta", delta, img, t.TempDir())
	if code == 0 || !strings.Contains(errs, "already exists") {
		t.Errorf("--delta over an existing file: exit %d: %s", code, errs)
	}
}

// TestMountRWRefusals: a version 1 image cannot take changes; --rw options
// without --rw are usage errors.
func TestMountRWRefusals(t *testing.T) {
	img := filepath.Join(t.TempDir(), "v1.dimg")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	w, err := imagefmt.NewWriter(f, imagefmt.WriterOptions{Version: imagefmt.Version, DiskSize: 1 << 20, ChunkSize: 64 << 10, Metadata: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, errs, code := run(t, nil, "mount", "--rw", img, t.TempDir())
	if code != exitFailure || !strings.Contains(errs, "version 1") || !strings.Contains(errs, "convert") {
		t.Errorf("mount --rw of a version 1 image: exit %d: %s", code, errs)
	}
	if _, err := os.Stat(imagefmt.LockPath(img)); err == nil {
		t.Error("a refused mount --rw left its lock file")
	}
	for _, args := range [][]string{
		{"mount", "-m", "x", img, t.TempDir()},
		{"mount", "--discard", img, t.TempDir()},
		{"mount", "--rw", "--discard", "--delta", "d.dimg", img, t.TempDir()},
		{"recover", "--commit", "--drop", img},
	} {
		if _, errs, code := run(t, nil, args...); code != exitUsage {
			t.Errorf("dimg %v: exit %d, want %d: %s", args, code, exitUsage, errs)
		}
	}
}
