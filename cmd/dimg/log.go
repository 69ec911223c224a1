package main

import (
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/imagefmt"
)

func newLogCmd() *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "log IMAGE",
		Short: "List an image's commits: number, time, message, what changed",
		Long: `Log lists the commits of IMAGE, newest first: number, time, the chunks and bytes each
changed, its digest and its message. Commit 1 is the capture; each read-write mount,
revert or recover adds one. Every commit stays readable: --at N on info, verify, ls,
cat, extract, mount, restore and send reads commit N, and 'dimg revert IMAGE N'
makes the image equal to it again.

A delta image lists its own commits and names the images under it. A version 1
image has a single commit.`,
		Example: `  dimg log golden.dimg
  dimg log --json golden.dimg | jq '.commits[] | {number, message}'
  dimg log --base /srv/golden.dimg patch.dimg     # a delta whose base moved`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runLog(cmd, args[0], jsonOut) },
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print as JSON")
	addBaseFlag(cmd)
	return cmd
}

type logCommit struct {
	Number        int64     `json:"number"`
	Time          time.Time `json:"time"`
	Message       string    `json:"message"`
	ChunksChanged int64     `json:"chunks_changed"`
	BytesChanged  int64     `json:"bytes_changed"`
	StoredChunks  int64     `json:"stored_chunks"`
	StoredBytes   int64     `json:"stored_bytes"`
	Digest        string    `json:"digest"`
	Features      string    `json:"features"`
}

type logOutput struct {
	Image   string      `json:"image"`
	UUID    string      `json:"uuid"`
	Commits []logCommit `json:"commits"`
	Bases   []infoBase  `json:"bases,omitempty"`
}

func runLog(cmd *cobra.Command, path string, jsonOut bool) error {
	src, err := openImage(cmd, path)
	if err != nil {
		return err
	}
	defer src.Close()
	img := src.Image()
	log, err := img.Log()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	out := logOutput{Image: path, UUID: img.Header().UUIDString(), Commits: []logCommit{}}
	for _, c := range log {
		t := c.Time
		if t.IsZero() {
			t = img.Header().Created
		}
		out.Commits = append(out.Commits, logCommit{Number: c.Number, Time: t, Message: c.Message, ChunksChanged: c.ChunksChanged,
			BytesChanged: c.BytesChanged, StoredChunks: c.StoredChunks, StoredBytes: c.StoredBytes,
			Digest: imagefmt.DigestString(c.Digest), Features: imagefmt.FeatureString(c.Incompat)})
	}
	for b := img.Base(); b != nil; b = b.Base() {
		out.Bases = append(out.Bases, infoBase{Image: b.Path(), UUID: b.Header().UUIDString(), Commit: b.Commit().Number, Digest: imagefmt.DigestString(b.Digest())})
	}
	if jsonOut {
		return printJSON(out)
	}
	for _, b := range out.Bases {
		fmt.Printf("delta over %s (commit %d)\n", b.Image, b.Commit)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "COMMIT\tTIME\tCHANGED\tSTORED\tDIGEST\tMESSAGE")
	for _, c := range out.Commits {
		changed := fmt.Sprintf("%d chunks, %s", c.ChunksChanged, humanBytes(c.BytesChanged))
		if c.Number == 1 {
			changed = fmt.Sprintf("%d chunks, %s (capture)", c.ChunksChanged, humanBytes(c.BytesChanged))
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\n", c.Number, c.Time.Local().Format("2006-01-02 15:04:05"), changed,
			humanBytes(c.StoredBytes), c.Digest[:16], c.Message)
	}
	return w.Flush()
}
