package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dimg-project/dimg/cloneio/multicast"
)

func newSendCmd() *cobra.Command {
	var opt sendFlags
	cmd := &cobra.Command{
		Use:   "send IMAGE",
		Short: "Deploy an image to many machines at once over multicast",
		Long: `Send multicasts IMAGE to every 'dimg receive' that joins its session, repairs what
each receiver loses, and waits until every receiver has written its target, read it
back and reported whether it matches the image.

The session is announced on the rendezvous group and port. Sending starts once
--min-receivers have joined, or after --max-wait with at least one. Receivers that
join late, or fall behind, are served by repair rounds after the first pass. The
rate is capped by --max-rate and lowered when receivers report heavy loss.

--fec P/K adds P Reed-Solomon parity packets to every K data packets, so that most
losses are repaired without a round trip; repairs use parity too, so one repair
packet serves every receiver that lost one packet of the same block.

Without --key anyone on the LAN can join and read the image, and a hostile host
could inject packets; --key (or --key-file) authenticates every packet with
HMAC-SHA256. The key does not encrypt.

A summary lists every receiver (address, bytes written, repairs asked, result).
IMAGE's newest commit is sent, or commit N with --at N; a delta image sends the
disk it composes with the images under it (--base PATH when its base moved).

Exit status: 0 when every receiver verified its target, 4 when some did and
others failed, 1 when none did.`,
		Example: `  dimg send disk.dimg --min-receivers 20 --max-wait 5m
  dimg send disk.dimg --interface eth1 --max-rate 800mbit --fec 4/64
  dimg send disk.dimg --key-file /etc/dimg/deploy.key --json > summary.json
  dimg send --at 3 golden.dimg --min-receivers 10     # commit 3 (dimg log)
  dimg send patch.dimg                                  # a delta: the disk it composes`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSend(cmd, args[0], opt)
		},
	}
	f := cmd.Flags()
	addRendezvousFlags(cmd, &opt.rv)
	f.IntVar(&opt.ttl, "ttl", 1, "multicast TTL (1: this network segment only)")
	f.IntVar(&opt.mtu, "mtu", multicast.DefaultMTU, "path MTU; sets the packet size")
	f.IntVar(&opt.minReceivers, "min-receivers", 1, "start sending when this many receivers have joined")
	f.DurationVar(&opt.maxWait, "max-wait", 0, "start after this long if at least one receiver joined (0: wait for --min-receivers)")
	f.StringVar(&opt.maxRate, "max-rate", "", "rate limit: bytes/s (e.g. 80M) or bits/s (e.g. 800mbit, 1gbit); default none")
	f.StringVar(&opt.fec, "fec", "", "proactive Reed-Solomon parity: P or P/K (P parity per K data packets, K default 64)")
	f.DurationVar(&opt.rxTimeout, "receiver-timeout", 10*time.Second, "give up on a receiver silent this long")
	f.BoolVar(&opt.json, "json", false, "print the summary as JSON")
	addImageFlags(cmd)
	return cmd
}

type sendFlags struct {
	rv           rendezvousFlags
	ttl, mtu     int
	minReceivers int
	maxWait      time.Duration
	maxRate, fec string
	rxTimeout    time.Duration
	json         bool
}

// rendezvousFlags are shared by send and receive.
type rendezvousFlags struct {
	group, iface, key, keyFile string
	port                       int
}

func addRendezvousFlags(cmd *cobra.Command, rv *rendezvousFlags) {
	f := cmd.Flags()
	f.StringVar(&rv.group, "group", multicast.DefaultGroup, "multicast group of the session")
	f.IntVar(&rv.port, "port", multicast.DefaultPort, "UDP port of the session")
	f.StringVar(&rv.iface, "interface", "", "network interface (name or address); default: the route to the group")
	f.StringVar(&rv.key, "key", "", "shared secret: authenticate every packet (visible in ps; prefer --key-file)")
	f.StringVar(&rv.keyFile, "key-file", "", "read the shared secret from this file")
}

func (rv rendezvousFlags) secret() ([]byte, error) {
	switch {
	case rv.key != "" && rv.keyFile != "":
		return nil, usagef("give --key or --key-file, not both")
	case rv.keyFile != "":
		b, err := os.ReadFile(rv.keyFile)
		if err != nil {
			return nil, err
		}
		b = []byte(strings.TrimRight(string(b), "\r\n"))
		if len(b) == 0 {
			return nil, usagef("--key-file %s is empty", rv.keyFile)
		}
		return b, nil
	}
	return []byte(rv.key), nil
}

