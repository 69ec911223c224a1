package personalize

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// LineChange is one changed line of a text file (Line counts from 1).
type LineChange struct {
	Line int    `json:"line"`
	Old  string `json:"old"`
	New  string `json:"new"`
}

// IDMap maps identities (filesystem UUIDs, FAT volume ids, GPT partition
// GUIDs as PARTUUIDs, MBR PARTUUIDs) from their old to their new text
// form. Keys are compared case-insensitively.
type IDMap map[string]string

// isIDChar reports whether c can be part of a UUID-like token: an ID is
// only replaced where it is not part of a longer hex/dash run.
func isIDChar(c byte) bool {
	return c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// matchCase gives repl the case of the occurrence it replaces.
func matchCase(occ, repl string) string {
	hasUpper, hasLower := false, false
	for _, r := range occ {
		hasUpper = hasUpper || unicode.IsUpper(r)
		hasLower = hasLower || unicode.IsLower(r)
	}
	switch {
	case hasUpper && !hasLower:
		return strings.ToUpper(repl)
	case hasLower && !hasUpper:
		return strings.ToLower(repl)
	}
	return repl
}

// replaceIDsInLine replaces every whole-token occurrence of an old ID.
func replaceIDsInLine(line string, ids IDMap) string {
	if len(ids) == 0 {
		return line
	}
	lower := strings.ToLower(line)
	var b strings.Builder
	last := 0
	for i := 0; i < len(line); {
		if i > 0 && isIDChar(line[i-1]) || !isIDChar(line[i]) {
			i++
			continue
		}
		j := i
		for j < len(line) && isIDChar(line[j]) {
			j++
		}
		tok := lower[i:j]
		if repl, ok := ids.lookup(tok); ok {
			b.WriteString(line[last:i])
			b.WriteString(matchCase(line[i:j], repl))
			last = j
		}
		i = j
	}
	if last == 0 {
		return line
	}
	b.WriteString(line[last:])
	return b.String()
}

func (m IDMap) lookup(lowerTok string) (string, bool) {
	for k, v := range m {
		if strings.ToLower(k) == lowerTok {
			return v, true
		}
	}
	return "", false
}

// ReplaceIDs rewrites every reference to an old identity in a text file
// (fstab, crypttab, grub.cfg, /etc/default/grub, loader entries,
// /etc/kernel/cmdline, resume configuration: UUID=, PARTUUID=,
// search --fs-uuid, /dev/disk/by-uuid/... all name IDs as whole tokens)
// and returns the new text and the lines that changed.
func ReplaceIDs(text string, ids IDMap) (string, []LineChange) {
	lines := strings.SplitAfter(text, "\n")
	var changes []LineChange
	for i, l := range lines {
		body := strings.TrimRight(l, "\n")
		nb := replaceIDsInLine(body, ids)
		if nb != body {
			changes = append(changes, LineChange{Line: i + 1, Old: body, New: nb})
			lines[i] = nb + l[len(body):]
		}
	}
	return strings.Join(lines, ""), changes
}

// hostnameRE is RFC 1123: labels of letters, digits and hyphens, not
// starting or ending with a hyphen, 63 bytes each, 253 in all.
var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)

// CheckHostname refuses a name systemd and the resolver would not take.
func CheckHostname(name string) error {
	if len(name) > 253 || !hostnameRE.MatchString(name) {
		return fmt.Errorf("personalize: %q is not a valid hostname (letters, digits and hyphens, dot-separated labels of at most 63 characters)", name)
	}
	return nil
}

