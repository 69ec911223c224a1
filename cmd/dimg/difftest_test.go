package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The randomized differential test of the writers: the same random
// operations go to a filesystem served by dimg and to a mirror (a kernel
// loop mount of a raw copy for ext; a host directory for FAT), and the
// two trees must end equal. differ generates and applies the operations;
// the tests (edit_diff_test.go) run it through the rw mount and the
// offline commands.

// differ applies random operations to two roots, a (dimg) and b (the
// mirror), comparing each one's outcome (the errno) on both.
type differ struct {
	t    *testing.T
	rng  *rand.Rand
	seed int64
	a, b string
	fat  bool // FAT: no links, owners, modes, xattrs, special files; names case-insensitive
	// noXattr: the writer does not write xattrs yet (found by a probe,
	// logged): xattr operations are left out rather than failing.
	noXattr bool
	// bigDirs left: growing a directory past the htree thresholds costs
	// hundreds of operations; a run does it a few times, not on 3% of
	// its steps.
	bigDirs int
	limit   int64 // bytes of file data to stay under (ENOSPC would differ)
	now     time.Time
	op      int
	trace   []string
}

func newDiffer(t *testing.T, a, b string, fat bool, limit int64, seed int64) *differ {
	t.Logf("differential seed %d (replay: DIMG_DIFF_SEED=%d)", seed, seed)
	d := &differ{t: t, rng: rand.New(rand.NewSource(seed)), seed: seed, a: a, b: b, fat: fat, limit: limit,
		now: time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC), bigDirs: 1 + diffOps(200)/400}
	if a != "" && !fat {
		err := unix.Setxattr(a, "user.dimg-probe", []byte("x"), 0)
		if errors.Is(err, unix.EOPNOTSUPP) {
			t.Logf("the writer does not write xattrs (%v): xattr operations left out", err)
			d.noXattr = true
		} else {
			unix.Removexattr(a, "user.dimg-probe")
		}
	}
	return d
}

// entries lists the mirror's paths (relative), by kind.
func (d *differ) entries() (files, dirs, all []string, used int64) {
	dirs = []string{"."}
	filepath.WalkDir(d.b, func(p string, e fs.DirEntry, err error) error {
		if err != nil || p == d.b {
			return nil
		}
		rel, _ := filepath.Rel(d.b, p)
		if rel == "lost+found" || strings.HasPrefix(rel, "lost+found/") {
			if e.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		all = append(all, rel)
		switch {
		case e.IsDir():
			dirs = append(dirs, rel)
		case e.Type().IsRegular():
			files = append(files, rel)
			if fi, err := e.Info(); err == nil {
				used += fi.Size()
			}
		}
		return nil
	})
	return files, dirs, all, used
}

func (d *differ) pick(list []string) string {
	if len(list) == 0 {
		return "."
	}
	return list[d.rng.Intn(len(list))]
}

func (d *differ) name() string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	n := 1 + d.rng.Intn(12)
	if d.rng.Intn(20) == 0 {
		n = 60 + d.rng.Intn(150)
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = letters[d.rng.Intn(len(letters))]
	}
	return string(b)
}

func (d *differ) data(n int) []byte {
	b := make([]byte, n)
	d.rng.Read(b)
	if d.rng.Intn(3) == 0 {
		// Compressible runs, and zeros.
		for i := 0; i < n; i += 4096 {
			if d.rng.Intn(2) == 0 {
				clear(b[i:min(i+4096, n)])
			}
		}
	}
	return b
}

// size is a file size: mostly small, sometimes crossing many chunks.
func (d *differ) size() int {
	switch d.rng.Intn(10) {
	case 0:
		return d.rng.Intn(int(min(d.limit/8, 6<<20)) + 1)
	case 1, 2:
		return d.rng.Intn(256 << 10)
	}
	return d.rng.Intn(8 << 10)
}

// errnoOf reduces an error to its errno (0 for none).
func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if err == nil {
		return 0
	}
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}

// apply runs fn on both roots and fails the test when the outcomes differ.
func (d *differ) apply(desc string, fn func(root string) error) bool {
	d.t.Helper()
	d.op++
	d.trace = append(d.trace, desc)
	ea, eb := errnoOf(fn(d.a)), errnoOf(fn(d.b))
	if ea != eb {
		d.t.Errorf("seed %d op %d %s: dimg %v, mirror %v\nlast ops:\n  %s", d.seed, d.op, desc, ea, eb, strings.Join(d.trace[max(0, len(d.trace)-15):], "\n  "))
		return false
	}
	return true
}

