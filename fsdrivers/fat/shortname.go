package fat

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Long names and their 8.3 aliases, made the way Linux's vfat (with the
// default shortname=mixed for reading, winnt-style case flags for writing)
// and mtools make them, so an image edited by dimg looks as if Linux had
// written it:
//
//   - a name that is a valid 8.3 name as it stands, in one case per part
//     ("README.TXT", "readme.txt", "readme.TXT"), is stored as a short entry
//     only, lower-case parts flagged in DIR_NTRes (0x08 base, 0x10 ext);
//   - any other name gets long-name entries and an alias: the basis name is
//     the long name upper-cased, spaces and dots dropped (the last dot
//     starts the extension, unless only dots and spaces precede it, as in
//     ".bashrc"), "+,;=[]" and characters CP850 lacks turned into '_', cut
//     to 8+3; when that basis is lossy, a numeric tail "~N" replaces its
//     end (the base cut to 6 characters for "~1".."~9", shorter for larger
//     N), the first N whose alias is not yet in the directory;
//   - a name that is valid 8.3 but of mixed case ("ReadMe.md") keeps its
//     basis without a tail ("README.MD") unless that is taken.
//
// Linux switches to a random hexadecimal tail after ~9; this package keeps
// counting (~10, ~11, ... as mtools and Windows 95 do), which is just as
// valid and keeps aliases deterministic.

// maxNameUnits is the longest long name: 255 UTF-16 units.
const maxNameUnits = 255

// badLongChar reports characters that a long name may not contain.
func badLongChar(r rune) bool {
	return r < 0x20 || strings.ContainsRune(`"*/:<>?\|`, r)
}

// cleanName checks a name given for a new entry and returns it as stored:
// trailing dots are dropped, as Linux's vfat does. ok is false for names a
// FAT directory cannot hold.
func cleanName(name string) (string, bool) {
	name = strings.TrimRight(name, ".")
	if name == "" || strings.Trim(name, " ") == "" {
		return "", false
	}
	for _, r := range name {
		if badLongChar(r) {
			return "", false
		}
	}
	return name, utf8.ValidString(name)
}

// nameTooLong reports a long name past 255 UTF-16 units.
func nameTooLong(name string) bool { return len(utf16.Encode([]rune(name))) > maxNameUnits }

// caseInfo tracks, for one part of a basis name, whether it could be
// stored as an 8.3 part as is (valid) and in which case its letters are.
type caseInfo struct{ valid, lower, upper bool }

// shortChar converts one character of a long name to its short-name byte.
// skip is true for characters dropped from the basis (space and dot).
func shortChar(r rune, info *caseInfo) (b byte, skip bool) {
	switch {
	case r == ' ' || r == '.':
		info.valid = false
		return 0, true
	case strings.ContainsRune("+,;=[]\x7f", r):
		info.valid = false
		return '_', false
	case r < 0x80:
		c := byte(r)
		if 'a' <= c && c <= 'z' {
			info.upper = false
			return c - 'a' + 'A', false
		}
		if 'A' <= c && c <= 'Z' {
			info.lower = false
		}
		return c, false
	}
	// Outside ASCII the case flags cannot describe the name, so a long
	// name is always kept; the alias holds the upper-case CP850 byte.
	info.lower, info.upper = false, false
	if c, ok := encodeOEM(unicode.ToUpper(r)); ok {
		return c, false
	}
	if c, ok := encodeOEM(r); ok {
		return c, false
	}
	info.valid = false
	return '_', false
}

// encodeOEM maps a character to its CP850 byte.
func encodeOEM(r rune) (byte, bool) {
	if r < 0x80 {
		return byte(r), true
	}
	for i, c := range cp850 {
		if c == r {
			return byte(0x80 + i), true
		}
	}
	return 0, false
}

// shortPlan is how a name is stored: its 11-byte short name, the NT case
// flags, and whether long-name entries are needed.
type shortPlan struct {
	raw   [11]byte
	nt    byte
	needs bool // long-name entries
}

// makeShort builds the short name for long name name (already cleaned);
// taken reports whether an 11-byte short name is in use in the directory.
// ok is false when no basis can be made (a name of only dots and spaces
// never reaches here). tails, when not nil, remembers per basis the first
// numeric tail not yet tried, so adding many names with one basis stays
// linear; the caller drops it when an entry is removed, so a freed lower
// tail is found again, as vfat and mtools would.
func makeShort(name string, taken func([11]byte) bool, tails map[[11]byte]int) (shortPlan, bool) {
	u := []rune(name)
	// The extension starts after the last dot, unless only dots and
	// spaces precede that dot (".bashrc" is all base) or it ends the name.
	extStart := -1
	for i := len(u) - 1; i >= 0; i-- {
		if u[i] == '.' {
			if i != len(u)-1 {
				extStart = i
			}
			break
		}
	}
	if extStart >= 0 {
		onlySkips := true
		for _, r := range u[:extStart] {
			if r != '.' && r != ' ' {
				onlySkips = false
				break
			}
		}
		if onlySkips {
			extStart = -1
		}
	}
	baseRunes, extRunes := u, []rune(nil)
	if extStart >= 0 {
		baseRunes, extRunes = u[:extStart], u[extStart+1:]
	}

	isShort := true
	binfo := caseInfo{true, true, true}
	var base []byte
	for i, r := range baseRunes {
		c, skip := shortChar(r, &binfo)
		if skip {
			continue
		}
		base = append(base, c)
		if len(base) == 8 {
			if i+1 < len(baseRunes) {
				isShort = false
			}
			break
		}
	}
	if len(base) == 0 {
		return shortPlan{}, false
	}
	einfo := caseInfo{true, true, true}
	var ext []byte
	for i, r := range extRunes {
		c, skip := shortChar(r, &einfo)
		if skip {
			continue
		}
		ext = append(ext, c)
		if len(ext) == 3 {
			if i+1 < len(extRunes) {
				isShort = false
			}
			break
		}
	}
	if base[0] == 0xE5 { // would read as a deleted entry
		base[0] = 0x05
	}

	var p shortPlan
	fill := func(b []byte) {
		for i := range p.raw {
			p.raw[i] = ' '
		}
		copy(p.raw[:8], b)
		copy(p.raw[8:], ext)
	}
	fill(base)
	if isShort && binfo.valid && einfo.valid {
		if (binfo.upper || binfo.lower) && (einfo.upper || einfo.lower) && !taken(p.raw) {
			if !binfo.upper {
				p.nt |= ntLowerBase
			}
			if !einfo.upper {
				p.nt |= ntLowerExt
			}
			return p, true
		}
		// Mixed case: the basis is exact, only the case is lost.
		if !taken(p.raw) {
			p.needs = true
			return p, true
		}
	}
	p.needs = true
	basis := p.raw
	start := 1
	if tails != nil && tails[basis] > 0 {
		start = tails[basis]
	}
	for n := start; n < 1000000; n++ {
		tail := "~" + strconv.Itoa(n)
		keep := min(len(base), 8-len(tail))
		if n < 10 {
			keep = min(len(base), 6)
		}
		fill(append(append([]byte(nil), base[:keep]...), tail...))
		if !taken(p.raw) {
			if tails != nil {
				tails[basis] = n + 1
			}
			return p, true
		}
	}
	return shortPlan{}, false
}
