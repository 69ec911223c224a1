package multicast

import (
	"context"
	"time"
)

// packet handles one datagram from the group: an announcement updates
// what the receiver knows of the pass, a data symbol goes to the
// assembler, and a complete object to the writers.
func (r *receiver) packet(ctx context.Context, p []byte) error {
	h, body, err := r.link.open(p)
	if err != nil {
		r.link.drops.count(err)
		return nil
	}
	switch h.typ {
	case pktAnnounce:
		a, err := parseAnnounce(h, body)
		if err != nil {
			r.link.drops.count(err)
			return nil
		}
		if a.digest != r.ann.digest || a.objects != r.ann.objects || a.diskSize != r.ann.diskSize ||
			a.chunkSize != r.ann.chunkSize || a.symSize != r.ann.symSize || a.k != r.ann.k {
			r.link.drops.foreign.Add(1)
			return nil
		}
		r.pass.lastHeard = time.Now()
		r.pass.announce(a)
	case pktData:
		d, payload, err := parseData(body, &r.g)
		if err != nil {
			r.link.drops.count(err)
			return nil
		}
		if r.opt.dropData != nil && r.opt.dropData(&d) {
			return nil
		}
		r.pass.lastHeard = time.Now()
		r.loss.count(d.seq)
		if d.repair {
			r.res.RepairPackets++
		} else if q := (position{d.object, d.block}); r.pass.edge.less(q) {
			r.pass.edge = q
		}
		o, err := r.asm.add(&d, payload)
		if err != nil {
			r.link.drops.count(err)
			return nil
		}
		if o != nil {
			return r.wq.submit(ctx, writeJob{obj: o.obj, chunk: o.chunk, raw: o.buf[:o.length], p: o}, r.written)
		}
	default:
		r.link.drops.malformed.Add(1)
	}
	return nil
}

// lossMeter follows the data packets' sequence numbers: the loss over
// the whole session and a recent loss for the sender's rate control.
type lossMeter struct {
	first, high int64 // first and highest sequence number seen
	have        bool  // any seen
	packets     int64 // data packets received

	tickSeq     int64 // high at the start of the current sample
	tickPackets int64 // packets received in it
	tickAt      time.Time
	ppm         uint32 // recent loss, parts per million
}

// count takes one data packet.
func (m *lossMeter) count(seq uint32) {
	m.packets++
	m.tickPackets++
	if !m.have {
		m.have = true
		m.high = int64(seq)
		m.first, m.tickSeq = m.high, m.high-1
		return
	}
	if d := int32(seq - uint32(m.high)); d > 0 {
		m.high += int64(d)
	}
}

// measure estimates recent loss over samples of at least lossSample
// packets, so that random loss well below the sender's congestion
// threshold does not read as congestion by chance (3% loss measured on
// 500 packets has a standard deviation of 0.8%).
func (m *lossMeter) measure(now time.Time) {
	const lossSample = 500
	expected := m.high - m.tickSeq
	if expected >= lossSample || expected >= 64 && now.Sub(m.tickAt) > time.Second {
		lost := max(0, expected-m.tickPackets)
		m.ppm = uint32(min(lost*1e6/expected, 1e6))
		m.tickSeq, m.tickPackets, m.tickAt = m.high, 0, now
	} else if now.Sub(m.tickAt) > 2*time.Second {
		m.ppm = 0
		m.tickSeq, m.tickPackets, m.tickAt = m.high, 0, now
	}
}

// totalPct is the share of data packets lost over the whole session.
func (m *lossMeter) totalPct() float64 {
	if span := m.high - m.first + 1; m.have && span > 0 {
		return max(0, float64(span-m.packets)) * 100 / float64(span)
	}
	return 0
}

// nacksPerPage is how many NACK entries one STATUS datagram holds.
func (r *receiver) nacksPerPage() int {
	return maxNacks(r.ann.symSize + dataHdrLen + tagLen)
}

// sendStatus sends STATUS datagrams carrying nks (at least one datagram,
// as a heartbeat): what the receiver has, its loss, and what it lacks.
func (r *receiver) sendStatus(state uint8, nks []nack) {
	per := r.nacksPerPage()
	for first := true; first || len(nks) > 0; first = false {
		page := nks[:min(len(nks), per)]
		nks = nks[len(page):]
		r.statusSeq++
		st := status{id: r.link.id, state: state, complete: uint32(r.asm.written), low: uint32(r.asm.low), lossPPM: r.loss.ppm,
			highSeq: uint32(r.loss.high), written: uint64(r.res.BytesWritten), seq: r.statusSeq, nacks: page}
		for _, nk := range page {
			if nk.kind == nackBlock {
				r.res.Requested += int64(nk.need)
			}
		}
		r.link.send(st.marshal(r.link.out, r.link.session, r.link.tag))
	}
}
