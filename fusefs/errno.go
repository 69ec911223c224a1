package fusefs

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"sync"
	"syscall"

	"github.com/dimg-project/dimg/imagefmt"
)

// toErrno maps an error from a driver or the image reader to the errno the
// kernel gets. Everything not known to mean something else is EIO: a
// damaged filesystem, a chunk failing its checksum, a truncated image.
func toErrno(err error) syscall.Errno {
	var errno syscall.Errno
	switch {
	case err == nil:
		return 0
	case errors.As(err, &errno):
		return errno
	case errors.Is(err, fs.ErrNotExist):
		return syscall.ENOENT
	case errors.Is(err, fs.ErrPermission):
		return syscall.EACCES
	case errors.Is(err, fs.ErrInvalid):
		return syscall.EINVAL
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return syscall.EINTR
	case errors.Is(err, imagefmt.ErrBeyondEnd):
		return syscall.ENOSPC // as a write past the end of a block device
	}
	return syscall.EIO
}

// maxLogged bounds the memory spent remembering which failures were
// logged; past it every failure is logged again (a badly damaged image then
// logs a lot, but memory stays bounded).
const maxLogged = 4096

// errLog maps errors to errnos and logs each EIO once per (operation,
// file, error text), so a program retrying a damaged read does not flood
// the log.
type errLog struct {
	log *slog.Logger

	mu   sync.Mutex
	seen map[string]bool
}

func newErrLog(l *slog.Logger) *errLog { return &errLog{log: l, seen: map[string]bool{}} }

// errno returns toErrno(err), logging it when it is an I/O error.
func (l *errLog) errno(op, name string, err error) syscall.Errno {
	e := toErrno(err)
	if e != syscall.EIO || l == nil || l.log == nil {
		return e
	}
	key := op + "\x00" + name + "\x00" + err.Error()
	l.mu.Lock()
	dup := l.seen[key]
	if !dup {
		if len(l.seen) >= maxLogged {
			clear(l.seen)
		}
		l.seen[key] = true
	}
	l.mu.Unlock()
	if !dup {
		l.log.Error("fusefs: I/O error served as EIO", "op", op, "path", name, "err", err)
	}
	return e
}
