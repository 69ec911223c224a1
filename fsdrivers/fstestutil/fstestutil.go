// Package fstestutil holds test helpers shared by the filesystem drivers:
// CompareTree checks a driver's fsdrivers.Filesystem against the same tree
// as the kernel (or another oracle) shows it in a host directory, usually a
// read-only loop mount of the same image.
//
// Vocabulary: "host" is the oracle's view (a directory on this machine),
// "fsys" the driver under test; "rel" is an io/fs path relative to both
// roots.
package fstestutil

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/fsdrivers"
)

// Options relaxes CompareTreeWith for filesystems that cannot store
// everything. The zero value compares everything exactly, except birth
// times (see CompareBtime).
type Options struct {
	IgnoreOwner  bool          // uid, gid
	IgnorePerm   bool          // permission, setuid, setgid, sticky bits (the type is always compared)
	IgnoreNlink  bool          // link counts
	IgnoreIno    bool          // inode numbers
	IgnoreXattrs bool          // extended attributes
	IgnoreAtime  bool          // access time
	IgnoreCtime  bool          // change time
	IgnoreBlocks bool          // allocated size (Stat.Blocks) of regular files
	MtimeRound   time.Duration // compare mtimes truncated to this (FAT: 2s); 0 = exact
	// HashLimit, when > 0, compares files larger than this by sampled
	// ReadAt calls only instead of hashing all of them (huge sparse files).
	HashLimit int64
	// CompareBtime also compares creation times with statx(2)'s birth
	// time. Off by default: it only means something when hostDir is a
	// mount of the same image (copies made by mcopy, mke2fs -d or cp get
	// new birth times).
	CompareBtime bool
	// Skip, when set, leaves out rel (and everything under it if it is a
	// directory), e.g. "lost+found" or a FAT volume's "System Volume Information".
	Skip func(rel string) bool
}

// CompareTree compares everything: see CompareTreeWith.
func CompareTree(t testing.TB, fsys fsdrivers.Filesystem, hostDir string) int {
	t.Helper()
	return CompareTreeWith(t, fsys, hostDir, Options{})
}

