package multicast

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// ctrlMsg is one receiver packet for the sender's main loop.
type ctrlMsg struct {
	from   netip.AddrPort
	typ    uint8
	hello  *hello
	status *status
	done   *done
}

// controlQueue is the sender's intake of receivers' packets (HELLO, STATUS,
// DONE): a goroutine reads, authenticates and parses them, and queues
// them for the main loop; what it throws away is counted.
type controlQueue struct {
	ch    chan ctrlMsg
	drops dropCounters
}

// read receives receivers' packets until conn closes.
func (c *controlQueue) read(conn *net.UDPConn, key []byte, session uint64, tag [8]byte) {
	sig := newSigner(key)
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				close(c.ch)
				return
			}
			continue // ICMP errors and the like
		}
		h, body, err := sig.open(buf[:n])
		if err == nil && (h.session != session || h.digestTag != tag) {
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
			c.drops.count(err)
			continue
		}
		select {
		case c.ch <- m:
		default:
			c.drops.overflow.Add(1)
		}
	}
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

// roster is the receivers the sender knows, in the order they joined,
// and what each reported.
type roster struct {
	log   *slog.Logger
	rx    map[uint64]*rxState
	order []uint64
}

// get finds or registers a receiver; any packet from it counts as a sign
// of life. late says the pass has started.
func (r *roster) get(id uint64, from netip.AddrPort, now time.Time, late bool) *rxState {
	x, ok := r.rx[id]
	if !ok {
		x = &rxState{id: id, addr: from, late: late, lastProgress: now}
		x.report = ReceiverReport{Address: from.String(), ID: fmt.Sprintf("%016x", id), Late: late}
		r.rx[id] = x
		r.order = append(r.order, id)
		r.log.Info("receiver joined", "addr", from, "id", x.report.ID, "late", late)
	}
	x.addr = from
	x.lastHeard = now
	return x
}

// status records a receiver's STATUS; it reports false for a stale or
// reordered one, whose NACKs are then ignored too.
func (r *roster) status(x *rxState, st *status, now time.Time) bool {
	if x.final || st.seq < x.statusSeq && x.statusSeq-st.seq < 1<<31 {
		return false
	}
	x.statusSeq = st.seq
	if st.complete > x.complete || st.state != x.state || st.written > x.written {
		x.lastProgress = now
	}
	x.state, x.complete, x.written, x.low = st.state, st.complete, st.written, st.low
	x.lossPPM, x.lossAt = st.lossPPM, now
	return true
}

// sweep gives up receivers silent for longer than timeout, or (after the
// pass, when repairing) without progress for longer than stall, and
// returns how many are still active, how many are finished, and the worst
// recent loss the active ones report.
func (r *roster) sweep(now time.Time, timeout, stall time.Duration, repairingSince time.Time) (active, finished int, worst uint32) {
	for _, id := range r.order {
		x := r.rx[id]
		if x.final {
			finished++
			continue
		}
		switch {
		case now.Sub(x.lastHeard) > timeout:
			r.giveUp(x, "lost", fmt.Sprintf("silent for %s", now.Sub(x.lastHeard).Round(time.Second)))
			finished++
			continue
		case !repairingSince.IsZero() && now.Sub(x.lastProgress) > stall && now.Sub(repairingSince) > stall:
			r.giveUp(x, "stalled", fmt.Sprintf("no progress for %s", now.Sub(x.lastProgress).Round(time.Second)))
			finished++
			continue
		}
		active++
		if now.Sub(x.lossAt) < 3*statusInterval && x.state == rxReceiving {
			worst = max(worst, x.lossPPM)
		}
	}
	return active, finished, worst
}

// low is the lowest object an active receiver still lacks (objects if
// none does).
func (r *roster) low(objects uint32) uint32 {
	low := objects
	for _, x := range r.rx {
		if !x.final {
			low = min(low, x.low)
		}
	}
	return low
}

func (r *roster) giveUp(x *rxState, result, msg string) {
	x.final = true
	x.report.Result = result
	x.report.Message = msg
	x.report.BytesWritten = int64(x.written)
	r.log.Warn("receiver given up", "addr", x.addr, "result", result, "reason", msg)
}

// finish records a receiver's DONE; src turns the objects an incomplete
// receiver lacks into chunks.
func (r *roster) finish(x *rxState, d *done, src *objectSource) {
	x.final = true
	x.written = d.written
	rep := &x.report
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
		rep.Missing = src.chunks(d.ranges)
	default:
		rep.Result = "error"
	}
	r.log.Info("receiver done", "addr", x.addr, "result", rep.Result)
}

// reports closes the books: receivers that never reported are lost.
func (r *roster) reports() []ReceiverReport {
	var out []ReceiverReport
	for _, id := range r.order {
		x := r.rx[id]
		if !x.final {
			r.giveUp(x, "lost", "session ended before it reported")
		}
		x.report.Retransmissions = x.requested
		x.report.LossPct = float64(x.lossPPM) / 1e4
		if x.report.BytesWritten == 0 {
			x.report.BytesWritten = int64(x.written)
		}
		out = append(out, x.report)
	}
	return out
}
