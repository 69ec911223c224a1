package imagefmt

import (
	"bufio"
	"fmt"
	"io"
	"time"
)

// writerV2 is the version 2 state of a Writer: the index tree built as
// frames arrive (each node written as soon as it is complete, so memory
// stays bounded by the tree's height), and what the first commit record
// needs.
type writerV2 struct {
	tree     *treeBuilder
	message  string
	changedB int64 // logical bytes of stored and zero chunks
}

// newWriterV2 writes the header region (header block, two empty slots)
// and the metadata record; commit 1 follows.
func newWriterV2(w io.Writer, h Header, opt WriterOptions) (*Writer, error) {
	m, err := opt.Compression.method()
	if err != nil {
		return nil, err
	}
	if m == MethodZstd {
		h.Incompat |= IncompatZstd
	}
	if len(opt.Message) > maxMessage {
		return nil, fmt.Errorf("imagefmt: commit message longer than %d bytes", maxMessage)
	}
	hb, err := h.marshalV2()
	if err != nil {
		return nil, err
	}
	meta, err := marshalMeta(h.Metadata)
	if err != nil {
		return nil, err
	}
	wr := &Writer{w: bufio.NewWriterSize(w, 1<<20), hdr: h, v2: &writerV2{message: opt.Message}}
	wr.v2.tree = newTreeBuilder(newGeometry(&wr.hdr), wr.emitNode, false)
	// Both slots stay empty: a stream cannot come back to fill them. The
	// footer finds commit 1 until a commit in place records it in a slot.
	for _, b := range [][]byte{hb, make([]byte, 2*slotSectorSize), meta} {
		if err := wr.write(b); err != nil {
			return nil, err
		}
	}
	return wr, nil
}

func (w *Writer) emitNode(_ *node, b []byte) (nodeLoc, error) {
	loc := nodeLoc{off: w.off, length: len(b)}
	return loc, w.write(b)
}

func (w *Writer) writeFrameV2(f Frame) error {
	t := w.v2.tree
	// Nodes the frame's leaf closes are written before it (a stream
	// reader checks each node before the records of the next leaf).
	if err := t.open(0, f.Chunk/fanout); err != nil {
		return err
	}
	off := w.off
	if err := w.write(f.Raw); err != nil {
		return err
	}
	if err := t.addStored(f.Chunk, leafStored{method: f.Method, slen: uint32(len(f.Payload)), off: off, sum: f.Sum}); err != nil {
		return err
	}
	w.next = f.Chunk + 1
	w.stored += int64(len(f.Raw))
	w.v2.changedB += int64(f.LogicalLen)
	return nil
}

// writeZeroRunV2 writes one run record per leaf the run spans: a record
// never crosses a leaf, so each leaf's node can follow its records.
func (w *Writer) writeZeroRunV2(start, count int64) error {
	t := w.v2.tree
	for count > 0 {
		if err := t.open(0, start/fanout); err != nil {
			return err
		}
		n := min(count, fanout-start%fanout)
		var b [runRecordSize]byte
		putRunRecord(b[:], runRecord{start: start, count: n, state: diskZero})
		if err := w.write(b[:]); err != nil {
			return err
		}
		if err := t.addRun(start, n, diskZero); err != nil {
			return err
		}
		for c := start; c < start+n; c++ {
			w.v2.changedB += int64(w.hdr.ChunkLen(c))
		}
		start += n
		count -= n
	}
	w.next = start
	return nil
}

// closeV2 writes the remaining nodes up to the root, commit 1's record
// and the footer.
func (w *Writer) closeV2() ([32]byte, error) {
	t := w.v2.tree
	root, digest, err := t.finish()
	if err != nil {
		return digest, err
	}
	created := w.hdr.Created
	if created.IsZero() {
		created = time.Now()
	}
	rec := commitRecord{
		number: 1, time: created, incompat: w.hdr.Incompat, roCompat: w.hdr.ROCompat, compat: w.hdr.Compat,
		rootOff: root.off, rootLen: root.length, digest: digest, start: dataStart,
		metaOff: dataStart, metaLen: metaFixedSize + len(w.hdr.Metadata),
		changed: t.stored + t.zero, changedB: w.v2.changedB, stored: t.stored, storedB: t.storedB, zero: t.zero,
		message: w.v2.message,
	}
	recOff := w.off
	if err := w.write(rec.marshal()); err != nil {
		return digest, err
	}
	ft := commitSlot{commit: 1, recOff: recOff, recLen: rec.size(), digest: digest, end: w.off}
	if err := w.write(ft.marshal(footerMagic, w.hdr.UUID)); err != nil {
		return digest, err
	}
	if err := w.w.Flush(); err != nil {
		return digest, fmt.Errorf("imagefmt: write: %w", err)
	}
	return digest, nil
}
