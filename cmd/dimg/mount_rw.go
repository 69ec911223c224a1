package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/cloneio/edit"
	"github.com/dimg-project/dimg/cloneio/source"
	"github.com/dimg-project/dimg/fsdrivers"
	fsdisk "github.com/dimg-project/dimg/fsdrivers/disk"
	"github.com/dimg-project/dimg/fusefs"
	"github.com/dimg-project/dimg/imagefmt"
	"github.com/dimg-project/dimg/internal/filekind"
)

const mountRWHelp = `With --rw the mount is read-write. Each partition whose filesystem dimg writes
(ext2/3/4, FAT12/16/32) shows its files as a writable DIR/pN/: create, write,
truncate, fallocate, mkdir, rmdir, unlink, rename (also RENAME_NOREPLACE and
EXCHANGE), chmod, chown, utimes, symlinks, hard links, FIFOs and device nodes,
extended attributes. The filesystem passes its own checker (e2fsck, fsck.fat)
when the changes are committed.

One writer per byte: while pN/ is writable, pN.img is read-only (it shows what
pN/ last synced), and so is disk.img. The other partitions' pN.img take writes,
so a filesystem dimg does not write can be mounted by its own driver:

  ntfs-3g DIR/p3.img /mnt            (NTFS: its files are not shown in --rw)
  mount -o loop DIR/p4.img /mnt      (XFS, btrfs, ...)

With --raw no tree is writable or shown: disk.img and every pN.img take writes
(mount -o loop DIR/p2.img /mnt works for ext4 too). pN.img and disk.img are
written only inside their bounds (a write past the end fails with ENOSPC; their
size never changes: write with dd conv=notrunc).

IMAGE itself is not written while mounted: changes go to a scratch file next to
it, IMAGE.scratch, and are committed as one new commit of IMAGE when DIR is
unmounted (-m gives its message), or dropped with --discard. With --delta
NEW.dimg IMAGE stays untouched and the changes become the new delta image
NEW.dimg over it (its scratch file is NEW.dimg.scratch).

What fsync (or a filesystem's journal commit) returned for survives a crash or
kill -9 of dimg: the next 'dimg mount --rw IMAGE' takes those changes up and
says so, or 'dimg recover IMAGE --commit' commits them ('--drop' drops them).
One writer at a time: a second --rw mount of IMAGE (or another writer) is
refused with the holder's pid, host and command; read-only mounts and other
readers keep working, and see IMAGE as of its last commit. IMAGE must be a
version 2 image (what capture writes).`

// checkMountFlags refuses --rw options without --rw and contradictions.
func checkMountFlags(fl mountFlags) error {
	switch {
	case !fl.rw && (fl.message != "" || fl.discard || fl.delta != ""):
		return usagef("mount: --message, --discard and --delta need --rw")
	case fl.discard && fl.delta != "":
		return usagef("mount: --discard drops the changes: there is nothing to write to --delta")
	case fl.rw && fl.at != 0 && fl.delta == "":
		return usagef("mount: --rw commits on top of the newest commit; --at %d needs --delta NEW.dimg (a new delta over commit %d), or run dimg revert first", fl.at, fl.at)
	case fl.discard && fl.message != "":
		return usagef("mount: --discard drops the changes: they get no commit message")
	}
	return nil
}

