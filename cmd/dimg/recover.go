package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/cloneio/source"
	"github.com/dimg-project/dimg/imagefmt"
)

type recoverFlags struct {
	commit  bool
	drop    bool
	message string
	delta   string
}

func newRecoverCmd() *cobra.Command {
	var fl recoverFlags
	cmd := &cobra.Command{
		Use:   "recover IMAGE",
		Short: "Commit or drop the changes a read-write mount left when it did not end cleanly",
		Long: `A read-write mount (dimg mount --rw) keeps its changes in IMAGE.scratch until it
is unmounted. If it never is (dimg was killed, the machine crashed or lost power),
what was synced (fsync, a filesystem's journal commit) is still there. recover
shows those changes; --commit commits them as a new commit of IMAGE (-m gives the
message), --drop drops them. The next 'dimg mount --rw IMAGE' also takes them up
by itself. With --delta NEW.dimg it is the changes of a 'mount --rw --delta
NEW.dimg' session: --commit writes NEW.dimg.

IMAGE is never left damaged: a crash during a commit leaves it at the commit before.`,
		Example: `  dimg recover golden.dimg
  dimg recover golden.dimg --commit -m "after the crash"
  dimg recover golden.dimg --drop`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runRecover(cmd, args[0], fl) },
	}
	f := cmd.Flags()
	f.BoolVar(&fl.commit, "commit", false, "commit the changes")
	f.BoolVar(&fl.drop, "drop", false, "drop the changes")
	f.StringVarP(&fl.message, "message", "m", "", "with --commit: the commit's message (default \"recovered changes\")")
	f.StringVar(&fl.delta, "delta", "", "the changes are those of a --delta `NEW.dimg` session")
	f.Int64("at", 0, "with --delta: the session made its delta over commit `N` of IMAGE (mount --rw --delta --at N)")
	addBaseFlag(cmd)
	return cmd
}

func runRecover(cmd *cobra.Command, imgPath string, fl recoverFlags) error {
	switch {
	case fl.commit && fl.drop:
		return usagef("recover: --commit or --drop, not both")
	case fl.message != "" && !fl.commit:
		return usagef("recover: --message needs --commit")
	case cmd.Flags().Changed("at") && fl.delta == "":
		return usagef("recover: --at needs --delta: only a delta session can be made over an older commit")
	}
	target := imgPath
	if fl.delta != "" {
		target = fl.delta
	}
	scratch := imagefmt.ScratchPath(target)
	// A mistyped IMAGE is an error, not "nothing to recover" with exit 0
	// (unless its changes outlived it: they can still be dropped).
	if _, err := os.Stat(imgPath); err != nil {
		if _, serr := os.Lstat(scratch); serr != nil {
			return err
		}
	}
	quiet, _ := cmd.Flags().GetBool("quiet")
	say := func(format string, a ...any) {
		if !quiet {
			fmt.Fprintf(os.Stderr, "dimg: "+format+"\n", a...)
		}
	}
	if fl.drop {
		dropped, err := imagefmt.DropScratch(target)
		switch {
		case err != nil:
			return err
		case dropped:
			say("dropped the changes in %s; %s is unchanged", scratch, imgPath)
		default:
			say("no changes to drop: %s does not exist", scratch)
		}
		return nil
	}
	if _, err := os.Lstat(scratch); errors.Is(err, fs.ErrNotExist) {
		say("nothing to recover: %s does not exist", scratch)
		return nil
	}
	ropt, err := imageOptions(cmd, source.Options{})
	if err != nil {
		return err
	}
	s, err := openSession(imgPath, fl.delta, imagefmt.ReaderOptions{Commit: ropt.Commit, BasePath: ropt.Base}, stderrLogger())
	if err != nil {
		return err
	}
	rc := s.Recovered
	if rc == nil || rc.Chunks == 0 {
		s.Discard()
		if s.StaleScratchRemoved {
			say("the changes in %s were already committed; removed the file", scratch)
		} else {
			say("nothing to recover: %s holds no saved changes", scratch)
		}
		return nil
	}
	if !fl.commit {
		say("%s holds %d changed chunks (up to %s) to %s, started %s%s", scratch, rc.Chunks,
			humanBytes(int64(rc.Chunks)*int64(rc.Scratch.ChunkSize)), imgPath, rc.Scratch.Created.Local().Format("2006-01-02 15:04:05"), holderNote(rc.Holder))
		say("run 'dimg recover %s --commit' to commit them, or --drop to drop them", recoverArgs(imgPath, fl.delta))
		return s.Close()
	}
	msg := fl.message
	if msg == "" {
		msg = "recovered changes"
	}
	info, _, err := s.Commit(context.WithoutCancel(cmd.Context()), msg)
	if err != nil {
		s.Close()
		return fmt.Errorf("commit to %s failed: %w; the changes stay in %s", target, err, scratch)
	}
	if fl.delta != "" {
		say("wrote %s: %d chunks (%s) changed over %s", fl.delta, info.ChunksChanged, humanBytes(info.BytesChanged), imgPath)
	} else {
		say("committed %d recovered chunks (%s) to %s as commit %d", info.ChunksChanged, humanBytes(info.BytesChanged), imgPath, info.Number)
	}
	return nil
}

func holderNote(h *imagefmt.LockHolder) string {
	if h == nil {
		return ""
	}
	return fmt.Sprintf(" by pid %d on %s (%s)", h.PID, h.Host, h.Command)
}
