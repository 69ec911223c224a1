package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/imagefmt"
	"github.com/dimg-project/dimg/testimages"
)

// featureImage returns the feature disk (one partition per reader feature)
// and a .dimg captured from it.
func featureImage(t *testing.T) (raw, img string) {
	t.Helper()
	raw = disk(t, "feature")
	img = filepath.Join(t.TempDir(), "feature.dimg")
	mustRun(t, "capture", "-q", raw, img)
	return raw, img
}

// featurePart returns partition n of the feature disk as sfdisk sees it.
func featurePart(t *testing.T, raw string, n int) testimages.Part {
	t.Helper()
	parts, err := testimages.Partitions(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		if p.Number == n {
			return p
		}
	}
	t.Fatalf("no partition %d in %s", n, raw)
	return testimages.Part{}
}

// kernelMount mounts partition n of raw read-only through the kernel (ext4)
// or ntfs-3g, attached by offset (no loop partition scan here).
func kernelMount(t *testing.T, raw string, n int) string {
	t.Helper()
	p := featurePart(t, raw, n)
	out, err := exec.Command("losetup", "-f", "--show", "-r", "-o", fmt.Sprint(p.Start), "--sizelimit", fmt.Sprint(p.Size), raw).Output()
	if err != nil {
		t.Skipf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	dir := filepath.Join(t.TempDir(), fmt.Sprintf("kernel-p%d", n))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("mount", "-o", "ro", dev, dir)
	if p.FS == "ntfs" {
		cmd = exec.Command("ntfs-3g", "-o", "ro", dev, dir)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mount partition %d: %v\n%s", n, err, b)
	}
	t.Cleanup(func() {
		if b, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, b)
		}
	})
	return dir
}

// fileEntry is what two trees must agree on for one path.
type fileEntry struct {
	Type   string // as TypeName
	Mode   uint32 // permission and setuid/setgid/sticky bits
	Uid    uint32
	Gid    uint32
	Size   int64 // regular files and symlinks
	Nlink  uint64
	Mtime  string
	Target string
	Sum    string
	Rdev   uint64
	Xattrs string
}

type snapOpts struct {
	noNlinkDirs bool // directory link counts differ by design (NTFS)
	noTimes     bool
	noOwners    bool
}

// snapshot describes every entry under root, the way ls -l, stat,
// readlink, sha256sum and getfattr see it.
func snapshot(t *testing.T, root string, o snapOpts) map[string]fileEntry {
	t.Helper()
	m := map[string]fileEntry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." || rel == "lost+found" && d.IsDir() {
			if rel != "." {
				return fs.SkipDir
			}
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := fileEntry{Mode: st.Mode & 0o7777, Uid: st.Uid, Gid: st.Gid, Nlink: st.Nlink,
			Mtime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec).UTC().Format(time.RFC3339Nano)}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			e.Type = "dir"
			if o.noNlinkDirs {
				e.Nlink = 0
			}
		case unix.S_IFREG:
			e.Type, e.Size = "file", st.Size
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
			e.Sum = fmt.Sprintf("%x", h.Sum(nil))
		case unix.S_IFLNK:
			e.Type, e.Size = "symlink", st.Size
			e.Target, _ = os.Readlink(p)
			e.Mode = 0
		case unix.S_IFCHR, unix.S_IFBLK:
			e.Type, e.Rdev = "device", st.Rdev
		case unix.S_IFIFO:
			e.Type = "fifo"
		case unix.S_IFSOCK:
			e.Type = "socket"
		}
		if o.noTimes {
			e.Mtime = ""
		}
		if o.noOwners {
			e.Uid, e.Gid = 0, 0
		}
		e.Xattrs = hostXattrs(p)
		m[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// hostXattrs lists user.* and security.* attributes, sorted.
func hostXattrs(p string) string {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n <= 0 {
		return ""
	}
	var out []string
	for _, k := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		if !strings.HasPrefix(k, "user.") && !strings.HasPrefix(k, "security.") {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, k, v)
		if err != nil {
			out = append(out, k+"=<"+err.Error()+">")
			continue
		}
		out = append(out, fmt.Sprintf("%s=%q", k, v[:m]))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

func compareSnapshots(t *testing.T, what string, want, got map[string]fileEntry) {
	t.Helper()
	bad := 0
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			t.Errorf("%s: %s missing", what, p)
		case g != w:
			t.Errorf("%s: %s\n got %+v\nwant %+v", what, p, g, w)
		default:
			continue
		}
		if bad++; bad > 20 {
			t.Fatalf("%s: too many differences", what)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: %s is extra", what, p)
		}
	}
	if len(want) < 20 {
		t.Errorf("%s: only %d entries compared", what, len(want))
	}
}

