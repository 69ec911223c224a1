package fat

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestSynthOracle checks that the synthetic images are real FAT: fsck.fat
// finds nothing to fix and mtools lists the same tree and contents.
func TestSynthOracle(t *testing.T) { synthVariants(t, testSynthOracle) }

func testSynthOracle(t *testing.T, fat32 bool) {
	needTools(t, "fsck.fat", "mdir", "mtype")
	tree := synthTree()
	// mtools 4.0.32 cannot read the root of a FAT32-layout volume with
	// fewer than 65,525 clusters (even one mkfs.fat made), so the FAT32
	// image here is big enough to be FAT32 by the specification.
	s := buildSynthFAT(t, 2048, fat32, tree)
	if fat32 {
		s = buildSynthFAT(t, 66600, fat32, tree)
	}
	img := filepath.Join(t.TempDir(), "synth.img")
	if err := os.WriteFile(img, s.img, 0o644); err != nil {
		t.Fatal(err)
	}
	fsckClean(t, img)
	v := openSynth(t, s)
	// mtools 4.0.32 shows each UTF-16 unit of a character outside the BMP
	// as '_' (and cannot open such names): compare in its terms.
	got, want := fsPaths(t, v), mdirPaths(t, img)
	for i, p := range got {
		got[i] = mtoolsName(p)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("paths differ from mdir:\n got %q\nwant %q", got, want)
	}
	walkNodes("", tree, func(p string, n *snode) {
		if n.dir || mtoolsName(p) != p {
			return
		}
		out := mustTool(t, "mtype", "-i", img, "::/"+p)
		if !slices.Equal(out, n.data) && !(len(out) == 0 && len(n.data) == 0) {
			t.Errorf("mtype %s: %d bytes differ from the %d written", p, len(out), len(n.data))
		}
	})
}

// mtoolsName is how mtools 4.0.32 prints a name: characters outside the
// Basic Multilingual Plane become "__" (one '_' per UTF-16 unit).
func mtoolsName(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r > 0xFFFF {
			b.WriteString("__")
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}
