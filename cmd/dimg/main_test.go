package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dimg-project/dimg/testimages"
)

// dimgBin is the dimg binary built once for the integration tests, so they
// run it exactly as a user does: arguments, pipes, exit codes.
var dimgBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dimg-test-bin")
	if err != nil {
		panic(err)
	}
	dimgBin = filepath.Join(dir, "dimg")
	if out, err := exec.Command("go", "build", "-o", dimgBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build dimg: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run runs dimg and returns stdout, stderr and the exit code.
func run(t *testing.T, stdin io.Reader, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(dimgBin, args...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("dimg %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// mustRun runs dimg and fails the test unless it exits 0.
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := run(t, nil, args...)
	if code != 0 {
		t.Fatalf("dimg %s: exit %d\n%s", strings.Join(args, " "), code, errs)
	}
	return out
}

// disk returns a private copy of a generated test disk.
func disk(t *testing.T, kind string) string {
	t.Helper()
	testimages.Require(t, kind)
	src, err := testimages.Cached(context.Background(), kind, testimages.Spec{})
	if err != nil {
		t.Fatalf("generate %s disk: %v", kind, err)
	}
	dst := filepath.Join(t.TempDir(), kind+".img")
	if err := testimages.CopyDisk(src, dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	h.Sum(s[:0])
	return s
}

func sameFiles(t *testing.T, a, b string) {
	t.Helper()
	if out, err := exec.Command("cmp", a, b).CombinedOutput(); err != nil {
		t.Fatalf("%s and %s differ: %s", a, b, out)
	}
}

// TestSectorRoundTrip: capture --sector then restore gives a byte-identical
// disk, from a file and through a pipe.
func TestSectorRoundTrip(t *testing.T) {
	for _, kind := range []string{"gpt", "mbr", "bare"} {
		t.Run(kind, func(t *testing.T) {
			src := disk(t, kind)
			dir := t.TempDir()
			img := filepath.Join(dir, "d.dimg")
			mustRun(t, "capture", "-q", "--sector", src, img)
			mustRun(t, "verify", "-q", img)
			out := filepath.Join(dir, "restored.img")
			mustRun(t, "restore", "-q", img, out)
			sameFiles(t, src, out)

			// Through a pipe: dimg capture SRC - | dimg restore - DST.
			piped := filepath.Join(dir, "piped.img")
			sh := fmt.Sprintf("%q capture -q --sector %q - | %q restore -q - %q", dimgBin, src, dimgBin, piped)
			if b, err := exec.Command("bash", "-o", "pipefail", "-c", sh).CombinedOutput(); err != nil {
				t.Fatalf("pipe: %v\n%s", err, b)
			}
			sameFiles(t, src, piped)
		})
	}
}

type infoJSON struct {
	DiskSize   int64 `json:"disk_size"`
	ImageBytes int64 `json:"image_bytes"`
	Mode       string
	Table      string
	Partitions []struct {
		Number      int
		FS          string `json:"fs"`
		Copy        string
		UsedBytes   int64 `json:"used_bytes"`
		StoredBytes int64 `json:"stored_bytes"`
	}
}

func info(t *testing.T, img string) infoJSON {
	t.Helper()
	var in infoJSON
	if err := json.Unmarshal([]byte(mustRun(t, "info", "--json", img)), &in); err != nil {
		t.Fatal(err)
	}
	return in
}

// TestCorruptImage: a flipped byte in a stored chunk is named by verify and
// fails restore; truncated and foreign files get clear errors.
func TestCorruptImage(t *testing.T) {
	src := disk(t, "bare")
	dir := t.TempDir()
	img := filepath.Join(dir, "d.dimg")
	mustRun(t, "capture", "-q", src, img)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	// Flip a byte 1/3 into the file: inside some frame's payload.
	bad := bytes.Clone(b)
	bad[len(b)/3] ^= 0x01
	badImg := filepath.Join(dir, "bad.dimg")
	os.WriteFile(badImg, bad, 0o644)
	out, errs, code := run(t, nil, "verify", badImg)
	if code != 3 || !strings.Contains(errs, "BAD chunk") || !strings.Contains(errs, "disk bytes") {
		t.Fatalf("verify of a damaged image: exit %d\n%s%s", code, out, errs)
	}
	_, errs, code = run(t, nil, "restore", badImg, filepath.Join(dir, "x.img"))
	if code == 0 || !strings.Contains(errs, "chunk") {
		t.Fatalf("restore of a damaged image: exit %d: %s", code, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "x.img")); !os.IsNotExist(err) {
		t.Fatal("a failed restore left its target file behind")
	}
	for name, data := range map[string][]byte{
		"truncated": b[:len(b)-500],
		"empty":     nil,
		"foreign":   bytes.Repeat([]byte("not an image "), 1000),
		"footer":    append(bytes.Clone(b[:len(b)-10]), bytes.Repeat([]byte{0xEE}, 10)...),
	} {
		p := filepath.Join(dir, name+".dimg")
		os.WriteFile(p, data, 0o644)
		for _, args := range [][]string{{"info", p}, {"verify", p}, {"restore", p, filepath.Join(dir, name+".out")}} {
			_, errs, code := run(t, nil, args...)
			if code == 0 || !strings.Contains(errs, "dimg:") || strings.Contains(errs, "panic") {
				t.Errorf("%s %s: exit %d: %s", args[0], name, code, errs)
			}
		}
		// The same through a pipe.
		_, errs, code := run(t, bytes.NewReader(data), "restore", "-", filepath.Join(dir, name+".pipe"))
		if code == 0 || strings.Contains(errs, "panic") {
			t.Errorf("restore - %s: exit %d: %s", name, code, errs)
		}
		if _, err := os.Stat(filepath.Join(dir, name+".pipe")); !os.IsNotExist(err) {
			t.Errorf("restore - %s left a target file", name)
		}
	}
}

// TestRefusals: existing image without --force; interrupted capture leaves
// no image.
func TestRefusals(t *testing.T) {
	src := disk(t, "bare")
	dir := t.TempDir()
	img := filepath.Join(dir, "d.dimg")
	mustRun(t, "capture", "-q", src, img)
	before := fileSum(t, img)
	if _, errs, code := run(t, nil, "capture", src, img); code == 0 || !strings.Contains(errs, "--force") {
		t.Fatalf("capture over an existing image: exit %d: %s", code, errs)
	}
	if fileSum(t, img) != before {
		t.Fatal("refused capture changed the existing image")
	}
	if _, errs, code := run(t, nil, "restore", img, src); code == 0 || !strings.Contains(errs, "--force") {
		t.Fatalf("restore over an existing file: exit %d: %s", code, errs)
	}
	if _, _, code := run(t, nil, "capture"); code != 2 {
		t.Fatalf("capture without arguments: exit %d, want 2", code)
	}
	// A capture from a source that disappears halfway leaves nothing that
	// looks like an image: simulate with a source that is a FIFO closed early.
	fifo := filepath.Join(dir, "fifo")
	if err := exec.Command("mkfifo", fifo).Run(); err == nil {
		_, _, code := run(t, nil, "capture", fifo, filepath.Join(dir, "f.dimg"))
		if code == 0 {
			t.Fatal("capture from a FIFO succeeded")
		}
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".f.dimg") || e.Name() == "f.dimg" {
				t.Fatalf("failed capture left %s", e.Name())
			}
		}
	}
}
