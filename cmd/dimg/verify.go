package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/imagefmt"
)

func newVerifyCmd() *cobra.Command {
	var jsonOut, all bool
	cmd := &cobra.Command{
		Use:   "verify IMAGE",
		Short: "Check every chunk of an image and its digest",
		Long: `Verify reads every stored chunk, checks its CRC and SHA-256, and recomputes the
image digest. Each damaged chunk is named with the disk byte range it covers.
The exit status is 0 when the image is intact, 3 when anything is damaged.

It checks the newest commit, or commit N with --at N; --all checks every commit
of the image: each one's index and digest, and every chunk any of them holds, and
that the file reads as its newest commit from a pipe (restore -). A delta image is
checked with the images under it.`,
		Example: `  dimg verify backup.dimg
  dimg verify --all golden.dimg
  dimg verify --at 3 golden.dimg
  dimg verify --base /srv/golden.dimg patch.dimg`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runVerify(cmd, args[0], jsonOut, all) },
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the result as JSON")
	cmd.Flags().BoolVar(&all, "all", false, "check every commit, not only the newest (or --at)")
	addImageFlags(cmd)
	return cmd
}

func runVerify(cmd *cobra.Command, path string, jsonOut, all bool) error {
	if all && cmd.Flags().Changed("at") {
		return usagef("verify: --all checks every commit; --at picks one, not both")
	}
	src, err := openImage(cmd, path)
	if err != nil {
		if jsonOut {
			return jsonFailure(path, err)
		}
		return err
	}
	defer src.Close()
	prog := newProgress(cmd, "verify")
	res, err := src.VerifyWith(cmd.Context(), imagefmt.VerifyOptions{Progress: prog, AllCommits: all})
	prog.Finish()
	if res == nil {
		if jsonOut {
			return jsonFailure(path, err)
		}
		return err
	}
	// Damage (err is a *source.VerifyError) is printed first, then returned.
	if jsonOut {
		bad := []map[string]any{}
		for _, b := range res.Bad {
			bad = append(bad, map[string]any{"chunk": b.Chunk, "disk_offset": b.Off, "length": b.Len, "error": b.Err.Error()})
		}
		index := []string{}
		for _, e := range res.Index {
			index = append(index, e.Error())
		}
		if perr := printJSON(map[string]any{"image": path, "ok": res.OK(), "chunks": res.Chunks,
			"stored_chunks": res.Stored, "bad_chunks": bad, "index_problems": index, "digest_ok": res.DigestOK,
			"digest": imagefmt.DigestString(res.Digest), "commit": src.Image().Commit().Number,
			"commits_checked": max(res.Commits, 1)}); perr != nil {
			return perr
		}
	} else {
		for _, b := range res.Bad {
			fmt.Fprintf(os.Stderr, "BAD %v\n", b)
		}
		for _, e := range res.Index {
			fmt.Fprintf(os.Stderr, "BAD index: %v\n", e)
		}
	}
	if err != nil {
		return err
	}
	if q, _ := cmd.Flags().GetBool("quiet"); !q && !jsonOut {
		what := ""
		if c := src.Image().Commit(); src.Image().Header().Version >= imagefmt.Version2 {
			what = fmt.Sprintf("commit %d, ", c.Number)
			if all && res.Commits != 1 {
				what = fmt.Sprintf("all %d commits, ", res.Commits)
			}
		}
		fmt.Fprintf(os.Stderr, "%s: OK (%s%d chunks, %d stored, digest %s)\n", path, what, res.Chunks, res.Stored, imagefmt.DigestString(res.Digest))
	}
	return nil
}
