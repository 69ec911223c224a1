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
	if got > 1.1*(4<<20) || got < 0.8*(4<<20) {
		t.Fatalf("paced at %.0f B/s, want %d", got, 4<<20)
	}
}
