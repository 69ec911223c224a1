package multicast

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"time"

	"github.com/dimg-project/dimg/cloneio"
	"github.com/dimg-project/dimg/internal/progress"
)

// ReceiveOptions configure Receive. The zero value of every field is a
// default.
type ReceiveOptions struct {
	Group     string // multicast group (DefaultGroup)
	Port      int    // UDP port (DefaultPort)
	Interface string // interface name or address to join on; "" = routing table
	Key       []byte // HMAC key; must match the sender's

	// RepairURL is an http(s) URL of the same image file. Objects the
	// receiver missed entirely (it joined late, or fell behind) are then
	// fetched from it with Range requests instead of waiting for a repair
	// round, and whatever is missing when the sender goes away too.
	RepairURL  string
	HTTPClient *http.Client

	// Wait bounds the wait for a session; 0 waits until ctx ends.
	Wait time.Duration
	// SenderTimeout: a sender silent this long is gone (10 s).
	SenderTimeout time.Duration
	// MemoryBudget bounds memory held by incomplete objects (256 MiB).
	MemoryBudget int64
	// Session, when not 0, accepts only that session id.
	Session uint64
	// Name is reported to the sender (default: the host name).
	Name string

	// Target configures the default target (Force to overwrite an
	// existing file, Discard to discard unused ranges of a device, Layout
	// for the partition table on a larger target).
	Target cloneio.TargetOptions
	// OpenTarget opens the target, the one restore target of cloneio;
	// nil means cloneio.OpenTarget with Target. A caller sets it to
	// register the target's cleanup (Abort on an interrupt).
	OpenTarget func(path string, diskSize int64, sectorSize int) (*cloneio.Target, error)

	// Progress is told of the "receiving" phase (object bytes written,
	// with the loss as a note) and the "verifying" one (disk bytes).
	Progress progress.Reporter
	Logger   *slog.Logger

	// dropData, when set (tests), drops data packets it returns true for,
	// as if the network lost them.
	dropData func(d *dataHdr) bool
}

// ReceiveResult is what Receive reports.
type ReceiveResult struct {
	Target   string `json:"target"`
	Session  string `json:"session"`
	Sender   string `json:"sender"`
	ImageID  string `json:"image_uuid"`
	Digest   string `json:"digest"`
	DiskSize int64  `json:"disk_size"`
	Objects  int    `json:"objects"`
	// Result: "ok", "mismatch", "incomplete" or "error".
	Result  string `json:"result"`
	OK      bool   `json:"ok"`
	Message string `json:"message,omitempty"`

	BytesWritten  int64   `json:"bytes_written"` // logical bytes of stored chunks
	Packets       int64   `json:"packets"`
	RepairPackets int64   `json:"repair_packets"`
	Duplicates    int64   `json:"duplicates"`
	Requested     int64   `json:"requested"`     // symbols asked for in NACKs
	Reconstructed int64   `json:"reconstructed"` // blocks rebuilt from parity
	Corrupt       int64   `json:"corrupt"`       // assembled objects that failed their checksums
	Evicted       int64   `json:"evicted"`       // partial objects dropped for memory
	Fetched       int64   `json:"fetched"`       // objects fetched from the repair URL
	LossPct       float64 `json:"loss_pct"`      // data packets lost, whole session
	// Missing lists chunks that failed verification (result "mismatch")
	// or, for "incomplete", the objects that never arrived (numbered in
	// image order); MissingCount may exceed what is listed.
	Missing      []ChunkRange  `json:"missing,omitempty"`
	MissingCount int64         `json:"missing_count,omitempty"`
	Dropped      Drops         `json:"dropped"`
	Duration     time.Duration `json:"duration_ns"`
	Verify       time.Duration `json:"verify_ns"`
	Acknowledged bool          `json:"acknowledged"` // the sender confirmed it got the result
	// Layout says how the partition table was fitted to the target (the
	// GPT backup moved to the end of a larger one); nil unless committed.
	Layout *cloneio.LayoutResult `json:"layout,omitempty"`
}

// Errors of Receive.
var (
	ErrNoSession  = errors.New("multicast: no session found")
	ErrIncomplete = errors.New("multicast: some chunks never arrived")
	ErrMismatch   = errors.New("multicast: target does not match the image")
	ErrSenderLost = errors.New("multicast: sender went away")
)

const (
	defaultSenderTimeout = 10 * time.Second
	defaultBudget        = 256 << 20
	nackPages            = 4 // STATUS datagrams per interval at most
)

