package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/imagefmt"
	"github.com/dimg-project/dimg/testimages"
)

// The kill -9 trials of issue 9: dimg is killed at random moments while
// `dimg mount --rw` commits at unmount, while it takes writes, and while
// `dimg compact` rewrites an image. After each kill the image must open
// and verify without a repair step, restore to the disk as it was before
// the interrupted operation or as it is after it, and changes left in a
// scratch file must be offered by `dimg recover` and commit to the
// expected disk. `make test` runs a few trials of each (11 in all);
// `make crash` sets DIMG_CRASH_TRIALS=50: 50 commit trials, 20 of the
// writing phase and 10 of compact, about two minutes.
// DIMG_CRASH_SEED replays the random delays of a logged run.

// crashTrials is how many trials a phase runs: def, or what
// DIMG_CRASH_TRIALS asks for scaled by num/den.
func crashTrials(t *testing.T, def, num, den int) int {
	t.Helper()
	s := os.Getenv("DIMG_CRASH_TRIALS")
	if s == "" {
		if testing.Short() {
			return 2
		}
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("DIMG_CRASH_TRIALS=%q: want a positive number", s)
	}
	return max(1, n*num/den)
}

func crashRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := time.Now().UnixNano()
	if s := os.Getenv("DIMG_CRASH_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatalf("DIMG_CRASH_SEED=%q: %v", s, err)
		}
	}
	t.Logf("random delays from DIMG_CRASH_SEED=%d", seed)
	return rand.New(rand.NewSource(seed))
}

// rwWrite is one write through a read-write mount: data at offset off of
// DIR/file (disk.img or pN.img), which is disk offset disk.
type rwWrite struct {
	file string
	off  int64
	disk int64
	data []byte
}

// crashFixture is the disk the trials start from: a 144 MiB GPT test disk
// (ESP, ext4, swap, free space at the end) captured as a version 2 image.
type crashFixture struct {
	img       string   // the pristine image (one commit); trials copy it
	imgSum    [32]byte // its bytes
	before    string   // the pristine image restored
	out       string   // where restores go (restoreDir)
	dir       string   // lives as long as the test that made the fixture
	beforeSum [32]byte
	swap      testimages.Part // partition 3
}

func newCrashFixture(t *testing.T) *crashFixture {
	t.Helper()
	testimages.Require(t, "gpt")
	src, err := testimages.Cached(context.Background(), "gpt", testimages.Spec{Size: 144 << 20})
	if err != nil {
		t.Fatalf("generate the gpt disk: %v", err)
	}
	dir := t.TempDir()
	raw := filepath.Join(dir, "gpt.img")
	if err := testimages.CopyDisk(src, raw); err != nil {
		t.Fatal(err)
	}
	fx := &crashFixture{img: filepath.Join(dir, "gpt.dimg"), dir: dir}
	mustRun(t, "capture", "-q", raw, fx.img)
	os.Remove(raw)
	fx.imgSum = fileSum(t, fx.img)
	fx.out = restoreDir(t)
	fx.before = filepath.Join(fx.out, "before.img")
	mustRun(t, "restore", "-q", fx.img, fx.before)
	fx.beforeSum = fileSum(t, fx.before)
	parts, err := testimages.Partitions(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		if p.Number == 3 {
			fx.swap = p
		}
	}
	if fx.swap.Size < 16<<20 {
		t.Fatalf("partition 3 of the test disk: %+v", fx.swap)
	}
	return fx
}

// trialDir is a fresh directory holding a copy of the pristine image; it
// is removed when the trial ends so that many trials do not pile up.
func (fx *crashFixture) trialDir(t *testing.T) (dir, img string) {
	t.Helper()
	dir, err := os.MkdirTemp(t.TempDir(), "trial")
	if err != nil {
		t.Fatal(err)
	}
	img = filepath.Join(dir, "t.dimg")
	copyFile(t, fx.img, img)
	return dir, img
}

