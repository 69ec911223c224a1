package imagefmt

import (
	"fmt"
	"iter"
)

// Diff yields the changes that turn the disk from shows into the disk to
// shows, in chunk order, ready for Editor.Commit: each chunk whose content
// differs, with to's state and (stored) bytes, read and verified from to.
// Both must be version 2 images of one geometry, typically two commits of
// one file (a revert: Commit(ctx, Diff(newest, older), ...)).
//
// It walks the two index trees together and descends only where their
// subtrees may differ: another recorded hash, or another node (a zero
// chunk and an unused one hash alike, so a subtree whose node was
// rewritten is compared chunk by chunk). Nodes are never rewritten in
// place, so two commits of one file share every node neither changed:
// the cost is that of the chunks that changed between them, not of the
// disk. A chunk differs when its bytes or its state differ.
func Diff(from, to *Reader) iter.Seq2[ChunkChange, error] {
	return func(yield func(ChunkChange, error) bool) {
		if from.t == nil || to.t == nil {
			yield(ChunkChange{}, fmt.Errorf("imagefmt: diff: both images must be version 2"))
			return
		}
		fh, th := from.hdr, to.hdr
		if fh.ChunkSize != th.ChunkSize || fh.DiskSize != th.DiskSize {
			yield(ChunkChange{}, fmt.Errorf("imagefmt: diff: the images have another geometry (%d-byte chunks of %d bytes, %d-byte chunks of %d bytes)",
				fh.ChunkSize, fh.DiskSize, th.ChunkSize, th.DiskSize))
			return
		}
		d := differ{from: from, to: to, g: to.t.g, buf: make([]byte, th.ChunkSize), yield: yield}
		root := to.t.g.height - 1
		if same, err := d.same(root, 0); err != nil || !same {
			if err != nil {
				d.fail(err)
				return
			}
			d.node(root, 0)
		}
	}
}

type differ struct {
	from, to *Reader
	g        *geometry
	buf      []byte
	yield    func(ChunkChange, error) bool
}

// fail ends the walk with err.
func (d *differ) fail(err error) bool {
	d.yield(ChunkChange{}, err)
	return false
}

// node compares the children of node idx at level k, whose hashes
// differ; it returns false when the walk must stop.
func (d *differ) node(k int, idx int64) bool {
	if k == 0 {
		return d.leaf(idx)
	}
	for s := range d.g.slots(k, idx) {
		c := idx*fanout + int64(s)
		same, err := d.same(k-1, c)
		if err != nil {
			return d.fail(err)
		}
		if !same && !d.node(k-1, c) {
			return false
		}
	}
	return true
}

// leaf yields the chunks of leaf idx whose sums differ.
func (d *differ) leaf(idx int64) bool {
	a, err := d.from.leafSums(idx)
	if err != nil {
		return d.fail(err)
	}
	b, err := d.to.leafSums(idx)
	if err != nil {
		return d.fail(err)
	}
	for s := range b {
		c := idx*fanout + int64(s)
		if a[s] == b[s] && a[s] != d.g.zeroSum(c) {
			continue
		}
		st, err := d.to.chunkState(c)
		if err != nil {
			return d.fail(d.to.chunkErr(c, err))
		}
		if a[s] == b[s] {
			// Both read as zeros: a change only from zero to unused or back.
			was, err := d.from.chunkState(c)
			if err != nil {
				return d.fail(d.from.chunkErr(c, err))
			}
			if was == st {
				continue
			}
		}
		ch := ChunkChange{Chunk: c, State: st}
		if st == ChunkStored {
			data, ok, err := d.to.ReadChunk(c, d.buf)
			if err == nil && !ok {
				err = fmt.Errorf("imagefmt: chunk %d vanished from the index", c)
			}
			if err != nil {
				return d.fail(err)
			}
			ch.Data = data
		}
		if !d.yield(ch, nil) {
			return false
		}
	}
	return true
}

// same reports whether node idx of level k is the same subtree in both
// disks: the same recorded hash and the same node (or absent in both).
func (d *differ) same(k int, idx int64) (bool, error) {
	a, err := d.from.subtreeHash(k, idx)
	if err != nil {
		return false, err
	}
	b, err := d.to.subtreeHash(k, idx)
	if err != nil || a != b {
		return false, err
	}
	la, err := d.from.subtreeLoc(k, idx)
	if err != nil {
		return false, err
	}
	lb, err := d.to.subtreeLoc(k, idx)
	return la == lb, err
}

// nodeID names a node: the image it is in and its file offset; the zero
// value is a subtree absent from the whole chain (unused chunks).
type nodeID struct {
	uuid [16]byte
	off  int64
}

// subtreeLoc names the node holding subtree idx of level k in the disk r
// shows (of a delta: in the file of the chain that holds it).
func (r *Reader) subtreeLoc(k int, idx int64) (nodeID, error) {
	t := r.t
	if k == t.g.height-1 {
		return nodeID{r.hdr.UUID, t.commit.rootOff}, nil
	}
	parent, err := r.pathNode(idx<<(fanoutBits*(k+1)), k+1)
	if err != nil {
		return nodeID{}, err
	}
	if parent != nil {
		if ch := parent.childFind(int(idx % fanout)); ch != nil {
			return nodeID{r.hdr.UUID, ch.off}, nil
		}
	}
	if t.base != nil {
		return t.base.subtreeLoc(k, idx)
	}
	return nodeID{}, nil
}
