package imagefmt

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// A Session is an image opened for writing through a copy-on-write
// Overlay: what `dimg mount --rw` and `dimg recover` work with. It holds
// the image's writer lock (LockWriter) from OpenSession to Commit, Discard
// or Close, keeps the changes in a scratch file next to the image
// (ScratchPath) and ends with one commit of all of them, appended to the
// image or written as a new delta image over it.
//
// Changes survive a crash: once Overlay.Sync returned they are in the
// scratch file, and the next OpenSession of the same image takes them up
// (Recovered says so) as long as the image is still at the commit they
// were made over. A crash after a commit but before the scratch file was
// removed is recognised by the session id the commit records, and the
// leftover file is removed instead of being offered again.

// ScratchPath is where a session keeps the changes to target (the image,
// or the delta image of a delta session) until they are committed:
// "TARGET.scratch", next to it (to the file, when target is a symbolic
// link).
func ScratchPath(target string) string { return canonical(target) + ".scratch" }

// SessionOptions configure OpenSession; the zero value edits the image in
// place.
type SessionOptions struct {
	// Delta, if set, is the path of a new delta image that takes the
	// changes at Commit: the image itself is never written. The lock and
	// the scratch file are then the delta's.
	Delta string
	// Reader configures the reader of the image (the base).
	Reader ReaderOptions
	// Overlay configures the overlay.
	Overlay OverlayOptions
	// ToolVersion is recorded in a new delta image's header.
	ToolVersion string
}

// RecoveredChanges describes changes an earlier session left in the
// scratch file (it was killed, crashed or lost power after syncing them)
// and this one took up.
type RecoveredChanges struct {
	Scratch ScratchInfo
	// Chunks is how many chunks the recovered changes cover.
	Chunks int
	// Holder is the process that made them, when its lock file says so.
	Holder *LockHolder
}

// Session is an image open for writing. Its methods other than Disk and
// Base must not run concurrently with each other.
type Session struct {
	image, delta string
	lock         *WriterLock
	editor       *Editor // in-place sessions: holds the image's file lock
	base         *Reader // the commit the changes apply to
	chain        *Reader // opened here and closed with the session: a delta session's base, an edited delta's chain
	ovl          *Overlay
	toolVersion  string
	done         bool

	// Recovered is set when the session took up an earlier session's
	// changes.
	Recovered *RecoveredChanges
	// StaleScratchRemoved: a scratch file whose changes an earlier session
	// had already committed (it crashed before removing it) was removed.
	StaleScratchRemoved bool
}

// ErrVersion1 is wrapped when a version 1 image is asked to take changes:
// it cannot hold commits.
var ErrVersion1 = errors.New("imagefmt: a version 1 image cannot take commits")

// OpenSession opens the image at path for writing. It fails with a
// *LockedError when another writer holds the image (or the delta), wraps
// ErrVersion1 for a version 1 image, and wraps ErrBaseMismatch when a
// scratch file holds changes made over another state of the image (they
// cannot be applied; DropScratch drops them).
func OpenSession(path string, opt SessionOptions) (*Session, error) {
	target := path
	if opt.Delta != "" {
		target = opt.Delta
	}
	lock, err := LockWriter(target)
	if err != nil {
		return nil, err
	}
	s := &Session{image: path, delta: opt.Delta, toolVersion: opt.ToolVersion, lock: lock}
	if err := s.open(target, opt); err != nil {
		s.release()
		return nil, err
	}
	return s, nil
}

