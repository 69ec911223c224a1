package multicast

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
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
	"sort"
	"sync"
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
	// existing file, Discard to discard unused ranges of a device).
	Target cloneio.TargetOptions
	// OpenTarget opens the target; nil means this package's OpenTarget.
	OpenTarget func(path string, diskSize int64) (Target, error)

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
	runs    []imagefmt.ZeroRun // a zero-run table's runs
	obj     uint32
	chunk   uint32
	sum     [32]byte
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
	target Target
	path   string

	session uint64
	tag     [8]byte
	ann     *announce
	g       geometry
	sender  netip.AddrPort
	cs      codecs
	asm     *assembler
	chunkOf []uint32 // per frame object: its chunk
	// sums holds each frame object's SHA-256 (from its verified frame).
	// With chunkOf and the assembler's state that is about 37 bytes per
	// stored chunk: 150 MiB for a TiB of 256 KiB chunks (maxObjects bounds
	// it). The final check compares whole sums; the digest needs them all.
	sums [][32]byte
	// Streaming verification (verifyAhead): objects written and waiting to
	// be read back, and those whose read-back already matched.
	vmu      sync.Mutex
	vpending []uint32
	vbytes   int64
	vlast    time.Time
	checked  bitset
	tables   [][]imagefmt.ZeroRun
	runs     []imagefmt.ZeroRun // all zero runs, once every table arrived

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
		opt.OpenTarget = func(p string, size int64) (Target, error) { return OpenTarget(p, size, topt) }
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
	t, err := r.opt.OpenTarget(r.path, r.ann.diskSize)
	if err != nil {
		return nil, err
	}
	r.target = t
	committed := false
	defer func() {
		if !committed {
			t.Abort()
		}
	}()
	go r.readReplies()
	vstop, vdone := make(chan struct{}), make(chan struct{})
	go r.verifyAhead(ctx, vstop, vdone)
	stopVerify := sync.OnceFunc(func() { close(vstop); <-vdone })
	defer stopVerify()

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
		// Only a verified target becomes final (a file is renamed into
		// place); anything else is discarded, as restore does.
		committed = true
		if err := t.Commit(); err != nil {
			d = &done{id: r.id, result: resultError, written: d.written, digest: d.digest,
				message: "commit target: " + err.Error()}
			r.res.OK, r.res.Result, r.res.Message = false, "error", d.message
		}
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
		r.chunkOf = make([]uint32, a.frames)
		r.sums = make([][32]byte, a.frames)
		r.checked = newBitset(int64(a.frames))
		r.tables = make([][]imagefmt.ZeroRun, a.objects-a.frames)
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
		if res.obj < r.g.frames {
			r.chunkOf[res.obj] = res.chunk
			r.sums[res.obj] = res.sum
			r.vmu.Lock()
			r.vpending = append(r.vpending, res.obj)
			r.vbytes += int64(res.logical)
			r.vmu.Unlock()
		} else {
			r.tables[res.obj-r.g.frames] = res.runs
		}
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

