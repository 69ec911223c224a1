package main

import (
	"testing"

	"github.com/dimg-project/dimg/cloneio/multicast"
)

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{in: "", want: 0},
		{in: "80M", want: 80 << 20},
		{in: "1G", want: 1 << 30},
		{in: "800mbit", want: 100_000_000},
		{in: "1gbit", want: 125_000_000},
		{in: "1.5Gbit", want: 187_500_000},
		{in: "64kbit", want: 8000},
		{in: "fast", bad: true},
		{in: "-5M", bad: true},
		{in: "0mbit", bad: true},
	} {
		got, err := parseRate(tc.in)
		if tc.bad != (err != nil) || !tc.bad && got != tc.want {
			t.Errorf("parseRate(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestFormatRanges(t *testing.T) {
	rs := []multicast.ChunkRange{{First: 3, Count: 5}, {First: 12, Count: 1}}
	if got := formatRanges(rs, 6); got != "3-7,12 (6 in all)" {
		t.Fatalf("got %q", got)
	}
}
