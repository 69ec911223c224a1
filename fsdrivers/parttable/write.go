package parttable

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// ReadWriterAt is a disk that can be read and written in place.
type ReadWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// RelocateGPT moves a GPT that was written for a disk of oldSize bytes to
// a disk of newSize bytes (restore or clone onto a different disk): the
// primary header gets the new alternate and last usable LBAs, and the backup
// entry array and header are written at the new end, all CRCs recomputed.
// The old backup is zeroed when it lies beyond every partition. Partitions
// are not moved or resized; a partition that would end past the new last
// usable LBA is an error. The protective MBR's 0xEE entry is resized too.
//
// The table is read as it was laid out for oldSize (so a damaged primary can
// still be rebuilt from the backup at the old end); sectorSize 0 detects.
func RelocateGPT(w ReadWriterAt, oldSize, newSize int64, sectorSize int) error {
	ss, g, err := loadGPTForWrite(w, oldSize, sectorSize)
	if err != nil {
		return fmt.Errorf("parttable: relocate GPT: %w", err)
	}
	newLBAs := uint64(newSize) / uint64(ss)
	entSec := uint64(g.hdr.entriesSectors(ss))
	if newLBAs < entSec+3 {
		return fmt.Errorf("parttable: relocate GPT: new disk of %d bytes is too small", newSize)
	}
	newLast := newLBAs - 1
	lastUsable := newLast - entSec - 1
	if lastUsable < g.hdr.firstUsable {
		return fmt.Errorf("parttable: relocate GPT: new disk of %d bytes leaves no usable space", newSize)
	}
	var maxLast uint64
	for _, e := range g.usedEntries() {
		if e.last > lastUsable {
			return fmt.Errorf("parttable: relocate GPT: partition %d ends at LBA %d, past the new last usable LBA %d",
				e.index+1, e.last, lastUsable)
		}
		maxLast = max(maxLast, e.last)
	}
	primaryEnt := g.primaryEntryLBA()

	// The old backup now sits in free space of the larger disk; clear it
	// so no tool mistakes it for the live one. Only when it is provably
	// outside every partition and the primary copy.
	oldBackup := g.backupLBA
	if oldBackup != newLast && oldBackup < newLBAs && oldBackup >= entSec {
		oldEnt := oldBackup - entSec
		if oldEnt > maxLast && oldEnt >= primaryEnt+entSec && oldEnt >= g.hdr.firstUsable {
			zero := make([]byte, (entSec+1)*uint64(ss))
			if err := writeFull(w, zero, int64(oldEnt)*int64(ss)); err != nil {
				return fmt.Errorf("parttable: relocate GPT: clear old backup: %w", err)
			}
		}
	}
	if err := writeGPT(w, ss, g.hdr.raw, g.entries, primaryEnt, newLast, lastUsable); err != nil {
		return fmt.Errorf("parttable: relocate GPT: %w", err)
	}
	if err := resizeProtectiveMBR(w, newLast); err != nil {
		return fmt.Errorf("parttable: relocate GPT: %w", err)
	}
	return nil
}

// GrowLastPartition extends the partition that ends last to the end of the
// usable space: the GPT's last usable LBA, or for MBR the disk's end (capped
// at 2^32-1 sectors), growing the extended container and the EBR entries
// when that partition is logical. A GPT must already be relocated to this
// disk's size (RelocateGPT). It returns the partition as it now is; a
// partition already at the end is returned unchanged.
func GrowLastPartition(rw ReadWriterAt, diskSize int64, sectorSize int) (*Partition, error) {
	t, err := Read(rw, diskSize, sectorSize)
	if err != nil {
		return nil, fmt.Errorf("parttable: grow last partition: %w", err)
	}
	var number int
	switch t.Kind {
	case KindGPT:
		number, err = growGPT(rw, diskSize, t.SectorSize)
	case KindMBR:
		number, err = growMBR(rw, diskSize, t.SectorSize)
	default:
		err = ErrNoTable
	}
	if err != nil {
		return nil, fmt.Errorf("parttable: grow last partition: %w", err)
	}
	t, err = Read(rw, diskSize, t.SectorSize)
	if err != nil {
		return nil, fmt.Errorf("parttable: grow last partition: re-read: %w", err)
	}
	for _, p := range t.Partitions {
		if p.Number == number {
			return &p, nil
		}
	}
	return nil, fmt.Errorf("parttable: grow last partition: partition %d vanished after the write", number)
}

