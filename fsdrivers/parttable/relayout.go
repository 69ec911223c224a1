package parttable

import (
	"encoding/binary"
	"fmt"
	"io"
	"sort"
)

// Extent is where a partition lies, in bytes from the disk's start.
type Extent struct {
	Start, Size int64
}

// Relayout writes to dst the partition table of the disk src (oldSize
// bytes) laid out anew for a disk of newSize bytes: each partition number
// in place gets that start and size; others keep theirs. Partitions keep
// their numbers, types, GUIDs, names and flags.
//
//   - GPT: both copies are written for newSize (the backup at its last
//     LBA), CRCs recomputed, and the protective MBR's 0xEE entry resized.
//     A hybrid MBR is refused: its entries would no longer match.
//   - MBR: sector 0's entries are rewritten and the EBR chain is written
//     anew: each logical partition's EBR keeps its distance to its
//     partition, the extended container spans its first EBR to its last
//     logical partition's end (an entry for it in place is ignored), and
//     the links follow the usual convention (a link entry spans the next
//     EBR to the end of its logical partition). Only the standard chain
//     (one data entry per EBR, in disk order) is handled.
//
// Nothing is written to src; dst receives whole sectors (sector 0, the
// GPT headers and entry arrays, the EBRs), so a caller can collect them
// in memory. Partitions must not overlap and must fit the new disk.
func Relayout(src io.ReaderAt, oldSize int64, dst io.WriterAt, newSize int64, sectorSize int, place map[int]Extent) error {
	t, err := Read(src, oldSize, sectorSize)
	if err != nil {
		return fmt.Errorf("parttable: relayout: %w", err)
	}
	ss := int64(t.SectorSize)
	for n, e := range place {
		if e.Start%ss != 0 || e.Size%ss != 0 || e.Start <= 0 || e.Size <= 0 {
			return fmt.Errorf("parttable: relayout: partition %d at %d, %d bytes: not whole %d-byte sectors", n, e.Start, e.Size, ss)
		}
	}
	switch t.Kind {
	case KindGPT:
		err = relayoutGPT(src, oldSize, dst, newSize, t.SectorSize, place)
	case KindMBR:
		err = relayoutMBR(src, oldSize, dst, newSize, t.SectorSize, place)
	default:
		err = ErrNoTable
	}
	if err != nil {
		return fmt.Errorf("parttable: relayout: %w", err)
	}
	return nil
}

func relayoutGPT(src io.ReaderAt, oldSize int64, dst io.WriterAt, newSize int64, ss int, place map[int]Extent) error {
	_, g, err := loadGPTForWrite(src, oldSize, ss)
	if err != nil {
		return err
	}
	sec0 := make([]byte, ss)
	if err := readFull(src, sec0, 0); err != nil {
		return fmt.Errorf("read protective MBR: %w", err)
	}
	if m, ok := parseMBR(sec0); ok && m.hybrid() {
		return fmt.Errorf("the disk has a hybrid MBR, whose entries would no longer match the moved partitions")
	}
	entries := append([]byte(nil), g.entries...)
	newLBAs := uint64(newSize) / uint64(ss)
	entSec := uint64(g.hdr.entriesSectors(ss))
	if newLBAs < entSec*2+3 {
		return fmt.Errorf("new disk of %d bytes is too small for a GPT", newSize)
	}
	newLast := newLBAs - 1
	lastUsable := newLast - entSec - 1
	le := binary.LittleEndian
	type span struct {
		n           int
		first, last uint64
	}
	var spans []span
	for _, e := range g.usedEntries() {
		raw := entries[e.index*int(g.hdr.entrySize):][:g.hdr.entrySize]
		first, last := e.first, e.last
		if p, ok := place[e.index+1]; ok {
			first = uint64(p.Start) / uint64(ss)
			last = first + uint64(p.Size)/uint64(ss) - 1
			le.PutUint64(raw[gptEntFirstOff:], first)
			le.PutUint64(raw[gptEntLastOff:], last)
		}
		if first < g.hdr.firstUsable || last > lastUsable {
			return fmt.Errorf("partition %d (LBA %d-%d) lies outside the new usable LBAs %d-%d", e.index+1, first, last, g.hdr.firstUsable, lastUsable)
		}
		spans = append(spans, span{e.index + 1, first, last})
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].first < spans[j].first })
	for i := 1; i < len(spans); i++ {
		if spans[i].first <= spans[i-1].last {
			return fmt.Errorf("partitions %d and %d would overlap", spans[i-1].n, spans[i].n)
		}
	}
	if m, ok := parseMBR(sec0); ok && m.protective() {
		for i, e := range m.entries {
			if e.typ == mbrTypeGPT && e.start == 1 {
				setEntryEnd(sec0, i, 0, int64(min(newLast, 0xffffffff))+1)
			}
		}
	}
	if err := writeFull(dst, sec0, 0); err != nil {
		return fmt.Errorf("write protective MBR: %w", err)
	}
	return writeGPT(dst, ss, g.hdr.raw, entries, g.primaryEntryLBA(), newLast, lastUsable)
}