func (r *receiver) write(j writeJob, out []byte) writeResult {
	res := writeResult{obj: j.obj, chunk: j.chunk, fetch: j.fetch}
	if j.obj >= r.g.frames {
		res.runs, res.err = parseZeroRunTable(j.raw, r.ann.numChunks())
		res.size = len(j.raw)
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
	if _, err := r.target.WriteAt(data, int64(j.chunk)*int64(r.ann.chunkSize)); err != nil {
		res.err, res.fatal = fmt.Errorf("multicast: write target: %w", err), true
		return res
	}
	res.sum = f.Sum
	res.logical = len(data)
	res.size = len(j.raw)
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
	for o := r.asm.have.nextClear(r.asm.low, end); o < end && r.fetching < maxFetchOutstanding; o = r.asm.have.nextClear(o+1, end) {
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
			r.res.Missing = append(r.res.Missing, ChunkRange{int64(sp.first), int64(sp.count)})
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
		bad    []span
		nbad   int64
		err    error
	}
	ch := make(chan result, 1)
	var checked int64
	progress := make(chan int64, 64)
	go func() {
		var res result
		res.err = r.layout()
		if res.err == nil {
			res.err = r.target.Sync()
		}
		if res.err == nil {
			res.digest, res.bad, res.nbad, res.err = readBack(ctx, r.target, r.ann, r.classify, func(n int64) {
				select {
				case progress <- n:
				default:
				}
			})
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
		case n := <-progress:
			checked += n
		case <-t.C:
			r.sendStatus(rxVerifying, nil)
			r.prog.Update(Stats{Phase: "verifying", Done: checked, Total: r.ann.diskSize})
		}
	}
	r.res.Verify = time.Since(vstart)
	d.digest = res.digest
	switch {
	case res.err != nil:
		return fail(resultError, res.err.Error())
	case res.digest == r.ann.digest && res.nbad == 0:
		r.res.OK = true
		return fail(resultOK, "")
	}
	d.ranges, d.failed = res.bad, uint32(res.nbad)
	for _, sp := range res.bad {
		r.res.Missing = append(r.res.Missing, ChunkRange{int64(sp.first), int64(sp.count)})
	}
	r.res.MissingCount = res.nbad
	return fail(resultMismatch, fmt.Sprintf("%d chunks read back differ from the image", res.nbad))
}

// classify tells what chunk c must read back as: a stored chunk's
// SHA-256 (and its read-back sum if verifyAhead took it), zeros (a zero
// run), or anything (unused). Called after verifyAhead stopped.
func (r *receiver) classify(c int64) chunkCheck {
	i := sort.Search(len(r.chunkOf), func(i int) bool { return int64(r.chunkOf[i]) >= c })
	if i < len(r.chunkOf) && int64(r.chunkOf[i]) == c {
		ck := chunkCheck{kind: imagefmt.ChunkStored, want: r.sums[i]}
		if r.checked.test(int64(i)) {
			ck.have = &r.sums[i] // read back early, and it matched
		}
		return ck
	}
	j := sort.Search(len(r.runs), func(j int) bool { return r.runs[j].Start+r.runs[j].Count > c })
	if j < len(r.runs) && r.runs[j].Start <= c {
		return chunkCheck{kind: imagefmt.ChunkZero}
	}
	return chunkCheck{kind: imagefmt.ChunkUnused}
}

// Streaming verification: while the network is the bottleneck, chunks
// already written are flushed, dropped from the page cache and read back
// in batches, so that at the end only the last ones (and the zero runs)
// remain to be read. Each chunk is written once, so a sum taken early
// stays true.
const (
	verifyBatch = 32 << 20        // bytes pending that start a batch
	verifyAge   = 2 * time.Second // or this long since the last batch
)

func (r *receiver) verifyAhead(ctx context.Context, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	buf := make([]byte, r.ann.chunkSize)
	for {
		select {
		case <-t.C:
		case <-stop:
			return
		case <-ctx.Done():
			return
		}
		r.vmu.Lock()
		if len(r.vpending) == 0 || r.vbytes < verifyBatch && time.Since(r.vlast) < verifyAge {
			r.vmu.Unlock()
			continue
		}
		batch := r.vpending
		r.vpending, r.vbytes, r.vlast = nil, 0, time.Now()
		r.vmu.Unlock()
		if r.target.Sync() != nil {
			continue // the final check reads them and reports
		}
		for _, o := range batch {
			select {
			case <-stop:
				return
			default:
			}
			c := int64(r.chunkOf[o])
			b := buf[:r.ann.chunkLen(c)]
			if _, err := r.target.ReadAt(b, c*int64(r.ann.chunkSize)); err != nil {
				continue
			}
			if sha256.Sum256(b) != r.sums[o] {
				continue // the final check reads it again and reports it
			}
			r.vmu.Lock()
			r.checked.set(int64(o))
			r.vmu.Unlock()
		}
	}
}

// layout checks that frames and zero runs describe one disk (increasing,
// disjoint) and then zeroes the zero runs and hands the gaps to Unused,
// as restore does.
func (r *receiver) layout() error {
	r.runs = r.runs[:0]
	for _, t := range r.tables {
		if len(r.runs) > 0 && len(t) > 0 && t[0].Start < r.runs[len(r.runs)-1].Start+r.runs[len(r.runs)-1].Count {
			return fmt.Errorf("multicast: %w: zero-run tables overlap", imagefmt.ErrCorrupt)
		}
		r.runs = append(r.runs, t...)
	}
	cs := int64(r.ann.chunkSize)
	span := func(from, to int64) (int64, int64) {
		off := from * cs
		return off, min(to*cs, r.ann.diskSize) - off
	}
	next := int64(0) // first chunk not yet accounted for
	unused := func(to int64) error {
		if to <= next {
			return nil
		}
		off, n := span(next, to)
		next = to
		return r.target.Unused(off, n)
	}
	ri := 0
	for i, c := range r.chunkOf {
		if int64(c) < next || i > 0 && c <= r.chunkOf[i-1] {
			return fmt.Errorf("multicast: %w: chunk %d out of order or inside a zero run", imagefmt.ErrCorrupt, c)
		}
		for ; ri < len(r.runs) && r.runs[ri].Start < int64(c); ri++ {
			z := r.runs[ri]
			if z.Start+z.Count > int64(c) {
				return fmt.Errorf("multicast: %w: zero run %d+%d covers stored chunk %d", imagefmt.ErrCorrupt, z.Start, z.Count, c)
			}
			if err := r.zeroRun(z, unused, span, &next); err != nil {
				return err
			}
		}
		if err := unused(int64(c)); err != nil {
			return err
		}
		next = int64(c) + 1
	}
	for ; ri < len(r.runs); ri++ {
		if err := r.zeroRun(r.runs[ri], unused, span, &next); err != nil {
			return err
		}
	}
	return unused(r.ann.numChunks())
}

func (r *receiver) zeroRun(z imagefmt.ZeroRun, unused func(int64) error, span func(a, b int64) (int64, int64), next *int64) error {
	if err := unused(z.Start); err != nil {
		return err
	}
	off, n := span(z.Start, z.Start+z.Count)
	*next = z.Start + z.Count
	if err := r.target.ZeroRange(off, n); err != nil {
		return fmt.Errorf("multicast: zero target bytes %d-%d: %w", off, off+n-1, err)
	}
	return nil
}

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
