package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/cloneio/edit"
	"github.com/dimg-project/dimg/cloneio/source"
	"github.com/dimg-project/dimg/fsdrivers"
)

// The offline edit commands (add, rm, mkdir, mv, chmod, chown, ln, put)
// share one flow, cloneio/edit: open IMAGE for writing, change files of
// one partition, commit once with a message, or drop everything on any
// error. editFlags and runEdit are that flow's command-line half.

const editHelp = `

Each run is one commit of IMAGE with a message (-m, or one that says what was
done); with --delta NEW.dimg IMAGE stays untouched and the change becomes the new
delta image NEW.dimg over it. Nothing is written unless everything succeeds: a
missing partition or path, a filesystem dimg cannot write, a name in the way
(--force replaces it) or too little space is reported before anything changes,
and a failure half-way (or a kill) leaves IMAGE as it was. The filesystem passes
its own checker (e2fsck -fn, fsck.fat -n) after every edit. NTFS is not written
by dimg: mount the image with --rw and use ntfs-3g on DIR/pN.img.`

// editFlags are the flags every edit command takes.
type editFlags struct {
	message string
	delta   string
	force   bool
	json    bool
}

func addEditFlags(cmd *cobra.Command, fl *editFlags, force bool) {
	f := cmd.Flags()
	f.StringVarP(&fl.message, "message", "m", "", "the commit's `MESSAGE` (default: says what the command did)")
	f.StringVar(&fl.delta, "delta", "", "write the change as a new delta image `NEW.dimg` over IMAGE; IMAGE is not written")
	f.BoolVar(&fl.json, "json", false, "print the result as JSON on stdout")
	if force {
		f.BoolVarP(&fl.force, "force", "f", false, "replace what is in the way")
	}
	addBaseFlag(cmd)
}

// editResult is what an edit command reports.
type editResult struct {
	Image         string   `json:"image"`
	Target        string   `json:"target"`
	Commit        int64    `json:"commit,omitempty"`
	Changed       bool     `json:"changed"`
	Message       string   `json:"message"`
	ChunksChanged int64    `json:"chunks_changed"`
	BytesChanged  int64    `json:"bytes_changed"`
	Files         int      `json:"files,omitempty"`
	Dirs          int      `json:"dirs,omitempty"`
	Bytes         int64    `json:"bytes,omitempty"`
	Warnings      []string `json:"warnings,omitempty"`
}

// editFunc changes the files; p is the io/fs path the first N:/PATH
// names. It returns the default commit message and fills res.
type editFunc func(e *edit.Edit, p string, res *editResult) (string, error)

// runEdit opens imgPath for an edit of the partition spec names, runs fn,
// and commits; on any error the changes are dropped.
func runEdit(cmd *cobra.Command, imgPath, spec string, fl editFlags, fn editFunc, others ...string) error {
	if err := samePartition(append([]string{spec}, others...)...); err != nil {
		return err
	}
	if fl.delta != "" {
		if _, err := os.Lstat(fl.delta); err == nil {
			return fmt.Errorf("--delta %s: the file exists; a delta is always a new file", fl.delta)
		}
	}
	base, _ := cmd.Flags().GetString("base")
	e, p, err := edit.Open(imgPath, spec, edit.Options{
		Delta: fl.delta, Base: base, Drivers: drivers(), Logger: stderrLogger(), ToolVersion: version,
	})
	if err != nil {
		return err
	}
	res := editResult{Image: imgPath}
	msg, err := fn(e, p, &res)
	if err != nil {
		e.Discard()
		return fmt.Errorf("%w (%s is unchanged)", e.Explain(err, p), imgPath)
	}
	if fl.message != "" {
		msg = fl.message
	}
	info, err := e.Commit(cmd.Context(), msg)
	if err != nil {
		return err
	}
	res.Target, res.Changed, res.Message = info.Target, info.Changed, msg
	res.Commit, res.ChunksChanged, res.BytesChanged = info.Number, info.ChunksChanged, info.BytesChanged
	if fl.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(os.Stderr, "dimg: warning: %s\n", w)
	}
	if q, _ := cmd.Flags().GetBool("quiet"); q {
		return nil
	}
	switch {
	case !info.Changed:
		fmt.Fprintf(os.Stderr, "dimg: no change; %s is unchanged\n", imgPath)
	case fl.delta != "":
		fmt.Fprintf(os.Stderr, "dimg: %s: wrote %s (%d chunks, %s changed over %s)\n", msg, fl.delta, info.ChunksChanged, humanBytes(info.BytesChanged), imgPath)
	default:
		fmt.Fprintf(os.Stderr, "dimg: %s: commit %d of %s (%d chunks, %s changed)\n", msg, info.Number, imgPath, info.ChunksChanged, humanBytes(info.BytesChanged))
	}
	return nil
}

// parseOwner reads "UID", "UID:GID" or ":GID" (numbers: the image's own
// user names are not this machine's).
func parseOwner(s string) (uid, gid *uint32, err error) {
	u, g, hasG := strings.Cut(s, ":")
	num := func(v string) (*uint32, error) {
		if v == "" {
			return nil, nil
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, usagef("owner %q: give numbers, UID[:GID] (names differ between this machine and the image)", s)
		}
		x := uint32(n)
		return &x, nil
	}
	if uid, err = num(u); err != nil {
		return nil, nil, err
	}
	if hasG {
		if gid, err = num(g); err != nil {
			return nil, nil, err
		}
	}
	if uid == nil && gid == nil {
		return nil, nil, usagef("owner %q: give UID, UID:GID or :GID", s)
	}
	return uid, gid, nil
}

// ownerFlag turns --owner into a full Owner (a missing half is 0, root).
func ownerFlag(s string) (*fsdrivers.Owner, error) {
	if s == "" {
		return nil, nil
	}
	uid, gid, err := parseOwner(s)
	if err != nil {
		return nil, err
	}
	o := &fsdrivers.Owner{}
	if uid != nil {
		o.Uid = *uid
	}
	if gid != nil {
		o.Gid = *gid
	}
	return o, nil
}

// modeFlag parses an octal mode ("644", "0755").
func modeFlag(s string) (*uint32, error) {
	if s == "" {
		return nil, nil
	}
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o7777 {
		return nil, usagef("mode %q: give octal permission bits, e.g. 644 or 0755", s)
	}
	v := uint32(m)
	return &v, nil
}

// ownerModeFlags parses the --owner and --mode pair the commands that make
// files share; each result is nil when its flag was not given.
func ownerModeFlags(owner, mode string) (*fsdrivers.Owner, *uint32, error) {
	o, err := ownerFlag(owner)
	if err != nil {
		return nil, nil, err
	}
	m, err := modeFlag(mode)
	if err != nil {
		return nil, nil, err
	}
	return o, m, nil
}

// splitSpecArgs checks that the last argument is an N:/PATH and the others
// local paths (add).
func isSpec(s string) bool {
	i := strings.IndexByte(s, ':')
	if i <= 0 {
		return false
	}
	_, err := strconv.Atoi(s[:i])
	return err == nil
}

// samePartition refuses, before anything is opened, N:/PATHs of different
// partitions: one edit is one partition's commit.
func samePartition(specs ...string) error {
	first := -1
	for _, s := range specs {
		n, _, err := source.ParseSpec(s)
		if err != nil {
			return usageError{err}
		}
		if n == 0 {
			continue
		}
		if first >= 0 && n != first {
			return usagef("%s and %s: one edit changes one partition; run one command per partition", specs[0], s)
		}
		first = n
	}
	return nil
}
