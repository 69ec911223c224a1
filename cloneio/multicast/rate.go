package multicast

import (
	"context"
	"time"
)

// pacer is a token bucket kept as a virtual clock: next is when the
// bytes spent so far are paid for. The sender sleeps only when it is more
// than paceSlack ahead, so packets leave in small bursts. Timers on a
// loaded host wake late by milliseconds; the time overslept is credit the
// next packets spend, so the average rate holds. Only a caller that was
// idle (did not call take for paceBurst) loses credit beyond paceBurst.
type pacer struct {
	rate float64 // bytes/s; 0: unpaced
	next time.Time
	last time.Time // when take last returned
}

const (
	paceSlack = 2 * time.Millisecond
	paceBurst = 10 * time.Millisecond
)

func (p *pacer) setRate(r float64) { p.rate = r }

// take spends n bytes, sleeping as needed.
func (p *pacer) take(ctx context.Context, n int) error {
	if p.rate <= 0 {
		return nil
	}
	now := time.Now()
	if now.Sub(p.last) > paceBurst {
		if floor := now.Add(-paceBurst); p.next.Before(floor) {
			p.next = floor
		}
	}
	p.next = p.next.Add(time.Duration(float64(n) / p.rate * float64(time.Second)))
	defer func() { p.last = time.Now() }()
	wait := p.next.Sub(now)
	if wait <= paceSlack {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// aimd adjusts the rate from receivers' loss reports: multiplicative
// decrease when the worst recent loss exceeds the threshold, additive
// increase back toward the limit otherwise. Random loss below the
// threshold (a lossy link, not a full queue) leaves the rate alone; the
// repair machinery handles it.
type aimd struct {
	max       float64 // bytes/s; 0: no limit
	min       float64
	rate      float64 // current; 0: unpaced (only while max == 0)
	threshold float64 // loss fraction that counts as congestion
	hold      time.Duration
	changed   time.Time
	decreases int
}

func newAIMD(limit int64, threshold float64, hold time.Duration) *aimd {
	a := &aimd{max: float64(limit), rate: float64(limit), threshold: threshold, hold: hold}
	a.min = max(float64(limit)/32, 1<<20)
	if a.max > 0 && a.min > a.max {
		a.min = a.max
	}
	return a
}

// update feeds one interval: the worst loss fraction receivers reported
// and the rate actually sent. It returns the new rate (0: unpaced).
func (a *aimd) update(now time.Time, loss, sent float64) float64 {
	if now.Sub(a.changed) < a.hold {
		return a.rate
	}
	switch {
	case loss > a.threshold:
		base := a.rate
		if base == 0 || (sent > 0 && sent < base) {
			base = sent // the rate that actually caused the loss
		}
		if base > 0 {
			a.rate = max(a.min, base*0.75)
			a.changed = now
			a.decreases++
		}
	case loss < a.threshold/2 && a.rate > 0:
		step := a.max / 32
		if a.max == 0 {
			step = a.rate / 16
		}
		a.rate += max(step, 256<<10)
		if a.max > 0 && a.rate > a.max {
			a.rate = a.max
		}
		a.changed = now
	}
	return a.rate
}
