package personalize

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/dimg-project/dimg/imagefmt"
	"golang.org/x/sys/unix"
)

// ImageOptions say how to open an image target.
type ImageOptions struct {
	Delta       string // write the change as a new delta image over the image
	Base        string // where a delta image's base is
	ToolVersion string
	Message     string // the commit's message; default: what changed
}

// ImageResult is what personalizing an image committed.
type ImageResult struct {
	Report  *Report
	Commit  imagefmt.CommitInfo
	Changed bool
	Target  string // the image (or delta) that took the commit
}

// Image personalizes the newest state of a .dimg image as one commit (or
// one delta image): everything is written to a copy-on-write session and
// committed at once, or dropped on any error and with DryRun.
func Image(ctx context.Context, image string, opt Options, iopt ImageOptions) (*ImageResult, error) {
	s, err := imagefmt.OpenSession(image, imagefmt.SessionOptions{
		Delta: iopt.Delta, ToolVersion: iopt.ToolVersion,
		Reader: imagefmt.ReaderOptions{BasePath: iopt.Base},
	})
	if errors.Is(err, imagefmt.ErrVersion1) {
		return nil, fmt.Errorf("%w: it cannot take changes; write a version 2 copy first (dimg convert --compress lz4 %s NEW.dimg)", err, image)
	}
	if err != nil {
		return nil, err
	}
	if rc := s.Recovered; rc != nil && rc.Chunks > 0 {
		target := s.Target()
		s.Close()
		return nil, fmt.Errorf("%s holds changes an earlier session left uncommitted (%d chunks): commit or drop them first with dimg recover", target, rc.Chunks)
	}
	rep, err := Disk(ctx, s.Disk(), s.Base().Size(), opt)
	if err != nil || opt.DryRun {
		s.Discard()
		if err != nil {
			return nil, err
		}
		return &ImageResult{Report: rep, Target: s.Target()}, nil
	}
	msg := iopt.Message
	if msg == "" {
		msg = Summary(opt)
	}
	info, changed, err := s.Commit(ctx, msg)
	if err != nil {
		s.Discard()
		return nil, fmt.Errorf("commit to %s: %w (nothing was committed)", s.Target(), err)
	}
	return &ImageResult{Report: rep, Commit: info, Changed: changed, Target: s.Target()}, nil
}

// Summary names what the options change, for commit messages.
func Summary(opt Options) string {
	var w []string
	if opt.Hostname != "" {
		w = append(w, "hostname "+opt.Hostname)
	}
	if opt.NewMachineID {
		w = append(w, "new machine id")
	}
	if opt.RemoveSSHHostKeys {
		w = append(w, "SSH host keys removed")
	}
	if opt.NewIDs {
		w = append(w, "new filesystem UUIDs and partition GUIDs")
	}
	return "personalize: " + strings.Join(w, ", ")
}

// Target personalizes a raw disk file or a block device in place. A block
// device is opened exclusively (O_EXCL: refused while mounted or in use).
func Target(ctx context.Context, target string, opt Options) (*Report, error) {
	st, err := os.Stat(target)
	if err != nil {
		return nil, fmt.Errorf("personalize: %w", err)
	}
	flags := os.O_RDWR
	if opt.DryRun {
		flags = os.O_RDONLY
	}
	isDev := st.Mode()&os.ModeDevice != 0
	switch {
	case isDev:
		flags |= unix.O_EXCL
	case !st.Mode().IsRegular():
		return nil, fmt.Errorf("personalize: %s is neither a disk image file nor a block device", target)
	}
	f, err := os.OpenFile(target, flags, 0)
	if err != nil {
		if isDev && errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("personalize: %s is in use (mounted?): unmount it first", target)
		}
		return nil, fmt.Errorf("personalize: %w", err)
	}
	defer f.Close()
	size := st.Size()
	if isDev {
		if size, err = f.Seek(0, 2); err != nil {
			return nil, fmt.Errorf("personalize: size of %s: %w", target, err)
		}
	}
	var dev interface {
		ReadAt([]byte, int64) (int, error)
		WriteAt([]byte, int64) (int, error)
	} = f
	if opt.DryRun {
		dev = readOnly{f}
	}
	rep, err := Disk(ctx, dev, size, opt)
	if err != nil {
		return nil, err
	}
	if !opt.DryRun {
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("personalize: sync %s: %w", target, err)
		}
	}
	return rep, f.Close()
}

// readOnly makes sure a dry run writes nothing.
type readOnly struct{ f *os.File }

func (r readOnly) ReadAt(p []byte, off int64) (int, error) { return r.f.ReadAt(p, off) }
func (r readOnly) WriteAt(p []byte, off int64) (int, error) {
	return 0, errors.New("personalize: dry run: write refused")
}
