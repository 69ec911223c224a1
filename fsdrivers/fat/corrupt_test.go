package fat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"testing"
	"time"

	"github.com/dimg-project/dimg/fsdrivers"
)

// TestProbe checks boot-sector validation: what is not FAT at all wraps
// ErrNotFound, a FAT whose geometry does not add up wraps ErrCorrupt.
func TestProbe(t *testing.T) {
	le := binary.LittleEndian
	ntfs := make([]byte, 512)
	copy(ntfs, "\xEB\x52\x90NTFS    ")
	le.PutUint16(ntfs[11:], 512)
	ntfs[13] = 8
	ntfs[21] = 0xF8
	ntfs[510], ntfs[511] = 0x55, 0xAA
	exfat := make([]byte, 512)
	copy(exfat, "\xEB\x76\x90EXFAT   ")
	exfat[510], exfat[511] = 0x55, 0xAA

	cases := []struct {
		name  string
		mut   func(b []byte) []byte
		want  error // nil: opens
		fat32 bool  // start from the FAT32-layout image
	}{
		{"valid", func(b []byte) []byte { return b }, nil, false},
		{"no 55AA", func(b []byte) []byte { b[510] = 0; return b }, fsdrivers.ErrNotFound, false},
		{"no jump", func(b []byte) []byte { b[0] = 0; return b }, fsdrivers.ErrNotFound, false},
		{"E9 jump", func(b []byte) []byte { b[0] = 0xE9; return b }, nil, false},
		{"bytes/sector 0", func(b []byte) []byte { le.PutUint16(b[11:], 0); return b }, fsdrivers.ErrNotFound, false},
		{"bytes/sector 256", func(b []byte) []byte { le.PutUint16(b[11:], 256); return b }, fsdrivers.ErrNotFound, false},
		{"bytes/sector 1000", func(b []byte) []byte { le.PutUint16(b[11:], 1000); return b }, fsdrivers.ErrNotFound, false},
		{"bytes/sector 8192", func(b []byte) []byte { le.PutUint16(b[11:], 8192); return b }, fsdrivers.ErrNotFound, false},
		{"sectors/cluster 0", func(b []byte) []byte { b[13] = 0; return b }, fsdrivers.ErrNotFound, false},
		{"sectors/cluster 3", func(b []byte) []byte { b[13] = 3; return b }, fsdrivers.ErrNotFound, false},
		{"reserved 0", func(b []byte) []byte { le.PutUint16(b[14:], 0); return b }, fsdrivers.ErrNotFound, false},
		{"FATs 0", func(b []byte) []byte { b[16] = 0; return b }, fsdrivers.ErrNotFound, false},
		{"media 0x12", func(b []byte) []byte { b[21] = 0x12; return b }, fsdrivers.ErrNotFound, false},
		{"FAT size 0", func(b []byte) []byte { le.PutUint16(b[22:], 0); le.PutUint32(b[36:], 0); return b }, fsdrivers.ErrNotFound, false},
		{"total sectors 0", func(b []byte) []byte { le.PutUint16(b[19:], 0); return b }, fsdrivers.ErrNotFound, false},
		{"zeros", func(b []byte) []byte { clear(b[:512]); return b }, fsdrivers.ErrNotFound, false},
		{"NTFS", func(b []byte) []byte { copy(b, ntfs); return b }, fsdrivers.ErrNotFound, false},
		{"exFAT", func(b []byte) []byte { copy(b, exfat); return b }, fsdrivers.ErrNotFound, false},
		{"tiny", func(b []byte) []byte { return b[:100] }, fsdrivers.ErrNotFound, false},
		{"no data region", func(b []byte) []byte { le.PutUint16(b[19:], 17); return b }, fsdrivers.ErrCorrupt, false},
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }, fsdrivers.ErrCorrupt, false},
		{"FAT too small", func(b []byte) []byte { le.PutUint16(b[22:], 1); return b }, fsdrivers.ErrCorrupt, false},
		{"no root entries", func(b []byte) []byte { le.PutUint16(b[17:], 0); return b }, fsdrivers.ErrCorrupt, false},
		{"too many clusters for FAT16", func(b []byte) []byte {
			le.PutUint16(b[19:], 0)
			le.PutUint32(b[32:], 200000)
			return b
		}, fsdrivers.ErrCorrupt, false},
	}
	cases = append(cases, []struct {
		name  string
		mut   func(b []byte) []byte
		want  error
		fat32 bool
	}{
		{"FAT32 valid", func(b []byte) []byte { return b }, nil, true},
		{"FAT32 root cluster 0", func(b []byte) []byte { le.PutUint32(b[44:], 0); return b }, fsdrivers.ErrCorrupt, true},
		{"FAT32 root cluster past the end", func(b []byte) []byte { le.PutUint32(b[44:], 5000); return b }, fsdrivers.ErrCorrupt, true},
		{"FAT32 with root entries", func(b []byte) []byte { le.PutUint16(b[17:], 512); return b }, fsdrivers.ErrCorrupt, true},
		{"FAT32 active FAT 3 of 2", func(b []byte) []byte { le.PutUint16(b[40:], 0x83); return b }, fsdrivers.ErrCorrupt, true},
		{"FAT32 active FAT 1 of 2", func(b []byte) []byte { le.PutUint16(b[40:], 0x81); return b }, nil, true},
	}...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := buildSynthFAT(t, 2048, tc.fat32, synthTree())
			img := tc.mut(s.img)
			v, err := Open(bytes.NewReader(img), int64(len(img)))
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open = %v, %v; want an error wrapping %v", v, err, tc.want)
			}
			t.Logf("%v", err)
		})
	}
	var d fsdrivers.Driver = Driver{}
	if _, err := fsdrivers.Probe(bytes.NewReader(ntfs), 512, []fsdrivers.Driver{d}); err == nil {
		t.Error("Probe accepted an NTFS boot sector")
	}
}

