package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/dimg-project/dimg/cloneio/remote"
	"github.com/dimg-project/dimg/fsdrivers"
	fsdisk "github.com/dimg-project/dimg/fsdrivers/disk"
	"github.com/dimg-project/dimg/imagefmt"
	"github.com/dimg-project/dimg/internal/filekind"
)

// Options configure Open and New; the zero value opens images only and
// recognises no filesystem.
type Options struct {
	// Raw accepts what is not a dimg image as a raw disk: a block device,
	// or a regular file that does not start as an image and is not named
	// *.dimg. Commands that need an image's own data (info, verify,
	// restore, send) leave it false.
	Raw bool
	// Drivers recognise partitions' filesystems, tried in order (see
	// fsdrivers.Probe). Nil: no partition has a filesystem.
	Drivers []fsdrivers.Driver
	// Logger, if set, gets a line for each chunk of an image that fails
	// its checksum when read.
	Logger *slog.Logger
	// Commit opens an older commit of an image (numbered from 1, the
	// capture); 0 opens the newest. A raw disk has no commits.
	Commit int64
	// Base is where a delta image's base is, instead of the path its
	// header records (relative to the delta's directory). A delta's base
	// is opened at the commit the delta was made over and must be that
	// image in that state: another image, or one that changed, is refused
	// naming both files. Chains (a delta over a delta) open down to a
	// standalone image. It may be a URL (with Remote).
	Base string
	// Remote reads IMAGE arguments (and delta bases) that are URLs
	// (https://, s3://); nil: a URL is refused as such.
	Remote *remote.Client
}

// Backing is what a Source reads. ReaderAt and Size are the logical disk;
// the rest is what is known about it.
type Backing struct {
	// Name names the source in messages: a path, a URL.
	Name string
	// ReaderAt reads the logical disk; Size is its length in bytes. When
	// Image is set and ReaderAt is nil, the image is read.
	ReaderAt io.ReaderAt
	Size     int64
	// SectorSize is the logical sector size; 0 lets the partition table
	// reader detect it (a raw file has none of its own).
	SectorSize int
	// Image is the dimg image the disk comes from; nil for a raw disk. An
	// overlay over an image keeps the image here and reads through
	// ReaderAt.
	Image *imagefmt.Reader
	// ModTime is when the source last changed (the image file's time).
	ModTime time.Time
	// Closer releases what the Source holds; may be nil.
	Closer io.Closer
}

// Source is an opened IMAGE argument: the logical disk bytes, the image
// they come from, the partition layout and the filesystems, the last two
// read when first asked. Its methods are safe for concurrent use.
type Source struct {
	b       Backing
	drivers []fsdrivers.Driver

	mu      sync.Mutex // guards the fields below
	disk    *fsdisk.Disk
	diskErr error
	probed  []bool // index in disk.Parts → probed with drivers
}

// New makes a Source of bytes the caller opened. It reads nothing: the
// partition table is read when first asked for.
func New(b Backing, opt Options) (*Source, error) {
	if b.ReaderAt == nil && b.Image != nil {
		b.ReaderAt, b.Size = b.Image, b.Image.Size()
	}
	if b.Image != nil && b.SectorSize == 0 {
		b.SectorSize = b.Image.SectorSize()
	}
	switch {
	case b.ReaderAt == nil:
		return nil, fmt.Errorf("source %s: nothing to read", b.Name)
	case b.Size < 0:
		return nil, fmt.Errorf("source %s: negative size %d", b.Name, b.Size)
	}
	return &Source{b: b, drivers: opt.Drivers}, nil
}

