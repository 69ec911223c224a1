package imagefmt

import (
	"crypto/sha256"
	"fmt"
	"hash"
)

// ZeroSum returns the SHA-256 of n zero bytes: the sum of an all-zero or
// unused chunk of length n.
func ZeroSum(n int) [32]byte {
	var z [4096]byte
	h := sha256.New()
	for n > 0 {
		k := min(n, len(z))
		h.Write(z[:k])
		n -= k
	}
	var s [32]byte
	h.Sum(s[:0])
	return s
}

// Digester computes the image digest (FORMAT.md, "Image digest") from the
// sums of the chunks that hold data, given in increasing chunk order;
// every chunk skipped counts as zeros. The writer, the stream reader,
// Verify and restores all compute the digest through it.
type Digester struct {
	hdr  *Header
	h    hash.Hash
	next int64    // lowest chunk number Add accepts
	full [32]byte // sum of a full-length zero chunk
	// tree hashes a version 2 image's index tree (its root hash is the
	// digest); nil for version 1.
	tree *treeBuilder
}

// NewDigester starts a digest for an image with header hdr: version 1's
// hash of the concatenated sums, or version 2's root hash of the index
// tree (FORMAT.md, "Index tree"), chosen by hdr.Version.
func NewDigester(hdr *Header) *Digester {
	d := &Digester{hdr: hdr, h: sha256.New(), full: ZeroSum(hdr.ChunkSize)}
	if hdr.Version == Version2 {
		d.tree = newTreeBuilder(newGeometry(hdr), nil, false)
	}
	return d
}

// Next is the lowest chunk number Add accepts.
func (d *Digester) Next() int64 { return d.next }

// ZeroChunkSum is the sum chunk c has when it is all zero.
func (d *Digester) ZeroChunkSum(c int64) [32]byte {
	if l := d.hdr.ChunkLen(c); l != d.hdr.ChunkSize {
		return ZeroSum(l)
	}
	return d.full
}

// skipTo counts chunks [next, c) as zeros.
func (d *Digester) skipTo(c int64) {
	for ; d.next < c; d.next++ {
		s := d.ZeroChunkSum(d.next)
		d.h.Write(s[:])
	}
}

// Add records chunk c's sum; chunks between the previous one and c count
// as zeros. Chunks must come in increasing order.
func (d *Digester) Add(c int64, sum [32]byte) error {
	if c < d.next || c >= d.hdr.NumChunks() {
		return fmt.Errorf("imagefmt: digest: chunk %d out of order or range (next %d)", c, d.next)
	}
	if d.tree != nil {
		d.next = c + 1
		return d.tree.addSum(c, sum)
	}
	d.skipTo(c)
	d.h.Write(sum[:])
	d.next = c + 1
	return nil
}

// Sum counts the remaining chunks as zeros and returns the digest.
func (d *Digester) Sum() [32]byte {
	if d.tree != nil {
		_, s, _ := d.tree.finish()
		return s
	}
	d.skipTo(d.hdr.NumChunks())
	var s [32]byte
	d.h.Sum(s[:0])
	return s
}
