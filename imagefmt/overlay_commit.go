package imagefmt

import (
	"context"
	"fmt"
	"io"
	"iter"
	"slices"
)

// Committer stores an overlay's changes, e.g. as a new commit of an image
// or as a delta image. The overlay calls CommitChunks once, with n the
// number of dirty chunks; next returns them in increasing chunk order and
// io.EOF after the last. data holds the chunk's bytes (the disk's last
// chunk may be short) and is valid only until the next call; it is nil
// when zero is true, for a chunk that is all zeros now (store a zero
// record, not a frame). next returns ctx's error once ctx is done.
// CommitChunks returns nil only when the change is durable: the overlay
// then removes its scratch file.
type Committer interface {
	CommitChunks(ctx context.Context, message string, n int, next func() (chunk int64, data []byte, zero bool, err error)) error
}

// DirtyChunk is one chunk that differs from the base.
type DirtyChunk struct {
	Chunk int64
	Data  []byte // the chunk's bytes; nil when Zero; valid until the next iteration
	Zero  bool   // every byte of the chunk is zero
}

// Dirty yields the dirty chunks in increasing order with their current
// bytes. The set of chunks is taken when iteration starts; writes racing
// with the iteration may or may not show in the bytes, so stop writing
// first for a stable view (Commit does). On a read error it yields the
// error and stops.
func (o *Overlay) Dirty() iter.Seq2[DirtyChunk, error] {
	return func(yield func(DirtyChunk, error) bool) {
		o.ioMu.RLock()
		closed := o.closed
		o.ioMu.RUnlock()
		if closed {
			yield(DirtyChunk{}, ErrOverlayClosed)
			return
		}
		next := o.dirtyIter(context.Background())
		for {
			c, data, zero, err := next()
			if err == io.EOF {
				return
			}
			if !yield(DirtyChunk{Chunk: c, Data: data, Zero: zero}, err) || err != nil {
				return
			}
		}
	}
}

// dirtyChunks is the sorted list of dirty chunks with their slots.
func (o *Overlay) dirtyChunks() []slotRecord {
	o.mu.RLock()
	list := make([]slotRecord, 0, len(o.slots))
	for c, s := range o.slots {
		list = append(list, slotRecord{slot: s, chunk: c})
	}
	o.mu.RUnlock()
	slices.SortFunc(list, func(a, b slotRecord) int { return int(int64(a.chunk) - int64(b.chunk)) })
	return list
}

// dirtyIter returns a next function over the dirty chunks as Committer
// describes it. It reads the scratch file under ioMu.RLock per chunk, so
// a concurrent Close makes it fail rather than read a closed file.
func (o *Overlay) dirtyIter(ctx context.Context) func() (int64, []byte, bool, error) {
	list := o.dirtyChunks()
	buf := make([]byte, o.cs)
	i := 0
	return func() (int64, []byte, bool, error) {
		if i >= len(list) {
			return 0, nil, false, io.EOF
		}
		r := list[i]
		c := int64(r.chunk)
		if err := ctx.Err(); err != nil {
			return c, nil, false, err
		}
		i++
		b := buf[:o.chunkLen(c)]
		o.ioMu.RLock()
		var err error
		if o.closed {
			err = ErrOverlayClosed
		} else {
			err = o.readSlot(int64(r.slot), 0, b)
		}
		o.ioMu.RUnlock()
		if err != nil {
			return c, nil, false, o.chunkErr(c, err)
		}
		if IsZero(b) {
			return c, nil, true, nil
		}
		return c, b, false, nil
	}
}

// Commit hands every dirty chunk to c with the message, and once c has
// returned success, removes the scratch file and closes the overlay (its
// base is now out of date: open a new overlay over the new state to write
// more). Writes wait while Commit runs; reads go on. If c fails, the
// overlay and its scratch file stay as they were, for a retry or Discard.
// With no dirty chunks c is not called.
//
// A crash after c succeeded but before the scratch file is gone leaves a
// scratch file naming the old base; a committer that records
// Info().Session with the commit lets recovery recognise it as committed.
func (o *Overlay) Commit(ctx context.Context, message string, c Committer) error {
	o.writeMu.Lock()
	defer o.writeMu.Unlock()
	o.ioMu.RLock()
	closed := o.closed
	o.ioMu.RUnlock()
	if closed {
		return ErrOverlayClosed
	}
	if n := o.DirtyChunks(); n > 0 {
		if err := c.CommitChunks(ctx, message, n, o.dirtyIter(ctx)); err != nil {
			return fmt.Errorf("imagefmt: overlay commit: %w", err)
		}
	}
	o.ioMu.Lock()
	defer o.ioMu.Unlock()
	return o.removeLocked()
}