// writeThrough makes writes[i] through the mount in DIR, fsyncing after
// the writes whose sync[i] is set, and stores in durable the index of the
// last write a completed fsync covers (an fsync of any file of the mount
// syncs every write made before it). It stops at the first error.
func writeThrough(dir string, writes []rwWrite, sync func(i int) bool, durable *atomic.Int64) error {
	files := map[string]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for i, w := range writes {
		f := files[w.file]
		if f == nil {
			var err error
			if f, err = os.OpenFile(filepath.Join(dir, w.file), os.O_WRONLY, 0); err != nil {
				return err
			}
			files[w.file] = f
		}
		if _, err := f.WriteAt(w.data, w.off); err != nil {
			return fmt.Errorf("write %d (%s at %d): %w", i, w.file, w.off, err)
		}
		if sync(i) {
			if err := f.Sync(); err != nil {
				return fmt.Errorf("fsync after write %d: %w", i, err)
			}
			durable.Store(int64(i))
		}
	}
	return nil
}

// checkDisk compares the disk file got with the pristine disk and the
// writes: bytes no write touched are the pristine ones, the writes up to
// durable hold their data, and each 4 KiB block of a later write holds
// either the write's data or the pristine bytes (a write that fsync never
// covered may or may not have survived, but never as other bytes).
func (fx *crashFixture) checkDisk(t *testing.T, got string, writes []rwWrite, durable int) {
	t.Helper()
	g, err := os.Open(got)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	b, err := os.Open(fx.before)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	gs, _ := g.Stat()
	bs, _ := b.Stat()
	if gs.Size() != bs.Size() {
		t.Fatalf("%s has %d bytes, the disk %d", got, gs.Size(), bs.Size())
	}
	touched := func(off int64, n int) bool {
		for _, w := range writes {
			if off < w.disk+int64(len(w.data)) && w.disk < off+int64(n) {
				return true
			}
		}
		return false
	}
	const block = 4096
	gb, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); off < gs.Size(); off += int64(len(gb)) {
		n := int(min(int64(len(gb)), gs.Size()-off))
		if _, err := g.ReadAt(gb[:n], off); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if _, err := b.ReadAt(bb[:n], off); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !touched(off, n) {
			if !bytes.Equal(gb[:n], bb[:n]) {
				t.Fatalf("%s: bytes no write touched changed in [%d, %d)", got, off, off+int64(n))
			}
			continue
		}
		for k := 0; k < n; k += block {
			e := min(k+block, n)
			if touched(off+int64(k), e-k) {
				continue // checked below
			}
			if !bytes.Equal(gb[k:e], bb[k:e]) {
				t.Fatalf("%s: bytes no write touched changed at %d", got, off+int64(k))
			}
		}
	}
	for i, w := range writes {
		for k := 0; k < len(w.data); k += block {
			e := min(k+block, len(w.data))
			have := make([]byte, e-k)
			old := make([]byte, e-k)
			if _, err := g.ReadAt(have, w.disk+int64(k)); err != nil {
				t.Fatal(err)
			}
			if _, err := b.ReadAt(old, w.disk+int64(k)); err != nil {
				t.Fatal(err)
			}
			switch {
			case bytes.Equal(have, w.data[k:e]):
			case i <= durable:
				t.Fatalf("%s: fsynced write %d (%s at %d) lost at disk offset %d", got, i, w.file, w.off, w.disk+int64(k))
			case !bytes.Equal(have, old):
				t.Fatalf("%s: write %d (%s at %d) is neither old nor new at disk offset %d", got, i, w.file, w.off, w.disk+int64(k))
			}
		}
	}
}

// restoreDir is where restoreSum writes: a directory in /dev/shm when it
// is a tmpfs (restore fsyncs its target, which costs a trial more than
// anything else on a busy disk), else a test directory.
func restoreDir(t *testing.T) string {
	t.Helper()
	var st unix.Statfs_t
	if unix.Statfs("/dev/shm", &st) == nil && st.Type == unix.TMPFS_MAGIC {
		if dir, err := os.MkdirTemp("/dev/shm", "dimg-crash-test"); err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}

// restoreSum restores img into dir and returns the restored file and its
// SHA-256.
func restoreSum(t *testing.T, img, dir string) (string, [32]byte) {
	t.Helper()
	out := filepath.Join(dir, fmt.Sprintf("restored-%d.img", time.Now().UnixNano()))
	mustRun(t, "restore", "-q", img, out)
	return out, fileSum(t, out)
}

// wait waits for m's dimg to exit after an unmount; it returns the exit
// error and stderr.
func (m *rwMount) wait(t *testing.T) (error, string) {
	t.Helper()
	select {
	case err := <-m.done:
		m.done <- err // for startRW's cleanup
		return err, m.stderr.String()
	case <-time.After(2 * time.Minute):
		t.Fatalf("dimg mount --rw did not exit after umount\n%s", m.stderr)
	}
	return nil, ""
}

// killAfter sends SIGKILL to m's dimg after d and waits for it to end; it
// reports whether the kill came while dimg was still running.
func (m *rwMount) killAfter(t *testing.T, d time.Duration) bool {
	t.Helper()
	time.Sleep(d)
	m.cmd.Process.Signal(syscall.SIGKILL)
	var err error
	select {
	case err = <-m.done:
	case <-time.After(10 * time.Second):
		// A killed FUSE server stuck in a request to its own mount never
		// ends by itself: abort the connection so that nothing hangs.
		t.Errorf("dimg did not end within 10 s of SIGKILL (killed %v after the mount was ready); aborting its FUSE connection: %v\n%s",
			d, abortFUSE(m.dir), m.stderr)
		select {
		case err = <-m.done:
		case <-time.After(time.Minute):
			t.Fatalf("dimg did not end after SIGKILL and an abort of its FUSE connection")
		}
	}
	m.done <- err // for startRW's cleanup
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true
		}
	}
	if err != nil {
		t.Fatalf("dimg mount --rw failed before the kill: %v\n%s", err, m.stderr)
	}
	return false
}