// times sets p's times the same on both sides, so they can be compared.
func (d *differ) stamp(rel string) {
	d.now = d.now.Add(time.Duration(1+d.rng.Intn(5000)) * time.Second)
	ts := []unix.Timespec{unix.NsecToTimespec(d.now.UnixNano()), unix.NsecToTimespec(d.now.UnixNano())}
	if d.fat {
		ts[0] = unix.NsecToTimespec(d.now.Truncate(24 * time.Hour).UnixNano())
	}
	for _, root := range []string{d.a, d.b} {
		unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(root, rel), ts, unix.AT_SYMLINK_NOFOLLOW)
	}
}

// step applies one random operation.
func (d *differ) step() bool {
	files, dirs, all, used := d.entries()
	dir := d.pick(dirs)
	newPath := filepath.Join(dir, d.name())
	full := used > d.limit
	r := d.rng.Intn(100)
	if full && r < 40 {
		r = 40 + d.rng.Intn(10) // unlink or truncate down
	}
	j := func(root, rel string) string { return filepath.Join(root, rel) }
	ok := true
	switch {
	case r < 14: // create with content
		b := d.data(d.size())
		ok = d.apply("create "+newPath, func(root string) error {
			return os.WriteFile(j(root, newPath), b, 0o644)
		})
		d.stamp(newPath)
		d.stamp(dir)
	case r < 22: // append
		f := d.pick(files)
		b := d.data(d.size() / 4)
		ok = d.apply("append "+f, func(root string) error {
			fd, err := os.OpenFile(j(root, f), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			defer fd.Close()
			_, err = fd.Write(b)
			return err
		})
		d.stamp(f)
	case r < 30: // overwrite in the middle, or past the end (a hole)
		f := d.pick(files)
		var off int64
		if fi, err := os.Stat(j(d.b, f)); err == nil && fi.Size() > 0 {
			off = d.rng.Int63n(fi.Size() + fi.Size()/2 + 1)
		}
		b := d.data(1 + d.rng.Intn(64<<10))
		ok = d.apply(fmt.Sprintf("pwrite %s %d+%d", f, off, len(b)), func(root string) error {
			fd, err := os.OpenFile(j(root, f), os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer fd.Close()
			_, err = fd.WriteAt(b, off)
			return err
		})
		d.stamp(f)
	case r < 40: // truncate up (a hole) or down
		f := d.pick(files)
		n := d.rng.Int63n(int64(d.size()) + 1)
		if full {
			n = 0
		}
		ok = d.apply(fmt.Sprintf("truncate %s %d", f, n), func(root string) error { return os.Truncate(j(root, f), n) })
		d.stamp(f)
	case r < 50: // unlink
		f := d.pick(all)
		if f == "." {
			break
		}
		ok = d.apply("unlink "+f, func(root string) error { return syscall.Unlink(j(root, f)) })
		d.stamp(filepath.Dir(f))
	case r < 58: // mkdir
		ok = d.apply("mkdir "+newPath, func(root string) error { return os.Mkdir(j(root, newPath), 0o755) })
		d.stamp(newPath)
		d.stamp(dir)
	case r < 63: // rmdir
		dd := d.pick(dirs)
		if dd == "." {
			break
		}
		ok = d.apply("rmdir "+dd, func(root string) error { return syscall.Rmdir(j(root, dd)) })
		d.stamp(filepath.Dir(dd))
	case r < 73: // rename, across directories and over entries
		src := d.pick(all)
		if src == "." {
			break
		}
		dst := newPath
		if d.rng.Intn(3) == 0 {
			dst = d.pick(all)
		}
		ok = d.apply("rename "+src+" "+dst, func(root string) error { return syscall.Rename(j(root, src), j(root, dst)) })
		d.stamp(filepath.Dir(src))
		d.stamp(filepath.Dir(dst))
	case d.fat && (r < 97 || d.bigDirs == 0):
		// FAT has none of what follows; a read-back instead.
		f := d.pick(files)
		ok = d.apply("read "+f, func(root string) error { _, err := os.ReadFile(j(root, f)); return err })
	case r < 78: // symlink
		// Relative targets without "..": followed on the mirror too,
		// they must never leave the tree.
		target := d.pick(append(all, "nowhere", strings.Repeat("long/", 30)+"target"))
		ok = d.apply("symlink "+newPath, func(root string) error { return os.Symlink(target, j(root, newPath)) })
		d.stamp(newPath)
		d.stamp(dir)
	case r < 83: // hard link
		f := d.pick(files)
		ok = d.apply("link "+f+" "+newPath, func(root string) error { return os.Link(j(root, f), j(root, newPath)) })
		d.stamp(dir)
		d.stamp(newPath)
	case r < 88: // chmod, chown
		p := d.pick(all)
		if fi, err := os.Lstat(filepath.Join(d.b, p)); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			break // chmod would follow it
		}
		mode := uint32(d.rng.Intn(0o7777 + 1))
		uid, gid := d.rng.Intn(70000), d.rng.Intn(70000)
		ok = d.apply(fmt.Sprintf("chmod %o %s", mode, p), func(root string) error {
			return unix.Fchmodat(unix.AT_FDCWD, j(root, p), mode, 0)
		}) && d.apply(fmt.Sprintf("lchown %d:%d %s", uid, gid, p), func(root string) error {
			return os.Lchown(j(root, p), uid, gid)
		})
	case r < 95 && d.noXattr:
	case r < 95: // xattrs
		p := d.pick(all)
		name := "user." + d.name()
		val := d.data(d.rng.Intn(300))
		if d.rng.Intn(3) == 0 {
			ok = d.apply("removexattr "+p, func(root string) error {
				names, _ := listXattr(j(root, p))
				if len(names) == 0 {
					return nil
				}
				return unix.Lremovexattr(j(root, p), names[0])
			})
		} else {
			ok = d.apply("setxattr "+p+" "+name, func(root string) error { return unix.Lsetxattr(j(root, p), name, val, 0) })
		}
	case r < 97 || d.bigDirs == 0: // fifo
		ok = d.apply("mkfifo "+newPath, func(root string) error { return unix.Mkfifo(j(root, newPath), 0o640) })
		d.stamp(newPath)
		d.stamp(dir)
	default: // grow a directory past the htree thresholds, then shrink it
		d.bigDirs--
		big := filepath.Join(dir, "big-"+d.name())
		ok = d.apply("mkdir "+big, func(root string) error { return os.Mkdir(j(root, big), 0o755) })
		var names []string
		for range 400 + d.rng.Intn(400) {
			names = append(names, d.name()+strings.Repeat("x", d.rng.Intn(40)))
		}
		for _, n := range names {
			p := filepath.Join(big, n)
			ok = ok && d.apply("create "+p, func(root string) error { return os.WriteFile(j(root, p), nil, 0o600) })
		}
		for i, n := range names {
			if i%5 != 0 {
				p := filepath.Join(big, n)
				ok = ok && d.apply("unlink "+p, func(root string) error {
					err := syscall.Unlink(j(root, p))
					if errors.Is(err, syscall.ENOENT) {
						return nil // a duplicate name
					}
					return err
				})
			}
		}
		for i, n := range names {
			if i%5 == 0 {
				d.stamp(filepath.Join(big, n))
			}
		}
		d.stamp(big)
		d.stamp(dir)
	}
	return ok
}

func listXattr(p string) ([]string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out, nil
}

// treeDesc describes every entry under root the way the comparison needs.
func treeDesc(t *testing.T, root string, fat bool) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "lost+found" {
			return filepath.SkipDir
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		typ := st.Mode & unix.S_IFMT
		var b strings.Builder
		fmt.Fprintf(&b, "type %o", typ)
		mt := time.Unix(st.Mtim.Unix())
		if fat {
			if rel != "." { // FAT's root directory has no times
				fmt.Fprintf(&b, " mtime~%d", mt.Unix()/2)
			}
		} else {
			fmt.Fprintf(&b, " mode %o uid %d gid %d mtime %s", st.Mode&0o7777, st.Uid, st.Gid, mt.UTC().Format(time.RFC3339Nano))
			if typ != unix.S_IFDIR {
				fmt.Fprintf(&b, " nlink %d", st.Nlink)
			}
			names, _ := listXattr(p)
			for _, n := range names {
				v := make([]byte, 64<<10)
				k, _ := unix.Lgetxattr(p, n, v)
				fmt.Fprintf(&b, " xattr %s=%x", n, sha256.Sum256(v[:max(k, 0)]))
			}
		}
		switch typ {
		case unix.S_IFREG:
			data, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("read %s: %w", p, err)
			}
			fmt.Fprintf(&b, " size %d sha %x", st.Size, sha256.Sum256(data))
		case unix.S_IFLNK:
			tgt, _ := os.Readlink(p)
			fmt.Fprintf(&b, " -> %q", tgt)
		}
		out[rel] = b.String()
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return out
}

// compareDesc fails the test on every difference between two trees.
func compareDesc(t *testing.T, what string, a, b map[string]string) {
	t.Helper()
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	bad := 0
	for _, k := range keys {
		if a[k] != b[k] {
			if bad++; bad <= 20 {
				t.Errorf("%s: %s:\n  dimg   %s\n  mirror %s", what, k, a[k], b[k])
			}
		}
	}
	if bad > 20 {
		t.Errorf("%s: %d differences", what, bad)
	}
}