// TestFeatureDisk runs the checks that need the feature disk (built once,
// captured once) as subtests.
func TestFeatureDisk(t *testing.T) {
	testimages.Require(t, "feature")
	raw, img := featureImage(t)
	t.Run("ExtractMatchesKernel", func(t *testing.T) { testExtractMatchesKernel(t, raw, img) })
	t.Run("MountMatchesKernel", func(t *testing.T) { testMountMatchesKernel(t, raw, img) })
	t.Run("LsCat", func(t *testing.T) { testLsCat(t, raw, img) })
	t.Run("DamagedImage", func(t *testing.T) { testDamagedImage(t, raw, img) })
}

// testExtractMatchesKernel: dimg extract of whole ext4 filesystems (4 KiB
// blocks with every feature; 1 KiB inline data) gives what cp -a gives
// from the kernel's loop mount of the original disk.
func testExtractMatchesKernel(t *testing.T, raw, img string) {
	for _, n := range []int{1, 2} {
		t.Run(fmt.Sprintf("p%d", n), func(t *testing.T) {
			k := kernelMount(t, raw, n)
			dir := t.TempDir()
			cpa := filepath.Join(dir, "cp-a")
			if b, err := exec.Command("cp", "-a", k, cpa).CombinedOutput(); err != nil {
				t.Fatalf("cp -a: %v %s", err, b)
			}
			ours := filepath.Join(dir, "dimg")
			mustRun(t, "extract", "-q", img, fmt.Sprintf("%d:/", n), ours)
			compareSnapshots(t, "extract vs cp -a", snapshot(t, cpa, snapOpts{}), snapshot(t, ours, snapOpts{}))
			var st unix.Stat_t
			unix.Lstat(ours, &st)
			var kst unix.Stat_t
			unix.Lstat(k, &kst)
			if st.Mode != kst.Mode || st.Mtim != kst.Mtim {
				t.Errorf("root of the extraction: mode %o mtime %v, want %o %v", st.Mode, st.Mtim, kst.Mode, kst.Mtim)
			}
		})
	}
}

// testMountMatchesKernel: the FUSE tree of each ext4 partition is what
// the kernel's loop mount of the original shows; the NTFS tree matches
// ntfs-3g's in names, types and contents; raw files are the disk's bytes.
func testMountMatchesKernel(t *testing.T, raw, img string) {
	mnt := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mnt, 0o755)
	logFile := filepath.Join(t.TempDir(), "mount.log")
	mustRun(t, "mount", "--background", "--log", logFile, img, mnt)
	t.Cleanup(func() {
		if b, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v %s", err, b)
		}
	})
	// disk.img is what restore writes (free space of a filesystem-aware
	// capture reads as zeros, so not the original byte for byte).
	restored := filepath.Join(t.TempDir(), "restored.img")
	mustRun(t, "restore", "-q", img, restored)
	if b, err := exec.Command("cmp", restored, filepath.Join(mnt, "disk.img")).CombinedOutput(); err != nil {
		t.Errorf("disk.img: %v %s", err, b)
	}
	p1 := featurePart(t, raw, 1)
	if fi, err := os.Stat(filepath.Join(mnt, "p1.img")); err != nil || fi.Size() != p1.Size {
		t.Errorf("p1.img: %v %v, want %d bytes", fi, err, p1.Size)
	}
	for _, n := range []int{1, 2} {
		k := kernelMount(t, raw, n)
		compareSnapshots(t, fmt.Sprintf("p%d mount vs kernel", n),
			snapshot(t, k, snapOpts{}), snapshot(t, filepath.Join(mnt, fmt.Sprintf("p%d", n)), snapOpts{}))
	}
	// NTFS through our driver vs ntfs-3g: modes, owners and link counts
	// are each driver's invention; names, types, sizes, contents, symlink
	// targets and named streams (user.* xattrs) are not.
	k := kernelMount(t, raw, 6)
	o := snapOpts{noNlinkDirs: true, noTimes: true, noOwners: true}
	want, got := snapshot(t, k, o), snapshot(t, filepath.Join(mnt, "p6"), o)
	neutral := func(e fileEntry) fileEntry {
		e.Mode, e.Nlink, e.Rdev = 0, 0, 0
		if e.Type == "dir" {
			e.Size = 0
		}
		return e
	}
	for p, e := range want {
		want[p] = neutral(e)
	}
	for p, e := range got {
		got[p] = neutral(e)
	}
	compareSnapshots(t, "p6 mount vs ntfs-3g", want, got)
}