// open opens the base and the overlay, taking up what an earlier session
// left in the scratch file.
func (s *Session) open(target string, opt SessionOptions) error {
	if err := s.openBase(opt); err != nil {
		return err
	}
	hdr := s.base.Header()
	ob := OverlayBase{R: s.base, Size: hdr.DiskSize, ChunkSize: hdr.ChunkSize, ID: BaseIdentity(hdr.UUID, s.base.Digest())}
	scratch := ScratchPath(target)
	info, err := ReadScratchInfo(scratch)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s.ovl, err = NewOverlay(scratch, ob, opt.Overlay)
		return err
	case err != nil:
		return fmt.Errorf("%w (drop it with dimg recover --drop; its changes are lost)", err)
	case info.BaseID == ob.ID:
		if s.ovl, err = OpenRecovered(scratch, ob, opt.Overlay); err != nil {
			return err
		}
		s.Recovered = &RecoveredChanges{Scratch: *info, Chunks: s.ovl.DirtyChunks(), Holder: s.lock.Previous}
		return nil
	case s.committed(info.Session):
		if err := RemoveScratch(scratch); err != nil {
			return err
		}
		s.StaleScratchRemoved = true
		s.ovl, err = NewOverlay(scratch, ob, opt.Overlay)
		return err
	}
	return fmt.Errorf("%w: %s holds changes made over %s, which is now at commit %d; they cannot be applied on top of it: drop them with dimg recover --drop",
		ErrBaseMismatch, scratch, s.describeBase(info.BaseID), s.base.Commit().Number)
}

// openBase opens the commit the changes apply to: through an Editor for
// an in-place session (it takes the image file's own lock; a delta image
// is edited over its chain of bases), read-only (a whole chain) for a
// delta session, whose target must not exist yet.
func (s *Session) openBase(opt SessionOptions) error {
	if s.delta == "" {
		eopt := EditorOptions{Reader: opt.Reader}
		if ref, err := ReadBaseRef(s.image); err != nil {
			return err
		} else if ref != nil {
			chain, err := OpenChain(s.image, opt.Reader)
			if err != nil {
				return err
			}
			s.chain, eopt.Base = chain, chain.Base()
		}
		e, err := OpenEditor(s.image, eopt)
		if err != nil {
			return s.explainV1(err)
		}
		s.editor, s.base = e, e.Reader()
		return nil
	}
	if _, err := os.Lstat(s.delta); err == nil {
		return fmt.Errorf("imagefmt: %s already exists; a delta session writes a new file", s.delta)
	}
	r, err := OpenChain(s.image, opt.Reader)
	if err != nil {
		return err
	}
	s.base, s.chain = r, r
	if r.Header().Version < Version2 {
		return fmt.Errorf("%w: %s is a version 1 image; a delta needs a version 2 base", ErrVersion1, s.image)
	}
	return nil
}

// explainV1 turns OpenEditor's refusal of a version 1 image into
// ErrVersion1; other errors pass.
func (s *Session) explainV1(err error) error {
	r, rerr := OpenOptions(s.image, ReaderOptions{})
	if rerr != nil {
		return err
	}
	defer r.Close()
	if r.Header().Version < Version2 {
		return fmt.Errorf("%w: %s is a version 1 image", ErrVersion1, s.image)
	}
	return err
}

// committed reports whether the changes of scratch session id were
// already committed to the target: the newest commit records the id.
func (s *Session) committed(id [16]byte) bool {
	if id == ([16]byte{}) {
		return false
	}
	if s.delta == "" {
		return s.base.Commit().Session == id
	}
	// openBase refused an existing delta, so the delta was never made.
	return false
}

// describeBase names the commit a base identity stands for, when the
// image's history still has it.
func (s *Session) describeBase(id string) string {
	log, _ := s.base.Log()
	hdr := s.base.Header()
	for _, c := range log {
		if BaseIdentity(hdr.UUID, c.Digest) == id {
			return fmt.Sprintf("commit %d of %s", c.Number, s.image)
		}
	}
	return shortID(id)
}

// Disk is the writable disk: the base commit with the session's changes.
func (s *Session) Disk() *Overlay { return s.ovl }

// Base is the commit the changes apply to.
func (s *Session) Base() *Reader { return s.base }

