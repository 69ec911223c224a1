package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/dimg-project/dimg/cloneio/source"
)

// exactArgs is cobra.ExactArgs with the error marked as a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usagef("%s: %v", cmd.Name(), err)
		}
		return nil
	}
}

// openSource opens an IMAGE argument that may also be a raw disk file or a
// block device (ls, cat, extract, mount), with every filesystem driver;
// log gets the damaged chunks reads run into.
func openSource(cmd *cobra.Command, path string, log *slog.Logger) (*source.Source, error) {
	opt, err := imageOptions(cmd, source.Options{Raw: true, Drivers: drivers(), Logger: log})
	if err != nil {
		return nil, err
	}
	if opt.Remote, err = remoteClient(cmd); err != nil {
		return nil, err
	}
	return source.Open(cmd.Context(), path, opt)
}

// openImage opens an IMAGE argument that must be a dimg image (info,
// verify, restore, send, log, flatten), at --at and over --base when the
// command has them.
func openImage(cmd *cobra.Command, path string) (*source.Source, error) {
	opt, err := imageOptions(cmd, source.Options{})
	if err != nil {
		return nil, err
	}
	if opt.Remote, err = remoteClient(cmd); err != nil {
		return nil, err
	}
	return source.Open(cmd.Context(), path, opt)
}

// stderrLogger reports chunk and I/O errors on stderr.
func stderrLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// jsonFailure prints, for a --json command that failed before it had a
// result, {"image": path, "ok": false, "error": ...}, so a script reading
// stdout always gets one JSON object; err is returned as it is (the exit
// status and the message on stderr stay what they would be).
func jsonFailure(path string, err error) error {
	if perr := printJSON(map[string]any{"image": path, "ok": false, "error": err.Error()}); perr != nil {
		return errors.Join(err, perr)
	}
	return err
}

// parseSize reads "512M", "7G", "1T", "4096" (binary units) into bytes.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(strings.ToUpper(strings.TrimSuffix(strings.TrimSuffix(s, "B"), "I")))
	mult := int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult != 1 {
			s = s[:n-1]
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("not a size (try 512M, 20G)")
	}
	return v * mult, nil
}