// TestMountCommandRefusals: a mountpoint that is not empty, or that holds
// the image, is refused with a clear message.
func TestMountCommandRefusals(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "x.dimg")
	os.WriteFile(img, []byte("whatever"), 0o644)
	_, errs, code := run(t, nil, "mount", img, dir)
	if code == 0 || !strings.Contains(errs, "inside the mountpoint") {
		t.Errorf("mountpoint holding the image: exit %d: %s", code, errs)
	}
	full := t.TempDir()
	os.WriteFile(filepath.Join(full, "f"), nil, 0o644)
	_, errs, code = run(t, nil, "mount", img, full)
	if code == 0 || !strings.Contains(errs, "not empty") {
		t.Errorf("non-empty mountpoint: exit %d: %s", code, errs)
	}
	_, errs, code = run(t, nil, "mount", "--background", img, filepath.Join(dir, "missing"))
	if code == 0 || !strings.Contains(errs, "no such file") {
		t.Errorf("missing mountpoint: exit %d: %s", code, errs)
	}
}

type lsEntry struct {
	Path   string `json:"path"`
	Type   string `json:"type"`
	Size   int64  `json:"size"`
	Perm   uint32 `json:"perm"`
	Target string `json:"target"`
	Nlink  uint32 `json:"nlink"`
}