func growGPT(rw ReadWriterAt, diskSize int64, ss int) (int, error) {
	_, g, err := loadGPTForWrite(rw, diskSize, ss)
	if err != nil {
		return 0, err
	}
	last := uint64(diskSize)/uint64(ss) - 1
	if g.backupLBA != last || (g.hdr == g.primary.hdr && g.hdr.altLBA != last) {
		return 0, fmt.Errorf("backup GPT header is not at the disk's last LBA %d: call RelocateGPT first", last)
	}
	entSec := uint64(g.hdr.entriesSectors(ss))
	if g.hdr.lastUsable+entSec+1 > last {
		return 0, fmt.Errorf("%w: last usable LBA %d overlaps the backup entry array", ErrCorrupt, g.hdr.lastUsable)
	}
	es := g.usedEntries()
	if len(es) == 0 {
		return 0, fmt.Errorf("no partitions")
	}
	top := es[0]
	for _, e := range es[1:] {
		if e.last > top.last {
			top = e
		}
	}
	if top.last < g.hdr.lastUsable {
		binary.LittleEndian.PutUint64(top.raw[gptEntLastOff:], g.hdr.lastUsable)
	}
	// Rewrite both copies even when nothing grew: a damaged copy is
	// repaired the same way.
	return top.index + 1, writeGPT(rw, ss, g.hdr.raw, g.entries, g.primaryEntryLBA(), last, g.hdr.lastUsable)
}

func growMBR(rw ReadWriterAt, diskSize int64, ss int) (int, error) {
	sec0 := make([]byte, 512)
	if err := readFull(rw, sec0, 0); err != nil {
		return 0, fmt.Errorf("read MBR: %w", err)
	}
	m, _ := parseMBR(sec0)
	_, parts, err := readMBRLayout(rw, diskSize, ss, m)
	if err != nil {
		return 0, err
	}
	s := int64(ss)
	var top *mbrPart
	for i := range parts {
		p := &parts[i]
		if !p.Extended && (top == nil || p.Start+p.Size > top.Start+top.Size) {
			top = p
		}
	}
	if top == nil {
		return 0, fmt.Errorf("no partitions")
	}
	oldEnd := (top.Start + top.Size) / s
	for _, q := range parts {
		// Anything but the target's own container that ends after it would
		// be overlapped by growing.
		if q.Number != top.Number && !(q.Extended && q.slot == top.ext && top.Logical) && (q.Start+q.Size)/s > oldEnd {
			return 0, fmt.Errorf("partition %d lies after partition %d; not growing into it", q.Number, top.Number)
		}
	}
	start := top.Start / s
	newEnd := min(diskSize/s, start+0xffffffff)
	if newEnd <= oldEnd {
		return top.Number, nil
	}
	if !top.Logical {
		setEntryEnd(sec0, top.slot, 0, newEnd)
		return top.Number, writeFull(rw, sec0, 0)
	}

	// A logical partition: its EBR entry, the extended container, and the
	// link in the previous EBR (which by convention spans that EBR up to the
	// end of this logical partition).
	ebr := make([]byte, 512)
	if err := readFull(rw, ebr, top.tableLBA*s); err != nil {
		return 0, fmt.Errorf("read EBR at sector %d: %w", top.tableLBA, err)
	}
	setEntryEnd(ebr, top.slot, top.tableLBA, newEnd)
	extStart := int64(parseEntry(sec0, top.ext).start)
	if newEnd-extStart > 0xffffffff {
		return 0, fmt.Errorf("extended partition would exceed 2^32 sectors")
	}
	setEntryEnd(sec0, top.ext, 0, newEnd)
	if top.linkLBA >= 0 {
		prev := make([]byte, 512)
		if err := readFull(rw, prev, top.linkLBA*s); err != nil {
			return 0, fmt.Errorf("read EBR at sector %d: %w", top.linkLBA, err)
		}
		l := parseEntry(prev, top.linkSlot)
		if extStart+int64(l.start)+int64(l.size) == oldEnd {
			setEntryEnd(prev, top.linkSlot, extStart, newEnd)
			if err := writeFull(rw, prev, top.linkLBA*s); err != nil {
				return 0, fmt.Errorf("write EBR at sector %d: %w", top.linkLBA, err)
			}
		}
	}
	if err := writeFull(rw, ebr, top.tableLBA*s); err != nil {
		return 0, fmt.Errorf("write EBR at sector %d: %w", top.tableLBA, err)
	}
	return top.Number, writeFull(rw, sec0, 0)
}

