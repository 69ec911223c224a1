package parttable

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
)

// seeded is a deterministic random stream for NewGUIDs.
func seeded(seed byte) *rand.ChaCha8 {
	var s [32]byte
	s[0] = seed
	return rand.NewChaCha8(s)
}

func growFile(t testing.TB, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

func readNoWarnings(t testing.TB, path string, ss int) *Table {
	t.Helper()
	tb := readFile(t, path, ss)
	if len(tb.Warnings) != 0 {
		t.Errorf("warnings: %q", tb.Warnings)
	}
	return tb
}

func lastUsable(t testing.TB, dev string) int64 {
	t.Helper()
	out := run(t, "", "sgdisk", "-p", dev)
	v := sgdiskField(t, out, "First usable sector is ")
	n, err := strconv.ParseInt(v[strings.LastIndex(v, " ")+1:], 10, 64)
	if err != nil {
		t.Fatalf("parse %q: %v", v, err)
	}
	return n
}

func TestRelocateAndGrowGPT(t *testing.T) {
	for _, damage := range []string{"", "primary", "backup"} {
		t.Run("damage="+damage, func(t *testing.T) {
			p := makeGPT(t)
			before := readFile(t, p, 0)
			f := openRW(t, p)
			switch damage {
			case "primary":
				f.WriteAt([]byte("XX"), 512+60)
			case "backup":
				f.WriteAt([]byte("XX"), 32*mib-512+60)
			}
			growFile(t, p, 48*mib)
			// Without RelocateGPT there is no backup at the end: an error
			// (ErrCorrupt when the primary is damaged too).
			if _, err := GrowLastPartition(f, 48*mib, 0); err == nil ||
				damage != "primary" && !strings.Contains(err.Error(), "RelocateGPT") {
				t.Errorf("grow before relocate: %v", err)
			}
			if err := RelocateGPT(f, 32*mib, 48*mib, 0); err != nil {
				t.Fatal(err)
			}
			sgdiskVerify(t, p)
			if got, want := lastUsable(t, p), int64(48*mib/512-34); got != want {
				t.Errorf("last usable %d, want %d", got, want)
			}
			after := readNoWarnings(t, p, 0)
			compareSfdisk(t, p, after)
			for i := range after.Partitions {
				if after.Partitions[i] != before.Partitions[i] {
					t.Errorf("partition changed: %+v -> %+v", before.Partitions[i], after.Partitions[i])
				}
			}
			// The old backup header is gone.
			old := make([]byte, 8)
			f.ReadAt(old, 32*mib-512)
			if !isZero(old) {
				t.Errorf("old backup header left: %q", old)
			}

			got, err := GrowLastPartition(f, 48*mib, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got.Number != 4 || got.Start+got.Size != (48*mib/512-33)*512 {
				t.Errorf("grown partition %+v", got)
			}
			sgdiskVerify(t, p)
			compareSfdisk(t, p, readNoWarnings(t, p, 0))
			sgdiskCompare(t, p, readFile(t, p, 0))
		})
	}
}

func TestRelocateShrink(t *testing.T) {
	p := makeGPT(t)
	f := openRW(t, p)
	err := RelocateGPT(f, 32*mib, 16*mib, 0)
	if err == nil || !strings.Contains(err.Error(), "partition 4") {
		t.Errorf("shrink below partition 4: %v", err)
	}
	// Shrinking that keeps every partition works (clone to a smaller disk).
	run(t, "", "sgdisk", "-d", "4", p)
	if err := RelocateGPT(f, 32*mib, 16*mib, 0); err != nil {
		t.Fatal(err)
	}
	growFile(t, p, 16*mib)
	sgdiskVerify(t, p)
	readNoWarnings(t, p, 0)
}

func TestRelocate4Kn(t *testing.T) {
	needTools(t, "sfdisk", "sgdisk")
	p := newDisk(t, 64*mib)
	dev := attachLoop(t, p, 4096)
	runNoFail(t, "label: gpt\nlabel-id: "+diskGUID+"\nfirst-lba: 6\nstart=256, size=2560, type=U\ntype=L\n", "sfdisk", "-q", dev)
	growFile(t, p, 96*mib)
	run(t, "", "losetup", "-c", dev) // refresh the loop device's size
	f := openRW(t, p)
	if err := RelocateGPT(f, 64*mib, 96*mib, 0); err != nil {
		t.Fatal(err)
	}
	sgdiskVerify(t, dev)
	if _, err := GrowLastPartition(f, 96*mib, 0); err != nil {
		t.Fatal(err)
	}
	sgdiskVerify(t, dev)
	tb := readNoWarnings(t, p, 0)
	compareSfdisk(t, dev, tb)
	if last := tb.Partitions[1]; last.Start+last.Size != 96*mib-5*4096 {
		t.Errorf("grown 4Kn partition ends at %d", last.Start+last.Size)
	}
}

func sfdiskVerify(t testing.TB, dev string) {
	t.Helper()
	if out := run(t, "", "sfdisk", "-V", dev); !strings.Contains(out, "No errors detected") {
		t.Errorf("sfdisk -V %s:\n%s", dev, out)
	}
}

func TestGrowMBR(t *testing.T) {
	cases := []struct {
		name, script string
		want         []int // partitions whose end must be the disk's end
	}{
		{"primary", "label: dos\nstart=2048, size=4096, type=c\nstart=8192, size=8192, type=83\n", []int{2}},
		{"logical", strings.Replace(mbrScript, "%s", "5", 1), []int{3, 7}},
		{"logical ext 0x0f", strings.Replace(mbrScript, "%s", "f", 1), []int{3, 7}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			needTools(t, "sfdisk")
			p := newDisk(t, 64*mib)
			run(t, c.script, "sfdisk", "-q", p)
			before := readFile(t, p, 0)
			growFile(t, p, 100*mib)
			f := openRW(t, p)
			got, err := GrowLastPartition(f, 100*mib, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got.Start+got.Size != 100*mib {
				t.Errorf("grown %+v", got)
			}
			sfdiskVerify(t, p)
			after := readNoWarnings(t, p, 0)
			compareSfdisk(t, p, after)
			for i, q := range after.Partitions {
				grown := false
				for _, n := range c.want {
					grown = grown || n == q.Number
				}
				b := before.Partitions[i]
				if grown {
					b.Size = 100*mib - b.Start
				}
				if q != b {
					t.Errorf("partition %d: %+v, want %+v", q.Number, q, b)
				}
			}
			// Growing again is a no-op.
			again, err := GrowLastPartition(f, 100*mib, 0)
			if err != nil || *again != *got {
				t.Errorf("second grow: %+v, %v", again, err)
			}
		})
	}
}

func TestNewGUIDs(t *testing.T) {
	t.Run("gpt", func(t *testing.T) {
		p := makeGPT(t)
		before := readFile(t, p, 0)
		f := openRW(t, p)
		if err := NewGUIDs(f, 32*mib, 0, seeded(1)); err != nil {
			t.Fatal(err)
		}
		sgdiskVerify(t, p)
		after := readNoWarnings(t, p, 0)
		compareSfdisk(t, p, after)
		sgdiskCompare(t, p, after)
		if g := sgdiskField(t, run(t, "", "sgdisk", "-p", p), "Disk identifier (GUID):"); g != after.DiskGUID || g == before.DiskGUID {
			t.Errorf("disk GUID %s (sgdisk %s, before %s)", after.DiskGUID, g, before.DiskGUID)
		}
		seen := map[string]bool{after.DiskGUID: true}
		for i, q := range after.Partitions {
			if seen[q.GUID] || q.GUID == before.Partitions[i].GUID || q.GUID[14] != '4' {
				t.Errorf("partition %d GUID %s not new, unique and version 4", q.Number, q.GUID)
			}
			seen[q.GUID] = true
			q.GUID = before.Partitions[i].GUID
			if q != before.Partitions[i] {
				t.Errorf("partition changed beyond its GUID: %+v", q)
			}
		}
		// Deterministic for a given random stream.
		p2 := makeGPT(t)
		if err := NewGUIDs(openRW(t, p2), 32*mib, 0, seeded(1)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(loadBytes(t, p), loadBytes(t, p2)) {
			t.Error("same seed, different disks")
		}
	})
	t.Run("mbr", func(t *testing.T) {
		p := makeMBR(t, "5")
		f := openRW(t, p)
		if err := NewGUIDs(f, 64*mib, 0, seeded(2)); err != nil {
			t.Fatal(err)
		}
		sfdiskVerify(t, p)
		after := readNoWarnings(t, p, 0)
		compareSfdisk(t, p, after)
		if after.MBRSignature == 0x12345678 || after.MBRSignature == 0 {
			t.Errorf("signature %#x", after.MBRSignature)
		}
	})
	t.Run("none", func(t *testing.T) {
		disk := make([]byte, mib)
		err := NewGUIDs(&memDisk{disk}, mib, 0, seeded(3))
		if !errors.Is(err, ErrNoTable) {
			t.Errorf("bare disk: %v", err)
		}
		if _, err := GrowLastPartition(&memDisk{disk}, mib, 0); !errors.Is(err, ErrNoTable) {
			t.Errorf("bare disk grow: %v", err)
		}
		if err := RelocateGPT(&memDisk{disk}, mib, 2*mib, 0); !errors.Is(err, ErrNoTable) {
			t.Errorf("bare disk relocate: %v", err)
		}
	})
}

// memDisk is an in-memory ReadWriterAt of fixed size.
type memDisk struct{ b []byte }

func (m *memDisk) ReadAt(p []byte, off int64) (int, error) {
	return bytes.NewReader(m.b).ReadAt(p, off)
}

func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, errors.New("memDisk: write past end")
	}
	return copy(m.b[off:], p), nil
}
