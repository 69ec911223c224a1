package multicast

import "math/bits"

// bitset is a fixed-size set of object or chunk numbers.
type bitset []uint64

func newBitset(n int64) bitset { return make(bitset, (n+63)/64) }

func (b bitset) test(i int64) bool { return b[i>>6]&(1<<(i&63)) != 0 }
func (b bitset) set(i int64)       { b[i>>6] |= 1 << (i & 63) }
func (b bitset) clear(i int64)     { b[i>>6] &^= 1 << (i & 63) }

// setRange sets [lo, hi).
func (b bitset) setRange(lo, hi int64) {
	for lo < hi && lo&63 != 0 {
		b.set(lo)
		lo++
	}
	for ; lo+64 <= hi; lo += 64 {
		b[lo>>6] = ^uint64(0)
	}
	for ; lo < hi; lo++ {
		b.set(lo)
	}
}

// next returns the first set bit at or after i, or -1.
func (b bitset) next(i int64) int64 {
	if i < 0 {
		i = 0
	}
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

// nextClear returns the first clear bit at or after i below n, or n.
func (b bitset) nextClear(i, n int64) int64 {
	for i < n {
		if w := b[i>>6] >> (i & 63); w != ^uint64(0)>>(i&63) {
			j := i + int64(bits.TrailingZeros64(^w))
			return min(j, n)
		}
		i = (i | 63) + 1
	}
	return n
}

func (b bitset) count() int64 {
	var n int
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return int64(n)
}
