package multicast

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/dimg-project/dimg/cloneio"
	"github.com/dimg-project/dimg/imagefmt"
	"github.com/dimg-project/dimg/internal/progress"
)

// SendOptions configure Send. The zero value of every field is a default.
type SendOptions struct {
	// Image, if set, is the opened image to send (a commit of it, a delta
	// chain: the disk it shows); the path argument then only names it.
	// Send does not close it.
	Image     *imagefmt.Reader
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
	// Progress is told of the phases "waiting", "sending" (bytes of the
	// pass) and "repairing" (bytes sent), with the receivers as a note.
	Progress progress.Reporter
	Logger   *slog.Logger
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
	defaultRxTimeout = 10 * time.Second
	defaultStall     = 60 * time.Second
)

// Send multicasts the image at path (or opt.Image) to every receiver that joins, repairs
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
	img := opt.Image
	if img == nil {
		if img, err = imagefmt.OpenChain(path, imagefmt.ReaderOptions{}); err != nil {
			return nil, fmt.Errorf("multicast: %w", err)
		}
		defer img.Close()
	}
	hdr := img.Header()
	if hdr.ChunkSize < minChunkSize || hdr.ChunkSize > maxChunkSize {
		return nil, fmt.Errorf("multicast: chunk size %d not supported", hdr.ChunkSize)
	}
	src, err := newObjectSource(img)
	if err != nil {
		return nil, err
	}
	session := opt.SessionID
	if session == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		session = binary.BigEndian.Uint64(b[:]) | 1
	}
	s := &sender{opt: opt, log: opt.Logger, prog: opt.Progress, path: path, src: src,
		ctrl: &controlQueue{ch: make(chan ctrlMsg, 4096)}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.prog = progress.Or(s.prog)
	s.rs = &roster{log: s.log, rx: map[uint64]*rxState{}}
	digest := img.Digest()
	s.g = geometry{sym: sym, k: opt.FEC.block(), p: opt.FEC.Parity, objects: uint32(len(src.objs)), frames: src.frames,
		chunkSize: hdr.ChunkSize, numChunks: hdr.NumChunks()}
	src.g = &s.g
	s.ann = announce{imageVersion: uint8(hdr.Version), symSize: sym, k: s.g.k, p: s.g.p, objects: s.g.objects, frames: src.frames, sectorSize: hdr.SectorSize,
		chunkSize: hdr.ChunkSize, diskSize: hdr.DiskSize, uuid: hdr.UUID, digest: digest, bytes: uint64(src.bytes)}
	s.rq = newRepairQueue(&s.g, src)
	conn, err := openSenderSocket(ep, opt.TTL)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	s.tx = &transmitter{conn: conn, sig: newSigner(opt.Key), group: ep.group, session: session, tag: [8]byte(digest[:8]),
		g: &s.g, src: src, rate: newAIMD(opt.MaxRate, opt.LossThreshold, 2*statusInterval), pkt: make([]byte, 0, maxDatagram)}
	s.tx.pace.setRate(s.tx.rate.rate)
	// Stay responsive during long objects: control messages and
	// announcements between packets.
	s.tx.every = func() {
		s.drainControl()
		if now := time.Now(); !now.Before(s.nextAnnounce) {
			s.sendAnnounce(now)
		}
	}
	return s.run(ctx)
}

func outcome(res *SendResult) error {
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

func (s *sender) result(d time.Duration) *SendResult {
	tx := s.tx
	res := &SendResult{
		Session: fmt.Sprintf("%016x", tx.session), Image: s.path, Digest: hex.EncodeToString(s.ann.digest[:]),
		Objects: len(s.src.objs), StoredBytes: s.src.bytes, Duration: d, Packets: tx.packets, Bytes: tx.bytes,
		ParityPackets: tx.parity, RepairPackets: tx.repairs, RateDecreases: tx.rate.decreases,
		FinalRate: int64(tx.rate.rate), Dropped: s.ctrl.drops.snapshot(), Receivers: s.rs.reports(),
	}
	if !s.passEnd.IsZero() {
		res.PassDuration = s.passEnd.Sub(s.started)
	}
	return res
}
