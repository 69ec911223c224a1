package imagefmt

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// maxChain bounds a delta chain (and catches a delta that names itself).
const maxChain = 64

// OpenChain opens an image file. When it is a delta, it first opens the
// base its header names, where the path hint points (a relative hint is
// relative to the delta's directory) or at opt.BasePath, at the commit the
// delta was made over, and so on down the chain; the base is checked by
// UUID and digest. Close closes the whole chain.
//
// The base's commit is found by its digest: the number the delta records
// is tried first, then the base's history is searched for a commit with
// that digest, so a delta still opens over its base after the base was
// compacted or flattened (same UUID, same disk, history renumbered).
func OpenChain(path string, opt ReaderOptions) (*Reader, error) {
	return openChain(path, opt, 0)
}

func openChain(name string, opt ReaderOptions, depth int) (*Reader, error) {
	if depth > maxChain {
		return nil, fmt.Errorf("%w: %s: a delta chain longer than %d images", ErrBase, name, maxChain)
	}
	op := opt.Opener
	if op == nil {
		op = localOpener{}
	}
	f, err := op.OpenImageFile(name)
	if err != nil {
		return nil, err
	}
	r, err := openChainFile(f, name, op, opt, depth)
	if err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

// openChainFile is openChain once the file is open (f is closed by the
// caller on error, by the Reader's Close on success).
func openChainFile(f ImageFile, name string, op Opener, opt ReaderOptions, depth int) (*Reader, error) {
	ref, err := baseRefOf(f, name)
	if err != nil {
		return nil, err
	}
	basePath := opt.BasePath
	opt.BasePath = ""
	if ref == nil && basePath != "" {
		return nil, fmt.Errorf("%s is not a delta image: it has no base (%s was given as one)", name, basePath)
	}
	if ref != nil && opt.Base == nil {
		if basePath == "" {
			if ref.PathHint == "" {
				return nil, fmt.Errorf("%w: %s is a delta over image %s commit %d and does not say where it was", ErrBase, name, formatUUID(ref.UUID), ref.Commit)
			}
			basePath = op.ResolveBase(name, ref.PathHint)
		}
		base, err := openBase(basePath, ref, opt, depth)
		if err != nil {
			return nil, fmt.Errorf("%s: open its base: %w", name, err)
		}
		opt.Base = base
		r, err := newNamedReader(f, name, opt)
		if err != nil {
			base.Close()
			return nil, err
		}
		r.chain = append(r.chain, base)
		return r, nil
	}
	return newNamedReader(f, name, opt)
}

// newNamedReader opens the image in f, named name in messages. A file
// that comes with a frame cache (a remote one: FrameCacher) reads through
// it unless opt names one.
func newNamedReader(f ImageFile, name string, opt ReaderOptions) (*Reader, error) {
	if fc, ok := f.(FrameCacher); ok && opt.Frames == nil {
		opt.Frames = fc.FrameCache()
	}
	r, err := NewReader(f, f.Size(), opt)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	r.closer, r.name = f, name
	return r, nil
}

// openBase opens the base of a delta at the commit ref names: by number
// when that commit has ref's digest, else the commit of the base's history
// that has it. Another image (another UUID) is returned as it is, for the
// delta's open to refuse naming both UUIDs; the same image without that
// state is refused here.
func openBase(path string, ref *BaseRef, opt ReaderOptions, depth int) (*Reader, error) {
	bopt := ReaderOptions{CacheBytes: opt.CacheBytes, Logger: opt.Logger, Commit: ref.Commit, Opener: opt.Opener}
	base, err := openChain(path, bopt, depth+1)
	if err == nil && base.Digest() == ref.Digest {
		return base, nil
	}
	if base != nil {
		base.Close()
	}
	// Another commit number, or none: search the history by digest.
	bopt.Commit = 0
	newest, err := openChain(path, bopt, depth+1)
	if err != nil {
		return nil, err
	}
	if newest.hdr.UUID != ref.UUID || newest.t == nil {
		return newest, nil
	}
	log, err := newest.Log()
	if err != nil {
		newest.Close()
		return nil, err
	}
	for _, c := range log {
		if c.Digest != ref.Digest {
			continue
		}
		if c.Number == newest.Commit().Number {
			return newest, nil
		}
		newest.Close()
		bopt.Commit = c.Number
		return openChain(path, bopt, depth+1)
	}
	n := newest.Commit().Number
	newest.Close()
	return nil, fmt.Errorf("%w: %s (image %s, commits 1 to %d) has no commit with digest %x, the state of its commit %d the delta was made over: the base changed since (it was compacted or rewritten)",
		ErrBase, path, formatUUID(ref.UUID), n, ref.Digest[:8], ref.Commit)
}

// ReadBaseRef reads the base reference of the image file at path: nil for
// an image that is not a delta (or is version 1).
func ReadBaseRef(path string) (*BaseRef, error) {
	// Not a FIFO or device: opening one could block; OpenOptions says why.
	if st, err := os.Stat(path); err != nil || !st.Mode().IsRegular() {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return baseRefOf(sizedFile{f, st.Size()}, path)
}

// baseRefOf reads the base reference in the header block of the image
// file f: nil for an image that is not a delta (or is version 1).
func baseRefOf(f ImageFile, name string) (*BaseRef, error) {
	b := make([]byte, min(headerBlockSize, max(f.Size(), 0)))
	n, err := f.ReadAt(b, 0)
	if !isV2(b[:n]) {
		return nil, nil
	}
	if n < headerBlockSize {
		if err == nil || err == io.EOF {
			return nil, fmt.Errorf("%s: %w", name, ended(int64(n), "header block"))
		}
		return nil, fmt.Errorf("%s: read header block: %w", name, err)
	}
	h, err := unmarshalHeaderV2(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return h.Base, nil
}

// ImageFile is an image file opened for reading: its bytes and size.
type ImageFile interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

// FrameCacher is implemented by an ImageFile whose frames are worth
// keeping elsewhere (a remote file: its local cache). FrameCache may
// return nil.
type FrameCacher interface {
	FrameCache() FrameCache
}

// Opener opens the image files of a delta chain by name, for OpenChain:
// the image and, down the chain, each base its delta names. The default
// opens local files; a remote source passes one that also opens URLs, so
// a delta and its bases may live on a web server or in an object store.
type Opener interface {
	// OpenImageFile opens the image file name for reading.
	OpenImageFile(name string) (ImageFile, error)
	// ResolveBase names the file a base path hint recorded in the delta
	// named delta points at: a relative hint is relative to the delta's
	// location.
	ResolveBase(delta, hint string) string
}

// localOpener opens local files (regular files only, see openRegular).
type localOpener struct{}

func (localOpener) OpenImageFile(name string) (ImageFile, error) {
	f, size, err := openRegular(name, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	return sizedFile{f, size}, nil
}

func (localOpener) ResolveBase(delta, hint string) string {
	if filepath.IsAbs(hint) {
		return hint
	}
	return filepath.Join(filepath.Dir(delta), hint)
}

// LocalOpener is the default Opener, of local files; an Opener that also
// opens other names (URLs) hands local names to it.
var LocalOpener Opener = localOpener{}

// sizedFile is an *os.File with the size it had when opened.
type sizedFile struct {
	*os.File
	size int64
}

func (f sizedFile) Size() int64 { return f.size }
