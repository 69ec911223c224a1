package parttable

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
	"unicode/utf16"
)

// GPT header field offsets (UEFI spec, "GPT Header").
const (
	gptRevisionOff   = 8
	gptHdrSizeOff    = 12
	gptHdrCRCOff     = 16
	gptMyLBAOff      = 24
	gptAltLBAOff     = 32
	gptFirstUsOff    = 40
	gptLastUsOff     = 48
	gptDiskGUIDOff   = 56
	gptEntryLBAOff   = 72
	gptNumEntriesOff = 80
	gptEntrySizeOff  = 84
	gptEntriesCRCOff = 88
	gptMinHdrSize    = 92

	// Entry field offsets.
	gptEntTypeOff  = 0
	gptEntGUIDOff  = 16
	gptEntFirstOff = 32
	gptEntLastOff  = 40
	gptEntAttrOff  = 48
	gptEntNameOff  = 56
	gptEntNameLen  = 72

	// gptAttrLegacyBoot is attribute bit 2, "legacy BIOS bootable".
	gptAttrLegacyBoot = 1 << 2
)

// gptHeader is one decoded copy of the header. raw is the whole sector as
// read, so fields we do not interpret are written back unchanged.
type gptHeader struct {
	raw                            []byte
	size                           uint32
	myLBA, altLBA                  uint64
	firstUsable, lastUsable        uint64
	entryLBA                       uint64
	numEntries, entrySize, entsCRC uint32
}

func (h *gptHeader) entriesBytes() int64 { return int64(h.numEntries) * int64(h.entrySize) }

func (h *gptHeader) entriesSectors(ss int) int64 {
	return (h.entriesBytes() + int64(ss) - 1) / int64(ss)
}

func (h *gptHeader) diskGUID() []byte { return h.raw[gptDiskGUIDOff : gptDiskGUIDOff+16] }

// parseGPTHeader validates the header sector read from LBA lba.
func parseGPTHeader(sec []byte, lba uint64, ss int, diskSize int64) (*gptHeader, error) {
	if !bytes.Equal(sec[:8], gptSignature) {
		return nil, fmt.Errorf("no \"EFI PART\" signature at LBA %d", lba)
	}
	le := binary.LittleEndian
	h := &gptHeader{
		raw:         sec,
		size:        le.Uint32(sec[gptHdrSizeOff:]),
		myLBA:       le.Uint64(sec[gptMyLBAOff:]),
		altLBA:      le.Uint64(sec[gptAltLBAOff:]),
		firstUsable: le.Uint64(sec[gptFirstUsOff:]),
		lastUsable:  le.Uint64(sec[gptLastUsOff:]),
		entryLBA:    le.Uint64(sec[gptEntryLBAOff:]),
		numEntries:  le.Uint32(sec[gptNumEntriesOff:]),
		entrySize:   le.Uint32(sec[gptEntrySizeOff:]),
		entsCRC:     le.Uint32(sec[gptEntriesCRCOff:]),
	}
	if h.size < gptMinHdrSize || int(h.size) > ss {
		return nil, fmt.Errorf("header size %d at LBA %d out of range", h.size, lba)
	}
	if got, want := headerCRC(sec, h.size), le.Uint32(sec[gptHdrCRCOff:]); got != want {
		return nil, fmt.Errorf("header CRC32 at LBA %d is %#08x, computed %#08x", lba, want, got)
	}
	if h.myLBA != lba {
		return nil, fmt.Errorf("header at LBA %d says it is at LBA %d", lba, h.myLBA)
	}
	if h.entrySize < 128 || h.entrySize%128 != 0 || h.entrySize&(h.entrySize-1) != 0 {
		return nil, fmt.Errorf("entry size %d at LBA %d is not 128·2^n", h.entrySize, lba)
	}
	if h.entriesBytes() > maxTableBytes {
		return nil, fmt.Errorf("entry array of %d×%d bytes at LBA %d is too large", h.numEntries, h.entrySize, lba)
	}
	diskLBAs := uint64(diskSize) / uint64(ss)
	if h.entryLBA < 2 || h.entryLBA >= diskLBAs || h.entryLBA+uint64(h.entriesSectors(ss)) > diskLBAs {
		return nil, fmt.Errorf("entry array at LBA %d (header at LBA %d) lies outside the disk", h.entryLBA, lba)
	}
	if h.firstUsable > h.lastUsable+1 {
		return nil, fmt.Errorf("first usable LBA %d is after last usable LBA %d", h.firstUsable, h.lastUsable)
	}
	return h, nil
}

