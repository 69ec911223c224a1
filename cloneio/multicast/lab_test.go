package multicast

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The lab tests run sender and receivers as separate processes (this test
// binary re-executed as TestLabHelper) inside network namespaces built by
// scripts/netns-lab.sh: a sender and N receivers on a bridge with no
// uplink, optionally with loss (nftables) and rate limits (tbf). The whole
// harness runs under `unshare -n`, so a command accidentally run outside
// `ip netns exec` sees only lo and can never reach a real network.

const (
	envInNetns = "DIMG_MCAST_UNSHARED"
	envHelper  = "DIMG_MCAST_HELPER"
	envLab     = "DIMG_NETNS_LAB" // path of netns-lab.sh (default scripts/netns-lab.sh of the module)
)

func labScript(t *testing.T) string {
	if p := os.Getenv(envLab); p != "" {
		return p
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, "scripts", "netns-lab.sh")
		}
	}
	return ""
}

// labPrereqs skips unless the lab can run here.
func labPrereqs(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("lab tests are not short")
	}
	if os.Geteuid() != 0 {
		t.Skip("lab tests need root (network namespaces)")
	}
	for _, tool := range []string{"ip", "nft", "tc", "unshare", "bridge", "cmp"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("lab tests need %s", tool)
		}
	}
	s := labScript(t)
	if _, err := os.Stat(s); err != nil {
		t.Skipf("lab script not found (%s): %v", s, err)
	}
	return s
}

// TestLab re-executes itself under `unshare -n` and runs the scenarios
// there.
func TestLab(t *testing.T) {
	script := labPrereqs(t)
	if os.Getenv(envInNetns) != "1" {
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		args := []string{"-n", "--", exe, "-test.run=^TestLab$", "-test.timeout=4m"}
		if testing.Verbose() {
			args = append(args, "-test.v")
		}
		cmd := exec.Command("unshare", args...)
		cmd.Env = append(os.Environ(), envInNetns+"=1", envLab+"="+script)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("lab run under unshare -n: %v", err)
		}
		return
	}
	fx := newFixture(t, 256<<20, 256<<10, 11)
	st, _ := os.Stat(fx.img)
	t.Logf("image: %d MiB disk, %d MiB stored", fx.size>>20, st.Size()>>20)

	t.Run("three-receivers", func(t *testing.T) {
		l := labUp(t, script, 3, "--rate", "400mbit")
		rxs := l.startReceivers(t, fx, []int{1, 2, 3}, helperConfig{})
		tx := l.start(t, "tx", helperConfig{Role: "send", Image: fx.img, MinReceivers: 3})
		sr := tx.wait(t)
		if sr.Err != "" || !sr.Send.OK() {
			t.Fatalf("sender: %s %+v", sr.Err, sr.Send)
		}
		checkReceivers(t, fx, rxs, nil)
		t.Logf("sender: pass %s, total %s, %d packets, %d repair", sr.Send.PassDuration, sr.Send.Duration, sr.Send.Packets, sr.Send.RepairPackets)
	})

	t.Run("loss-1pct", func(t *testing.T) {
		l := labUp(t, script, 3, "--loss", "1")
		rxs := l.startReceivers(t, fx, []int{1, 2, 3}, helperConfig{})
		tx := l.start(t, "tx", helperConfig{Role: "send", Image: fx.img, MinReceivers: 3, MaxRate: 40 << 20, FEC: "2/64"})
		sr := tx.wait(t)
		if sr.Err != "" || !sr.Send.OK() {
			t.Fatalf("sender: %s %+v", sr.Err, sr.Send)
		}
		checkReceivers(t, fx, rxs, nil)
		t.Logf("sender: pass %s, total %s, %d packets, %d parity, %d repair, %d rate decreases", sr.Send.PassDuration,
			sr.Send.Duration, sr.Send.Packets, sr.Send.ParityPackets, sr.Send.RepairPackets, sr.Send.RateDecreases)
	})

	t.Run("late-receiver", func(t *testing.T) {
		l := labUp(t, script, 3)
		rxs := l.startReceivers(t, fx, []int{1, 2}, helperConfig{})
		tx := l.start(t, "tx", helperConfig{Role: "send", Image: fx.img, MinReceivers: 2, MaxRate: 20 << 20})
		tx.waitProgress(t, "sending", 0.25)
		rxs = append(rxs, l.startReceivers(t, fx, []int{3}, helperConfig{})...)
		sr := tx.wait(t)
		if sr.Err != "" || !sr.Send.OK() {
			t.Fatalf("sender: %s %+v", sr.Err, sr.Send)
		}
		checkReceivers(t, fx, rxs, nil)
		late := 0
		for _, r := range sr.Send.Receivers {
			if r.Late {
				late++
			}
		}
		if late != 1 {
			t.Fatalf("sender saw %d late receivers: %+v", late, sr.Send.Receivers)
		}
	})

	t.Run("killed-receiver", func(t *testing.T) {
		l := labUp(t, script, 3)
		rxs := l.startReceivers(t, fx, []int{1, 2, 3}, helperConfig{})
		tx := l.start(t, "tx", helperConfig{Role: "send", Image: fx.img, MinReceivers: 3, MaxRate: 20 << 20, ReceiverTimeout: "3s"})
		tx.waitProgress(t, "sending", 0.3)
		rxs[2].kill()
		sr := tx.wait(t)
		if !strings.Contains(sr.Err, ErrPartial.Error()) {
			t.Fatalf("sender: err %q, want partial failure", sr.Err)
		}
		checkReceivers(t, fx, rxs[:2], nil)
		var lost []ReceiverReport
		for _, r := range sr.Send.Receivers {
			if !r.OK {
				lost = append(lost, r)
			}
		}
		if len(lost) != 1 || lost[0].Result != "lost" || !strings.HasPrefix(lost[0].Address, l.env["LAB_RX3_ADDR"]+":") {
			t.Fatalf("sender reports: %+v", sr.Send.Receivers)
		}
	})
}

