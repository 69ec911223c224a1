package multicast

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/dimg-project/dimg/cloneio"
	"github.com/dimg-project/dimg/imagefmt"
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

	Progress Progress
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
	nackPages            = 4  // STATUS datagrams per interval at most
	maxFetchOutstanding  = 32 // objects handed to the HTTP fetcher at once
)

type writeJob struct {
	obj   uint32
	chunk uint32
	raw   []byte
	p     *partial // nil for frames fetched over HTTP
	fetch bool
}

type writeResult struct {
	obj     uint32
	logical int
	size    int // object bytes
	err     error
	fatal   bool // the target failed: stop
	fetch   bool
	httpErr bool // the repair URL is unusable
}

type replyEvent struct {
	typ uint8
	id  uint64
}

type receiver struct {
	opt    ReceiveOptions
	log    *slog.Logger
	prog   Progress
	ep     endpoint
	data   *net.UDPConn
	reply  *net.UDPConn
	sig    *signer
	id     uint64
	target *cloneio.Target
	w      *cloneio.ChunkWriter
	path   string

	session uint64
	tag     [8]byte
	ann     *announce
	g       geometry
	sender  netip.AddrPort
	cs      codecs
	asm     *assembler

	edge, prevEdge position
	passDone       bool
	senderEnded    uint8
	lastHeard      time.Time
	welcomed       bool
	events         chan replyEvent

	highSeq, tickSeq int64
	haveSeq          bool
	tickPkts         int64
	tickAt           time.Time
	lossPPM          uint32
	firstSeq         int64
	dataPkts         int64

	writeq   chan writeJob
	results  chan writeResult
	inflight int
	fetchq   chan uint32
	fetching int
	httpOff  bool

	res       ReceiveResult
	statusSeq uint32
	drops     dropCounters
	done      int64  // object bytes written (progress)
	pkt       []byte // datagrams read
	out       []byte // datagrams built
	fatal     error
	wctx      context.Context

	rateBytes int64
	rateAt    time.Time
	rateNow   float64
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
	r := &receiver{opt: opt, log: opt.Logger, prog: opt.Progress, ep: ep, sig: newSigner(opt.Key), path: path,
		events: make(chan replyEvent, 16), pkt: make([]byte, maxDatagram), out: make([]byte, maxDatagram)}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.prog == nil {
		r.prog = noProgress{}
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	r.id = binary.BigEndian.Uint64(b[:])
	if r.data, err = openGroupSocket(ctx, ep); err != nil {
		return nil, err
	}
	defer r.data.Close()
	if r.reply, err = openReplySocket(); err != nil {
		return nil, err
	}
	defer r.reply.Close()
	return r.run(ctx)
}

func (r *receiver) run(ctx context.Context) (*ReceiveResult, error) {
	start := time.Now()
	if err := r.findSession(ctx); err != nil {
		return nil, err
	}
	r.res = ReceiveResult{Target: r.path, Session: fmt.Sprintf("%016x", r.session), Sender: r.sender.String(),
		ImageID: formatUUID(r.ann.uuid), Digest: hex.EncodeToString(r.ann.digest[:]), DiskSize: r.ann.diskSize,
		Objects: int(r.ann.objects)}
	r.log.Info("joined session", "session", r.res.Session, "sender", r.sender, "objects", r.ann.objects)
	t, err := r.opt.OpenTarget(r.path, r.ann.diskSize, r.ann.sectorSize)
	if err != nil {
		return nil, err
	}
	r.target = t
	defer t.Abort() // a no-op once committed
	// Every chunk goes through the restore target's writer; while the
	// network is the bottleneck, written chunks are read back already.
	r.w = cloneio.NewChunkWriter(t, r.ann.chunkSize, nil)
	stopVerify := r.w.VerifyAhead(ctx)
	defer stopVerify()
	go r.readReplies()

	workers := max(1, min(runtime.GOMAXPROCS(0), 4))
	r.writeq = make(chan writeJob, 2*workers)
	r.results = make(chan writeResult, 256)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.wctx = wctx
	defer func() {
		if r.fetchq != nil {
			close(r.fetchq)
		}
	}()
	for range workers {
		go r.writer(wctx)
	}

	err = r.receive(ctx)
	if err == nil && !r.asm.complete() && r.opt.RepairURL != "" && !r.httpOff {
		err = r.fetchRest(ctx)
	}
	r.data.Close() // leave the group: nothing more to hear
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
			d = &done{id: r.id, result: resultError, written: d.written, digest: d.digest,
				message: "commit target: " + err.Error()}
			r.res.OK, r.res.Result, r.res.Message = false, "error", d.message
		}
		r.res.Layout = lres
	}
	r.res.Duration = time.Since(start)
	r.res.Packets = r.dataPkts
	r.res.Duplicates = r.asm.duplicates
	r.res.Reconstructed = r.asm.reconstructs
	r.res.Evicted = r.asm.evicted
	r.res.Dropped = r.drops.snapshot()
	if span := r.highSeq - r.firstSeq + 1; r.haveSeq && span > 0 {
		r.res.LossPct = max(0, float64(span-r.dataPkts)) * 100 / float64(span)
	}
	r.res.Acknowledged = r.report(ctx, d)
	r.prog.Update(Stats{Phase: "done", Done: r.ann.diskSize, Total: r.ann.diskSize})
	switch {
	case r.res.OK:
		return &r.res, nil
	case d.result == resultMismatch:
		return &r.res, fmt.Errorf("%w: %d chunks differ", ErrMismatch, d.failed)
	case d.result == resultIncomplete:
		if r.senderEnded == 0 && time.Since(r.lastHeard) > r.opt.SenderTimeout {
			return &r.res, fmt.Errorf("%w: %w: %d of %d objects missing", ErrIncomplete, ErrSenderLost, d.failed, r.ann.objects)
		}
		return &r.res, fmt.Errorf("%w: %d of %d objects missing", ErrIncomplete, d.failed, r.ann.objects)
	}
	return &r.res, fmt.Errorf("multicast: receive: %s", d.message)
}