// CompareTreeWith walks hostDir without following symlinks and checks that
// fsys holds the same tree: the same names and entry types in every
// directory (both ways, sorted), and for each entry the type and
// permission bits, size, mtime, atime, ctime, owner, link count, inode
// number, allocated blocks, device number, symlink target, extended
// attributes, and for regular files the SHA-256 of the content read with
// Read plus spot checks with ReadAt. Differences are reported with t.Errorf
// naming the path; it returns the number of entries compared.
func CompareTreeWith(t testing.TB, fsys fsdrivers.Filesystem, hostDir string, o Options) int {
	t.Helper()
	count := 0
	err := filepath.WalkDir(hostDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(hostDir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel != "." && o.Skip != nil && o.Skip(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		count++
		compareEntry(t, fsys, p, rel, o)
		return nil
	})
	if err != nil {
		t.Errorf("walk %s: %v", hostDir, err)
	}
	return count
}

func compareEntry(t testing.TB, fsys fsdrivers.Filesystem, hostPath, rel string, o Options) {
	t.Helper()
	hfi, err := os.Lstat(hostPath)
	if err != nil {
		t.Errorf("%s: host lstat: %v", rel, err)
		return
	}
	fi, err := fsys.Lstat(rel)
	if err != nil {
		t.Errorf("%s: Lstat: %v", rel, err)
		return
	}
	mask := fs.ModeType | fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
	if o.IgnorePerm {
		mask = fs.ModeType
	}
	if got, want := fi.Mode()&mask, hfi.Mode()&mask; got != want {
		t.Errorf("%s: mode %v, host %v", rel, got, want)
		return // nothing below makes sense for a different type
	}
	if hfi.Mode().IsRegular() || hfi.Mode()&fs.ModeSymlink != 0 {
		if fi.Size() != hfi.Size() {
			t.Errorf("%s: size %d, host %d", rel, fi.Size(), hfi.Size())
		}
	}
	if !timeEqual(fi.ModTime(), hfi.ModTime(), o.MtimeRound) {
		t.Errorf("%s: mtime %v, host %v", rel, fi.ModTime(), hfi.ModTime())
	}
	if rel == "." && fi.Name() != "." || rel != "." && fi.Name() != filepath.Base(hostPath) {
		t.Errorf("%s: Name() %q", rel, fi.Name())
	}
	compareStat(t, fi, hfi, rel, o)
	if o.CompareBtime {
		compareBtime(t, fi, hostPath, rel)
	}

	switch {
	case hfi.Mode()&fs.ModeSymlink != 0:
		want, err1 := os.Readlink(hostPath)
		got, err2 := fs.ReadLink(fsys, rel)
		if err1 != nil || err2 != nil || got != want {
			t.Errorf("%s: ReadLink %q (%v), host %q (%v)", rel, got, err2, want, err1)
		}
	case hfi.IsDir():
		compareDir(t, fsys, hostPath, rel, o)
	case hfi.Mode().IsRegular():
		compareContent(t, fsys, hostPath, rel, hfi.Size(), o.HashLimit)
	}
	if !o.IgnoreXattrs {
		compareXattrs(t, fsys, hostPath, rel)
	}
}

func timeEqual(a, b time.Time, round time.Duration) bool {
	if round > 0 {
		return a.Truncate(round).Equal(b.Truncate(round))
	}
	return a.Equal(b)
}

func compareStat(t testing.TB, fi, hfi fs.FileInfo, rel string, o Options) {
	t.Helper()
	st, ok := fi.Sys().(*fsdrivers.Stat)
	if !ok {
		t.Errorf("%s: Sys() is %T, want *fsdrivers.Stat", rel, fi.Sys())
		return
	}
	hs, ok := hfi.Sys().(*syscall.Stat_t)
	if !ok {
		return
	}
	if !o.IgnoreOwner && (st.Uid != hs.Uid || st.Gid != hs.Gid) {
		t.Errorf("%s: owner %d:%d, host %d:%d", rel, st.Uid, st.Gid, hs.Uid, hs.Gid)
	}
	if !o.IgnoreNlink && uint64(st.Nlink) != uint64(hs.Nlink) {
		t.Errorf("%s: nlink %d, host %d", rel, st.Nlink, hs.Nlink)
	}
	if !o.IgnoreIno && st.Ino != hs.Ino {
		t.Errorf("%s: ino %d, host %d", rel, st.Ino, hs.Ino)
	}
	if hfi.Mode()&fs.ModeDevice != 0 && st.Rdev != uint64(hs.Rdev) {
		t.Errorf("%s: rdev %#x, host %#x", rel, st.Rdev, hs.Rdev)
	}
	if !st.Mtime.Equal(fi.ModTime()) {
		t.Errorf("%s: Stat.Mtime %v differs from ModTime %v", rel, st.Mtime, fi.ModTime())
	}
	if !o.IgnoreAtime {
		if ha := time.Unix(hs.Atim.Unix()); !st.Atime.Equal(ha) {
			t.Errorf("%s: atime %v, host %v", rel, st.Atime, ha)
		}
	}
	if !o.IgnoreCtime {
		if hc := time.Unix(hs.Ctim.Unix()); !st.Ctime.Equal(hc) {
			t.Errorf("%s: ctime %v, host %v", rel, st.Ctime, hc)
		}
	}
	if hfi.Mode().IsRegular() && st.Blocks != hs.Blocks && !o.IgnoreBlocks {
		t.Errorf("%s: blocks %d, host %d", rel, st.Blocks, hs.Blocks)
	}
}

// compareBtime checks Stat.Btime against statx(2)'s birth time, when the
// host filesystem reports one.
func compareBtime(t testing.TB, fi fs.FileInfo, hostPath, rel string) {
	t.Helper()
	st, ok := fi.Sys().(*fsdrivers.Stat)
	if !ok {
		return
	}
	var sx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, hostPath, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BTIME, &sx); err != nil || sx.Mask&unix.STATX_BTIME == 0 {
		return
	}
	if hb := time.Unix(sx.Btime.Sec, int64(sx.Btime.Nsec)); !st.Btime.Equal(hb) {
		t.Errorf("%s: btime %v, host %v", rel, st.Btime, hb)
	}
}

