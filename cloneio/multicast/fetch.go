package multicast

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/dimg-project/dimg/imagefmt"
	"github.com/dimg-project/dimg/internal/progress"
)

// maxFetchOutstanding bounds the objects handed to the HTTP fetcher at
// once.
const maxFetchOutstanding = 32

// fetcher gets objects from the repair URL (an http(s) copy of the same
// image) with Range requests: objects a receiver never saw, instead of
// waiting for a repair round, and whatever is missing when the sender
// goes away. Its results come back through the write queue.
type fetcher struct {
	url         string
	client      *http.Client
	q           chan uint32 // objects to fetch (fetchObjects runs when there is a URL)
	outstanding int         // handed out, result not yet taken
	off         bool        // the URL proved unusable: ask the sender instead
}

// usable reports whether objects should be fetched rather than asked for.
func (f *fetcher) usable() bool { return f.url != "" && !f.off }

// dispatchFetches hands objects never seen (before the edge, or all of
// them after the pass) to the HTTP fetcher instead of NACKing them.
func (r *receiver) dispatchFetches(edge position, all bool) {
	f := r.fetch
	end := int64(edge.object)
	if all {
		end = int64(r.ann.objects)
	}
	for o := r.asm.have.NextClear(r.asm.low, end); o < end && f.outstanding < maxFetchOutstanding; o = r.asm.have.NextClear(o+1, end) {
		r.asm.setState(uint32(o), objFetching)
		f.outstanding++
		r.wq.inflight++
		f.q <- uint32(o) // never blocks: at most maxFetchOutstanding queued
	}
}

// fetchObjects reads whole objects from the repair URL (opened at the
// first) and queues them for the writers like objects assembled from the
// network, until the queue closes or ctx ends.
func (r *receiver) fetchObjects(ctx context.Context) {
	var (
		img     *imagefmt.Reader
		entries []imagefmt.Entry
		tables  [][]byte
		openErr error
		buf     []byte
	)
	failed := func(o uint32, err error) {
		select {
		case r.wq.results <- writeResult{obj: o, fetch: true, err: err, httpErr: true}:
		case <-ctx.Done():
		}
	}
	for o := range r.fetch.q {
		if img == nil && openErr == nil {
			img, openErr = openHTTPImage(ctx, r.fetch.client, r.fetch.url)
			if openErr == nil {
				entries = slices.Collect(img.Entries())
				tables = zeroRunTables(img.ZeroRuns(), r.ann.chunkSize)
				switch {
				case img.Err() != nil: // a damaged index: the lists above stop early
					openErr = fmt.Errorf("multicast: repair URL image: %w", img.Err())
				case img.Digest() != r.ann.digest:
					openErr = fmt.Errorf("multicast: repair URL serves another image (digest %x)", img.Digest())
				case len(entries) != int(r.g.frames) || len(tables) != int(r.g.objects-r.g.frames) ||
					img.Header().ChunkSize != r.ann.chunkSize:
					openErr = fmt.Errorf("multicast: repair URL image has a different layout")
				}
			}
		}
		if openErr != nil {
			failed(o, openErr)
			continue
		}
		j := writeJob{obj: o, fetch: true}
		if o >= r.g.frames {
			j.raw = tables[o-r.g.frames]
		} else {
			e := entries[o]
			f, _, err := img.ReadFrame(e.Chunk, buf)
			if err != nil {
				failed(o, err)
				continue
			}
			j.chunk, j.raw = uint32(e.Chunk), append([]byte(nil), f.Raw...)
		}
		select {
		case r.wq.jobs <- j:
		case <-ctx.Done():
			return
		}
	}
}

// fetchRest gets every object still missing from the repair URL after the
// sender ended or went silent.
func (r *receiver) fetchRest(ctx context.Context) error {
	for o := range r.asm.parts {
		r.asm.evict(r.asm.parts[o]) // restart partial objects whole, over HTTP
	}
	t := time.NewTicker(statusInterval)
	defer t.Stop()
	for !r.asm.complete() && r.fetch.usable() {
		r.dispatchFetches(position{}, true)
		if r.wq.inflight == 0 {
			break
		}
		select {
		case res := <-r.wq.results:
			if err := r.written(res); err != nil {
				return err
			}
		case <-t.C:
			r.sendStatus(rxFetching, nil)
			progress.Note(r.prog, "fetching the rest from the repair URL")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
