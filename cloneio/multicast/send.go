package multicast

import (
	"container/heap"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dimg-project/dimg/cloneio"
	"github.com/dimg-project/dimg/imagefmt"
	"github.com/dimg-project/dimg/internal/bitset"
)

// FEC configures proactive Reed–Solomon parity: Parity symbols for every
// Block data symbols. The zero value sends no proactive parity (repairs
// still use parity: one repair symbol serves every receiver that lost one
// symbol of the block, whichever it was).
type FEC struct {
	Parity int // parity symbols per block; 0: none
	Block  int // data symbols per block; 0: DefaultFECBlock
}

// DefaultFECBlock is K, the data symbols per block: 64 symbols of 1408
// bytes is 88 KiB, so a 256 KiB chunk is three blocks.
const DefaultFECBlock = 64

// ParseFEC reads "P" or "P/K" (e.g. "4/64": 4 parity symbols per 64 data
// symbols). "" and "0" mean none.
func ParseFEC(s string) (FEC, error) {
	var f FEC
	if s == "" {
		return f, nil
	}
	ps, ks, hasK := strings.Cut(s, "/")
	p, err := strconv.Atoi(ps)
	if err != nil {
		return f, fmt.Errorf("multicast: --fec %q: want P or P/K, e.g. 4/64", s)
	}
	f.Parity = p
	if hasK {
		if f.Block, err = strconv.Atoi(ks); err != nil {
			return f, fmt.Errorf("multicast: --fec %q: want P or P/K, e.g. 4/64", s)
		}
	}
	return f, f.validate()
}

func (f FEC) block() int {
	if f.Block == 0 {
		return DefaultFECBlock
	}
	return f.Block
}

func (f FEC) validate() error {
	if k := f.block(); k < 1 || k > maxK {
		return fmt.Errorf("multicast: FEC block of %d symbols (1..%d)", k, maxK)
	}
	if f.Parity < 0 || f.Parity > f.block() {
		return fmt.Errorf("multicast: FEC parity %d per block of %d", f.Parity, f.block())
	}
	return nil
}

// String formats f as ParseFEC reads it.
func (f FEC) String() string { return fmt.Sprintf("%d/%d", f.Parity, f.block()) }

// SendOptions configure Send. The zero value of every field is a default.
type SendOptions struct {
	Group     string // multicast group (DefaultGroup)
	Port      int    // UDP port (DefaultPort)
	Interface string // interface name or address to send on; "" = routing table
	TTL       int    // multicast TTL (1: this link only)
	MTU       int    // path MTU, sets the symbol size (DefaultMTU)

	MinReceivers int           // start when this many receivers joined (1)
	MaxWait      time.Duration // start after this long with ≥1 receiver; 0: wait for MinReceivers
	MaxRate      int64         // bytes/s on the wire; 0: no limit
	FEC          FEC
	Key          []byte // HMAC key; nil: unauthenticated session

	// ReceiverTimeout: a receiver silent this long is given up (10 s).
	ReceiverTimeout time.Duration
	// StallTimeout: after the pass, a receiver that completes nothing new
	// for this long is given up (60 s).
	StallTimeout time.Duration
	// LossThreshold is the loss fraction treated as congestion (0.05).
	LossThreshold float64

	SessionID uint64 // 0: random
	Progress  Progress
	Logger    *slog.Logger
}

// SendResult is what Send reports.
type SendResult struct {
	Session       string           `json:"session"`
	Image         string           `json:"image"`
	Digest        string           `json:"digest"`
	Objects       int              `json:"objects"`
	StoredBytes   int64            `json:"stored_bytes"`
	Duration      time.Duration    `json:"duration_ns"`
	PassDuration  time.Duration    `json:"pass_duration_ns"`
	Packets       int64            `json:"packets"`
	Bytes         int64            `json:"bytes"`
	ParityPackets int64            `json:"parity_packets"` // proactive (--fec)
	RepairPackets int64            `json:"repair_packets"` // data or parity sent again
	RateDecreases int              `json:"rate_decreases"`
	FinalRate     int64            `json:"final_rate"`
	Receivers     []ReceiverReport `json:"receivers"`
	Dropped       Drops            `json:"dropped"`
}

// OK reports whether every receiver verified its target.
func (r *SendResult) OK() bool {
	for _, x := range r.Receivers {
		if !x.OK {
			return false
		}
	}
	return len(r.Receivers) > 0
}

