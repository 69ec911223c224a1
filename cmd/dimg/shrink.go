package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/cloneio"
	fsdisk "github.com/dimg-project/dimg/fsdrivers/disk"
	"github.com/dimg-project/dimg/fusefs"
	"github.com/dimg-project/dimg/internal/progress"
)

const shrinkHelp = `
A TARGET smaller than the source disk (a smaller block device, or --size for a
file) is fine when the data fits: dimg lays the disk out anew and shrinks the
filesystems on a copy-on-write overlay of the source (the image or the source
disk is never written). It prints the plan (old and new start and size of every
partition, the minimum target size) before writing anything, and writes it only
with --shrink (or when you answer yes on a terminal); --dry-run only prints it
(--json: as JSON). Partitions keep their order and numbers; the first partition,
the bytes before it (boot code) and a BIOS boot partition never move, nor does
a partition whose boot loader records absolute sectors. ext2/3/4 are shrunk with
resize2fs, NTFS with ntfsresize (ntfs-3g), FAT12/16/32 by dimg itself; swap is
remade smaller with the same UUID and label; other partitions keep their size.
Free space is shared in proportion to the old sizes, or with --grow given to
the last partition. When the data does not fit, dimg says how large the target
must be and writes nothing.`

// shrinkFlags are restore's and clone's flags for a smaller target.
type shrinkFlags struct {
	shrink, dryRun bool
}

func addShrinkFlags(cmd *cobra.Command, s *shrinkFlags) {
	f := cmd.Flags()
	f.BoolVar(&s.shrink, "shrink", false, "onto a smaller TARGET: shrink the filesystems and lay the disk out anew (see the plan with --dry-run)")
	f.BoolVar(&s.dryRun, "dry-run", false, "print the plan for TARGET (partitions' old and new places, the minimum size) and write nothing")
}

// targetBytes is how large TARGET is: a block device's size, --size for a
// file, or 0 (a file made as large as the disk).
func targetBytes(targetPath string, l layoutFlags) (int64, error) {
	n, err := cloneio.TargetCapacity(targetPath)
	if err != nil || n > 0 {
		return n, err
	}
	_, size, err := l.options()
	return size, err
}

// needsShrink reports whether restore or clone of a disk of diskSize bytes
// must go the shrinking way: the target is smaller, or --dry-run asks for
// the plan.
func needsShrink(target, diskSize int64, s shrinkFlags) bool {
	return (target > 0 && target < diskSize) || s.dryRun
}

// smallerRefusal is the refusal of a smaller target when neither --shrink
// nor --dry-run was given and there is no terminal to ask on: before
// anything is measured or written, with the way forward.
func smallerRefusal(targetPath string, target, diskSize int64, s shrinkFlags) error {
	if target <= 0 || target >= diskSize || s.shrink || s.dryRun || (isTerminal(os.Stdin) && isTerminal(os.Stderr)) {
		return nil
	}
	return fmt.Errorf("%w: %s holds %d bytes, the disk needs %d (%d more); nothing was written. If the data fits, --dry-run shows a plan that shrinks the filesystems to fit and --shrink writes it",
		cloneio.ErrTooSmall, targetPath, target, diskSize, diskSize-target)
}

