package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// offlineDiffer applies random offline edit commands (dimg add, put, rm,
// mkdir, mv, chmod, chown, ln) to an image and the same changes to the
// mirror; both must succeed or both fail.
type offlineDiffer struct {
	*differ
	img string
}

func newOfflineDiffer(t *testing.T, img, mirror string, fat bool, limit, seed int64) *offlineDiffer {
	return &offlineDiffer{differ: newDiffer(t, "", mirror, fat, limit, seed), img: img}
}

func spec(rel string) string { return "1:/" + filepath.ToSlash(rel) }

// do runs one dimg command and the mirror's equivalent, comparing success.
func (o *offlineDiffer) do(desc string, stdin []byte, args []string, mirror func() error) bool {
	o.t.Helper()
	o.op++
	o.trace = append(o.trace, desc)
	var in *bytes.Reader
	if stdin != nil {
		in = bytes.NewReader(stdin)
	}
	var errs string
	var code int
	if in != nil {
		_, errs, code = run(o.t, in, args...)
	} else {
		_, errs, code = run(o.t, nil, args...)
	}
	merr := mirror()
	if (code == 0) != (merr == nil) {
		o.t.Errorf("seed %d command %d %s: dimg exit %d (%s), mirror %v\nlast:\n  %s", o.seed, o.op, desc, code, strings.TrimSpace(errs), merr, strings.Join(o.trace[max(0, len(o.trace)-10):], "\n  "))
		return false
	}
	if code != 0 && code != 1 {
		o.t.Errorf("%s: exit %d: %s", desc, code, errs)
		return false
	}
	return true
}