// abortFUSE aborts the FUSE connection of the mount on dir (through
// fusectl, mounted if need be), which fails every request waiting on it.
func abortFUSE(dir string) error {
	real, err := filepath.EvalSymlinks(filepath.Dir(dir))
	if err != nil {
		return err
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	mnt := filepath.Join(real, filepath.Base(dir))
	minor := ""
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == mnt {
			_, minor, _ = strings.Cut(f[2], ":")
		}
	}
	if minor == "" {
		return fmt.Errorf("no mount on %s", mnt)
	}
	const ctl = "/sys/fs/fuse/connections"
	if _, err := os.Stat(filepath.Join(ctl, minor)); err != nil {
		if out, err := exec.Command("mount", "-t", "fusectl", "fusectl", ctl).CombinedOutput(); err != nil {
			return fmt.Errorf("mount fusectl: %v %s", err, out)
		}
	}
	return os.WriteFile(filepath.Join(ctl, minor, "abort"), []byte("1"), 0)
}

// TestMountKillAtStart: dimg mount --rw killed as soon as its files show
// ends. It used to hang in the kernel about one time in ten, in
// go-fuse's poll hack: a request to its own mount, which a killed server
// can never answer.
func TestMountKillAtStart(t *testing.T) {
	requireRW(t)
	fx := newCrashFixture(t)
	for trial := range crashTrials(t, 20, 1, 1) {
		dir, img := fx.trialDir(t)
		m := startRW(t, img)
		if !m.killAfter(t, 0) {
			t.Fatalf("trial %d: dimg mount --rw ended by itself", trial)
		}
		exec.Command("umount", m.dir).Run()
		os.RemoveAll(dir)
	}
}

// commitWrites are the writes of the commit trials: 3 MiB at 1 MiB into
// p3.img (swap, chunk-aligned: no copy-up), 300 KiB at an odd offset of
// p3.img (a copy-up) and 1 MiB into disk.img in the free space after the
// last partition (chunks the image did not store).
func (fx *crashFixture) commitWrites() []rwWrite {
	rng := rand.New(rand.NewSource(9))
	data := func(n int) []byte {
		b := make([]byte, n)
		rng.Read(b)
		return b
	}
	free := fx.swap.Start + fx.swap.Size + 1<<20
	return []rwWrite{
		{file: "p3.img", off: 1 << 20, disk: fx.swap.Start + 1<<20, data: data(3 << 20)},
		{file: "p3.img", off: 5<<20 + 100<<10, disk: fx.swap.Start + 5<<20 + 100<<10, data: data(300 << 10)},
		{file: "disk.img", off: free, disk: free, data: data(1 << 20)},
	}
}

// writingWrites are the writes of the writing-phase trials: 24 writes of
// 192 KiB, each in a chunk of its own at an offset inside it (copy-ups),
// alternately into p3.img and into disk.img after the last partition.
func (fx *crashFixture) writingWrites() []rwWrite {
	rng := rand.New(rand.NewSource(10))
	var ws []rwWrite
	free := fx.swap.Start + fx.swap.Size + 1<<20
	for i := range 24 {
		d := make([]byte, 192<<10)
		rng.Read(d)
		k := int64(i/2)*256<<10 + 32<<10
		if i%2 == 0 {
			ws = append(ws, rwWrite{file: "p3.img", off: 8<<20 + k, disk: fx.swap.Start + 8<<20 + k, data: d})
		} else {
			ws = append(ws, rwWrite{file: "disk.img", off: free + k, disk: free + k, data: d})
		}
	}
	return ws
}