func TestLabelAndSerial(t *testing.T) {
	cases := []struct {
		name            string
		mut             func(s *synth)
		label, uuid, ty string
	}{
		{"root label wins", func(s *synth) { copy(s.img[43:], "BOOTLABEL  ") }, "SYNTH VOL", "DEAD-BEEF", "fat12"},
		{"boot label when root has none", func(s *synth) {
			copy(s.img[43:], "BOOTLABEL  ")
			s.img[s.rootOffset] = 0xE5
		}, "BOOTLABEL", "DEAD-BEEF", "fat12"},
		{"NO NAME", func(s *synth) {
			copy(s.img[43:], "NO NAME    ")
			s.img[s.rootOffset] = 0xE5
		}, "", "DEAD-BEEF", "fat12"},
		{"0x28 signature: serial only", func(s *synth) {
			s.img[38] = 0x28
			s.img[s.rootOffset] = 0xE5
		}, "", "DEAD-BEEF", "fat12"},
		{"no extended BPB", func(s *synth) {
			s.img[38] = 0
			s.img[s.rootOffset] = 0xE5
		}, "", "", "fat12"},
		{"CP850 label", func(s *synth) { copy(s.img[s.rootOffset:], "CAF\x90       ") }, "CAFÉ", "DEAD-BEEF", "fat12"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := buildSynth(t, 2048, synthTree())
			tc.mut(s)
			v := openSynth(t, s)
			if v.Label() != tc.label || v.UUID() != tc.uuid || v.Type() != tc.ty {
				t.Errorf("label %q uuid %q type %q; want %q %q %q", v.Label(), v.UUID(), v.Type(), tc.label, tc.uuid, tc.ty)
			}
		})
	}
}

// TestCorrupt damages the structures behind a file tree and expects a clear
// error wrapping fsdrivers.ErrCorrupt from the operation that meets the
// damage, never a panic, a hang or wrong data.
func TestCorrupt(t *testing.T) { synthVariants(t, testCorrupt) }

