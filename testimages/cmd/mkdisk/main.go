// Command mkdisk builds a realistic test disk with package testimages, for
// demos and benchmarks:
//
//	go run ./testimages/cmd/mkdisk -kind gpt -size 512M -out disk.img
//	go run ./testimages/cmd/mkdisk -kind gpt -size 6G -from /usr -max-bytes 2G -out bench.img
//
// By default the disk is built once into the testimages cache and copied
// (sparse) to -out; -no-cache builds directly. What was built is printed to
// stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/dimg-project/dimg/testimages"
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		kind     = flag.String("kind", "gpt", "disk kind: gpt, mbr, bare, feature, bios, uefi (bootable)")
		out      = flag.String("out", "", "output disk image path (required)")
		size     = flag.String("size", "", "disk size, e.g. 512M, 7G (default per kind)")
		from     = flag.String("from", "", "comma-separated host dirs to copy real files from (default: generated files)")
		maxBytes = flag.String("max-bytes", "", "bytes of files to copy or generate, e.g. 2G")
		seed     = flag.Int64("seed", 0, "seed for names, contents, UUIDs")
		userOnly = flag.Bool("user-space", false, "build without kernel loop mounts even as root")
		noCache  = flag.Bool("no-cache", false, "build directly instead of through the cache")
	)
	flag.Parse()
	if *out == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: mkdisk -kind gpt|mbr|bare|feature|bios|uefi -out PATH [-size 7G] [-from /usr/lib,/usr/bin] [-max-bytes 2G] [-seed N]")
		return 2
	}
	spec := testimages.Spec{Seed: *seed, UserSpace: *userOnly}
	var err error
	if spec.Size, err = parseSize(*size); err != nil {
		fmt.Fprintf(os.Stderr, "mkdisk: -size: %v\n", err)
		return 2
	}
	if spec.Files.MaxBytes, err = parseSize(*maxBytes); err != nil {
		fmt.Fprintf(os.Stderr, "mkdisk: -max-bytes: %v\n", err)
		return 2
	}
	if *from != "" {
		spec.Files.HostDirs = strings.Split(*from, ",")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	if err := build(ctx, *kind, spec, *out, *noCache); err != nil {
		fmt.Fprintf(os.Stderr, "mkdisk: %v\n", err)
		if errors.Is(err, testimages.ErrUnknownKind) {
			return 2
		}
		return 1
	}
	in, err := testimages.ReadInfo(*out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mkdisk: %v\n", err)
		return 1
	}
	report(in, *out, time.Since(start))
	return 0
}

func build(ctx context.Context, kind string, spec testimages.Spec, out string, noCache bool) error {
	if !noCache {
		p, err := testimages.Cached(ctx, kind, spec)
		if err != nil {
			return err
		}
		return testimages.CopyDisk(p, out)
	}
	dir, err := os.MkdirTemp(filepath.Dir(out), ".mkdisk-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var p string
	switch kind {
	case "gpt":
		p, err = testimages.GPTDisk(ctx, dir, spec)
	case "mbr":
		p, err = testimages.MBRDisk(ctx, dir, spec)
	case "bare":
		p, err = testimages.BareFS(ctx, dir, spec)
	case "feature":
		p, err = testimages.FeatureDisk(ctx, dir, spec)
	case "bios":
		p, err = testimages.BIOSDisk(ctx, dir, spec)
	case "uefi":
		p, err = testimages.UEFIDisk(ctx, dir, spec)
	default:
		return fmt.Errorf("%w %q", testimages.ErrUnknownKind, kind)
	}
	if err != nil {
		return err
	}
	if err := os.Rename(p+".json", out+".json"); err != nil {
		return err
	}
	return os.Rename(p, out)
}

func report(in *testimages.Info, out string, took time.Duration) {
	how := "kernel loop mounts"
	if !in.Kernel {
		how = "user space (mke2fs -d, no kernel-written features)"
	}
	fmt.Fprintf(os.Stderr, "%s: %s disk, %s, table %s, built with %s; ready in %.1fs\n",
		out, in.Kind, human(in.Size), in.Table, how, took.Seconds())
	tw := tabwriter.NewWriter(os.Stderr, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tstart\tsize\tfs\tlabel\tfiles\tdirs\tlinks\tbytes\tdeleted")
	var files int
	var bytes int64
	for _, p := range in.Parts {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", p.Number, human(p.Start), human(p.Size), p.FS, p.Label,
			p.Files, p.Dirs, p.Symlinks+p.Hardlinks, human(p.Bytes), human(p.DeletedBytes))
		files += p.Files
		bytes += p.Bytes
	}
	tw.Flush()
	fmt.Fprintf(os.Stderr, "total: %d files, %s of file data\n", files, human(bytes))
}

func human(n int64) string {
	switch {
	case n == 0:
		return "0"
	case n >= 1<<30:
		return fmt.Sprintf("%.2fG", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fK", float64(n)/(1<<10))
	}
	return strconv.FormatInt(n, 10)
}

// parseSize parses "7G", "512M", "64K", "2T" (binary units) or plain bytes.
func parseSize(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	case "T":
		mult = 1 << 40
	}
	if mult != 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}