func relayoutMBR(src io.ReaderAt, oldSize int64, dst io.WriterAt, newSize int64, ss int, place map[int]Extent) error {
	s := int64(ss)
	sec0 := make([]byte, 512)
	if err := readFull(src, sec0, 0); err != nil {
		return fmt.Errorf("read MBR: %w", err)
	}
	m, _ := parseMBR(sec0)
	_, parts, err := readMBRLayout(src, oldSize, ss, m)
	if err != nil {
		return err
	}
	newLBAs := newSize / s
	where := func(p mbrPart) (start, size int64) {
		if e, ok := place[p.Number]; ok {
			return e.Start / s, e.Size / s
		}
		return p.Start / s, p.Size / s
	}
	// Logical partitions per extended container, in chain order.
	logical := map[int][]mbrPart{}
	for _, p := range parts {
		if p.Logical {
			if p.slot != 0 {
				return fmt.Errorf("logical partition %d is in slot %d of its EBR; only one data entry per EBR (slot 1) is handled", p.Number, p.slot+1)
			}
			logical[p.ext] = append(logical[p.ext], p)
		}
	}
	type span struct{ n, first, end int64 }
	var spans []span
	for _, p := range parts {
		if p.Logical {
			continue
		}
		start, size := where(p)
		if p.Extended {
			ls := logical[p.slot]
			if len(ls) == 0 {
				start, size = p.Start/s, p.Size/s // an empty container stays
			} else {
				for i := 1; i < len(ls); i++ {
					if ls[i].Start < ls[i-1].Start {
						return fmt.Errorf("the EBR chain is not in disk order (logical partition %d before %d)", ls[i-1].Number, ls[i].Number)
					}
				}
				ebrs := make([]int64, len(ls))
				for i, l := range ls {
					ls, _ := where(l)
					ebrs[i] = ls - (l.Start/s - l.tableLBA)
				}
				start = ebrs[0]
				lastStart, lastSize := where(ls[len(ls)-1])
				size = lastStart + lastSize - start
				if err := writeEBRChain(src, dst, ss, start, ls, ebrs, where); err != nil {
					return err
				}
			}
		}
		if start+size > newLBAs || start+size > 0xffffffff || start <= 0 {
			return fmt.Errorf("partition %d (sectors %d-%d) does not fit the new disk of %d sectors", p.Number, start, start+size-1, newLBAs)
		}
		o := mbrEntriesOff + p.slot*mbrEntrySize
		binary.LittleEndian.PutUint32(sec0[o+8:], uint32(start))
		putCHS(sec0[o+1:o+4], start)
		setEntryEnd(sec0, p.slot, 0, start+size)
		spans = append(spans, span{int64(p.Number), start, start + size})
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].first < spans[j].first })
	for i := 1; i < len(spans); i++ {
		if spans[i].first < spans[i-1].end {
			return fmt.Errorf("partitions %d and %d would overlap", spans[i-1].n, spans[i].n)
		}
	}
	return writeFull(dst, sec0, 0)
}

// writeEBRChain writes the EBRs of the logical partitions ls, the i-th at
// sector ebrs[i]; extStart is the extended container's new start, which
// the link entries are relative to.
func writeEBRChain(src io.ReaderAt, dst io.WriterAt, ss int, extStart int64, ls []mbrPart, ebrs []int64, where func(mbrPart) (int64, int64)) error {
	s := int64(ss)
	for i, l := range ls {
		sec := make([]byte, ss)
		if err := readFull(src, sec, l.tableLBA*s); err != nil {
			return fmt.Errorf("read EBR at sector %d: %w", l.tableLBA, err)
		}
		old1 := parseEntry(sec, 1)
		// Entries 2-4 are unused in a standard chain; clear them along with
		// the link, which is rebuilt below.
		clear(sec[mbrEntriesOff+mbrEntrySize : mbrMagicOff])
		start, size := where(l)
		if start-ebrs[i] <= 0 {
			return fmt.Errorf("logical partition %d would start at or before its EBR", l.Number)
		}
		o := mbrEntriesOff
		binary.LittleEndian.PutUint32(sec[o+8:], uint32(start-ebrs[i]))
		putCHS(sec[o+1:o+4], start)
		setEntryEnd(sec, 0, ebrs[i], start+size)
		if i+1 < len(ls) {
			typ := old1.typ
			if !isExtendedType(typ) {
				typ = 0x05
			}
			ns, nsize := where(ls[i+1])
			o := mbrEntriesOff + mbrEntrySize
			sec[o+4] = typ
			binary.LittleEndian.PutUint32(sec[o+8:], uint32(ebrs[i+1]-extStart))
			putCHS(sec[o+1:o+4], ebrs[i+1])
			setEntryEnd(sec, 1, extStart, ns+nsize)
		}
		if i > 0 && ebrs[i] < start && ebrs[i] <= ebrs[i-1] {
			return fmt.Errorf("EBR of logical partition %d would not follow the previous one", l.Number)
		}
		if err := writeFull(dst, sec, ebrs[i]*s); err != nil {
			return fmt.Errorf("write EBR at sector %d: %w", ebrs[i], err)
		}
	}
	return nil
}