func testCorrupt(t *testing.T, fat32 bool) {
	le := binary.LittleEndian
	cases := []struct {
		name string
		mut  func(s *synth)
		op   func(v *Volume) error
	}{
		{"self loop", func(s *synth) {
			c := s.info["frag.bin"].clusters
			s.SetFAT(c[1], c[1])
		}, readFile("frag.bin")},
		{"long loop", func(s *synth) {
			c := s.info["frag.bin"].clusters
			s.SetFAT(c[len(c)-1], c[0])
		}, readFile("frag.bin")},
		{"loop in a directory", func(s *synth) {
			c := s.info["sub"].clusters
			s.SetFAT(c[len(c)-1], c[0])
		}, readDir("sub")},
		{"next cluster past the end", func(s *synth) {
			s.SetFAT(s.info["frag.bin"].clusters[2], s.clusters+2)
		}, readFile("frag.bin")},
		{"free cluster in chain", func(s *synth) {
			s.SetFAT(s.info["frag.bin"].clusters[2], 0)
		}, readFile("frag.bin")},
		{"bad cluster in chain", func(s *synth) {
			s.SetFAT(s.info["frag.bin"].clusters[2], s.BadMark())
		}, readFile("frag.bin")},
		{"first cluster past the end", func(s *synth) {
			le.PutUint16(s.img[s.info["hello.txt"].entryOff+26:], 0xFF0)
			le.PutUint16(s.img[s.info["hello.txt"].entryOff+20:], 0x0FFF)
		}, readFile("hello.txt")},
		{"first cluster 1", func(s *synth) {
			le.PutUint16(s.img[s.info["hello.txt"].entryOff+26:], 1)
		}, readFile("hello.txt")},
		{"size beyond chain", func(s *synth) {
			le.PutUint32(s.img[s.info["exact.bin"].entryOff+28:], 1025)
		}, readFile("exact.bin")},
		{"size without clusters", func(s *synth) {
			le.PutUint32(s.img[s.info["empty"].entryOff+28:], 10)
		}, readFile("empty")},
		{"directory without clusters", func(s *synth) {
			le.PutUint16(s.img[s.info["sub"].entryOff+26:], 0)
		}, readDir("sub")},
		{"directory contains its parent", func(s *synth) {
			// sub/deeper points back at sub: without a check the tree
			// would be infinitely deep.
			le.PutUint16(s.img[s.info["sub/deeper"].entryOff+26:], uint16(s.info["sub"].first))
		}, readDir("sub/deeper")},
		{"directory contains the root", func(s *synth) {
			root := uint16(0)
			if s.fat32 {
				root = uint16(s.rootClusters[0])
			}
			if root == 0 {
				// On FAT12 cluster 0 means "no clusters".
				le.PutUint16(s.img[s.info["sub"].entryOff+26:], 0)
			} else {
				le.PutUint16(s.img[s.info["sub"].entryOff+26:], root)
			}
		}, readDir("sub")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := buildSynthFAT(t, 2048, fat32, synthTree())
			tc.mut(s)
			v := openSynth(t, s)
			err := withDeadline(t, func() error { return tc.op(v) })
			if !errors.Is(err, fsdrivers.ErrCorrupt) {
				t.Fatalf("got %v, want an error wrapping ErrCorrupt", err)
			}
			t.Logf("%v", err)
			// The rest of the tree stays readable and walking it ends.
			if _, err := fs.ReadFile(v, "sub/inner file.txt"); err != nil && tc.name != "directory without clusters" && !errors.Is(err, fsdrivers.ErrCorrupt) {
				t.Errorf("unrelated file: %v", err)
			}
			withDeadline(t, func() error {
				return fs.WalkDir(v, ".", func(p string, d fs.DirEntry, err error) error { return nil })
			})
			if _, err := v.UsedRanges(); err != nil {
				t.Errorf("UsedRanges: %v", err)
			}
		})
	}
}

func readFile(name string) func(v *Volume) error {
	return func(v *Volume) error { _, err := fs.ReadFile(v, name); return err }
}

func readDir(name string) func(v *Volume) error {
	return func(v *Volume) error { _, err := v.ReadDir(name); return err }
}

// withDeadline runs fn and fails the test if it does not return within 10 s.
func withDeadline(t *testing.T, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("operation did not return within 10 s: a hang")
		return nil
	}
}

// failingReader returns err for any read that touches [from, ∞).
type failingReader struct {
	r    io.ReaderAt
	from int64
	err  error
}

func (f failingReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.from {
		n := max(0, int(f.from-off))
		if n > 0 {
			f.r.ReadAt(p[:n], off)
		}
		return n, f.err
	}
	return f.r.ReadAt(p, off)
}

// TestReadErrors: an error from the device reaches the caller, wrapped; it
// is never swallowed into short or zeroed data.
func TestReadErrors(t *testing.T) {
	s := buildSynth(t, 2048, synthTree())
	errDevice := errors.New("device error")
	frag := s.info["frag.bin"].clusters
	r := failingReader{r: bytes.NewReader(s.img), from: s.ClusterOffset(frag[3]), err: errDevice}
	v, err := Open(r, int64(len(s.img)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.ReadFile(v, "frag.bin"); !errors.Is(err, errDevice) {
		t.Errorf("ReadFile = %v, want the device error", err)
	}
	// A device that ends early (io.EOF) is a truncated image: ErrUnexpectedEOF.
	r.err = io.EOF
	v, err = Open(r, int64(len(s.img)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.ReadFile(v, "frag.bin"); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("ReadFile = %v, want io.ErrUnexpectedEOF", err)
	}
	// A failing FAT read is reported, not cached.
	r = failingReader{r: bytes.NewReader(s.img), from: 600, err: errDevice}
	v, err = Open(r, int64(len(s.img)))
	if err != nil {
		t.Fatal(err) // the root directory label is best-effort
	}
	if _, err := v.Open("frag.bin"); !errors.Is(err, errDevice) {
		t.Errorf("Open with an unreadable FAT = %v", err)
	}
	if _, err := v.UsedRanges(); !errors.Is(err, errDevice) {
		t.Errorf("UsedRanges with an unreadable FAT = %v", err)
	}
}
