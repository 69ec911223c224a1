package fat

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Helpers for tests that use the field's tools as oracles: dosfstools
// (mkfs.vfat, fsck.fat) and mtools. They skip when a tool is missing.

// needTools skips t unless every named program is on PATH.
func needTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s not installed: %v", n, err)
		}
	}
}

// toolEnv makes mtools accept images without a partition check, print names
// in UTF-8 and store times as UTC wall-clock time (what we read back).
var toolEnv = []string{"MTOOLS_SKIP_CHECK=1", "LANG=C.UTF-8", "LC_ALL=C.UTF-8", "TZ=UTC"}

// tool runs a program and returns its stdout; stderr goes into the error.
func tool(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), toolEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.Bytes(), &toolError{cmd: name + " " + strings.Join(args, " "), err: err, out: stdout.String() + stderr.String()}
	}
	return stdout.Bytes(), nil
}

type toolError struct {
	cmd, out string
	err      error
}

func (e *toolError) Error() string { return e.cmd + ": " + e.err.Error() + "\n" + e.out }
func (e *toolError) Unwrap() error { return e.err }

// mustTool is tool that fails the test on error.
func mustTool(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	out, err := tool(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var fsckClusters = regexp.MustCompile(`(\d+) files, (\d+)/(\d+) clusters`)

// fsckClean runs fsck.fat -n (check only) and fails t unless it finds
// nothing to fix. It returns the used and total cluster counts it reports.
func fsckClean(t testing.TB, img string) (used, total int64) {
	t.Helper()
	out, err := tool("fsck.fat", "-n", "-v", img)
	if err != nil {
		t.Fatalf("fsck.fat -n %s is not clean: %v", img, err)
	}
	// In -n mode fsck.fat says this whenever it would have changed something.
	if bytes.Contains(out, []byte("Leaving filesystem unchanged")) {
		t.Errorf("fsck.fat -n %s would change something:\n%s", img, out)
	}
	m := fsckClusters.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no cluster summary in fsck.fat output:\n%s", out)
	}
	used, _ = strconv.ParseInt(string(m[2]), 10, 64)
	total, _ = strconv.ParseInt(string(m[3]), 10, 64)
	return used, total
}

// mdirPaths lists every path in an image with mdir (recursive, bare),
// directories with a trailing "/".
func mdirPaths(t testing.TB, img string) []string {
	t.Helper()
	out := mustTool(t, "mdir", "-/", "-a", "-b", "-i", img, "::/")
	var paths []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		p, ok := strings.CutPrefix(sc.Text(), "::/")
		if !ok || p == "" {
			continue
		}
		paths = append(paths, p)
	}
	slices.Sort(paths)
	return paths
}

// fsPaths lists every path of fsys like mdirPaths does.
func fsPaths(t testing.TB, fsys fs.FS) []string {
	t.Helper()
	var paths []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		if d.IsDir() {
			p += "/"
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		t.Fatalf("walk: %v", err)
	}
	slices.Sort(paths)
	return paths
}

// treeEntry is what compareTrees checks of one path.
type treeEntry struct {
	dir   bool
	size  int64
	mtime time.Time
	sum   [32]byte
}

// snapshot walks fsys and records every path's type, size, mtime and
// content hash. Contents are hashed through Open+Read in 1 MiB reads.
func snapshot(t testing.TB, fsys fs.FS) map[string]treeEntry {
	t.Helper()
	out := map[string]treeEntry{}
	buf := make([]byte, 1<<20)
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		e := treeEntry{dir: d.IsDir(), mtime: info.ModTime()}
		if !e.dir {
			if !info.Mode().IsRegular() {
				return errors.New(p + ": not a regular file")
			}
			e.size = info.Size()
			f, err := fsys.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.CopyBuffer(h, struct{ io.Reader }{f}, buf)
			f.Close()
			if err != nil {
				return err
			}
			copy(e.sum[:], h.Sum(nil))
		}
		out[p] = e
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	return out
}

// compareTrees checks that got has exactly want's paths with the same type,
// size and content, and for files the same mtime to within FAT's 2 s.
func compareTrees(t testing.TB, got, want map[string]treeEntry) {
	t.Helper()
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			t.Errorf("%s: missing", p)
		case g.dir != w.dir:
			t.Errorf("%s: dir %v, want %v", p, g.dir, w.dir)
		case w.dir:
		case g.size != w.size:
			t.Errorf("%s: size %d, want %d", p, g.size, w.size)
		case g.sum != w.sum:
			t.Errorf("%s: content differs", p)
		case g.mtime.Sub(w.mtime).Abs() > 2*time.Second:
			t.Errorf("%s: mtime %v, want %v", p, g.mtime, w.mtime)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: unexpected", p)
		}
	}
}

// writeFile writes data to dir/rel with mtime, creating parents.
func writeFile(t testing.TB, dir, rel string, data []byte, mtime time.Time) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// topLevel lists the names directly in dir, as arguments for mcopy.
func topLevel(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, path.Join(dir, e.Name()))
	}
	return out
}
