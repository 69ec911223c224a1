package objstore

import (
	"context"
	"sync"
	"time"
)

// abortTimeout bounds the clean-up after a failure or Ctrl-C, when the
// upload's own context is already cancelled.
const abortTimeout = 30 * time.Second

// ending is the commit-or-abort state every Upload shares: an upload ends
// once, committed or aborted, and a later Abort (an interrupt's clean-up
// racing a failed Commit's own Abort) waits for the first one to finish
// rather than returning in its middle.
type ending struct {
	cancel context.CancelFunc // ends the upload's context

	endMu sync.Mutex // guards the fields below
	ended bool       // committed, or an abort has started
	// abortDone is closed when an Abort has finished (nil before one).
	abortDone chan struct{}
}

// isEnded reports whether the upload was committed or an abort started.
func (e *ending) isEnded() bool {
	e.endMu.Lock()
	defer e.endMu.Unlock()
	return e.ended
}

// committed records a successful commit and releases the upload's context.
func (e *ending) committed() {
	e.endMu.Lock()
	e.ended = true
	e.endMu.Unlock()
	e.cancel()
}

// abort runs stop for the first Abort only. A call after a commit returns
// at once; a call while another abort runs waits for it, at most
// abortTimeout.
func (e *ending) abort(stop func()) {
	e.endMu.Lock()
	if e.ended {
		wait := e.abortDone
		e.endMu.Unlock()
		if wait != nil {
			select {
			case <-wait:
			case <-time.After(abortTimeout):
			}
		}
		return
	}
	e.ended = true
	abortDone := make(chan struct{})
	e.abortDone = abortDone
	e.endMu.Unlock()
	defer close(abortDone)
	stop()
}