// headerCRC is the CRC32 of the first size bytes with the CRC field zeroed.
func headerCRC(sec []byte, size uint32) uint32 {
	b := make([]byte, size)
	copy(b, sec[:size])
	binary.LittleEndian.PutUint32(b[gptHdrCRCOff:], 0)
	return crc32.ChecksumIEEE(b)
}

// gptCopy is one header with its entry array (nil when damaged) and the
// reason it was rejected.
type gptCopy struct {
	hdr     *gptHeader
	entries []byte
	err     error
}

func readGPTCopy(r io.ReaderAt, diskSize int64, ss int, lba uint64) gptCopy {
	if lba == 0 || int64(lba) >= diskSize/int64(ss) {
		return gptCopy{err: fmt.Errorf("LBA %d is outside the disk", lba)}
	}
	sec := make([]byte, ss)
	if err := readFull(r, sec, int64(lba)*int64(ss)); err != nil {
		return gptCopy{err: fmt.Errorf("read header at LBA %d: %w", lba, err)}
	}
	h, err := parseGPTHeader(sec, lba, ss, diskSize)
	if err != nil {
		return gptCopy{err: err}
	}
	ents := make([]byte, h.entriesBytes())
	if err := readFull(r, ents, int64(h.entryLBA)*int64(ss)); err != nil {
		return gptCopy{hdr: h, err: fmt.Errorf("read entries at LBA %d: %w", h.entryLBA, err)}
	}
	if got := crc32.ChecksumIEEE(ents); got != h.entsCRC {
		return gptCopy{hdr: h, err: fmt.Errorf("entry array CRC32 at LBA %d is %#08x, computed %#08x", h.entryLBA, h.entsCRC, got)}
	}
	return gptCopy{hdr: h, entries: ents}
}

// gptDisk is what the reader decided: the header and entries to trust,
// plus both copies as found, for the writers and for Reserved.
type gptDisk struct {
	hdr             *gptHeader // the trusted copy (primary if it is sound)
	entries         []byte
	primary, backup gptCopy
	backupLBA       uint64 // where the backup was looked for
	warnings        []string
}

func loadGPT(r io.ReaderAt, diskSize int64, ss int) (*gptDisk, error) {
	diskLBAs := uint64(diskSize) / uint64(ss)
	if diskLBAs < 3 {
		return nil, fmt.Errorf("%w: disk of %d bytes is too small for a GPT", ErrCorrupt, diskSize)
	}
	lastLBA := diskLBAs - 1
	g := &gptDisk{primary: readGPTCopy(r, diskSize, ss, 1), backupLBA: lastLBA}
	if p := g.primary; p.err == nil {
		switch {
		case p.hdr.altLBA > lastLBA:
			g.warnings = append(g.warnings, fmt.Sprintf(
				"GPT says the backup header is at LBA %d but the disk ends at LBA %d (truncated disk?)", p.hdr.altLBA, lastLBA))
		case p.hdr.altLBA != lastLBA:
			g.backupLBA = p.hdr.altLBA
			g.warnings = append(g.warnings, fmt.Sprintf(
				"backup GPT header is at LBA %d, not at the disk's last LBA %d (disk larger than the table)", p.hdr.altLBA, lastLBA))
		}
		if p.hdr.lastUsable > lastLBA {
			g.warnings = append(g.warnings, fmt.Sprintf(
				"GPT last usable LBA %d is past the disk's end (LBA %d)", p.hdr.lastUsable, lastLBA))
		}
	}
	g.backup = readGPTCopy(r, diskSize, ss, g.backupLBA)
	if g.backup.err != nil && g.backupLBA != lastLBA {
		// The primary pointed elsewhere; the end of the disk is the only
		// other place a backup can be.
		if b := readGPTCopy(r, diskSize, ss, lastLBA); b.err == nil {
			g.backup, g.backupLBA = b, lastLBA
		}
	}
	switch p, b := g.primary, g.backup; {
	case p.err == nil:
		g.hdr, g.entries = p.hdr, p.entries
		if b.err != nil {
			g.warnings = append(g.warnings, "backup GPT damaged: "+b.err.Error())
		} else if !bytes.Equal(p.entries, b.entries) {
			g.warnings = append(g.warnings, "primary and backup GPT entry arrays differ; using the primary")
		}
	case b.err == nil:
		g.hdr, g.entries = b.hdr, b.entries
		g.warnings = append(g.warnings, fmt.Sprintf("primary GPT damaged (%v); using the backup at LBA %d", p.err, g.backupLBA))
	default:
		return nil, fmt.Errorf("%w: primary GPT: %v; backup GPT: %v", ErrCorrupt, p.err, b.err)
	}
	return g, nil
}

// gptEntry is one decoded entry of the trusted array.
type gptEntry struct {
	index       int
	first, last uint64
	attrs       uint64
	raw         []byte
}

