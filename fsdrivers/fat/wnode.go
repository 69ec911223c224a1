package fat

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf16"

	"github.com/dimg-project/dimg/fsdrivers"
)

// node is a file or directory of a writable volume. FAT has no inodes: a
// node is its short directory entry (ent, the truth for attributes, times,
// first cluster and size) at a place in its parent directory (slot, with
// lfn long-name entries before it). The node, and so its number, survives
// renames; its entry is copied back into the parent's bytes (store) after
// every change.
type node struct {
	ino    uint64
	parent *node // nil for the root and for unlinked nodes
	slot   int   // index of the short entry in the parent
	lfn    int   // long-name entries right before slot
	name   string
	ent    [entrySize]byte
	holds  int
	gone   bool     // unlinked (kept while held) or removed
	ch     *extents // clusters, nil until loaded
	dir    *dirData // directory contents, nil until loaded
}

func (n *node) isDir() bool { return n.ent[11]&attrDirectory != 0 }
func (n *node) size() int64 { return int64(binary.LittleEndian.Uint32(n.ent[28:])) }
func (n *node) setSize(s int64) {
	binary.LittleEndian.PutUint32(n.ent[28:], uint32(s))
}

// extents are the clusters of a chain as runs of consecutive numbers, with
// the count of clusters before each run for a binary search.
type extents struct {
	runs   []run
	before []int64
	n      int64
}

func (e *extents) add(c uint32) {
	if k := len(e.runs); k > 0 && e.runs[k-1].first+e.runs[k-1].n == c {
		e.runs[k-1].n++
	} else {
		e.runs = append(e.runs, run{first: c, n: 1})
		e.before = append(e.before, e.n)
	}
	e.n++
}

// last is the chain's last cluster, 0 when empty.
func (e *extents) last() uint32 {
	if len(e.runs) == 0 {
		return 0
	}
	r := e.runs[len(e.runs)-1]
	return r.first + r.n - 1
}

// at returns the cluster holding the chain's k-th cluster (k < n) and how
// many consecutive clusters follow it in its run, itself included.
func (e *extents) at(k int64) (uint32, int64) {
	i := sort.Search(len(e.runs), func(i int) bool { return e.before[i]+int64(e.runs[i].n) > k })
	r := e.runs[i]
	in := k - e.before[i]
	return r.first + uint32(in), int64(r.n) - in
}

// cut keeps the first k clusters and returns the runs removed.
func (e *extents) cut(k int64) []run {
	if k >= e.n {
		return nil
	}
	var out []run
	i := sort.Search(len(e.runs), func(i int) bool { return e.before[i]+int64(e.runs[i].n) > k })
	in := uint32(k - e.before[i])
	if in > 0 {
		r := e.runs[i]
		out = append(out, run{first: r.first + in, n: r.n - in})
		e.runs[i].n = in
		i++
	}
	out = append(out, e.runs[i:]...)
	e.runs, e.before, e.n = e.runs[:i], e.before[:i], k
	return out
}

// walk loads the chain from first, at most limit clusters (a longer chain
// is an error); Brent's cycle detection stops a looping chain early.
func (w *wfs) walk(first uint32, limit int64) (*extents, error) {
	g := w.g
	e := &extents{}
	if first == 0 {
		return e, nil
	}
	max := g.maxCluster()
	tortoise, power, lam := uint32(0), int64(1), int64(0)
	for cur := first; ; {
		if cur < 2 || cur > max {
			return nil, fmt.Errorf("fat: chain from cluster %d: cluster %d outside 2..%d: %w", first, cur, max, fsdrivers.ErrCorrupt)
		}
		if cur == tortoise || e.n >= int64(g.clusterCount) {
			return nil, fmt.Errorf("fat: chain from cluster %d loops at cluster %d: %w", first, cur, fsdrivers.ErrCorrupt)
		}
		if e.n >= limit {
			return nil, fmt.Errorf("fat: chain from cluster %d is longer than %d clusters: %w", first, limit, fsdrivers.ErrCorrupt)
		}
		if lam == power {
			tortoise, power, lam = cur, power*2, 0
		}
		lam++
		e.add(cur)
		next, err := w.fat.get(cur)
		if err != nil {
			return nil, err
		}
		switch {
		case g.eoc(next):
			return e, nil
		case next == 0 || g.bad(next):
			return nil, fmt.Errorf("fat: chain from cluster %d: cluster %d is followed by %#x: %w", first, cur, next, fsdrivers.ErrCorrupt)
		}
		cur = next
	}
}

