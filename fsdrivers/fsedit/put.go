package fsedit

import (
	"bytes"
	"errors"
	"io"
	"syscall"
	"time"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/internal/progress"
)

// PutOptions configure Put; the zero value makes a file of mode 0644
// owned by root, and refuses to replace one.
type PutOptions struct {
	Force bool
	Mode  *uint32
	Owner *fsdrivers.Owner
	// Mtime, if set, is the file's time; else now.
	Mtime    *time.Time
	Progress progress.Reporter
}

// Put writes what r yields as the regular file p (its parent must exist).
// Blocks of zeros are left as holes where the filesystem has them. An
// existing p is replaced only with Force (a regular file keeps its node,
// links, owner and mode unless given: it is truncated and rewritten);
// a directory there is refused. The size is not known in advance, so
// ENOSPC can come mid-way: the caller discards the changes.
func (f *FS) Put(p string, r io.Reader, opt PutOptions) (int64, error) {
	d, name, err := f.parent("put", p)
	if err != nil {
		return 0, err
	}
	mode := uint32(0o644)
	if opt.Mode != nil {
		mode = *opt.Mode & fsdrivers.ModePerm
	}
	var own fsdrivers.Owner
	if opt.Owner != nil {
		own = *opt.Owner
	}
	a, err := f.W.Lookup(d.Ino, name)
	switch {
	case err == nil && !opt.Force:
		return 0, f.pathErr("put", p, existsErr{syscall.EEXIST})
	case err == nil && IsDir(a):
		return 0, f.pathErr("put", p, syscall.EISDIR)
	case err == nil && isType(a, fsdrivers.ModeFile):
		zero := int64(0)
		set := fsdrivers.SetAttr{Size: &zero, Mode: opt.Mode}
		if opt.Owner != nil {
			set.Uid, set.Gid = &own.Uid, &own.Gid
		}
		if a, err = f.W.Setattr(a.Ino, set); err != nil {
			return 0, f.pathErr("truncate", p, err)
		}
	case err == nil:
		if err := f.W.Unlink(d.Ino, name); err != nil {
			return 0, f.pathErr("replace", p, err)
		}
		fallthrough
	case errors.Is(err, syscall.ENOENT) || err == nil:
		if opt.Owner == nil {
			own, _ = Inherit(d, own, mode, false)
		}
		if a, err = f.W.Create(d.Ino, name, fsdrivers.ModeFile|mode, 0, own); err != nil {
			return 0, f.pathErr("create", p, err)
		}
	default:
		return 0, f.pathErr("put", p, err)
	}
	prog := progress.Or(opt.Progress)
	prog.Start("writing", 0)
	n, err := f.writeSparse(a.Ino, r, prog)
	if err != nil {
		return n, f.pathErr("write", p, err)
	}
	if opt.Mtime != nil {
		if _, err := f.W.Setattr(a.Ino, fsdrivers.SetAttr{Atime: opt.Mtime, Mtime: opt.Mtime}); err != nil && !noSupport(err) {
			return n, f.pathErr("utimes", p, err)
		}
	}
	return n, nil
}

// writeSparse copies r into file ino from offset 0, skipping blocks of
// zeros (4 KiB aligned) so they stay holes, and sets the final size.
func (f *FS) writeSparse(ino uint64, r io.Reader, prog progress.Reporter) (int64, error) {
	const blk = 4096
	buf := make([]byte, 1<<20)
	var off int64
	for {
		n, rerr := io.ReadFull(r, buf)
		for i := 0; i < n; {
			j := min(i+blk, n)
			if isZero(buf[i:j]) {
				i = j
				continue
			}
			// Extend over the following data blocks to write them
			// in one call.
			k := j
			for k < n && !isZero(buf[k:min(k+blk, n)]) {
				k = min(k+blk, n)
			}
			if _, err := f.W.WriteAt(ino, buf[i:k], off+int64(i)); err != nil {
				return off + int64(i), err
			}
			i = k
		}
		off += int64(n)
		prog.Add(int64(n))
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return off, rerr
		}
	}
	if a, err := f.W.Getattr(ino); err != nil {
		return off, err
	} else if a.Size != off {
		if _, err := f.W.Setattr(ino, fsdrivers.SetAttr{Size: &off}); err != nil {
			return off, err
		}
	}
	return off, nil
}

var zeros [4096]byte

func isZero(b []byte) bool { return bytes.Equal(b, zeros[:len(b)]) }
