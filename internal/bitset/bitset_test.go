package bitset

import "testing"

func TestSet(t *testing.T) {
	const n = 300
	b := New(n)
	if b.Next(0) != -1 || b.NextClear(0, n) != 0 || b.Count() != 0 {
		t.Fatal("new set not empty")
	}
	b.AddRange(3, 200) // crosses whole words and partial ones
	b.Add(250)
	b.Remove(100)
	for i := range int64(n) {
		want := i >= 3 && i < 200 && i != 100 || i == 250
		if b.Test(i) != want {
			t.Fatalf("Test(%d) = %v", i, !want)
		}
	}
	for _, tc := range []struct{ from, next, clear int64 }{
		{0, 3, 0}, {3, 3, 100}, {100, 101, 100}, {101, 101, 200}, {200, 250, 200}, {251, -1, 251},
	} {
		if got := b.Next(tc.from); got != tc.next {
			t.Errorf("Next(%d) = %d, want %d", tc.from, got, tc.next)
		}
		if got := b.NextClear(tc.from, n); got != tc.clear {
			t.Errorf("NextClear(%d) = %d, want %d", tc.from, got, tc.clear)
		}
	}
	if b.NextClear(3, 50) != 50 {
		t.Error("NextClear must stop at its bound")
	}
	if got := b.Count(); got != 197 {
		t.Errorf("Count = %d", got)
	}
}
