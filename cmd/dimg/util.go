package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"
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

// checkImageFile refuses an IMAGE that is not a regular file before it is
// opened: opening a FIFO would wait for a writer for ever, and a pipe or a
// device cannot be read at random as an image must be.
func checkImageFile(path string, blockOK bool) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	m := st.Mode()
	switch {
	case m.IsRegular():
		return nil
	case m.IsDir():
		return fmt.Errorf("%s is a directory, not an image", path)
	case m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0 && blockOK:
		return nil
	case m&(os.ModeNamedPipe|os.ModeSocket|os.ModeCharDevice) != 0:
		return fmt.Errorf("%s is a pipe or a character device: an image must be a file this command can read at random (save the stream to a file, or use dimg restore -)", path)
	}
	return fmt.Errorf("%s is not a regular file", path)
}

func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
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
