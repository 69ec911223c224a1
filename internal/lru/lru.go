package lru

import (
	"container/list"
	"sync"
)

// Cache is a bounded LRU map. The zero value is not usable: call New.
type Cache[K comparable, V any] struct {
	mu      sync.Mutex
	max     int
	ll      *list.List // front = most recently used; elements hold *entry[K, V]
	m       map[K]*list.Element
	loading map[K]*load[V]
}

type entry[K comparable, V any] struct {
	k K
	v V
}

type load[V any] struct {
	done chan struct{}
	v    V
	err  error
}

// New returns a cache holding at most n entries (at least 1).
func New[K comparable, V any](n int) *Cache[K, V] {
	return &Cache[K, V]{max: max(n, 1), ll: list.New(), m: map[K]*list.Element{}, loading: map[K]*load[V]{}}
}

// Peek returns the cached value of k and marks it recently used.
func (c *Cache[K, V]) Peek(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		c.ll.MoveToFront(e)
		return e.Value.(*entry[K, V]).v, true
	}
	var zero V
	return zero, false
}

// Add stores v under k, evicting the least recently used entries beyond
// the bound. Callers add only what they have read and verified.
func (c *Cache[K, V]) Add(k K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.addLocked(k, v)
}

func (c *Cache[K, V]) addLocked(k K, v V) {
	if e, ok := c.m[k]; ok {
		e.Value.(*entry[K, V]).v = v
		c.ll.MoveToFront(e)
		return
	}
	c.m[k] = c.ll.PushFront(&entry[K, V]{k, v})
	for c.ll.Len() > c.max {
		e := c.ll.Back()
		c.ll.Remove(e)
		delete(c.m, e.Value.(*entry[K, V]).k)
	}
}

// Get returns the value of k, calling fill on a miss. Concurrent Gets of
// one key share one fill; an error is returned to every waiter and not
// cached.
func (c *Cache[K, V]) Get(k K, fill func() (V, error)) (V, error) {
	c.mu.Lock()
	if e, ok := c.m[k]; ok {
		c.ll.MoveToFront(e)
		v := e.Value.(*entry[K, V]).v
		c.mu.Unlock()
		return v, nil
	}
	if l, ok := c.loading[k]; ok {
		c.mu.Unlock()
		<-l.done
		return l.v, l.err
	}
	l := &load[V]{done: make(chan struct{})}
	c.loading[k] = l
	c.mu.Unlock()

	l.v, l.err = fill()

	c.mu.Lock()
	delete(c.loading, k)
	if l.err == nil {
		c.addLocked(k, l.v)
	}
	c.mu.Unlock()
	close(l.done)
	return l.v, l.err
}

// Has reports whether k is cached or being loaded (prefetchers use it to
// skip work already done).
func (c *Cache[K, V]) Has(k K) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.m[k]
	_, loading := c.loading[k]
	return ok || loading
}

// Remove drops k (a writer invalidating what it changed).
func (c *Cache[K, V]) Remove(k K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		c.ll.Remove(e)
		delete(c.m, k)
	}
}

// Len is the number of cached entries.
func (c *Cache[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
