package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/cloneio"
	"github.com/dimg-project/dimg/internal/progress"
)

func newCloneCmd() *cobra.Command {
	var (
		opt    restoreFlags
		sector bool
	)
	cmd := &cobra.Command{
		Use:   "clone SOURCE TARGET",
		Short: "Copy a disk to another disk directly, filesystem-aware, in one pass",
		Long: `Clone copies SOURCE (a block device or raw disk file) to TARGET (a block device or
a file) without an intermediate image: only the bytes the filesystems use, plus
partition tables and boot areas, reading and writing in parallel.

On a larger target the GPT backup moves to the end; --grow also extends the last
partition and its filesystem. --verify reads TARGET back and checks it against
checksums taken from SOURCE.
` + shrinkHelp,
		Example: `  dimg clone /dev/sdb /dev/sdc --verify
  dimg clone /dev/sdb /dev/sdc --grow --new-disk-guid
  dimg clone disk.raw copy.raw
  dimg clone --shrink /dev/sdb /dev/sdc     # onto a smaller disk`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClone(cmd, args[0], args[1], sector, opt)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&opt.force, "force", false, "replace TARGET if it is an existing regular file")
	f.BoolVar(&opt.verify, "verify", false, "read TARGET back and check it against the source's checksums")
	f.BoolVar(&opt.discard, "discard", false, "block devices: discard (TRIM) ranges the source does not use")
	f.BoolVar(&opt.json, "json", false, "print the result as JSON")
	f.BoolVar(&sector, "sector", false, "copy every sector, ignoring filesystems")
	addLayoutFlags(cmd, &opt.layout)
	addShrinkFlags(cmd, &opt.shrink)
	addPersonalizeFlags(cmd, &opt.pers)
	return cmd
}

func runClone(cmd *cobra.Command, srcPath, targetPath string, sector bool, opt restoreFlags) error {
	ctx := cmd.Context()
	// Flag mistakes are usage errors: report them before any work.
	_, size, err := opt.layout.options()
	if err != nil {
		return err
	}
	if _, err := opt.pers.options(""); err != nil {
		return err
	}
	if err := cloneio.CheckDistinct(srcPath, targetPath); err != nil {
		return err
	}
	src, err := cloneio.OpenSource(srcPath)
	if err != nil {
		return err
	}
	defer src.Close()
	target := size
	if n, err := cloneio.TargetCapacity(targetPath); err != nil {
		return err
	} else if n > 0 {
		target = n
	}
	if err := smallerRefusal(targetPath, target, src.Size, opt.shrink); err != nil {
		return err
	}
	if needsShrink(target, src.Size, opt.shrink) {
		if sector {
			return usagef("clone: --sector copies every sector as it is; it cannot lay the disk out anew for a smaller target")
		}
		return runShrink(cmd, "clone", src, src.Size, src.SectorSize, 0, srcPath, targetPath, target, opt)
	}
	if w := cloneio.SourceWarning(src); w != "" {
		fmt.Fprintf(os.Stderr, "dimg: warning: %s\n", w)
	}
	plan, err := makePlan(src, sector)
	if err != nil {
		return err
	}
	if err := opt.layout.check(plan.Info.Table); err != nil {
		return err
	}
	for _, w := range plan.Info.Warnings {
		fmt.Fprintf(os.Stderr, "dimg: warning: %s\n", w)
	}
	var res *cloneio.CloneResult
	t, lres, err := toTarget(cmd, "clone", targetPath, src.Size, plan.SectorSize, opt, func(t *cloneio.Target, prog progress.Reporter) (err error) {
		res, err = cloneio.Clone(ctx, src, plan, t, cloneio.CloneOptions{Progress: prog, Verify: opt.verify})
		return err
	})
	if err != nil {
		return err
	}
	if err := personalizeTarget(cmd, &opt.pers, "", targetPath); err != nil {
		return err
	}
	if opt.json {
		return printJSON(map[string]any{
			"source": srcPath, "target": targetPath, "disk_bytes": res.DiskBytes, "read_bytes": res.ReadBytes,
			"written_bytes": res.WrittenBytes, "zeroed_bytes": res.ZeroedBytes, "unused_bytes": res.UnusedBytes,
			"verified": res.Verified, "seconds": res.Wall.Seconds(), "target_bytes": t.Size, "layout": lres,
		})
	}
	printLayout(cmd, lres)
	if q, _ := cmd.Flags().GetBool("quiet"); !q {
		v := ""
		if res.Verified {
			v = ", verified"
		}
		fmt.Fprintf(os.Stderr, "cloned %s to %s: %s written, %s zero, %s unused in %s%s\n", srcPath, targetPath,
			humanBytes(res.WrittenBytes), humanBytes(res.ZeroedBytes), humanBytes(res.UnusedBytes), res.Wall.Round(time.Millisecond), v)
	}
	return nil
}
