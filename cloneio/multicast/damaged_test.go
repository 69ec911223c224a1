package multicast

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/dimg-project/dimg/imagefmt"
)

// TestObjectSourceDamagedIndex: a send of an image with a damaged index
// node is refused before the session. Before, Entries stopped at the node
// silently: the sender announced and sent part of the image, and every
// receiver wrote a disk that failed the digest.
func TestObjectSourceDamagedIndex(t *testing.T) {
	fx := newFixture(t, 20<<20, 64<<10, 3) // 320 chunks: two leaves
	b, err := os.ReadFile(fx.img)
	if err != nil {
		t.Fatal(err)
	}
	// Index node records: "DNOD", level at 4, number at 16 (FORMAT.md).
	at := -1
	for i := 0; i+24 <= len(b); i++ {
		if string(b[i:i+4]) == "DNOD" && b[i+4] == 0 && b[i+16] == 1 {
			at = i
		}
	}
	if at < 0 {
		t.Fatal("no second leaf in the image")
	}
	b[at+30] ^= 0xff
	os.WriteFile(fx.img, b, 0o644)
	img, err := imagefmt.Open(fx.img)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	_, err = newObjectSource(img)
	if !errors.Is(err, imagefmt.ErrCorrupt) || !strings.Contains(err.Error(), "index node (level 0, number 1)") {
		t.Fatalf("newObjectSource: %v, want the damaged node named", err)
	}
}
