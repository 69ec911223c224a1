package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dimg-project/dimg/fsdrivers/ext4"
)

// imageDigest is the digest of the disk IMAGE's newest commit holds.
func imageDigest(t *testing.T, img string) string {
	t.Helper()
	var v struct{ Digest string }
	if err := json.Unmarshal([]byte(mustRun(t, "info", "--json", img)), &v); err != nil || v.Digest == "" {
		t.Fatalf("dimg info --json %s: %v", img, err)
	}
	return v.Digest
}

// addTree writes a tree of n files (sizes from 1 KiB to 1 MiB, total
// about total bytes) under dir/name.
func addTree(t *testing.T, dir, name string, n int, total int64, seed int64) string {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	root := filepath.Join(dir, name)
	per := total / int64(n)
	buf := make([]byte, 2*per+1024)
	for i := range n {
		d := filepath.Join(root, fmt.Sprintf("d%02d", i%23))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		sz := 1024 + rng.Int63n(2*per)
		rng.Read(buf[:sz/2]) // half random, half zeros: compressible
		clear(buf[sz/2 : sz])
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%04d.bin", i)), buf[:sz], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// TestCrashAdd: dimg add killed at random moments leaves the image at the
// disk before or after the add, verifying, and the next add works. make
// crash (DIMG_CRASH_TRIALS=50) runs 20 trials.
func TestCrashAdd(t *testing.T) {
	writable(t, ext4.Driver{})
	fx := newCrashFixture(t)
	rng := crashRand(t)
	tree := addTree(t, t.TempDir(), "bulk", 1500, 24<<20, 1)
	before := imageDigest(t, fx.img)

	refDir, ref := fx.trialDir(t)
	t0 := time.Now()
	mustRun(t, "add", "-q", ref, tree, "2:/opt/")
	addTime := time.Since(t0)
	// The disk after an add is not one fixed digest (each node's change
	// time is when it was made): an image "after" has one more commit,
	// whose tree e2fsck finds clean, holding the whole tree.
	commits := commitCount(t, fx.img)
	os.RemoveAll(refDir)
	t.Logf("reference: add in %v", addTime)

	trials := crashTrials(t, 1, 2, 5) // make crash: 20
	var killed, done int
	window := addTime * 6 / 5
	for trial := range trials {
		dir, img := fx.trialDir(t)
		delay := time.Duration(rng.Int63n(int64(window) + 1))
		if killAfter(t, delay, "add", "-q", img, tree, "2:/opt/") {
			killed++
		}
		if _, errs, code := run(t, nil, "verify", "-q", img); code != 0 {
			t.Fatalf("trial %d (kill after %v): verify: exit %d\n%s", trial, delay, code, errs)
		}
		switch d := imageDigest(t, img); {
		case d == before && commitCount(t, img) == commits:
			// Killed before the commit: the next add must work (the
			// half-done changes are never committed).
			if _, errs, code := run(t, nil, "add", "-q", img, tree, "2:/opt/"); code != 0 {
				t.Fatalf("trial %d (kill after %v): add after the kill: exit %d\n%s", trial, delay, code, errs)
			}
			if imageDigest(t, img) == before {
				t.Fatalf("trial %d: the add after the kill changed nothing", trial)
			}
		case commitCount(t, img) == commits+1:
			done++
			if got := mustRun(t, "cat", img, "2:/opt/bulk/d04/f1499.bin"); int64(len(got)) < 1024 {
				t.Fatalf("trial %d: the last file added reads %d bytes", trial, len(got))
			}
		default:
			t.Fatalf("trial %d (kill after %v): the image holds neither the disk before nor after the add", trial, delay)
		}
		checkExt4(t, img, fx, 2)
		os.RemoveAll(dir)
	}
	t.Logf("%d trials: %d killed, %d found complete", trials, killed, done)
}

// checkExt4 restores img and runs e2fsck -fn on a copy of partition n.
func checkExt4(t *testing.T, img string, fx *crashFixture, n int) {
	t.Helper()
	out, _ := restoreSum(t, img, fx.out)
	defer os.Remove(out)
	p := featurePart(t, out, n)
	pf := out + ".p"
	defer os.Remove(pf)
	if b, err := exec.Command("dd", "if="+out, "of="+pf, "bs=512", fmt.Sprintf("skip=%d", p.Start/512), fmt.Sprintf("count=%d", p.Size/512), "status=none").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v %s", err, b)
	}
	if b, err := exec.Command("e2fsck", "-fn", pf).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn partition %d: %v\n%s", n, err, b)
	}
}

// TestAddNoSpace: an add of more than fits names the shortfall and leaves
// the image byte for byte as it was.
func TestAddNoSpace(t *testing.T) {
	writable(t, ext4.Driver{})
	fx := newCrashFixture(t)
	_, img := fx.trialDir(t)
	sum := fileSum(t, img)
	// 200 MiB of random data into a 144 MiB disk's root.
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	os.Mkdir(big, 0o755)
	rng := rand.New(rand.NewSource(2))
	buf := make([]byte, 8<<20)
	for i := range 25 {
		rng.Read(buf)
		os.WriteFile(filepath.Join(big, fmt.Sprintf("blob%02d", i)), buf, 0o644)
	}
	_, errs, code := run(t, nil, "add", img, big, "2:/srv/")
	if code != exitFailure || !strings.Contains(errs, "no space left on 2:/") || !strings.Contains(errs, "missing") || !strings.Contains(errs, "unchanged") {
		t.Errorf("add of too much: exit %d\n%s", code, errs)
	}
	t.Log(strings.TrimSpace(errs))
	if fileSum(t, img) != sum {
		t.Error("a refused add changed the image")
	}
	if _, err := os.Stat(img + ".scratch"); err == nil {
		t.Error("a refused add left a scratch file")
	}
	// put cannot know the size first: the filesystem fills, and still
	// nothing is committed.
	_, errs, code = run(t, bytes.NewReader(bytes.Repeat(buf, 25)), "put", img, "2:/srv.bin")
	if code != exitFailure || !strings.Contains(errs, "no space") {
		t.Errorf("put of too much: exit %d\n%s", code, errs)
	}
	if fileSum(t, img) != sum {
		t.Error("a failed put changed the image")
	}
}
