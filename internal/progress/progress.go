// Package progress is the one way long operations report how far they are:
// a small interface the libraries call and the command line renders. The
// libraries never print; a nil Reporter means nobody is watching.
package progress

// Reporter receives counts from a long operation (capture, restore, clone,
// verify, send, receive). Implementations must be safe for concurrent use
// and return quickly: Add is called from hot loops.
type Reporter interface {
	// Start begins a phase ("capturing", "verifying", "repairing") whose
	// Adds will total about total bytes (0: unknown). A new Start resets
	// the count.
	Start(phase string, total int64)
	// Add counts n more bytes done in the current phase.
	Add(n int64)
}

// Noter is optionally implemented by a Reporter that can show a short
// status beside the counts, e.g. "3 receivers, loss 0.4 %".
type Noter interface {
	Note(status string)
}

// Or returns r, or a Reporter that does nothing when r is nil, so
// libraries call it without nil checks.
func Or(r Reporter) Reporter {
	if r == nil {
		return discard{}
	}
	return r
}

// Note passes status to r when it can show one.
func Note(r Reporter, status string) {
	if n, ok := r.(Noter); ok {
		n.Note(status)
	}
}

type discard struct{}

func (discard) Start(string, int64) {}
func (discard) Add(int64)           {}
