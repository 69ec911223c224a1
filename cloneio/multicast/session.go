package multicast

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// link is a receiver's connection to one session: the group socket it
// hears announcements and data on, the unicast socket it answers the
// sender on, and who it is. find locks it onto a session.
type link struct {
	ep      endpoint
	data    *net.UDPConn // the group: announcements and data
	reply   *net.UDPConn // unicast to and from the sender
	key     []byte
	sig     *signer // the main goroutine only
	id      uint64  // this receiver
	session uint64
	tag     [8]byte
	sender  netip.AddrPort
	out     []byte          // datagrams built
	events  chan replyEvent // the sender's answers, from readReplies
	drops   dropCounters
}

// replyEvent is an answer of the sender to this receiver.
type replyEvent struct {
	typ uint8 // pktWelcome or pktDoneAck
	id  uint64
}

// find waits (at most wait; 0: until ctx ends) for an announcement of a
// running session — of session only, unless 0 — and locks onto it.
func (l *link) find(ctx context.Context, wait time.Duration, session uint64, pkt []byte) (*announce, error) {
	var deadline time.Time
	if wait > 0 {
		deadline = time.Now().Add(wait)
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			d := l.drops.snapshot()
			hint := ""
			switch {
			case d.BadAuth > 0:
				hint = fmt.Sprintf(" (%d packets failed authentication: wrong or missing --key?)", d.BadAuth)
			case d.Malformed > 0:
				hint = fmt.Sprintf(" (%d malformed packets)", d.Malformed)
			}
			return nil, fmt.Errorf("%w on %s within %s%s", ErrNoSession, l.ep.group, wait, hint)
		}
		l.data.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, from, err := l.data.ReadFromUDPAddrPort(pkt)
		if err != nil {
			if isTimeout(err) {
				continue
			}
			return nil, fmt.Errorf("multicast: receive: %w", err)
		}
		h, body, err := l.sig.open(pkt[:n])
		if err != nil {
			l.drops.count(err)
			continue
		}
		if h.typ != pktAnnounce {
			continue // a session already running: wait for its next announcement
		}
		a, err := parseAnnounce(h, body)
		if err != nil {
			l.drops.count(err)
			continue
		}
		if session != 0 && h.session != session || a.state >= stateFinished {
			l.drops.foreign.Add(1)
			continue
		}
		l.session, l.tag, l.sender = h.session, h.digestTag, from
		return a, nil
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// open authenticates a datagram of the group and checks that it belongs
// to this session.
func (l *link) open(p []byte) (header, []byte, error) {
	h, body, err := l.sig.open(p)
	if err == nil && (h.session != l.session || h.digestTag != l.tag) {
		err = errForeign
	}
	return h, body, err
}

// readReplies receives the sender's unicast answers until the socket
// closes.
func (l *link) readReplies() {
	sig := newSigner(l.key)
	buf := make([]byte, 2048)
	for {
		n, _, err := l.reply.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		h, body, err := sig.open(buf[:n])
		if err == nil && (h.session != l.session || h.digestTag != l.tag) {
			err = errForeign
		}
		if err != nil {
			l.drops.count(err)
			continue
		}
		id, err := parseID(body)
		if err != nil || id != l.id || (h.typ != pktWelcome && h.typ != pktDoneAck) {
			l.drops.malformed.Add(1)
			continue
		}
		select {
		case l.events <- replyEvent{h.typ, id}:
		default:
		}
	}
}

// send seals b and sends it to the sender; lost replies are repeated by
// the protocol, so errors are not reported.
func (l *link) send(b []byte) {
	_, _ = l.reply.WriteToUDPAddrPort(l.sig.seal(b), l.sender)
}

func (l *link) hello(name string) {
	m := hello{id: l.id, name: name}
	l.send(m.marshal(l.out, l.session, l.tag))
}

// report sends DONE until the sender acknowledges it (or gives up after
// a few seconds; a sender that already ended gets three tries). room is
// the datagram room for the list of failed ranges.
func (l *link) report(ctx context.Context, d *done, senderEnded bool, room int) bool {
	tries := 15
	if senderEnded {
		tries = 3
	}
	t := time.NewTicker(300 * time.Millisecond)
	defer t.Stop()
	for range tries {
		l.send(d.marshal(l.out, l.session, l.tag, room))
	wait:
		for {
			select {
			case ev := <-l.events:
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

// passState is what a receiver knows of the sender's progress, from its
// announcements and data.
type passState struct {
	edge, prevEdge position  // the furthest (object, block) seen from the pass
	done           bool      // the pass is over: what is missing was lost
	ended          uint8     // stateFinished or stateAborted once the sender said so
	lastHeard      time.Time // the sender's last packet
	welcomed       bool      // the sender answered HELLO
}

// announce takes in an announcement.
func (p *passState) announce(a *announce) {
	if a.state >= stateRepairing {
		p.done = true
	}
	if a.state >= stateFinished {
		p.ended = a.state
	}
	if q := (position{a.cursor, 0}); p.edge.less(q) {
		p.edge = q
	}
}
