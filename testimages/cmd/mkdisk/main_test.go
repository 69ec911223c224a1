package main

import "testing"

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"", 0, true},
		{"512", 512, true},
		{"64K", 64 << 10, true},
		{"512M", 512 << 20, true},
		{"7G", 7 << 30, true},
		{"2g", 2 << 30, true},
		{"1T", 1 << 40, true},
		{"G", 0, false},
		{"-1G", 0, false},
		{"1.5G", 0, false},
		{"99999999999T", 0, false},
		{"12X", 0, false},
	}
	for _, tc := range tests {
		got, err := parseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"7G", "512M", "", "1T", "-5K"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s)
		if err == nil && n < 0 {
			t.Fatalf("parseSize(%q) = %d", s, n)
		}
	})
}
