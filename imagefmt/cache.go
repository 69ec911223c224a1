package imagefmt

// The Reader keeps decompressed chunks in an internal/lru cache: bounded
// in entries (CacheBytes / ChunkSize, at least 4), concurrent reads of one
// chunk share a single load, and a failed load is never cached, so a
// transient read error is retried next time. A chunk not stored is cached
// as nil (it reads as zeros).

// prefetchChunks is how many chunks a sequential read loads ahead.
const prefetchChunks = 8

// chunk returns chunk c's bytes through the cache (nil for a chunk not
// stored). A miss right after chunk c-1 looks like a sequential read (a
// FUSE readahead, a restore of a partition): the next chunks are then
// loaded in the background, so decompression runs on all cores instead of
// one.
func (r *Reader) chunk(c int64) ([]byte, error) {
	if !r.cache.Has(c) && c > 0 && r.cache.Has(c-1) {
		for k := int64(1); k <= prefetchChunks && c+k < r.hdr.NumChunks(); k++ {
			next := c + k
			if r.cache.Has(next) || !r.IsStored(next) {
				continue
			}
			select {
			case r.prefetch <- struct{}{}:
				go func() {
					defer func() { <-r.prefetch }()
					r.cache.Get(next, r.loader(next))
				}()
			default: // every prefetcher busy: do not queue more
			}
		}
	}
	return r.cache.Get(c, r.loader(c))
}

// loader reads and verifies chunk c for the cache.
func (r *Reader) loader(c int64) func() ([]byte, error) {
	return func() ([]byte, error) {
		data, _, err := r.ReadChunk(c, nil)
		return data, err
	}
}