// dirData is a loaded directory: all its entries as bytes (raw, at most
// 2 MiB), which blocks of them changed, and indexes of its children.
// Blocks are clusters, or sectors of the FAT12/16 fixed root.
type dirData struct {
	fixed  bool
	raw    []byte
	dirty  map[int]bool
	kids   map[int]*node // short-entry slot -> node
	names  map[string]*node
	shorts map[string]*node
	raws   map[[11]byte]*node // by short name bytes, upper-cased: alias checks
	tails  map[[11]byte]int   // makeShort's numeric-tail memo, nil after a removal
	// freeFrom is a lower bound of the free slots: every slot before it
	// is in use, so adding many entries does not rescan a big directory.
	freeFrom int
}

// fold is a case-insensitive key: each character replaced by the smallest
// of its simple case folding orbit, so fold(a) == fold(b) exactly when
// strings.EqualFold(a, b).
func fold(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			m = min(m, f)
		}
		b.WriteRune(m)
	}
	return b.String()
}

func shortKey(raw []byte) string { return fold(shortName(raw, 0)) }

// rawKey is a short name's 11 bytes as compared for uniqueness: ASCII
// upper-cased (names from other tools may hold lower case), a leading 0x05
// read as the 0xE5 it stands for.
func rawKey(raw []byte) [11]byte {
	var k [11]byte
	copy(k[:], raw)
	if k[0] == 0x05 {
		k[0] = 0xE5
	}
	for i, c := range k {
		if 'a' <= c && c <= 'z' {
			k[i] = c - 'a' + 'A'
		}
	}
	return k
}

// index registers n as a child of d.
func (d *dirData) index(n *node) {
	d.kids[n.slot] = n
	if k := fold(n.name); d.names[k] == nil {
		d.names[k] = n
	}
	if k := shortKey(n.ent[:11]); d.shorts[k] == nil {
		d.shorts[k] = n
	}
	if k := rawKey(n.ent[:11]); d.raws[k] == nil {
		d.raws[k] = n
	}
}

func (d *dirData) unindex(n *node) {
	delete(d.kids, n.slot)
	if k := fold(n.name); d.names[k] == n {
		delete(d.names, k)
	}
	if k := shortKey(n.ent[:11]); d.shorts[k] == n {
		delete(d.shorts, k)
	}
	if k := rawKey(n.ent[:11]); d.raws[k] == n {
		delete(d.raws, k)
	}
	d.tails = nil
}

// find looks a name up as Windows and Linux do: case-insensitively, long
// names first, then 8.3 names; trailing dots do not count.
func (d *dirData) find(name string) *node {
	name = strings.TrimRight(name, ".")
	k := fold(name)
	if n := d.names[k]; n != nil {
		return n
	}
	return d.shorts[k]
}

// taken reports whether a short name is in use in d, as an alias or (a
// corner case) as someone's long name.
func (d *dirData) taken(raw [11]byte) bool {
	if d.raws[rawKey(raw[:])] != nil {
		return true
	}
	k := shortKey(raw[:])
	return d.shorts[k] != nil || d.names[k] != nil
}

// newDirData is an empty directory's contents.
func newDirData() *dirData {
	return &dirData{dirty: map[int]bool{}, kids: map[int]*node{}, names: map[string]*node{}, shorts: map[string]*node{}, raws: map[[11]byte]*node{}}
}

// blockSize is the unit in which dir's bytes are written back.
func (w *wfs) blockSize(d *dirData) int64 {
	if d.fixed {
		return w.g.sectorSize
	}
	return w.g.clusterSize
}

// slotOffset is the partition offset of entry slot of directory n.
func (w *wfs) slotOffset(n *node, slot int) int64 {
	off := int64(slot) * entrySize
	if n.dir.fixed {
		return w.g.rootOffset + off
	}
	c, _ := n.ch.at(off / w.g.clusterSize)
	return w.g.clusterOffset(c) + off%w.g.clusterSize
}