// receiver runs one Receive. Its parts each own their state: the link to
// the session (session.go), the objects being assembled (assembler), the
// loss measured (lossMeter), the writers (writeQueue) and the repair URL
// (fetcher); the receiver ties them together in its main loop.
type receiver struct {
	opt    ReceiveOptions
	log    *slog.Logger
	prog   progress.Reporter
	path   string
	link   *link
	pass   passState
	ann    *announce
	g      geometry
	cs     codecs
	asm    *assembler
	loss   lossMeter
	wq     *writeQueue
	fetch  *fetcher
	target *cloneio.Target
	w      *cloneio.ChunkWriter

	res       ReceiveResult
	statusSeq uint32
	pkt       []byte // the datagram read
}

// Receive joins a session on the rendezvous, writes the image it carries
// to the target at path, verifies the target by reading it back and
// recomputing the image digest, reports the result to the sender and
// returns it. The error is nil only when the target verified; otherwise
// it wraps ErrMismatch, ErrIncomplete, ErrNoSession or the target's error,
// and the result (when a session was joined) is still returned.
func Receive(ctx context.Context, path string, opt ReceiveOptions) (*ReceiveResult, error) {
	if opt.SenderTimeout <= 0 {
		opt.SenderTimeout = defaultSenderTimeout
	}
	if opt.MemoryBudget <= 0 {
		opt.MemoryBudget = defaultBudget
	}
	if opt.Name == "" {
		opt.Name, _ = os.Hostname()
	}
	if opt.OpenTarget == nil {
		topt := opt.Target
		opt.OpenTarget = func(p string, size int64, sectorSize int) (*cloneio.Target, error) {
			return cloneio.OpenTarget(p, size, sectorSize, topt)
		}
	}
	ep, err := resolveEndpoint(opt.Group, opt.Port, opt.Interface)
	if err != nil {
		return nil, err
	}
	r := &receiver{opt: opt, log: opt.Logger, prog: opt.Progress, path: path, pkt: make([]byte, maxDatagram),
		fetch: &fetcher{url: opt.RepairURL, client: opt.HTTPClient}}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.prog = progress.Or(r.prog)
	l := &link{ep: ep, key: opt.Key, sig: newSigner(opt.Key), events: make(chan replyEvent, 16), out: make([]byte, maxDatagram)}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	l.id = binary.BigEndian.Uint64(b[:])
	if l.data, err = openGroupSocket(ctx, ep); err != nil {
		return nil, err
	}
	defer l.data.Close()
	if l.reply, err = openReplySocket(); err != nil {
		return nil, err
	}
	defer l.reply.Close()
	r.link = l
	return r.run(ctx)
}