// ReceiverReport is the sender's view of one receiver at the end.
type ReceiverReport struct {
	Address string `json:"address"`
	ID      string `json:"id"`
	Name    string `json:"name,omitempty"`
	Late    bool   `json:"late,omitempty"` // joined after the pass started
	OK      bool   `json:"ok"`
	// Result: "ok", "mismatch", "incomplete", "error" (as the receiver
	// reported), "lost" (silent), "stalled" (no progress).
	Result       string `json:"result"`
	Message      string `json:"message,omitempty"`
	BytesWritten int64  `json:"bytes_written"`
	// Retransmissions counts the repair symbols this receiver asked for
	// that the sender acted on.
	Retransmissions int64   `json:"retransmissions"`
	LossPct         float64 `json:"loss_pct"` // last reported
	// Missing lists the chunk numbers the receiver could not get (or that
	// failed verification), as ranges; MissingCount may exceed what is listed.
	Missing      []ChunkRange `json:"missing,omitempty"`
	MissingCount int64        `json:"missing_count,omitempty"`
}

// ChunkRange is a run of chunk numbers [First, First+Count).
type ChunkRange = cloneio.ChunkRange

// Drops counts packets that were received and thrown away.
type Drops struct {
	Foreign   int64 `json:"foreign"`   // another session or image
	BadAuth   int64 `json:"bad_auth"`  // missing or wrong HMAC
	Malformed int64 `json:"malformed"` // not a valid dimg packet
	Overflow  int64 `json:"overflow,omitempty"`
}

type dropCounters struct{ foreign, badAuth, malformed, overflow atomic.Int64 }

func (d *dropCounters) count(err error) {
	switch {
	case errors.Is(err, errForeign):
		d.foreign.Add(1)
	case errors.Is(err, errAuth):
		d.badAuth.Add(1)
	default:
		d.malformed.Add(1)
	}
}

func (d *dropCounters) snapshot() Drops {
	return Drops{Foreign: d.foreign.Load(), BadAuth: d.badAuth.Load(), Malformed: d.malformed.Load(), Overflow: d.overflow.Load()}
}

// Errors of Send.
var (
	// ErrNoReceivers: nobody joined before --max-wait.
	ErrNoReceivers = errors.New("multicast: no receiver joined")
	// ErrPartial: some receivers verified their targets, others failed.
	ErrPartial = errors.New("multicast: some receivers failed")
	// ErrAllFailed: no receiver verified its target.
	ErrAllFailed = errors.New("multicast: every receiver failed")
)

// Timing of the protocol.
const (
	tickInterval     = 100 * time.Millisecond // sender housekeeping
	statusInterval   = 200 * time.Millisecond // receiver STATUS/NACK
	announceWaiting  = 250 * time.Millisecond
	announceSending  = 500 * time.Millisecond // late joiners lock on at the next one
	announceRepair   = 500 * time.Millisecond
	repairGuard      = 120 * time.Millisecond // ignore NACKs for what was repaired this recently
	defaultRxTimeout = 10 * time.Second
	defaultStall     = 60 * time.Second
)

// object is one stored frame of the image, or a zero-run table.
type object struct {
	chunk  uint32
	length uint32
	table  []byte // a zero-run table's bytes; nil for frames
}

type blockKey struct {
	object uint32
	block  uint16
}

// rxState is what the sender knows about one receiver.
type rxState struct {
	id           uint64
	addr         netip.AddrPort
	name         string
	late         bool
	lastHeard    time.Time
	lastProgress time.Time
	state        uint8
	complete     uint32
	low          uint32 // lowest object it still lacks
	written      uint64
	lossPPM      uint32
	lossAt       time.Time
	statusSeq    uint32
	requested    int64
	final        bool
	report       ReceiverReport
}

// objRepair is what is queued for one object: the symbols each block
// still needs (the largest need any receiver reported).
type objRepair struct {
	blocks map[uint16]int
}

// objHeap orders queued repairs by object number: receivers complete (and
// free) objects in order.
type objHeap []uint32

