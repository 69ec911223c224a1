package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/cloneio/extract"
)

func newExtractCmd() *cobra.Command {
	var force, noOwner bool
	cmd := &cobra.Command{
		Use:   "extract IMAGE N:/PATH DEST",
		Short: "Copy a file or a directory tree out of an image",
		Long: `Extract copies PATH from partition N of IMAGE to DEST: one file, or a whole tree.

If DEST is an existing directory, PATH is created inside it under its own name, as
cp does; otherwise PATH is created as DEST. N:/ extracts the whole filesystem into
DEST. Modes, owners (when run as root), times, symlinks, hard links, device nodes
(as root), fifos and extended attributes (where the target allows) are preserved;
sparse files stay sparse.

The image is treated as hostile: nothing is ever written outside DEST. Names with
"/" or "..", and duplicate names, are refused; symlinks are recreated as links and
never followed. An existing file is not overwritten without --force (directories
are merged into). A damaged file is reported and skipped, the rest is extracted, and
dimg exits non-zero.` + atHelp,
		Example: `  dimg extract backup.dimg 2:/etc/fstab ./fstab
  dimg extract backup.dimg 2:/home/alice /srv/restore/
  dimg extract backup.dimg 1:/ ./efi-partition
  dimg extract --force backup.dimg 2:/etc ./etc
  dimg extract --at 3 golden.dimg 2:/etc/ssh ./ssh-at-commit-3`,
		Args: exactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runExtract(cmd, args[0], args[1], args[2], extract.Options{Force: force, NoOwner: noOwner})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "overwrite existing files at DEST")
	cmd.Flags().BoolVar(&noOwner, "no-owner", false, "do not set owners even when running as root")
	addImageFlags(cmd)
	return cmd
}

func runExtract(cmd *cobra.Command, imgPath, spec, dest string, opt extract.Options) error {
	log := stderrLogger()
	src, err := openSource(cmd, imgPath, log)
	if err != nil {
		return err
	}
	defer src.Close()
	loc, err := src.Resolve(spec)
	if err != nil {
		return err
	}
	if _, err := loc.Lstat(); err != nil {
		return err
	}
	bar := newProgress(cmd, "extract")
	opt.Progress = bar
	opt.Logger = log
	opt.Protect = []string{imgPath} // --force must not replace the image itself
	res, err := extract.Extract(cmd.Context(), loc.FS, loc.Path, dest, opt)
	bar.Finish()
	if q, _ := cmd.Flags().GetBool("quiet"); !q && isTerminal(os.Stderr) {
		fmt.Fprintf(os.Stderr, "extracted %d files (%s), %d directories, %d symlinks, %d hard links, %d special",
			res.Files, humanBytes(res.Bytes), res.Dirs, res.Symlinks, res.HardLinks, res.Special)
		if res.Skipped > 0 {
			fmt.Fprintf(os.Stderr, "; %d skipped", res.Skipped)
		}
		fmt.Fprintln(os.Stderr)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", loc, err)
	}
	return nil
}
