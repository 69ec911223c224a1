package multicast

import (
	"context"
	"testing"
	"time"
)

func TestPacerRate(t *testing.T) {
	var p pacer
	p.setRate(4 << 20)
	start := time.Now()
	total := 0
	for total < 2<<20 {
		if err := p.take(context.Background(), 1500); err != nil {
			t.Fatal(err)
		}
		total += 1500
	}
	el := time.Since(start).Seconds()
	got := float64(total) / el
	// Never faster than the rate; slower only when this loaded host
	// starves the goroutine (descheduled time counts as idle).
	if got > 1.05*(4<<20) || got < 0.5*(4<<20) {
		t.Fatalf("paced at %.0f B/s, want %d", got, 4<<20)
	}
}

func TestAIMD(t *testing.T) {
	now := time.Unix(1000, 0)
	a := newAIMD(100<<20, 0.05, 400*time.Millisecond)
	step := func(loss, sent float64) float64 {
		now = now.Add(500 * time.Millisecond)
		return a.update(now, loss, sent)
	}
	if r := step(0.01, 100<<20); r != 100<<20 {
		t.Fatalf("random loss below the threshold changed the rate: %v", r)
	}
	if r := step(0.2, 80<<20); r != 0.75*(80<<20) {
		t.Fatalf("congestion: rate %v, want 3/4 of what was sent", r)
	}
	for range 200 {
		step(0.5, 1)
	}
	if a.rate != a.min {
		t.Fatalf("rate %v fell below the floor %v", a.rate, a.min)
	}
	for range 100 {
		step(0, a.rate)
	}
	if a.rate != 100<<20 {
		t.Fatalf("rate %v did not recover to the limit", a.rate)
	}
	u := newAIMD(0, 0.05, 0)
	if r := u.update(now, 0.3, 50<<20); r != 0.75*(50<<20) {
		t.Fatalf("unlimited sender: first congestion sets %v", r)
	}
}
