package multicast

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

type rxOut struct {
	res *ReceiveResult
	err error
}

// startReceivers runs n receivers on lo in goroutines.
func startReceivers(ctx context.Context, t *testing.T, n int, grp string, port int, opt ReceiveOptions) ([]string, []chan rxOut) {
	dir := t.TempDir()
	var targets []string
	var outs []chan rxOut
	for i := range n {
		path := filepath.Join(dir, fmt.Sprintf("target%d", i))
		targets = append(targets, path)
		ch := make(chan rxOut, 1)
		outs = append(outs, ch)
		o := opt
		o.Group, o.Port, o.Interface = grp, port, "lo"
		o.Name = fmt.Sprintf("rx%d", i)
		go func() {
			res, err := Receive(ctx, path, o)
			ch <- rxOut{res, err}
		}()
	}
	return targets, outs
}

func TestLoopbackDeploy(t *testing.T) {
	loopbackOK(t)
	fx := newFixture(t, 24<<20+4096, 256<<10, 1)
	for _, tc := range []struct {
		name string
		rx   int
		fec  FEC
		key  []byte
		mtu  int
	}{
		{name: "three-plain", rx: 3},
		{name: "fec-key", rx: 2, fec: FEC{Parity: 4, Block: 32}, key: []byte("s3cret")},
		{name: "jumbo-k1", rx: 1, fec: FEC{Parity: 1, Block: 1}, mtu: 9000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			grp, port := loopEndpoint()
			targets, outs := startReceivers(ctx, t, tc.rx, grp, port, ReceiveOptions{Key: tc.key, Wait: 20 * time.Second})
			res, err := Send(ctx, fx.img, SendOptions{Group: grp, Port: port, Interface: "lo", MinReceivers: tc.rx,
				MaxWait: 20 * time.Second, FEC: tc.fec, Key: tc.key, MTU: tc.mtu, MaxRate: 200 << 20})
			if err != nil {
				t.Fatalf("send: %v (%+v)", err, res)
			}
			for i, ch := range outs {
				o := await(t, "receiver", ch)
				if o.err != nil {
					t.Fatalf("receiver %d: %v", i, o.err)
				}
				if !o.res.OK || !o.res.Acknowledged {
					t.Fatalf("receiver %d: %+v", i, o.res)
				}
				sameFile(t, fx.disk, targets[i])
			}
			sameAsImage(t, fx.img, targets[0])
			if len(res.Receivers) != tc.rx {
				t.Fatalf("sender saw %d receivers", len(res.Receivers))
			}
			for _, r := range res.Receivers {
				if !r.OK || r.Result != "ok" {
					t.Fatalf("sender report: %+v", r)
				}
			}
			t.Logf("%s: %d packets (%d parity, %d repair) in %s", tc.name, res.Packets, res.ParityPackets, res.RepairPackets, res.Duration)
		})
	}
}

func TestLoopbackNoReceivers(t *testing.T) {
	loopbackOK(t)
	fx := newFixture(t, 1<<20, 64<<10, 2)
	grp, port := loopEndpoint()
	_, err := Send(context.Background(), fx.img, SendOptions{Group: grp, Port: port, Interface: "lo", MaxWait: 300 * time.Millisecond})
	if !errors.Is(err, ErrNoReceivers) {
		t.Fatalf("err = %v, want ErrNoReceivers", err)
	}
	_, err = Receive(context.Background(), filepath.Join(t.TempDir(), "t"), ReceiveOptions{Group: grp, Port: port, Interface: "lo", Wait: 300 * time.Millisecond})
	if !errors.Is(err, ErrNoSession) {
		t.Fatalf("err = %v, want ErrNoSession", err)
	}
}

// randomLoss drops data packets with probability p, independently per
// receiver (seeded).
func randomLoss(p float64, seed int64) func(*dataHdr) bool {
	var mu sync.Mutex
	rng := rand.New(rand.NewSource(seed))
	return func(*dataHdr) bool {
		mu.Lock()
		defer mu.Unlock()
		return rng.Float64() < p
	}
}

