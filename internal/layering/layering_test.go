package layering

import (
	"bufio"
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// floors maps each top-level tree to its floor; higher floors import lower.
var floors = map[string]int{
	"cmd":        3,
	"cloneio":    2,
	"fusefs":     2,
	"testimages": 2,
	"imagefmt":   1,
	"fsdrivers":  1,
	"internal":   0,
}

// testOnly trees build fixtures: only _test.go files (and the tree
// itself) may import them.
var testOnly = []string{"testimages", "fsdrivers/fstestutil"}

func within(pkg, tree string) bool { return pkg == tree || strings.HasPrefix(pkg, tree+"/") }

func top(pkg string) string { return strings.SplitN(pkg, "/", 2)[0] }

// violation says why package from (a path inside the module) must not
// import to, or "" when it may. test is whether the import is in a
// _test.go file.
func violation(from, to string, test bool) string {
	ff, ok := floors[top(from)]
	if !ok {
		return fmt.Sprintf("%s is in no floor: add %q to the floors table of internal/layering", from, top(from))
	}
	tf, ok := floors[top(to)]
	if !ok {
		return fmt.Sprintf("%s is in no floor: add %q to the floors table of internal/layering", to, top(to))
	}
	for _, t := range testOnly {
		if within(to, t) && !within(from, t) {
			if test {
				return ""
			}
			return fmt.Sprintf("%s builds test fixtures: only _test.go files may import it", to)
		}
	}
	switch {
	case top(from) == top(to), tf < ff:
		return ""
	case tf == ff:
		return fmt.Sprintf("%s and %s are neighbours on one floor and must not import each other", top(from), top(to))
	}
	return fmt.Sprintf("%s (floor %d) must not import the higher %s (floor %d)", from, ff, to, tf)
}

func TestViolation(t *testing.T) {
	for _, c := range []struct {
		from, to string
		test, ok bool
	}{
		{"cmd/dimg", "cloneio/source", false, true},
		{"cmd/dimg", "internal/progress", false, true},
		{"cloneio/multicast", "cloneio", false, true},
		{"cloneio", "cloneio/source", false, true},
		{"cloneio/source", "imagefmt", false, true},
		{"fusefs", "fsdrivers", false, true},
		{"fsdrivers/disk", "fsdrivers/parttable", false, true},
		{"imagefmt", "internal/lru", false, true},
		{"imagefmt", "fsdrivers", false, false},
		{"fsdrivers/ext4", "imagefmt", false, false},
		{"fsdrivers/ext4", "imagefmt", true, false},
		{"cloneio", "fusefs", false, false},
		{"fusefs", "cloneio/source", false, false},
		{"cloneio", "cmd/dimg", false, false},
		{"imagefmt", "cloneio", false, false},
		{"internal/lru", "imagefmt", false, false},
		{"cmd/dimg", "testimages", false, false},
		{"cmd/dimg", "testimages", true, true},
		{"fsdrivers/ext4", "testimages", true, true},
		{"testimages/cmd/mkdisk", "testimages", false, true},
		{"fsdrivers/ext4", "fsdrivers/fstestutil", false, false},
		{"fsdrivers/ext4", "fsdrivers/fstestutil", true, true},
		{"tools", "imagefmt", false, false},
	} {
		why := violation(c.from, c.to, c.test)
		if (why == "") != c.ok {
			t.Errorf("%s → %s (test %v): %q, want allowed %v", c.from, c.to, c.test, why, c.ok)
		}
	}
}

// TestLayering parses the imports of every Go file in the module.
func TestLayering(t *testing.T) {
	root, module := moduleRoot(t)
	fset := token.NewFileSet()
	files := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "vendor" || name == "build") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		files++
		rel, _ := filepath.Rel(root, filepath.Dir(p))
		from := filepath.ToSlash(rel)
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			to, ok := strings.CutPrefix(path, module+"/")
			if !ok {
				if path == module {
					t.Errorf("%s imports the module root %s", p, path)
				}
				continue
			}
			if why := violation(from, to, strings.HasSuffix(name, "_test.go")); why != "" {
				t.Errorf("%s imports %s: %s", filepath.Join(rel, name), to, why)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 50 {
		t.Fatalf("parsed only %d Go files under %s: wrong root?", files, root)
	}
}

// moduleRoot finds go.mod above this directory and the module path in it.
func moduleRoot(t *testing.T) (string, string) {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		f, err := os.Open(filepath.Join(dir, "go.mod"))
		if err == nil {
			defer f.Close()
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if m, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
					return dir, strings.Trim(strings.TrimSpace(m), `"`)
				}
			}
			t.Fatalf("%s/go.mod names no module", dir)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
}
