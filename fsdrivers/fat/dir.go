package fat

import (
	"bytes"
	"encoding/binary"
	"io/fs"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
)

// Directory entry attributes (DIR_Attr).
const (
	attrReadOnly  = 0x01
	attrVolumeID  = 0x08
	attrDirectory = 0x10
	attrLongName  = 0x0F // read-only|hidden|system|volume: marks an LFN entry
	attrLongMask  = 0x3F
)

// DIR_NTRes flags: the short name's base / extension is lower case.
const (
	ntLowerBase = 0x08
	ntLowerExt  = 0x10
)

const (
	entrySize = 32
	// maxDirBytes is the specification's cap on a directory: 65,536
	// entries. Linux refuses to grow a directory past it too.
	maxDirBytes = 65536 * entrySize
	// maxLFNEntries: a long name has at most 255 UTF-16 units, 13 per entry.
	maxLFNEntries = 20
	lfnUnits      = 13
)

// dirent is one parsed directory entry (a short entry with the long name
// that preceded it, if any).
type dirent struct {
	name  string // long name, else the short name with NT case flags applied
	short string // the 8.3 name as stored ("README.TXT"), for lookups
	attr  byte
	first uint32 // first cluster, 0 for an empty file
	size  uint32
	mtime time.Time
	atime time.Time
	btime time.Time
	off   int64 // byte offset of the short entry in the partition; 0 for the root
	lfn   int   // long-name entries right before the short entry (0: none used)
}

func (d *dirent) isDir() bool { return d.attr&attrDirectory != 0 }

// dirList is a parsed directory.
type dirList struct {
	entries []*dirent
	label   []byte // first volume-label entry (meaningful in the root only)
}

// find looks name up case-insensitively, as Windows does: long names first,
// then the 8.3 aliases ("PROGRA~1").
func (l *dirList) find(name string) *dirent {
	for _, e := range l.entries {
		if strings.EqualFold(e.name, name) {
			return e
		}
	}
	for _, e := range l.entries {
		if strings.EqualFold(e.short, name) {
			return e
		}
	}
	return nil
}

// dirParser turns a stream of 32-byte entries into dirents. Long-name
// entries are collected until their short entry arrives; any break in the
// sequence (wrong order number, checksum, a deleted or label entry in
// between) drops the long name, as Windows and Linux do.
type dirParser struct {
	isFAT32 bool
	list    dirList
	done    bool // the 0x00 end-of-directory marker was seen

	lfn      [maxLFNEntries * lfnUnits]uint16
	lfnCount int // entries in the current sequence, 0 when none
	lfnNext  int // order number expected next; 0 when the sequence is complete
	lfnSum   byte
}

func (p *dirParser) resetLFN() { p.lfnCount, p.lfnNext = 0, 0 }

// add parses one entry e located at byte off of the partition.
func (p *dirParser) add(e []byte, off int64) {
	if p.done {
		return
	}
	switch e[0] {
	case 0x00: // this and all following entries are free
		p.done = true
		return
	case 0xE5: // deleted
		p.resetLFN()
		return
	}
	attr := e[11]
	if attr&attrLongMask == attrLongName {
		p.addLFN(e)
		return
	}
	if attr&attrVolumeID != 0 {
		if p.list.label == nil && attr&attrDirectory == 0 {
			p.list.label = bytes.Clone(e[:11])
		}
		p.resetLFN()
		return
	}
	raw := e[:11]
	if raw[0] == '.' && (bytes.Equal(raw, []byte(".          ")) || bytes.Equal(raw, []byte("..         "))) {
		p.resetLFN()
		return
	}

	le := binary.LittleEndian
	d := &dirent{
		short: shortName(raw, 0),
		attr:  attr,
		first: uint32(le.Uint16(e[26:])),
		size:  le.Uint32(e[28:]),
		mtime: fatTime(le.Uint16(e[24:]), le.Uint16(e[22:]), 0),
		atime: fatTime(le.Uint16(e[18:]), 0, 0),
		btime: fatTime(le.Uint16(e[16:]), le.Uint16(e[14:]), e[13]),
		off:   off,
	}
	// On FAT12/16 the high word may hold an OS/2 extended-attribute handle.
	if p.isFAT32 {
		d.first |= uint32(le.Uint16(e[20:])) << 16
	}
	d.name = shortName(raw, e[12])
	if p.lfnCount > 0 && p.lfnNext == 0 && p.lfnSum == shortSum(raw) {
		if long := decodeLFN(p.lfn[:p.lfnCount*lfnUnits]); long != "" {
			d.name = long
		}
		d.lfn = p.lfnCount
	}
	p.resetLFN()
	// A name that cannot be an io/fs path element (a '/' or NUL from a
	// corrupt entry) would make the tree unwalkable; leave it out.
	if !validName(d.name) {
		if !validName(d.short) {
			return
		}
		d.name = d.short
	}
	p.list.entries = append(p.list.entries, d)
}