func TestLoopbackLoss(t *testing.T) {
	loopbackOK(t)
	fx := newFixture(t, 24<<20, 256<<10, 3)
	for _, tc := range []struct {
		name string
		fec  FEC
		loss float64
		// outage: receiver 0 loses every packet of objects [a, b) in the pass
		outage [2]uint32
		// congested: the loss is above the threshold, so the rate must drop
		congested bool
	}{
		{name: "2pct", loss: 0.02},
		{name: "2pct-fec", loss: 0.02, fec: FEC{Parity: 4, Block: 64}},
		{name: "outage", outage: [2]uint32{3, 9}},
		{name: "congested-25pct", loss: 0.25, fec: FEC{Parity: 8, Block: 32}, congested: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			grp, port := loopEndpoint()
			dir := t.TempDir()
			var outs []chan rxOut
			var targets []string
			for i := range 3 {
				path := filepath.Join(dir, fmt.Sprint(i))
				targets = append(targets, path)
				opt := ReceiveOptions{Group: grp, Port: port, Interface: "lo", Wait: 20 * time.Second}
				switch {
				case tc.loss > 0:
					opt.dropData = randomLoss(tc.loss, int64(i))
				case i == 0:
					a, b := tc.outage[0], tc.outage[1]
					opt.dropData = func(d *dataHdr) bool { return !d.repair && d.object >= a && d.object < b }
				}
				ch := make(chan rxOut, 1)
				outs = append(outs, ch)
				go func() {
					res, err := Receive(ctx, path, opt)
					ch <- rxOut{res, err}
				}()
			}
			res, err := Send(ctx, fx.img, SendOptions{Group: grp, Port: port, Interface: "lo", MinReceivers: 3,
				MaxWait: 20 * time.Second, FEC: tc.fec, MaxRate: 100 << 20})
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			for i, ch := range outs {
				o := await(t, "receiver", ch)
				if o.err != nil || !o.res.OK {
					t.Fatalf("receiver %d: %v %+v", i, o.err, o.res)
				}
				sameFile(t, fx.disk, targets[i])
				t.Logf("rx%d: loss %.1f%%, %d repair packets heard, %d symbols asked, %d blocks rebuilt",
					i, o.res.LossPct, o.res.RepairPackets, o.res.Requested, o.res.Reconstructed)
			}
			if res.RepairPackets == 0 {
				t.Fatalf("no repair packets were needed: the loss did not happen?")
			}
			// An outage looks like a burst of congestion to the receiver
			// that suffers it: whether the rate drops depends on where the
			// burst falls against the status ticks, so only random loss is
			// held to the threshold.
			if tc.congested != (res.RateDecreases > 0) && tc.outage == [2]uint32{} {
				t.Fatalf("%d rate decreases at %.0f%% loss", res.RateDecreases, tc.loss*100)
			}
			t.Logf("sender: %d packets, %d parity, %d repair, %d rate decreases", res.Packets, res.ParityPackets, res.RepairPackets, res.RateDecreases)
		})
	}
}

