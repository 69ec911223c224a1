package cloneio

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/dimg-project/dimg/imagefmt"
	"github.com/dimg-project/dimg/internal/bitset"
	"github.com/dimg-project/dimg/internal/progress"
)

// ErrVerify is wrapped when a target does not read back as written.
var ErrVerify = errors.New("cloneio: target verification failed")

// ChunkRange is a run of chunk numbers [First, First+Count).
type ChunkRange struct {
	First int64 `json:"first"`
	Count int64 `json:"count"`
}

// VerifyError says which chunks of a target did not read back as written.
// It wraps ErrVerify.
type VerifyError struct {
	Bad    []ChunkRange // the chunks that differ, in disk order
	Count  int64        // how many chunks differ
	Digest [32]byte     // the image digest of what the target holds
	first  []error      // the first differences, for the message
}

// maxVerifyDetails bounds the differences a VerifyError names one by one.
const maxVerifyDetails = 20

func (e *VerifyError) Error() string {
	var b strings.Builder
	b.WriteString(ErrVerify.Error() + ": ")
	if e.Count == 0 {
		b.WriteString("the chunks read back do not add up to the image digest")
	}
	for i, err := range e.first {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(err.Error())
	}
	if more := e.Count - int64(len(e.first)); more > 0 {
		fmt.Fprintf(&b, "\n... and %d more", more)
	}
	return b.String()
}

func (e *VerifyError) Unwrap() error { return ErrVerify }

func (e *VerifyError) add(c int64, err error) {
	e.Count++
	if len(e.first) < maxVerifyDetails {
		e.first = append(e.first, err)
	}
	if l := len(e.Bad); l > 0 && e.Bad[l-1].First+e.Bad[l-1].Count == c {
		e.Bad[l-1].Count++
	} else {
		e.Bad = append(e.Bad, ChunkRange{c, 1})
	}
}

// verifyBatch is how many chunks Verify reads between digest updates.
const verifyBatch = 64

