package parttable

import (
	"encoding/binary"
	"fmt"
	"io"
)

// On-disk MBR layout (the first 512 bytes of sector 0 and of every EBR).
const (
	mbrSigOff     = 440 // 4-byte disk signature (MBR only)
	mbrEntriesOff = 446 // four 16-byte entries
	mbrEntrySize  = 16
	mbrMagicOff   = 510 // 0x55 0xAA

	// maxEBRs bounds an EBR chain: Linux supports at most 256 partitions
	// per disk, so a longer chain is hostile or looping.
	maxEBRs = 256
)

// mbrEntry is one 16-byte entry. start and size are in sectors; start is
// absolute for primary entries, relative for EBR entries.
type mbrEntry struct {
	boot  byte
	typ   byte
	start uint32
	size  uint32
}

func (e mbrEntry) used() bool { return e.typ != mbrTypeEmpty && e.size != 0 }

func parseEntry(b []byte, slot int) mbrEntry {
	o := mbrEntriesOff + slot*mbrEntrySize
	return mbrEntry{
		boot:  b[o],
		typ:   b[o+4],
		start: binary.LittleEndian.Uint32(b[o+8:]),
		size:  binary.LittleEndian.Uint32(b[o+12:]),
	}
}

type mbr struct {
	sig     uint32
	entries [4]mbrEntry
}

func hasMagic(b []byte) bool { return b[mbrMagicOff] == 0x55 && b[mbrMagicOff+1] == 0xaa }

// parseMBR decodes sector 0. ok is false when the sector is not an MBR:
// no 0x55AA, boot flags other than 0x00/0x80 (the kernel's test), or a
// filesystem boot sector (a bare FAT or NTFS volume also ends in 0x55AA).
func parseMBR(b []byte) (m mbr, ok bool) {
	if !hasMagic(b) || looksLikeVBR(b) {
		return m, false
	}
	m.sig = binary.LittleEndian.Uint32(b[mbrSigOff:])
	for i := range m.entries {
		m.entries[i] = parseEntry(b, i)
		if f := m.entries[i].boot; f != 0 && f != 0x80 {
			return m, false
		}
	}
	return m, true
}

// looksLikeVBR reports whether b is a filesystem's boot sector rather than
// an MBR: NTFS and exFAT name themselves; FAT is recognised by a plausible
// BIOS parameter block after a jump instruction.
func looksLikeVBR(b []byte) bool {
	oem := string(b[3:11])
	if oem == "NTFS    " || oem == "EXFAT   " {
		return true
	}
	if !(b[0] == 0xeb && b[2] == 0x90) && b[0] != 0xe9 {
		return false
	}
	bps := binary.LittleEndian.Uint16(b[11:])
	spc := b[13]
	reserved := binary.LittleEndian.Uint16(b[14:])
	fats := b[16]
	media := b[21]
	return (bps == 512 || bps == 1024 || bps == 2048 || bps == 4096) &&
		spc != 0 && spc&(spc-1) == 0 &&
		reserved != 0 && (fats == 1 || fats == 2) &&
		(media == 0xf0 || media >= 0xf8)
}

func (m mbr) protective() bool {
	for _, e := range m.entries {
		if e.typ == mbrTypeGPT {
			return true
		}
	}
	return false
}

func (m mbr) hybrid() bool {
	for _, e := range m.entries {
		if e.used() && e.typ != mbrTypeGPT {
			return true
		}
	}
	return false
}

func (m mbr) empty() bool {
	for _, e := range m.entries {
		if e.used() {
			return false
		}
	}
	return true
}

// mbrPart is a Partition plus where its entry lives, for the writers.
type mbrPart struct {
	Partition
	tableLBA int64 // 0 for a primary entry, else the LBA of its EBR
	slot     int   // entry index in that sector
	// linkLBA/linkSlot locate the entry in the previous EBR that points to
	// this logical partition's EBR; linkLBA is -1 for the first logical
	// partition of a chain and for primaries.
	linkLBA  int64
	linkSlot int
	ext      int // primary slot of the containing extended partition, -1 if none
}

func readMBR(r io.ReaderAt, diskSize int64, ss int, m mbr) (*Table, error) {
	t, _, err := readMBRLayout(r, diskSize, ss, m)
	return t, err
}

