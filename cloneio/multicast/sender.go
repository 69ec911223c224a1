package multicast

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/dimg-project/dimg/internal/progress"
)

// sender runs one session. Its parts each own their state: the image's
// objects (objectSource), the wire (transmitter), the receivers (roster,
// fed by controlQueue), and what is owed beyond the pass (repairQueue); the
// sender itself owns the phase and the timers of the main loop.
type sender struct {
	opt     SendOptions
	log     *slog.Logger
	prog    progress.Reporter
	path    string
	g       geometry
	ann     announce
	src     *objectSource
	tx      *transmitter
	ctrl    *controlQueue
	rs      *roster
	rq      *repairQueue
	phase   uint8
	cursor  uint32 // next object of the pass
	sent    int64  // bytes of the pass sent
	mark    int64  // transmitter bytes already reported as repairs
	started time.Time
	passEnd time.Time

	nextAnnounce, nextTick, nextPrune, maxWaitAt time.Time
}

func (s *sender) run(ctx context.Context) (*SendResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go s.ctrl.read(s.tx.conn, s.opt.Key, s.tx.session, s.tx.tag)

	start := time.Now()
	s.phase = stateWaiting
	s.prog.Start("waiting", 0)
	if s.opt.MaxWait > 0 {
		s.maxWaitAt = start.Add(s.opt.MaxWait)
	}
	s.log.Info("session announced", "session", fmt.Sprintf("%016x", s.tx.session), "group", s.tx.group,
		"objects", len(s.src.objs), "bytes", s.src.bytes)

	frames := make(chan prefetched, 4)
	free := make(chan []byte, 6)
	for range cap(free) {
		free <- make([]byte, 0, s.src.paddedLen(maxFrameLen(s.g.chunkSize)))
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
			go s.src.prefetch(ctx, frames, free)
		}
		// Repairs first: they unblock receivers' memory and the finish.
		if s.rq.urgent() {
			if err := s.rq.sendRepair(ctx, s.tx); err != nil {
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
				err := s.tx.sendObject(ctx, f.obj, f.buf, false)
				free <- f.buf
				if err != nil {
					runErr = err
					break loop
				}
				s.cursor = f.obj + 1
				s.sent += int64(s.src.objs[f.obj].length)
				s.prog.Add(int64(s.src.objs[f.obj].length))
				if s.cursor == s.g.objects {
					s.endPass(time.Now())
				}
			case <-ctx.Done():
			}
			continue
		}
		if s.rq.backlogN > 0 {
			if err := s.rq.sendBacklog(ctx, s.tx); err != nil {
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
	switch {
	case errors.Is(runErr, ErrNoReceivers):
		return res, fmt.Errorf("%w within %s", ErrNoReceivers, s.opt.MaxWait)
	case runErr != nil:
		return res, fmt.Errorf("multicast: send: %w", runErr)
	}
	return res, outcome(res)
}

func (s *sender) endPass(now time.Time) {
	s.phase = stateRepairing
	s.passEnd = now
	s.prog.Start("repairing", 0)
	s.mark = s.tx.bytes
	s.nextAnnounce = now // tell receivers at once: everything not received is lost
	s.log.Info("first pass complete", "duration", now.Sub(s.started), "backlog", s.rq.backlogN)
}

// idle waits for a control message or the next tick.
func (s *sender) idle(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case m, ok := <-s.ctrl.ch:
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
		case m, ok := <-s.ctrl.ch:
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
	s.ann.rate = uint64(s.tx.rate.rate)
	s.ann.receivers = uint32(len(s.rs.rx))
	b := s.tx.sig.seal(s.ann.marshal(s.tx.buf(), s.tx.session))
	s.tx.write(b, s.tx.group)
	switch s.phase {
	case stateWaiting:
		s.nextAnnounce = now.Add(announceWaiting)
	case stateSending:
		s.nextAnnounce = now.Add(announceSending)
	default:
		s.nextAnnounce = now.Add(announceRepair)
	}
}

// handle acts on one receiver packet: a HELLO is welcomed, a STATUS
// updates the roster and queues its NACKs, a DONE is recorded and acked.
func (s *sender) handle(m ctrlMsg, now time.Time) {
	late := s.phase != stateWaiting
	switch m.typ {
	case pktHello:
		r := s.rs.get(m.hello.id, m.from, now, late)
		r.name = m.hello.name
		if !r.final {
			r.report.Name = r.name
		}
		s.tx.reply(marshalID(s.tx.buf(), pktWelcome, s.tx.session, s.tx.tag, r.id), m.from)
	case pktStatus:
		r := s.rs.get(m.status.id, m.from, now, late)
		if !s.rs.status(r, m.status, now) {
			return
		}
		for _, nk := range m.status.nacks {
			r.requested += s.rq.nack(nk, now)
		}
	case pktDone:
		r := s.rs.get(m.done.id, m.from, now, late)
		if !r.final {
			s.rs.finish(r, m.done, s.src)
		}
		s.tx.reply(marshalID(s.tx.buf(), pktDoneAck, s.tx.session, s.tx.tag, r.id), m.from)
	}
}

// housekeep runs every tick: timeouts, rate control, progress, and the
// decisions to start and to stop.
func (s *sender) housekeep(now time.Time) (stop bool, err error) {
	s.nextTick = now.Add(tickInterval)
	s.tx.measure(now)
	if !now.Before(s.nextPrune) {
		s.rq.prune(s.rs.low(s.g.objects))
		s.nextPrune = now.Add(2 * time.Second)
	}
	var repairing time.Time
	if s.phase == stateRepairing {
		repairing = s.passEnd
	}
	active, finished, worst := s.rs.sweep(now, s.opt.ReceiverTimeout, s.opt.StallTimeout, repairing)
	switch s.phase {
	case stateWaiting:
		n := len(s.rs.rx)
		if n >= s.opt.MinReceivers || (!s.maxWaitAt.IsZero() && !now.Before(s.maxWaitAt) && n > 0) {
			s.phase = stateSending
			s.nextAnnounce = now
			s.log.Info("starting", "receivers", n)
			s.prog.Start("sending", s.src.bytes)
			if len(s.src.objs) == 0 {
				s.endPass(now)
			}
		} else if !s.maxWaitAt.IsZero() && !now.Before(s.maxWaitAt) {
			return true, ErrNoReceivers
		}
	case stateSending, stateRepairing:
		before := s.tx.rate.rate
		if s.tx.adapt(now, float64(worst)/1e6) {
			s.log.Debug("rate", "from", int64(before), "to", int64(s.tx.rate.rate), "loss", float64(worst)/1e6, "sent", int64(s.tx.sentRate))
		}
		if active == 0 && len(s.rs.rx) > 0 {
			return true, nil // everyone reported or was given up
		}
	}
	if s.phase == stateRepairing {
		s.prog.Add(s.tx.bytes - s.mark)
		s.mark = s.tx.bytes
	}
	note := fmt.Sprintf("%d receivers, %d done", len(s.rs.rx), finished)
	if worst > 0 {
		note += fmt.Sprintf(", loss %.1f%%", float64(worst)/1e4)
	}
	if s.tx.repairs > 0 {
		note += fmt.Sprintf(", %d repair packets", s.tx.repairs)
	}
	progress.Note(s.prog, note)
	return false, nil
}
