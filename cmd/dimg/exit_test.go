package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dimg-project/dimg/cloneio"
	"github.com/dimg-project/dimg/cloneio/multicast"
	"github.com/dimg-project/dimg/cloneio/source"
	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/fsdrivers/parttable"
	"github.com/dimg-project/dimg/imagefmt"
)

// TestExitStatus: the exit code table, error by error, however deeply the
// error is wrapped.
func TestExitStatus(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", err)) }
	for _, c := range []struct {
		err         error
		interrupted bool
		want        int
	}{
		{nil, false, exitOK},
		{errors.New("anything"), false, exitFailure},
		{wrap(fs.ErrNotExist), false, exitFailure},
		{wrap(cloneio.ErrMounted), false, exitFailure},
		{wrap(cloneio.ErrTooSmall), false, exitFailure},
		{wrap(multicast.ErrAllFailed), false, exitFailure},
		{usagef("bad flag"), false, exitUsage},
		{wrap(usagef("bad flag")), false, exitUsage},
		{errors.New(`unknown command "x" for "dimg"`), false, exitUsage},
		{wrap(source.ErrSpec), false, exitUsage},
		{wrap(context.Canceled), false, exitCanceled},
		{errors.New("read interrupted"), true, exitCanceled},
		{wrap(imagefmt.ErrChecksum), true, exitCanceled}, // interrupted first
		{wrap(multicast.ErrPartial), false, exitPartial},
		{wrap(imagefmt.ErrFormat), false, exitCorrupt},
		{wrap(imagefmt.ErrCorrupt), false, exitCorrupt},
		{wrap(imagefmt.ErrChecksum), false, exitCorrupt},
		{wrap(imagefmt.ErrTruncated), false, exitCorrupt},
		{wrap(fsdrivers.ErrCorrupt), false, exitCorrupt},
		{wrap(parttable.ErrCorrupt), false, exitCorrupt},
		{wrap(cloneio.ErrVerify), false, exitCorrupt},
		{wrap(multicast.ErrMismatch), false, exitCorrupt},
		{&source.VerifyError{Name: "x", Bad: 2}, false, exitCorrupt},
		{errors.Join(errors.New("a"), wrap(fsdrivers.ErrCorrupt)), false, exitCorrupt},
	} {
		if got := exitStatus(c.err, c.interrupted); got != c.want {
			t.Errorf("exitStatus(%v, interrupted %v) = %d, want %d", c.err, c.interrupted, got, c.want)
		}
	}
}