func (o *offlineDiffer) step() bool {
	files, dirs, all, used := o.entries()
	dir := o.pick(dirs)
	newPath := filepath.Join(dir, o.name())
	m := func(rel string) string { return filepath.Join(o.b, rel) }
	r := o.rng.Intn(100)
	if used > o.limit && r < 30 {
		r = 30 + o.rng.Intn(10)
	}
	switch {
	case r < 20: // put: a new file, or replace one (--force)
		p, force := newPath, false
		if o.rng.Intn(3) == 0 && len(files) > 0 {
			p, force = o.pick(files), true
		}
		b := o.data(o.size())
		args := []string{"put", "-q", o.img, spec(p)}
		if force {
			args = append(args, "--force")
		}
		return o.do("put "+p, b, args, func() error {
			if _, err := os.Lstat(m(p)); err == nil && !force {
				return fs.ErrExist
			}
			return os.WriteFile(m(p), b, 0o644) // as root: 0:0 unless a setgid directory says otherwise
		})
	case r < 30: // add a local tree
		src := o.localTree()
		return o.do("add "+dir, nil, []string{"add", "-q", o.img, src, spec(dir) + "/"}, func() error {
			dst := m(filepath.Join(dir, filepath.Base(src)))
			if _, err := os.Lstat(dst); err == nil {
				return fs.ErrExist
			}
			return copyTree(src, dst, o.fat)
		})
	case r < 40: // rm, rm -r
		p := o.pick(all)
		if p == "." {
			return true
		}
		if o.rng.Intn(2) == 0 {
			return o.do("rm -r "+p, nil, []string{"rm", "-q", "-r", o.img, spec(p)}, func() error {
				if _, err := os.Lstat(m(p)); err != nil {
					return err
				}
				return os.RemoveAll(m(p))
			})
		}
		return o.do("rm "+p, nil, []string{"rm", "-q", o.img, spec(p)}, func() error { return os.Remove(m(p)) })
	case r < 50: // mkdir -p
		p := filepath.Join(newPath, o.name())
		return o.do("mkdir -p "+p, nil, []string{"mkdir", "-q", "-p", o.img, spec(p)}, func() error {
			return os.MkdirAll(m(p), 0o755)
		})
	case r < 62: // mv
		src, dst := o.pick(all), newPath
		if src == "." {
			return true
		}
		force := o.rng.Intn(2) == 0
		if o.rng.Intn(3) == 0 {
			dst = o.pick(append(all, "."))
		}
		args := []string{"mv", "-q", o.img, spec(src), spec(dst)}
		if force {
			args = append(args, "--force")
		}
		return o.do(fmt.Sprintf("mv %s %s (force %v)", src, dst, force), nil, args, func() error {
			if _, err := os.Lstat(m(src)); err != nil {
				return err
			}
			to := dst
			if fi, err := os.Stat(m(dst)); err == nil && fi.IsDir() {
				to = filepath.Join(dst, filepath.Base(src))
			}
			if _, err := os.Lstat(m(to)); err == nil && !force {
				return fs.ErrExist
			}
			return unix.Renameat2(unix.AT_FDCWD, m(src), unix.AT_FDCWD, m(to), 0)
		})
	case o.fat:
		return true
	case r < 72: // chmod, chown
		p := o.pick(all)
		mode := o.rng.Intn(0o7777 + 1)
		if o.rng.Intn(2) == 0 {
			return o.do(fmt.Sprintf("chmod %o %s", mode, p), nil, []string{"chmod", "-q", o.img, fmt.Sprintf("%o", mode), spec(p)}, func() error {
				return os.Chmod(m(p), fs.FileMode(mode&0o777)|modeBits(mode))
			})
		}
		uid, gid := o.rng.Intn(70000), o.rng.Intn(70000)
		return o.do(fmt.Sprintf("chown %d:%d %s", uid, gid, p), nil, []string{"chown", "-q", o.img, fmt.Sprintf("%d:%d", uid, gid), spec(p)}, func() error {
			return os.Lchown(m(p), uid, gid)
		})
	case r < 86: // ln
		f := o.pick(files)
		return o.do("ln "+f+" "+newPath, nil, []string{"ln", "-q", o.img, spec(f), spec(newPath)}, func() error {
			if err := os.Link(m(f), m(newPath)); err != nil {
				return err
			}
			return nil
		})
	default: // ln -s
		target := o.pick(append(all, "nowhere"))
		return o.do("ln -s "+newPath, nil, []string{"ln", "-q", "-s", o.img, target, spec(newPath)}, func() error {
			return os.Symlink(target, m(newPath))
		})
	}
}

// modeBits turns setuid, setgid and sticky bits into Go's mode bits.
func modeBits(m int) fs.FileMode {
	var f fs.FileMode
	if m&0o4000 != 0 {
		f |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		f |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		f |= fs.ModeSticky
	}
	return f
}

// localTree makes a small local tree to add: files with xattrs, a
// symlink, a hard link, a subdirectory.
func (o *offlineDiffer) localTree() string {
	root := filepath.Join(o.t.TempDir(), "t"+o.name())
	os.MkdirAll(filepath.Join(root, "sub"), 0o750)
	for i := range 1 + o.rng.Intn(4) {
		p := filepath.Join(root, fmt.Sprintf("f%d", i))
		os.WriteFile(p, o.data(o.size()), 0o640)
		if !o.fat {
			unix.Lsetxattr(p, "user.origin", []byte(o.name()), 0)
		}
	}
	os.WriteFile(filepath.Join(root, "sub", "s"), o.data(100), 0o600)
	if !o.fat {
		os.Symlink("../f0", filepath.Join(root, "sub", "link"))
		os.Link(filepath.Join(root, "f0"), filepath.Join(root, "sub", "hard"))
	}
	return root
}

// copyTree is cp -a for the mirror (owners, modes, xattrs, links kept).
func copyTree(src, dst string, fat bool) error {
	args := []string{"-a", src, dst}
	if fat {
		args = []string{"-r", src, dst}
	}
	out, err := runCmd("cp", args...)
	if err != nil {
		return errors.New(out)
	}
	return nil
}

func runCmd(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