// findSession waits for an announcement to lock onto.
func (r *receiver) findSession(ctx context.Context) error {
	var deadline time.Time
	if r.opt.Wait > 0 {
		deadline = time.Now().Add(r.opt.Wait)
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			d := r.drops.snapshot()
			hint := ""
			switch {
			case d.BadAuth > 0:
				hint = fmt.Sprintf(" (%d packets failed authentication: wrong or missing --key?)", d.BadAuth)
			case d.Malformed > 0:
				hint = fmt.Sprintf(" (%d malformed packets)", d.Malformed)
			}
			return fmt.Errorf("%w on %s within %s%s", ErrNoSession, r.ep.group, r.opt.Wait, hint)
		}
		r.data.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, from, err := r.data.ReadFromUDPAddrPort(r.pkt)
		if err != nil {
			if isTimeout(err) {
				continue
			}
			return fmt.Errorf("multicast: receive: %w", err)
		}
		h, body, err := r.sig.open(r.pkt[:n])
		if err != nil {
			r.drops.count(err)
			continue
		}
		if h.typ != pktAnnounce {
			continue // a session already running: wait for its next announcement
		}
		a, err := parseAnnounce(h, body)
		if err != nil {
			r.drops.count(err)
			continue
		}
		if r.opt.Session != 0 && h.session != r.opt.Session || a.state >= stateFinished {
			r.drops.foreign.Add(1)
			continue
		}
		r.session, r.tag, r.ann, r.sender = h.session, h.digestTag, a, from
		r.g = geometry{sym: a.symSize, k: a.k, p: a.p, objects: a.objects, frames: a.frames, chunkSize: a.chunkSize, numChunks: a.numChunks()}
		r.asm = newAssembler(&r.g, &r.cs, r.opt.MemoryBudget)
		r.lastHeard = time.Now()
		r.applyAnnounce(a)
		return nil
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (r *receiver) applyAnnounce(a *announce) {
	if a.state >= stateRepairing {
		r.passDone = true
	}
	if a.state >= stateFinished {
		r.senderEnded = a.state
	}
	if p := (position{a.cursor, 0}); r.edge.less(p) {
		r.edge = p
	}
}

// readReplies receives the sender's unicast answers.
func (r *receiver) readReplies() {
	sig := newSigner(r.opt.Key)
	buf := make([]byte, 2048)
	for {
		n, _, err := r.reply.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		h, body, err := sig.open(buf[:n])
		if err == nil && (h.session != r.session || h.digestTag != r.tag) {
			err = errForeign
		}
		if err != nil {
			r.drops.count(err)
			continue
		}
		id, err := parseID(body)
		if err != nil || id != r.id || (h.typ != pktWelcome && h.typ != pktDoneAck) {
			r.drops.malformed.Add(1)
			continue
		}
		select {
		case r.events <- replyEvent{h.typ, id}:
		default:
		}
	}
}

func (r *receiver) sendReply(b []byte) {
	b = r.sig.seal(b)
	_, _ = r.reply.WriteToUDPAddrPort(b, r.sender) // lost replies are repeated
}

// receive runs until every object is written, the sender ends, or it
// falls silent.
func (r *receiver) receive(ctx context.Context) error {
	r.hello()
	next := time.Now().Add(statusInterval)
	r.data.SetReadDeadline(next)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, _, err := r.data.ReadFromUDPAddrPort(r.pkt)
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
			r.data.SetReadDeadline(next)
			if stop, err := r.tick(ctx, now); stop || err != nil {
				return err
			}
		}
		if r.fatal != nil {
			return r.fatal
		}
	}
}

