// Command dimg captures, restores, clones, mounts and deploys disk images.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// version is set by the Makefile through -ldflags.
var version = "dev"

// commands lists every subcommand constructor. Each lives in its own file.
var commands = []func() *cobra.Command{
	newCaptureCmd,
	newRestoreCmd,
	newInfoCmd,
	newVerifyCmd,
	newCloneCmd,
	newMountCmd, newRecoverCmd, newLsCmd, newCatCmd, newExtractCmd,
	newSendCmd, newReceiveCmd, newPushCmd,
	newPersonalizeCmd,
	newAddCmd, newPutCmd, newRmCmd, newMkdirCmd, newMvCmd, newChmodCmd, newChownCmd, newLnCmd,
	newLogCmd, newRevertCmd, newFlattenCmd, newCompactCmd, newConvertCmd,
	newCacheCmd,
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "dimg",
		Short: "Capture, restore, clone, mount and deploy disk images",
		Long: `dimg images whole disks into compact .dimg files: filesystem-aware, compressed in
independent checksummed chunks, streamable to write and random access to read.

An image can be restored to a disk or file, mounted read-only to browse or pull single files out,
listed and extracted offline, and verified at any time. Mounted read-write it takes changes as new
commits (or a delta image over it); every commit stays readable (log, --at N, revert), and flatten,
compact and convert rewrite an image as one commit.

` + exitStatusHelp,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().BoolP("quiet", "q", false, "no progress output")
	addRemoteFlags(root)
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
	remoteFetch.summary(root)
	pprof.StopCPUProfile()
	os.Exit(exitCode(err, ctx))
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