func (g *gptDisk) usedEntries() []gptEntry {
	var es []gptEntry
	le := binary.LittleEndian
	for i := 0; i < int(g.hdr.numEntries); i++ {
		raw := g.entries[i*int(g.hdr.entrySize) : (i+1)*int(g.hdr.entrySize)]
		if isZero(raw[gptEntTypeOff : gptEntTypeOff+16]) {
			continue
		}
		es = append(es, gptEntry{
			index: i,
			first: le.Uint64(raw[gptEntFirstOff:]),
			last:  le.Uint64(raw[gptEntLastOff:]),
			attrs: le.Uint64(raw[gptEntAttrOff:]),
			raw:   raw,
		})
	}
	return es
}

func readGPT(r io.ReaderAt, diskSize int64, ss int) (*Table, error) {
	g, err := loadGPT(r, diskSize, ss)
	if err != nil {
		return nil, err
	}
	return g.table(diskSize, ss)
}

func (g *gptDisk) table(diskSize int64, ss int) (*Table, error) {
	t := &Table{
		Kind:       KindGPT,
		SectorSize: ss,
		DiskSize:   diskSize,
		DiskGUID:   guidString(g.hdr.diskGUID()),
		Partitions: []Partition{},
		Warnings:   g.warnings,
	}
	diskLBAs := uint64(diskSize) / uint64(ss)
	for _, e := range g.usedEntries() {
		n := e.index + 1
		if e.first > e.last {
			return nil, fmt.Errorf("%w: GPT partition %d ends (LBA %d) before it starts (LBA %d)", ErrCorrupt, n, e.last, e.first)
		}
		if e.last >= diskLBAs {
			return nil, fmt.Errorf("%w: GPT partition %d (LBA %d-%d) extends past the disk's end (%d sectors)",
				ErrCorrupt, n, e.first, e.last, diskLBAs)
		}
		if e.first < g.hdr.firstUsable || e.last > g.hdr.lastUsable {
			t.Warnings = append(t.Warnings, fmt.Sprintf("GPT partition %d (LBA %d-%d) lies outside the usable LBAs %d-%d",
				n, e.first, e.last, g.hdr.firstUsable, g.hdr.lastUsable))
		}
		typ := guidString(e.raw[gptEntTypeOff:])
		t.Partitions = append(t.Partitions, Partition{
			Number:   n,
			Start:    int64(e.first) * int64(ss),
			Size:     int64(e.last-e.first+1) * int64(ss),
			Type:     typ,
			TypeName: gptTypeNames[typ],
			GUID:     guidString(e.raw[gptEntGUIDOff:]),
			Name:     decodeName(e.raw[gptEntNameOff : gptEntNameOff+gptEntNameLen]),
			Bootable: e.attrs&gptAttrLegacyBoot != 0,
		})
	}
	t.Reserved = g.reserved(diskSize, ss)
	checkOverlaps(t)
	return t, nil
}

// reserved lists the table's own sectors: the protective MBR, both headers
// and both entry arrays. A damaged copy is placed where the sound one says
// it should be, so capture still copies it verbatim.
func (g *gptDisk) reserved(diskSize int64, ss int) []Range {
	s := int64(ss)
	entLen := g.hdr.entriesSectors(ss) * s
	primaryEnt := int64(2)
	if g.primary.err == nil {
		primaryEnt = int64(g.primary.hdr.entryLBA)
	}
	backupEnt := int64(g.backupLBA) - g.hdr.entriesSectors(ss)
	if g.backup.err == nil {
		backupEnt = int64(g.backup.hdr.entryLBA)
	}
	rs := []Range{
		{0, s},
		{s, s},
		{primaryEnt * s, entLen},
		{backupEnt * s, entLen},
		{int64(g.backupLBA) * s, s},
	}
	return normalize(rs, diskSize)
}

// normalize clips ranges to the disk, sorts them and merges overlaps.
func normalize(rs []Range, diskSize int64) []Range {
	var out []Range
	for _, r := range rs {
		if r.Off < 0 || r.Off >= diskSize || r.Len <= 0 {
			continue
		}
		r.Len = min(r.Len, diskSize-r.Off)
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Off < out[j].Off })
	merged := out[:0]
	for _, r := range out {
		if n := len(merged); n > 0 && r.Off <= merged[n-1].Off+merged[n-1].Len {
			last := &merged[n-1]
			last.Len = max(last.Len, r.Off+r.Len-last.Off)
			continue
		}
		merged = append(merged, r)
	}
	return merged
}

// decodeName decodes a UTF-16LE partition name, stopping at the first NUL.
func decodeName(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}
