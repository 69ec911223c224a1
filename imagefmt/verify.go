package imagefmt

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/dimg-project/dimg/internal/progress"
)

// VerifyResult is what Verify found.
type VerifyResult struct {
	Chunks    int64         // chunks checked (stored and absent)
	Stored    int64         // stored chunks
	Bad       []*ChunkError // chunks that failed, in chunk order
	DigestOK  bool          // every chunk verified and the recomputed digest equals the footer's
	Digest    [32]byte      // the recomputed digest
	BytesRead int64         // image bytes read
	// Index lists damage to a version 2 index tree: nodes that cannot be
	// read or whose hash is not the one their parent records, and (with
	// AllCommits) records a stream reader would refuse.
	Index []error
	// Commits is how many commits were checked (1 unless AllCommits).
	Commits   int
	want      [32]byte // the footer's (version 2: the commit's) digest
	footerOff int64
	commitOff int64 // version 2: the commit record's offset
}

// OK reports whether the image verified clean.
func (v *VerifyResult) OK() bool { return len(v.Bad) == 0 && len(v.Index) == 0 && v.DigestOK }

// Err is nil when the image verified clean; otherwise the first bad
// chunk's *ChunkError, or a *RuleError (rule "digest") when every chunk
// verified but the digest does not match.
func (v *VerifyResult) Err() error {
	switch {
	case len(v.Bad) > 0:
		return v.Bad[0]
	case len(v.Index) > 0:
		return v.Index[0]
	case !v.DigestOK && v.commitOff > 0:
		return broken(RuleTreeHash, v.commitOff+64, "the index tree hashes to %x, the commit records %x", v.Digest[:8], v.want[:8])
	case !v.DigestOK:
		return digestError(v.footerOff, v.Digest, v.want)
	}
	return nil
}

// Verify checks everything the image's rules cover (FORMAT.md,
// "Validity"): every zero-run record against the index, every frame header,
// every stored chunk's checksums, and the image digest. A structural error
// between frames (a damaged zero-run record, bytes that are no record)
// stops it and is returned; a damaged frame is reported in Bad and the
// others are still checked. prog (may be nil) gets a "verifying" phase
// in logical disk bytes. Of a version 2 image it checks the opened commit
// (see VerifyWith).
func (r *Reader) Verify(ctx context.Context, prog progress.Reporter) (*VerifyResult, error) {
	return r.VerifyWith(ctx, VerifyOptions{Progress: prog})
}

func (r *Reader) verifyV1(ctx context.Context, prog progress.Reporter) (*VerifyResult, error) {
	prog = progress.Or(prog)
	prog.Start("verifying", r.hdr.DiskSize)
	n := r.hdr.NumChunks()
	sums := make([][32]byte, len(r.entries))
	bad := make([]*ChunkError, len(r.entries))
	workers := runtime.GOMAXPROCS(0)
	jobs := make(chan int, workers*2)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var read int64
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, FrameBufSize(r.hdr.ChunkSize))
			out := make([]byte, r.hdr.ChunkSize)
			for i := range jobs {
				c := int64(r.entries[i].chunk)
				f, _, err := r.readFrame(c, buf, true) // the image, not a cached copy
				if err == nil {
					_, err = f.Decode(out)
				}
				if err != nil {
					var ce *ChunkError
					if !errors.As(err, &ce) {
						ce = r.chunkErr(c, err).(*ChunkError)
					}
					bad[i] = ce
				} else {
					sums[i] = f.Sum
				}
				mu.Lock()
				read += int64(FrameHeaderSize) + int64(r.entries[i].slen)
				mu.Unlock()
				prog.Add(int64(r.hdr.ChunkLen(c)))
			}
		}()
	}
	var stop error
feed:
	for i := 0; i <= len(r.entries); i++ {
		// The records before frame i, in file order as a stream reader
		// meets them (each gap is read once, then remembered).
		if err := r.checkGap(i); err != nil {
			stop = err
			break
		}
		if i == len(r.entries) {
			break
		}
		select {
		case jobs <- i:
		case <-ctx.Done():
			stop = ctx.Err()
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if stop != nil {
		return nil, stop
	}
	res := &VerifyResult{Chunks: n, Stored: int64(len(r.entries)), BytesRead: read, want: r.ft.digest, footerOff: r.footerOff, Commits: 1}
	// Absent chunks count as verified zeros; report their bytes too.
	prog.Add(r.hdr.DiskSize - storedLogical(r))
	dg := NewDigester(r.hdr)
	for i, e := range r.entries {
		c := int64(e.chunk)
		if bad[i] != nil {
			res.Bad = append(res.Bad, bad[i])
			// A bad chunk's true sum is unknown; the frame's recorded sum keeps
			// the digest comparison about the other chunks.
			var f Frame
			if fr, _, err := r.ReadFrame(c, nil); err == nil {
				f = fr
			}
			dg.Add(c, f.Sum)
		} else {
			dg.Add(c, sums[i])
		}
	}
	res.Digest = dg.Sum()
	// The digest proves the content only when every chunk read back right.
	res.DigestOK = res.Digest == r.ft.digest && len(res.Bad) == 0
	return res, nil
}

func storedLogical(r *Reader) int64 {
	var t int64
	for _, e := range r.entries {
		t += int64(r.hdr.ChunkLen(int64(e.chunk)))
	}
	return t
}

// DigestString formats a digest as hex.
func DigestString(d [32]byte) string { return fmt.Sprintf("%x", d[:]) }
