package main

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/dimg-project/dimg/cloneio/remote/remotetest"
	"github.com/dimg-project/dimg/testimages"
)

// runStats runs dimg with DIMG_REMOTE_STATS set and returns stdout and
// the bytes it fetched over the network.
func runStats(t *testing.T, args ...string) (string, int64) {
	t.Helper()
	cmd := exec.Command(dimgBin, args...)
	cmd.Env = append(os.Environ(), "DIMG_REMOTE_STATS=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("dimg %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	m := regexp.MustCompile(`dimg: remote: fetched=(\d+)`).FindStringSubmatch(errb.String())
	if m == nil {
		t.Fatalf("dimg %s: no remote stats line in %q", strings.Join(args, " "), errb.String())
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return out.String(), n
}

// TestRemote: ls, cat, extract, info, verify, restore and mount of an
// image served by nginx give what they give for the local file; a second
// run is served from the cache; a delta whose base is on the server (by
// its relative path hint, or --base URL) reads through it.
func TestRemote(t *testing.T) {
	testimages.Require(t, "gpt")
	raw := disk(t, "gpt")
	dir := t.TempDir()
	img := filepath.Join(dir, "img.dimg")
	mustRun(t, "capture", "-q", raw, img)
	base := remotetest.Nginx(t, dir, remotetest.NginxOptions{})
	url := base + "/img.dimg"
	cache := "--cache=" + t.TempDir()

	for _, spec := range []string{"1:/", "2:/"} {
		local := mustRun(t, "ls", "-R", "--json", img, spec)
		rem, _ := runStats(t, "ls", "-R", "--json", cache, url, spec)
		if local != rem {
			t.Fatalf("ls -R %s differs between the file and the URL", spec)
		}
	}
	// A few files, small and large, by cat.
	var ents []struct {
		Path string
		Type string
		Size int64
	}
	if err := json.Unmarshal([]byte(mustRun(t, "ls", "-R", "--json", img, "2:/")), &ents); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if e.Type != "file" || e.Size == 0 || n >= 6 {
			continue
		}
		n++
		p := "2:/" + strings.TrimPrefix(e.Path, "/")
		local := mustRun(t, "cat", img, p)
		rem, fetched := runStats(t, "cat", "--no-cache", url, p)
		if local != rem {
			t.Fatalf("cat %s differs between the file and the URL", p)
		}
		if e.Size < 64<<10 && fetched > 2<<20 {
			t.Errorf("cat of %s (%d bytes) fetched %d bytes", p, e.Size, fetched)
		}
	}
	// extract.
	x1, x2 := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	mustRun(t, "extract", "-q", img, "2:/etc", x1)
	mustRun(t, "extract", "-q", cache, url, "2:/etc", x2)
	if out, err := exec.Command("diff", "-r", "--no-dereference", x1, x2).CombinedOutput(); err != nil {
		t.Fatalf("extract from the URL differs: %s", out)
	}
	// info and verify.
	var li, ri map[string]any
	json.Unmarshal([]byte(mustRun(t, "info", "--json", img)), &li)
	json.Unmarshal([]byte(mustRun(t, "info", "--json", cache, url)), &ri)
	delete(li, "image")
	delete(ri, "image")
	if a, b := mustJSON(t, li), mustJSON(t, ri); a != b {
		t.Fatalf("info differs:\n%s\n%s", a, b)
	}
	mustRun(t, "verify", cache, url)
	// restore: the same disk; a second restore comes from the cache.
	out1, out2 := filepath.Join(t.TempDir(), "l.img"), filepath.Join(t.TempDir(), "r.img")
	mustRun(t, "restore", "-q", img, out1)
	_, first := runStats(t, "restore", "-q", cache, url, out2)
	sameFiles(t, out1, out2)
	os.Remove(out2)
	_, again := runStats(t, "restore", "-q", cache, url, out2)
	sameFiles(t, out1, out2)
	if again > 1 {
		t.Fatalf("second restore fetched %d bytes (the first %d): the cache was not used", again, first)
	}

	// The cache lists what it holds, by image and URL; clear empties it.
	var ci struct {
		Entries int
		Groups  []struct{ Label string }
	}
	if err := json.Unmarshal([]byte(mustRun(t, "cache", "ls", "--json", cache)), &ci); err != nil {
		t.Fatal(err)
	}
	if ci.Entries == 0 || len(ci.Groups) < 2 {
		t.Fatalf("cache ls: %d entries in %d groups, want the image's chunks and the URL's small reads", ci.Entries, len(ci.Groups))
	}

	// A delta next to its base on the server: its relative hint resolves
	// against the URL; --base URL names the base of a local delta.
	ref := filepath.Join(t.TempDir(), "ref.img")
	if err := testimages.CopyDisk(out1, ref); err != nil {
		t.Fatal(err)
	}
	delta := filepath.Join(dir, "delta.dimg")
	deltaRandom(t, rand.New(rand.NewSource(5)), img, delta, "img.dimg", ref, 20)
	restoreCmp(t, ref, base+"/delta.dimg", cache)
	local := filepath.Join(t.TempDir(), "delta.dimg")
	if err := os.Link(delta, local); err != nil {
		t.Fatal(err)
	}
	restoreCmp(t, ref, local, cache, "--base", url)

	mustRun(t, "cache", "clear", cache)
	json.Unmarshal([]byte(mustRun(t, "cache", "ls", "--json", cache)), &ci)
	if ci.Entries != 0 {
		t.Fatalf("cache clear left %d entries", ci.Entries)
	}

	// mount: the same files.
	if os.Geteuid() != 0 {
		t.Skip("mount needs root")
	}
	m1, m2 := filepath.Join(t.TempDir(), "m1"), filepath.Join(t.TempDir(), "m2")
	os.Mkdir(m1, 0o755)
	os.Mkdir(m2, 0o755)
	mustRun(t, "mount", "--background", img, m1)
	defer exec.Command("umount", m1).Run()
	mustRun(t, "mount", "--background", cache, url, m2)
	defer exec.Command("umount", m2).Run()
	if out, err := exec.Command("diff", "-r", "--no-dereference", filepath.Join(m1, "p2", "etc"), filepath.Join(m2, "p2", "etc")).CombinedOutput(); err != nil {
		t.Fatalf("mounted from the URL differs: %s", out)
	}
	sameFiles(t, filepath.Join(m1, "p1.img"), filepath.Join(m2, "p1.img"))
	if _, errs, code := run(t, nil, "mount", "--rw", url, m2); code != exitUsage || !strings.Contains(errs, "URL") {
		t.Fatalf("mount --rw of a URL: exit %d, %q", code, errs)
	}
}

func mustJSON(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
