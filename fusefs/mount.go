package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/dimg-project/dimg/fsdrivers/disk"
)

// Sentinel errors of Mount.
var (
	// ErrMountpoint: the mountpoint is missing, not a directory, not empty,
	// or would hide the image.
	ErrMountpoint = errors.New("fusefs: unusable mountpoint")
	// ErrBusy: Unmount failed because files under the mount are in use.
	ErrBusy = errors.New("fusefs: mountpoint busy")
)

// ioSize is the largest read the kernel sends (MaxWrite also bounds reads)
// and its readahead: 1 MiB requests read at about twice the speed of the
// default 128 KiB (see FINDINGS.md, go-fuse).
const ioSize = 1 << 20

// readAheadKB is written to the mount's bdi so that the kernel's readahead
// actually issues ioSize requests; the bdi default of 128 caps them.
const readAheadKB = 4096

const defaultCacheTimeout = time.Hour

// Mounted is a served mount.
type Mounted struct {
	dir    string
	server *fuse.Server
	log    *slog.Logger

	once sync.Once
	done chan struct{}
}

// CheckMountpoint refuses a mountpoint that would not work or would
// deadlock: missing, not a directory, not empty, or an ancestor of (or
// equal to) any of the given files — mounting there would hide them, and
// a later open of the image by path would come back into this very mount.
func CheckMountpoint(dir string, files ...string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMountpoint, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s is not a directory", ErrMountpoint, dir)
	}
	rdir, err := realPath(dir)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMountpoint, err)
	}
	for _, file := range files {
		if file == "" {
			continue
		}
		rf, err := realPath(file)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrMountpoint, err)
		}
		if rel, err := filepath.Rel(rdir, rf); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
			return fmt.Errorf("%w: %s is inside the mountpoint %s; mounting there would hide it (and deadlock on reopening it)", ErrMountpoint, file, dir)
		}
	}
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMountpoint, err)
	}
	names, err := f.Readdirnames(1)
	f.Close()
	if len(names) > 0 {
		return fmt.Errorf("%w: %s is not empty", ErrMountpoint, dir)
	}
	if err != nil && err != io.EOF {
		return fmt.Errorf("%w: %w", ErrMountpoint, err)
	}
	return nil
}

func realPath(p string) (string, error) {
	a, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(a)
}

// MountTree mounts root (from NewRoot) on dir and returns once the kernel
// serves it. Cancelling ctx unmounts (retrying while the mount is busy).
func MountTree(ctx context.Context, dir string, root fs.InodeEmbedder, opt Options) (*Mounted, error) {
	if err := CheckMountpoint(dir, opt.ImagePath); err != nil {
		return nil, err
	}
	timeout := opt.CacheTimeout
	if timeout <= 0 {
		timeout = defaultCacheTimeout
	}
	fsName := "dimg"
	if opt.ImagePath != "" {
		if abs, err := filepath.Abs(opt.ImagePath); err == nil {
			// fusermount splits options at commas.
			fsName = "dimg:" + strings.ReplaceAll(abs, ",", "_")
		}
	}
	asRoot := os.Geteuid() == 0
	roOpt, roFlag := []string{"ro"}, uintptr(syscall.MS_RDONLY)
	if opt.ReadWrite {
		roOpt, roFlag = nil, 0
	}
	mo := fuse.MountOptions{
		FsName:               fsName,
		Name:                 "dimg",
		Options:              roOpt,
		DirectMount:          asRoot,
		DirectMountFlags:     roFlag | syscall.MS_NOSUID | syscall.MS_NODEV,
		MaxWrite:             ioSize,
		MaxReadAhead:         ioSize,
		DisableSplice:        true,
		EnableSymlinkCaching: true,
		AllowOther:           opt.AllowOther,
		Debug:                opt.Debug,
		Logger:               goLogger(opt.Logger),
	}
	if opt.AllowOther {
		mo.Options = append(mo.Options, "default_permissions")
	}
	fopt := &fs.Options{
		MountOptions:    mo,
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		NullPermissions: true, // show a mode of 0 as 0, not as 0644
		Logger:          goLogger(opt.Logger),
	}
	rdir, rerr := realPath(dir) // before mounting: afterwards, resolving dir asks this process
	server, err := serve(dir, root, fopt, opt.SelfAccess)
	if err != nil {
		return nil, fmt.Errorf("fusefs: mount %s: %w", dir, err)
	}
	m := &Mounted{dir: dir, server: server, log: opt.Logger, done: make(chan struct{})}
	if asRoot && rerr == nil {
		tuneReadAhead(rdir)
	}
	go func() {
		server.Wait()
		// The kernel forgets nothing at unmount: drop what it held
		// before anyone writes the filesystems out.
		releaseTrees(root)
		close(m.done)
	}()
	go m.unmountOnCancel(ctx)
	return m, nil
}