// Open opens the IMAGE argument path: a .dimg image, or with opt.Raw a
// raw disk file or a block device. The path is classified before it is
// opened: a directory, a pipe or a character device is refused with a
// message saying why (opening a FIFO would wait for a writer for ever).
// ctx bounds opens that wait (a remote source); a local open does not.
func Open(ctx context.Context, path string, opt Options) (*Source, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if remote.IsURL(path) {
		return openRemote(ctx, path, opt)
	}
	kind, st, err := filekind.Stat(path)
	if err != nil {
		return nil, err
	}
	switch {
	case kind == filekind.Dir:
		return nil, fmt.Errorf("%s is a directory, not an image", path)
	case kind == filekind.Block && opt.Raw:
		// A device is never read as an image file: the raw disk.
		if opt.Commit != 0 || opt.Base != "" {
			return nil, fmt.Errorf("%s is a block device, read as a raw disk: it has no commits and no base", path)
		}
		return openRaw(path, st.ModTime(), opt)
	case kind == filekind.Stream:
		return nil, fmt.Errorf("%s is a pipe or a character device: an image must be a file this command can read at random (save the stream to a file, or use dimg restore -)", path)
	case kind != filekind.Regular:
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	img, err := imagefmt.OpenChain(path, imagefmt.ReaderOptions{Logger: opt.Logger, Commit: opt.Commit, BasePath: opt.Base, Opener: opt.opener(ctx)})
	switch {
	case err == nil:
		return New(Backing{Name: path, Image: img, ModTime: st.ModTime(), Closer: img}, opt)
	case opt.Raw && noMagic(err) && !strings.HasSuffix(path, ".dimg") && opt.Commit == 0 && opt.Base == "" && !isDelta(path):
		return openRaw(path, st.ModTime(), opt)
	}
	return nil, err
}

// opener opens the files of a delta chain: local files, and URLs when
// the options allow them.
func (opt *Options) opener(ctx context.Context) imagefmt.Opener {
	if opt.Remote == nil {
		return nil
	}
	return opt.Remote.Opener(ctx)
}

// openRemote opens an image at a URL: a few small range requests (the
// header, the newest commit and the root of its index), then only what a
// read needs. A URL is never read as a raw disk: it must be an image.
func openRemote(ctx context.Context, u string, opt Options) (*Source, error) {
	if opt.Remote == nil {
		return nil, fmt.Errorf("%s: this command does not read images over the network", u)
	}
	img, err := imagefmt.OpenChain(u, imagefmt.ReaderOptions{Logger: opt.Logger, Commit: opt.Commit, BasePath: opt.Base, Opener: opt.opener(ctx)})
	if err != nil {
		return nil, err
	}
	return New(Backing{Name: u, Image: img, Closer: img}, opt)
}

// noMagic reports whether err says the file does not start with the dimg
// magic: only then is it a raw disk. A file that has the magic but a
// version or feature this dimg does not know is an image it cannot read,
// not a disk whose bytes are its header (that would list the header as a
// disk without a partition table and exit 0).
func noMagic(err error) bool {
	var re *imagefmt.RuleError
	return errors.As(err, &re) && re.Rule == imagefmt.RuleMagic
}

// isDelta reports whether path is a delta image: an error about its base
// (whose file may lack the magic) is not a reason to read it as raw.
func isDelta(path string) bool {
	ref, err := imagefmt.ReadBaseRef(path)
	return ref != nil || err != nil
}

func openRaw(path string, mtime time.Time, opt Options) (*Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	// Seek to the end sizes a block device as well as a file.
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, err
	}
	return New(Backing{Name: path, ReaderAt: f, Size: size, ModTime: mtime, Closer: f}, opt)
}

// Name names the source in messages.
func (s *Source) Name() string { return s.b.Name }

// ReadAt reads the logical disk.
func (s *Source) ReadAt(p []byte, off int64) (int, error) { return s.b.ReaderAt.ReadAt(p, off) }

// Size is the logical disk's size in bytes.
func (s *Source) Size() int64 { return s.b.Size }

// SectorSize is the logical sector size: an image's own; for a raw disk
// the one its partition table was read with, 0 before that is known.
func (s *Source) SectorSize() int {
	if s.b.SectorSize != 0 {
		return s.b.SectorSize
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.disk != nil {
		return s.disk.Table.SectorSize
	}
	return 0
}

// Image is the dimg image the disk comes from, nil for a raw disk.
func (s *Source) Image() *imagefmt.Reader { return s.b.Image }

// ModTime is when the source last changed.
func (s *Source) ModTime() time.Time { return s.b.ModTime }

// Close releases the file, device or image.
func (s *Source) Close() error {
	if s.b.Closer == nil {
		return nil
	}
	return s.b.Closer.Close()
}

// requireImage returns the image, or an error naming a raw disk.
func (s *Source) requireImage() (*imagefmt.Reader, error) {
	if s.b.Image == nil {
		return nil, fmt.Errorf("%s: %w (a raw disk)", s.b.Name, imagefmt.ErrFormat)
	}
	return s.b.Image, nil
}
