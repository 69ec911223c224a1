package disk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/dimg-project/dimg/fsdrivers"
	"github.com/dimg-project/dimg/fsdrivers/ntfs"
	"github.com/dimg-project/dimg/fsdrivers/parttable"
	"github.com/dimg-project/dimg/fsdrivers/swap"
)

const mib = 1 << 20

// magicFS is a test driver: "MAGICFS!" at byte 0, label after it. It also
// checks that the reader it gets is bounded to the size it was told.
type magicFS struct{}

type magicVol struct{ label string }

func (magicFS) Name() string { return "magic" }

func (magicFS) Open(r io.ReaderAt, size int64) (fsdrivers.Volume, error) {
	b := make([]byte, 16)
	if _, err := r.ReadAt(b, 0); err != nil {
		return nil, err
	}
	if string(b[:8]) != "MAGICFS!" {
		return nil, fmt.Errorf("magic: %w", fsdrivers.ErrNotFound)
	}
	if n, err := r.ReadAt(make([]byte, 1), size); n != 0 || err != io.EOF {
		return nil, fmt.Errorf("magic: reader not bounded at %d: %d, %v", size, n, err)
	}
	return magicVol{strings.TrimRight(string(b[8:]), "\x00")}, nil
}

func (magicVol) Type() string    { return "magic" }
func (magicVol) UUID() string    { return "" }
func (v magicVol) Label() string { return v.label }

var drivers = []fsdrivers.Driver{magicFS{}, swap.Driver{}}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