func (p *dirParser) addLFN(e []byte) {
	ord := int(e[0])
	if ord&0x40 != 0 { // last (first stored) entry of a sequence
		n := ord &^ 0x40
		if n < 1 || n > maxLFNEntries {
			p.resetLFN()
			return
		}
		p.lfnCount, p.lfnNext, p.lfnSum = n, n, e[13]
	} else if p.lfnCount == 0 || ord < 1 || ord != p.lfnNext || e[13] != p.lfnSum {
		p.resetLFN()
		return
	}
	u := p.lfn[(ord&^0x40-1)*lfnUnits:]
	le := binary.LittleEndian
	for i := range 5 {
		u[i] = le.Uint16(e[1+2*i:])
	}
	for i := range 6 {
		u[5+i] = le.Uint16(e[14+2*i:])
	}
	for i := range 2 {
		u[11+i] = le.Uint16(e[28+2*i:])
	}
	p.lfnNext--
}

// shortSum is the checksum of an 11-byte short name stored in its LFN entries.
func shortSum(raw []byte) byte {
	var s byte
	for _, c := range raw[:11] {
		s = (s&1)<<7 + s>>1 + c
	}
	return s
}

// decodeLFN turns the UTF-16 units of a long name (terminated by 0x0000 or
// the end) into a string; unpaired surrogates become U+FFFD.
func decodeLFN(u []uint16) string {
	for i, c := range u {
		if c == 0 {
			u = u[:i]
			break
		}
	}
	return string(utf16.Decode(u))
}

// shortName renders an 8.3 name. nt holds the DIR_NTRes case flags (0 to
// keep the stored upper case).
func shortName(raw []byte, nt byte) string {
	b := bytes.Clone(raw[:11])
	if b[0] == 0x05 { // stands for a leading 0xE5 (a valid lead byte in Kanji)
		b[0] = 0xE5
	}
	base := decodeOEM(bytes.TrimRight(b[:8], " "))
	ext := decodeOEM(bytes.TrimRight(b[8:], " "))
	if nt&ntLowerBase != 0 {
		base = strings.Map(unicode.ToLower, base)
	}
	if nt&ntLowerExt != 0 {
		ext = strings.Map(unicode.ToLower, ext)
	}
	if ext == "" {
		return base
	}
	return base + "." + ext
}

func validName(s string) bool {
	return s != "" && s != "." && s != ".." && fs.ValidPath(s) && !strings.ContainsAny(s, "/\x00")
}

// fatTime decodes a FAT date and time (local wall-clock time, reported as
// UTC). tenth is DIR_CrtTimeTenth: 10 ms units, 0..199. A zero or impossible
// date gives the zero time.
func fatTime(date, tm uint16, tenth byte) time.Time {
	if date == 0 {
		return time.Time{}
	}
	year := 1980 + int(date>>9)
	month := int(date >> 5 & 0x0F)
	day := int(date & 0x1F)
	if month < 1 || month > 12 || day < 1 {
		return time.Time{}
	}
	h, m, s := int(tm>>11), int(tm>>5&0x3F), int(tm&0x1F)*2
	if h > 23 || m > 59 || s > 59 {
		h, m, s = 0, 0, 0
	}
	ns := 0
	if tenth <= 199 {
		s += int(tenth) / 100
		ns = int(tenth) % 100 * int(10*time.Millisecond)
	}
	return time.Date(year, time.Month(month), day, h, m, s, ns, time.UTC)
}

// labelString renders an 11-byte label; "NO NAME" (what formatters write
// when there is none) and blanks give "".
func labelString(raw []byte) string {
	if raw == nil {
		return ""
	}
	b := bytes.Clone(raw)
	if b[0] == 0x05 {
		b[0] = 0xE5
	}
	s := strings.TrimRight(decodeOEM(bytes.TrimRight(b, " \x00")), " ")
	if s == "NO NAME" {
		return ""
	}
	return s
}