// SetHosts renames the machine in /etc/hosts: on the 127.0.1.1 line (the
// Debian convention) and on any line naming the old hostname (its short
// form included), the old name is replaced by the new one. A file without
// such a line gets a 127.0.1.1 line after the first 127.0.0.1 line (at the
// top when there is none).
func SetHosts(text, oldName, newName string) (string, []LineChange) {
	oldShort, _, _ := strings.Cut(oldName, ".")
	newShort, _, _ := strings.Cut(newName, ".")
	lines := strings.SplitAfter(text, "\n")
	var changes []LineChange
	found := false
	for i, l := range lines {
		body := strings.TrimRight(l, "\n")
		content, comment, hasComment := strings.Cut(body, "#")
		f := strings.Fields(content)
		if len(f) < 2 {
			continue
		}
		isSelf := f[0] == "127.0.1.1"
		named := false
		for k := 1; k < len(f); k++ {
			if oldName != "" && (f[k] == oldName || f[k] == oldShort) {
				named = true
			}
		}
		if !isSelf && !named {
			continue
		}
		found = true
		var names []string
		seen := map[string]bool{}
		add := func(n string) {
			if !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
		for k := 1; k < len(f); k++ {
			switch {
			case oldName != "" && f[k] == oldName:
				add(newName)
			case oldShort != "" && f[k] == oldShort:
				add(newShort)
			case isSelf && oldName == "":
				// No old name known: the 127.0.1.1 line names this host.
				if k == 1 {
					add(newName)
					if newShort != newName {
						add(newShort)
					}
				}
			default:
				add(f[k])
			}
		}
		nb := f[0] + "\t" + strings.Join(names, " ")
		if hasComment {
			nb += " #" + comment
		}
		if strings.Join(f, " ") != strings.Join(append([]string{f[0]}, names...), " ") {
			changes = append(changes, LineChange{Line: i + 1, Old: body, New: nb})
			lines[i] = nb + l[len(body):]
		}
	}
	if found {
		return strings.Join(lines, ""), changes
	}
	entry := "127.0.1.1\t" + newName
	if newShort != newName {
		entry += " " + newShort
	}
	at := 0
	for i, l := range lines {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "127.0.0.1" {
			at = i + 1
			break
		}
	}
	if at > 0 && !strings.HasSuffix(lines[at-1], "\n") {
		lines[at-1] += "\n"
	}
	out := append(append(append([]string{}, lines[:at]...), entry+"\n"), lines[at:]...)
	return strings.Join(out, ""), []LineChange{{Line: at + 1, Old: "", New: entry}}
}

// ExpandHostname fills a fleet template: {n} is the machine's index
// (receiver order or --index), {n:03} zero-pads it, {mac} is its MAC
// address without colons. A name without placeholders is returned as is.
func ExpandHostname(tmpl string, index int, mac string) (string, error) {
	re := regexp.MustCompile(`\{(n|mac)(?::(0?\d+))?\}`)
	var bad error
	out := re.ReplaceAllStringFunc(tmpl, func(m string) string {
		sub := re.FindStringSubmatch(m)
		switch sub[1] {
		case "n":
			if index < 0 {
				bad = fmt.Errorf("personalize: hostname %q needs an index ({n}): give --index", tmpl)
				return m
			}
			if sub[2] != "" {
				w, _ := strconv.Atoi(sub[2])
				return fmt.Sprintf("%0*d", w, index)
			}
			return strconv.Itoa(index)
		default:
			if mac == "" {
				bad = fmt.Errorf("personalize: hostname %q needs a MAC address ({mac})", tmpl)
				return m
			}
			return strings.ToLower(strings.NewReplacer(":", "", "-", "").Replace(mac))
		}
	})
	if bad != nil {
		return "", bad
	}
	if strings.ContainsAny(out, "{}") {
		return "", fmt.Errorf("personalize: hostname template %q: unknown placeholder (use {n}, {n:03} or {mac})", tmpl)
	}
	return out, CheckHostname(out)
}

// ParseHostnameCSV reads "MAC,hostname" lines (a header line, blank lines
// and # comments are skipped) into a map keyed by the lower-case MAC
// address with colons.
func ParseHostnameCSV(text string) (map[string]string, error) {
	m := map[string]string{}
	first := true
	for i, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		header := first
		first = false
		mac, name, ok := strings.Cut(l, ",")
		mac, name = strings.TrimSpace(mac), strings.TrimSpace(name)
		norm, err := normMAC(mac)
		if err != nil {
			if header {
				continue // a header line such as "mac,hostname"
			}
			return nil, fmt.Errorf("personalize: hostname CSV line %d: %w", i+1, err)
		}
		if !ok {
			return nil, fmt.Errorf("personalize: hostname CSV line %d: want MAC,hostname", i+1)
		}
		if err := CheckHostname(name); err != nil {
			return nil, fmt.Errorf("personalize: hostname CSV line %d: %w", i+1, err)
		}
		if _, dup := m[norm]; dup {
			return nil, fmt.Errorf("personalize: hostname CSV line %d: MAC %s listed twice", i+1, mac)
		}
		m[norm] = name
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("personalize: hostname CSV lists no MAC,hostname line")
	}
	return m, nil
}

func normMAC(s string) (string, error) {
	h := strings.ToLower(strings.NewReplacer(":", "", "-", "", ".", "").Replace(s))
	if len(h) != 12 {
		return "", fmt.Errorf("%q is not a MAC address", s)
	}
	for _, c := range h {
		if !isIDChar(byte(c)) || c == '-' {
			return "", fmt.Errorf("%q is not a MAC address", s)
		}
	}
	var parts []string
	for i := 0; i < 12; i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":"), nil
}
