package ntfs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"testing"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/internal/lru"
)

// makeBare makes a fresh mkntfs volume in memory (no ntfs-3g needed).
func makeBare(t testing.TB, size int64) []byte {
	t.Helper()
	if _, err := exec.LookPath("mkntfs"); err != nil {
		t.Skip("mkntfs not installed")
	}
	p := t.TempDir() + "/bare.img"
	must(t, os.WriteFile(p, nil, 0o600))
	must(t, os.Truncate(p, size))
	runCmd(t, "mkntfs", "-F", "-Q", "-T", "-L", "bare", p)
	b, err := os.ReadFile(p)
	must(t, err)
	return b
}

func openBytes(b []byte) (*Volume, error) { return Open(bytes.NewReader(b), int64(len(b))) }

func TestNotNTFS(t *testing.T) {
	fat := make([]byte, 4096)
	copy(fat, []byte{0xeb, 0x3c, 0x90, 'm', 'k', 'f', 's', '.', 'f', 'a', 't'})
	for name, b := range map[string][]byte{"zeros": make([]byte, 1<<20), "fat": fat, "tiny": {1, 2}, "empty": nil} {
		_, err := Driver{}.Open(bytes.NewReader(b), int64(len(b)))
		if !errors.Is(err, fsdrivers.ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", name, err)
		}
	}
}

func TestCorruptBoot(t *testing.T) {
	clean := makeBare(t, 4<<20)
	if _, err := openBytes(clean); err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	cases := map[string]func(b []byte) []byte{
		"bytes per sector 0":   func(b []byte) []byte { le.PutUint16(b[11:], 0); return b },
		"bytes per sector 700": func(b []byte) []byte { le.PutUint16(b[11:], 700); return b },
		"sectors per cluster":  func(b []byte) []byte { b[13] = 0xc1; return b },
		"record size":          func(b []byte) []byte { b[0x40] = 0xf0; return b },
		"index block size":     func(b []byte) []byte { b[0x44] = 0x7f; return b },
		"volume larger":        func(b []byte) []byte { le.PutUint64(b[0x28:], 1<<40); return b },
		"truncated image":      func(b []byte) []byte { return b[:3<<20] },
		"MFT past the end":     func(b []byte) []byte { le.PutUint64(b[0x30:], 1<<30); return b },
		"MFT negative":         func(b []byte) []byte { le.PutUint64(b[0x30:], 1<<63); return b },
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := openBytes(damage(bytes.Clone(clean)))
			if !errors.Is(err, fsdrivers.ErrCorrupt) {
				t.Errorf("got %v, want ErrCorrupt", err)
			}
		})
	}
}

// mftOffsets returns the byte offsets of the $MFT and of $MFTMirr.
func mftOffsets(b []byte) (mft, mirr int64) {
	le := binary.LittleEndian
	cs := int64(le.Uint16(b[11:])) * int64(b[13])
	return int64(le.Uint64(b[0x30:])) * cs, int64(le.Uint64(b[0x38:])) * cs
}

func TestCorruptMFT(t *testing.T) {
	clean := makeBare(t, 4<<20)
	mft, mirr := mftOffsets(clean)

	// A torn primary $MFT record 0: the mirror takes over.
	b := bytes.Clone(clean)
	b[mft+510] ^= 0xff
	v, err := openBytes(b)
	if err != nil || v.Label() != "bare" {
		t.Fatalf("primary $MFT torn: %v", err)
	}
	if _, err := v.ReadDir("."); err != nil {
		t.Errorf("ReadDir after mirror fallback: %v", err)
	}
	// Both copies torn.
	b[mirr+510] ^= 0xff
	if _, err := openBytes(b); !errors.Is(err, fsdrivers.ErrCorrupt) {
		t.Errorf("both $MFT copies torn: %v", err)
	}

	// The root directory's record (5) damaged in different ways: errors,
	// never panics.
	root := mft + 5*1024
	le := binary.LittleEndian
	for name, damage := range map[string]func(b []byte){
		"torn":                 func(b []byte) { b[root+1022] ^= 0xff },
		"attribute length 0":   func(b []byte) { le.PutUint32(b[root+int64(le.Uint16(b[root+20:]))+4:], 0) },
		"attribute overruns":   func(b []byte) { le.PutUint32(b[root+int64(le.Uint16(b[root+20:]))+4:], 1<<20) },
		"attributes past used": func(b []byte) { le.PutUint16(b[root+20:], 1000) },
		"not in use":           func(b []byte) { le.PutUint16(b[root+22:], 0) },
	} {
		t.Run(name, func(t *testing.T) {
			b := bytes.Clone(clean)
			damage(b)
			v, err := openBytes(b)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.ReadDir("."); err == nil {
				t.Error("ReadDir of a damaged root succeeded")
			}
			if _, err := v.Stat("x"); err == nil {
				t.Error("Stat under a damaged root succeeded")
			}
		})
	}
}

