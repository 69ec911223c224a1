package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// progressBar prints bytes, rate and ETA on one terminal line. It is a
// cloneio.Progress and an imagefmt.Progress.
type progressBar struct {
	mu    sync.Mutex
	w     io.Writer
	label string
	total int64
	done  int64
	start time.Time
	last  time.Time
}

// newProgress returns a progress bar when stderr is a terminal and -q is
// not set, else nil (callers pass nil on: the libraries treat it as no-op).
func newProgress(cmd *cobra.Command, label string) *progressBar {
	if q, _ := cmd.Flags().GetBool("quiet"); q {
		return nil
	}
	if !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil
	}
	return &progressBar{w: os.Stderr, label: label, start: time.Now()}
}

func (p *progressBar) Start(total int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.total, p.start = total, time.Now()
	p.mu.Unlock()
}

func (p *progressBar) Add(n int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	if now := time.Now(); now.Sub(p.last) >= 200*time.Millisecond {
		p.last = now
		p.draw(now)
	}
}

func (p *progressBar) draw(now time.Time) {
	el := now.Sub(p.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(p.done) / el
	}
	line := fmt.Sprintf("%s %s", p.label, humanBytes(p.done))
	if p.total > 0 {
		pct := float64(p.done) * 100 / float64(p.total)
		line += fmt.Sprintf(" / %s (%.0f%%)", humanBytes(p.total), pct)
	}
	line += fmt.Sprintf("  %s/s", humanBytes(int64(rate)))
	if p.total > 0 && rate > 0 && p.done < p.total {
		eta := time.Duration(float64(p.total-p.done) / rate * float64(time.Second))
		line += "  ETA " + eta.Round(time.Second).String()
	}
	fmt.Fprintf(p.w, "\r\033[K%s", line)
}

// Finish clears the progress line.
func (p *progressBar) Finish() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprint(p.w, "\r\033[K")
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