// loadDir reads directory n and makes nodes of its entries. An entry that
// existed when the volume was opened gets its partition offset as node
// number, as the read-only tree reports it; new nodes are numbered from
// newInoBase.
func (w *wfs) loadDir(n *node) (*dirData, error) {
	if n.dir != nil {
		return n.dir, nil
	}
	g := w.g
	d := newDirData()
	if n == w.root && g.bits != 32 {
		d.fixed = true
		d.raw = make([]byte, g.rootBytes)
		if err := readFull(w.dev, d.raw, g.rootOffset); err != nil {
			return nil, fmt.Errorf("fat: read root directory: %w: %w", err, syscall.EIO)
		}
	} else {
		if n.ch == nil {
			first := w.first(n)
			if first == 0 {
				return nil, fmt.Errorf("fat: directory %q has no clusters: %w: %w", n.name, fsdrivers.ErrCorrupt, syscall.EIO)
			}
			ch, err := w.walk(first, max(maxDirBytes/g.clusterSize, 1))
			if err != nil {
				return nil, fmt.Errorf("fat: directory %q: %w: %w", n.name, err, syscall.EIO)
			}
			n.ch = ch
		}
		d.raw = make([]byte, n.ch.n*g.clusterSize)
		for i, r := range n.ch.runs {
			buf := d.raw[n.ch.before[i]*g.clusterSize:][:int64(r.n)*g.clusterSize]
			if err := readFull(w.dev, buf, g.clusterOffset(r.first)); err != nil {
				return nil, fmt.Errorf("fat: read directory %q: %w: %w", n.name, err, syscall.EIO)
			}
		}
	}
	n.dir = d
	p := &dirParser{isFAT32: g.bits == 32}
	feed(p, d.raw, 0)
	for _, e := range p.list.entries {
		slot := int(e.off / entrySize)
		k := &node{parent: n, slot: slot, lfn: e.lfn, name: e.name}
		copy(k.ent[:], d.raw[e.off:])
		k.ino = uint64(w.slotOffset(n, slot))
		if old := w.nodes[k.ino]; old != nil {
			// Two directories claim the same bytes (cross-linked clusters).
			n.dir = nil
			return nil, fmt.Errorf("fat: directory %q shares entry bytes at %d with %q: %w: %w", n.name, k.ino, old.name, fsdrivers.ErrCorrupt, syscall.EIO)
		}
		w.nodes[k.ino] = k
		d.index(k)
	}
	if p.list.label != nil && n == w.root {
		w.rootLabel = p.list.label
	}
	return d, nil
}

// newInoBase numbers nodes created after opening, above every partition
// offset a FAT volume can have (FAT32 volumes end below 16 TiB).
const newInoBase = 1 << 48

// first is the node's first cluster (the high word only counts on FAT32:
// FAT12/16 may keep an OS/2 extended-attribute handle there).
func (w *wfs) first(n *node) uint32 {
	le := binary.LittleEndian
	c := uint32(le.Uint16(n.ent[26:]))
	if w.g.bits == 32 {
		c |= uint32(le.Uint16(n.ent[20:])) << 16
	}
	return c
}

func (w *wfs) setFirst(n *node, c uint32) {
	le := binary.LittleEndian
	le.PutUint16(n.ent[26:], uint16(c))
	if w.g.bits == 32 {
		le.PutUint16(n.ent[20:], uint16(c>>16))
	}
}

// store copies n's entry into its parent's bytes.
func (w *wfs) store(n *node) {
	if n.parent == nil || n.gone {
		return
	}
	w.putSlot(n.parent, n.slot, n.ent[:])
}

// putSlot writes one 32-byte entry into directory dir's bytes.
func (w *wfs) putSlot(dir *node, slot int, e []byte) {
	d := dir.dir
	copy(d.raw[slot*entrySize:(slot+1)*entrySize], e)
	d.dirty[int(int64(slot)*entrySize/w.blockSize(d))] = true
	w.dirtyDirs[dir] = true
}

// fatTimes encodes t (as wall-clock time in UTC) as FAT's date, 2-second
// time and 10 ms tenths, clamped to 1980..2107.
func fatTimes(t time.Time) (date, tm uint16, tenth byte) {
	t = t.UTC()
	if t.Year() < 1980 {
		return 1<<5 | 1, 0, 0
	}
	if t.Year() > 2107 {
		return 127<<9 | 12<<5 | 31, 23<<11 | 59<<5 | 29, 199
	}
	date = uint16(t.Year()-1980)<<9 | uint16(t.Month())<<5 | uint16(t.Day())
	tm = uint16(t.Hour())<<11 | uint16(t.Minute())<<5 | uint16(t.Second()/2)
	tenth = byte(t.Second()%2*100 + t.Nanosecond()/int(10*time.Millisecond))
	return date, tm, tenth
}

func setMtime(e []byte, t time.Time) {
	d, tm, _ := fatTimes(t)
	binary.LittleEndian.PutUint16(e[22:], tm)
	binary.LittleEndian.PutUint16(e[24:], d)
}

func setAtime(e []byte, t time.Time) {
	d, _, _ := fatTimes(t)
	binary.LittleEndian.PutUint16(e[18:], d)
}

func setBtime(e []byte, t time.Time) {
	d, tm, tenth := fatTimes(t)
	e[13] = tenth
	binary.LittleEndian.PutUint16(e[14:], tm)
	binary.LittleEndian.PutUint16(e[16:], d)
}

