// Package lru is the project's one bounded cache: a least-recently-used map
// safe for concurrent use, with shared loads.
//
// Vocabulary:
//   - entry: a key and its value; values are shared between callers and
//     must be treated as read-only.
//   - load: the function Get calls on a miss. Concurrent Gets of one key
//     share a single load; a failed load is never cached, so a transient
//     read error is retried by the next Get.
//
// The bound is a number of entries. Callers whose values vary in size pick
// the bound from their largest value (the image reader: 32 MiB of 256 KiB
// chunks is 128 entries).
package lru
