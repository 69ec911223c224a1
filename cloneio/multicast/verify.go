package multicast

import (
	"context"
	"crypto/sha256"
	"fmt"
	"runtime"
	"sync"

	"github.com/dimg-project/dimg/imagefmt"
)

// zeroSum is the SHA-256 of n zero bytes.
func zeroSum(n int) [32]byte {
	h := sha256.New()
	var z [8192]byte
	for n > 0 {
		k := min(n, len(z))
		h.Write(z[:k])
		n -= k
	}
	var s [32]byte
	h.Sum(s[:0])
	return s
}

// readBack is the final check of a receiver: it reads every chunk of the
// target back, hashes it, and recomputes the image digest the way imagefmt
// defines it (SHA-256 over every chunk's SHA-256, absent chunks included).
// classify(c) tells what chunk c must hold: imagefmt.ChunkStored with the
// first 8 bytes of its SHA-256, ChunkZero (zeros), or ChunkUnused
// (anything: it is not read, and counts as zeros in the digest, as the
// image does). Chunks that differ are returned as runs. done receives
// logical bytes checked.
func readBack(ctx context.Context, t Target, a *announce, classify func(c int64) (int, [8]byte), done func(int64)) (digest [32]byte, bad []span, nbad int64, err error) {
	n := a.numChunks()
	full := zeroSum(a.chunkSize)
	zsum := func(c int64) [32]byte {
		if l := a.chunkLen(c); l != a.chunkSize {
			return zeroSum(l)
		}
		return full
	}
	holes, _ := t.(HoleTarget)
	workers := min(runtime.GOMAXPROCS(0), 4)
	const batch = 32
	sums := make([][32]byte, batch)
	errs := make([]error, batch)
	kinds := make([]int, batch)
	want := make([][8]byte, batch)
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
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < m; i += workers {
					c := c0 + int64(i)
					off, l := c*int64(a.chunkSize), a.chunkLen(c)
					errs[i] = nil
					kinds[i], want[i] = classify(c)
					if kinds[i] == imagefmt.ChunkUnused {
						sums[i] = zsum(c)
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
			ok := kinds[i] == imagefmt.ChunkStored && [8]byte(sums[i][:8]) == want[i] ||
				kinds[i] != imagefmt.ChunkStored && sums[i] == zsum(c)
			if !ok {
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
