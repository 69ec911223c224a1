package edit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"syscall"

	"github.com/dimg-project/dimg/cloneio/source"
	"github.com/dimg-project/dimg/fsdrivers"
	fsdisk "github.com/dimg-project/dimg/fsdrivers/disk"
	"github.com/dimg-project/dimg/fsdrivers/fsedit"
	"github.com/dimg-project/dimg/imagefmt"
)

// Options configure Open; Drivers must hold the filesystem drivers.
type Options struct {
	// Delta, if set, writes the change as a new delta image over the
	// image instead of a new commit of it.
	Delta string
	// Base is where a delta image's base is (see source.Options.Base).
	Base        string
	Drivers     []fsdrivers.Driver
	Logger      *slog.Logger
	ToolVersion string
}

// Edit is an image open for changing the files of one partition.
type Edit struct {
	Session *imagefmt.Session
	Source  *source.Source
	Part    *fsdisk.Part
	FS      fsdrivers.WritableFS
	// Path edits FS by path; its messages name files as "N:/path".
	Path  *fsedit.FS
	image string
	ro    fsdrivers.Filesystem // the read-only view, for similar-name hints
	done  bool
}

// ErrNotWritable is wrapped when the filesystem cannot be written by dimg
// (a type without a writer, or a feature the writer refuses).
var ErrNotWritable = errors.New("filesystem cannot be written by dimg")

// Open opens image for changing the partition spec names ("2:/etc/x", or
// a bare path when the disk has one filesystem) and returns the edit and
// the io/fs path spec names in it. Errors say what to do: a missing
// partition lists those that exist, a filesystem dimg does not write says
// how to write it instead, changes an earlier session left uncommitted
// must be committed or dropped first.
func Open(image, spec string, opt Options) (*Edit, string, error) {
	s, err := imagefmt.OpenSession(image, imagefmt.SessionOptions{
		Delta: opt.Delta, ToolVersion: opt.ToolVersion,
		Reader: imagefmt.ReaderOptions{BasePath: opt.Base},
	})
	if errors.Is(err, imagefmt.ErrVersion1) {
		return nil, "", fmt.Errorf("%w: it cannot take changes; write a version 2 copy first (dimg convert --compress lz4 %s NEW.dimg) and edit that", err, image)
	}
	if err != nil {
		return nil, "", err
	}
	if rc := s.Recovered; rc != nil && rc.Chunks > 0 {
		target := s.Target()
		// Close, not Discard: those changes are not ours to drop.
		s.Close()
		return nil, "", fmt.Errorf("%s holds changes an earlier session left uncommitted (%d chunks in %s): commit them first with 'dimg recover %s --commit', or drop them with 'dimg recover %s --drop'",
			target, rc.Chunks, imagefmt.ScratchPath(target), recoverArgs(image, opt.Delta), recoverArgs(image, opt.Delta))
	}
	e := &Edit{Session: s, image: image}
	p, err := e.open(spec, opt)
	if err != nil {
		s.Discard()
		return nil, "", err
	}
	return e, p, nil
}

func (e *Edit) open(spec string, opt Options) (string, error) {
	s := e.Session
	base := s.Base()
	src, err := source.New(source.Backing{Name: e.image, ReaderAt: s.Disk(), Size: base.Size(), Image: base},
		source.Options{Drivers: opt.Drivers, Logger: opt.Logger})
	if err != nil {
		return "", err
	}
	e.Source = src
	loc, err := src.Resolve(spec)
	if err != nil {
		return "", err
	}
	e.Part, e.ro = loc.Part, loc.FS
	drv := writer(e.Part, opt.Drivers)
	typ := e.Part.Volume.Type()
	if drv == nil {
		how := ""
		if strings.HasPrefix(typ, "ntfs") {
			how = fmt.Sprintf(": to change files in it, mount the image read-write (dimg mount --rw %s DIR) and write the partition with ntfs-3g (ntfs-3g DIR/p%d.img /mnt), then unmount both", e.image, e.Part.Number)
		}
		return "", fmt.Errorf("partition %d (%s): %w%s", e.Part.Number, source.Describe(e.Part), ErrNotWritable, how)
	}
	sec, err := s.Disk().Section(e.Part.Start, e.Part.Size)
	if err != nil {
		return "", fmt.Errorf("partition %d: %w", e.Part.Number, err)
	}
	w, err := drv.OpenWritable(sec, e.Part.Size)
	if err != nil {
		if errors.Is(err, fsdrivers.ErrReadOnly) {
			return "", fmt.Errorf("partition %d (%s): %w: %w", e.Part.Number, source.Describe(e.Part), ErrNotWritable, err)
		}
		return "", fmt.Errorf("partition %d (%s): %w", e.Part.Number, typ, err)
	}
	e.FS = w
	e.Path = fsedit.New(w, fmt.Sprintf("%d:", e.Part.Number))
	return loc.Path, nil
}