// Mount serves disk (size bytes) and its partitions on dir; see NewRoot
// and MountTree.
func Mount(ctx context.Context, dir string, d io.ReaderAt, size int64, parts []disk.Part, opt Options) (*Mounted, error) {
	if _, ok := d.(WritableDisk); opt.ReadWrite && !ok {
		return nil, ErrNotWritable
	}
	return MountTree(ctx, dir, NewRoot(d, size, parts, opt), opt)
}

// Dir is the mountpoint.
func (m *Mounted) Dir() string { return m.dir }

// Wait blocks until the file system is unmounted (by Unmount, umount or
// fusermount -u).
func (m *Mounted) Wait() { <-m.done }

// Done is closed once the file system is unmounted.
func (m *Mounted) Done() <-chan struct{} { return m.done }

// Unmount unmounts and waits for the server to stop. It fails with ErrBusy
// while files under the mount are open.
func (m *Mounted) Unmount() error {
	select {
	case <-m.done:
		return nil
	default:
	}
	if err := m.server.Unmount(); err != nil {
		select {
		case <-m.done:
			return nil // unmounted meanwhile (umount from outside)
		default:
		}
		if errors.Is(err, syscall.EBUSY) || strings.Contains(err.Error(), "busy") {
			return fmt.Errorf("%w: %s: %w", ErrBusy, m.dir, err)
		}
		return fmt.Errorf("fusefs: unmount %s: %w", m.dir, err)
	}
	m.Wait()
	return nil
}

// unmountOnCancel unmounts when ctx ends, retrying every second while the
// mountpoint is busy, until the mount is gone.
func (m *Mounted) unmountOnCancel(ctx context.Context) {
	select {
	case <-m.done:
		return
	case <-ctx.Done():
	}
	for warned := false; ; {
		err := m.Unmount()
		if err == nil {
			return
		}
		if !warned && m.log != nil {
			m.log.Warn("fusefs: cannot unmount yet; close the files under the mountpoint (retrying)", "dir", m.dir, "err", err)
			warned = true
		}
		select {
		case <-m.done:
			return
		case <-time.After(time.Second):
		}
	}
}

// serve mounts root on dir and serves it, as go-fuse's fs.Mount does but
// with its poll hack only when the process will open its own files (see
// Options.SelfAccess): fs.Mount's WaitMount does nothing else, because
// the mount exists once NewServer returns (directly or through
// fusermount), and requests wait in the kernel until Serve has answered
// INIT.
func serve(dir string, root fs.InodeEmbedder, fopt *fs.Options, pollHack bool) (*fuse.Server, error) {
	server, err := fuse.NewServer(fs.NewNodeFS(root, fopt), dir, &fopt.MountOptions)
	if err != nil {
		return nil, err
	}
	go server.Serve()
	if pollHack {
		if err := server.WaitMount(); err != nil {
			server.Unmount()
			return nil, err
		}
	}
	return server, nil
}

// tuneReadAhead raises the readahead of the mount on dir (a real path)
// so the kernel sends ioSize reads. Failure only costs speed. The mount's
// device number comes from /proc/self/mountinfo: a stat of dir would be a
// request to this process, one a kill -9 could leave it waiting on.
func tuneReadAhead(dir string) {
	dev := mountDevice(dir)
	if dev == "" {
		return
	}
	_ = os.WriteFile("/sys/class/bdi/"+dev+"/read_ahead_kb", []byte(fmt.Sprint(readAheadKB)), 0)
}

// mountDevice is the "major:minor" of the newest mount on dir, from
// /proc/self/mountinfo; "" if there is none.
func mountDevice(dir string) string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	// Fields: ID, parent ID, major:minor, root, mount point (with space,
	// tab, newline and backslash written as octal escapes), ...
	esc := strings.NewReplacer(`\`, `\134`, " ", `\040`, "\t", `\011`, "\n", `\012`).Replace(dir)
	dev := ""
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == esc {
			dev = f[2] // the last one is on top
		}
	}
	return dev
}

// goLogger adapts our optional slog.Logger to the log.Logger go-fuse
// writes its warnings to; without one they are dropped, never printed to
// the process's stderr behind the caller's back.
func goLogger(l *slog.Logger) *log.Logger {
	if l == nil {
		return log.New(io.Discard, "", 0)
	}
	return slog.NewLogLogger(l.Handler(), slog.LevelWarn)
}
