package main

import (
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
		RunE:    func(cmd *cobra.Command, args []string) error { return runVerify(cmd, args[0], jsonOut) },
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the result as JSON")
	return cmd
}

func runVerify(cmd *cobra.Command, path string, jsonOut bool) error {
	src, err := openImage(cmd, path)
	if err != nil {
		return err
	}
	defer src.Close()
	prog := newProgress(cmd, "verify")
	res, err := src.Verify(cmd.Context(), prog)
	prog.Finish()
	if res == nil {
		return err
	}
	// Damage (err is a *source.VerifyError) is printed first, then returned.
	if jsonOut {
		bad := []map[string]any{}
		for _, b := range res.Bad {
			bad = append(bad, map[string]any{"chunk": b.Chunk, "disk_offset": b.Off, "length": b.Len, "error": b.Err.Error()})
		}
		if perr := printJSON(map[string]any{"image": path, "ok": res.OK(), "chunks": res.Chunks,
			"stored_chunks": res.Stored, "bad_chunks": bad, "digest_ok": res.DigestOK,
			"digest": imagefmt.DigestString(res.Digest)}); perr != nil {
			return perr
		}
	} else {
		for _, b := range res.Bad {
			fmt.Fprintf(os.Stderr, "BAD %v\n", b)
		}
	}
	if err != nil {
		return err
	}
	if q, _ := cmd.Flags().GetBool("quiet"); !q && !jsonOut {
		fmt.Fprintf(os.Stderr, "%s: OK (%d chunks, %d stored, digest %s)\n", path, res.Chunks, res.Stored, imagefmt.DigestString(res.Digest))
	}
	return nil
}
