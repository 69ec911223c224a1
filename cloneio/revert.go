package cloneio

import (
	"context"
	"fmt"
	"time"

	"github.com/dimg-project/dimg/imagefmt"
)

// RevertOptions configure Revert.
type RevertOptions struct {
	// Message is the new commit's message; empty: "revert to commit N".
	Message string
	// BasePath is where a delta image's base is, instead of its path hint.
	BasePath string
	Time     time.Time // zero: now
}

// Revert appends to the image file at path a commit whose disk is that
// of its commit n: every chunk that differs is written again (history is
// kept: commits after n stay readable). It takes the image's writer lock,
// so it is refused while a read-write mount or another writer holds it.
// Reverting to the newest commit makes an empty commit.
func Revert(ctx context.Context, path string, n int64, opt RevertOptions) (imagefmt.CommitInfo, error) {
	lock, err := imagefmt.LockWriter(path)
	if err != nil {
		return imagefmt.CommitInfo{}, err
	}
	defer lock.Unlock()
	if err := checkNoScratch(path); err != nil {
		return imagefmt.CommitInfo{}, err
	}
	// The chain opens the base of a delta at the commit it was made over.
	cur, err := imagefmt.OpenChain(path, imagefmt.ReaderOptions{BasePath: opt.BasePath})
	if err != nil {
		return imagefmt.CommitInfo{}, err
	}
	defer cur.Close()
	if n < 1 || n > cur.Commits() {
		return imagefmt.CommitInfo{}, fmt.Errorf("%s has commits 1 to %d; there is no commit %d", path, cur.Commits(), n)
	}
	e, err := imagefmt.OpenEditor(path, imagefmt.EditorOptions{Base: cur.Base()})
	if err != nil {
		return imagefmt.CommitInfo{}, err
	}
	defer e.Close()
	old, err := imagefmt.OpenOptions(path, imagefmt.ReaderOptions{Commit: n, Base: cur.Base()})
	if err != nil {
		return imagefmt.CommitInfo{}, err
	}
	defer old.Close()
	if opt.Message == "" {
		opt.Message = fmt.Sprintf("revert to commit %d", n)
	}
	// The disk description of commit n comes back too.
	ci, err := e.Commit(ctx, imagefmt.Diff(e.Reader(), old), imagefmt.CommitOptions{
		Message: opt.Message, Time: opt.Time, Metadata: old.Header().Metadata})
	if err != nil {
		return ci, err
	}
	if ci.Digest != old.Digest() {
		return ci, fmt.Errorf("%w: commit %d has digest %s, commit %d %s", imagefmt.ErrCorrupt, ci.Number,
			imagefmt.DigestString(ci.Digest), n, imagefmt.DigestString(old.Digest()))
	}
	return ci, e.Close()
}
