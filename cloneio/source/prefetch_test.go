package source

import (
	"context"
	"path/filepath"
	"testing"
)

// TestPrefetch: every filesystem's tree is listed down to the depth
// asked, within the bound on directories.
func TestPrefetch(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.dimg")
	writeImage(t, makeDisk(t), img)
	drv, _ := drivers()
	s, err := Open(context.Background(), img, Options{Drivers: drv})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// boot: ".", EFI, EFI/boot; data: ".", etc, home, home/alice.
	for _, tc := range []struct {
		opt        PrefetchOptions
		dirs, ents int
	}{
		{PrefetchOptions{Depth: 5}, 7, 12},
		{PrefetchOptions{Depth: 1}, 5, 10},
		{PrefetchOptions{Depth: 5, MaxDirs: 1}, 2, 4},
	} {
		res := s.Prefetch(context.Background(), tc.opt)
		if res.Filesystems != 2 || res.Dirs != tc.dirs || res.Entries != tc.ents {
			t.Errorf("Prefetch(%+v) = %+v, want 2 filesystems, %d dirs, %d entries", tc.opt, res, tc.dirs, tc.ents)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if res := s.Prefetch(ctx, PrefetchOptions{}); res.Dirs > 2 {
		t.Errorf("Prefetch with an ended context listed %d directories", res.Dirs)
	}
}
