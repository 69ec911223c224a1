package ntfs

import (
	"encoding/binary"
	"fmt"
	"unicode/utf16"
)

// $FILE_NAME namespaces.
const (
	nsPOSIX    = 0
	nsWin32    = 1
	nsDOS      = 2 // an 8.3 alias of a Win32 name: hidden
	nsWin32DOS = 3

	// Index entry flags.
	ieSubnode = 0x1
	ieLast    = 0x2

	// maxIndexDepth bounds the B+ tree walk; real trees are a few levels.
	maxIndexDepth = 32
)

// indexEntry is one directory entry: a name and the file it refers to.
type indexEntry struct {
	ref       uint64
	name      []uint16
	namespace byte
	flags     uint32 // the $FILE_NAME copy of the file attributes
}

// rawEntry is an entry of one index node before its key is decoded.
type rawEntry struct {
	ref   uint64
	key   []byte
	child int64 // VCN of the subnode, -1 if none
	last  bool
}

// dirIndex is the $I30 index of one directory.
type dirIndex struct {
	v         *Volume
	num       uint64
	root      []rawEntry
	alloc     *stream // nil when the whole index fits the root
	blockSize int64
	vcnSize   int64
}

func (v *Volume) openIndex(ino *inode) (*dirIndex, error) {
	roots := pick(ino.attrs, atIndexRoot, "$I30")
	if len(roots) != 1 || !roots[0].resident || len(roots[0].value) < 32 {
		return nil, fmt.Errorf("%w: record %d: no usable $INDEX_ROOT", errCorrupt, ino.num)
	}
	val := roots[0].value
	d := &dirIndex{v: v, num: ino.num, blockSize: int64(binary.LittleEndian.Uint32(val[8:]))}
	if !pow2(d.blockSize, 512, 64<<10) {
		return nil, fmt.Errorf("%w: record %d: index block size %d", errCorrupt, ino.num, d.blockSize)
	}
	// VCNs of index blocks count clusters, or 512-byte units when a block
	// is smaller than a cluster.
	d.vcnSize = v.boot.clusterSize
	if d.blockSize < d.vcnSize {
		d.vcnSize = 512
	}
	var err error
	if d.root, err = parseNode(val[16:]); err != nil {
		return nil, fmt.Errorf("%w: record %d $INDEX_ROOT: %w", errCorrupt, ino.num, err)
	}
	if allocs := pick(ino.attrs, atIndexAlloc, "$I30"); len(allocs) > 0 {
		if d.alloc, err = v.newStream(allocs, fmt.Sprintf("record %d $INDEX_ALLOCATION", ino.num)); err != nil {
			return nil, fmt.Errorf("%w: %w", errCorrupt, err)
		}
	}
	return d, nil
}

// parseNode decodes the entries of an index node; b starts at the node
// header (offset of the first entry, bytes in use, bytes allocated, flags).
func parseNode(b []byte) ([]rawEntry, error) {
	if len(b) < 16 {
		return nil, fmt.Errorf("node header of %d bytes", len(b))
	}
	le := binary.LittleEndian
	off := int(le.Uint32(b[0:]))
	end := int(le.Uint32(b[4:]))
	if off < 16 || end > len(b) || off > end {
		return nil, fmt.Errorf("entries %d-%d outside the node's %d bytes", off, end, len(b))
	}
	var es []rawEntry
	for off+16 <= end {
		length := int(le.Uint16(b[off+8:]))
		keyLen := int(le.Uint16(b[off+10:]))
		flags := le.Uint16(b[off+12:])
		if length < 16 || length%8 != 0 || off+length > end || 16+keyLen > length {
			return nil, fmt.Errorf("entry at %d: length %d, key %d", off, length, keyLen)
		}
		e := rawEntry{ref: le.Uint64(b[off:]), key: b[off+16 : off+16+keyLen], child: -1, last: flags&ieLast != 0}
		if flags&ieSubnode != 0 {
			if length < 24+keyLen {
				return nil, fmt.Errorf("entry at %d: no room for its subnode VCN", off)
			}
			e.child = int64(le.Uint64(b[off+length-8:]))
		}
		es = append(es, e)
		if e.last {
			return es, nil
		}
		off += length
	}
	return nil, fmt.Errorf("node has no last entry")
}

// block reads and decodes the INDX block at vcn.
func (d *dirIndex) block(vcn int64) ([]rawEntry, error) {
	if d.alloc == nil {
		return nil, fmt.Errorf("%w: record %d: subnode VCN %d but no $INDEX_ALLOCATION", errCorrupt, d.num, vcn)
	}
	off := vcn * d.vcnSize
	if vcn < 0 || off+d.blockSize > d.alloc.dataSize {
		return nil, fmt.Errorf("%w: record %d: index block VCN %d outside $INDEX_ALLOCATION", errCorrupt, d.num, vcn)
	}
	b := make([]byte, d.blockSize)
	if _, err := d.alloc.ReadAt(b, off); err != nil {
		return nil, err
	}
	if err := applyFixups(b, "INDX"); err != nil {
		return nil, fmt.Errorf("%w: record %d index block VCN %d: %w", errCorrupt, d.num, vcn, err)
	}
	es, err := parseNode(b[24:])
	if err != nil {
		return nil, fmt.Errorf("%w: record %d index block VCN %d: %w", errCorrupt, d.num, vcn, err)
	}
	return es, nil
}