func (r *receiver) hello() {
	m := hello{id: r.id, name: r.opt.Name}
	r.sendReply(m.marshal(r.out, r.session, r.tag))
}

// packet handles one datagram from the group.
func (r *receiver) packet(ctx context.Context, p []byte) error {
	h, body, err := r.sig.open(p)
	if err == nil && (h.session != r.session || h.digestTag != r.tag) {
		err = errForeign
	}
	if err != nil {
		r.drops.count(err)
		return nil
	}
	switch h.typ {
	case pktAnnounce:
		a, err := parseAnnounce(h, body)
		if err != nil {
			r.drops.count(err)
			return nil
		}
		if a.digest != r.ann.digest || a.objects != r.ann.objects || a.diskSize != r.ann.diskSize ||
			a.chunkSize != r.ann.chunkSize || a.symSize != r.ann.symSize || a.k != r.ann.k {
			r.drops.foreign.Add(1)
			return nil
		}
		r.lastHeard = time.Now()
		r.applyAnnounce(a)
	case pktData:
		d, payload, err := parseData(body, &r.g)
		if err != nil {
			r.drops.count(err)
			return nil
		}
		if r.opt.dropData != nil && r.opt.dropData(&d) {
			return nil
		}
		r.lastHeard = time.Now()
		r.countSeq(d.seq)
		r.rateBytes += int64(len(p))
		if d.repair {
			r.res.RepairPackets++
		} else if p := (position{d.object, d.block}); r.edge.less(p) {
			r.edge = p
		}
		o, err := r.asm.add(&d, payload)
		if err != nil {
			r.drops.count(err)
			return nil
		}
		if o != nil {
			return r.submit(ctx, writeJob{obj: o.obj, chunk: o.chunk, raw: o.buf[:o.length], p: o})
		}
	default:
		r.drops.malformed.Add(1)
	}
	return nil
}

// countSeq tracks the data packet sequence for loss estimates.
func (r *receiver) countSeq(seq uint32) {
	r.dataPkts++
	r.tickPkts++
	if !r.haveSeq {
		r.haveSeq = true
		r.highSeq = int64(seq)
		r.firstSeq, r.tickSeq = r.highSeq, r.highSeq-1
		return
	}
	if d := int32(seq - uint32(r.highSeq)); d > 0 {
		r.highSeq += int64(d)
	}
}