func (h objHeap) Len() int           { return len(h) }
func (h objHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h objHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *objHeap) Push(x any)        { *h = append(*h, x.(uint32)) }
func (h *objHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

type ctrlMsg struct {
	from   netip.AddrPort
	typ    uint8
	hello  *hello
	status *status
	done   *done
}

type sender struct {
	opt     SendOptions
	log     *slog.Logger
	prog    Progress
	ep      endpoint
	conn    *net.UDPConn
	sig     *signer // main goroutine only
	img     *imagefmt.Reader
	path    string
	objs    []object
	g       geometry
	session uint64
	tag     [8]byte
	ann     announce
	cs      codecs

	ctrl  chan ctrlMsg
	drops dropCounters

	phase        uint8
	cursor       uint32 // next object of the pass
	started      time.Time
	passEnd      time.Time
	rx           map[uint64]*rxState
	order        []uint64 // join order
	repairs      map[uint32]*objRepair
	repairHeap   objHeap
	backlog      bitset.Set // whole objects to resend after the pass
	backlogN     int64
	lastRepair   map[blockKey]time.Time
	lastWhole    map[uint32]time.Time
	nextParity   map[blockKey]int
	rate         *aimd
	pace         pacer
	seq          uint32
	pkt          []byte
	shards       [][]byte // parity scratch
	rbuf         []byte   // frame buffer for repairs
	nextAnnounce time.Time
	nextTick     time.Time
	nextPrune    time.Time
	maxWaitAt    time.Time

	// counters
	packets, bytes, parity, repairPkts int64
	passBytes, passSent                int64
	tickBytes                          int64
	tickAt                             time.Time
	sentRate                           float64
}

// Send multicasts the image at path to every receiver that joins, repairs
// what they lose, and returns when each receiver has reported its result
// or been given up. The error is nil only when every receiver verified its
// target; otherwise it wraps ErrPartial, ErrAllFailed or ErrNoReceivers,
// and the result is still returned.
func Send(ctx context.Context, path string, opt SendOptions) (*SendResult, error) {
	if err := opt.FEC.validate(); err != nil {
		return nil, err
	}
	if opt.TTL == 0 {
		opt.TTL = 1
	}
	if opt.MTU == 0 {
		opt.MTU = DefaultMTU
	}
	if opt.MinReceivers <= 0 {
		opt.MinReceivers = 1
	}
	if opt.ReceiverTimeout <= 0 {
		opt.ReceiverTimeout = defaultRxTimeout
	}
	if opt.StallTimeout <= 0 {
		opt.StallTimeout = defaultStall
	}
	if opt.LossThreshold <= 0 {
		opt.LossThreshold = 0.05
	}
	if opt.TTL < 0 || opt.TTL > 255 {
		return nil, fmt.Errorf("multicast: TTL %d out of range", opt.TTL)
	}
	sym := symbolSizeFor(opt.MTU, len(opt.Key) > 0)
	if sym < minSymbolSize || sym > maxSymbolSize {
		return nil, fmt.Errorf("multicast: MTU %d out of range", opt.MTU)
	}
	ep, err := resolveEndpoint(opt.Group, opt.Port, opt.Interface)
	if err != nil {
		return nil, err
	}
	img, err := imagefmt.Open(path)
	if err != nil {
		return nil, fmt.Errorf("multicast: %w", err)
	}
	defer img.Close()
	hdr := img.Header()
	if hdr.ChunkSize < minChunkSize || hdr.ChunkSize > maxChunkSize {
		return nil, fmt.Errorf("multicast: chunk size %d not supported", hdr.ChunkSize)
	}
	s := &sender{
		opt: opt, log: opt.Logger, prog: opt.Progress, ep: ep, img: img, path: path,
		sig: newSigner(opt.Key), session: opt.SessionID,
		ctrl: make(chan ctrlMsg, 4096), rx: map[uint64]*rxState{},
		repairs: map[uint32]*objRepair{}, lastRepair: map[blockKey]time.Time{},
		lastWhole: map[uint32]time.Time{}, nextParity: map[blockKey]int{},
		rate: newAIMD(opt.MaxRate, opt.LossThreshold, 2*statusInterval),
	}
	s.pace.setRate(s.rate.rate)
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.prog == nil {
		s.prog = noProgress{}
	}
	for e := range img.Entries() {
		s.objs = append(s.objs, object{chunk: uint32(e.Chunk), length: uint32(imagefmt.FrameHeaderSize + e.StoredLen)})
		s.passBytes += int64(imagefmt.FrameHeaderSize + e.StoredLen)
	}
	frames := uint32(len(s.objs))
	for _, tb := range zeroRunTables(img.ZeroRuns(), hdr.ChunkSize) {
		s.objs = append(s.objs, object{length: uint32(len(tb)), table: tb})
		s.passBytes += int64(len(tb))
	}
	if len(s.objs) > maxObjects {
		return nil, fmt.Errorf("multicast: image has %d stored chunks; receivers take at most %d (capture with a larger chunk size)", len(s.objs), maxObjects)
	}
	if s.session == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		s.session = binary.BigEndian.Uint64(b[:]) | 1
	}
	digest := img.Digest()
	s.tag = [8]byte(digest[:8])
	s.g = geometry{sym: sym, k: opt.FEC.block(), p: opt.FEC.Parity, objects: uint32(len(s.objs)), frames: frames,
		chunkSize: hdr.ChunkSize, numChunks: hdr.NumChunks()}
	s.ann = announce{symSize: sym, k: s.g.k, p: s.g.p, objects: s.g.objects, frames: frames, sectorSize: hdr.SectorSize,
		chunkSize: hdr.ChunkSize, diskSize: hdr.DiskSize, uuid: hdr.UUID, digest: digest, bytes: uint64(s.passBytes)}
	s.backlog = bitset.New(int64(len(s.objs)))
	s.pkt = make([]byte, 0, maxDatagram)
	s.rbuf = make([]byte, 0, s.paddedLen(maxFrameLen(hdr.ChunkSize)))

	conn, err := openSenderSocket(ep, opt.TTL)
	if err != nil {
		return nil, err
	}
	s.conn = conn
	defer conn.Close()
	return s.run(ctx)
}