// parseRate reads a rate: "80M", "1.5G" (bytes/s, binary units) or
// "800mbit", "1gbit", "100kbit" (bits/s, decimal as network links are).
func parseRate(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	l := strings.ToLower(strings.TrimSpace(s))
	for _, u := range []struct {
		suffix string
		mult   float64
	}{{"gbit", 1e9 / 8}, {"mbit", 1e6 / 8}, {"kbit", 1e3 / 8}, {"bit", 1.0 / 8}} {
		if strings.HasSuffix(l, u.suffix) {
			v, err := strconv.ParseFloat(strings.TrimSuffix(l, u.suffix), 64)
			if err != nil || v <= 0 {
				break
			}
			return int64(v * u.mult), nil
		}
	}
	n, err := parseSize(s)
	if err != nil {
		return 0, fmt.Errorf("not a rate (try 80M for bytes/s or 800mbit)")
	}
	return n, nil
}

func runSend(cmd *cobra.Command, img string, opt sendFlags) error {
	key, err := opt.rv.secret()
	if err != nil {
		return err
	}
	rate, err := parseRate(opt.maxRate)
	if err != nil {
		return usagef("--max-rate %q: %v", opt.maxRate, err)
	}
	fec, err := multicast.ParseFEC(opt.fec)
	if err != nil {
		return usageError{err}
	}
	if opt.minReceivers < 1 {
		return usagef("--min-receivers must be at least 1")
	}
	src, err := openImage(cmd, img)
	if err != nil {
		return err
	}
	defer src.Close()
	prog := newProgress(cmd, "send")
	res, err := multicast.Send(cmd.Context(), img, multicast.SendOptions{Image: src.Image(),
		Group: opt.rv.group, Port: opt.rv.port, Interface: opt.rv.iface, TTL: opt.ttl, MTU: opt.mtu,
		MinReceivers: opt.minReceivers, MaxWait: opt.maxWait, MaxRate: rate, FEC: fec, Key: key,
		ReceiverTimeout: opt.rxTimeout, Progress: prog,
	})
	prog.Finish()
	if res != nil {
		if opt.json {
			if perr := printJSON(res); perr != nil {
				return perr
			}
		} else {
			printSendSummary(os.Stdout, res)
		}
	}
	return err // ErrPartial exits 4 (exitStatus)
}

func printSendSummary(w io.Writer, r *multicast.SendResult) {
	fmt.Fprintf(w, "session %s: %s, %d objects, %s stored, %s (first pass %s)\n", r.Session, r.Image, r.Objects,
		humanBytes(r.StoredBytes), r.Duration.Round(time.Millisecond), r.PassDuration.Round(time.Millisecond))
	fmt.Fprintf(w, "sent %d packets (%s): %d parity, %d repair; rate lowered %d times\n",
		r.Packets, humanBytes(r.Bytes), r.ParityPackets, r.RepairPackets, r.RateDecreases)
	if d := r.Dropped; d.Foreign+d.BadAuth+d.Malformed > 0 {
		fmt.Fprintf(w, "dropped: %d of another session, %d failed authentication, %d malformed\n", d.Foreign, d.BadAuth, d.Malformed)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RECEIVER\tNAME\tRESULT\tWRITTEN\tREPAIRS\tLOSS\tNOTE")
	for _, x := range r.Receivers {
		note := x.Message
		if x.Late {
			note = strings.TrimSpace("joined late " + note)
		}
		if len(x.Missing) > 0 {
			note += fmt.Sprintf(" chunks %s", formatRanges(x.Missing, x.MissingCount))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%.2f%%\t%s\n", x.Address, x.Name, x.Result, humanBytes(x.BytesWritten),
			x.Retransmissions, x.LossPct, note)
	}
	tw.Flush()
}

// formatRanges prints chunk ranges compactly: "3-7,12 (6 in all)".
func formatRanges(rs []multicast.ChunkRange, total int64) string {
	var b strings.Builder
	for i, r := range rs {
		if i == 8 {
			b.WriteString(",...")
			break
		}
		if i > 0 {
			b.WriteByte(',')
		}
		if r.Count == 1 {
			fmt.Fprintf(&b, "%d", r.First)
		} else {
			fmt.Fprintf(&b, "%d-%d", r.First, r.First+r.Count-1)
		}
	}
	if total > 0 {
		fmt.Fprintf(&b, " (%d in all)", total)
	}
	return b.String()
}
