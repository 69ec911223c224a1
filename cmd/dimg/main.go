// Command dimg captures, restores, clones, mounts and deploys disk images.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/cloneio"
	"github.com/dimg-project/dimg/imagefmt"
)

// version is set by the Makefile through -ldflags.
var version = "dev"

// Exit codes, decided here and nowhere else.
const (
	exitOK       = 0
	exitFailure  = 1 // the operation failed
	exitUsage    = 2 // bad command line
	exitCorrupt  = 3 // the image (or target) failed verification
	exitPartial  = 4 // some targets/parts succeeded, some failed (multicast)
	exitCanceled = 130
)

// usageError marks command-line mistakes so they exit with exitUsage.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// exitCodeError lets a command choose a specific exit code with a message.
type exitCodeError struct {
	code int
	err  error
}

func (e exitCodeError) Error() string { return e.err.Error() }
func (e exitCodeError) Unwrap() error { return e.err }

// commands lists every subcommand constructor. Each lives in its own file.
var commands = []func() *cobra.Command{
	newCaptureCmd,
	newRestoreCmd,
	newInfoCmd,
	newVerifyCmd,
	newCloneCmd,
	newMountCmd, newLsCmd, newCatCmd, newExtractCmd,
	newSendCmd, newReceiveCmd,
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "dimg",
		Short: "Capture, restore, clone, mount and deploy disk images",
		Long: `dimg images whole disks into compact .dimg files: filesystem-aware, compressed in
independent checksummed chunks, streamable to write and random access to read.

An image can be restored to a disk or file, mounted read-only to browse or pull single files out,
listed and extracted offline, and verified at any time.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().BoolP("quiet", "q", false, "no progress output")
	for _, c := range commands {
		root.AddCommand(c())
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	return root
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go exitAfterInterrupt(ctx)
	// DIMG_CPUPROFILE=file writes a CPU profile (for `go tool pprof`).
	if path := os.Getenv("DIMG_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	root := newRootCmd()
	err := root.ExecuteContext(ctx)
	pprof.StopCPUProfile()
	os.Exit(exitCode(err, ctx))
}

// exitCode prints err and maps it to the process exit status.
func exitCode(err error, ctx context.Context) int {
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(os.Stderr, "dimg: %v\n", err)
	var ue usageError
	var ce exitCodeError
	switch {
	case errors.As(err, &ce):
		return ce.code
	case errors.As(err, &ue) || isCobraUsage(err):
		fmt.Fprintln(os.Stderr, "Run 'dimg --help' for usage.")
		return exitUsage
	case ctx.Err() != nil || errors.Is(err, context.Canceled):
		return exitCanceled
	case errors.Is(err, imagefmt.ErrChecksum) || errors.Is(err, imagefmt.ErrCorrupt) ||
		errors.Is(err, imagefmt.ErrTruncated) || errors.Is(err, cloneio.ErrVerify):
		// Damage found, whichever command found it (and however early:
		// a damaged footer is found by the open).
		return exitCorrupt
	}
	return exitFailure
}

// isCobraUsage recognises the command-line errors cobra makes itself
// before any of our code runs (it has no typed errors for them).
func isCobraUsage(err error) bool {
	return strings.HasPrefix(err.Error(), "unknown command ")
}

// interruptGrace is how long a command has after Ctrl-C (or SIGTERM) to
// stop by itself. Most stop at once; one blocked in a read that no context
// reaches (a stalled pipe on stdin, a FIFO) would otherwise ignore Ctrl-C
// for ever.
const interruptGrace = 3 * time.Second

var interrupt struct {
	sync.Mutex
	cleanups map[int]func()
	next     int
	keep     bool // the command stops on its own however long it takes (mount)
}

// onInterrupt registers f (removing a temporary file) to run if the
// process must be ended after an interrupt; call the returned func when
// the file is committed or gone.
func onInterrupt(f func()) (remove func()) {
	interrupt.Lock()
	defer interrupt.Unlock()
	if interrupt.cleanups == nil {
		interrupt.cleanups = map[int]func(){}
	}
	id := interrupt.next
	interrupt.next++
	interrupt.cleanups[id] = f
	return func() {
		interrupt.Lock()
		delete(interrupt.cleanups, id)
		interrupt.Unlock()
	}
}

// keepRunningOnInterrupt exempts this process from exitAfterInterrupt: a
// mount must not be torn down under open files; it unmounts when it can.
func keepRunningOnInterrupt() {
	interrupt.Lock()
	interrupt.keep = true
	interrupt.Unlock()
}

// exitAfterInterrupt ends the process interruptGrace after ctx is
// cancelled by a signal, if the command has not returned by then, running
// the registered cleanups first so nothing half-written stays behind.
func exitAfterInterrupt(ctx context.Context) {
	<-ctx.Done()
	time.Sleep(interruptGrace)
	interrupt.Lock()
	if interrupt.keep {
		interrupt.Unlock()
		return
	}
	for _, f := range interrupt.cleanups {
		f()
	}
	fmt.Fprintln(os.Stderr, "dimg: interrupted")
	os.Exit(exitCanceled)
}