// mkswapBytes returns a fresh swap area of size bytes made by mkswap.
func mkswapBytes(t *testing.T, size int64, uuid string) []byte {
	t.Helper()
	p := t.TempDir() + "/swap"
	if err := os.WriteFile(p, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkswap", "-U", uuid, p).CombinedOutput(); err != nil {
		t.Fatalf("mkswap: %v\n%s", err, out)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// makeDisk builds an MBR disk: 1 swap, 2 magic, 3 extended, 5 swap
// (logical), 6 empty (logical).
func makeDisk(t *testing.T) []byte {
	t.Helper()
	needTools(t, "sfdisk", "mkswap")
	p := t.TempDir() + "/disk.img"
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 32*mib); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sfdisk", "-q", p)
	cmd.Stdin = strings.NewReader("label: dos\nstart=2048, size=8192, type=82\nsize=4096, type=83\ntype=5\nsize=8192, type=82\ntype=83\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	disk, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := parttable.Read(bytes.NewReader(disk), int64(len(disk)), 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range tb.Partitions {
		switch part.Number {
		case 1:
			copy(disk[part.Start:], mkswapBytes(t, part.Size, "11111111-0000-4000-8000-000000000001"))
		case 2:
			copy(disk[part.Start:], "MAGICFS!hello")
		case 5:
			copy(disk[part.Start:], mkswapBytes(t, part.Size, "11111111-0000-4000-8000-000000000005"))
		}
	}
	return disk
}

func TestOpenMBR(t *testing.T) {
	raw := makeDisk(t)
	d, err := Open(bytes.NewReader(raw), int64(len(raw)), 0, drivers)
	if err != nil {
		t.Fatal(err)
	}
	if d.Table.Kind != parttable.KindMBR || len(d.Parts) != 5 {
		t.Fatalf("table %+v, %d parts", d.Table, len(d.Parts))
	}
	want := []struct {
		n         int
		typ, uuid string
		probeErr  bool
	}{
		{1, "swap", "11111111-0000-4000-8000-000000000001", false},
		{2, "magic", "", false},
		{3, "", "", false}, // extended: not probed
		{5, "swap", "11111111-0000-4000-8000-000000000005", false},
		{6, "", "", true},
	}
	for i, w := range want {
		p := d.Parts[i]
		if p.Number != w.n {
			t.Fatalf("part %d is number %d, want %d", i, p.Number, w.n)
		}
		if p.Reader.Size() != p.Size {
			t.Errorf("part %d reader size %d, partition %d", p.Number, p.Reader.Size(), p.Size)
		}
		if n, err := p.Reader.ReadAt(make([]byte, 10), p.Size-5); n != 5 || err != io.EOF {
			t.Errorf("part %d: read across its end: %d, %v", p.Number, n, err)
		}
		if (p.ProbeErr != nil) != w.probeErr {
			t.Errorf("part %d probe error %v", p.Number, p.ProbeErr)
		}
		if w.typ == "" {
			if p.Volume != nil {
				t.Errorf("part %d: volume %v", p.Number, p.Volume)
			}
			continue
		}
		if p.Volume == nil || p.Volume.Type() != w.typ || p.Volume.UUID() != w.uuid {
			t.Errorf("part %d: volume %#v, want %s %s", p.Number, p.Volume, w.typ, w.uuid)
		}
	}
	// The probe error explains every driver's verdict.
	if e := d.Parts[4].ProbeErr; !errors.Is(e, fsdrivers.ErrNotFound) || !strings.Contains(e.Error(), "magic") ||
		!strings.Contains(e.Error(), "swap") || !strings.Contains(e.Error(), "partition 6") {
		t.Errorf("probe error %q", e)
	}
	if p, err := d.Find(5); err != nil || p.Volume.Type() != "swap" {
		t.Errorf("Find(5): %v, %v", p, err)
	}
	_, err = d.Find(4)
	if !errors.Is(err, ErrNoPartition) || !strings.Contains(err.Error(), "partitions: 1, 2, 3, 5, 6") {
		t.Errorf("Find(4): %v", err)
	}
}

func TestOpenBare(t *testing.T) {
	needTools(t, "mkswap")
	raw := mkswapBytes(t, 4*mib, "11111111-0000-4000-8000-000000000009")
	d, err := Open(bytes.NewReader(raw), int64(len(raw)), 0, drivers)
	if err != nil {
		t.Fatal(err)
	}
	if d.Table.Kind != parttable.KindNone || len(d.Parts) != 1 {
		t.Fatalf("table %+v, parts %+v", d.Table, d.Parts)
	}
	p, err := d.Find(1)
	if err != nil || p.Start != 0 || p.Size != 4*mib || p.Volume == nil || p.Volume.Type() != "swap" {
		t.Fatalf("Find(1): %+v, %v", p, err)
	}
	if _, err := d.Find(2); !errors.Is(err, ErrNoPartition) || !strings.Contains(err.Error(), "no partition table") {
		t.Errorf("Find(2): %v", err)
	}
	// Nothing recognisable and no drivers: still one part, with a reason.
	d, err = Open(bytes.NewReader(make([]byte, mib)), mib, 0, nil)
	if err != nil || len(d.Parts) != 1 || d.Parts[0].Volume != nil || d.Parts[0].ProbeErr == nil {
		t.Errorf("zeros: %+v, %v", d, err)
	}
}

func TestOpenCorrupt(t *testing.T) {
	raw := makeDisk(t)
	// Partition 1 now runs past the disk's end.
	raw[446+12+3] = 0x7f
	if _, err := Open(bytes.NewReader(raw), int64(len(raw)), 0, drivers); !errors.Is(err, parttable.ErrCorrupt) {
		t.Errorf("corrupt table: %v", err)
	}
}

// TestOpenGPTWithNTFS runs the real drivers over a GPT disk built by
// sgdisk with an NTFS (mkntfs) and a swap partition.
func TestOpenGPTWithNTFS(t *testing.T) {
	needTools(t, "sgdisk", "mkntfs", "mkswap")
	dir := t.TempDir()
	p := dir + "/disk.img"
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 48*mib); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sgdisk", "-n", "1:2048:+24M", "-t", "1:0700", "-n", "2:0:0", "-t", "2:8200", p).CombinedOutput(); err != nil {
		t.Fatalf("sgdisk: %v\n%s", err, out)
	}
	nt := dir + "/ntfs.img"
	if err := os.WriteFile(nt, make([]byte, 24*mib), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkntfs", "-F", "-Q", "-T", "-L", "win", nt).CombinedOutput(); err != nil {
		t.Fatalf("mkntfs: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	ntfsBytes, err := os.ReadFile(nt)
	if err != nil {
		t.Fatal(err)
	}
	copy(raw[2048*512:], ntfsBytes)
	tb, err := parttable.Read(bytes.NewReader(raw), int64(len(raw)), 0)
	if err != nil {
		t.Fatal(err)
	}
	copy(raw[tb.Partitions[1].Start:], mkswapBytes(t, tb.Partitions[1].Size, "11111111-0000-4000-8000-000000000002"))

	d, err := Open(bytes.NewReader(raw), int64(len(raw)), 0, []fsdrivers.Driver{ntfs.Driver{}, swap.Driver{}})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Parts) != 2 || d.Parts[0].Volume == nil || d.Parts[1].Volume == nil {
		t.Fatalf("parts %+v", d.Parts)
	}
	if v := d.Parts[0].Volume; v.Type() != "ntfs" || v.Label() != "win" {
		t.Errorf("partition 1: %s %q", v.Type(), v.Label())
	}
	if v := d.Parts[1].Volume; v.Type() != "swap" || v.UUID() != "11111111-0000-4000-8000-000000000002" {
		t.Errorf("partition 2: %s %q", v.Type(), v.UUID())
	}
	// The NTFS volume's used ranges stay inside its partition.
	rs, err := d.Parts[0].Volume.(fsdrivers.UsedRanger).UsedRanges()
	if err != nil || len(rs) == 0 || rs[len(rs)-1].Off+rs[len(rs)-1].Len > d.Parts[0].Size {
		t.Errorf("used ranges %v, %v", rs, err)
	}
}