// walk calls fn for every entry in collation order; fn returns false to
// stop. Each block is visited at most once, so a looping tree ends.
func (d *dirIndex) walk(fn func(indexEntry) bool) error {
	seen := map[int64]bool{}
	var visit func(es []rawEntry, depth int) (bool, error)
	visit = func(es []rawEntry, depth int) (bool, error) {
		if depth > maxIndexDepth {
			return false, fmt.Errorf("%w: record %d: index deeper than %d", errCorrupt, d.num, maxIndexDepth)
		}
		for _, e := range es {
			if e.child >= 0 {
				if seen[e.child] {
					return false, fmt.Errorf("%w: record %d: index block VCN %d reached twice", errCorrupt, d.num, e.child)
				}
				seen[e.child] = true
				kids, err := d.block(e.child)
				if err != nil {
					return false, err
				}
				if more, err := visit(kids, depth+1); !more || err != nil {
					return false, err
				}
			}
			if e.last {
				break
			}
			ie, err := decodeKey(e)
			if err != nil {
				return false, fmt.Errorf("%w: record %d: %w", errCorrupt, d.num, err)
			}
			if !fn(ie) {
				return false, nil
			}
		}
		return true, nil
	}
	_, err := visit(d.root, 0)
	return err
}

// decodeKey decodes the $FILE_NAME key of an entry.
func decodeKey(e rawEntry) (indexEntry, error) {
	k := e.key
	if len(k) < 66 {
		return indexEntry{}, fmt.Errorf("index key of %d bytes", len(k))
	}
	n := int(k[64])
	if 66+2*n > len(k) {
		return indexEntry{}, fmt.Errorf("name of %d characters overruns its key", n)
	}
	name := make([]uint16, n)
	for i := range name {
		name[i] = binary.LittleEndian.Uint16(k[66+2*i:])
	}
	return indexEntry{ref: e.ref, name: name, namespace: k[65], flags: binary.LittleEndian.Uint32(k[56:])}, nil
}

// lookup finds name in the directory. It descends the B+ tree comparing
// names the way NTFS sorts them (upper-cased through the volume's $UpCase
// table); if that is not possible or names differing only in case make it
// ambiguous, it scans the whole directory.
func (d *dirIndex) lookup(name string) (indexEntry, bool, error) {
	target := utf16.Encode([]rune(name))
	if up := d.v.upcaseTable(); up != nil {
		e, found, ambiguous, err := d.descend(target, up)
		if err != nil || found || !ambiguous {
			return e, found, err
		}
	}
	var hit indexEntry
	found := false
	err := d.walk(func(e indexEntry) bool {
		if e.namespace != nsDOS && equalUnits(e.name, target) {
			hit, found = e, true
			return false
		}
		return true
	})
	return hit, found, err
}

func (d *dirIndex) descend(target []uint16, up []uint16) (hit indexEntry, found, ambiguous bool, err error) {
	es := d.root
	seen := map[int64]bool{}
	for depth := 0; depth <= maxIndexDepth; depth++ {
		next := int64(-1)
		for _, e := range es {
			if e.last {
				next = e.child
				break
			}
			ie, err := decodeKey(e)
			if err != nil {
				return hit, false, false, fmt.Errorf("%w: record %d: %w", errCorrupt, d.num, err)
			}
			c := collate(target, ie.name, up)
			if c == 0 {
				if ie.namespace != nsDOS && equalUnits(ie.name, target) {
					return ie, true, false, nil
				}
				ambiguous = true
				continue
			}
			if c < 0 {
				next = e.child
				break
			}
		}
		if next < 0 {
			return hit, false, ambiguous, nil
		}
		if seen[next] {
			return hit, false, false, fmt.Errorf("%w: record %d: index block VCN %d reached twice", errCorrupt, d.num, next)
		}
		seen[next] = true
		if es, err = d.block(next); err != nil {
			return hit, false, false, err
		}
	}
	return hit, false, false, fmt.Errorf("%w: record %d: index deeper than %d", errCorrupt, d.num, maxIndexDepth)
}

// collate compares two names as the $I30 index orders them.
func collate(a, b []uint16, up []uint16) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		x, y := up[a[i]], up[b[i]]
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	switch {
	case len(a) < len(b):
		return -1
	case len(a) > len(b):
		return 1
	}
	return 0
}

func equalUnits(a, b []uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// upcaseTable loads $UpCase once: 65536 little-endian code units. On any
// problem it stays nil and lookups scan directories instead.
func (v *Volume) upcaseTable() []uint16 {
	v.upcaseOnce.Do(func() {
		rec, err := v.record(recUpCase)
		if err != nil {
			return
		}
		attrs, err := v.allAttrs(rec)
		if err != nil {
			return
		}
		s, err := v.newStream(pick(attrs, atData, ""), "$UpCase")
		if err != nil || s.dataSize != 2*65536 {
			return
		}
		b := make([]byte, s.dataSize)
		if _, err := s.ReadAt(b, 0); err != nil {
			return
		}
		up := make([]uint16, 65536)
		for i := range up {
			up[i] = binary.LittleEndian.Uint16(b[2*i:])
		}
		v.upcase = up
	})
	return v.upcase
}
