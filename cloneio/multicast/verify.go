package multicast

import (
	"context"
	"crypto/sha256"
	"fmt"
	"runtime"
	"sync"

	"github.com/dimg-project/dimg/imagefmt"
)

// chunkCheck says what one chunk of the target must hold.
type chunkCheck struct {
	kind int       // imagefmt.ChunkStored, ChunkZero or ChunkUnused
	want [32]byte  // stored: the chunk's SHA-256
	have *[32]byte // stored: its read-back SHA-256 when already taken, else nil
}

// readBack is the final check of a receiver: it reads the chunks of the
// target back (those not already read back during the transfer), hashes
// them, and recomputes the image digest the way imagefmt defines it
// (SHA-256 over every chunk's SHA-256). Stored chunks must match their
// sums and zero-run chunks must be zeros; unused chunks are not read (a
// device may hold anything there) and count as zeros, as in the image.
// Chunks that differ are returned as runs; done receives logical bytes
// checked.
func readBack(ctx context.Context, t Target, a *announce, check func(c int64) chunkCheck, done func(int64)) (digest [32]byte, bad []span, nbad int64, err error) {
	n := a.numChunks()
	full := imagefmt.ZeroSum(a.chunkSize)
	zsum := func(c int64) [32]byte {
		if l := a.chunkLen(c); l != a.chunkSize {
			return imagefmt.ZeroSum(l)
		}
		return full
	}
	holes, _ := t.(HoleTarget)
	workers := min(runtime.GOMAXPROCS(0), 4)
	const batch = 32
	sums := make([][32]byte, batch)
	errs := make([]error, batch)
	checks := make([]chunkCheck, batch)
	bufs := make([][]byte, workers)
	for i := range bufs {
		bufs[i] = make([]byte, a.chunkSize)
	}
	d := sha256.New()
	for c0 := int64(0); c0 < n; c0 += batch {
		if err := ctx.Err(); err != nil {
			return digest, nil, 0, err
		}
		m := int(min(batch, n-c0))
		for i := range m {
			checks[i] = check(c0 + int64(i))
		}
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < m; i += workers {
					c := c0 + int64(i)
					off, l := c*int64(a.chunkSize), a.chunkLen(c)
					errs[i] = nil
					switch {
					case checks[i].kind == imagefmt.ChunkUnused:
						sums[i] = zsum(c)
						continue
					case checks[i].have != nil:
						sums[i] = *checks[i].have
						continue
					}
					if holes != nil {
						if hole, err := holes.IsHole(off, int64(l)); err == nil && hole {
							sums[i] = zsum(c)
							continue
						}
					}
					buf := bufs[w][:l]
					if _, err := t.ReadAt(buf, off); err != nil {
						errs[i] = fmt.Errorf("multicast: read back chunk %d: %w", c, err)
						continue
					}
					sums[i] = sha256.Sum256(buf)
				}
			}()
		}
		wg.Wait()
		for i := range m {
			if errs[i] != nil {
				return digest, nil, 0, errs[i]
			}
			c := c0 + int64(i)
			d.Write(sums[i][:])
			want := zsum(c)
			if checks[i].kind == imagefmt.ChunkStored {
				want = checks[i].want
			}
			if sums[i] != want {
				nbad++
				if l := len(bad); l > 0 && int64(bad[l-1].first)+int64(bad[l-1].count) == c {
					bad[l-1].count++
				} else {
					bad = append(bad, span{uint32(c), 1})
				}
			}
			done(int64(a.chunkLen(c)))
		}
	}
	d.Sum(digest[:0])
	return digest, bad, nbad, nil
}