func compareDir(t testing.TB, fsys fsdrivers.Filesystem, hostPath, rel string, o Options) {
	t.Helper()
	hents, err := os.ReadDir(hostPath)
	if err != nil {
		t.Errorf("%s: host readdir: %v", rel, err)
		return
	}
	ents, err := fsys.ReadDir(rel)
	if err != nil {
		t.Errorf("%s: ReadDir: %v", rel, err)
		return
	}
	skip := func(es []fs.DirEntry) []fs.DirEntry {
		return slices.DeleteFunc(es, func(e fs.DirEntry) bool {
			return o.Skip != nil && o.Skip(path.Join(rel, e.Name()))
		})
	}
	ents, hents = skip(ents), skip(hents)
	names := func(es []fs.DirEntry) []string {
		out := make([]string, len(es))
		for i, e := range es {
			out[i] = e.Name()
		}
		return out
	}
	got, want := names(ents), names(hents)
	if !slices.IsSorted(got) {
		t.Errorf("%s: ReadDir not sorted", rel)
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s: ReadDir names differ:\n only ours: %v\n only host: %v", rel, missing(got, want), missing(want, got))
		return
	}
	for i, e := range ents {
		if e.Type() != hents[i].Type() {
			t.Errorf("%s/%s: DirEntry type %v, host %v", rel, e.Name(), e.Type(), hents[i].Type())
		}
	}
}

func missing(a, b []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	if len(out) > 10 {
		out = append(out[:10], "...")
	}
	return out
}

func compareContent(t testing.TB, fsys fsdrivers.Filesystem, hostPath, rel string, size, hashLimit int64) {
	t.Helper()
	hf, err := os.Open(hostPath)
	if err != nil {
		t.Errorf("%s: host open: %v", rel, err)
		return
	}
	defer hf.Close()
	f, err := fsys.Open(rel)
	if err != nil {
		t.Errorf("%s: Open: %v", rel, err)
		return
	}
	defer f.Close()
	if hashLimit <= 0 || size <= hashLimit {
		hh := sha256.New()
		if _, err := io.Copy(hh, hf); err != nil {
			t.Errorf("%s: host read: %v", rel, err)
			return
		}
		h := sha256.New()
		n, err := io.Copy(h, struct{ io.Reader }{f})
		if err != nil || n != size {
			t.Errorf("%s: read %d bytes of %d: %v", rel, n, size, err)
			return
		}
		if !bytes.Equal(h.Sum(nil), hh.Sum(nil)) {
			t.Errorf("%s: content differs (sha256)", rel)
			return
		}
	}
	ra, ok := f.(io.ReaderAt)
	if !ok {
		t.Errorf("%s: open file is %T, not an io.ReaderAt", rel, f)
		return
	}
	// Spot checks at unaligned offsets, including across the end.
	offs := []int64{0, 1, size / 3, size/2 + 4093, size - 5000, size - 1}
	if hashLimit > 0 && size > hashLimit {
		for i := int64(1); i < 64; i++ {
			offs = append(offs, size/64*i-i*4097)
		}
	}
	for _, off := range offs {
		if off < 0 || off >= size {
			continue
		}
		want := make([]byte, 9000)
		wn, _ := hf.ReadAt(want, off)
		got := make([]byte, 9000)
		gn, err := ra.ReadAt(got, off)
		if gn != wn || !bytes.Equal(got[:gn], want[:wn]) || (gn < len(got) && err != io.EOF) {
			t.Errorf("%s: ReadAt(%d): %d bytes (%v), host %d bytes, equal=%v", rel, off, gn, err, wn, bytes.Equal(got[:gn], want[:wn]))
		}
	}
}

func compareXattrs(t testing.TB, fsys fsdrivers.Filesystem, hostPath, rel string) {
	t.Helper()
	want, err := hostXattrs(hostPath)
	if err != nil {
		t.Errorf("%s: host xattrs: %v", rel, err)
		return
	}
	got, err := fsdrivers.Xattrs(fsys, rel)
	if err != nil {
		t.Errorf("%s: Xattrs: %v", rel, err)
		return
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || !bytes.Equal(g, v) {
			t.Errorf("%s: xattr %s = %q (present %v), host %q", rel, k, g, ok, v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: xattr %s not on host", rel, k)
		}
	}
}

// hostXattrs lists a path's extended attributes without following symlinks.
func hostXattrs(p string) (map[string][]byte, error) {
	m := map[string][]byte{}
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if errors.Is(err, unix.ENOTSUP) {
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		val := make([]byte, 64<<10)
		vn, err := unix.Lgetxattr(p, name, val)
		if err != nil {
			return nil, err
		}
		m[name] = val[:vn]
	}
	return m, nil
}