func (s *sender) paddedLen(n int) int { return s.g.symbols(n) * s.g.sym }

// readControl receives receivers' packets until the socket closes.
func (s *sender) readControl(key []byte) {
	sig := newSigner(key)
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				close(s.ctrl)
				return
			}
			continue // ICMP errors and the like
		}
		h, body, err := sig.open(buf[:n])
		if err == nil && (h.session != s.session || h.digestTag != s.tag) {
			err = errForeign
		}
		var m ctrlMsg
		if err == nil {
			m = ctrlMsg{from: from, typ: h.typ}
			switch h.typ {
			case pktHello:
				m.hello, err = parseHello(body)
			case pktStatus:
				m.status, err = parseStatus(body)
			case pktDone:
				m.done, err = parseDone(body)
			default:
				err = fmt.Errorf("%w: type %d to the sender", errMalformed, h.typ)
			}
		}
		if err != nil {
			s.drops.count(err)
			continue
		}
		select {
		case s.ctrl <- m:
		default:
			s.drops.overflow.Add(1)
		}
	}
}

// prefetched is a frame read ahead for the pass.
type prefetched struct {
	obj uint32
	buf []byte // padded to whole symbols
	err error
}

// prefetch reads the pass's frames in order, checking each payload's
// CRC so a damaged image stops the session instead of reaching targets.
func (s *sender) prefetch(ctx context.Context, out chan<- prefetched, free chan []byte) {
	defer close(out)
	for i := range s.objs {
		var buf []byte
		select {
		case buf = <-free:
		case <-ctx.Done():
			return
		}
		buf, err := s.readObject(uint32(i), buf)
		select {
		case out <- prefetched{obj: uint32(i), buf: buf, err: err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// readObject reads object o's frame into buf, zero-padded to whole symbols.
func (s *sender) readObject(o uint32, buf []byte) ([]byte, error) {
	ob := s.objs[o]
	if ob.table != nil {
		n := s.paddedLen(len(ob.table))
		b := append(buf[:0], ob.table...)
		return append(b, make([]byte, n-len(b))...), nil
	}
	f, ok, err := s.img.ReadFrame(int64(ob.chunk), buf[:0])
	if err == nil && !ok {
		err = fmt.Errorf("chunk %d vanished from the index", ob.chunk)
	}
	if err == nil && (len(f.Raw) != int(ob.length) || crc32.Checksum(f.Payload, castagnoli) != f.PayloadCRC) {
		err = fmt.Errorf("chunk %d: %w: stored bytes damaged (payload CRC)", ob.chunk, imagefmt.ErrChecksum)
	}
	if err != nil {
		return buf, fmt.Errorf("multicast: read image: %w", err)
	}
	n := s.paddedLen(len(f.Raw))
	var b []byte
	if cap(f.Raw) >= n {
		b = f.Raw[:n]
		clear(b[len(f.Raw):])
	} else {
		b = append(f.Raw, make([]byte, n-len(f.Raw))...)
	}
	return b, nil
}

func (s *sender) run(ctx context.Context) (*SendResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go s.readControl(s.opt.Key)

	start := time.Now()
	s.phase = stateWaiting
	if s.opt.MaxWait > 0 {
		s.maxWaitAt = start.Add(s.opt.MaxWait)
	}
	s.log.Info("session announced", "session", fmt.Sprintf("%016x", s.session), "group", s.ep.group,
		"objects", len(s.objs), "bytes", s.passBytes)

	frames := make(chan prefetched, 4)
	free := make(chan []byte, 6)
	for range cap(free) {
		free <- make([]byte, 0, s.paddedLen(maxFrameLen(s.g.chunkSize)))
	}
	prefetching := false

	var runErr error
loop:
	for {
		if err := ctx.Err(); err != nil {
			runErr = err
			break
		}
		s.drainControl()
		now := time.Now()
		if !now.Before(s.nextTick) {
			if stop, err := s.housekeep(now); stop || err != nil {
				runErr = err
				break
			}
		}
		if !now.Before(s.nextAnnounce) {
			s.sendAnnounce(now)
		}
		if s.phase == stateWaiting {
			s.idle(ctx, 50*time.Millisecond)
			continue
		}
		if !prefetching {
			prefetching = true
			s.started = now
			go s.prefetch(ctx, frames, free)
		}
		// Repairs first: they unblock receivers' memory and the finish.
		if len(s.repairHeap) > 0 {
			if err := s.sendRepair(ctx); err != nil {
				runErr = err
				break
			}
			continue
		}
		if s.phase == stateSending {
			select {
			case f, ok := <-frames:
				if !ok {
					runErr = ctx.Err()
					break loop
				}
				if f.err != nil {
					runErr = f.err
					break loop
				}
				err := s.sendObject(ctx, f.obj, f.buf, false)
				free <- f.buf
				if err != nil {
					runErr = err
					break loop
				}
				s.cursor = f.obj + 1
				s.passSent += int64(s.objs[f.obj].length)
				if s.cursor == s.g.objects {
					s.endPass(time.Now())
				}
			case <-ctx.Done():
			}
			continue
		}
		if s.backlogN > 0 {
			if err := s.sendBacklog(ctx); err != nil {
				runErr = err
				break
			}
			continue
		}
		s.idle(ctx, tickInterval)
	}
	final := uint8(stateFinished)
	if runErr != nil {
		final = stateAborted
	}
	s.phase = final
	for range 3 {
		s.sendAnnounce(time.Now())
		time.Sleep(20 * time.Millisecond)
	}
	res := s.result(time.Since(start))
	s.prog.Update(Stats{Phase: "done", Done: s.passBytes, Total: s.passBytes, Receivers: len(s.rx), Finished: len(s.rx)})
	switch {
	case errors.Is(runErr, ErrNoReceivers):
		return res, fmt.Errorf("%w within %s", ErrNoReceivers, s.opt.MaxWait)
	case runErr != nil:
		return res, fmt.Errorf("multicast: send: %w", runErr)
	}
	return res, s.outcome(res)
}

func (s *sender) outcome(res *SendResult) error {
	ok := 0
	for _, r := range res.Receivers {
		if r.OK {
			ok++
		}
	}
	switch {
	case len(res.Receivers) == 0:
		return ErrNoReceivers
	case ok == len(res.Receivers):
		return nil
	case ok > 0:
		return fmt.Errorf("%w: %d of %d receivers", ErrPartial, len(res.Receivers)-ok, len(res.Receivers))
	}
	return fmt.Errorf("%w (%d)", ErrAllFailed, len(res.Receivers))
}

func (s *sender) endPass(now time.Time) {
	s.phase = stateRepairing
	s.passEnd = now
	s.nextAnnounce = now // tell receivers at once: everything not received is lost
	s.log.Info("first pass complete", "duration", now.Sub(s.started), "backlog", s.backlogN)
}

// idle waits for a control message or the next tick.
func (s *sender) idle(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case m, ok := <-s.ctrl:
		if ok {
			s.handle(m, time.Now())
		}
	case <-t.C:
	case <-ctx.Done():
	}
}

func (s *sender) drainControl() {
	now := time.Now()
	for range 256 {
		select {
		case m, ok := <-s.ctrl:
			if !ok {
				return
			}
			s.handle(m, now)
		default:
			return
		}
	}
}

func (s *sender) sendAnnounce(now time.Time) {
	s.ann.state = s.phase
	s.ann.cursor = s.cursor
	s.ann.seq++
	s.ann.rate = uint64(s.rate.rate)
	s.ann.receivers = uint32(len(s.rx))
	b := s.sig.seal(s.ann.marshal(s.pkt[:cap(s.pkt)], s.session))
	s.write(b, s.ep.group)
	switch s.phase {
	case stateWaiting:
		s.nextAnnounce = now.Add(announceWaiting)
	case stateSending:
		s.nextAnnounce = now.Add(announceSending)
	default:
		s.nextAnnounce = now.Add(announceRepair)
	}
}

// write sends one datagram, retrying briefly when the kernel is out of
// buffers.
func (s *sender) write(b []byte, to netip.AddrPort) error {
	var err error
	for try := range 50 {
		_, err = s.conn.WriteToUDPAddrPort(b, to)
		if err == nil || !errors.Is(err, syscall.ENOBUFS) {
			break
		}
		time.Sleep(time.Duration(try+1) * 200 * time.Microsecond)
	}
	if err != nil {
		return fmt.Errorf("multicast: send to %s: %w", to, err)
	}
	return nil
}

func (s *sender) handle(m ctrlMsg, now time.Time) {
	switch m.typ {
	case pktHello:
		r := s.receiver(m.hello.id, m.from, now)
		r.name = m.hello.name
		if !r.final {
			r.report.Name = r.name
		}
		s.write(s.sig.seal(marshalID(s.pkt[:cap(s.pkt)], pktWelcome, s.session, s.tag, r.id)), m.from)
	case pktStatus:
		st := m.status
		r := s.receiver(st.id, m.from, now)
		if r.final || st.seq < r.statusSeq && r.statusSeq-st.seq < 1<<31 {
			return // stale or reordered
		}
		r.statusSeq = st.seq
		if st.complete > r.complete || st.state != r.state || st.written > r.written {
			r.lastProgress = now
		}
		r.state, r.complete, r.written, r.low = st.state, st.complete, st.written, st.low
		r.lossPPM, r.lossAt = st.lossPPM, now
		for _, nk := range st.nacks {
			r.requested += s.nack(nk, now)
		}
	case pktDone:
		d := m.done
		r := s.receiver(d.id, m.from, now)
		if !r.final {
			s.finish(r, d)
		}
		s.write(s.sig.seal(marshalID(s.pkt[:cap(s.pkt)], pktDoneAck, s.session, s.tag, r.id)), m.from)
	}
}

// receiver finds or registers a receiver; any packet from it counts as a
// sign of life.
func (s *sender) receiver(id uint64, from netip.AddrPort, now time.Time) *rxState {
	r, ok := s.rx[id]
	if !ok {
		r = &rxState{id: id, addr: from, late: s.phase != stateWaiting, lastProgress: now}
		r.report = ReceiverReport{Address: from.String(), ID: fmt.Sprintf("%016x", id), Late: r.late}
		s.rx[id] = r
		s.order = append(s.order, id)
		s.log.Info("receiver joined", "addr", from, "id", r.report.ID, "late", r.late)
	}
	r.addr = from
	r.lastHeard = now
	return r
}

// nack queues what one NACK entry asks for and returns how many symbols
// that is (0 when it was suppressed or invalid).
func (s *sender) nack(nk nack, now time.Time) int64 {
	if nk.object >= s.g.objects {
		return 0
	}
	switch nk.kind {
	case nackBlock:
		o := nk.object
		n := int(s.objs[o].length)
		if int(nk.block) >= s.g.blocks(n) || s.backlog.Test(int64(o)) {
			return 0
		}
		key := blockKey{o, nk.block}
		if t, ok := s.lastRepair[key]; ok && now.Sub(t) < repairGuard {
			return 0
		}
		if t, ok := s.lastWhole[o]; ok && now.Sub(t) < repairGuard {
			return 0
		}
		need := min(int(nk.need), s.g.blockK(n, int(nk.block)))
		rp := s.queue(o)
		if need > rp.blocks[nk.block] {
			rp.blocks[nk.block] = need
		}
		return int64(need)
	case nackObjects:
		end := min(int64(nk.object)+int64(nk.count), int64(s.g.objects))
		var syms int64
		for o := int64(nk.object); o < end; o++ {
			if s.backlog.Test(o) {
				continue
			}
			if t, ok := s.lastWhole[uint32(o)]; ok && now.Sub(t) < repairGuard {
				continue
			}
			// Whole objects wait for the end of the pass (late joiners,
			// stragglers, evicted objects): serving them during the pass
			// would hold everyone back. A receiver lacking a whole object
			// holds no memory for it, so waiting costs it nothing.
			s.backlog.Add(o)
			s.backlogN++
			syms += int64(s.g.symbols(int(s.objs[o].length)))
		}
		return syms
	}
	return 0
}

func (s *sender) queue(o uint32) *objRepair {
	rp, ok := s.repairs[o]
	if !ok {
		rp = &objRepair{blocks: map[uint16]int{}}
		s.repairs[o] = rp
		heap.Push(&s.repairHeap, o)
	}
	return rp
}

// sendRepair serves the lowest queued object.
func (s *sender) sendRepair(ctx context.Context) error {
	o := heap.Pop(&s.repairHeap).(uint32)
	rp := s.repairs[o]
	delete(s.repairs, o)
	buf, err := s.readObject(o, s.rbuf)
	if err != nil {
		return err
	}
	s.rbuf = buf[:0]
	blocks := make([]uint16, 0, len(rp.blocks))
	for b := range rp.blocks {
		blocks = append(blocks, b)
	}
	slices.Sort(blocks)
	n := int(s.objs[o].length)
	for _, b := range blocks {
		need := rp.blocks[b]
		k := s.g.blockK(n, int(b))
		key := blockKey{o, b}
		j0, ok := s.nextParity[key]
		if !ok {
			j0 = s.g.parityFor(k)
		}
		if j0+need > maxParity(k) {
			// Parity rows used up (a receiver keeps losing this block):
			// resend the data itself and start the rows over.
			if err := s.sendBlock(ctx, o, buf, int(b), 0, true); err != nil {
				return err
			}
			s.nextParity[key] = s.g.parityFor(k)
		} else {
			if err := s.sendParity(ctx, o, buf, int(b), j0, need, true); err != nil {
				return err
			}
			s.nextParity[key] = j0 + need
		}
		s.lastRepair[key] = time.Now()
	}
	return nil
}

// sendBacklog resends the lowest object waiting for a repair round.
func (s *sender) sendBacklog(ctx context.Context) error {
	o := s.backlog.Next(0)
	if o < 0 {
		s.backlogN = 0
		return nil
	}
	s.backlog.Remove(o)
	s.backlogN--
	buf, err := s.readObject(uint32(o), s.rbuf)
	if err != nil {
		return err
	}
	s.rbuf = buf[:0]
	return s.sendObject(ctx, uint32(o), buf, true)
}

// sendObject sends every block of object o: data symbols, then the
// proactive parity.
func (s *sender) sendObject(ctx context.Context, o uint32, buf []byte, repair bool) error {
	n := int(s.objs[o].length)
	if repair {
		s.lastWhole[o] = time.Now() // NACKs for blocks on their way are moot
	}
	for b := range s.g.blocks(n) {
		if err := s.sendBlock(ctx, o, buf, b, s.g.parityFor(s.g.blockK(n, b)), repair); err != nil {
			return err
		}
	}
	if repair {
		s.lastWhole[o] = time.Now()
	}
	return nil
}

// sendBlock sends block b's data symbols and then parity rows [0, p).
func (s *sender) sendBlock(ctx context.Context, o uint32, buf []byte, b, p int, repair bool) error {
	ob := s.objs[o]
	n := int(ob.length)
	k := s.g.blockK(n, b)
	d := dataHdr{object: o, chunk: ob.chunk, frameLen: ob.length, block: uint16(b), k: uint8(k), repair: repair}
	for i := range k {
		off := (b*s.g.k + i) * s.g.sym
		d.index = uint8(i)
		d.plen = uint16(min(s.g.sym, n-off))
		if err := s.sendSymbol(ctx, &d, buf[off:off+int(d.plen)]); err != nil {
			return err
		}
	}
	if p > 0 {
		return s.sendParity(ctx, o, buf, b, 0, p, repair)
	}
	return nil
}

// sendParity sends parity rows [j0, j0+count) of block b.
func (s *sender) sendParity(ctx context.Context, o uint32, buf []byte, b, j0, count int, repair bool) error {
	ob := s.objs[o]
	n := int(ob.length)
	k := s.g.blockK(n, b)
	data := make([][]byte, k)
	for i := range data {
		off := (b*s.g.k + i) * s.g.sym
		data[i] = buf[off : off+s.g.sym]
	}
	for len(s.shards) < count {
		s.shards = append(s.shards, make([]byte, s.g.sym))
	}
	out := s.shards[:count]
	if err := s.cs.encodeParity(data, j0, out); err != nil {
		return err
	}
	d := dataHdr{object: o, chunk: ob.chunk, frameLen: ob.length, block: uint16(b), k: uint8(k), plen: uint16(s.g.sym), repair: repair}
	for i := range count {
		d.index = uint8(k + j0 + i)
		if err := s.sendSymbol(ctx, &d, out[i]); err != nil {
			return err
		}
		if !repair {
			s.parity++
		}
	}
	return nil
}

func (s *sender) sendSymbol(ctx context.Context, d *dataHdr, payload []byte) error {
	d.seq = s.seq
	s.seq++
	b := s.pkt[:dataHdrLen]
	d.put(b, s.session, s.tag)
	b = s.sig.seal(append(b, payload...))
	if err := s.pace.take(ctx, len(b)+28); err != nil {
		return err
	}
	if err := s.write(b, s.ep.group); err != nil {
		return err
	}
	s.packets++
	s.bytes += int64(len(b))
	s.tickBytes += int64(len(b))
	if d.repair {
		s.repairPkts++
	}
	// Stay responsive during long objects: control messages and ticks.
	if s.packets&63 == 0 {
		s.drainControl()
		if now := time.Now(); !now.Before(s.nextAnnounce) {
			s.sendAnnounce(now)
		}
	}
	return nil
}

// housekeep runs every tick: timeouts, rate control, progress, and the
// decisions to start and to stop.
func (s *sender) housekeep(now time.Time) (stop bool, err error) {
	s.nextTick = now.Add(tickInterval)
	if !s.tickAt.IsZero() {
		if dt := now.Sub(s.tickAt).Seconds(); dt > 0 {
			s.sentRate = float64(s.tickBytes) / dt
		}
	}
	s.tickAt, s.tickBytes = now, 0

	if !now.Before(s.nextPrune) {
		s.prune()
		s.nextPrune = now.Add(2 * time.Second)
	}
	active, finished := 0, 0
	var worst uint32
	for _, id := range s.order {
		r := s.rx[id]
		if r.final {
			finished++
			continue
		}
		switch {
		case now.Sub(r.lastHeard) > s.opt.ReceiverTimeout:
			s.giveUp(r, "lost", fmt.Sprintf("silent for %s", now.Sub(r.lastHeard).Round(time.Second)))
			finished++
			continue
		case s.phase == stateRepairing && now.Sub(r.lastProgress) > s.opt.StallTimeout && now.Sub(s.passEnd) > s.opt.StallTimeout:
			s.giveUp(r, "stalled", fmt.Sprintf("no progress for %s", now.Sub(r.lastProgress).Round(time.Second)))
			finished++
			continue
		}
		active++
		if now.Sub(r.lossAt) < 3*statusInterval && r.state == rxReceiving {
			worst = max(worst, r.lossPPM)
		}
	}
	switch s.phase {
	case stateWaiting:
		n := len(s.rx)
		if n >= s.opt.MinReceivers || (!s.maxWaitAt.IsZero() && !now.Before(s.maxWaitAt) && n > 0) {
			s.phase = stateSending
			s.nextAnnounce = now
			s.log.Info("starting", "receivers", n)
			if len(s.objs) == 0 {
				s.endPass(now)
			}
		} else if !s.maxWaitAt.IsZero() && !now.Before(s.maxWaitAt) {
			return true, ErrNoReceivers
		}
	case stateSending, stateRepairing:
		before := s.rate.rate
		s.pace.setRate(s.rate.update(now, float64(worst)/1e6, s.sentRate))
		if s.rate.rate != before {
			s.log.Debug("rate", "from", int64(before), "to", int64(s.rate.rate), "loss", float64(worst)/1e6, "sent", int64(s.sentRate))
		}
		if active == 0 && len(s.rx) > 0 {
			return true, nil // everyone reported or was given up
		}
	}
	s.prog.Update(Stats{Phase: phaseName(s.phase), Done: s.passDone(), Total: s.passBytes, Rate: s.sentRate,
		Receivers: len(s.rx), Finished: finished, Repairs: s.repairPkts, LossPct: float64(worst) / 1e4})
	return false, nil
}

// prune forgets repair bookkeeping for objects every active receiver
// already has: it would otherwise grow with the image on a lossy network.
func (s *sender) prune() {
	low := s.g.objects
	for _, r := range s.rx {
		if !r.final {
			low = min(low, r.low)
		}
	}
	for k := range s.lastRepair {
		if k.object < low {
			delete(s.lastRepair, k)
		}
	}
	for k := range s.nextParity {
		if k.object < low {
			delete(s.nextParity, k)
		}
	}
	for o := range s.lastWhole {
		if o < low {
			delete(s.lastWhole, o)
		}
	}
}

func (s *sender) passDone() int64 {
	if s.phase >= stateRepairing {
		return s.passBytes
	}
	return s.passSent
}

func phaseName(p uint8) string {
	return [...]string{"", "waiting", "sending", "repairing", "done", "aborted"}[p]
}

func (s *sender) giveUp(r *rxState, result, msg string) {
	r.final = true
	r.report.Result = result
	r.report.Message = msg
	r.report.BytesWritten = int64(r.written)
	s.log.Warn("receiver given up", "addr", r.addr, "result", result, "reason", msg)
}

func (s *sender) finish(r *rxState, d *done) {
	r.final = true
	r.written = d.written
	rep := &r.report
	rep.BytesWritten = int64(d.written)
	rep.Message = d.message
	rep.MissingCount = int64(d.failed)
	switch d.result {
	case resultOK:
		rep.Result, rep.OK = "ok", true
	case resultMismatch:
		rep.Result = "mismatch"
		for _, sp := range d.ranges {
			rep.Missing = append(rep.Missing, ChunkRange{First: int64(sp.first), Count: int64(sp.count)})
		}
	case resultIncomplete:
		rep.Result = "incomplete"
		rep.Missing = s.objectsToChunks(d.ranges)
	default:
		rep.Result = "error"
	}
	s.log.Info("receiver done", "addr", r.addr, "result", rep.Result)
}

// objectsToChunks turns object ranges into chunk ranges.
func (s *sender) objectsToChunks(spans []span) []ChunkRange {
	var out []ChunkRange
	for _, sp := range spans {
		end := min(int64(sp.first)+int64(sp.count), int64(s.g.frames))
		for o := int64(sp.first); o < end; o++ {
			c := int64(s.objs[o].chunk)
			if l := len(out); l > 0 && out[l-1].First+out[l-1].Count == c {
				out[l-1].Count++
			} else {
				out = append(out, ChunkRange{First: c, Count: 1})
			}
		}
	}
	return out
}

func (s *sender) result(d time.Duration) *SendResult {
	res := &SendResult{
		Session: fmt.Sprintf("%016x", s.session), Image: s.path, Digest: hex.EncodeToString(s.ann.digest[:]),
		Objects: len(s.objs), StoredBytes: s.passBytes, Duration: d, Packets: s.packets, Bytes: s.bytes,
		ParityPackets: s.parity, RepairPackets: s.repairPkts, RateDecreases: s.rate.decreases,
		FinalRate: int64(s.rate.rate), Dropped: s.drops.snapshot(),
	}
	if !s.passEnd.IsZero() {
		res.PassDuration = s.passEnd.Sub(s.started)
	}
	for _, id := range s.order {
		r := s.rx[id]
		if !r.final {
			s.giveUp(r, "lost", "session ended before it reported")
		}
		r.report.Retransmissions = r.requested
		r.report.LossPct = float64(r.lossPPM) / 1e4
		if r.report.BytesWritten == 0 {
			r.report.BytesWritten = int64(r.written)
		}
		res.Receivers = append(res.Receivers, r.report)
	}
	return res
}
