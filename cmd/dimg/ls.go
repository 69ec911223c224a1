package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/cloneio/extract"
	"github.com/dimg-project/dimg/cloneio/source"
	"github.com/dimg-project/dimg/fsdrivers/parttable"
)

func newLsCmd() *cobra.Command {
	var recursive, long, jsonOut bool
	cmd := &cobra.Command{
		Use:   "ls IMAGE [N:/PATH]",
		Short: "List partitions, or files inside an image, without mounting it",
		Long: `Ls reads an image (or a raw disk file) directly, decompressing only the chunks it needs.

With no path it lists the partitions: number, start, size, type, filesystem, label.
With N:/PATH it lists that directory (or describes that file) in partition N, as the
partition table numbers it. A bare /PATH works when the image holds exactly one
filesystem with files. Owners are shown as numbers: they belong to the image, not
to this machine.` + atHelp,
		Example: `  dimg ls backup.dimg
  dimg ls backup.dimg 2:/etc
  dimg ls -l backup.dimg 2:/home/alice
  dimg ls -R --json backup.dimg 1:/ | jq -r '.[] | select(.type == "file") | .path'
  dimg ls usb-stick.img /
  dimg ls --at 2 golden.dimg 2:/opt          # as commit 2 left it (dimg log)`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usagef("ls: want IMAGE and optionally N:/PATH, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			spec := ""
			if len(args) == 2 {
				spec = args[1]
			}
			return runLs(cmd, args[0], spec, lsFlags{recursive, long, jsonOut})
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&recursive, "recursive", "R", false, "list subdirectories recursively")
	f.BoolVarP(&long, "long", "l", false, "long listing: mode, links, owner, size, time")
	f.BoolVar(&jsonOut, "json", false, "print a JSON array of entries")
	addImageFlags(cmd)
	return cmd
}

type lsFlags struct{ recursive, long, json bool }

// partJSON is one partition in `ls --json IMAGE`: the table's entry and
// what was found in it.
type partJSON struct {
	parttable.Partition
	FS    string `json:"fs,omitempty"`
	Label string `json:"label,omitempty"`
	UUID  string `json:"uuid,omitempty"`
	Files bool   `json:"files"` // the filesystem can be browsed
	Error string `json:"error,omitempty"`
}

func runLs(cmd *cobra.Command, imgPath, spec string, fl lsFlags) error {
	src, err := openSource(cmd, imgPath, stderrLogger())
	if err != nil {
		return err
	}
	defer src.Close()
	out := bufio.NewWriterSize(os.Stdout, 64<<10)
	defer out.Flush()
	if spec == "" {
		return lsPartitions(out, src, fl.json)
	}
	loc, err := src.Resolve(spec)
	if err != nil {
		return err
	}
	fi, err := loc.Lstat()
	if err != nil {
		return err
	}
	pr := newEntryPrinter(out, fl)
	defer pr.finish()
	if !fi.IsDir() {
		e := extract.NewEntry(loc.FS, loc.Path, fi)
		e.Name = loc.Path
		return pr.print(e)
	}
	var failed error
	p := loc.Path
	err = extract.Walk(cmd.Context(), loc.FS, p, func(q string, fi fs.FileInfo, err error) error {
		if err != nil {
			// Damage is reported and skipped; the rest is listed.
			out.Flush()
			fmt.Fprintf(os.Stderr, "dimg: ls: %s: %v\n", loc.Show(q), err)
			failed = err
			return nil
		}
		if q == p {
			return nil // the directory itself
		}
		rel := strings.TrimPrefix(q, p+"/")
		if p == "." {
			rel = q
		}
		if !fl.recursive && strings.Contains(rel, "/") {
			return fs.SkipDir
		}
		e := extract.NewEntry(loc.FS, q, fi)
		e.Name = rel
		if err := pr.print(e); err != nil {
			return err
		}
		if !fl.recursive && fi.IsDir() {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		return err
	}
	if failed != nil {
		return fmt.Errorf("ls: some entries could not be read: %w", failed)
	}
	return nil
}

func lsPartitions(w *bufio.Writer, src *source.Source, jsonOut bool) error {
	d, err := src.Layout()
	if err != nil {
		return err
	}
	var parts []partJSON
	for i := range d.Parts {
		p := &d.Parts[i]
		pj := partJSON{Partition: p.Partition}
		if p.Volume != nil {
			pj.FS, pj.Label, pj.UUID = p.Volume.Type(), p.Volume.Label(), p.Volume.UUID()
			pj.Files = source.HasFiles(p)
		}
		if p.ProbeErr != nil {
			pj.Error = p.ProbeErr.Error()
		}
		parts = append(parts, pj)
	}
	if jsonOut {
		if parts == nil {
			parts = []partJSON{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(parts)
	}
	table := d.Table.Kind + " partition table"
	if d.Table.Kind == parttable.KindNone {
		table = "no partition table" // not "none partition table"
	}
	fmt.Fprintf(w, "%s: %s, %s\n", src.Name(), humanBytes(src.Size()), table)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tSTART\tSIZE\tTYPE\tFS\tLABEL\tUUID")
	for _, p := range parts {
		typ := p.TypeName
		if typ == "" {
			typ = p.Type
		}
		fsName := p.FS
		if fsName == "" {
			fsName = "-"
		}
		if fsName != "-" && !p.Files {
			fsName += " (no files)"
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%s\n", p.Number, p.Start, humanBytes(p.Size), typ, fsName, p.Label, p.UUID)
	}
	return tw.Flush()
}

// entryPrinter prints listing entries as names, long lines or JSON.
type entryPrinter struct {
	w     *bufio.Writer
	fl    lsFlags
	n     int
	local *time.Location
}

func newEntryPrinter(w *bufio.Writer, fl lsFlags) *entryPrinter {
	if fl.json {
		w.WriteString("[")
	}
	return &entryPrinter{w: w, fl: fl, local: time.Local}
}

func (p *entryPrinter) print(e extract.Entry) error {
	defer func() { p.n++ }()
	switch {
	case p.fl.json:
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if p.n > 0 {
			p.w.WriteString(",")
		}
		p.w.WriteString("\n  ")
		p.w.Write(b)
	case p.fl.long:
		size := strconv.FormatInt(e.Size, 10)
		if e.Type == "char" || e.Type == "block" {
			size = fmt.Sprintf("%d, %d", unix.Major(e.Rdev), unix.Minor(e.Rdev))
		}
		when := e.Mtime.In(p.local)
		tf := "Jan _2 15:04"
		if time.Since(when) > 180*24*time.Hour || when.After(time.Now().Add(time.Hour)) {
			tf = "Jan _2  2006"
		}
		name := quoteName(e.Name)
		if e.Target != "" {
			name += " -> " + quoteName(e.Target)
		}
		_, err := fmt.Fprintf(p.w, "%s %3d %5d %5d %10s %s %s\n", lsMode(e), max(e.Nlink, 1), e.Uid, e.Gid, size, when.Format(tf), name)
		return err
	default:
		_, err := fmt.Fprintln(p.w, quoteName(e.Name))
		return err
	}
	return nil
}

func (p *entryPrinter) finish() {
	if p.fl.json {
		if p.n > 0 {
			p.w.WriteString("\n")
		}
		p.w.WriteString("]\n")
	}
}

// lsMode is the mode column of ls -l.
func lsMode(e extract.Entry) string { return extract.LsMode(e.FileMode) }

// quoteName shows a name from the image safely on a terminal: control
// characters and invalid UTF-8 are escaped, as ls does.
func quoteName(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || r == utf8.RuneError }) < 0 {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}
