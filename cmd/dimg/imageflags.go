package main

import (
	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/cloneio/source"
)

// Every command that reads an IMAGE argument can read an older commit of
// it (--at) and be told where a delta's base is (--base); openSource and
// openImage pick the flags up when the command has them.

// addImageFlags adds --at and --base to a command that reads an IMAGE.
func addImageFlags(cmd *cobra.Command) {
	cmd.Flags().Int64("at", 0, "read commit `N` of IMAGE instead of the newest (dimg log IMAGE lists them)")
	addBaseFlag(cmd)
}

// addBaseFlag adds --base alone (commands that read every commit, or
// write one).
func addBaseFlag(cmd *cobra.Command) {
	cmd.Flags().String("base", "", "IMAGE is a delta: its base image is the file `PATH` (default: where the delta says it was)")
}

// imageOptions reads --at and --base into source options.
func imageOptions(cmd *cobra.Command, opt source.Options) (source.Options, error) {
	f := cmd.Flags()
	if f.Lookup("at") != nil {
		at, err := f.GetInt64("at")
		if err != nil {
			return opt, usageError{err}
		}
		if at < 0 || f.Changed("at") && at == 0 {
			return opt, usagef("--at %d: commits are numbered from 1", at)
		}
		opt.Commit = at
	}
	if f.Lookup("base") != nil {
		opt.Base, _ = f.GetString("base")
	}
	return opt, nil
}

// atOrBase reports whether --at or --base was given (a stream has neither).
func atOrBase(cmd *cobra.Command) bool {
	f := cmd.Flags()
	return f.Lookup("at") != nil && f.Changed("at") || f.Lookup("base") != nil && f.Changed("base")
}

// atHelp ends the long help of the commands that read files of an IMAGE.
const atHelp = `

With --at N it reads commit N of IMAGE (dimg log lists them) instead of the newest.
A delta image reads through the images under it (--base PATH when its base moved).`
