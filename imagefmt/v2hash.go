package imagefmt

import "crypto/sha256"

// Hashes of the composed disk a Reader shows, by position in the tree.
// A delta's absent subtrees and slots are its base's: their hashes come
// from the base's recorded hashes, found by the same walk in the base.

// subtreeHash is the recorded hash of node idx at level k: the entry in
// its parent (the commit digest for the root); for an absent subtree, the
// base's (delta) or an all-zero node's hash.
func (r *Reader) subtreeHash(k int, idx int64) ([32]byte, error) {
	t := r.t
	if k == t.g.height-1 {
		return t.commit.digest, nil
	}
	// The node of level k+1 above it, then its entry for idx.
	first := idx << (fanoutBits * (k + 1)) // a chunk under node idx
	parent, err := r.pathNode(first, k+1)
	if err != nil {
		return [32]byte{}, err
	}
	if parent != nil {
		if ch := parent.childFind(int(idx % fanout)); ch != nil {
			return ch.hash, nil
		}
	}
	if t.base != nil {
		return t.base.subtreeHash(k, idx)
	}
	return t.g.zeroHash(k, idx), nil
}

// leafSums returns the sums of the chunks of leaf idx as the composed disk
// holds them.
func (r *Reader) leafSums(idx int64) ([][32]byte, error) {
	leaf, err := r.pathNode(idx*fanout, 0)
	if err != nil {
		return nil, err
	}
	return r.sumsOf(idx, leaf)
}

// sumsOf returns the sums of leaf idx given its node in this file (nil
// when absent), filling absent slots from the base or with zero sums.
func (r *Reader) sumsOf(idx int64, leaf *node) ([][32]byte, error) {
	t := r.t
	slots := t.g.slots(0, idx)
	sums := make([][32]byte, slots)
	var base [][32]byte
	absent := func(s int) ([32]byte, error) {
		if t.base == nil {
			return t.g.zeroSum(idx*fanout + int64(s)), nil
		}
		if base == nil {
			var err error
			if base, err = t.base.leafSums(idx); err != nil {
				return [32]byte{}, err
			}
		}
		return base[s], nil
	}
	if leaf == nil {
		for s := range sums {
			var err error
			if sums[s], err = absent(s); err != nil {
				return nil, err
			}
		}
		return sums, nil
	}
	si, ri := 0, 0
	for s := range slots {
		switch {
		case si < len(leaf.stored) && int(leaf.stored[si].slot) == s:
			sums[s] = leaf.stored[si].sum
			si++
		case ri < len(leaf.runs) && int(leaf.runs[ri].slot) <= s:
			sums[s] = t.g.zeroSum(idx*fanout + int64(s))
			if s+1 == int(leaf.runs[ri].slot)+int(leaf.runs[ri].count) {
				ri++
			}
		default:
			var err error
			if sums[s], err = absent(s); err != nil {
				return nil, err
			}
		}
	}
	return sums, nil
}

// hashLeaf hashes leaf n of this file (absent slots from the base).
func (r *Reader) hashLeaf(n *node) ([32]byte, error) {
	t := r.t
	if t.base == nil {
		return leafHash(t.g, n, func(s int) ([32]byte, error) { return t.g.zeroSum(n.index*fanout + int64(s)), nil })
	}
	sums, err := r.sumsOf(n.index, n)
	if err != nil {
		return [32]byte{}, err
	}
	return hashSums(sums), nil
}

// absentChild is the hash of an absent child of node idx at level k.
func (r *Reader) absentChild(k int, idx int64, s int) ([32]byte, error) {
	p := idx*fanout + int64(s)
	if r.t.base != nil {
		return r.t.base.subtreeHash(k-1, p)
	}
	return r.t.g.zeroHash(k-1, p), nil
}

// hashSums is SHA-256 over the concatenated sums: a leaf's hash.
func hashSums(sums [][32]byte) [32]byte {
	h := sha256.New()
	for i := range sums {
		h.Write(sums[i][:])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}
