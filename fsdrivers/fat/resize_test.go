package fat

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestResize shrinks real FAT12/16/32 volumes whose data lies past the new
// end (the first files written were deleted, so the rest sit high) to
// MinSize and checks them with fsck.fat -n, mdir and our reader: the same
// tree, the same bytes, and a volume that is now smaller.
func TestResize(t *testing.T) {
	needTools(t, "mkfs.vfat", "mcopy", "mdel", "fsck.fat", "mdir")
	for _, tc := range []struct {
		bits, sizeMiB int
		files         int
		fileKiB       int
	}{
		{12, 4, 40, 40},
		{16, 32, 60, 300},
		{32, 96, 60, 2400},
	} {
		t.Run(fmt.Sprintf("fat%d", tc.bits), func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "src")
			rng := rand.New(rand.NewPCG(uint64(tc.bits), 1))
			var names []string
			for i := range tc.files {
				sub := filepath.Join(src, fmt.Sprintf("d%d", i%5), fmt.Sprintf("sub%d", i%3))
				if err := os.MkdirAll(sub, 0o755); err != nil {
					t.Fatal(err)
				}
				b := make([]byte, rng.IntN(tc.fileKiB<<10)+1)
				for j := range b {
					b[j] = byte(rng.Uint32())
				}
				p := filepath.Join(sub, fmt.Sprintf("file number %d.bin", i))
				if err := os.WriteFile(p, b, 0o644); err != nil {
					t.Fatal(err)
				}
				rel, _ := filepath.Rel(src, p)
				names = append(names, rel)
			}
			img := filepath.Join(dir, "fat.img")
			makeImage(t, img, tc.bits, tc.sizeMiB, 0, src)
			// Delete the first half: what is left sits in high clusters.
			for _, n := range names[:len(names)/2] {
				mustTool(t, "mdel", "-i", img, "::/"+filepath.ToSlash(n))
				if err := os.Remove(filepath.Join(src, n)); err != nil {
					t.Fatal(err)
				}
			}
			fsckClean(t, img)
			want := snapshot(t, os.DirFS(src))
			paths := mdirPaths(t, img)

			f, err := os.OpenFile(img, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			size := int64(tc.sizeMiB) << 20
			min, err := MinSize(f, size)
			if err != nil {
				t.Fatal(err)
			}
			if min >= size {
				t.Fatalf("MinSize %d is not below the volume's %d bytes", min, size)
			}
			// One sector less than the minimum of the type is refused.
			if tc.bits != 12 {
				g, _ := readBootSector(f, size)
				low := g.dataOffset + typeMinClusters(tc.bits)*g.clusterSize - g.sectorSize
				if err := Resize(f, size, low); err == nil {
					t.Fatalf("Resize to %d bytes (a FAT type change) was not refused", low)
				}
			}
			// The test means something only if data must move.
			g0, _ := readBootSector(f, size)
			fat0, _ := loadFAT(f, g0)
			high := 0
			for c := uint32((min-g0.dataOffset)/g0.clusterSize) + 2; c <= g0.maxCluster(); c++ {
				if getEntry(fat0, c, tc.bits) != 0 {
					high++
				}
			}
			if high == 0 {
				t.Fatal("no cluster lies past the new end: nothing is moved")
			}
			if err := Resize(f, size, min); err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(min); err != nil {
				t.Fatal(err)
			}
			_, total := fsckClean(t, img)
			g, err := readBootSector(f, min)
			if err != nil {
				t.Fatal(err)
			}
			if int64(g.clusterCount) != total || g.bits != tc.bits {
				t.Errorf("after resize: %d clusters, FAT%d; fsck.fat counts %d", g.clusterCount, g.bits, total)
			}
			if got := mdirPaths(t, img); !slices.Equal(got, paths) {
				t.Errorf("mdir paths changed:\n%s", diffLists(got, paths))
			}
			vol, err := Driver{}.Open(f, min)
			if err != nil {
				t.Fatal(err)
			}
			compareTrees(t, snapshot(t, vol.(*Volume)), want)
			checkMtype(t, vol.(*Volume), img)
		})
	}
}