// readMBRLayout walks the primary entries and every EBR chain.
func readMBRLayout(r io.ReaderAt, diskSize int64, ss int, m mbr) (*Table, []mbrPart, error) {
	t := &Table{
		Kind:         KindMBR,
		SectorSize:   ss,
		DiskSize:     diskSize,
		MBRSignature: m.sig,
		Partitions:   []Partition{},
		Reserved:     []Range{{Off: 0, Len: int64(ss)}},
	}
	diskLBAs := diskSize / int64(ss)
	var parts []mbrPart
	next := 5 // Linux numbers logical partitions from 5, across all chains
	for i, e := range m.entries {
		if !e.used() {
			continue
		}
		start, end := int64(e.start), int64(e.start)+int64(e.size)
		if start == 0 {
			return nil, nil, fmt.Errorf("%w: MBR partition %d starts at sector 0 (the MBR itself)", ErrCorrupt, i+1)
		}
		if end > diskLBAs {
			return nil, nil, fmt.Errorf("%w: MBR partition %d (sectors %d-%d) extends past the disk's end (%d sectors)",
				ErrCorrupt, i+1, start, end-1, diskLBAs)
		}
		p := mbrPart{
			Partition: Partition{
				Number:   i + 1,
				Start:    start * int64(ss),
				Size:     int64(e.size) * int64(ss),
				Type:     mbrTypeString(e.typ),
				TypeName: mbrTypeNames[e.typ],
				Bootable: e.boot == 0x80,
				Extended: isExtendedType(e.typ),
			},
			slot:    i,
			linkLBA: -1,
			ext:     -1,
		}
		parts = append(parts, p)
		if !p.Extended {
			continue
		}
		logical, err := readEBRChain(r, t, ss, diskLBAs, start, end, i, &next)
		if err != nil {
			return nil, nil, err
		}
		parts = append(parts, logical...)
	}
	for _, p := range parts {
		t.Partitions = append(t.Partitions, p.Partition)
	}
	t.Reserved = normalize(t.Reserved, diskSize)
	checkOverlaps(t)
	return t, parts, nil
}

// readEBRChain follows the chain of EBRs inside the extended partition
// [extStart, extEnd) (sectors). Like the kernel it takes every data entry
// of an EBR (normally only the first) and follows the first link entry;
// link starts are relative to extStart, data starts to the EBR itself.
func readEBRChain(r io.ReaderAt, t *Table, ss int, diskLBAs, extStart, extEnd int64, extSlot int, next *int) ([]mbrPart, error) {
	var parts []mbrPart
	seen := map[int64]bool{}
	ebr := extStart
	linkLBA, linkSlot := int64(-1), 0
	sec := make([]byte, 512)
	for n := 0; ; n++ {
		if n >= maxEBRs {
			return nil, fmt.Errorf("%w: EBR chain longer than %d", ErrCorrupt, maxEBRs)
		}
		if seen[ebr] {
			return nil, fmt.Errorf("%w: EBR chain loops back to sector %d", ErrCorrupt, ebr)
		}
		seen[ebr] = true
		if ebr < extStart || ebr >= extEnd || ebr >= diskLBAs {
			return nil, fmt.Errorf("%w: EBR at sector %d lies outside the extended partition (sectors %d-%d)",
				ErrCorrupt, ebr, extStart, extEnd-1)
		}
		if err := readFull(r, sec, ebr*int64(ss)); err != nil {
			return nil, fmt.Errorf("parttable: read EBR at sector %d: %w", ebr, err)
		}
		if !hasMagic(sec) {
			// The kernel ends the chain here too. An all-zero first EBR
			// is just an extended partition with no logical partitions.
			if !isZero(sec) {
				t.Warnings = append(t.Warnings, fmt.Sprintf("EBR at sector %d has no 0x55AA signature; chain ends there", ebr))
			}
			return parts, nil
		}
		t.Reserved = append(t.Reserved, Range{Off: ebr * int64(ss), Len: int64(ss)})

		link := -1
		for slot := 0; slot < 4; slot++ {
			e := parseEntry(sec, slot)
			if !e.used() {
				continue
			}
			if isExtendedType(e.typ) {
				if link < 0 {
					link = slot
				}
				continue
			}
			start := ebr + int64(e.start)
			end := start + int64(e.size)
			inside := e.start != 0 && end <= extEnd && end <= diskLBAs
			if slot >= 2 && !inside {
				// Slots 3 and 4 of an EBR often hold garbage; the
				// kernel skips implausible ones silently.
				continue
			}
			if !inside {
				return nil, fmt.Errorf("%w: logical partition %d (sectors %d-%d) lies outside the extended partition (sectors %d-%d)",
					ErrCorrupt, *next, start, end-1, extStart, extEnd-1)
			}
			parts = append(parts, mbrPart{
				Partition: Partition{
					Number:   *next,
					Start:    start * int64(ss),
					Size:     int64(e.size) * int64(ss),
					Type:     mbrTypeString(e.typ),
					TypeName: mbrTypeNames[e.typ],
					Bootable: e.boot == 0x80,
					Logical:  true,
				},
				tableLBA: ebr,
				slot:     slot,
				linkLBA:  linkLBA,
				linkSlot: linkSlot,
				ext:      extSlot,
			})
			*next++
		}
		if link < 0 {
			return parts, nil
		}
		linkLBA, linkSlot = ebr, link
		ebr = extStart + int64(parseEntry(sec, link).start)
	}
}
