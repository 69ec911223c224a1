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
// relative to the delta's directory), at the commit the delta was made
// over, and so on down the chain; the base is checked by UUID and digest.
// Close closes the whole chain.
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
	if ref == nil || opt.Base != nil {
		return OpenOptions(path, opt)
	}
	hint := ref.PathHint
	if hint == "" {
		return nil, fmt.Errorf("%w: %s is a delta over image %s commit %d and does not say where it was", ErrBase, path, formatUUID(ref.UUID), ref.Commit)
	}
	if !filepath.IsAbs(hint) {
		hint = filepath.Join(filepath.Dir(path), hint)
	}
	base, err := openChain(hint, ReaderOptions{CacheBytes: opt.CacheBytes, Logger: opt.Logger, Commit: ref.Commit}, depth+1)
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