// lfnSlots encodes name's long-name entries, in the order they are stored
// (highest order number first), for a short name with checksum sum.
func lfnSlots(name string, sum byte) [][entrySize]byte {
	u := utf16.Encode([]rune(name))
	cnt := (len(u) + lfnUnits - 1) / lfnUnits
	pad := make([]uint16, cnt*lfnUnits)
	copy(pad, u)
	for i := len(u); i < len(pad); i++ {
		pad[i] = 0xFFFF
	}
	if len(u) < len(pad) {
		pad[len(u)] = 0 // terminator when the name does not fill its last entry
	}
	le := binary.LittleEndian
	out := make([][entrySize]byte, cnt)
	for k := 1; k <= cnt; k++ {
		e := &out[cnt-k]
		e[0] = byte(k)
		if k == cnt {
			e[0] |= 0x40
		}
		e[11] = attrLongName
		e[13] = sum
		part := pad[(k-1)*lfnUnits:]
		for i := range 5 {
			le.PutUint16(e[1+2*i:], part[i])
		}
		for i := range 6 {
			le.PutUint16(e[14+2*i:], part[5+i])
		}
		for i := range 2 {
			le.PutUint16(e[28+2*i:], part[11+i])
		}
	}
	return out
}

// freeSlots finds k consecutive free entries in dir, growing it by zeroed
// clusters when none are left (ENOSPC for the fixed root or a directory at
// the 65,536-entry limit).
func (w *wfs) freeSlots(dir *node, k int) (int, error) {
	d := dir.dir
	for {
		total := len(d.raw) / entrySize
		runStart, runLen, firstFree := 0, 0, -1
		for i := d.freeFrom; i < total; i++ {
			if b := d.raw[i*entrySize]; b == 0 || b == 0xE5 {
				if runLen == 0 {
					runStart = i
				}
				if firstFree < 0 {
					firstFree = i
				}
				runLen++
				if runLen == k {
					d.freeFrom = firstFree
					if firstFree == runStart {
						d.freeFrom = runStart + k
					}
					return runStart, nil
				}
			} else {
				runLen = 0
			}
		}
		if firstFree >= 0 {
			d.freeFrom = firstFree
		} else {
			d.freeFrom = total
		}
		if d.fixed {
			return 0, fmt.Errorf("fat: root directory is full (%d entries): %w", total, syscall.ENOSPC)
		}
		cs := w.g.clusterSize
		if int64(len(d.raw))+cs > maxDirBytes {
			return 0, fmt.Errorf("fat: directory %q holds the most entries FAT allows: %w", dir.name, syscall.ENOSPC)
		}
		if err := w.grow(dir, dir.ch.n+1); err != nil {
			return 0, err
		}
		b := len(d.raw) / int(cs)
		d.raw = append(d.raw, make([]byte, cs)...)
		d.dirty[b] = true // the new cluster is written whole: zeroed
		w.dirtyDirs[dir] = true
	}
}

// addEntry makes an entry for name in dir from body (attributes, times,
// cluster and size; its name bytes are replaced) and returns where it is.
func (w *wfs) addEntry(dir *node, name string, body [entrySize]byte) (slot, lfn int, ent [entrySize]byte, err error) {
	d := dir.dir
	if d.tails == nil {
		d.tails = map[[11]byte]int{}
	}
	plan, ok := makeShort(name, d.taken, d.tails)
	if !ok {
		return 0, 0, ent, fmt.Errorf("fat: no 8.3 alias for %q: %w", name, syscall.EINVAL)
	}
	var lfns [][entrySize]byte
	if plan.needs {
		lfns = lfnSlots(name, shortSum(plan.raw[:]))
	}
	start, err := w.freeSlots(dir, len(lfns)+1)
	if err != nil {
		return 0, 0, ent, err
	}
	for i, e := range lfns {
		w.putSlot(dir, start+i, e[:])
	}
	ent = body
	copy(ent[:11], plan.raw[:])
	ent[12] = plan.nt
	slot = start + len(lfns)
	w.putSlot(dir, slot, ent[:])
	return slot, len(lfns), ent, nil
}

// removeEntry marks n's entries deleted (0xE5) and drops it from its
// parent's indexes. The returned undo puts everything back.
func (w *wfs) removeEntry(n *node) (undo func()) {
	dir := n.parent
	d := dir.dir
	lo := n.slot - n.lfn
	saved := append([]byte(nil), d.raw[lo*entrySize:(n.slot+1)*entrySize]...)
	for s := lo; s <= n.slot; s++ {
		e := append([]byte(nil), d.raw[s*entrySize:(s+1)*entrySize]...)
		e[0] = 0xE5
		w.putSlot(dir, s, e)
	}
	d.unindex(n)
	d.freeFrom = min(d.freeFrom, lo)
	return func() {
		for s := lo; s <= n.slot; s++ {
			w.putSlot(dir, s, saved[(s-lo)*entrySize:(s-lo+1)*entrySize])
		}
		d.index(n)
	}
}
