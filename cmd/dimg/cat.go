package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/cloneio/extract"
)

func newCatCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cat IMAGE N:/PATH",
		Short: "Write a file from inside an image to standard output",
		Long: `Cat copies one file out of partition N of IMAGE to standard output, reading and
decompressing only the chunks that hold it. Symlinks are followed inside the image
(an absolute target resolves against the partition's root, never this machine's).
A damaged chunk under the file stops the copy with an error naming the chunk.` + atHelp,
		Example: `  dimg cat backup.dimg 2:/etc/fstab
  dimg cat backup.dimg 2:/var/lib/db/dump.sql.gz | zcat | less
  dimg cat usb-stick.img /notes.txt > notes.txt
  dimg cat --at 1 golden.dimg 2:/etc/fstab      # as it was at the capture`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error { return runCat(cmd, args[0], args[1]) },
	}
	addImageFlags(cmd)
	return cmd
}

func runCat(cmd *cobra.Command, imgPath, spec string) error {
	src, err := openSource(cmd, imgPath, stderrLogger())
	if err != nil {
		return err
	}
	defer src.Close()
	loc, err := src.Resolve(spec)
	if err != nil {
		return err
	}
	fi, err := loc.Stat()
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%s: is a directory (use dimg ls or dimg extract)", loc)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file (%s)", loc, extract.TypeName(fi.Mode()))
	}
	f, err := loc.Open()
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	if _, err := io.CopyBuffer(os.Stdout, io.NewSectionReader(f, 0, fi.Size()), buf); err != nil {
		return fmt.Errorf("%s: %w", loc, err)
	}
	return nil
}