// Verify is the one read-back check of a written disk. It flushes the
// target and drops it from the page cache, then reads back the stored
// chunks (each must match its kept sum) and the zero runs (each must be
// zeros) and recomputes the image digest of what it read, which must be
// want. Unused chunks are not read: a device may hold anything there, and
// they count as zeros, as in the image. Holes of a file target are zeros
// without a read, and chunks VerifyAhead already checked are not read
// again. It returns the digest of the target; a mismatch is a
// *VerifyError. prog (nil: none) gets a "verifying" phase. Call after
// Finish, and after stopping VerifyAhead.
func (w *ChunkWriter) Verify(ctx context.Context, want [32]byte, prog progress.Reporter) ([32]byte, error) {
	if !w.finished {
		return [32]byte{}, errors.New("cloneio: Verify before Finish")
	}
	if err := w.t.Sync(); err != nil {
		return [32]byte{}, err
	}
	prog = progress.Or(prog)
	prog.Start("verifying", w.t.diskSize)
	type check struct {
		kind       imagefmt.ChunkState
		want, have [32]byte
		read       bool // have must be read from the target
		err        error
	}
	var (
		checks  [verifyBatch]check
		dg      = imagefmt.NewDigester(w.header())
		bad     = &VerifyError{}
		si, ri  int // cursors into w.sums and w.runs
		workers = max(1, min(runtime.GOMAXPROCS(0), 4))
		bufs    = make([][]byte, workers)
	)
	for i := range bufs {
		bufs[i] = make([]byte, w.cs)
	}
	for c0 := int64(0); c0 < w.n; c0 += verifyBatch {
		if err := ctx.Err(); err != nil {
			return [32]byte{}, err
		}
		m := int(min(verifyBatch, w.n-c0))
		for i := range m {
			c := c0 + int64(i)
			ck := check{kind: imagefmt.ChunkUnused}
			for si < len(w.sums) && w.sums[si].chunk < c {
				si++
			}
			for ri < len(w.runs) && w.runs[ri].Start+w.runs[ri].Count <= c {
				ri++
			}
			switch {
			case si < len(w.sums) && w.sums[si].chunk == c:
				ck.kind, ck.want = imagefmt.ChunkStored, w.sums[si].sum
				ck.have, ck.read = ck.want, w.checked == nil || !w.checked.Test(c)
			case ri < len(w.runs) && w.runs[ri].Start <= c:
				ck.kind, ck.want, ck.read = imagefmt.ChunkZero, dg.ZeroChunkSum(c), true
			}
			checks[i] = ck
		}
		var wg sync.WaitGroup
		for k := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := k; i < m; i += workers {
					ck := &checks[i]
					if !ck.read {
						continue
					}
					c := c0 + int64(i)
					off, l := c*w.cs, w.ChunkLen(c)
					if hole, err := w.t.IsHole(off, l); err == nil && hole {
						ck.have = dg.ZeroChunkSum(c)
						continue
					}
					b := bufs[k][:l]
					if _, err := w.t.ReadAt(b, off); err != nil {
						ck.err = err
						continue
					}
					ck.have = sha256.Sum256(b)
				}
			}()
		}
		wg.Wait()
		for i := range m {
			c, ck := c0+int64(i), &checks[i]
			prog.Add(w.ChunkLen(c))
			if ck.kind == imagefmt.ChunkUnused {
				continue
			}
			off, l := c*w.cs, w.ChunkLen(c)
			var why error
			switch {
			case ck.err != nil:
				why = ck.err
			case ck.have == ck.want:
			case ck.kind == imagefmt.ChunkZero:
				why = errors.New("not zero")
			default:
				why = errors.New("content differs from the image")
			}
			if why != nil {
				bad.add(c, fmt.Errorf("chunk %d (disk bytes %d-%d): %w", c, off, off+l-1, why))
			}
			if ck.err == nil {
				if err := dg.Add(c, ck.have); err != nil {
					return [32]byte{}, err
				}
			}
		}
	}
	bad.Digest = dg.Sum()
	if bad.Count > 0 || bad.Digest != want {
		return bad.Digest, bad
	}
	return bad.Digest, nil
}

// Streaming verification: while something else (the network) is the
// bottleneck, chunks already written are flushed, dropped from the page
// cache and read back in batches, so that Verify at the end reads only the
// last ones and the zero runs. Each chunk is written once, so a sum taken
// early stays true.
const (
	aheadBatch = 32 << 20        // bytes written that start a batch
	aheadAge   = 2 * time.Second // or this long since the last batch
)

// VerifyAhead reads back written chunks in the background until stop is
// called (stop waits for it). A chunk that reads back wrong is left for
// Verify to report. Call before the first WriteChunk.
func (w *ChunkWriter) VerifyAhead(ctx context.Context) (stop func()) {
	w.mu.Lock()
	w.checked = bitset.New(w.n)
	w.mu.Unlock()
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		buf := make([]byte, w.cs)
		last := time.Now()
		for {
			select {
			case <-t.C:
			case <-quit:
				return
			case <-ctx.Done():
				return
			}
			w.mu.Lock()
			if len(w.ahead) == 0 || w.aheadLen < aheadBatch && time.Since(last) < aheadAge {
				w.mu.Unlock()
				continue
			}
			batch := w.ahead
			w.ahead, w.aheadLen, last = nil, 0, time.Now()
			w.mu.Unlock()
			if w.t.Sync() != nil {
				continue // Verify reads them and reports
			}
			for _, s := range batch {
				select {
				case <-quit:
					return
				default:
				}
				b := buf[:w.ChunkLen(s.chunk)]
				if _, err := w.t.ReadAt(b, s.chunk*w.cs); err != nil || sha256.Sum256(b) != s.sum {
					continue // Verify reads it again and reports it
				}
				w.mu.Lock()
				w.checked.Add(s.chunk)
				w.mu.Unlock()
			}
		}
	}()
	return sync.OnceFunc(func() {
		close(quit)
		<-done
	})
}