// helperConfig is what a helper process is told to do (JSON in envHelper).
type helperConfig struct {
	Role            string // "send" or "receive"
	Image           string
	Target          string
	Group           string
	Port            int
	Interface       string
	MinReceivers    int
	MaxRate         int64
	FEC             string
	ReceiverTimeout string
	Out             string
}

type helperResult struct {
	Send *SendResult
	Recv *ReceiveResult
	Err  string
}

// TestLabHelper is the body of a helper process; run directly it skips.
func TestLabHelper(t *testing.T) {
	raw := os.Getenv(envHelper)
	if raw == "" {
		t.Skip("helper process for TestLab")
	}
	var cfg helperConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	var res helperResult
	var err error
	switch cfg.Role {
	case "send":
		fec, ferr := ParseFEC(cfg.FEC)
		if ferr != nil {
			t.Fatal(ferr)
		}
		rt, _ := time.ParseDuration(cfg.ReceiverTimeout)
		var lastPhase string
		var lastPct int64
		prog := &watch{on: func(phase string, done, total int64) {
			// A line per phase and per percent for the harness to follow.
			pct := int64(-1)
			if total > 0 {
				pct = done * 100 / total
			}
			if phase != lastPhase || pct != lastPct {
				fmt.Printf("progress %s %d %d\n", phase, done, total)
				lastPhase, lastPct = phase, pct
			}
		}}
		res.Send, err = Send(ctx, cfg.Image, SendOptions{Group: cfg.Group, Port: cfg.Port, Interface: cfg.Interface,
			MinReceivers: cfg.MinReceivers, MaxWait: 60 * time.Second, MaxRate: cfg.MaxRate, FEC: fec,
			ReceiverTimeout: rt, Progress: prog})
	case "receive":
		res.Recv, err = Receive(ctx, cfg.Target, ReceiveOptions{Group: cfg.Group, Port: cfg.Port, Interface: cfg.Interface,
			Wait: 60 * time.Second})
	}
	if err != nil {
		res.Err = err.Error()
	}
	b, _ := json.Marshal(res)
	if err := os.WriteFile(cfg.Out, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

type lab struct {
	script, prefix string
	env            map[string]string
	group          string
	port           int
	dir            string
}

func labUp(t *testing.T, script string, n int, extra ...string) *lab {
	t.Helper()
	var rb [3]byte
	rand.Read(rb[:])
	l := &lab{script: script, prefix: "mc" + hex.EncodeToString(rb[:]), env: map[string]string{}, dir: t.TempDir()}
	l.group, l.port = loopEndpoint()
	args := append([]string{script, "up", strconv.Itoa(n), "--prefix", l.prefix}, extra...)
	t.Cleanup(func() {
		// Bounded: under heavy load `down` was once seen blocking until
		// the test binary's own timeout; a lab left behind costs nothing
		// (every lab has its own random prefix), a hung suite costs CI.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", script, "down", "--prefix", l.prefix)
		cmd.WaitDelay = 5 * time.Second
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("lab down: %v %s", err, out)
		}
	})
	cmd := exec.Command("bash", args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("lab up: %v\n%s", err, stderr.String())
	}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			l.env[k] = strings.Trim(v, `"`)
		}
	}
	if l.env["LAB_TX_NS"] == "" {
		t.Fatalf("lab up printed no environment: %s", out)
	}
	return l
}

