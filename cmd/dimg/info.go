package main

import (
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/imagefmt"
)

func newInfoCmd() *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "info IMAGE",
		Short: "Describe an image: disk size, partitions, filesystems, stored bytes",
		Long: `Info reads an image's header, commit and index (not its data) and prints the disk
it holds: size, sector size, partition table, and per partition the filesystem
found, its size, the bytes in use and the bytes stored in the image.

It describes the newest commit, or commit N with --at N (dimg log lists the
commits). A delta image is described with the images under it, which must be
where it says (or at --base PATH).`,
		Example: `  dimg info backup.dimg
  dimg info --json backup.dimg | jq .partitions
  dimg info --at 2 golden.dimg
  dimg info --base /srv/golden.dimg patch.dimg`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runInfo(cmd, args[0], jsonOut) },
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print as JSON")
	addImageFlags(cmd)
	return cmd
}

type infoPartition struct {
	imagefmt.PartitionInfo
	StoredBytes int64 `json:"stored_bytes"`
}

type infoBase struct {
	Image  string `json:"image"`
	UUID   string `json:"uuid"`
	Commit int64  `json:"commit"`
	Digest string `json:"digest"`
}

type infoOutput struct {
	Image         string          `json:"image"`
	UUID          string          `json:"uuid"`
	Created       time.Time       `json:"created"`
	ToolVersion   string          `json:"tool_version"`
	FormatVersion uint32          `json:"format_version"`
	Commit        int64           `json:"commit"`
	Commits       int64           `json:"commits"`
	CommitTime    time.Time       `json:"commit_time"`
	Message       string          `json:"message,omitempty"`
	Compression   string          `json:"compression"`
	Features      string          `json:"features"`
	Bases         []infoBase      `json:"bases,omitempty"`
	DiskSize      int64           `json:"disk_size"`
	SectorSize    int             `json:"sector_size"`
	ChunkSize     int             `json:"chunk_size"`
	Chunks        int64           `json:"chunks"`
	StoredChunks  int             `json:"stored_chunks"`
	ImageBytes    int64           `json:"image_bytes"`
	Digest        string          `json:"digest"`
	Source        string          `json:"source,omitempty"`
	Mode          string          `json:"mode"`
	Table         string          `json:"table"`
	DiskGUID      string          `json:"disk_guid,omitempty"`
	Partitions    []infoPartition `json:"partitions"`
	Warnings      []string        `json:"warnings,omitempty"`
}

func runInfo(cmd *cobra.Command, path string, jsonOut bool) error {
	src, err := openImage(cmd, path)
	if err != nil {
		if jsonOut {
			return jsonFailure(path, err)
		}
		return err
	}
	defer src.Close()
	sum, err := src.Summary()
	if err != nil {
		return err
	}
	h, di := sum.Header, sum.Disk
	out := infoOutput{
		Image: path, UUID: h.UUIDString(), Created: h.Created, ToolVersion: h.ToolVersion,
		DiskSize: h.DiskSize, SectorSize: h.SectorSize, ChunkSize: h.ChunkSize, Chunks: h.NumChunks(),
		StoredChunks: sum.StoredChunks, ImageBytes: sum.FileSize, Digest: imagefmt.DigestString(sum.Digest),
		Source: di.Source, Mode: di.Mode, Table: di.Table, DiskGUID: di.DiskGUID, Warnings: di.Warnings,
		Partitions: []infoPartition{}, FormatVersion: h.Version, Commit: sum.Commit.Number, Commits: sum.Commits,
		CommitTime: sum.Commit.Time, Message: sum.Commit.Message, Compression: "lz4", Features: imagefmt.FeatureString(sum.Features),
	}
	if sum.Features&imagefmt.IncompatZstd != 0 {
		out.Compression = "zstd"
	}
	if out.CommitTime.IsZero() {
		out.CommitTime = h.Created
	}
	for _, b := range sum.Bases {
		out.Bases = append(out.Bases, infoBase{Image: b.Path, UUID: b.UUID, Commit: b.Commit, Digest: imagefmt.DigestString(b.Digest)})
	}
	for i, p := range di.Partitions {
		out.Partitions = append(out.Partitions, infoPartition{PartitionInfo: p, StoredBytes: sum.Stored[i]})
	}
	if jsonOut {
		return printJSON(out)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "Image:\t%s (%s)\n", path, humanBytes(out.ImageBytes))
	fmt.Fprintf(w, "UUID:\t%s\n", out.UUID)
	fmt.Fprintf(w, "Created:\t%s by %s\n", out.Created.Local().Format(time.RFC3339), out.ToolVersion)
	if out.FormatVersion >= imagefmt.Version2 {
		c := fmt.Sprintf("%d of %d, %s", out.Commit, out.Commits, out.CommitTime.Local().Format(time.RFC3339))
		if out.Message != "" {
			c += fmt.Sprintf(" %q", out.Message)
		}
		fmt.Fprintf(w, "Commit:\t%s\n", c)
	}
	fmt.Fprintf(w, "Format:\tversion %d, %s chunks, features: %s\n", out.FormatVersion, out.Compression, out.Features)
	for _, b := range out.Bases {
		fmt.Fprintf(w, "Delta over:\t%s (commit %d, image %s)\n", b.Image, b.Commit, b.UUID)
	}
	if out.Source != "" {
		fmt.Fprintf(w, "Source:\t%s\n", out.Source)
	}
	fmt.Fprintf(w, "Disk:\t%s (%d bytes), %d-byte sectors\n", humanBytes(out.DiskSize), out.DiskSize, out.SectorSize)
	fmt.Fprintf(w, "Chunks:\t%d of %s, %d stored\n", out.Chunks, humanBytes(int64(out.ChunkSize)), out.StoredChunks)
	fmt.Fprintf(w, "Capture:\t%s\n", out.Mode)
	tbl := out.Table
	if out.DiskGUID != "" {
		tbl += " " + out.DiskGUID
	}
	fmt.Fprintf(w, "Partition table:\t%s\n", tbl)
	fmt.Fprintf(w, "Digest:\tsha256-tree:%s\n", out.Digest)
	w.Flush()
	if len(out.Partitions) > 0 {
		fmt.Println()
		w = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "#\tSTART\tSIZE\tTYPE\tFS\tLABEL\tUSED\tSTORED\tCOPY")
		for _, p := range out.Partitions {
			used := "-"
			if p.UsedBytes >= 0 && p.FS != "" {
				used = humanBytes(p.UsedBytes)
			}
			typ := p.TypeName
			if typ == "" {
				typ = p.Type
			}
			fs := p.FS
			if fs == "" {
				fs = "-"
			}
			fmt.Fprintf(w, "%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Number, p.Start, humanBytes(p.Size), typ, fs,
				p.FSLabel, used, humanBytes(p.StoredBytes), p.Copy)
		}
		w.Flush()
	}
	for _, warn := range out.Warnings {
		fmt.Printf("warning: %s\n", warn)
	}
	return nil
}
