package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/cloneio/edit"
	"github.com/dimg-project/dimg/fsdrivers/fsedit"
)

func newAddCmd() *cobra.Command {
	var fl editFlags
	var owner, mode string
	cmd := &cobra.Command{
		Use:   "add IMAGE LOCAL... N:/DIR/",
		Short: "Copy local files and trees into a filesystem of an image",
		Long: `Add copies local files and directory trees into partition N of IMAGE, as cp -a
does: modes, owners, times and extended attributes are kept (--owner and --mode
override them), symlinks stay symlinks, hard links within what is copied stay
hard links, FIFOs and device nodes are made where the filesystem can hold them,
and sparse files keep their holes. Each LOCAL goes into DIR under its own name;
DIR is made, with its parents, when it ends with '/' or several LOCALs are given.
A single LOCAL to a path that is not a directory becomes that path. Existing
directories are merged; an existing file in the way is an error unless --force.
The free space is checked first: a copy that does not fit says how much is
missing and writes nothing.` + editHelp,
		Example: `  dimg add golden.dimg ./drivers 2:/lib/modules/6.1.0-18-amd64/extra/
  dimg add golden.dimg site.conf 2:/etc/site.conf -m "site config"
  dimg add --owner 0:0 --mode 644 golden.dimg ./certs 2:/usr/local/share/ca-certificates/
  dimg add base.dimg --delta site-a.dimg ./site-a/etc 2:/`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 3 {
				return usagef("add needs IMAGE, at least one LOCAL path and N:/DIR")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o, m, err := ownerModeFlags(owner, mode)
			if err != nil {
				return err
			}
			opt := fsedit.CopyOptions{Force: fl.force, Owner: o, Mode: m}
			return runAdd(cmd, args[0], args[1:len(args)-1], args[len(args)-1], fl, opt)
		},
	}
	addEditFlags(cmd, &fl, true)
	cmd.Flags().StringVar(&owner, "owner", "", "own every node added by `UID[:GID]` (numbers)")
	cmd.Flags().StringVar(&mode, "mode", "", "give every file added the octal `MODE` (directories get it with x added where r is)")
	return cmd
}

func runAdd(cmd *cobra.Command, imgPath string, locals []string, spec string, fl editFlags, opt fsedit.CopyOptions) error {
	for _, l := range locals {
		if _, err := os.Lstat(l); err != nil {
			return err
		}
		if isSpec(l) {
			if _, err := os.Lstat(l); err != nil {
				return usagef("%s looks like N:/PATH: the image path goes last (dimg add IMAGE LOCAL... N:/DIR/)", l)
			}
		}
	}
	if !isSpec(spec) && !strings.HasPrefix(spec, "/") {
		return usagef("%s: the last argument is where to add, N:/DIR/ (e.g. 2:/lib/extra/)", spec)
	}
	bar := newProgress(cmd, "adding")
	opt.Progress = bar
	return runEdit(cmd, imgPath, spec, fl, func(e *edit.Edit, p string, res *editResult) (string, error) {
		r, err := e.Path.CopyIn(cmd.Context(), locals, p, strings.HasSuffix(spec, "/"), opt)
		bar.Finish()
		if err != nil {
			return "", err
		}
		res.Files, res.Dirs, res.Bytes, res.Warnings = r.Files, r.Dirs, r.Bytes, r.Warnings
		what := strings.Join(locals, ", ")
		if len(locals) > 3 {
			what = fmt.Sprintf("%s, ... (%d paths)", strings.Join(locals[:2], ", "), len(locals))
		}
		return fmt.Sprintf("add %s to %s", what, e.Path.Show(p)), nil
	})
}

func newPutCmd() *cobra.Command {
	var fl editFlags
	var owner, mode string
	cmd := &cobra.Command{
		Use:   "put IMAGE N:/PATH < DATA",
		Short: "Write standard input as a file in an image",
		Long: `Put writes what it reads from standard input as the file PATH of partition N of
IMAGE, for scripts: mode 644 owned by root unless --mode and --owner say
otherwise. Its directory must exist. An existing file is replaced only with
--force (it keeps its owner and mode unless given). Runs of zeros become holes
where the filesystem has them. The size is not known in advance: if the
filesystem fills up, nothing is committed.` + editHelp,
		Example: `  echo "server 10.0.0.1" | dimg put golden.dimg 2:/etc/chrony/sources.d/site.sources
  dimg put --force --mode 600 golden.dimg 2:/root/.ssh/authorized_keys < keys`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			o, m, err := ownerModeFlags(owner, mode)
			if err != nil {
				return err
			}
			bar := newProgress(cmd, "writing")
			opt := fsedit.PutOptions{Force: fl.force, Owner: o, Mode: m, Progress: bar}
			return runEdit(cmd, args[0], args[1], fl, func(e *edit.Edit, p string, res *editResult) (string, error) {
				n, err := e.Path.Put(p, cmd.InOrStdin(), opt)
				bar.Finish()
				res.Files, res.Bytes = 1, n
				return fmt.Sprintf("put %s (%s)", e.Path.Show(p), humanBytes(n)), err
			})
		},
	}
	addEditFlags(cmd, &fl, true)
	cmd.Flags().StringVar(&owner, "owner", "", "owner `UID[:GID]` (numbers; default 0:0)")
	cmd.Flags().StringVar(&mode, "mode", "", "octal `MODE` (default 644)")
	return cmd
}