// TestExitCodes runs the commands on a foreign file, a truncated and a
// damaged image, a corrupt filesystem and bad command lines: the same
// cause exits with the same code from every command.
func TestExitCodes(t *testing.T) {
	src := disk(t, "bare")
	dir := t.TempDir()
	img := filepath.Join(dir, "good.dimg")
	mustRun(t, "capture", "-q", src, img)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}

	// Not a dimg image: random bytes, as a raw disk and named as an image.
	rnd := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range rnd {
		rnd[i] = byte(r.Uint32())
	}
	foreign := filepath.Join(dir, "foreign.bin")
	foreignImg := filepath.Join(dir, "foreign.dimg")
	os.WriteFile(foreign, rnd, 0o644)
	os.WriteFile(foreignImg, rnd, 0o644)

	trunc := filepath.Join(dir, "trunc.dimg")
	os.WriteFile(trunc, b[:len(b)/2], 0o644)

	// A damaged chunk: one payload byte of the first stored frame.
	r0, err := imagefmt.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	var first imagefmt.Entry
	for e := range r0.Entries() {
		first = e
		break
	}
	r0.Close()
	bad := append([]byte(nil), b...)
	bad[first.Offset+imagefmt.FrameHeaderSize+int64(first.StoredLen)/2] ^= 0xff
	damaged := filepath.Join(dir, "damaged.dimg")
	os.WriteFile(damaged, bad, 0o644)

	// A corrupt filesystem: the ext4 superblock checksum of a raw disk.
	raw, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	raw[1024+0x3fc] ^= 0xff
	corruptFS := filepath.Join(dir, "corrupt-fs.raw")
	os.WriteFile(corruptFS, raw, 0o644)

	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	out := func(name string) string { return filepath.Join(dir, "out", name) }
	os.Mkdir(filepath.Join(dir, "out"), 0o755)

	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		// Exit 3 for a file that is not an image, from every command
		// that needs one (info used to exit 1, verify 3).
		{[]string{"info", foreign}, exitCorrupt, "not a dimg image"},
		{[]string{"verify", foreign}, exitCorrupt, "not a dimg image"},
		{[]string{"restore", "-q", foreign, out("a.raw")}, exitCorrupt, "not a dimg image"},
		{[]string{"ls", foreignImg}, exitCorrupt, "not a dimg image"},
		{[]string{"cat", foreignImg, "1:/x"}, exitCorrupt, "not a dimg image"},
		{[]string{"extract", "-q", foreignImg, "1:/", out("x")}, exitCorrupt, "not a dimg image"},
		{[]string{"mount", foreignImg, mnt}, exitCorrupt, "not a dimg image"},
		// --background reports the child's error: with its status, not 1.
		{[]string{"mount", "--background", foreignImg, mnt}, exitCorrupt, "not a dimg image"},
		{[]string{"mount", "--background", trunc, mnt}, exitCorrupt, "truncated"},
		// ...while ls, cat, extract and mount read any other file as a raw disk.
		{[]string{"ls", foreign}, exitOK, ""},
		{[]string{"cat", foreign, "1:/x"}, exitFailure, "holds no files"},

		{[]string{"info", trunc}, exitCorrupt, "truncated"},
		{[]string{"verify", trunc}, exitCorrupt, "truncated"},
		{[]string{"restore", "-q", trunc, out("b.raw")}, exitCorrupt, "truncated"},
		{[]string{"ls", trunc}, exitCorrupt, "truncated"},

		{[]string{"info", damaged}, exitOK, ""}, // reads no chunk
		{[]string{"verify", damaged}, exitCorrupt, "1 damaged chunk(s)"},
		{[]string{"restore", "-q", damaged, out("c.raw")}, exitCorrupt, "chunk"},
		{[]string{"ls", damaged, "1:/"}, exitCorrupt, "chunk"},

		// A corrupt filesystem is damage too (ls/cat used to exit 1
		// when the damage was found by the probe).
		{[]string{"ls", corruptFS, "1:/"}, exitCorrupt, "superblock checksum"},
		{[]string{"cat", corruptFS, "1:/etc/hostname"}, exitCorrupt, "corrupt filesystem"},
		{[]string{"extract", "-q", corruptFS, "1:/", out("y")}, exitCorrupt, "corrupt filesystem"},

		{[]string{"info"}, exitUsage, "accepts 1 arg"},
		{[]string{"ls"}, exitUsage, "want IMAGE"},
		{[]string{"cat", img, "0:/x"}, exitUsage, "start at 1"},
		{[]string{"info", "--no-such-flag", img}, exitUsage, "unknown flag"},
		{[]string{"no-such-command"}, exitUsage, "unknown command"},
		{[]string{"info", filepath.Join(dir, "missing.dimg")}, exitFailure, "no such file"},
	} {
		_, errs, code := runTimeout(t, 2*time.Minute, nil, c.args...)
		if code != c.code || !strings.Contains(errs, c.msg) {
			t.Errorf("dimg %s: exit %d, want %d and %q: %s", strings.Join(c.args, " "), code, c.code, c.msg, errs)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "out")); len(ents) != 0 {
		t.Errorf("failed commands left %d files behind", len(ents))
	}
}

// TestExitStatusHelp: the table is in the root --help.
func TestExitStatusHelp(t *testing.T) {
	out := mustRun(t, "--help")
	for _, want := range []string{"Exit status", "130"} {
		if !strings.Contains(out, want) {
			t.Errorf("dimg --help lacks %q", want)
		}
	}
}

// TestJSONOnFailure: info --json and verify --json print one JSON object
// on stdout even when IMAGE cannot be opened, with the usual exit status.
func TestJSONOnFailure(t *testing.T) {
	garbage := filepath.Join(t.TempDir(), "garbage.dimg")
	if err := os.WriteFile(garbage, []byte("not an image at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.dimg")
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"info", "--json", garbage}, 3},
		{[]string{"verify", "--json", garbage}, 3},
		{[]string{"info", "--json", missing}, 1},
		{[]string{"verify", "--json", missing}, 1},
	} {
		out, _, code := run(t, nil, c.args...)
		var v struct {
			Image string `json:"image"`
			OK    *bool  `json:"ok"`
			Error string `json:"error"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Errorf("%v: stdout is not one JSON object (%v): %q", c.args, err, out)
			continue
		}
		if code != c.code || v.OK == nil || *v.OK || v.Error == "" || v.Image != c.args[2] {
			t.Errorf("%v: exit %d (want %d), JSON %+v", c.args, code, c.code, v)
		}
	}
}
