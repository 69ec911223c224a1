package main

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/cloneio/remote"
	s3backend "github.com/dimg-project/dimg/cloneio/remote/s3"
)

// Images at URLs: every command that takes an IMAGE argument reads
// https://, http:// (and the schemes remoteBackends lists) through one
// remote.Client per process, with the chunk cache the root flags choose.

// remoteBackends lists the URL schemes dimg reads, explicitly (like the
// filesystem drivers): nothing registers itself.
func remoteBackends() map[string]remote.Backend {
	h := remote.NewHTTP(remote.HTTPOptions{})
	return map[string]remote.Backend{"http": h, "https": h, "s3": s3backend.New(s3backend.Options{})}
}

// addRemoteFlags adds the cache flags to the root command.
func addRemoteFlags(root *cobra.Command) {
	f := root.PersistentFlags()
	f.String("cache", "", "keep chunks of images read over the network in `DIR` (default: the user cache directory's dimg)")
	f.String("cache-size", "2G", "bound the cache to `SIZE` bytes (K, M, G, T suffixes); least recently used chunks go first")
	f.Bool("no-cache", false, "keep nothing of images read over the network")
}

var (
	remoteOnce   sync.Once
	remoteCli    *remote.Client
	remoteErr    error
	remoteFetch  fetchMeter
	remoteCached *remote.Cache
)

// remoteClient returns the process's remote client (made on first use).
func remoteClient(cmd *cobra.Command) (*remote.Client, error) {
	remoteOnce.Do(func() {
		opt := remote.Options{Backends: remoteBackends(), OnFetch: remoteFetch.add}
		c, err := openCache(cmd)
		if err != nil {
			remoteErr = err
			return
		}
		opt.Cache, remoteCached = c, c
		remoteCli = remote.New(opt)
	})
	return remoteCli, remoteErr
}

// openCache opens the cache the flags name (nil with --no-cache).
func openCache(cmd *cobra.Command) (*remote.Cache, error) {
	f := cmd.Flags()
	if no, _ := f.GetBool("no-cache"); no {
		return nil, nil
	}
	dir, _ := f.GetString("cache")
	if dir == "" {
		d, err := remote.DefaultCacheDir()
		if err != nil {
			return nil, usageError{err}
		}
		dir = d
	}
	s, _ := f.GetString("cache-size")
	size, err := parseSize(s)
	if err != nil || size <= 0 {
		return nil, usagef("--cache-size %q: want a size like 512M or 4G", s)
	}
	return remote.OpenCache(dir, size)
}

// fetchMeter counts the bytes fetched over the network and shows them on
// the command's progress line against the size of the image files they
// came from (so a lazy read shows how little it cost).
type fetchMeter struct {
	bytes atomic.Int64
	mu    sync.Mutex
	sizes map[*remote.File]int64
	bar   *progressBar
	last  time.Time
}

func (m *fetchMeter) add(f *remote.File, n int64) {
	if n == 0 { // a File just opened
		m.mu.Lock()
		if m.sizes == nil {
			m.sizes = map[*remote.File]int64{}
		}
		m.sizes[f] = f.Size()
		m.mu.Unlock()
		return
	}
	m.bytes.Add(n)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sizes == nil {
		m.sizes = map[*remote.File]int64{}
	}
	m.sizes[f] = f.Size()
	if m.bar != nil && time.Since(m.last) >= drawEvery {
		m.last = time.Now()
		m.bar.Note(m.line())
	}
}

// line is "fetched 1.2 MiB of a 4.0 GiB image" (m.mu held).
func (m *fetchMeter) line() string {
	var total int64
	for _, s := range m.sizes {
		total += s
	}
	return fmt.Sprintf("fetched %s of a %s image", humanBytes(m.bytes.Load()), humanBytes(total))
}

// attach shows the count on bar (nil: none).
func (m *fetchMeter) attach(bar *progressBar) {
	m.mu.Lock()
	m.bar = bar
	m.mu.Unlock()
}

// summary prints what was fetched, once a command that read a URL is
// done, when stderr is a terminal and -q is not given. With
// DIMG_REMOTE_STATS set it always prints a line for scripts:
// "dimg: remote: fetched=BYTES requests=N image=BYTES".
func (m *fetchMeter) summary(cmd *cobra.Command) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if os.Getenv("DIMG_REMOTE_STATS") != "" {
		var reqs, total int64
		for f, s := range m.sizes {
			reqs += f.Stats().Requests
			total += s
		}
		fmt.Fprintf(os.Stderr, "dimg: remote: fetched=%d requests=%d image=%d\n", m.bytes.Load(), reqs, total)
		return
	}
	if len(m.sizes) == 0 {
		return
	}
	if q, _ := cmd.PersistentFlags().GetBool("quiet"); q || !isTerminal(os.Stderr) {
		return
	}
	fmt.Fprintf(os.Stderr, "dimg: %s\n", m.line())
}

func newCacheCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cache ls|clear",
		Short: "List or clear the local cache of images read over the network",
		Long: `Images read from a URL keep the chunks they fetch in a local cache (--cache DIR,
default the user cache directory's dimg, bounded by --cache-size), shared by
every dimg process and kept across runs: a second mount or cat of the same
image fetches nothing it already has. Entries are checked when read; a damaged
one is fetched again.`,
	}
	var jsonOut bool
	ls := &cobra.Command{
		Use:   "ls",
		Short: "Show what the cache holds, by image",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := openCache(cmd)
			if err != nil || c == nil {
				return err
			}
			info, err := c.List()
			if err != nil {
				return err
			}
			if jsonOut {
				return printJSON(info)
			}
			fmt.Printf("%s: %d entries, %s of %s\n", info.Dir, info.Entries, humanBytes(info.Bytes), humanBytes(info.Max))
			if info.Damaged > 0 {
				fmt.Printf("%d damaged entries (fetched again when read)\n", info.Damaged)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			for _, g := range info.Groups {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", g.Label, g.Entries, humanBytes(g.Bytes), g.LastUsed.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVar(&jsonOut, "json", false, "print as JSON")
	clear := &cobra.Command{
		Use:   "clear",
		Short: "Remove every entry of the cache",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := openCache(cmd)
			if err != nil || c == nil {
				return err
			}
			n, b, err := c.Clear()
			if err != nil {
				return err
			}
			fmt.Printf("removed %d entries, %s\n", n, humanBytes(b))
			return nil
		},
	}
	cmd.AddCommand(ls, clear)
	return cmd
}
