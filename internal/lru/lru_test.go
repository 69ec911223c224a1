package lru

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

func TestEvictsLeastRecentlyUsed(t *testing.T) {
	c := New[int, string](2)
	c.Add(1, "a")
	c.Add(2, "b")
	if _, ok := c.Peek(1); !ok { // 1 is now the most recent
		t.Fatal("1 missing")
	}
	c.Add(3, "c")
	if _, ok := c.Peek(2); ok {
		t.Error("2 should have been evicted")
	}
	for _, k := range []int{1, 3} {
		if _, ok := c.Peek(k); !ok {
			t.Errorf("%d evicted", k)
		}
	}
	if c.Len() != 2 {
		t.Errorf("Len = %d", c.Len())
	}
	c.Remove(1)
	if _, ok := c.Peek(1); ok || c.Len() != 1 {
		t.Error("Remove kept the entry")
	}
}

func TestGetSharesOneLoadAndNeverCachesFailure(t *testing.T) {
	c := New[int, int](4)
	var calls atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := c.Get(7, func() (int, error) {
				calls.Add(1)
				<-release
				return 49, nil
			})
			if err != nil || v != 49 {
				t.Errorf("Get = %d, %v", v, err)
			}
		}()
	}
	for !c.Has(7) {
	}
	close(release)
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Errorf("fill called %d times, want 1", n)
	}

	boom := errors.New("boom")
	if _, err := c.Get(8, func() (int, error) { return 0, boom }); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if c.Has(8) {
		t.Error("a failure was cached")
	}
	if v, err := c.Get(8, func() (int, error) { return 64, nil }); err != nil || v != 64 {
		t.Errorf("retry = %d, %v", v, err)
	}
}
