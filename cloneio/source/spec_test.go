package source

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		path string
		err  bool
	}{
		{"2:/etc/fstab", 2, "/etc/fstab", false},
		{"/etc/fstab", 0, "/etc/fstab", false},
		{"12:", 12, "", false},
		{"/a:b", 0, "/a:b", false},
		{"x:/y", 0, "x:/y", false},
		{"0:/y", 0, "", true},
		{"-1:/y", 0, "", true},
	}
	for _, tc := range tests {
		n, p, err := ParseSpec(tc.in)
		if n != tc.n || p != tc.path || (err != nil) != tc.err || err != nil && !errors.Is(err, ErrSpec) {
			t.Errorf("ParseSpec(%q) = %d, %q, %v", tc.in, n, p, err)
		}
	}
}

func TestSimilarNames(t *testing.T) {
	names := []string{"hello.txt", "Hello.TXT", "help", "data", "random-5M.bin", "world"}
	if got := similar("helo.txt", names); !slices.Equal(got, []string{"hello.txt", "Hello.TXT"}) {
		t.Errorf("similar(helo.txt) = %v", got)
	}
	if got := similar("random", names); !slices.Equal(got, []string{"random-5M.bin"}) {
		t.Errorf("similar(random) = %v", got)
	}
	if got := similar("zzz", names); len(got) != 0 {
		t.Errorf("similar(zzz) = %v", got)
	}
}

// FuzzParseSpec: no input panics; a number is only taken from a leading
// "N:" and is positive.
func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{"2:/etc/fstab", "/x", "0:/", "99999999999999999999:/", ":/", "1:", "a:b:c", "-3:/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, p, err := ParseSpec(s)
		if err != nil {
			return
		}
		if n < 0 || (n > 0 && !strings.HasSuffix(s, ":"+p)) || (n == 0 && p != s) {
			t.Fatalf("ParseSpec(%q) = %d, %q", s, n, p)
		}
	})
}