// startMountRW opens IMAGE for writing (the writer lock, an overlay over
// its newest commit) and mounts it read-write; finish commits or drops
// the changes once DIR is unmounted.
func startMountRW(cmd *cobra.Command, imgPath, dir string, fl mountFlags) (*mountSession, error) {
	target := imgPath
	if fl.delta != "" {
		target = fl.delta
	}
	scratch := imagefmt.ScratchPath(target)
	if kind, _, err := filekind.Stat(imgPath); err != nil {
		return nil, err
	} else if kind != filekind.Regular {
		return nil, fmt.Errorf("%s is not a regular file (a %s): mount --rw writes into a dimg image file", imgPath, kind)
	}
	// The scratch file and the delta do not exist yet: check where they
	// will be, which must not be under DIR either.
	if err := fusefs.CheckMountpoint(dir, imgPath, filepath.Dir(target)); err != nil {
		return nil, err
	}
	log, err := mountLogger(fl.logFile)
	if err != nil {
		return nil, err
	}
	s, err := openSession(imgPath, fl.delta, imagefmt.ReaderOptions{Commit: fl.at, BasePath: fl.base}, log)
	if err != nil {
		return nil, err
	}
	base := s.Base()
	src, err := source.New(source.Backing{Name: imgPath, ReaderAt: s.Disk(), Size: base.Size(), Image: base, ModTime: fileTime(imgPath)},
		source.Options{Drivers: drivers(), Logger: log})
	var d *fsdisk.Disk
	if err == nil {
		d, err = src.Layout()
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	var trees map[int]fsdrivers.WritableFS
	var treeNotes []string
	if !fl.raw {
		trees, treeNotes = edit.OpenTrees(s.Disk(), d, drivers())
	}
	abs, _ := filepath.Abs(imgPath)
	m, err := fusefs.Mount(cmd.Context(), dir, s.Disk(), base.Size(), d.Parts, fusefs.Options{
		ImagePath:  abs,
		ImageTime:  fileTime(imgPath),
		Logger:     log,
		AllowOther: fl.allowOther,
		Debug:      fl.debug,
		ReadWrite:  true,
		SpacePath:  scratch,
		Trees:      trees,
	})
	if err != nil {
		s.Close()
		return nil, err
	}
	ms := &mountSession{m: m, summary: mountedListRW(d, trees), notes: append(sessionNotes(s, imgPath), treeNotes...)}
	quiet, _ := cmd.Flags().GetBool("quiet")
	ms.finish = func() error {
		if !fl.discard {
			// Every tree writes its filesystem out before the commit
			// captures it.
			if err := edit.CloseTrees(trees); err != nil {
				cerr := s.Close()
				err = fmt.Errorf("%w; nothing was committed, the changes are kept in %s ('dimg recover %s --commit' commits them as they are, --drop drops them)%s",
					err, imagefmt.ScratchPath(s.Target()), recoverArgs(imgPath, fl.delta), closeNote(cerr))
				log.Error("dimg: " + err.Error())
				return err
			}
		}
		return endSession(s, imgPath, fl, quiet, log)
	}
	if fl.discard {
		ms.notes = append(ms.notes, "changes will be dropped at unmount (--discard)")
	} else {
		ms.notes = append(ms.notes, fmt.Sprintf("changes will be committed to %s at unmount", target))
	}
	return ms, nil
}

// openSession opens IMAGE (or a delta over it) for writing, explaining the
// refusals a user can act on.
func openSession(imgPath, delta string, ropt imagefmt.ReaderOptions, log interface{ Warn(string, ...any) }) (*imagefmt.Session, error) {
	s, err := imagefmt.OpenSession(imgPath, imagefmt.SessionOptions{Delta: delta, ToolVersion: version, Reader: ropt})
	if errors.Is(err, imagefmt.ErrVersion1) {
		return nil, fmt.Errorf("%w: it cannot take changes; write a version 2 copy first (dimg convert --compress lz4 %s NEW.dimg) and mount that", err, imgPath)
	}
	return s, err
}

// sessionNotes tells what the session took over from an earlier one.
func sessionNotes(s *imagefmt.Session, imgPath string) []string {
	var notes []string
	if rc := s.Recovered; rc != nil && rc.Chunks > 0 {
		who := "an earlier session"
		if rc.Holder != nil {
			who = fmt.Sprintf("the session of pid %d on %s (%s)", rc.Holder.PID, rc.Holder.Host, rc.Holder.Command)
		}
		notes = append(notes, fmt.Sprintf("%s ended without unmounting; its saved changes (%d chunks, up to %s, started %s) are included and will be committed with this session's (to drop them instead: unmount, then dimg recover %s --drop)",
			who, rc.Chunks, humanBytes(int64(rc.Chunks)*int64(rc.Scratch.ChunkSize)), rc.Scratch.Created.Local().Format("2006-01-02 15:04:05"), imgPath))
	}
	if s.StaleScratchRemoved {
		notes = append(notes, fmt.Sprintf("removed a scratch file left after its changes were committed (the writer stopped before cleaning up); %s is complete", s.Target()))
	}
	return notes
}

// endSession commits or drops the changes once the mount is gone. A
// commit that fails keeps the changes for dimg recover. The commit is not
// cut short by the Ctrl-C that unmounted: it is bounded by what changed,
// and a crash in it leaves the image at the previous commit anyway.
func endSession(s *imagefmt.Session, imgPath string, fl mountFlags, quiet bool, log interface{ Error(string, ...any) }) error {
	say := func(format string, a ...any) {
		if !quiet {
			fmt.Fprintf(os.Stderr, "dimg: "+format+"\n", a...)
		}
	}
	if fl.discard {
		n := s.Disk().DirtyChunks()
		if err := s.Discard(); err != nil {
			return err
		}
		say("dropped the changes (%d chunks); %s is unchanged", n, imgPath)
		return nil
	}
	info, changed, err := s.Commit(context.Background(), fl.message)
	if err != nil {
		cerr := s.Close()
		err = fmt.Errorf("commit to %s failed: %w; the changes are kept in %s: run 'dimg recover %s --commit' to try again%s",
			s.Target(), err, imagefmt.ScratchPath(s.Target()), recoverArgs(imgPath, fl.delta), closeNote(cerr))
		log.Error("dimg: " + err.Error())
		return err
	}
	switch {
	case !changed:
		say("no changes; %s is unchanged", imgPath)
	case fl.delta != "":
		say("wrote %s: %d chunks (%s) changed over %s", fl.delta, info.ChunksChanged, humanBytes(info.BytesChanged), imgPath)
	default:
		say("committed %d changed chunks (%s) to %s as commit %d", info.ChunksChanged, humanBytes(info.BytesChanged), imgPath, info.Number)
	}
	return nil
}

func recoverArgs(imgPath, delta string) string {
	if delta != "" {
		return imgPath + " --delta " + delta
	}
	return imgPath
}

func closeNote(err error) string {
	if err == nil {
		return ""
	}
	return " (closing: " + err.Error() + ")"
}

// mountedListRW says what a read-write mount shows: "disk.img (read-only),
// p1/ and p1.img (read-only) (fat32), p2.img (ext4 "root")".
func mountedListRW(d *fsdisk.Disk, trees map[int]fsdrivers.WritableFS) string {
	s := []string{"disk.img (writable)"}
	if len(trees) > 0 {
		s[0] = "disk.img (read-only)"
	}
	for i := range d.Parts {
		p := &d.Parts[i]
		if p.Extended {
			continue
		}
		kind := ""
		if p.Volume != nil {
			kind = source.Describe(p) + ", "
		}
		if trees[p.Number] != nil {
			s = append(s, fmt.Sprintf("p%d/ (%swritable; p%d.img read-only)", p.Number, kind, p.Number))
		} else {
			s = append(s, fmt.Sprintf("p%d.img (%swritable)", p.Number, kind))
		}
	}
	return strings.Join(s, ", ")
}

// fileTime is p's modification time, zero if it cannot be read.
func fileTime(p string) (t time.Time) {
	if st, err := os.Stat(p); err == nil {
		t = st.ModTime()
	}
	return t
}