// TestCrashMountRW kills dimg at random moments (see the top of the
// file): during the commit `mount --rw` makes at unmount, during its
// writing phase and during `dimg compact`.
func TestCrashMountRW(t *testing.T) {
	requireRW(t)
	fx := newCrashFixture(t)
	rng := crashRand(t)
	var afterImg string
	t.Run("commit", func(t *testing.T) { afterImg = testCrashCommit(t, fx, rng) })
	t.Run("writing", func(t *testing.T) { testCrashWriting(t, fx, rng) })
	t.Run("compact", func(t *testing.T) {
		if afterImg == "" {
			t.Skip("needs the image the commit trials made")
		}
		testCrashCompact(t, fx, afterImg, rng)
	})
}

// testCrashCommit: the commit at unmount, killed. It returns an image
// with the commit made (two commits), for the compact trials.
func testCrashCommit(t *testing.T, fx *crashFixture, rng *rand.Rand) string {
	writes := fx.commitWrites()
	all := func(int) bool { return true }

	// The reference: the same session, not killed.
	_, ref := fx.trialDir(t)
	m := startRW(t, ref, "-m", "reference")
	var durable atomic.Int64
	if err := writeThrough(m.dir, writes, all, &durable); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("umount", m.dir).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v %s", err, out)
	}
	// From the unmount's return to dimg's exit: the commit.
	t0 := time.Now()
	if err, errs := m.wait(t); err != nil || !strings.Contains(errs, "as commit 2") {
		t.Fatalf("unmount: %v\n%s", err, errs)
	}
	commitTime := time.Since(t0)
	afterFile, afterSum := restoreSum(t, ref, fx.out)
	fx.checkDisk(t, afterFile, writes, len(writes)-1)
	os.Remove(afterFile)
	t.Logf("reference: umount to exit (the commit) %v", commitTime)

	trials := crashTrials(t, 6, 1, 1)
	var finished, killed, atBefore, midCommit, atAfter, staleScratch int
	// Kills come anywhere from the unmount's return to the end of a
	// window that starts as the reference's time to exit, shrinks when
	// dimg was done before the kill and grows when it was not, so that
	// most kills land while dimg runs and some near its end.
	window := commitTime
	for trial := range trials {
		dir, img := fx.trialDir(t)
		m := startRW(t, img, "-m", "trial")
		if err := writeThrough(m.dir, writes, all, &durable); err != nil {
			t.Fatal(err)
		}
		delay := time.Duration(rng.Int63n(int64(window) + 1))
		if out, err := exec.Command("umount", m.dir).CombinedOutput(); err != nil {
			t.Fatalf("umount: %v %s", err, out)
		}
		if m.killAfter(t, delay) {
			killed++
			window = window * 21 / 20
		} else {
			finished++
			window = window * 4 / 5
		}

		scratch := imagefmt.ScratchPath(img)
		_, serr := os.Stat(scratch)
		hadScratch := serr == nil
		if _, errs, code := run(t, nil, "verify", "-q", img); code != 0 {
			t.Fatalf("trial %d (kill after %v): verify: exit %d\n%s\ndimg: %s", trial, delay, code, errs, m.stderr)
		}
		got, sum := restoreSum(t, img, fx.out)
		os.Remove(got)
		_, errs, code := run(t, nil, "recover", img)
		if code != 0 {
			t.Fatalf("trial %d (kill after %v): recover: exit %d\n%s", trial, delay, code, errs)
		}
		switch sum {
		case fx.beforeSum:
			atBefore++
			if fileSum(t, img) != fx.imgSum {
				midCommit++ // the commit had begun writing the image
			}
			// The changes were synced before the unmount: they must be
			// offered, and commit to the reference's disk.
			if !hadScratch || !strings.Contains(errs, "changed chunks") {
				t.Fatalf("trial %d (kill after %v): the image is at the commit before, but recover does not offer the changes (scratch file: %v):\n%s", trial, delay, hadScratch, errs)
			}
			mustRun(t, "recover", img, "--commit", "-m", "recovered")
			mustRun(t, "verify", "-q", img)
			got, sum := restoreSum(t, img, fx.out)
			os.Remove(got)
			if sum != afterSum {
				t.Fatalf("trial %d (kill after %v): recover --commit gave another disk than the reference commit", trial, delay)
			}
		case afterSum:
			atAfter++
			if hadScratch {
				staleScratch++
				if !strings.Contains(errs, "already committed") {
					t.Errorf("trial %d: a scratch file of committed changes: recover says %s", trial, errs)
				}
			} else if !strings.Contains(errs, "nothing to recover") {
				t.Errorf("trial %d: recover with no scratch file says %s", trial, errs)
			}
		default:
			t.Fatalf("trial %d (kill after %v): the image restores to neither the disk before the commit nor the one after", trial, delay)
		}
		if _, err := os.Stat(scratch); err == nil {
			t.Errorf("trial %d: %s left after recover", trial, scratch)
		}
		os.RemoveAll(dir)
	}
	t.Logf("%d trials: %d killed: %d at the commit before (%d after the commit had begun writing to it), %d at the new commit (%d with its scratch file left); %d had exited already",
		trials, killed, atBefore, midCommit, atAfter-finished, staleScratch, finished)
	if killed == 0 {
		t.Error("no kill came while dimg was running")
	}
	after := filepath.Join(fx.dir, "after.dimg") // outlives this subtest
	copyFile(t, ref, after)
	return after
}

