package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/dimg-project/dimg/cloneio"
	"github.com/dimg-project/dimg/cloneio/multicast"
	"github.com/dimg-project/dimg/cloneio/source"
	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/fsdrivers/parttable"
	"github.com/dimg-project/dimg/imagefmt"
)

// Exit codes. exitStatus decides them from the error, for every command;
// commands return errors and never choose a code.
const (
	exitOK       = 0
	exitFailure  = 1 // the operation failed (a missing file, an I/O error, a device in use)
	exitUsage    = 2 // bad command line
	exitCorrupt  = 3 // something read is damaged, or a copy did not verify
	exitPartial  = 4 // some multicast receivers verified their copy, others failed
	exitCanceled = 130
)

// exitStatusHelp is the table above as the root --help and README show it.
const exitStatusHelp = `Exit status (the same for every command):
  0    success
  1    failure: a missing or unreadable file, an I/O error, a device in use, a target too small
  2    bad command line
  3    damage: IMAGE is not a dimg image, or is truncated or fails a checksum; a partition
       table or filesystem in it is corrupt; or a target does not read back as written
  4    partial success: some multicast receivers verified their copy, others failed
  130  interrupted (Ctrl-C, SIGTERM)`

// damage lists the errors that mean "something read is damaged" (exit 3),
// whichever layer found them and however early: a damaged footer is found
// by the open, a damaged chunk by the read that needs it.
var damage = []error{
	imagefmt.ErrFormat, imagefmt.ErrCorrupt, imagefmt.ErrChecksum, imagefmt.ErrTruncated,
	parttable.ErrCorrupt, fsdrivers.ErrCorrupt,
	cloneio.ErrVerify, multicast.ErrMismatch,
}

// usageError marks command-line mistakes so they exit with exitUsage.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// childError is an error a dimg child process reported as text (mount
// --background re-runs dimg detached), with the exit status the child
// decided from the real error: the parent exits the same way.
type childError struct {
	msg  string
	code int
}

func (e childError) Error() string { return e.msg }

// signalGrace is how long an image that ended early waits for a signal
// that may be on its way (see exitCode).
const signalGrace = 250 * time.Millisecond

// exitCode prints err and maps it to the process exit status.
func exitCode(err error, ctx context.Context) int {
	if err == nil {
		return exitOK
	}
	// Ctrl-C signals every process of a pipeline at once: the one feeding
	// standard input (cat, ssh) may die, and its end of file reach us,
	// before our own signal is handled. Give that signal a moment, so an
	// interrupt is reported as one (130) and not as a truncated image (3).
	if ctx.Err() == nil && endedEarly(err) {
		select {
		case <-ctx.Done():
		case <-time.After(signalGrace):
		}
	}
	if ctx.Err() != nil && !errors.As(err, new(usageError)) {
		// What failed after the signal failed because of it ("context
		// canceled", an input cut short): say what happened.
		fmt.Fprintln(os.Stderr, "dimg: interrupted")
	} else {
		fmt.Fprintf(os.Stderr, "dimg: %v\n", err)
	}
	code := exitStatus(err, ctx.Err() != nil)
	if code == exitUsage {
		fmt.Fprintln(os.Stderr, "Run 'dimg --help' for usage.")
	}
	return code
}

// exitStatus is the one place an error becomes an exit code (see
// exitStatusHelp). interrupted is whether a signal cancelled the command.
func exitStatus(err error, interrupted bool) int {
	var ue usageError
	var ce childError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ce) && ce.code > 0:
		return ce.code
	case errors.As(err, &ue) || errors.Is(err, source.ErrSpec) || isCobraUsage(err):
		return exitUsage
	case interrupted || errors.Is(err, context.Canceled):
		return exitCanceled
	case errors.Is(err, multicast.ErrPartial):
		return exitPartial
	}
	for _, d := range damage {
		if errors.Is(err, d) {
			return exitCorrupt
		}
	}
	return exitFailure
}

// endedEarly reports whether err says an image ended before it should
// (rule end).
func endedEarly(err error) bool {
	var re *imagefmt.RuleError
	return errors.As(err, &re) && re.Rule == imagefmt.RuleEnd
}

// isCobraUsage recognises the command-line errors cobra makes itself
// before any of our code runs (it has no typed errors for them).
func isCobraUsage(err error) bool {
	return strings.HasPrefix(err.Error(), "unknown command ")
}