// TestIndexLoop makes an index block point to itself: the walk must stop
// with an error instead of looping.
func TestIndexLoop(t *testing.T) {
	fx := makeVolume(t, 32<<20, nil, fillTree(false))
	v := open(t, fx.img)
	dir, err := v.resolve("test", "many", true)
	must(t, err)
	idx, err := v.openIndex(dir)
	must(t, err)
	last := idx.root[len(idx.root)-1]
	if last.child < 0 {
		t.Fatal("many/ has no index blocks")
	}
	// Find the INDX block on disk and rewrite the first child pointer in
	// it to point at the block itself.
	r := idx.alloc.runs[findRun(idx.alloc.runs, last.child*idx.vcnSize/v.boot.clusterSize)]
	off := r.lcn*v.boot.clusterSize + (last.child*idx.vcnSize - r.vcn*v.boot.clusterSize)
	img, err := os.ReadFile(fx.img)
	must(t, err)
	blk := bytes.Clone(img[off : off+idx.blockSize])
	must(t, applyFixups(blk, "INDX"))
	es, err := parseNode(blk[24:])
	must(t, err)
	if es[0].child < 0 {
		t.Skip("the block under the root is a leaf")
	}
	// Patch the child VCN of the first entry (in the raw, fixed-up-on-disk
	// image: the field sits before the sector end unless unlucky).
	entriesOff := 24 + int64(binary.LittleEndian.Uint32(blk[24:]))
	length := int64(binary.LittleEndian.Uint16(blk[entriesOff+8:]))
	vcnAt := off + entriesOff + length - 8
	if (vcnAt-off)%512 >= 504 {
		t.Skip("child VCN overlaps a fixup position")
	}
	binary.LittleEndian.PutUint64(img[vcnAt:], uint64(last.child))
	v2, err := openBytes(img)
	must(t, err)
	if _, err := v2.ReadDir("many"); !errors.Is(err, fsdrivers.ErrCorrupt) {
		t.Errorf("ReadDir of a looping index: %v", err)
	}
}

// TestReadErrors: a volume whose reader fails reports the failure.
func TestReadErrors(t *testing.T) {
	clean := makeBare(t, 4<<20)
	v, err := Open(&failAfter{r: bytes.NewReader(clean), n: 1 << 40}, int64(len(clean)))
	must(t, err)
	v.r = &failAfter{r: bytes.NewReader(clean), n: 0}
	v.records = lru.New[uint64, *record](recordCacheSize) // cold: every record read fails
	if _, err := v.ReadDir("."); !errors.Is(err, errInjected) {
		t.Errorf("ReadDir with a failing disk: %v", err)
	}
	var pe *fs.PathError
	if _, err := v.Open("nothing"); !errors.As(err, &pe) {
		t.Errorf("Open: %v is not a *fs.PathError", err)
	}
}

var errInjected = errors.New("injected I/O error")

type failAfter struct {
	r io.ReaderAt
	n int
}

func (f *failAfter) ReadAt(p []byte, off int64) (int, error) {
	if f.n <= 0 {
		return 0, errInjected
	}
	f.n--
	return f.r.ReadAt(p, off)
}
