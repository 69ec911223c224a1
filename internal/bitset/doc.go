// Package bitset is a fixed-size set of small non-negative integers (chunk
// or object numbers), one bit each: a TiB disk of 256 KiB chunks is 512 KiB
// of bits. It is not safe for concurrent use; callers hold their own lock.
package bitset
