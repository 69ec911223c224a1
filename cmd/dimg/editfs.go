package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/cloneio/edit"
	"github.com/dimg-project/dimg/fsdrivers"
)

// rm, mkdir, mv, chmod, chown and ln: one path operation each, through
// runEdit.

func newRmCmd() *cobra.Command {
	var fl editFlags
	var recursive bool
	cmd := &cobra.Command{
		Use:   "rm [-r] IMAGE N:/PATH...",
		Short: "Remove files from a filesystem of an image",
		Long: `Rm removes files, symlinks and empty directories (with -r, directories and
everything under them) from partition N of IMAGE. A final symlink is removed, not
followed. Several paths must be in the same partition.` + editHelp,
		Example: `  dimg rm golden.dimg 2:/etc/machine-id
  dimg rm -r golden.dimg 2:/var/cache/apt/archives`,
		Args: minArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachSpec(cmd, args[0], args[1:], fl, "rm", func(e *edit.Edit, q string, _ *editResult) error {
				var err error
				if recursive {
					err = e.Path.RemoveAll(q)
				} else {
					err = e.Path.Remove(q)
				}
				if err != nil {
					return e.Explain(err, q)
				}
				return nil
			})
		},
	}
	addEditFlags(cmd, &fl, false)
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "remove directories and their contents")
	return cmd
}

func newMkdirCmd() *cobra.Command {
	var fl editFlags
	var parents bool
	var owner, mode string
	cmd := &cobra.Command{
		Use:     "mkdir [-p] IMAGE N:/DIR...",
		Short:   "Make directories in a filesystem of an image",
		Long:    `Mkdir makes directories in partition N of IMAGE (mode 755, owned by root, unless --mode and --owner say otherwise). With -p the missing parents are made too and an existing directory is not an error.` + editHelp,
		Example: `  dimg mkdir -p golden.dimg 2:/opt/site/bin`,
		Args:    minArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			o, m, err := ownerModeFlags(owner, mode)
			if err != nil {
				return err
			}
			own, perm := fsdrivers.Owner{}, uint32(0o755)
			if o != nil {
				own = *o
			}
			if m != nil {
				perm = *m
			}
			return eachSpec(cmd, args[0], args[1:], fl, "mkdir", func(e *edit.Edit, q string, res *editResult) error {
				var err error
				if parents {
					_, err = e.Path.MkdirAll(q, perm, own)
				} else {
					_, err = e.Path.Mkdir(q, perm, own)
				}
				if err != nil {
					return e.Explain(err, q)
				}
				res.Dirs++
				return nil
			})
		},
	}
	addEditFlags(cmd, &fl, false)
	cmd.Flags().BoolVarP(&parents, "parents", "p", false, "make missing parents; an existing directory is fine")
	cmd.Flags().StringVar(&owner, "owner", "", "owner `UID[:GID]` (numbers; default 0:0)")
	cmd.Flags().StringVar(&mode, "mode", "", "octal `MODE` (default 755)")
	return cmd
}

func newMvCmd() *cobra.Command {
	var fl editFlags
	cmd := &cobra.Command{
		Use:     "mv IMAGE N:/SRC N:/DST",
		Short:   "Move or rename a file within a filesystem of an image",
		Long:    `Mv renames SRC to DST in partition N of IMAGE; when DST is a directory SRC moves into it. An existing file at DST is replaced only with --force.` + editHelp,
		Example: `  dimg mv golden.dimg 2:/etc/motd 2:/etc/motd.orig`,
		Args:    exactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runEdit(cmd, args[0], args[1], fl, func(e *edit.Edit, p string, res *editResult) (string, error) {
				q, err := e.Resolve(args[2])
				if err != nil {
					return "", err
				}
				if err := e.Path.Move(p, q, fl.force); err != nil {
					return "", e.Explain(err, p)
				}
				return fmt.Sprintf("mv %s %s", e.Path.Show(p), e.Path.Show(q)), nil
			}, args[2])
		},
	}
	addEditFlags(cmd, &fl, true)
	return cmd
}

func newChmodCmd() *cobra.Command {
	return pathAttrCmd(&cobra.Command{
		Use:     "chmod IMAGE MODE N:/PATH...",
		Short:   "Change permissions of files in a filesystem of an image",
		Long:    `Chmod sets the permission bits (octal MODE) of files in partition N of IMAGE, following a final symlink; -R walks directories.` + editHelp,
		Example: `  dimg chmod golden.dimg 600 2:/etc/ssh/ssh_host_ed25519_key`,
	}, func(arg string) (func(*edit.Edit, string) error, error) {
		m, err := modeFlag(arg)
		if err != nil {
			return nil, err
		}
		return func(e *edit.Edit, q string) error { return e.Path.Chmod(q, *m) }, nil
	})
}

