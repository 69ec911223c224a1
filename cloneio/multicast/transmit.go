package multicast

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// transmitter puts the sender's packets on the wire: it cuts objects into
// data symbols and parity, seals and paces them, follows the rate the
// receivers' loss allows, and counts what it sent.
type transmitter struct {
	conn    *net.UDPConn
	sig     *signer // the sending goroutine only
	group   netip.AddrPort
	session uint64
	tag     [8]byte
	g       *geometry
	src     *objectSource
	cs      codecs
	rate    *aimd
	pace    pacer
	seq     uint32
	pkt     []byte   // the datagram being built
	shards  [][]byte // parity scratch
	// every runs every 64 packets, so that control messages and
	// announcements keep flowing while a long object is sent.
	every func()

	packets, bytes, parity, repairs int64
	tickBytes                       int64
	tickAt                          time.Time
	sentRate                        float64 // bytes/s over the last tick
}

// write sends one datagram, retrying briefly when the kernel is out of
// buffers.
func (t *transmitter) write(b []byte, to netip.AddrPort) error {
	var err error
	for try := range 50 {
		_, err = t.conn.WriteToUDPAddrPort(b, to)
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

// reply seals b and sends it to one receiver.
func (t *transmitter) reply(b []byte, to netip.AddrPort) { t.write(t.sig.seal(b), to) }

// buf is the scratch space for building a control packet.
func (t *transmitter) buf() []byte { return t.pkt[:cap(t.pkt)] }

// sendObject sends every block of object o: data symbols, then the
// proactive parity.
func (t *transmitter) sendObject(ctx context.Context, o uint32, buf []byte, repair bool) error {
	n := int(t.src.objs[o].length)
	for b := range t.g.blocks(n) {
		if err := t.sendBlock(ctx, o, buf, b, t.g.parityFor(t.g.blockK(n, b)), repair); err != nil {
			return err
		}
	}
	return nil
}

// sendBlock sends block b's data symbols and then parity rows [0, p).
func (t *transmitter) sendBlock(ctx context.Context, o uint32, buf []byte, b, p int, repair bool) error {
	ob := t.src.objs[o]
	n := int(ob.length)
	k := t.g.blockK(n, b)
	d := dataHdr{object: o, chunk: ob.chunk, frameLen: ob.length, block: uint16(b), k: uint8(k), repair: repair}
	for i := range k {
		off := (b*t.g.k + i) * t.g.sym
		d.index = uint8(i)
		d.plen = uint16(min(t.g.sym, n-off))
		if err := t.sendSymbol(ctx, &d, buf[off:off+int(d.plen)]); err != nil {
			return err
		}
	}
	if p > 0 {
		return t.sendParity(ctx, o, buf, b, 0, p, repair)
	}
	return nil
}

// sendParity sends parity rows [j0, j0+count) of block b.
func (t *transmitter) sendParity(ctx context.Context, o uint32, buf []byte, b, j0, count int, repair bool) error {
	ob := t.src.objs[o]
	n := int(ob.length)
	k := t.g.blockK(n, b)
	data := make([][]byte, k)
	for i := range data {
		off := (b*t.g.k + i) * t.g.sym
		data[i] = buf[off : off+t.g.sym]
	}
	for len(t.shards) < count {
		t.shards = append(t.shards, make([]byte, t.g.sym))
	}
	out := t.shards[:count]
	if err := t.cs.encodeParity(data, j0, out); err != nil {
		return err
	}
	d := dataHdr{object: o, chunk: ob.chunk, frameLen: ob.length, block: uint16(b), k: uint8(k), plen: uint16(t.g.sym), repair: repair}
	for i := range count {
		d.index = uint8(k + j0 + i)
		if err := t.sendSymbol(ctx, &d, out[i]); err != nil {
			return err
		}
		if !repair {
			t.parity++
		}
	}
	return nil
}

func (t *transmitter) sendSymbol(ctx context.Context, d *dataHdr, payload []byte) error {
	d.seq = t.seq
	t.seq++
	b := t.pkt[:dataHdrLen]
	d.put(b, t.session, t.tag)
	b = t.sig.seal(append(b, payload...))
	if err := t.pace.take(ctx, len(b)+28); err != nil {
		return err
	}
	if err := t.write(b, t.group); err != nil {
		return err
	}
	t.packets++
	t.bytes += int64(len(b))
	t.tickBytes += int64(len(b))
	if d.repair {
		t.repairs++
	}
	if t.packets&63 == 0 && t.every != nil {
		t.every()
	}
	return nil
}

// measure takes the rate sent since the last call.
func (t *transmitter) measure(now time.Time) {
	if !t.tickAt.IsZero() {
		if dt := now.Sub(t.tickAt).Seconds(); dt > 0 {
			t.sentRate = float64(t.tickBytes) / dt
		}
	}
	t.tickAt, t.tickBytes = now, 0
}

// adapt sets the pace from the worst loss (a fraction) receivers report
// and reports whether the rate changed.
func (t *transmitter) adapt(now time.Time, worstLoss float64) (changed bool) {
	before := t.rate.rate
	t.pace.setRate(t.rate.update(now, worstLoss, t.sentRate))
	return t.rate.rate != before
}
