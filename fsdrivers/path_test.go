package fsdrivers

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
)

func TestCleanPath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/", "."}, {"", "."}, {".", "."}, {"/etc/", "etc"}, {"etc//x", "etc/x"},
		{"/../../etc", "etc"}, {"a/../../b", "b"},
	}
	for _, tc := range tests {
		got, err := CleanPath(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("CleanPath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := CleanPath("a\x00b"); !errors.Is(err, ErrUnsafeName) {
		t.Errorf("NUL accepted: %v", err)
	}
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"a", "...", "ü", " ", strings.Repeat("x", 255)} {
		if err := CheckName(ok); err != nil {
			t.Errorf("CheckName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "/", "a\x00b", strings.Repeat("x", 256)} {
		if err := CheckName(bad); !errors.Is(err, ErrUnsafeName) {
			t.Errorf("CheckName(%q) = %v, want ErrUnsafeName", bad, err)
		}
	}
}

// FuzzCleanPath: whatever the user types, the result is "." or a valid
// io/fs path without "..", so it can never climb above the root.
func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"/", "", "/etc/fstab", "../../x", "a/./b//c/", "\x00", "/..", "a\\b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := CleanPath(s)
		if err != nil {
			return
		}
		if c != "." && (!fs.ValidPath(c) || strings.HasPrefix(c, "/")) {
			t.Fatalf("CleanPath(%q) = %q", s, c)
		}
		for _, part := range strings.Split(c, "/") {
			if part == ".." {
				t.Fatalf("CleanPath(%q) = %q climbs", s, c)
			}
		}
	})
}