// Target is the file the changes go to: the image, or the new delta.
func (s *Session) Target() string {
	if s.delta != "" {
		return s.delta
	}
	return s.image
}

// Commit stores every change as one commit, with message: a new commit of
// the image, or the delta image's first commit. It returns the commit and
// whether there was one: without changes the image gets none (a delta
// session still writes its delta, equal to the base). The session ends
// when Commit succeeds; when it fails, the changes stay in the scratch
// file and the session stays open (Commit again, Discard or Close).
func (s *Session) Commit(ctx context.Context, message string) (CommitInfo, bool, error) {
	if s.done {
		return CommitInfo{}, false, ErrOverlayClosed
	}
	copt := CommitOptions{Message: message, Session: s.ovl.Info().Session}
	var info CommitInfo
	changed := s.ovl.DirtyChunks() > 0
	if s.delta == "" {
		c := s.editor.Committer(copt)
		if err := s.ovl.Commit(ctx, message, c); err != nil {
			return CommitInfo{}, false, err
		}
		if changed {
			info = s.editor.Reader().Commit()
		}
	} else {
		dc := &DeltaCommitter{Path: s.delta, Base: s.base, PathHint: baseHint(s.image, s.delta), Commit: copt, Options: EditorOptions{ToolVersion: s.toolVersion}}
		if err := s.ovl.Commit(ctx, message, dc); err != nil {
			return CommitInfo{}, false, err
		}
		if dc.Editor == nil {
			// No changes: the delta is still made, over nothing.
			e, err := CreateDelta(ctx, s.delta, s.base, dc.PathHint, func(func(ChunkChange, error) bool) {}, copt, dc.Options)
			if err != nil {
				return CommitInfo{}, false, err
			}
			dc.Editor = e
		}
		info = dc.Editor.Reader().Commit()
		changed = true
		if err := dc.Editor.Close(); err != nil {
			return info, changed, err
		}
	}
	return info, changed, s.release()
}

// Discard drops every change (the scratch file goes) and ends the
// session.
func (s *Session) Discard() error {
	if s.done {
		return nil
	}
	err := s.ovl.Discard()
	if rerr := s.release(); err == nil {
		err = rerr
	}
	return err
}

// Close ends the session keeping its changes in the scratch file, for the
// next OpenSession or for dimg recover. A session without changes removes
// its scratch file: there is nothing to offer.
func (s *Session) Close() error {
	if s.done {
		return nil
	}
	var err error
	switch {
	case s.ovl == nil:
	case s.ovl.DirtyChunks() == 0:
		err = s.ovl.Discard()
	default:
		err = s.ovl.Close()
	}
	if rerr := s.release(); err == nil {
		err = rerr
	}
	return err
}

// release closes the editor, the base and the lock, in that order.
func (s *Session) release() error {
	s.done = true
	var errs []error
	if s.editor != nil {
		errs = append(errs, s.editor.Close())
	}
	if s.chain != nil {
		errs = append(errs, s.chain.Close())
	}
	errs = append(errs, s.lock.Unlock())
	return errors.Join(errs...)
}

// DropScratch removes the changes a session left for target (the image or
// a delta session's delta), under target's writer lock. It reports whether
// there were any.
func DropScratch(target string) (bool, error) {
	l, err := LockWriter(target)
	if err != nil {
		return false, err
	}
	defer l.Unlock()
	scratch := ScratchPath(target)
	if _, err := os.Lstat(scratch); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return true, RemoveScratch(scratch)
}

// baseHint is how a new delta names where its base is: relative to the
// delta's directory when both paths can say so (the pair can then move
// together), else absolute.
func baseHint(base, delta string) string {
	ab, err1 := filepath.Abs(base)
	ad, err2 := filepath.Abs(delta)
	if err1 != nil || err2 != nil {
		return base
	}
	if rel, err := filepath.Rel(filepath.Dir(ad), ab); err == nil {
		return rel
	}
	return ab
}
