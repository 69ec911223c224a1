package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/dimg-project/dimg/internal/progress"
)

// TestProgressBar draws the phase, the counts of the total, a rate, the
// time left and the note, and clears its line at the end; a nil bar (no
// terminal, or -q) is a valid Reporter that draws nothing.
func TestProgressBar(t *testing.T) {
	var out bytes.Buffer
	p := &progressBar{w: &out, label: "receive"}
	p.Start("receiving", 4<<20)
	p.rateAt = time.Now().Add(-time.Second) // as if a second had passed
	p.last = time.Time{}
	p.Add(1 << 20)
	progress.Note(p, "loss 0.4%")
	p.last = time.Time{}
	p.Add(0)
	line := out.String()
	line = line[strings.LastIndex(line, "\r\033[K")+4:]
	for _, want := range []string{"receive receiving: 1.0 MiB / 4.0 MiB (25%)", "/s", "ETA", "loss 0.4%"} {
		if !strings.Contains(line, want) {
			t.Errorf("line %q lacks %q", line, want)
		}
	}
	p.Finish()
	if !strings.HasSuffix(out.String(), "\r\033[K") {
		t.Error("Finish did not clear the line")
	}

	var none *progressBar
	var r progress.Reporter = none
	r.Start("x", 1)
	r.Add(1)
	progress.Note(r, "y")
	none.Finish()
}
