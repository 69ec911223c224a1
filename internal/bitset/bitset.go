package bitset

import "math/bits"

// Set holds the numbers [0, n) it was made for.
type Set []uint64

// New returns an empty set for the numbers [0, n).
func New(n int64) Set { return make(Set, (n+63)/64) }

// Test reports whether i is in the set.
func (b Set) Test(i int64) bool { return b[i>>6]&(1<<(i&63)) != 0 }

// Add puts i in the set.
func (b Set) Add(i int64) { b[i>>6] |= 1 << (i & 63) }

// Remove takes i out of the set.
func (b Set) Remove(i int64) { b[i>>6] &^= 1 << (i & 63) }

// AddRange puts [lo, hi) in the set.
func (b Set) AddRange(lo, hi int64) {
	for lo < hi && lo&63 != 0 {
		b.Add(lo)
		lo++
	}
	for ; lo+64 <= hi; lo += 64 {
		b[lo>>6] = ^uint64(0)
	}
	for ; lo < hi; lo++ {
		b.Add(lo)
	}
}

// Next returns the first member at or after i, or -1.
func (b Set) Next(i int64) int64 {
	i = max(i, 0)
	w := i >> 6
	if w >= int64(len(b)) {
		return -1
	}
	if x := b[w] >> (i & 63); x != 0 {
		return i + int64(bits.TrailingZeros64(x))
	}
	for w++; w < int64(len(b)); w++ {
		if b[w] != 0 {
			return w<<6 + int64(bits.TrailingZeros64(b[w]))
		}
	}
	return -1
}

// NextClear returns the first non-member at or after i and below n, or n.
func (b Set) NextClear(i, n int64) int64 {
	for i < n {
		if w := b[i>>6] >> (i & 63); w != ^uint64(0)>>(i&63) {
			return min(i+int64(bits.TrailingZeros64(^w)), n)
		}
		i = (i | 63) + 1
	}
	return n
}

// Count returns the number of members.
func (b Set) Count() int64 {
	var n int
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return int64(n)
}