// testLsCat checks listings and cat against the kernel's view, and the
// errors for what does not exist.
func testLsCat(t *testing.T, raw, img string) {
	k := kernelMount(t, raw, 1)

	var parts []partJSON
	if err := json.Unmarshal([]byte(mustRun(t, "ls", "--json", img)), &parts); err != nil {
		t.Fatal(err)
	}
	var fss []string
	for _, p := range parts {
		fss = append(fss, p.FS)
	}
	if got := strings.Join(fss, ","); got != "ext4,ext4,fat32,fat16,fat12,ntfs,,swap" {
		t.Errorf("ls partitions: %s", got)
	}

	// Plain listing: the names the kernel lists.
	var want []string
	ents, _ := os.ReadDir(filepath.Join(k, "data"))
	for _, e := range ents {
		want = append(want, e.Name())
	}
	if got := strings.Fields(mustRun(t, "ls", img, "1:/data")); !slices.Equal(got, want) {
		t.Errorf("ls 1:/data = %v, want %v", got, want)
	}

	// Recursive JSON: every entry of a deep tree, with the kernel's facts.
	var list []lsEntry
	if err := json.Unmarshal([]byte(mustRun(t, "ls", "-R", "--json", img, "1:/")), &list); err != nil {
		t.Fatal(err)
	}
	byPath := map[string]lsEntry{}
	for _, e := range list {
		byPath[e.Path] = e
	}
	n := 0
	filepath.WalkDir(k, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(k, p)
		if rel == "." {
			return nil
		}
		n++
		e, ok := byPath[rel]
		var st unix.Stat_t
		unix.Lstat(p, &st)
		switch {
		case !ok:
			t.Errorf("ls -R: %s missing", rel)
		case e.Perm != st.Mode&0o7777 || uint64(e.Nlink) != st.Nlink || (d.Type().IsRegular() && e.Size != st.Size):
			t.Errorf("ls -R: %s: %+v; kernel: mode %o nlink %d size %d", rel, e, st.Mode, st.Nlink, st.Size)
		}
		if d.Type()&fs.ModeSymlink != 0 {
			if tgt, _ := os.Readlink(p); e.Target != tgt {
				t.Errorf("ls -R: %s -> %q, want %q", rel, e.Target, tgt)
			}
		}
		return nil
	})
	if len(list) != n {
		t.Errorf("ls -R lists %d entries, the kernel %d", len(list), n)
	}
	if out := mustRun(t, "ls", "-l", img, "1:/links"); !strings.Contains(out, "short -> ../data/hello.txt") || !strings.HasPrefix(out, "l") {
		t.Errorf("ls -l 1:/links:\n%s", out)
	}
	if out := mustRun(t, "ls", "-l", img, "1:/special/null"); !strings.HasPrefix(out, "c") || !strings.Contains(out, "1, 3") {
		t.Errorf("ls -l of a char device: %s", out)
	}

	// cat: content, symlinks followed inside the image.
	for spec, host := range map[string]string{
		"1:/data/random-5M.bin":   "data/random-5M.bin",
		"1:/links/short":          "data/hello.txt",
		"1:/links/absolute":       "data/hello.txt", // "/data/hello.txt" in the image, not on this machine
		"1:/sparse/trailing-hole": "sparse/trailing-hole",
	} {
		wantB, err := os.ReadFile(filepath.Join(k, host))
		if err != nil {
			t.Fatal(err)
		}
		if got := mustRun(t, "cat", img, spec); got != string(wantB) {
			t.Errorf("cat %s: %d bytes, want %d", spec, len(got), len(wantB))
		}
	}

	// Errors name what exists.
	tests := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"cat", img, "1:/data"}, exitFailure, "is a directory"},
		{[]string{"cat", img, "1:/data/helo.txt"}, exitFailure, "similar names in 1:/data: hello.txt"},
		{[]string{"cat", img, "1:/nosuchdir/x"}, exitFailure, "1:/ holds: "},
		{[]string{"cat", img, "9:/x"}, exitFailure, "partitions: 1, 2, 3, 4, 5, 6, 7, 8"},
		{[]string{"cat", img, "8:/x"}, exitFailure, "holds no files"},
		{[]string{"cat", img, "/data/hello.txt"}, exitUsage, "name one"},
		{[]string{"cat", img, "0:/x"}, exitUsage, "start at 1"},
		{[]string{"ls", img, "1:/links/dangling/x"}, exitFailure, "no such file"},
		{[]string{"cat", img, "1:/links/dangling"}, exitFailure, "dangling"},
	}
	for _, tc := range tests {
		_, errs, code := run(t, nil, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.msg) {
			t.Errorf("dimg %s: exit %d: %s; want exit %d and %q", strings.Join(tc.args[2:], " "), code, errs, tc.code, tc.msg)
		}
	}
}

// TestExtractCommand: one file into a directory, overwrite refused without
// --force, a bare /path on a single-filesystem image.
func TestExtractCommand(t *testing.T) {
	src := disk(t, "bare")
	img := filepath.Join(t.TempDir(), "bare.dimg")
	mustRun(t, "capture", "-q", src, img)
	var list []lsEntry
	if err := json.Unmarshal([]byte(mustRun(t, "ls", "-R", "--json", img, "/")), &list); err != nil {
		t.Fatal(err)
	}
	var file string
	for _, e := range list {
		if e.Type == "file" && e.Size > 0 {
			file = e.Path
			break
		}
	}
	if file == "" {
		t.Fatal("no file in the bare image")
	}
	dir := t.TempDir()
	mustRun(t, "extract", "-q", img, "/"+file, dir)
	got, err := os.ReadFile(filepath.Join(dir, filepath.Base(file)))
	if err != nil {
		t.Fatal(err)
	}
	if want := mustRun(t, "cat", img, "/"+file); string(got) != want {
		t.Errorf("extracted %d bytes, cat gives %d", len(got), len(want))
	}
	_, errs, code := run(t, nil, "extract", img, "/"+file, dir)
	if code == 0 || !strings.Contains(errs, "exists") || !strings.Contains(errs, "force") {
		t.Errorf("second extract without --force: exit %d: %s", code, errs)
	}
	mustRun(t, "extract", "-q", "--force", img, "/"+file, dir)
}

