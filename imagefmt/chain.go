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

func openChain(path string, opt ReaderOptions, depth int) (*Reader, error) {
	if depth > maxChain {
		return nil, fmt.Errorf("%w: %s: a delta chain longer than %d images", ErrBase, path, maxChain)
	}
	ref, err := ReadBaseRef(path)
	if err != nil {
		return nil, err
	}
	basePath := opt.BasePath
	opt.BasePath = ""
	if ref == nil && basePath != "" {
		return nil, fmt.Errorf("%s is not a delta image: it has no base (%s was given as one)", path, basePath)
	}
	if ref == nil || opt.Base != nil {
		return OpenOptions(path, opt)
	}
	if basePath == "" {
		basePath = ref.PathHint
		if basePath == "" {
			return nil, fmt.Errorf("%w: %s is a delta over image %s commit %d and does not say where it was", ErrBase, path, formatUUID(ref.UUID), ref.Commit)
		}
		if !filepath.IsAbs(basePath) {
			basePath = filepath.Join(filepath.Dir(path), basePath)
		}
	}
	base, err := openBase(basePath, ref, opt, depth)
	if err != nil {
		return nil, fmt.Errorf("%s: open its base: %w", path, err)
	}
	opt.Base = base
	r, err := OpenOptions(path, opt)
	if err != nil {
		base.Close()
		return nil, err
	}
	r.chain = append(r.chain, base)
	return r, nil
}

// openBase opens the base of a delta at the commit ref names: by number
// when that commit has ref's digest, else the commit of the base's history
// that has it. Another image (another UUID) is returned as it is, for the
// delta's open to refuse naming both UUIDs; the same image without that
// state is refused here.
func openBase(path string, ref *BaseRef, opt ReaderOptions, depth int) (*Reader, error) {
	bopt := ReaderOptions{CacheBytes: opt.CacheBytes, Logger: opt.Logger, Commit: ref.Commit}
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
	b := make([]byte, headerBlockSize)
	n, err := io.ReadFull(f, b)
	if !isV2(b[:n]) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, ended(int64(n), "header block"))
	}
	h, err := unmarshalHeaderV2(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return h.Base, nil
}
