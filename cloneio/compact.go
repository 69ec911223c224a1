package cloneio

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/dimg-project/dimg/imagefmt"
)

// RewriteTo writes the disk img shows to the new image file out (see
// Rewrite: one commit, no base) under a temporary name in out's
// directory, syncs it, checks that it opens with img's digest and renames
// it into place. An existing out is replaced only with force; out must not
// be img or any image of its chain. A failure or a kill at any point
// leaves out as it was (a temporary file may stay behind after a kill).
func RewriteTo(ctx context.Context, img *imagefmt.Reader, out string, force bool, opt RewriteOptions) (*RewriteResult, error) {
	for r := img; r != nil; r = r.Base() {
		if r.Path() == "" {
			continue
		}
		if err := CheckDistinct(r.Path(), out); err != nil {
			return nil, err
		}
	}
	f, err := CreateAtomic(out, force)
	if err != nil {
		return nil, err
	}
	defer f.Abort() // a no-op once committed
	res, err := Rewrite(ctx, img, f, opt)
	if err != nil {
		return nil, err
	}
	if err := commitRewrite(f, res); err != nil {
		return nil, err
	}
	return res, nil
}

// commitRewrite syncs the new image, checks that it opens at the digest
// written and renames it into place.
func commitRewrite(f *AtomicFile, res *RewriteResult) error {
	if err := f.Sync(); err != nil {
		return fmt.Errorf("cloneio: sync %s: %w", f.final, err)
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	r, err := imagefmt.NewReader(f.File, st.Size(), imagefmt.ReaderOptions{})
	if err != nil {
		return fmt.Errorf("cloneio: the rewritten image does not open: %w", err)
	}
	if r.Digest() != res.Digest {
		return fmt.Errorf("%w: the rewritten image opens with digest %s, %s was written", imagefmt.ErrCorrupt,
			imagefmt.DigestString(r.Digest()), imagefmt.DigestString(res.Digest))
	}
	res.ImageBytes = st.Size()
	return f.Commit()
}

// CompactOptions configure Compact.
type CompactOptions struct {
	RewriteOptions
	// BasePath is where a delta image's base is, instead of its path hint.
	BasePath string
}

// CompactResult reports a compaction.
type CompactResult struct {
	*RewriteResult
	Before  int64 // the image file's size before
	Commits int64 // commits the image had (now 1)
	Delta   bool  // the image is a delta and stays one
}

// ErrPendingChanges: an image has changes a read-write mount left in its
// scratch file; they must be committed or dropped first.
var ErrPendingChanges = errors.New("cloneio: the image has uncommitted changes")

// Compact rewrites the image file at path in place without superseded
// chunks and history: its newest state as one commit, same UUID and
// digest (see Rewrite). A delta stays a delta over the same base, holding
// only the chunks that differ from it. It takes the image's writer lock
// (refused while a read-write mount or another writer holds it; readers
// keep the file they opened), writes a temporary file, syncs it, checks
// it and renames it over the image: a crash or kill at any point leaves
// the image as it was or compacted, never damaged.
func Compact(ctx context.Context, path string, opt CompactOptions) (*CompactResult, error) {
	lock, err := imagefmt.LockWriter(path)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	if err := checkNoScratch(path); err != nil {
		return nil, err
	}
	img, err := imagefmt.OpenChain(path, imagefmt.ReaderOptions{BasePath: opt.BasePath})
	if err != nil {
		return nil, err
	}
	defer img.Close()
	res := &CompactResult{Before: img.FileSize(), Commits: img.Commits(), Delta: img.Base() != nil}
	if opt.Message == "" {
		opt.Message = fmt.Sprintf("compacted from %d commits (newest: %d)", img.Commits(), img.Commit().Number)
	}
	if img.Base() != nil {
		res.RewriteResult, err = compactDelta(ctx, img, path, opt.RewriteOptions)
	} else {
		res.RewriteResult, err = compactImage(ctx, img, path, opt.RewriteOptions)
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

func compactImage(ctx context.Context, img *imagefmt.Reader, path string, opt RewriteOptions) (*RewriteResult, error) {
	f, err := CreateAtomic(path, true)
	if err != nil {
		return nil, err
	}
	defer f.Abort()
	res, err := Rewrite(ctx, img, f, opt)
	if err != nil {
		return nil, err
	}
	if err := commitRewrite(f, res); err != nil {
		return nil, err
	}
	return res, nil
}

// compactDelta writes a new delta over img's base holding the chunks
// where img differs from it, with img's UUID and path hint, and renames
// it over the delta.
func compactDelta(ctx context.Context, img *imagefmt.Reader, path string, opt RewriteOptions) (*RewriteResult, error) {
	start := time.Now()
	hdr := img.Header()
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	// A free temporary name: CreateDelta creates the file itself.
	tf, err := os.CreateTemp(dir, "."+name+".part-*")
	if err != nil {
		return nil, fmt.Errorf("cloneio: create a temporary file next to %s: %w", path, err)
	}
	tmp := tf.Name()
	tf.Close()
	os.Remove(tmp)
	defer os.Remove(tmp) // a no-op once renamed
	comp := keptCompression(img)
	if opt.Compression != nil {
		comp = *opt.Compression
	}
	e, err := imagefmt.CreateDelta(ctx, tmp, img.Base(), hdr.Base.PathHint, imagefmt.Diff(img.Base(), img),
		imagefmt.CommitOptions{Message: opt.Message, Metadata: hdr.Metadata},
		imagefmt.EditorOptions{Compression: comp, ToolVersion: opt.ToolVersion, UUID: hdr.UUID})
	if err != nil {
		return nil, err
	}
	ci := e.Reader().Commit()
	if err := e.Close(); err != nil {
		return nil, err
	}
	if ci.Digest != img.Digest() {
		return nil, fmt.Errorf("%w: the compacted delta has digest %s, the delta %s", imagefmt.ErrCorrupt,
			imagefmt.DigestString(ci.Digest), imagefmt.DigestString(img.Digest()))
	}
	st, err := os.Stat(tmp)
	if err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("cloneio: %w", err)
	}
	syncDir(dir)
	return &RewriteResult{Digest: ci.Digest, ImageBytes: st.Size(), StoredChunks: ci.StoredChunks,
		Recompressed: ci.ChunksChanged, Compression: comp, Wall: time.Since(start)}, nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// checkNoScratch refuses to rewrite or commit to an image that has
// changes waiting in a read-write mount's scratch file: they were made
// over its newest commit, and the rewrite would leave them behind.
func checkNoScratch(path string) error {
	s := imagefmt.ScratchPath(path)
	if _, err := os.Lstat(s); err == nil {
		return fmt.Errorf("%w: %s holds changes a read-write mount of %s did not commit; commit or drop them first (dimg recover %s)",
			ErrPendingChanges, s, path, path)
	}
	return nil
}