func (r *receiver) run(ctx context.Context) (*ReceiveResult, error) {
	start := time.Now()
	a, err := r.link.find(ctx, r.opt.Wait, r.opt.Session, r.pkt)
	if err != nil {
		return nil, err
	}
	r.ann = a
	r.g = geometry{sym: a.symSize, k: a.k, p: a.p, objects: a.objects, frames: a.frames, chunkSize: a.chunkSize, numChunks: a.numChunks()}
	r.asm = newAssembler(&r.g, &r.cs, r.opt.MemoryBudget)
	r.pass.lastHeard = time.Now()
	r.pass.announce(a)
	r.res = ReceiveResult{Target: r.path, Session: fmt.Sprintf("%016x", r.link.session), Sender: r.link.sender.String(),
		ImageID: formatUUID(a.uuid), Digest: hex.EncodeToString(a.digest[:]), DiskSize: a.diskSize, Objects: int(a.objects)}
	r.log.Info("joined session", "session", r.res.Session, "sender", r.link.sender, "objects", a.objects)
	r.prog.Start("receiving", int64(a.bytes))
	t, err := r.opt.OpenTarget(r.path, a.diskSize, a.sectorSize)
	if err != nil {
		return nil, err
	}
	r.target = t
	defer t.Abort() // a no-op once committed
	// Every chunk goes through the restore target's writer; while the
	// network is the bottleneck, written chunks are read back already.
	r.w = cloneio.NewChunkWriter(t, a.chunkSize, nil)
	r.w.SetImageVersion(uint32(a.imageVersion))
	stopVerify := r.w.VerifyAhead(ctx)
	defer stopVerify()
	go r.link.readReplies()

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.wq = newWriteQueue(wctx, r.w, a, max(1, min(runtime.GOMAXPROCS(0), 4)), r.asm.release)
	if r.fetch.url != "" {
		r.fetch.q = make(chan uint32, maxFetchOutstanding)
		defer close(r.fetch.q)
		go r.fetchObjects(wctx)
	}

	err = r.receive(ctx)
	if err == nil && !r.asm.complete() && r.fetch.usable() {
		err = r.fetchRest(ctx)
	}
	r.link.data.Close() // leave the group: nothing more to hear
	if err == nil {
		err = r.drainWrites(ctx)
	}
	if err != nil && ctx.Err() != nil {
		return nil, err
	}
	stopVerify()
	d := r.finish(ctx, err)
	if d.result == resultOK {
		// Only a verified target becomes final: its partition table is
		// fitted to it (the GPT backup at the end of a larger disk) and a
		// file is renamed into place. Anything else is discarded, as
		// restore does.
		lres, err := t.Commit(ctx)
		if err != nil {
			d = &done{id: r.link.id, result: resultError, written: d.written, digest: d.digest,
				message: "commit target: " + err.Error()}
			r.res.OK, r.res.Result, r.res.Message = false, "error", d.message
		}
		r.res.Layout = lres
	}
	r.res.Duration = time.Since(start)
	r.res.Packets = r.loss.packets
	r.res.Duplicates = r.asm.duplicates
	r.res.Reconstructed = r.asm.reconstructs
	r.res.Evicted = r.asm.evicted
	r.res.Dropped = r.link.drops.snapshot()
	r.res.LossPct = r.loss.totalPct()
	r.res.Acknowledged = r.link.report(ctx, d, r.pass.ended != 0, a.symSize+dataHdrLen)
	switch {
	case r.res.OK:
		return &r.res, nil
	case d.result == resultMismatch:
		return &r.res, fmt.Errorf("%w: %d chunks differ", ErrMismatch, d.failed)
	case d.result == resultIncomplete:
		if r.pass.ended == 0 && time.Since(r.pass.lastHeard) > r.opt.SenderTimeout {
			return &r.res, fmt.Errorf("%w: %w: %d of %d objects missing", ErrIncomplete, ErrSenderLost, d.failed, a.objects)
		}
		return &r.res, fmt.Errorf("%w: %d of %d objects missing", ErrIncomplete, d.failed, a.objects)
	}
	return &r.res, fmt.Errorf("multicast: receive: %s", d.message)
}

// receive runs until every object is written, the sender ends, or it
// falls silent.
func (r *receiver) receive(ctx context.Context) error {
	r.link.hello(r.opt.Name)
	next := time.Now().Add(statusInterval)
	r.link.data.SetReadDeadline(next)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, _, err := r.link.data.ReadFromUDPAddrPort(r.pkt)
		if err != nil && !isTimeout(err) {
			return fmt.Errorf("multicast: receive: %w", err)
		}
		if err == nil {
			if err := r.packet(ctx, r.pkt[:n]); err != nil {
				return err
			}
		}
		if now := time.Now(); !now.Before(next) {
			next = now.Add(statusInterval)
			r.link.data.SetReadDeadline(next)
			if stop, err := r.tick(now); stop || err != nil {
				return err
			}
		}
	}
}

// tick runs every status interval: it takes the writers' results and the
// sender's answers, and tells the sender what this receiver lacks.
func (r *receiver) tick(now time.Time) (stop bool, err error) {
	for drained := false; !drained; {
		select {
		case res := <-r.wq.results:
			if err := r.written(res); err != nil {
				return true, err
			}
		case ev := <-r.link.events:
			if ev.typ == pktWelcome {
				r.pass.welcomed = true
			}
		default:
			drained = true
		}
	}
	if r.asm.complete() {
		return true, nil
	}
	if !r.pass.welcomed {
		r.link.hello(r.opt.Name)
	}
	r.loss.measure(now)
	if r.pass.ended != 0 || now.Sub(r.pass.lastHeard) > r.opt.SenderTimeout {
		return true, nil // finish with what we have (or fetch the rest)
	}
	all := r.pass.done
	// With a working repair URL, objects never seen are fetched over HTTP
	// rather than asked for; blocks of partial objects are still NACKed
	// (one parity packet is cheaper than a fetch).
	useHTTP := r.fetch.usable()
	if useHTTP {
		r.dispatchFetches(r.pass.prevEdge, all)
	}
	r.sendStatus(rxReceiving, r.asm.nacks(r.pass.prevEdge, all, !useHTTP, nackPages*r.nacksPerPage()))
	r.pass.prevEdge = r.pass.edge
	progress.Note(r.prog, fmt.Sprintf("loss %.1f%%, %d symbols asked again", float64(r.loss.ppm)/1e4, r.res.Requested))
	return false, nil
}

func formatUUID(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
