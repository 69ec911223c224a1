package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/dimg-project/dimg/cloneio/extract"
	"github.com/dimg-project/dimg/fsdrivers"
	fsdisk "github.com/dimg-project/dimg/fsdrivers/disk"
	"github.com/dimg-project/dimg/imagefmt"
)

// openedImage is an image (or a raw disk file or block device) opened with
// its partitions probed: what mount, ls, cat and extract start from.
type openedImage struct {
	path   string
	ra     io.ReaderAt
	size   int64
	mtime  time.Time
	closer io.Closer
	disk   *fsdisk.Disk
	probed map[int]bool // index in disk.Parts → probed with drivers()
}

func (o *openedImage) Close() error { return o.closer.Close() }

// openImage opens a .dimg image. A file that is not one, unless it is named
// *.dimg, is read as a raw disk (a dd image or a block device), so the
// same commands browse those too.
func openImage(p string, log *slog.Logger) (*openedImage, error) {
	if err := checkImageFile(p, true); err != nil {
		return nil, err
	}
	st, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	o := &openedImage{path: p, mtime: st.ModTime()}
	img, err := imagefmt.OpenOptions(p, imagefmt.ReaderOptions{Logger: log})
	var sector int
	switch {
	case err == nil:
		o.ra, o.size, o.closer, sector = img, img.Size(), img, img.SectorSize()
	case errors.Is(err, imagefmt.ErrFormat) && !strings.HasSuffix(p, ".dimg") || isBlockDevice(st):
		f, ferr := os.Open(p)
		if ferr != nil {
			return nil, ferr
		}
		size, ferr := f.Seek(0, io.SeekEnd)
		if ferr != nil {
			f.Close()
			return nil, ferr
		}
		o.ra, o.size, o.closer = f, size, f
	default:
		return nil, err
	}
	// No drivers yet: only the table is read. Partitions are probed when
	// a command needs them, so `dimg cat IMAGE 2:/file` reads the
	// superblocks of partition 2 only.
	o.disk, err = fsdisk.Open(o.ra, o.size, sector, nil)
	if err != nil {
		o.Close()
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	o.probed = map[int]bool{}
	return o, nil
}

// probe opens the filesystem of the i-th partition, once.
func (o *openedImage) probe(i int) {
	p := &o.disk.Parts[i]
	if o.probed[i] || p.Extended {
		return
	}
	o.probed[i] = true
	p.Volume, p.ProbeErr = fsdrivers.Probe(p.Reader, p.Size, drivers())
	if p.ProbeErr != nil {
		p.ProbeErr = fmt.Errorf("partition %d: %w", p.Number, p.ProbeErr)
	}
}

// probeAll opens every partition's filesystem.
func (o *openedImage) probeAll() {
	for i := range o.disk.Parts {
		o.probe(i)
	}
}

func isBlockDevice(st os.FileInfo) bool {
	return st.Mode()&fs.ModeDevice != 0 && st.Mode()&fs.ModeCharDevice == 0
}

// describe names a partition's contents for messages: "ext4 \"root\"".
func describe(p *fsdisk.Part) string {
	switch {
	case p.Extended:
		return "extended partition"
	case p.Volume == nil:
		return "no filesystem recognised"
	case p.Volume.Label() != "":
		return fmt.Sprintf("%s %q", p.Volume.Type(), p.Volume.Label())
	}
	return p.Volume.Type()
}

// trees lists the partitions whose filesystem can be browsed.
func (o *openedImage) trees() []*fsdisk.Part {
	o.probeAll()
	var out []*fsdisk.Part
	for i := range o.disk.Parts {
		if _, ok := o.disk.Parts[i].Volume.(fsdrivers.Filesystem); ok {
			out = append(out, &o.disk.Parts[i])
		}
	}
	return out
}

// partitionList is "1 (fat32 \"EFI\"), 2 (ext4 \"root\"), 3 (swap)".
func (o *openedImage) partitionList() string {
	o.probeAll()
	var s []string
	for i := range o.disk.Parts {
		p := &o.disk.Parts[i]
		s = append(s, fmt.Sprintf("%d (%s)", p.Number, describe(p)))
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// parseSpec splits "N:/path" into N and the path; a spec without "N:" is
// a bare path (n = 0).
func parseSpec(spec string) (n int, p string, err error) {
	if i := strings.IndexByte(spec, ':'); i > 0 {
		if v, err := strconv.Atoi(spec[:i]); err == nil {
			if v <= 0 {
				return 0, "", usagef("%q: partition numbers start at 1", spec)
			}
			return v, spec[i+1:], nil
		}
	}
	return 0, spec, nil
}

// resolve finds the filesystem and the io/fs path a spec names.
func (o *openedImage) resolve(spec string) (*fsdisk.Part, fsdrivers.Filesystem, string, error) {
	n, p, err := parseSpec(spec)
	if err != nil {
		return nil, nil, "", err
	}
	var part *fsdisk.Part
	if n == 0 {
		trees := o.trees()
		if len(trees) != 1 {
			return nil, nil, "", usagef("%s holds %d filesystems with files (partitions: %s); name one, e.g. %d:%s",
				o.path, len(trees), o.partitionList(), firstNumber(trees), p)
		}
		part = trees[0]
	} else {
		part, err = o.disk.Find(n)
		if err != nil {
			return nil, nil, "", fmt.Errorf("%s: %w", o.path, err)
		}
		o.probe(slices.IndexFunc(o.disk.Parts, func(p fsdisk.Part) bool { return p.Number == n }))
	}
	fsys, ok := part.Volume.(fsdrivers.Filesystem)
	if !ok {
		why := describe(part)
		if part.ProbeErr != nil {
			why += ": " + strings.ReplaceAll(part.ProbeErr.Error(), "\n", "; ")
		}
		return nil, nil, "", fmt.Errorf("partition %d holds no files dimg can read (%s); partitions: %s",
			part.Number, why, o.partitionList())
	}
	fp, err := fsdrivers.CleanPath(p)
	if err != nil {
		return nil, nil, "", usagef("%s: %v", spec, err)
	}
	return part, fsys, fp, nil
}

func firstNumber(parts []*fsdisk.Part) int {
	if len(parts) == 0 {
		return 1
	}
	return parts[0].Number
}

// display shows an io/fs path as the user wrote it: "2:/etc/fstab".
func display(part *fsdisk.Part, p string) string {
	if p == "." {
		return fmt.Sprintf("%d:/", part.Number)
	}
	return fmt.Sprintf("%d:/%s", part.Number, p)
}

// lstat is fsys.Lstat with a not-found error that shows what does exist
// near the missing name.
func lstat(fsys fsdrivers.Filesystem, part *fsdisk.Part, p string) (fs.FileInfo, error) {
	fi, err := fsys.Lstat(p)
	if err == nil {
		return fi, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", display(part, p), err)
	}
	return nil, fmt.Errorf("%s: no such file or directory%s", display(part, p), nearby(fsys, part, p))
}

// nearby describes, for a missing path, its deepest existing directory
// and the names in it that look like the missing one.
func nearby(fsys fsdrivers.Filesystem, part *fsdisk.Part, p string) string {
	dir, base := path.Dir(p), path.Base(p)
	for dir != "." {
		if fi, err := fsys.Stat(dir); err == nil && fi.IsDir() {
			break
		}
		dir, base = path.Dir(dir), path.Base(dir)
	}
	ents, err := fsys.ReadDir(dir)
	if err != nil || len(ents) == 0 {
		return ""
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	const show = 12
	if near := similar(base, names); len(near) > 0 {
		return fmt.Sprintf("; similar names in %s: %s", display(part, dir), strings.Join(near[:min(len(near), show)], ", "))
	}
	more := ""
	if len(names) > show {
		more = fmt.Sprintf(", ... (%d entries)", len(names))
	}
	return fmt.Sprintf("; %s holds: %s%s", display(part, dir), strings.Join(names[:min(len(names), show)], ", "), more)
}

// similar returns the names that differ from want only in case, start
// with it or contain it, or are within a small edit distance.
func similar(want string, names []string) []string {
	lw := strings.ToLower(want)
	var out []string
	for _, n := range names {
		ln := strings.ToLower(n)
		switch {
		case ln == lw, lw != "" && (strings.HasPrefix(ln, lw) || strings.Contains(ln, lw)):
			out = append(out, n)
		case len(lw) <= 64 && len(ln) <= 64 && editDistance(lw, ln) <= max(1, utf8.RuneCountInString(lw)/4):
			out = append(out, n)
		}
	}
	return out
}

// editDistance is the Levenshtein distance over runes.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

// imageErr gives errors that mean a damaged image or filesystem the
// "corrupt" exit status.
func imageErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, imagefmt.ErrChecksum) || errors.Is(err, imagefmt.ErrCorrupt) ||
		errors.Is(err, imagefmt.ErrTruncated) || errors.Is(err, fsdrivers.ErrCorrupt) {
		return exitCodeError{exitCorrupt, err}
	}
	return err
}

// stderrLogger reports chunk and I/O errors on stderr.
func stderrLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

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
to this machine.`,
		Example: `  dimg ls backup.dimg
  dimg ls backup.dimg 2:/etc
  dimg ls -l backup.dimg 2:/home/alice
  dimg ls -R --json backup.dimg 1:/ | jq -r '.[] | select(.type == "file") | .path'
  dimg ls usb-stick.img /`,
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
	return cmd
}

type lsFlags struct{ recursive, long, json bool }

// partJSON is one partition in `ls --json IMAGE`.
type partJSON struct {
	Number   int    `json:"number"`
	Start    int64  `json:"start"`
	Size     int64  `json:"size"`
	Type     string `json:"type"`
	TypeName string `json:"type_name,omitempty"`
	Name     string `json:"name,omitempty"`
	FS       string `json:"fs,omitempty"`
	Label    string `json:"label,omitempty"`
	UUID     string `json:"uuid,omitempty"`
	Files    bool   `json:"files"` // the filesystem can be browsed
	Error    string `json:"error,omitempty"`
}

func runLs(cmd *cobra.Command, imgPath, spec string, fl lsFlags) error {
	img, err := openImage(imgPath, stderrLogger())
	if err != nil {
		return imageErr(err)
	}
	defer img.Close()
	out := bufio.NewWriterSize(os.Stdout, 64<<10)
	defer out.Flush()
	if spec == "" {
		return lsPartitions(out, img, fl.json)
	}
	part, fsys, p, err := img.resolve(spec)
	if err != nil {
		return err
	}
	fi, err := lstat(fsys, part, p)
	if err != nil {
		return imageErr(err)
	}
	pr := newEntryPrinter(out, fl)
	defer pr.finish()
	if !fi.IsDir() {
		e := extract.NewEntry(fsys, p, fi)
		e.Name = p
		return pr.print(e)
	}
	var failed error
	err = extract.Walk(cmd.Context(), fsys, p, func(q string, fi fs.FileInfo, err error) error {
		if err != nil {
			// Damage is reported and skipped; the rest is listed.
			out.Flush()
			fmt.Fprintf(os.Stderr, "dimg: ls: %s: %v\n", display(part, q), err)
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
		e := extract.NewEntry(fsys, q, fi)
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
		return imageErr(err)
	}
	if failed != nil {
		return imageErr(fmt.Errorf("ls: some entries could not be read: %w", failed))
	}
	return nil
}

func lsPartitions(w *bufio.Writer, img *openedImage, jsonOut bool) error {
	img.probeAll()
	var parts []partJSON
	for i := range img.disk.Parts {
		p := &img.disk.Parts[i]
		pj := partJSON{Number: p.Number, Start: p.Start, Size: p.Size, Type: p.Type, TypeName: p.TypeName, Name: p.Name}
		if p.Volume != nil {
			pj.FS, pj.Label, pj.UUID = p.Volume.Type(), p.Volume.Label(), p.Volume.UUID()
			_, pj.Files = p.Volume.(fsdrivers.Filesystem)
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
	fmt.Fprintf(w, "%s: %s, %s partition table\n", img.path, humanBytes(img.size), img.disk.Table.Kind)
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

func newCatCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cat IMAGE N:/PATH",
		Short: "Write a file from inside an image to standard output",
		Long: `Cat copies one file out of partition N of IMAGE to standard output, reading and
decompressing only the chunks that hold it. Symlinks are followed inside the image
(an absolute target resolves against the partition's root, never this machine's).
A damaged chunk under the file stops the copy with an error naming the chunk.`,
		Example: `  dimg cat backup.dimg 2:/etc/fstab
  dimg cat backup.dimg 2:/var/lib/db/dump.sql.gz | zcat | less
  dimg cat usb-stick.img /notes.txt > notes.txt`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error { return runCat(args[0], args[1]) },
	}
}

func runCat(imgPath, spec string) error {
	img, err := openImage(imgPath, stderrLogger())
	if err != nil {
		return imageErr(err)
	}
	defer img.Close()
	part, fsys, p, err := img.resolve(spec)
	if err != nil {
		return err
	}
	fi, err := fsys.Stat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			_, err = lstat(fsys, part, p) // explain what exists
			if err == nil {
				err = fmt.Errorf("%s: dangling symlink", display(part, p))
			}
			return err
		}
		return imageErr(fmt.Errorf("%s: %w", display(part, p), err))
	}
	if fi.IsDir() {
		return fmt.Errorf("%s: is a directory (use dimg ls or dimg extract)", display(part, p))
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file (%s)", display(part, p), extract.TypeName(fi.Mode()))
	}
	f, err := fsys.Open(p)
	if err != nil {
		return imageErr(fmt.Errorf("%s: %w", display(part, p), err))
	}
	defer f.Close()
	ra, ok := f.(io.ReaderAt)
	if !ok {
		return fmt.Errorf("%s: driver cannot read at an offset", display(part, p))
	}
	buf := make([]byte, 1<<20)
	if _, err := io.CopyBuffer(os.Stdout, io.NewSectionReader(ra, 0, fi.Size()), buf); err != nil {
		return imageErr(fmt.Errorf("%s: %w", display(part, p), err))
	}
	return nil
}

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
dimg exits non-zero.`,
		Example: `  dimg extract backup.dimg 2:/etc/fstab ./fstab
  dimg extract backup.dimg 2:/home/alice /srv/restore/
  dimg extract backup.dimg 1:/ ./efi-partition
  dimg extract --force backup.dimg 2:/etc ./etc`,
		Args: exactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runExtract(cmd, args[0], args[1], args[2], extract.Options{Force: force, NoOwner: noOwner})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "overwrite existing files at DEST")
	cmd.Flags().BoolVar(&noOwner, "no-owner", false, "do not set owners even when running as root")
	return cmd
}

// extractProgress feeds the progress bar; one goroutine calls it.
type extractProgress struct{ bar *progressBar }

func (p extractProgress) Entry(string, int64) {}
func (p extractProgress) Bytes(n int64)       { p.bar.Add(n) }

func runExtract(cmd *cobra.Command, imgPath, spec, dest string, opt extract.Options) error {
	log := stderrLogger()
	img, err := openImage(imgPath, log)
	if err != nil {
		return imageErr(err)
	}
	defer img.Close()
	part, fsys, p, err := img.resolve(spec)
	if err != nil {
		return err
	}
	fi, err := lstat(fsys, part, p)
	if err != nil {
		return imageErr(err)
	}
	bar := newProgress(cmd, "extract")
	if fi.Mode().IsRegular() {
		bar.Start(fi.Size())
	}
	if bar != nil {
		opt.Progress = extractProgress{bar}
	}
	opt.Logger = log
	opt.Protect = []string{imgPath} // --force must not replace the image itself
	res, err := extract.Extract(cmd.Context(), fsys, p, dest, opt)
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
		return imageErr(fmt.Errorf("%s: %w", display(part, p), err))
	}
	return nil
}