// setEntryEnd sets the size of entry slot in sector b so that it ends at
// absolute sector end; base is what the entry's start is relative to. The
// ending CHS is rewritten to match.
func setEntryEnd(b []byte, slot int, base, end int64) {
	o := mbrEntriesOff + slot*mbrEntrySize
	start := base + int64(binary.LittleEndian.Uint32(b[o+8:]))
	binary.LittleEndian.PutUint32(b[o+12:], uint32(end-start))
	putCHS(b[o+5:o+8], end-1)
}

// putCHS encodes lba with the 255-head, 63-sector geometry every modern
// tool assumes; beyond cylinder 1023 it saturates at 1023/254/63, the
// "use LBA" marker.
func putCHS(b []byte, lba int64) {
	const heads, sectors = 255, 63
	c := lba / (heads * sectors)
	h := (lba / sectors) % heads
	s := lba%sectors + 1
	if c > 1023 {
		c, h, s = 1023, 254, 63
	}
	b[0] = byte(h)
	b[1] = byte(s) | byte(c>>8)<<6
	b[2] = byte(c)
}

// NewGUIDs gives a cloned disk its own identity: for GPT a new disk GUID
// and a new unique GUID for every partition (both copies rewritten, CRCs
// recomputed); for MBR a new non-zero disk signature. rand supplies the
// randomness (crypto/rand.Reader in production, a fixed stream in tests).
func NewGUIDs(rw ReadWriterAt, diskSize int64, sectorSize int, rand io.Reader) error {
	t, err := Read(rw, diskSize, sectorSize)
	if err != nil {
		return fmt.Errorf("parttable: new GUIDs: %w", err)
	}
	switch t.Kind {
	case KindGPT:
		_, g, err := loadGPTForWrite(rw, diskSize, t.SectorSize)
		if err != nil {
			return fmt.Errorf("parttable: new GUIDs: %w", err)
		}
		if err := randomGUID(rand, g.hdr.diskGUID()); err != nil {
			return err
		}
		for _, e := range g.usedEntries() {
			if err := randomGUID(rand, e.raw[gptEntGUIDOff:gptEntGUIDOff+16]); err != nil {
				return err
			}
		}
		backup := g.backupLBA
		if g.hdr == g.primary.hdr && g.hdr.altLBA < uint64(diskSize)/uint64(t.SectorSize) {
			backup = g.hdr.altLBA
		}
		if err := writeGPT(rw, t.SectorSize, g.hdr.raw, g.entries, g.primaryEntryLBA(), backup, g.hdr.lastUsable); err != nil {
			return fmt.Errorf("parttable: new GUIDs: %w", err)
		}
		return nil
	case KindMBR:
		sig := make([]byte, 4)
		for i := 0; isZero(sig); i++ {
			if i == 8 {
				return fmt.Errorf("parttable: new GUIDs: random source returns only zeros")
			}
			if _, err := io.ReadFull(rand, sig); err != nil {
				return fmt.Errorf("parttable: new GUIDs: %w", err)
			}
		}
		if err := writeFull(rw, sig, mbrSigOff); err != nil {
			return fmt.Errorf("parttable: new GUIDs: write MBR signature: %w", err)
		}
		return nil
	}
	return fmt.Errorf("parttable: new GUIDs: %w", ErrNoTable)
}

