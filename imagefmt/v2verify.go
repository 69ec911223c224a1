package imagefmt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"

	"github.com/dimg-project/dimg/internal/progress"
)

// VerifyOptions configure VerifyWith; the zero value checks the opened
// commit.
type VerifyOptions struct {
	// Progress (may be nil) gets a "verifying" phase in logical disk
	// bytes (of the opened commit; AllCommits adds the others' frames).
	Progress progress.Reporter
	// AllCommits checks every commit of a version 2 image: each one's
	// index tree and root hash, and every frame any of them reaches (once).
	AllCommits bool
}

// VerifyWith is Verify with options. Of a version 2 image it recomputes
// the hash of every index node from its children and compares it with
// what the parent (the commit, for the root) records, and checks every
// stored chunk of this file against its leaf entry and its checksums. A
// delta's chunks held by its base are the base's to verify: verify each
// file of a chain.
func (r *Reader) VerifyWith(ctx context.Context, opt VerifyOptions) (*VerifyResult, error) {
	if r.t == nil {
		return r.verifyV1(ctx, opt.Progress)
	}
	prog := progress.Or(opt.Progress)
	prog.Start("verifying", r.hdr.DiskSize)
	commits := []*Reader{r}
	if opt.AllCommits {
		log, err := r.Log()
		if err != nil {
			return nil, err
		}
		for _, c := range log {
			if c.Number == r.t.commit.number {
				continue
			}
			cr, err := NewReader(r.ra, r.size, ReaderOptions{Commit: c.Number, Base: r.t.base, CacheBytes: 1})
			if err != nil {
				return nil, fmt.Errorf("imagefmt: open commit %d: %w", c.Number, err)
			}
			commits = append(commits, cr)
		}
	}

	res := &VerifyResult{Chunks: r.hdr.NumChunks(), Commits: len(commits), want: r.t.commit.digest, commitOff: r.t.commitOff}
	workers := runtime.GOMAXPROCS(0)
	type job struct {
		c int64
		e leafStored
	}
	jobs := make(chan job, workers*2)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, FrameBufSize(r.hdr.ChunkSize))
			out := make([]byte, r.hdr.ChunkSize)
			for j := range jobs {
				err := r.checkFrame(j.c, j.e, buf, out)
				mu.Lock()
				res.Stored++
				res.BytesRead += FrameHeaderSize + int64(j.e.slen)
				if err != nil {
					res.Bad = append(res.Bad, r.chunkErr(j.c, err).(*ChunkError))
				}
				mu.Unlock()
				prog.Add(int64(r.hdr.ChunkLen(j.c)))
			}
		}()
	}
	var seen map[int64]bool // frames already sent, when several trees share them
	if len(commits) > 1 {
		seen = map[int64]bool{}
	}
	var walkErr error
	for i, cr := range commits {
		send := func(c int64, e leafStored) bool {
			if seen != nil {
				if seen[e.off] {
					return true
				}
				seen[e.off] = true
			}
			select {
			case jobs <- job{c, e}:
				return true
			case <-ctx.Done():
				return false
			}
		}
		root, problems, err := cr.checkTree(ctx, send)
		if err != nil {
			walkErr = err
			break
		}
		res.Index = append(res.Index, problems...)
		if i == 0 {
			res.Digest = root
		}
		if root != cr.t.commit.digest {
			res.Index = append(res.Index, broken(RuleTreeHash, cr.t.commitOff+64, "commit %d: the index tree hashes to %x, the commit records %x", cr.t.commit.number, root[:8], cr.t.commit.digest[:8]))
		}
	}
	close(jobs)
	wg.Wait()
	if walkErr != nil {
		return nil, walkErr
	}
	if opt.AllCommits && r.hdr.Base == nil {
		// The records a restore from a pipe follows (run records above all,
		// which no tree reaches) must read as the newest commit too.
		if err := r.checkStream(ctx); err != nil {
			res.Index = append(res.Index, fmt.Errorf("read as a stream: %w", err))
		}
	}
	slices.SortFunc(res.Bad, func(a, b *ChunkError) int { return cmpInt64(a.Chunk, b.Chunk) })
	if !opt.AllCommits {
		// Chunks not stored here count as checked (zeros, or the base's).
		prog.Add(r.hdr.DiskSize - r.storedLogicalV2(res.Stored))
	}
	res.DigestOK = res.Digest == r.t.commit.digest && len(res.Bad) == 0 && len(res.Index) == 0
	return res, nil
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// storedLogicalV2 approximates the logical bytes of n stored chunks
// (exact but for a short last chunk), for progress only.
func (r *Reader) storedLogicalV2(n int64) int64 {
	return min(n*int64(r.hdr.ChunkSize), r.hdr.DiskSize)
}

// checkFrame reads chunk c's frame at its leaf entry's offset and checks
// it is that entry's frame and that its bytes match their checksums.
func (r *Reader) checkFrame(c int64, e leafStored, buf, out []byte) error {
	f, err := r.frameAt(c, e, buf, true) // verify the image, not a cached copy
	if err != nil {
		return err
	}
	_, err = f.Decode(out)
	return err
}

// checkTree walks this commit's whole tree: every node is read and
// checked, every node's hash recomputed from its children and compared
// with the hash its parent records; send gets every stored chunk. It
// returns the root's recomputed hash and the problems found; err only
// when ctx ends or send refuses.
func (r *Reader) checkTree(ctx context.Context, send func(c int64, e leafStored) bool) ([32]byte, []error, error) {
	var problems []error
	stopped := errors.New("stopped")
	var walk func(n *node) ([32]byte, error)
	walk = func(n *node) ([32]byte, error) {
		if err := ctx.Err(); err != nil {
			return [32]byte{}, err
		}
		if n.level == 0 {
			for _, e := range n.stored {
				if !send(n.index*fanout+int64(e.slot), e) {
					return [32]byte{}, stopped
				}
			}
			return r.hashLeaf(n)
		}
		for i := range n.children {
			ch := &n.children[i]
			idx := n.index*fanout + int64(ch.slot)
			cn, err := r.t.node(r.ra, ch.off, int(ch.length), n.level-1, idx)
			if err != nil {
				problems = append(problems, err)
				continue
			}
			h, err := walk(cn)
			if err != nil {
				if err == stopped || ctx.Err() != nil {
					return h, err
				}
				problems = append(problems, err)
				continue
			}
			if h != ch.hash {
				problems = append(problems, broken(RuleTreeHash, ch.off, "index node (level %d, number %d) hashes to %x, its parent records %x", n.level-1, idx, h[:8], ch.hash[:8]))
			}
		}
		return internalHash(r.t.g, n, func(s int) ([32]byte, error) { return r.absentChild(n.level, n.index, s) })
	}
	root, err := walk(r.t.root)
	if err == stopped {
		err = ctx.Err()
	}
	if err != nil && ctx.Err() == nil {
		// A base that cannot be read: a problem of this check, not a stop.
		problems = append(problems, err)
		err = nil
	}
	return root, problems, err
}

// checkStream reads the whole file as a stream reader would, checking
// every record in file order and the digest the records leave.
func (r *Reader) checkStream(ctx context.Context) error {
	s, err := NewStreamReader(io.NewSectionReader(r.ra, 0, r.size))
	if err != nil {
		return err
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := s.Next(); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}
