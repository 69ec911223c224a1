package imagefmt

import (
	"container/list"
	"sync"
)

// chunkCache is a bounded LRU of decompressed chunks. Concurrent requests
// for the same chunk share one load; failures are never cached, so a
// transient read error is retried next time.
type chunkCache struct {
	mu      sync.Mutex
	max     int
	ll      *list.List // front = most recent; values are *cacheEntry
	m       map[int64]*list.Element
	loading map[int64]*load
}

type cacheEntry struct {
	chunk int64
	data  []byte // nil: absent chunk (zeros)
}

type load struct {
	done chan struct{}
	data []byte
	err  error
}

func newChunkCache(max int) *chunkCache {
	return &chunkCache{max: max, ll: list.New(), m: map[int64]*list.Element{}, loading: map[int64]*load{}}
}

func (c *chunkCache) get(chunk int64, fill func() ([]byte, error)) ([]byte, error) {
	c.mu.Lock()
	if el, ok := c.m[chunk]; ok {
		c.ll.MoveToFront(el)
		d := el.Value.(*cacheEntry).data
		c.mu.Unlock()
		return d, nil
	}
	if l, ok := c.loading[chunk]; ok {
		c.mu.Unlock()
		<-l.done
		return l.data, l.err
	}
	l := &load{done: make(chan struct{})}
	c.loading[chunk] = l
	c.mu.Unlock()

	l.data, l.err = fill()

	c.mu.Lock()
	delete(c.loading, chunk)
	if l.err == nil {
		c.m[chunk] = c.ll.PushFront(&cacheEntry{chunk: chunk, data: l.data})
		for c.ll.Len() > c.max {
			old := c.ll.Back()
			c.ll.Remove(old)
			delete(c.m, old.Value.(*cacheEntry).chunk)
		}
	}
	c.mu.Unlock()
	close(l.done)
	return l.data, l.err
}

// has reports whether chunk is cached or being loaded.
func (c *chunkCache) has(chunk int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.m[chunk]
	_, loading := c.loading[chunk]
	return ok || loading
}