// loadGPTForWrite reads a disk that must be GPT, detecting the sector size.
func loadGPTForWrite(r io.ReaderAt, diskSize int64, sectorSize int) (int, *gptDisk, error) {
	t, err := Read(r, diskSize, sectorSize)
	if err != nil {
		return 0, nil, err
	}
	if t.Kind != KindGPT {
		return 0, nil, fmt.Errorf("%w: disk is %q, not GPT", ErrNoTable, t.Kind)
	}
	g, err := loadGPT(r, diskSize, t.SectorSize)
	if err != nil {
		return 0, nil, err
	}
	return t.SectorSize, g, nil
}

// primaryEntryLBA is where the primary entry array lives: as the sound
// primary header says, else LBA 2 where every tool puts it.
func (g *gptDisk) primaryEntryLBA() uint64 {
	if g.primary.err == nil {
		return g.primary.hdr.entryLBA
	}
	return 2
}

// writeGPT writes both copies of a GPT from one header template: the
// primary at LBA 1 with its entries at primaryEnt, the backup header at
// backupLBA with its entries just before it.
func writeGPT(w io.WriterAt, ss int, tmpl, entries []byte, primaryEnt, backupLBA, lastUsable uint64) error {
	le := binary.LittleEndian
	entSec := uint64((len(entries) + ss - 1) / ss)
	backupEnt := backupLBA - entSec
	entCRC := crc32.ChecksumIEEE(entries)
	size := le.Uint32(tmpl[gptHdrSizeOff:])

	mk := func(my, alt, entLBA uint64) []byte {
		h := make([]byte, ss)
		copy(h, tmpl)
		le.PutUint64(h[gptMyLBAOff:], my)
		le.PutUint64(h[gptAltLBAOff:], alt)
		le.PutUint64(h[gptLastUsOff:], lastUsable)
		le.PutUint64(h[gptEntryLBAOff:], entLBA)
		le.PutUint32(h[gptEntriesCRCOff:], entCRC)
		le.PutUint32(h[gptHdrCRCOff:], headerCRC(h, size))
		return h
	}
	// Backup first: if we are interrupted, the primary still describes
	// the old, consistent state.
	steps := []struct {
		what string
		b    []byte
		lba  uint64
	}{
		{"backup entries", entries, backupEnt},
		{"backup header", mk(backupLBA, 1, backupEnt), backupLBA},
		{"primary entries", entries, primaryEnt},
		{"primary header", mk(1, backupLBA, primaryEnt), 1},
	}
	for _, s := range steps {
		if err := writeFull(w, s.b, int64(s.lba)*int64(ss)); err != nil {
			return fmt.Errorf("write %s at LBA %d: %w", s.what, s.lba, err)
		}
	}
	return nil
}

// resizeProtectiveMBR makes a pure protective MBR's 0xEE entry cover the
// disk up to lastLBA (capped at 2^32-1 sectors, as the UEFI spec says).
// Hybrid MBRs are left alone: their layout is deliberate.
func resizeProtectiveMBR(rw ReadWriterAt, lastLBA uint64) error {
	b := make([]byte, 512)
	if err := readFull(rw, b, 0); err != nil {
		return fmt.Errorf("read protective MBR: %w", err)
	}
	m, ok := parseMBR(b)
	if !ok || !m.protective() || m.hybrid() {
		return nil
	}
	for i, e := range m.entries {
		if e.typ != mbrTypeGPT || e.start != 1 {
			continue
		}
		setEntryEnd(b, i, 0, int64(min(lastLBA, 0xffffffff))+1)
		return writeFull(rw, b, 0)
	}
	return nil
}

func writeFull(w io.WriterAt, b []byte, off int64) error {
	n, err := w.WriteAt(b, off)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	return err
}
