package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/imagefmt"
)

func newVerifyCmd() *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "verify IMAGE",
		Short: "Check every chunk of an image and its digest",
		Long: `Verify reads every stored chunk, checks its CRC and SHA-256, and recomputes the
image digest. Each damaged chunk is named with the disk byte range it covers.
The exit status is 0 when the image is intact, 3 when anything is damaged.`,
		Example: `  dimg verify backup.dimg`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkImageFile(args[0], false); err != nil {
				return err
			}
			img, err := imagefmt.Open(args[0])
			if err != nil {
				// A file that is not an image, or is damaged, fails
				// verification (3); one that cannot be read is a failure (1).
				if errors.Is(err, imagefmt.ErrFormat) {
					return exitCodeError{exitCorrupt, err}
				}
				return err
			}
			defer img.Close()
			prog := newProgress(cmd, "verify")
			prog.Start(img.Size())
			res, err := img.Verify(cmd.Context(), prog)
			prog.Finish()
			if err != nil {
				return err
			}
			if jsonOut {
				bad := []map[string]any{}
				for _, b := range res.Bad {
					bad = append(bad, map[string]any{"chunk": b.Chunk, "disk_offset": b.Off, "length": b.Len, "error": b.Err.Error()})
				}
				if err := printJSON(map[string]any{"image": args[0], "ok": res.OK(), "chunks": res.Chunks,
					"stored_chunks": res.Stored, "bad_chunks": bad, "digest_ok": res.DigestOK,
					"digest": imagefmt.DigestString(res.Digest)}); err != nil {
					return err
				}
			} else {
				for _, b := range res.Bad {
					fmt.Fprintf(os.Stderr, "BAD %v\n", b)
				}
			}
			if !res.OK() {
				msg := fmt.Sprintf("%s: %d damaged chunk(s)", args[0], len(res.Bad))
				if !res.DigestOK && len(res.Bad) == 0 {
					msg = fmt.Sprintf("%s: image digest does not match its chunks", args[0])
				}
				return exitCodeError{exitCorrupt, fmt.Errorf("%s", msg)}
			}
			if !jsonOut {
				if q, _ := cmd.Flags().GetBool("quiet"); !q {
					fmt.Fprintf(os.Stderr, "%s: OK (%d chunks, %d stored, digest %s)\n", args[0], res.Chunks, res.Stored, imagefmt.DigestString(res.Digest))
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the result as JSON")
	return cmd
}