// runShrink writes the disk src (srcSize bytes) onto a smaller target:
// plan, print, confirm, shrink on an overlay, then the ordinary target
// path (toTarget) with the composed disk.
func runShrink(cmd *cobra.Command, label string, src io.ReaderAt, srcSize int64, sectorSize, chunkSize int,
	srcName, targetPath string, target int64, opt restoreFlags) error {
	ctx := cmd.Context()
	quiet, _ := cmd.Flags().GetBool("quiet")
	if target <= 0 || target >= srcSize {
		if opt.shrink.dryRun {
			fmt.Fprintf(os.Stderr, "%s holds the whole disk (%s): nothing to shrink; %s writes it as it is\n", targetPath, humanBytes(srcSize), label)
			if opt.json {
				return printJSON(map[string]any{"source_bytes": srcSize, "target_bytes": max(target, srcSize), "shrink": false})
			}
			return nil
		}
		return fmt.Errorf("%s: internal error: shrinking onto a target that is not smaller", label)
	}
	scratch := os.TempDir()
	if n, _ := cloneio.TargetCapacity(targetPath); n == 0 {
		scratch = filepath.Dir(targetPath) // a file target: its own filesystem has the room
	}
	if !quiet {
		fmt.Fprintf(os.Stderr, "%s (%s) is smaller than the disk (%s): measuring the filesystems...\n", targetPath, humanBytes(target), humanBytes(srcSize))
	}
	sh, err := cloneio.NewShrinker(ctx, src, srcSize, sectorSize, chunkSize, cloneio.ShrinkOptions{
		Drivers: drivers(), Grow: opt.layout.grow, ScratchDir: scratch, Expose: exposeFUSE, Source: srcName,
	})
	if err != nil {
		return err
	}
	defer sh.Close()
	defer onInterrupt(func() { sh.Close() })()
	plan, err := sh.Layout(target)
	if err != nil {
		if plan != nil && opt.json && opt.shrink.dryRun {
			printJSON(plan)
		}
		return err
	}
	if opt.json && opt.shrink.dryRun {
		return printJSON(plan)
	}
	if !quiet || opt.shrink.dryRun {
		printShrinkPlan(os.Stderr, plan)
	}
	if opt.shrink.dryRun {
		fmt.Fprintln(os.Stderr, "dry run: nothing was written")
		return nil
	}
	if !opt.shrink.shrink {
		if !isTerminal(os.Stdin) || !isTerminal(os.Stderr) {
			return usagef("%s: %s is smaller than the source disk: add --shrink to write the plan above (--dry-run prints it without writing)", label, targetPath)
		}
		fmt.Fprintf(os.Stderr, "Write this layout to %s? [y/N] ", targetPath)
		line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
			return errors.New("not confirmed: nothing was written")
		}
	}
	start := time.Now()
	disk, cplan, err := sh.Apply(ctx, plan)
	if err != nil {
		return err
	}
	shrinkTime := time.Since(start)
	// The layout is final: --grow was part of the plan and must not grow
	// the last partition again at Commit.
	topt := opt
	topt.layout.grow = false
	var res *cloneio.CloneResult
	t, lres, err := toTarget(cmd, label, targetPath, target, sh.SectorSize(), topt, func(t *cloneio.Target, prog progress.Reporter) (err error) {
		res, err = cloneio.Clone(ctx, disk, cplan, t, cloneio.CloneOptions{Progress: prog, Verify: opt.verify})
		return err
	})
	if err != nil {
		return err
	}
	wall := time.Since(start)
	printLayout(cmd, lres)
	// The identity options apply to a shrunk disk as to any other.
	if err := personalizeTarget(cmd, &opt.pers, "", targetPath); err != nil {
		return err
	}
	if opt.json {
		return printJSON(map[string]any{
			"source": srcName, "target": targetPath, "disk_bytes": res.DiskBytes, "written_bytes": res.WrittenBytes,
			"zeroed_bytes": res.ZeroedBytes, "unused_bytes": res.UnusedBytes, "verified": res.Verified,
			"seconds": wall.Seconds(), "shrink_seconds": shrinkTime.Seconds(), "target_bytes": t.Size,
			"layout": lres, "shrink": plan,
		})
	}
	if !quiet {
		v := ""
		if res.Verified {
			v = ", verified"
		}
		fmt.Fprintf(os.Stderr, "%s %s to %s, laid out for %s: %s written, %s zero, %s unused in %s (filesystems shrunk in %s)%s\n",
			map[string]string{"restore": "restored", "clone": "cloned"}[label], srcName, targetPath, humanBytes(target),
			humanBytes(res.WrittenBytes), humanBytes(res.ZeroedBytes), humanBytes(res.UnusedBytes),
			wall.Round(time.Millisecond), shrinkTime.Round(time.Millisecond), v)
	}
	return nil
}

// printShrinkPlan prints the plan as a table.
func printShrinkPlan(w io.Writer, p *cloneio.ShrinkPlan) {
	share := "shared in proportion to the old sizes"
	if p.Grow {
		share = "given to the last partition (--grow)"
	}
	fmt.Fprintf(w, "plan: %s disk of %s onto %s (the data needs at least %s, %d bytes); free space %s\n",
		strings.ToUpper(p.Table), mib(p.SourceBytes), mib(p.TargetBytes), mib(p.MinimumBytes), p.MinimumBytes, share)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "part\tfs\told start\told size\tnew start\tnew size\tminimum\t\taction")
	for _, q := range p.Partitions {
		fs, min := q.FS, mib(q.MinSize)
		switch {
		case q.Extended:
			fs, min = "extended", "-"
		case fs == "":
			fs = "-"
		}
		action := q.Action
		if q.Fixed != "" && !q.Extended {
			action += " (" + q.Fixed + ")"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t\t%s\n", q.Number, fs, mib(q.OldStart), mib(q.OldSize), mib(q.NewStart), mib(q.NewSize), min, action)
	}
	tw.Flush()
	for _, n := range p.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}

func mib(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
}

// exposeFUSE serves the overlay's partitions as DIR/pN.img through a
// read-write fusefs mount, for resize2fs and ntfsresize.
func exposeFUSE(ctx context.Context, d cloneio.WritableDisk, size int64, parts []fsdisk.Part) (string, func() error, error) {
	dir, err := os.MkdirTemp("", "dimg-shrink-")
	if err != nil {
		return "", nil, err
	}
	m, err := fusefs.Mount(context.WithoutCancel(ctx), dir, d, size, parts, fusefs.Options{ReadWrite: true})
	if err != nil {
		os.Remove(dir)
		return "", nil, fmt.Errorf("%w (shrinking ext and NTFS filesystems needs FUSE)", err)
	}
	done := false
	return dir, func() error {
		if done {
			return nil
		}
		done = true
		err := m.Unmount()
		os.Remove(dir)
		return err
	}, nil
}