// submit hands a complete object to the writers, handling their results
// while it waits (so neither side can block the other for good).
func (r *receiver) submit(ctx context.Context, j writeJob) error {
	for {
		select {
		case r.writeq <- j:
			r.inflight++
			return nil
		case res := <-r.results:
			r.result(res)
			if r.fatal != nil {
				return r.fatal
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (r *receiver) result(res writeResult) {
	r.inflight--
	if res.fetch {
		r.fetching--
	}
	switch {
	case res.fatal:
		r.fatal = res.err
	case res.err != nil:
		if res.httpErr && !r.httpOff {
			r.httpOff = true
			r.log.Warn("repair URL unusable, asking the sender instead", "err", res.err)
		} else if !res.httpErr {
			r.res.Corrupt++
			r.log.Warn("object failed verification, asking again", "object", res.obj, "err", res.err)
		}
		r.asm.setState(res.obj, objMissing)
	default:
		r.asm.setState(res.obj, objWritten)
		r.res.BytesWritten += int64(res.logical)
		r.done += int64(res.size)
		if res.fetch {
			r.res.Fetched++
		}
	}
}

// writer verifies and writes complete objects.
func (r *receiver) writer(ctx context.Context) {
	out := make([]byte, r.ann.chunkSize)
	for {
		var j writeJob
		select {
		case j = <-r.writeq:
		case <-ctx.Done():
			return
		}
		res := r.write(j, out)
		if j.p != nil {
			r.asm.release(j.p)
		}
		select {
		case r.results <- res:
		case <-ctx.Done():
			return
		}
	}
}

// write checks one complete object and writes it through the chunk
// writer: a frame's chunk, or a zero-run table's runs. A damaged object is
// asked for again; a target that cannot be written (or a chunk written
// twice) ends the session.
func (r *receiver) write(j writeJob, out []byte) writeResult {
	res := writeResult{obj: j.obj, fetch: j.fetch, size: len(j.raw)}
	if j.obj >= r.g.frames {
		runs, err := parseZeroRunTable(j.raw, r.ann.numChunks())
		if err != nil {
			res.err = fmt.Errorf("object %d: %w", j.obj, err)
			return res
		}
		for _, z := range runs {
			if err := r.w.ZeroRun(z); err != nil {
				res.err, res.fatal = fmt.Errorf("multicast: %w", err), true
				return res
			}
		}
		return res
	}
	f, err := imagefmt.ParseFrame(j.raw, r.ann.chunkSize)
	if err == nil && (f.Chunk != int64(j.chunk) || len(f.Raw) != len(j.raw) || f.LogicalLen != r.ann.chunkLen(f.Chunk)) {
		err = fmt.Errorf("%w: frame is for chunk %d (%d bytes), packets said chunk %d", imagefmt.ErrCorrupt, f.Chunk, f.LogicalLen, j.chunk)
	}
	var data []byte
	if err == nil {
		data, err = f.Decode(out)
	}
	if err != nil {
		res.err = fmt.Errorf("object %d: %w", j.obj, err)
		return res
	}
	if err := r.w.WriteChunk(f.Chunk, data, f.Sum); err != nil {
		res.err, res.fatal = fmt.Errorf("multicast: %w", err), true
		return res
	}
	res.logical = len(data)
	return res
}

// tick runs every status interval.
func (r *receiver) tick(ctx context.Context, now time.Time) (stop bool, err error) {
	for drained := false; !drained; {
		select {
		case res := <-r.results:
			r.result(res)
		case ev := <-r.events:
			if ev.typ == pktWelcome {
				r.welcomed = true
			}
		default:
			drained = true
		}
	}
	if r.fatal != nil {
		return true, r.fatal
	}
	if r.asm.complete() {
		return true, nil
	}
	if !r.welcomed {
		r.hello()
	}
	r.measureLoss(now)
	if r.senderEnded != 0 || now.Sub(r.lastHeard) > r.opt.SenderTimeout {
		return true, nil // finish with what we have (or fetch the rest)
	}
	all := r.passDone
	// With a working repair URL, objects never seen are fetched over HTTP
	// rather than asked for; blocks of partial objects are still NACKed
	// (one parity packet is cheaper than a fetch).
	useHTTP := r.opt.RepairURL != "" && !r.httpOff
	if useHTTP {
		r.dispatchFetches(r.prevEdge, all)
	}
	r.sendStatus(rxReceiving, r.asm.nacks(r.prevEdge, all, !useHTTP, nackPages*r.perPage()))
	r.prevEdge = r.edge
	r.prog.Update(Stats{Phase: "receiving", Done: r.done, Total: int64(r.ann.bytes),
		Rate: r.rate(now), Repairs: r.res.Requested, LossPct: float64(r.lossPPM) / 1e4})
	return false, nil
}

// rate is the data rate received since the last call.
func (r *receiver) rate(now time.Time) float64 {
	if dt := now.Sub(r.rateAt).Seconds(); !r.rateAt.IsZero() && dt > 0 {
		r.rateNow = float64(r.rateBytes) / dt
	}
	r.rateAt, r.rateBytes = now, 0
	return r.rateNow
}

// measureLoss estimates recent loss from the data sequence numbers, over
// samples of at least lossSample packets so that random loss well below
// the sender's congestion threshold does not read as congestion by chance
// (3% loss measured on 500 packets has a standard deviation of 0.8%).
func (r *receiver) measureLoss(now time.Time) {
	const lossSample = 500
	expected := r.highSeq - r.tickSeq
	if expected >= lossSample || expected >= 64 && now.Sub(r.tickAt) > time.Second {
		lost := max(0, expected-r.tickPkts)
		r.lossPPM = uint32(min(lost*1e6/expected, 1e6))
		r.tickSeq, r.tickPkts, r.tickAt = r.highSeq, 0, now
	} else if now.Sub(r.tickAt) > 2*time.Second {
		r.lossPPM = 0
		r.tickSeq, r.tickPkts, r.tickAt = r.highSeq, 0, now
	}
}

func (r *receiver) perPage() int {
	return maxNacks(r.ann.symSize + dataHdrLen + tagLen)
}

// sendStatus sends STATUS datagrams carrying nks (at least one datagram,
// as a heartbeat).
func (r *receiver) sendStatus(state uint8, nks []nack) {
	per := r.perPage()
	for first := true; first || len(nks) > 0; first = false {
		page := nks[:min(len(nks), per)]
		nks = nks[len(page):]
		r.statusSeq++
		low := uint32(r.asm.low)
		st := status{id: r.id, state: state, complete: uint32(r.asm.written), low: low, lossPPM: r.lossPPM,
			highSeq: uint32(r.highSeq), written: uint64(r.res.BytesWritten), seq: r.statusSeq, nacks: page}
		for _, nk := range page {
			if nk.kind == nackBlock {
				r.res.Requested += int64(nk.need)
			}
		}
		r.sendReply(st.marshal(r.out, r.session, r.tag))
	}
}

// dispatchFetches hands objects never seen (before the edge, or all of
// them after the pass) to the HTTP fetcher instead of NACKing them.
func (r *receiver) dispatchFetches(edge position, all bool) {
	if r.fetchq == nil {
		r.fetchq = make(chan uint32, maxFetchOutstanding)
		go r.fetcher(r.wctx)
	}
	end := int64(edge.object)
	if all {
		end = int64(r.ann.objects)
	}
	for o := r.asm.have.NextClear(r.asm.low, end); o < end && r.fetching < maxFetchOutstanding; o = r.asm.have.NextClear(o+1, end) {
		r.asm.setState(uint32(o), objFetching)
		r.fetching++
		r.inflight++
		r.fetchq <- uint32(o) // never blocks: at most maxFetchOutstanding queued
	}
}

// fetcher reads whole frames from the repair URL and queues them for the
// writers like frames assembled from the network.
func (r *receiver) fetcher(ctx context.Context) {
	var img *imagefmt.Reader
	var entries []imagefmt.Entry
	var tables [][]byte
	var openErr error
	var buf []byte
	for o := range r.fetchq {
		if img == nil && openErr == nil {
			img, openErr = openHTTPImage(ctx, r.opt.HTTPClient, r.opt.RepairURL)
			if openErr == nil {
				entries = slices.Collect(img.Entries())
				tables = zeroRunTables(img.ZeroRuns(), r.ann.chunkSize)
				switch {
				case img.Digest() != r.ann.digest:
					openErr = fmt.Errorf("multicast: repair URL serves another image (digest %x)", img.Digest())
				case len(entries) != int(r.g.frames) || len(tables) != int(r.g.objects-r.g.frames) ||
					img.Header().ChunkSize != r.ann.chunkSize:
					openErr = fmt.Errorf("multicast: repair URL image has a different layout")
				}
			}
		}
		if openErr != nil {
			r.fetchDone(ctx, writeResult{obj: o, fetch: true, err: openErr, httpErr: true})
			continue
		}
		if o >= r.g.frames {
			select {
			case r.writeq <- writeJob{obj: o, raw: tables[o-r.g.frames], fetch: true}:
			case <-ctx.Done():
				return
			}
			continue
		}
		e := entries[o]
		f, _, err := img.ReadFrame(e.Chunk, buf)
		if err != nil {
			r.fetchDone(ctx, writeResult{obj: o, fetch: true, err: err, httpErr: true})
			continue
		}
		raw := append([]byte(nil), f.Raw...)
		select {
		case r.writeq <- writeJob{obj: o, chunk: uint32(e.Chunk), raw: raw, fetch: true}:
		case <-ctx.Done():
			return
		}
	}
}

func (r *receiver) fetchDone(ctx context.Context, res writeResult) {
	select {
	case r.results <- res:
	case <-ctx.Done():
	}
}

// fetchRest gets every object still missing from the repair URL after the
// sender ended or went silent.
func (r *receiver) fetchRest(ctx context.Context) error {
	for o := range r.asm.parts {
		r.asm.evict(r.asm.parts[o]) // restart partial objects whole, over HTTP
	}
	t := time.NewTicker(statusInterval)
	defer t.Stop()
	for !r.asm.complete() && !r.httpOff {
		r.dispatchFetches(position{}, true)
		if r.inflight == 0 {
			break
		}
		select {
		case res := <-r.results:
			r.result(res)
			if r.fatal != nil {
				return r.fatal
			}
		case <-t.C:
			r.sendStatus(rxFetching, nil)
			r.prog.Update(Stats{Phase: "fetching", Done: r.done, Total: int64(r.ann.bytes), Rate: r.rate(time.Now())})
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// drainWrites waits for objects still being written.
func (r *receiver) drainWrites(ctx context.Context) error {
	t := time.NewTicker(statusInterval)
	defer t.Stop()
	for r.inflight > 0 {
		select {
		case res := <-r.results:
			r.result(res)
			if r.fatal != nil {
				return r.fatal
			}
		case <-t.C:
			r.sendStatus(rxVerifying, nil)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// finish zeroes absent chunks, flushes and verifies the target, and
// returns the report for the sender. recvErr is what ended reception.
func (r *receiver) finish(ctx context.Context, recvErr error) *done {
	d := &done{id: r.id, written: uint64(r.res.BytesWritten)}
	fail := func(result uint8, msg string) *done {
		d.result, d.message = result, msg
		r.res.Result = [...]string{"", "ok", "mismatch", "incomplete", "error"}[result]
		r.res.Message = msg
		return d
	}
	if recvErr != nil {
		return fail(resultError, recvErr.Error())
	}
	if !r.asm.complete() {
		runs, total := r.asm.missingRuns()
		d.ranges, d.failed = runs, uint32(total)
		for _, sp := range runs {
			r.res.Missing = append(r.res.Missing, ChunkRange{First: int64(sp.first), Count: int64(sp.count)})
		}
		r.res.MissingCount = total
		msg := fmt.Sprintf("%d of %d objects never arrived", total, r.ann.objects)
		if err := r.target.Sync(); err != nil {
			msg += "; " + err.Error()
		}
		return fail(resultIncomplete, msg)
	}
	vstart := time.Now()
	type result struct {
		digest [32]byte
		err    error
	}
	ch := make(chan result, 1)
	var checked countReporter
	go func() {
		var res result
		res.err = r.w.Finish()
		if res.err == nil {
			res.digest, res.err = r.w.Verify(ctx, r.ann.digest, &checked)
		}
		ch <- res
	}()
	t := time.NewTicker(statusInterval)
	defer t.Stop()
	var res result
wait:
	for {
		select {
		case res = <-ch:
			break wait
		case <-t.C:
			r.sendStatus(rxVerifying, nil)
			r.prog.Update(Stats{Phase: "verifying", Done: checked.n.Load(), Total: r.ann.diskSize})
		}
	}
	r.res.Verify = time.Since(vstart)
	d.digest = res.digest
	var bad *cloneio.VerifyError
	switch {
	case res.err == nil:
		r.res.OK = true
		return fail(resultOK, "")
	case !errors.As(res.err, &bad):
		return fail(resultError, res.err.Error())
	}
	d.failed = uint32(bad.Count)
	for _, b := range bad.Bad {
		d.ranges = append(d.ranges, span{uint32(b.First), uint32(b.Count)})
	}
	r.res.Missing = bad.Bad
	r.res.MissingCount = bad.Count
	return fail(resultMismatch, fmt.Sprintf("%d chunks read back differ from the image", bad.Count))
}

// countReporter counts the bytes Verify reports, for the Stats updates.
type countReporter struct{ n atomic.Int64 }

func (c *countReporter) Start(string, int64) { c.n.Store(0) }
func (c *countReporter) Add(n int64)         { c.n.Add(n) }

// report sends DONE until the sender acknowledges it (or gives up after
// a few seconds; a sender that already ended gets three tries).
func (r *receiver) report(ctx context.Context, d *done) bool {
	tries := 15
	if r.senderEnded != 0 {
		tries = 3
	}
	room := r.ann.symSize + dataHdrLen
	t := time.NewTicker(300 * time.Millisecond)
	defer t.Stop()
	for range tries {
		r.sendReply(d.marshal(r.out, r.session, r.tag, room))
	wait:
		for {
			select {
			case ev := <-r.events:
				if ev.typ == pktDoneAck {
					return true
				}
			case <-t.C:
				break wait
			case <-ctx.Done():
				return false
			}
		}
	}
	return false
}

func formatUUID(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
