package parttable

import (
	"bytes"
	"encoding/binary"
	"os/exec"
	"testing"
)

// buildGPT writes a small GPT disk in memory (protective MBR, both copies)
// for fuzz seeds; parts are inclusive LBA ranges.
func buildGPT(sectors, ss int, parts [][2]uint64) []byte {
	disk := make([]byte, sectors*ss)
	le := binary.LittleEndian
	const n, esize = 4, 128
	entries := make([]byte, n*esize)
	for i, p := range parts {
		e := entries[i*esize:]
		copy(e, []byte{0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4})
		e[16] = byte(i + 1)
		le.PutUint64(e[gptEntFirstOff:], p[0])
		le.PutUint64(e[gptEntLastOff:], p[1])
		e[gptEntNameOff] = 'p'
	}
	last := uint64(sectors - 1)
	entSec := uint64((len(entries) + ss - 1) / ss)
	h := make([]byte, ss)
	copy(h, gptSignature)
	le.PutUint32(h[gptRevisionOff:], 0x00010000)
	le.PutUint32(h[gptHdrSizeOff:], gptMinHdrSize)
	le.PutUint64(h[gptFirstUsOff:], 2+entSec)
	h[gptDiskGUIDOff] = 0x42
	le.PutUint32(h[gptNumEntriesOff:], n)
	le.PutUint32(h[gptEntrySizeOff:], esize)
	if err := writeGPT(&memDisk{disk}, ss, h, entries, 2, last, last-entSec-1); err != nil {
		panic(err)
	}
	disk[446+4] = mbrTypeGPT
	le.PutUint32(disk[446+8:], 1)
	le.PutUint32(disk[446+12:], uint32(last))
	disk[510], disk[511] = 0x55, 0xaa
	return disk
}

// buildMBR writes a small MBR disk with one primary and an extended
// container holding two logical partitions.
func buildMBR(ss int) []byte {
	disk := make([]byte, 40*ss)
	le := binary.LittleEndian
	put := func(sector, slot int, typ byte, start, size uint32) {
		o := sector*ss + 446 + 16*slot
		disk[o+4] = typ
		le.PutUint32(disk[o+8:], start)
		le.PutUint32(disk[o+12:], size)
		disk[sector*ss+510], disk[sector*ss+511] = 0x55, 0xaa
	}
	put(0, 0, 0x83, 2, 10)
	put(0, 1, 0x05, 16, 24)
	put(16, 0, 0x83, 2, 6) // logical 5 at 18
	put(16, 1, 0x05, 8, 16)
	put(24, 0, 0x82, 2, 14) // logical 6 at 26
	return disk
}

// FuzzRead feeds Read (and the writers, on whatever Read accepts) with
// mutated disks. Seeds are kept to a few KiB: the fuzzer minimises every
// interesting input byte by byte, which takes minutes on 64 KiB disks.
func FuzzRead(f *testing.F) {
	f.Add(buildGPT(16, 512, [][2]uint64{{4, 8}, {9, 12}}), uint8(0))
	f.Add(buildGPT(8, 4096, [][2]uint64{{3, 4}, {5, 5}}), uint8(0))
	f.Add(buildMBR(512), uint8(1))
	f.Add(buildMBR(512), uint8(2))
	f.Add(make([]byte, 1024), uint8(0))
	if _, err := exec.LookPath("sfdisk"); err == nil {
		// sfdisk's own output as a seed.
		p := newDisk(f, 40*512)
		cmd := exec.Command("sfdisk", "-q", p)
		cmd.Stdin = bytes.NewReader([]byte("label: dos\nstart=2,size=6,type=83\nstart=10,type=5\nsize=8\nsize=8\n"))
		if cmd.Run() == nil {
			f.Add(loadBytes(f, p), uint8(1))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, pick uint8) {
		ss := []int{0, 512, 4096}[pick%3]
		size := int64(len(data))
		tb, err := Read(bytes.NewReader(data), size, ss)
		if err != nil {
			return
		}
		nums := map[int]bool{}
		for _, p := range tb.Partitions {
			if p.Start <= 0 || p.Size <= 0 || p.Start+p.Size > size || nums[p.Number] {
				t.Fatalf("bad partition %+v on a %d-byte disk", p, size)
			}
			nums[p.Number] = true
		}
		for _, r := range tb.Reserved {
			if r.Off < 0 || r.Len <= 0 || r.Off+r.Len > size {
				t.Fatalf("bad reserved range %+v", r)
			}
		}
		if tb.Kind == KindNone {
			return
		}
		// The writers must not panic on whatever Read accepted.
		disk := &memDisk{bytes.Clone(data)}
		GrowLastPartition(disk, size, ss)
		disk = &memDisk{bytes.Clone(data)}
		NewGUIDs(disk, size, ss, seeded(0))
		disk = &memDisk{bytes.Clone(data)}
		RelocateGPT(disk, size, size, ss)
	})
}

// TestFuzzSeeds checks that the hand-built seeds are tables, so the fuzzer
// starts from the interesting side of the parser.
func TestFuzzSeeds(t *testing.T) {
	for _, c := range []struct {
		disk []byte
		ss   int
		kind string
		n    int
	}{
		{buildGPT(16, 512, [][2]uint64{{4, 8}, {9, 12}}), 0, KindGPT, 2},
		{buildGPT(8, 4096, [][2]uint64{{3, 4}, {5, 5}}), 0, KindGPT, 2},
		{buildMBR(512), 0, KindMBR, 4},
		{buildMBR(4096), 4096, KindMBR, 4},
	} {
		tb, err := Read(bytes.NewReader(c.disk), int64(len(c.disk)), c.ss)
		if err != nil || tb.Kind != c.kind || len(tb.Partitions) != c.n || len(tb.Warnings) != 0 {
			t.Errorf("seed: %+v, %v", tb, err)
		}
	}
}