// writer finds the driver that recognises p's filesystem (the first that
// opens it, as probing did) if it can write it.
func writer(p *fsdisk.Part, drivers []fsdrivers.Driver) fsdrivers.WritableDriver {
	for _, d := range drivers {
		if _, err := d.Open(p.Reader, p.Size); err != nil {
			continue
		}
		w, _ := d.(fsdrivers.WritableDriver)
		return w
	}
	return nil
}

// Resolve parses another "N:/path" of the same edit: it must name the same
// partition (a bare path means it too).
func (e *Edit) Resolve(spec string) (string, error) {
	n, p, err := source.ParseSpec(spec)
	if err != nil {
		return "", err
	}
	if n != 0 && n != e.Part.Number {
		return "", fmt.Errorf("%s: one edit changes one partition, and this one changes partition %d", spec, e.Part.Number)
	}
	cp, err := fsdrivers.CleanPath(p)
	if err != nil {
		return "", fmt.Errorf("%s: %w", spec, err)
	}
	return cp, nil
}

// Explain adds, to an error about a missing path p, what does exist near
// it (similar names in its deepest existing directory), read from the
// image as it was before this edit.
func (e *Edit) Explain(err error, p string) error {
	if !errors.Is(err, syscall.ENOENT) || e.ro == nil {
		return err
	}
	loc := &source.Location{Part: e.Part, FS: e.ro, Path: p}
	if _, lerr := loc.Lstat(); lerr != nil {
		return lerr
	}
	return err
}

// CommitInfo says what a commit stored.
type CommitInfo struct {
	imagefmt.CommitInfo
	// Changed is false when the edit changed no byte (no commit made).
	Changed bool
	Target  string
}

// Commit writes the filesystem out and commits every change as one
// commit with message. On failure the changes are dropped and the image is
// as before.
func (e *Edit) Commit(ctx context.Context, message string) (CommitInfo, error) {
	if e.done {
		return CommitInfo{}, errors.New("edit: already ended")
	}
	if err := e.FS.Close(); err != nil {
		e.Discard()
		return CommitInfo{}, fmt.Errorf("partition %d: writing the filesystem out: %w (nothing was committed)", e.Part.Number, err)
	}
	e.FS = nil
	info, changed, err := e.Session.Commit(ctx, message)
	if err != nil {
		e.Discard()
		return CommitInfo{}, fmt.Errorf("commit to %s: %w (nothing was committed)", e.Session.Target(), err)
	}
	e.done = true
	return CommitInfo{CommitInfo: info, Changed: changed, Target: e.Session.Target()}, nil
}

// Discard drops every change: the image stays as it was.
func (e *Edit) Discard() error {
	if e.done {
		return nil
	}
	e.done = true
	// The filesystem is not synced or closed: what it would write goes to
	// the overlay, which is dropped anyway.
	return e.Session.Discard()
}

func recoverArgs(image, delta string) string {
	if delta != "" {
		return image + " --delta " + delta
	}
	return image
}

// Writer returns the writer of partition p's filesystem (the driver that
// recognises it, as probing did, if it can write it), or nil.
func Writer(p *fsdisk.Part, drivers []fsdrivers.Driver) fsdrivers.WritableDriver {
	return writer(p, drivers)
}

// OpenTrees opens, for a read-write mount, the filesystem of every
// partition of d that dimg can write, over the overlay's section of it.
// A filesystem its writer refuses (an unsupported feature, a journal that
// cannot be replayed) is left out, with a note saying why: its raw pN.img
// stays writable instead.
func OpenTrees(ovl *imagefmt.Overlay, d *fsdisk.Disk, drivers []fsdrivers.Driver) (map[int]fsdrivers.WritableFS, []string) {
	trees := map[int]fsdrivers.WritableFS{}
	var notes []string
	for i := range d.Parts {
		p := &d.Parts[i]
		if p.Extended || p.Volume == nil {
			continue
		}
		drv := writer(p, drivers)
		if drv == nil {
			continue
		}
		sec, err := ovl.Section(p.Start, p.Size)
		if err != nil {
			continue
		}
		w, err := drv.OpenWritable(sec, p.Size)
		if err != nil {
			notes = append(notes, fmt.Sprintf("p%d/ is not shown (its files cannot be written: %v); p%d.img is writable instead", p.Number, err, p.Number))
			continue
		}
		trees[p.Number] = w
	}
	return trees, notes
}

// CloseTrees syncs and closes the trees OpenTrees opened (after the
// unmount, before the commit).
func CloseTrees(trees map[int]fsdrivers.WritableFS) error {
	var errs []error
	for n, w := range trees {
		if err := w.Close(); err != nil {
			errs = append(errs, fmt.Errorf("p%d/: writing the filesystem out: %w", n, err))
		}
	}
	return errors.Join(errs...)
}