func newChownCmd() *cobra.Command {
	return pathAttrCmd(&cobra.Command{
		Use:     "chown IMAGE UID[:GID] N:/PATH...",
		Short:   "Change the owner of files in a filesystem of an image",
		Long:    `Chown sets the owner and/or group (numbers: names on this machine are not the image's) of files in partition N of IMAGE; a final symlink is changed itself. -R walks directories.` + editHelp,
		Example: `  dimg chown -R golden.dimg 1000:1000 2:/home/admin`,
	}, func(arg string) (func(*edit.Edit, string) error, error) {
		uid, gid, err := parseOwner(arg)
		if err != nil {
			return nil, err
		}
		return func(e *edit.Edit, q string) error { return e.Path.Chown(q, uid, gid) }, nil
	})
}

// pathAttrCmd completes chmod and chown, which share their shape: IMAGE
// VALUE N:/PATH..., with -R walking directories. parse turns VALUE into
// the change made to each path.
func pathAttrCmd(cmd *cobra.Command, parse func(value string) (func(*edit.Edit, string) error, error)) *cobra.Command {
	var fl editFlags
	var recursive bool
	cmd.Args = minArgs(3)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		fn, err := parse(args[1])
		if err != nil {
			return err
		}
		return eachSpec(cmd, args[0], args[2:], fl, cmd.Name()+" "+args[1], func(e *edit.Edit, q string, _ *editResult) error {
			if _, err := e.Path.Lstat(q); err != nil {
				return e.Explain(err, q)
			}
			if recursive {
				return e.Path.Walk(q, func(sub string, _ fsdrivers.Attr) error { return fn(e, sub) })
			}
			return fn(e, q)
		})
	}
	addEditFlags(cmd, &fl, false)
	cmd.Flags().BoolVarP(&recursive, "recursive", "R", false, "change directories' contents too")
	return cmd
}

// eachSpec runs fn on every N:/PATH of specs (all in one partition) in one
// edit; the edit is described as what followed by the paths.
func eachSpec(cmd *cobra.Command, imgPath string, specs []string, fl editFlags, what string, fn func(e *edit.Edit, q string, res *editResult) error) error {
	return runEdit(cmd, imgPath, specs[0], fl, func(e *edit.Edit, p string, res *editResult) (string, error) {
		var shown []string
		for _, spec := range specs {
			q, err := e.Resolve(spec)
			if err != nil {
				return "", err
			}
			if err := fn(e, q, res); err != nil {
				return "", err
			}
			shown = append(shown, e.Path.Show(q))
		}
		return what + " " + strings.Join(shown, " "), nil
	}, specs[1:]...)
}

func newLnCmd() *cobra.Command {
	var fl editFlags
	var symbolic bool
	cmd := &cobra.Command{
		Use:   "ln [-s] IMAGE TARGET N:/LINK",
		Short: "Make a hard or symbolic link in a filesystem of an image",
		Long: `Ln makes LINK in partition N of IMAGE: with -s a symbolic link whose target is
the text TARGET (resolved inside the image when followed: an absolute target
starts at the partition's root), else a hard link to the file TARGET (N:/PATH).
An existing LINK is replaced only with --force.` + editHelp,
		Example: `  dimg ln -s golden.dimg /lib/systemd/system/site.service 2:/etc/systemd/system/multi-user.target.wants/site.service
  dimg ln golden.dimg 2:/usr/bin/tool 2:/usr/bin/tool-alias`,
		Args: exactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runEdit(cmd, args[0], args[2], fl, func(e *edit.Edit, p string, res *editResult) (string, error) {
				if ok, err := e.Path.Exists(p); err != nil {
					return "", err
				} else if ok && !fl.force {
					return "", fmt.Errorf("%s: already exists (--force replaces it)", e.Path.Show(p))
				} else if ok {
					if err := e.Path.Remove(p); err != nil {
						return "", err
					}
				}
				if symbolic {
					if err := e.Path.Symlink(args[1], p, fsdrivers.Owner{}); err != nil {
						return "", e.Explain(err, p)
					}
					return fmt.Sprintf("ln -s %s %s", args[1], e.Path.Show(p)), nil
				}
				q, err := e.Resolve(args[1])
				if err != nil {
					return "", err
				}
				if err := e.Path.Link(q, p); err != nil {
					return "", e.Explain(err, q)
				}
				return fmt.Sprintf("ln %s %s", e.Path.Show(q), e.Path.Show(p)), nil
			})
		},
	}
	addEditFlags(cmd, &fl, true)
	cmd.Flags().BoolVarP(&symbolic, "symbolic", "s", false, "make a symbolic link to the text TARGET")
	return cmd
}

func minArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.MinimumNArgs(n)(cmd, args); err != nil {
			return usagef("%s: %v", cmd.Name(), err)
		}
		return nil
	}
}
