package parttable

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"strings"
	"testing"
)

func loadBytes(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// resealHeader recomputes the CRC of the GPT header at byte off, so a
// test can plant hostile values that pass the checksum.
func resealHeader(b []byte, off int) {
	h := b[off : off+512]
	binary.LittleEndian.PutUint32(h[gptHdrCRCOff:], 0)
	binary.LittleEndian.PutUint32(h[gptHdrCRCOff:], crc32.ChecksumIEEE(h[:92]))
}

func TestGPTDamage(t *testing.T) {
	clean := loadBytes(t, makeGPT(t))
	size := int64(len(clean))
	last := int(size) - 512
	want, err := Read(bytes.NewReader(clean), size, 0)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		damage  func(b []byte)
		warning string // expected substring of a warning; "" = error expected
	}{
		{"primary header", func(b []byte) { b[512+60] ^= 1 }, "primary GPT damaged"},
		{"primary signature", func(b []byte) { b[512] = 'X' }, "primary GPT damaged"},
		{"primary entries", func(b []byte) { b[1024+100] ^= 1 }, "primary GPT damaged"},
		{"primary hostile entry count", func(b []byte) {
			binary.LittleEndian.PutUint32(b[512+gptNumEntriesOff:], 1<<30)
			resealHeader(b, 512)
		}, "too large"},
		{"primary hostile entry LBA", func(b []byte) {
			binary.LittleEndian.PutUint64(b[512+gptEntryLBAOff:], 1<<60)
			resealHeader(b, 512)
		}, "outside the disk"},
		{"backup header", func(b []byte) { b[last+60] ^= 1 }, "backup GPT damaged"},
		{"backup entries", func(b []byte) { b[last-32*512] ^= 1 }, "backup GPT damaged"},
		{"both headers", func(b []byte) { b[512+60] ^= 1; b[last+60] ^= 1 }, ""},
		{"both entry arrays", func(b []byte) { b[1024] ^= 1; b[last-32*512] ^= 1 }, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := bytes.Clone(clean)
			c.damage(b)
			got, err := Read(bytes.NewReader(b), size, 0)
			if c.warning == "" {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("got %v, %v; want ErrCorrupt", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(strings.Join(got.Warnings, "\n"), c.warning) {
				t.Errorf("warnings %q, want %q", got.Warnings, c.warning)
			}
			if got.DiskGUID != want.DiskGUID || len(got.Partitions) != len(want.Partitions) {
				t.Fatalf("table differs: %+v", got)
			}
			for i := range got.Partitions {
				if got.Partitions[i] != want.Partitions[i] {
					t.Errorf("partition %d: %+v, want %+v", i, got.Partitions[i], want.Partitions[i])
				}
			}
			if !equalRanges(got.Reserved, want.Reserved) {
				t.Errorf("reserved %v, want %v", got.Reserved, want.Reserved)
			}
		})
	}
}

func TestGPTTruncated(t *testing.T) {
	clean := loadBytes(t, makeGPT(t))
	// The disk is smaller than the table: partition 4 runs past its end.
	if _, err := Read(bytes.NewReader(clean[:20*mib]), 20*mib, 0); !errors.Is(err, ErrCorrupt) ||
		!strings.Contains(err.Error(), "past the disk's end") {
		t.Errorf("short disk: %v", err)
	}
	// The reader ends before the size it claims (a truncated image): the
	// backup cannot be read, the primary still serves.
	tb, err := Read(bytes.NewReader(clean[:mib]), int64(len(clean)), 0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(tb.Warnings, "\n"), "backup GPT damaged") || len(tb.Partitions) != 3 {
		t.Errorf("truncated image: %+v", tb)
	}
	// Not even sector 0.
	if _, err := Read(bytes.NewReader(clean[:100]), mib, 0); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("100-byte reader: %v", err)
	}
	// Disk grown after partitioning: backup in the middle, still read.
	grown := append(bytes.Clone(clean), make([]byte, 8*mib)...)
	tb, err = Read(bytes.NewReader(grown), int64(len(grown)), 0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(tb.Warnings, "\n"), "not at the disk's last LBA") {
		t.Errorf("grown disk warnings %q", tb.Warnings)
	}
}

func TestMBRDamage(t *testing.T) {
	clean := loadBytes(t, makeMBR(t, "5"))
	tb, err := Read(bytes.NewReader(clean), int64(len(clean)), 0)
	if err != nil {
		t.Fatal(err)
	}
	// EBR positions (bytes), from Reserved: [MBR, EBR5, EBR6, EBR7].
	ebr5, ebr6, ebr7 := int(tb.Reserved[1].Off), int(tb.Reserved[2].Off), int(tb.Reserved[3].Off)
	entry := func(b []byte, sector, slot int) []byte {
		o := sector + 446 + 16*slot
		return b[o : o+16]
	}
	cases := []struct {
		name   string
		damage func(b []byte)
		size   int64
		want   string
	}{
		{"EBR loops to itself", func(b []byte) {
			binary.LittleEndian.PutUint32(entry(b, ebr6, 1)[8:], uint32((ebr6-ebr5)/512))
		}, 0, "loops"},
		{"EBR loops to the first", func(b []byte) {
			binary.LittleEndian.PutUint32(entry(b, ebr7, 1)[8:], 0)
			entry(b, ebr7, 1)[4] = 5
			binary.LittleEndian.PutUint32(entry(b, ebr7, 1)[12:], 1)
		}, 0, "loops"},
		{"EBR link outside the container", func(b []byte) {
			binary.LittleEndian.PutUint32(entry(b, ebr6, 1)[8:], 1<<30)
		}, 0, "outside the extended partition"},
		{"logical outside the container", func(b []byte) {
			binary.LittleEndian.PutUint32(entry(b, ebr6, 0)[12:], 1<<30)
		}, 0, "outside the extended partition"},
		{"primary past the disk end", nil, 40 * mib, "past the disk's end"},
		{"primary at sector 0", func(b []byte) {
			binary.LittleEndian.PutUint32(entry(b, 0, 1)[8:], 0)
		}, 0, "sector 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := bytes.Clone(clean)
			if c.damage != nil {
				c.damage(b)
			}
			size := int64(len(b))
			if c.size != 0 {
				size = c.size
			}
			got, err := Read(bytes.NewReader(b), size, 0)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %+v, %v; want ErrCorrupt with %q", got, err, c.want)
			}
		})
	}
	t.Run("EBR without signature ends the chain", func(t *testing.T) {
		b := bytes.Clone(clean)
		b[ebr7+510] = 0
		got, err := Read(bytes.NewReader(b), int64(len(b)), 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Partitions) != 5 || len(got.Warnings) != 1 {
			t.Errorf("got %+v", got)
		}
	})
}
