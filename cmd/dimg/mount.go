package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/cloneio/remote"
	"github.com/dimg-project/dimg/cloneio/source"
	"github.com/dimg-project/dimg/fusefs"
)

type mountFlags struct {
	background bool
	allowOther bool
	debug      bool
	logFile    string
	readyFD    int // set in the detached child: where to say "ready"

	rw      bool   // read-write (mount_rw.go)
	message string // the commit's message
	discard bool   // drop the changes at unmount
	delta   string // write the changes to this new delta image
	raw     bool   // --raw: writable raw images instead of writable trees

	at   int64  // --at: the commit to show (read-only) or to make a delta over
	base string // --base: where a delta IMAGE's base is
}

func newMountCmd() *cobra.Command {
	var fl mountFlags
	cmd := &cobra.Command{
		Use:   "mount IMAGE DIR",
		Short: "Mount an image: the raw disk, each partition, each filesystem's files; --rw to change it",
		Long: `Mount serves IMAGE on the empty directory DIR through FUSE, read-only unless --rw:

  DIR/disk.img   the whole disk, raw
  DIR/pN.img     partition N, raw, exactly its bytes (the kernel can loop-mount it:
                 mount -o ro,loop DIR/p2.img /mnt)
  DIR/pN/        partition N's files, when dimg reads its filesystem (ext2/3/4,
                 FAT12/16/32, NTFS): types, sizes, modes, owners, times, link
                 counts, symlinks, extended attributes (getfattr), sparse files

Only the chunks a read touches are decompressed, and the kernel caches what it read.
Mount stays in the foreground until DIR is unmounted (umount DIR, fusermount3 -u DIR)
or it gets Ctrl-C; with --background it returns once the mount is ready. A read of
a damaged chunk fails with EIO (and a log line naming the chunk), never wrong bytes.

DIR must be empty and must not contain IMAGE. With --at N it shows commit N of
IMAGE (dimg log lists them) instead of the newest; a delta image shows the disk it
composes with the images under it (--base PATH when its base moved).

` + mountRWHelp,
		Example: `  mkdir /mnt/backup
  dimg mount backup.dimg /mnt/backup
  dimg mount --background backup.dimg /mnt/backup && ls /mnt/backup/p2/etc
  cp -a /mnt/backup/p2/home/alice /srv/restore/
  umount /mnt/backup

  dimg mount --rw -m "add drivers" --background golden.dimg /mnt/golden
  cp -a drivers /mnt/golden/p2/opt/ && umount /mnt/golden   # one commit to golden.dimg

  dimg mount --rw --raw --background golden.dimg /mnt/golden
  ntfs-3g /mnt/golden/p3.img /mnt/win && cp -a tools /mnt/win/ && umount /mnt/win /mnt/golden

  dimg mount --at 2 --background golden.dimg /mnt/old   # commit 2, read-only`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error { return runMount(cmd, args[0], args[1], fl) },
	}
	f := cmd.Flags()
	f.BoolVar(&fl.background, "background", false, "return once mounted; the mount keeps running detached (its log lines go to --log, else nowhere)")
	f.BoolVar(&fl.allowOther, "allow-other", false, "let other users access the mount (permissions are checked)")
	f.BoolVar(&fl.debug, "debug", false, "log every FUSE request")
	f.StringVar(&fl.logFile, "log", "", "append log lines (I/O errors) to this file instead of stderr")
	f.IntVar(&fl.readyFD, "ready-fd", 0, "internal: descriptor to report readiness on")
	f.MarkHidden("ready-fd")
	f.BoolVar(&fl.rw, "rw", false, "mount read-write: the files of ext2/3/4 and FAT partitions (pN/) and the other partitions' pN.img take writes, committed to IMAGE at unmount")
	f.StringVarP(&fl.message, "message", "m", "", "with --rw: the commit's message")
	f.BoolVar(&fl.discard, "discard", false, "with --rw: drop the changes at unmount instead of committing them")
	f.BoolVar(&fl.raw, "raw", false, "with --rw: no writable file trees; every pN.img and disk.img takes writes (for the kernel's or ntfs-3g's own driver)")
	f.StringVar(&fl.delta, "delta", "", "with --rw: leave IMAGE untouched and write the changes to the new delta image `NEW.dimg`")
	addImageFlags(cmd)
	return cmd
}

