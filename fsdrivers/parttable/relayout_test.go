package parttable

import (
	"testing"
)

// TestRelayoutGPT moves and shrinks GPT partitions onto a smaller disk:
// sgdisk -v must find the result clean (backup at the new end) and every
// entry must keep its number, type, GUID and name.
func TestRelayoutGPT(t *testing.T) {
	src := makeGPT(t) // 1: 1 MiB +4M, 2: 5 MiB +8M, 4: 13 MiB to the end (32 MiB)
	before := readFile(t, src, 0)
	dst := newDisk(t, 24*mib)
	place := map[int]Extent{2: {5 * mib, 4 * mib}, 4: {9 * mib, 8 * mib}}
	if err := Relayout(openRW(t, src), 32*mib, openRW(t, dst), 24*mib, 0, place); err != nil {
		t.Fatal(err)
	}
	sgdiskVerify(t, dst)
	after := readNoWarnings(t, dst, 0)
	compareSfdisk(t, dst, after)
	for i, q := range after.Partitions {
		want := before.Partitions[i]
		if e, ok := place[want.Number]; ok {
			want.Start, want.Size = e.Start, e.Size
		}
		if q != want {
			t.Errorf("partition %d: %+v, want %+v", q.Number, q, want)
		}
	}
	// The source is never written.
	if again := readNoWarnings(t, src, 0); len(again.Partitions) != len(before.Partitions) || again.Partitions[2] != before.Partitions[2] {
		t.Errorf("source table changed: %+v", again.Partitions)
	}
	// Overlap and a partition past the new end are refused.
	for name, bad := range map[string]map[int]Extent{
		"overlap": {2: {5 * mib, 8 * mib}, 4: {9 * mib, 8 * mib}},
		"past":    {4: {13 * mib, 12 * mib}},
	} {
		if err := Relayout(openRW(t, src), 32*mib, openRW(t, newDisk(t, 24*mib)), 24*mib, 0, bad); err == nil {
			t.Errorf("%s: not refused", name)
		}
	}
}

// TestRelayoutMBRLogical moves logical partitions: the EBR chain is
// written anew at the new places, the extended container follows them,
// and sfdisk reads the same partitions.
func TestRelayoutMBRLogical(t *testing.T) {
	src := makeMBR(t, "5")
	before := readFile(t, src, 0)
	s := int64(512)
	// 1: 2048+20480, 2: 22528+10240, 3: extended from 32768; 5, 6, 7 logical.
	place := map[int]Extent{
		2: {22528 * s, 4096 * s},
		5: {28672 * s, 8192 * s},
		6: {38912 * s, 8192 * s},
		7: {49152 * s, 20480 * s},
	}
	dst := newDisk(t, 48*mib)
	if err := Relayout(openRW(t, src), 64*mib, openRW(t, dst), 48*mib, 0, place); err != nil {
		t.Fatal(err)
	}
	sfdiskVerify(t, dst)
	after := readNoWarnings(t, dst, 0)
	compareSfdisk(t, dst, after)
	if len(after.Partitions) != len(before.Partitions) {
		t.Fatalf("%d partitions, want %d", len(after.Partitions), len(before.Partitions))
	}
	for i, q := range after.Partitions {
		want := before.Partitions[i]
		if e, ok := place[want.Number]; ok {
			want.Start, want.Size = e.Start, e.Size
		}
		if want.Extended {
			want.Start, want.Size = 26624*s, (69632-26624)*s
		}
		if q != want {
			t.Errorf("partition %d: %+v, want %+v", q.Number, q, want)
		}
	}
}