// testCrashWriting: dimg killed while the test writes and fsyncs through
// the mount. The image itself is not written before the unmount, so its
// bytes must not change; what fsync returned for must be offered by
// recover and committed by recover --commit.
func testCrashWriting(t *testing.T, fx *crashFixture, rng *rand.Rand) {
	writes := fx.writingWrites()
	// fsync after most writes, not after every third: some writes are
	// covered only by the next one's fsync.
	sync := func(i int) bool { return i%3 != 1 }

	// The reference: every write, timed, then committed.
	refDir, ref := fx.trialDir(t)
	m := startRW(t, ref)
	var durable atomic.Int64
	durable.Store(-1)
	t0 := time.Now()
	if err := writeThrough(m.dir, writes, sync, &durable); err != nil {
		t.Fatal(err)
	}
	writeTime := time.Since(t0)
	if err, errs := m.unmount(t); err != nil {
		t.Fatalf("unmount: %v\n%s", err, errs)
	}
	got, _ := restoreSum(t, ref, fx.out)
	fx.checkDisk(t, got, writes, len(writes)-1)
	os.RemoveAll(refDir)
	t.Logf("reference: %d writes and fsyncs in %v", len(writes), writeTime)

	trials := crashTrials(t, 3, 2, 5)
	var offered, nothing, killed, allDone int
	for trial := range trials {
		dir, img := fx.trialDir(t)
		m := startRW(t, img)
		var durable atomic.Int64
		durable.Store(-1)
		done := make(chan error, 1)
		go func() { done <- writeThrough(m.dir, writes, sync, &durable) }()
		// The reference's writes include cold starts: aim at the first
		// two thirds of its time.
		delay := time.Duration(rng.Int63n(int64(writeTime*2/3) + 1))
		if m.killAfter(t, delay) {
			killed++
		}
		var werr error
		select {
		case werr = <-done:
		case <-time.After(time.Minute):
			t.Fatalf("trial %d: writes through the mount still blocked a minute after dimg was killed", trial)
		}
		exec.Command("umount", m.dir).Run() // the connection is gone
		last := int(durable.Load())
		if werr == nil {
			allDone++
		}

		if fileSum(t, img) != fx.imgSum {
			t.Fatalf("trial %d (kill after %v, %d writes durable): the image file changed before any commit", trial, delay, last+1)
		}
		if _, errs, code := run(t, nil, "verify", "-q", img); code != 0 {
			t.Fatalf("trial %d: verify: exit %d\n%s", trial, code, errs)
		}
		_, errs, code := run(t, nil, "recover", img)
		if code != 0 {
			t.Fatalf("trial %d: recover: exit %d\n%s", trial, code, errs)
		}
		if !strings.Contains(errs, "changed chunks") {
			if last >= 0 {
				t.Fatalf("trial %d (kill after %v): %d fsynced writes, but recover offers nothing:\n%s", trial, delay, last+1, errs)
			}
			nothing++
			os.RemoveAll(dir)
			continue
		}
		offered++
		mustRun(t, "recover", img, "--commit")
		mustRun(t, "verify", "-q", img)
		got, _ := restoreSum(t, img, fx.out)
		fx.checkDisk(t, got, writes, last)
		os.RemoveAll(dir)
	}
	t.Logf("%d trials: %d killed while running (%d after the last write); %d with changes recovered and committed, %d killed before any fsync",
		trials, killed, allDone, offered, nothing)
}

