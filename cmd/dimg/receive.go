package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/cloneio"
	"github.com/dimg-project/dimg/cloneio/multicast"
)

func newReceiveCmd() *cobra.Command {
	var opt receiveFlags
	cmd := &cobra.Command{
		Use:   "receive TARGET",
		Short: "Receive an image sent with 'dimg send' and write it to a disk or file",
		Long: `Receive joins the multicast session announced on the rendezvous group and port,
writes the image it carries to TARGET, and reports the result to the sender.

TARGET is written as 'dimg restore' writes it: every chunk is checked against its
checksum before it is written; a file TARGET is created sparse under a temporary
name (an existing file is replaced only with --force); a block device must not be
mounted or in use and must be at least as large as the image's disk; chunks that
were in use and all zero are zeroed, chunks that were unused are left alone (or
discarded with --discard).

At the end the target is flushed and read back, and the image digest recomputed
from what it holds; only a target that matches becomes final. Packets of another
session or image are never written; with --key every packet must carry a valid
HMAC.

With --repair-url (an http(s) URL of the same image file; the server must support
Range requests) chunks missed entirely, for example by joining late, are fetched
from it instead of waiting for a repair round, and so is whatever is still missing
if the sender goes away.

Exit status: 0 when the target verified, 3 when it was written but does not match
the image, 1 when chunks are missing or the session failed.`,
		Example: `  dimg receive /dev/sda
  dimg receive --interface eth0 --key-file /etc/dimg/deploy.key /dev/nvme0n1
  dimg receive --repair-url http://server/images/disk.dimg --force disk.raw`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runReceive(cmd, args[0], opt)
		},
	}
	f := cmd.Flags()
	addRendezvousFlags(cmd, &opt.rv)
	f.StringVar(&opt.repairURL, "repair-url", "", "http(s) URL of the same image, to fetch missed chunks from")
	f.DurationVar(&opt.wait, "wait", 0, "give up if no session is found within this time (0: wait until interrupted)")
	f.DurationVar(&opt.senderTimeout, "sender-timeout", 10*time.Second, "treat a sender silent this long as gone")
	f.StringVar(&opt.session, "session", "", "join only this session id (hex, as 'dimg send' prints it)")
	f.BoolVar(&opt.force, "force", false, "replace TARGET if it is an existing regular file")
	f.BoolVar(&opt.discard, "discard", false, "block devices: discard (TRIM) ranges the image does not use")
	f.BoolVar(&opt.json, "json", false, "print the result as JSON")
	addPersonalizeFlags(cmd, &opt.pers)
	return cmd
}

type receiveFlags struct {
	rv                  rendezvousFlags
	repairURL, session  string
	wait, senderTimeout time.Duration
	force, discard      bool
	json                bool
	pers                personalizeFlags
}

func runReceive(cmd *cobra.Command, target string, opt receiveFlags) error {
	key, err := opt.rv.secret()
	if err != nil {
		return err
	}
	if _, err := opt.pers.options(opt.rv.iface); err != nil {
		return err
	}
	var session uint64
	if opt.session != "" {
		if session, err = strconv.ParseUint(opt.session, 16, 64); err != nil || session == 0 {
			return usagef("--session %q: want the hex id 'dimg send' prints", opt.session)
		}
	}
	prog := newProgress(cmd, "receive")
	// Open the target here so an interrupt that outlasts Receive's own
	// cleanup still removes a file target's temporary file.
	topt := cloneio.TargetOptions{Force: opt.force, Discard: opt.discard}
	var unregister func()
	defer func() {
		if unregister != nil {
			unregister()
		}
	}()
	openTarget := func(p string, size int64, sectorSize int) (*cloneio.Target, error) {
		t, err := cloneio.OpenTarget(p, size, sectorSize, topt)
		if err == nil {
			unregister = onInterrupt(t.Abort)
		}
		return t, err
	}
	res, err := multicast.Receive(cmd.Context(), target, multicast.ReceiveOptions{
		OpenTarget: openTarget,
		Group:      opt.rv.group, Port: opt.rv.port, Interface: opt.rv.iface, Key: key, RepairURL: opt.repairURL,
		Wait: opt.wait, SenderTimeout: opt.senderTimeout, Session: session,
		Progress: prog,
	})
	prog.Finish()
	if res != nil {
		if opt.json {
			if perr := printJSON(res); perr != nil {
				return perr
			}
		} else {
			printReceiveSummary(os.Stdout, res)
			printLayout(cmd, res.Layout)
		}
	}
	if err == nil {
		// {n} comes from --index: the multicast session does not number
		// its receivers.
		err = personalizeTarget(cmd, &opt.pers, opt.rv.iface, target)
	}
	return err // ErrMismatch exits 3 (exitStatus)
}

func printReceiveSummary(w io.Writer, r *multicast.ReceiveResult) {
	fmt.Fprintf(w, "%s: %s from %s (session %s, image %s)\n", r.Target, r.Result, r.Sender, r.Session, r.ImageID)
	fmt.Fprintf(w, "wrote %s of a %s disk in %s (verify %s); %d packets, loss %.2f%%, %d repair packets, %d blocks rebuilt from parity",
		humanBytes(r.BytesWritten), humanBytes(r.DiskSize), r.Duration.Round(time.Millisecond), r.Verify.Round(time.Millisecond),
		r.Packets, r.LossPct, r.RepairPackets, r.Reconstructed)
	if r.Fetched > 0 {
		fmt.Fprintf(w, ", %d chunks from the repair URL", r.Fetched)
	}
	fmt.Fprintln(w)
	if d := r.Dropped; d.Foreign+d.BadAuth+d.Malformed > 0 {
		fmt.Fprintf(w, "dropped: %d of another session, %d failed authentication, %d malformed\n", d.Foreign, d.BadAuth, d.Malformed)
	}
	if r.Message != "" {
		fmt.Fprintln(w, r.Message)
	}
	if len(r.Missing) > 0 {
		what := "chunks"
		if r.Result == "incomplete" {
			what = "objects (image order)"
		}
		fmt.Fprintf(w, "%s: %s\n", what, formatRanges(r.Missing, r.MissingCount))
	}
	if !r.Acknowledged {
		fmt.Fprintln(w, "the sender did not confirm it got this result")
	}
}