type helperProc struct {
	cmd    *exec.Cmd
	out    string
	target string
	lines  chan string
	done   chan struct{}
	mu     sync.Mutex
	killed bool
}

// start runs a helper in namespace ns ("tx" or "rxN").
func (l *lab) start(t *testing.T, ns string, cfg helperConfig) *helperProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	key := "LAB_TX_NS"
	if ns != "tx" {
		key = "LAB_" + strings.ToUpper(ns) + "_NS"
	}
	cfg.Group, cfg.Port, cfg.Interface = l.group, l.port, l.env["LAB_IF"]
	cfg.Out = filepath.Join(l.dir, ns+".json")
	b, _ := json.Marshal(cfg)
	cmd := exec.Command("ip", "netns", "exec", l.env[key], exe, "-test.run=^TestLabHelper$", "-test.timeout=3m")
	cmd.Env = append(os.Environ(), envHelper+"="+string(b))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helperProc{cmd: cmd, out: cfg.Out, target: cfg.Target, lines: make(chan string, 1024), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case h.lines <- sc.Text():
			default:
			}
		}
		io.Copy(io.Discard, stdout)
		cmd.Wait()
		if s := stderr.String(); s != "" && !h.wasKilled() {
			t.Logf("%s stderr: %s", ns, s)
		}
		close(h.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-h.done
	})
	return h
}

func (l *lab) startReceivers(t *testing.T, fx fixture, which []int, cfg helperConfig) []*helperProc {
	var out []*helperProc
	for _, i := range which {
		c := cfg
		c.Role = "receive"
		c.Target = filepath.Join(l.dir, fmt.Sprintf("target%d", i))
		out = append(out, l.start(t, fmt.Sprintf("rx%d", i), c))
	}
	return out
}

func (h *helperProc) wasKilled() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.killed
}

func (h *helperProc) kill() {
	h.mu.Lock()
	h.killed = true
	h.mu.Unlock()
	h.cmd.Process.Kill()
}

// waitProgress waits until the sender reports phase with at least frac of
// its pass sent.
func (h *helperProc) waitProgress(t *testing.T, phase string, frac float64) {
	t.Helper()
	timeout := time.After(90 * time.Second)
	for {
		select {
		case line := <-h.lines:
			f := strings.Fields(line)
			if len(f) == 4 && f[0] == "progress" && f[1] == phase {
				done, _ := strconv.ParseFloat(f[2], 64)
				total, _ := strconv.ParseFloat(f[3], 64)
				if total > 0 && done >= frac*total {
					return
				}
			}
		case <-h.done:
			t.Fatalf("helper ended before %s reached %.0f%%", phase, frac*100)
		case <-timeout:
			t.Fatalf("sender never reached %s %.0f%%", phase, frac*100)
		}
	}
}

func (h *helperProc) wait(t *testing.T) helperResult {
	t.Helper()
	select {
	case <-h.done:
	case <-time.After(170 * time.Second):
		t.Fatal("helper did not finish")
	}
	var res helperResult
	b, err := os.ReadFile(h.out)
	if err != nil {
		t.Fatalf("helper left no result: %v", err)
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// checkReceivers waits for receivers and compares each target with the
// disk the image was made from.
func checkReceivers(t *testing.T, fx fixture, rxs []*helperProc, _ error) {
	t.Helper()
	for i, h := range rxs {
		r := h.wait(t)
		if r.Err != "" || r.Recv == nil || !r.Recv.OK {
			t.Fatalf("receiver %d: %s %+v", i+1, r.Err, r.Recv)
		}
		sameFile(t, fx.disk, h.target)
		if i == 0 {
			sameAsImage(t, fx.img, h.target) // what restore would write
		}
		t.Logf("receiver %d: loss %.2f%%, %d repair packets heard, %d blocks rebuilt, verify %s",
			i+1, r.Recv.LossPct, r.Recv.RepairPackets, r.Recv.Reconstructed, r.Recv.Verify)
	}
}