// mountSession is a running mount: what it shows, notes to print once it
// is ready, and how to end it once unmounted.
type mountSession struct {
	m       *fusefs.Mounted
	summary string
	notes   []string
	finish  func() error
}

func runMount(cmd *cobra.Command, imgPath, dir string, fl mountFlags) error {
	ropt, err := imageOptions(cmd, source.Options{})
	if err != nil {
		return err
	}
	fl.at, fl.base = ropt.Commit, ropt.Base
	if err := checkMountFlags(fl); err != nil {
		return err
	}
	if fl.rw && remote.IsURL(imgPath) {
		return usagef("mount: --rw writes commits into IMAGE, which must be a local file; %s is a URL (mount it read-only, or download it first)", imgPath)
	}
	if fl.background && fl.readyFD == 0 {
		quiet, _ := cmd.Flags().GetBool("quiet")
		return mountBackground(cmd, imgPath, dir, fl, quiet)
	}
	var ready *os.File
	if fl.readyFD != 0 {
		ready = os.NewFile(uintptr(fl.readyFD), "ready")
		defer ready.Close()
	}
	var ms *mountSession
	if fl.rw {
		ms, err = startMountRW(cmd, imgPath, dir, fl)
	} else {
		ms, err = startMount(cmd, imgPath, dir, fl)
	}
	if err != nil {
		if ready != nil {
			fmt.Fprintf(ready, "%v\n", err)
		}
		return err
	}
	quiet, _ := cmd.Flags().GetBool("quiet")
	if ready != nil {
		// Notes first, one a line; "ok" last (see mountBackground).
		for _, n := range ms.notes {
			fmt.Fprintln(ready, n)
		}
		fmt.Fprintln(ready, "ok")
		ready.Close()
	} else if !quiet {
		for _, n := range ms.notes {
			fmt.Fprintf(os.Stderr, "dimg: %s\n", n)
		}
		fmt.Fprintf(os.Stderr, "dimg: %s mounted on %s: %s\n", imgPath, dir, ms.summary)
		fmt.Fprintf(os.Stderr, "dimg: press Ctrl-C or run 'umount %s' to unmount\n", dir)
	}
	// Ctrl-C unmounts, but only once no file under DIR is open: the
	// process must outlive the grace after which other commands are ended.
	keepRunningOnInterrupt()
	ms.m.Wait()
	return ms.finish()
}

// startMount opens the image and mounts it read-only.
func startMount(cmd *cobra.Command, imgPath, dir string, fl mountFlags) (*mountSession, error) {
	// Refuse a bad mountpoint before the (possibly slow) image open.
	imgFile := imgPath
	if remote.IsURL(imgPath) {
		imgFile = "" // not a file that could be under the mountpoint
	}
	if err := fusefs.CheckMountpoint(dir, imgFile); err != nil {
		return nil, err
	}
	log, err := mountLogger(fl.logFile)
	if err != nil {
		return nil, err
	}
	src, err := openSource(cmd, imgPath, log)
	if err != nil {
		return nil, err
	}
	d, err := src.Layout()
	if err != nil {
		src.Close()
		return nil, err
	}
	abs := ""
	if imgFile != "" {
		abs, _ = filepath.Abs(imgFile)
	}
	m, err := fusefs.Mount(cmd.Context(), dir, src, src.Size(), d.Parts, fusefs.Options{
		ImagePath:  abs,
		ImageTime:  src.ModTime(),
		Logger:     log,
		AllowOther: fl.allowOther,
		Debug:      fl.debug,
	})
	if err != nil {
		src.Close()
		return nil, err
	}
	ms := &mountSession{m: m, summary: mountedList(src), finish: src.Close}
	if imgFile == "" {
		// Over a network, fetch what a first look will read (superblocks,
		// tables, the directories near the roots) in the background; it
		// stops before the image is closed.
		ctx, cancel := context.WithCancel(cmd.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			res := src.Prefetch(ctx, source.PrefetchOptions{})
			log.Debug("prefetched filesystem metadata", "dirs", res.Dirs, "entries", res.Entries, "wall", res.Wall)
		}()
		ms.finish = func() error {
			cancel()
			<-done
			return src.Close()
		}
	}
	return ms, nil
}