// testCrashCompact: dimg compact killed while it rewrites an image of two
// commits. Compacting does not change the disk: after each kill the image
// verifies and restores to the same disk, with one commit or with both,
// and compacts when asked again.
func testCrashCompact(t *testing.T, fx *crashFixture, src string, rng *rand.Rand) {
	if _, errs, code := run(t, nil, "compact", "--help"); code != 0 {
		t.Skipf("dimg compact is not there yet: %s", strings.TrimSpace(errs))
	}
	if n := commitCount(t, src); n != 2 {
		t.Fatalf("%s has %d commits, want 2", src, n)
	}
	srcSum := fileSum(t, src)
	dir := t.TempDir()
	ref := filepath.Join(dir, "ref.dimg")
	copyFile(t, src, ref)
	got, wantSum := restoreSum(t, ref, fx.out)
	os.Remove(got)
	t0 := time.Now()
	mustRun(t, "compact", "-q", ref)
	compactTime := time.Since(t0)
	got, sum := restoreSum(t, ref, fx.out)
	os.Remove(got)
	if sum != wantSum || commitCount(t, ref) != 1 {
		t.Fatal("compact changed the disk or left more than one commit")
	}
	t.Logf("reference: compact in %v", compactTime)

	trials := crashTrials(t, 2, 1, 5)
	var killed, compacted, leftovers int
	window := compactTime * 3 / 2 // adapted as in testCrashCommit
	for trial := range trials {
		tdir, err := os.MkdirTemp(dir, "trial")
		if err != nil {
			t.Fatal(err)
		}
		img := filepath.Join(tdir, "t.dimg")
		copyFile(t, src, img)
		delay := time.Duration(rng.Int63n(int64(window) + 1))
		if killAfter(t, delay, "compact", "-q", img) {
			killed++
			window = window * 11 / 10
		} else {
			window = window * 4 / 5
		}
		if _, errs, code := run(t, nil, "verify", "-q", img); code != 0 {
			t.Fatalf("trial %d (kill after %v): verify: exit %d\n%s", trial, delay, code, errs)
		}
		got, sum := restoreSum(t, img, fx.out)
		os.Remove(got)
		if sum != wantSum {
			t.Fatalf("trial %d (kill after %v): the image restores to another disk", trial, delay)
		}
		// As it was, byte for byte, or compacted.
		if fileSum(t, img) != srcSum {
			if n := commitCount(t, img); n != 1 {
				t.Fatalf("trial %d (kill after %v): the image changed but has %d commits", trial, delay, n)
			}
			compacted++
		}
		ents, _ := os.ReadDir(tdir)
		for _, e := range ents {
			if strings.Contains(e.Name(), ".part-") {
				leftovers++
			}
		}
		mustRun(t, "compact", "-q", img)
		mustRun(t, "verify", "-q", img)
		os.RemoveAll(tdir)
	}
	t.Logf("%d trials: %d killed while running; %d images found compacted, %d temporary files left", trials, killed, compacted, leftovers)
}

// commitCount is the number of commits dimg log lists.
func commitCount(t *testing.T, img string) int {
	t.Helper()
	var l struct{ Commits []json.RawMessage }
	if err := json.Unmarshal([]byte(mustRun(t, "log", "--json", img)), &l); err != nil {
		t.Fatalf("dimg log --json %s: %v", img, err)
	}
	return len(l.Commits)
}

// killAfter runs dimg with args, sends it SIGKILL after delay and waits
// (a minute at most) for it to end: whether the kill ended it before it
// finished on its own.
func killAfter(t *testing.T, delay time.Duration, args ...string) (killed bool) {
	t.Helper()
	cmd := exec.Command(dimgBin, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(delay)
	cmd.Process.Signal(syscall.SIGKILL)
	werr := make(chan error, 1)
	go func() { werr <- cmd.Wait() }()
	select {
	case err := <-werr:
		return err != nil
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		t.Fatalf("dimg %s did not end %v after SIGKILL", args[0], time.Minute)
		return false
	}
}
