package main

import (
	"bufio"
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

	"github.com/dimg-project/dimg/cloneio/source"
	"github.com/dimg-project/dimg/fusefs"
)

type mountFlags struct {
	background bool
	allowOther bool
	debug      bool
	logFile    string
	readyFD    int // set in the detached child: where to say "ready"
}

func newMountCmd() *cobra.Command {
	var fl mountFlags
	cmd := &cobra.Command{
		Use:   "mount IMAGE DIR",
		Short: "Mount an image read-only: the raw disk, each partition, each filesystem's files",
		Long: `Mount serves IMAGE read-only on the empty directory DIR through FUSE:

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

DIR must be empty and must not contain IMAGE.`,
		Example: `  mkdir /mnt/backup
  dimg mount backup.dimg /mnt/backup
  dimg mount --background backup.dimg /mnt/backup && ls /mnt/backup/p2/etc
  cp -a /mnt/backup/p2/home/alice /srv/restore/
  umount /mnt/backup`,
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
	return cmd
}

func runMount(cmd *cobra.Command, imgPath, dir string, fl mountFlags) error {
	if fl.background && fl.readyFD == 0 {
		return mountBackground(imgPath, dir, fl)
	}
	var ready *os.File
	if fl.readyFD != 0 {
		ready = os.NewFile(uintptr(fl.readyFD), "ready")
		defer ready.Close()
	}
	m, img, err := startMount(cmd, imgPath, dir, fl)
	if err != nil {
		if ready != nil {
			fmt.Fprintf(ready, "%v\n", err)
		}
		return err
	}
	defer img.Close()
	if ready != nil {
		fmt.Fprintln(ready, "ok")
		ready.Close()
	} else if q, _ := cmd.Flags().GetBool("quiet"); !q {
		fmt.Fprintf(os.Stderr, "dimg: %s mounted on %s: %s\n", imgPath, dir, mountedList(img))
		fmt.Fprintf(os.Stderr, "dimg: press Ctrl-C or run 'umount %s' to unmount\n", dir)
	}
	// Ctrl-C unmounts, but only once no file under DIR is open: the
	// process must outlive the grace after which other commands are ended.
	keepRunningOnInterrupt()
	m.Wait()
	return nil
}

// startMount opens the image and mounts it.
func startMount(cmd *cobra.Command, imgPath, dir string, fl mountFlags) (*fusefs.Mounted, *source.Source, error) {
	// Refuse a bad mountpoint before the (possibly slow) image open.
	if err := fusefs.CheckMountpoint(dir, imgPath); err != nil {
		return nil, nil, err
	}
	log, err := mountLogger(fl.logFile)
	if err != nil {
		return nil, nil, err
	}
	src, err := openSource(cmd, imgPath, log)
	if err != nil {
		return nil, nil, err
	}
	d, err := src.Layout()
	if err != nil {
		src.Close()
		return nil, nil, err
	}
	abs, _ := filepath.Abs(imgPath)
	m, err := fusefs.Mount(cmd.Context(), dir, src, src.Size(), d.Parts, fusefs.Options{
		ImagePath:  abs,
		ImageTime:  src.ModTime(),
		Logger:     log,
		AllowOther: fl.allowOther,
		Debug:      fl.debug,
	})
	if err != nil {
		src.Close()
		return nil, nil, err
	}
	return m, src, nil
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
// a pipe on which the child reports "ok" once the kernel serves the mount,
// or the error that stopped it.
func mountBackground(imgPath, dir string, fl mountFlags) error {
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
		if s == "ok" {
			child.Process.Release()
			return nil
		}
		if s == "" {
			err := <-exited
			return fmt.Errorf("mount process exited before the mount was ready: %v", err)
		}
		<-exited
		return fmt.Errorf("%s", s)
	case <-time.After(mountReadyTimeout):
		child.Process.Kill()
		return fmt.Errorf("mount process not ready after %v; killed", mountReadyTimeout)
	}
}