// mountedList says what the mount shows: "disk.img, p1.img p1/ (fat32), p2.img".
func mountedList(src *source.Source) string {
	s := []string{"disk.img"}
	d, _ := src.Layout() // read by startMount
	for i := range d.Parts {
		p := &d.Parts[i]
		if p.Extended {
			continue
		}
		e := fmt.Sprintf("p%d.img", p.Number)
		if source.HasFiles(p) {
			e += fmt.Sprintf(" p%d/ (%s)", p.Number, source.Describe(p))
		}
		s = append(s, e)
	}
	return strings.Join(s, ", ")
}

func mountLogger(file string) (*slog.Logger, error) {
	if file == "" {
		return stderrLogger(), nil
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("--log: %w", err)
	}
	// Left open for the life of the process: the mount logs until it ends.
	return slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelWarn})), nil
}

// mountReadyTimeout bounds how long --background waits for the child; an
// image open reads only the header, footer and index.
const mountReadyTimeout = 2 * time.Minute

// mountBackground re-runs dimg detached (its own session, no terminal) with
// a pipe on which the child reports "ok" once the kernel serves the mount
// (after notes for the user, one a line), or the error that stopped it.
func mountBackground(cmd *cobra.Command, imgPath, dir string, fl mountFlags, quiet bool) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("mount --background: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	args := []string{"mount", "--ready-fd=3"}
	if fl.allowOther {
		args = append(args, "--allow-other")
	}
	if fl.debug {
		args = append(args, "--debug")
	}
	if fl.logFile != "" {
		lf, _ := filepath.Abs(fl.logFile)
		args = append(args, "--log="+lf)
	}
	if fl.at != 0 {
		args = append(args, fmt.Sprintf("--at=%d", fl.at))
	}
	if fl.base != "" {
		args = append(args, "--base="+fl.base)
	}
	if fl.rw {
		args = append(args, "--rw", "--message="+fl.message)
		if fl.discard {
			args = append(args, "--discard")
		}
		if fl.delta != "" {
			args = append(args, "--delta="+fl.delta)
		}
		if fl.raw {
			args = append(args, "--raw")
		}
	}
	// The root's flags the child needs too (the cache for a URL).
	for _, name := range []string{"cache", "cache-size", "no-cache"} {
		if f := cmd.Flags().Lookup(name); f != nil && f.Changed {
			args = append(args, "--"+name+"="+f.Value.String())
		}
	}
	args = append(args, "--", imgPath, dir)
	child := exec.Command(self, args...)
	child.ExtraFiles = []*os.File{w} // fd 3
	child.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if fl.logFile == "" {
		// Detached, nobody reads stderr: log lines would be lost
		// anyway, and a closed terminal must not kill the mount.
		child.Stdout, child.Stderr = nil, nil
	}
	if err := child.Start(); err != nil {
		w.Close()
		return fmt.Errorf("mount --background: %w", err)
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(io.LimitReader(r, 64<<10)).ReadString(0)
		line <- strings.TrimSpace(s)
	}()
	select {
	case s := <-line:
		if notes, ok := strings.CutSuffix(s, "ok"); ok && (notes == "" || strings.HasSuffix(notes, "\n")) {
			for _, n := range strings.Split(strings.TrimSpace(notes), "\n") {
				if n != "" && !quiet {
					fmt.Fprintf(os.Stderr, "dimg: %s\n", n)
				}
			}
			child.Process.Release()
			return nil
		}
		if s == "" {
			err := <-exited
			return fmt.Errorf("mount process exited before the mount was ready: %v", err)
		}
		// The child exited with the status its error called for (3 for
		// a damaged image): keep it, the text alone would exit 1.
		code := 0
		var ee *exec.ExitError
		if errors.As(<-exited, &ee) {
			code = ee.ExitCode()
		}
		return childError{msg: s, code: code}
	case <-time.After(mountReadyTimeout):
		child.Process.Kill()
		return fmt.Errorf("mount process not ready after %v; killed", mountReadyTimeout)
	}
}
