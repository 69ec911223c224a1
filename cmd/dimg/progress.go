package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/dimg-project/dimg/internal/progress"
)

// progressBar is the command line's one progress renderer: a
// progress.Reporter (and Noter) that draws the command, the phase, bytes
// done of the total, a recent rate, the time left and the library's note
// on one terminal line:
//
//	receive receiving: 1.2 GiB / 4.0 GiB (30%)  96.3 MiB/s  ETA 30s  loss 0.4%
//
// A nil *progressBar is a valid Reporter that draws nothing.
type progressBar struct {
	mu    sync.Mutex
	w     io.Writer
	label string
	phase string
	note  string
	total int64
	done  int64
	drawn bool
	last  time.Time // last draw
	// rate is smoothed over a few seconds from the counts at each draw.
	rate     float64
	rateAt   time.Time
	rateDone int64
}

// drawEvery bounds how often the line is redrawn.
const drawEvery = 200 * time.Millisecond

// rateWindow is the time constant of the rate's smoothing: long enough for
// a steady ETA, short enough to follow a network that slows down.
const rateWindow = 3 * time.Second

var (
	_ progress.Reporter = (*progressBar)(nil)
	_ progress.Noter    = (*progressBar)(nil)
)

// newProgress returns a progress bar when stderr is a terminal and -q is
// not set, else nil (which draws nothing).
func newProgress(cmd *cobra.Command, label string) *progressBar {
	if q, _ := cmd.Flags().GetBool("quiet"); q || !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil
	}
	p := &progressBar{w: os.Stderr, label: label}
	remoteFetch.attach(p) // an image read over the network shows what it fetched
	return p
}

// Start begins a phase: the count, the rate and the note start over.
func (p *progressBar) Start(phase string, total int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	p.phase, p.total, p.done, p.note = phase, total, 0, ""
	p.rate, p.rateAt, p.rateDone = 0, now, 0
	p.draw(now)
}

// Add counts n more bytes done.
func (p *progressBar) Add(n int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	if now := time.Now(); now.Sub(p.last) >= drawEvery {
		p.draw(now)
	}
}

// Note shows status beside the counts until the next note.
func (p *progressBar) Note(status string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.note = status
	if now := time.Now(); now.Sub(p.last) >= drawEvery {
		p.draw(now)
	}
}

func (p *progressBar) draw(now time.Time) {
	p.last = now
	if dt := now.Sub(p.rateAt); dt >= drawEvery {
		inst := float64(p.done-p.rateDone) / dt.Seconds()
		if p.rate == 0 {
			p.rate = inst
		} else {
			p.rate += (inst - p.rate) * (1 - math.Exp(-dt.Seconds()/rateWindow.Seconds()))
		}
		p.rateAt, p.rateDone = now, p.done
	}
	line := p.label
	if p.phase != "" {
		line += " " + p.phase
	}
	line += ": " + humanBytes(p.done)
	if p.total > 0 {
		line += fmt.Sprintf(" / %s (%.0f%%)", humanBytes(p.total), float64(p.done)*100/float64(p.total))
	}
	if p.rate > 0 {
		line += fmt.Sprintf("  %s/s", humanBytes(int64(p.rate)))
		if eta := time.Duration(float64(p.total-p.done) / p.rate * float64(time.Second)).Round(time.Second); eta > 0 {
			line += "  ETA " + eta.String()
		}
	}
	if p.note != "" {
		line += "  " + p.note
	}
	fmt.Fprintf(p.w, "\r\033[K%s", line)
	p.drawn = true
}

// Finish clears the progress line.
func (p *progressBar) Finish() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