// testDamagedImage: a corrupt chunk under one file gives errors naming the
// chunk (cat: exit 3; mount: EIO and a log line), never wrong bytes, and
// the rest of the image is still served.
func testDamagedImage(t *testing.T, raw, img string) {
	testimages.Require(t, "debugfs")
	p1 := featurePart(t, raw, 1)

	// Where the file's data lies: debugfs on a copy of the partition.
	part := filepath.Join(t.TempDir(), "p1.img")
	if b, err := exec.Command("dd", "if="+raw, "of="+part, "bs=1M", fmt.Sprintf("skip=%d", p1.Start>>20),
		fmt.Sprintf("count=%d", p1.Size>>20), "status=none").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v %s", err, b)
	}
	out, err := exec.Command("debugfs", "-R", "blocks /data/random-5M.bin", part).Output()
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Fields(string(out))
	blk, _ := strconv.ParseInt(blocks[len(blocks)/2], 10, 64)
	diskOff := p1.Start + blk*4096

	r, err := imagefmt.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	chunk := diskOff / int64(r.Header().ChunkSize)
	var frame imagefmt.Entry
	for e := range r.Entries() {
		if e.Chunk == chunk {
			frame = e
		}
	}
	r.Close()
	if frame.StoredLen == 0 {
		t.Fatalf("chunk %d is not stored", chunk)
	}
	b, _ := os.ReadFile(img)
	b[frame.Offset+imagefmt.FrameHeaderSize+int64(frame.StoredLen)/2] ^= 0xff
	bad := filepath.Join(t.TempDir(), "bad.dimg")
	os.WriteFile(bad, b, 0o644)

	stdout, errs, code := run(t, nil, "cat", bad, "1:/data/random-5M.bin")
	if code != exitCorrupt || !strings.Contains(errs, fmt.Sprintf("chunk %d", chunk)) {
		t.Errorf("cat over a bad chunk: exit %d: %s", code, errs)
	}
	good, _ := os.ReadFile(filepath.Join(kernelMount(t, raw, 1), "data/random-5M.bin"))
	if !bytes.HasPrefix(good, []byte(stdout)) {
		t.Errorf("cat wrote bytes that are not the file's")
	}
	if got := mustRun(t, "cat", bad, "1:/data/hello.txt"); got != "hello, dimg\n" {
		t.Errorf("healthy file: %q", got)
	}

	dest := filepath.Join(t.TempDir(), "x")
	_, errs, code = run(t, nil, "extract", "-q", bad, "1:/data", dest)
	if code != exitCorrupt || !strings.Contains(errs, "random-5M.bin") || !strings.Contains(errs, "chunk") {
		t.Errorf("extract over a bad chunk: exit %d: %s", code, errs)
	}
	if got, _ := os.ReadFile(filepath.Join(dest, "hello.txt")); string(got) != "hello, dimg\n" {
		t.Errorf("extract did not go on past the damaged file")
	}

	mnt := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mnt, 0o755)
	logFile := filepath.Join(t.TempDir(), "mount.log")
	mustRun(t, "mount", "--background", "--log", logFile, bad, mnt)
	defer exec.Command("umount", mnt).Run()
	_, err = os.ReadFile(filepath.Join(mnt, "p1/data/random-5M.bin"))
	if !errorsIs(err, syscall.EIO) {
		t.Errorf("read over a bad chunk through the mount: %v, want EIO", err)
	}
	if got, _ := os.ReadFile(filepath.Join(mnt, "p1/data/hello.txt")); string(got) != "hello, dimg\n" {
		t.Errorf("healthy file through the mount: %q", got)
	}
	if l, _ := os.ReadFile(logFile); !strings.Contains(string(l), fmt.Sprintf("chunk %d", chunk)) || !strings.Contains(string(l), "p1/data/random-5M.bin") {
		t.Errorf("mount log does not name the file and chunk %d:\n%s", chunk, l)
	}
}

func errorsIs(err error, target syscall.Errno) bool {
	var e syscall.Errno
	for err != nil {
		if x, ok := err.(syscall.Errno); ok {
			e = x
			break
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			break
		}
		err = u.Unwrap()
	}
	return e == target
}