// TestLoopbackLateJoiner starts a third receiver while the pass is under
// way; it gets the beginning in the repair round, or from the repair URL.
func TestLoopbackLateJoiner(t *testing.T) {
	loopbackOK(t)
	fx := newFixture(t, 24<<20, 256<<10, 4)
	other := newFixture(t, 4<<20, 256<<10, 44)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/other.dimg" {
			http.ServeFile(w, r, other.img)
			return
		}
		http.ServeFile(w, r, fx.img)
	}))
	defer srv.Close()
	for _, tc := range []struct {
		name      string
		url       string
		wantFetch bool
	}{
		{name: "repair-round"},
		{name: "repair-url", url: srv.URL + "/disk.dimg", wantFetch: true},
		// A URL of another image is refused; multicast repairs take over.
		{name: "repair-url-wrong-image", url: srv.URL + "/other.dimg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			grp, port := loopEndpoint()
			targets, outs := startReceivers(ctx, t, 2, grp, port, ReceiveOptions{Wait: 20 * time.Second})
			late := filepath.Join(t.TempDir(), "late")
			lateOut := make(chan rxOut, 1)
			var once sync.Once
			prog := &watch{on: func(phase string, done, total int64) {
				// Join once a third of the pass is out.
				if phase == "sending" && done > total/3 {
					once.Do(func() {
						go func() {
							res, err := Receive(ctx, late, ReceiveOptions{Group: grp, Port: port, Interface: "lo",
								Wait: 20 * time.Second, RepairURL: tc.url, Name: "late"})
							lateOut <- rxOut{res, err}
						}()
					})
				}
			}}
			res, err := Send(ctx, fx.img, SendOptions{Group: grp, Port: port, Interface: "lo", MinReceivers: 2,
				MaxWait: 20 * time.Second, MaxRate: 4 << 20, Progress: prog})
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			for i, ch := range outs {
				if o := await(t, "receiver", ch); o.err != nil {
					t.Fatalf("receiver %d: %v", i, o.err)
				}
				sameFile(t, fx.disk, targets[i])
			}
			o := await(t, "late receiver", lateOut)
			if o.err != nil {
				t.Fatalf("late receiver: %v", o.err)
			}
			sameFile(t, fx.disk, late)
			lateSeen := false
			for _, r := range res.Receivers {
				lateSeen = lateSeen || r.Late && r.OK
			}
			if !lateSeen || len(res.Receivers) != 3 {
				t.Fatalf("sender did not report the late receiver: %+v", res.Receivers)
			}
			if tc.wantFetch != (o.res.Fetched > 0) {
				t.Fatalf("late receiver fetched %d objects from the repair URL", o.res.Fetched)
			}
			t.Logf("late receiver: fetched %d objects over HTTP, %d repair packets; sender %d packets, %d repair packets, pass %s, total %s, %d bytes stored",
				o.res.Fetched, o.res.RepairPackets, res.Packets, res.RepairPackets, res.PassDuration, res.Duration, res.StoredBytes)
		})
	}
}

// watch is a progress.Reporter for tests: on sees the phase and the
// counts after every Start and Add.
type watch struct {
	mu          sync.Mutex
	phase       string
	done, total int64
	on          func(phase string, done, total int64)
}

func (w *watch) Start(phase string, total int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.phase, w.done, w.total = phase, 0, total
	w.on(w.phase, w.done, w.total)
}

func (w *watch) Add(n int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done += n
	w.on(w.phase, w.done, w.total)
}

// TestLoopbackKilledReceiver stops one receiver mid-way: the others
// finish, the sender reports it lost and returns ErrPartial.
func TestLoopbackKilledReceiver(t *testing.T) {
	loopbackOK(t)
	fx := newFixture(t, 24<<20, 256<<10, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	grp, port := loopEndpoint()
	targets, outs := startReceivers(ctx, t, 2, grp, port, ReceiveOptions{Wait: 20 * time.Second})
	kctx, kill := context.WithCancel(ctx)
	killed := make(chan rxOut, 1)
	go func() {
		res, err := Receive(kctx, filepath.Join(t.TempDir(), "victim"), ReceiveOptions{Group: grp, Port: port,
			Interface: "lo", Wait: 20 * time.Second, Name: "victim"})
		killed <- rxOut{res, err}
	}()
	var once sync.Once
	prog := &watch{on: func(phase string, done, total int64) {
		if phase == "sending" && done > total/4 {
			once.Do(kill)
		}
	}}
	res, err := Send(ctx, fx.img, SendOptions{Group: grp, Port: port, Interface: "lo", MinReceivers: 3,
		MaxWait: 20 * time.Second, MaxRate: 6 << 20, ReceiverTimeout: time.Second, Progress: prog})
	if !errors.Is(err, ErrPartial) {
		t.Fatalf("send: err = %v, want ErrPartial", err)
	}
	if o := await(t, "victim", killed); !errors.Is(o.err, context.Canceled) {
		t.Fatalf("victim: %v", o.err)
	}
	for i, ch := range outs {
		if o := await(t, "receiver", ch); o.err != nil {
			t.Fatalf("receiver %d: %v", i, o.err)
		}
		sameFile(t, fx.disk, targets[i])
	}
	var ok, lost int
	for _, r := range res.Receivers {
		switch {
		case r.OK:
			ok++
		case r.Result == "lost" && r.Name == "victim":
			lost++
		default:
			t.Errorf("unexpected report %+v", r)
		}
	}
	if ok != 2 || lost != 1 {
		t.Fatalf("reports: %+v", res.Receivers)
	}
}
