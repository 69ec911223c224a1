package imagefmt

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"sort"
)

// geometry is the shape of a v2 image's index tree (FORMAT.md, "Index
// tree"): level 0 holds leaves of fanout chunks each, level k+1 nodes of
// fanout level-k nodes each, up to a single root. Every absent subtree
// has a known hash, so a sparse disk costs nothing to hash.
type geometry struct {
	chunks    int64
	chunkSize int
	diskSize  int64
	height    int        // levels; the root is at level height-1
	counts    []int64    // counts[k]: nodes at level k
	zfull     [][32]byte // hash of a full all-zero node at level k
	zedge     [][32]byte // hash of the all-zero last node at level k
	zsum      [32]byte   // SHA-256 of a full-length zero chunk
	zlast     [32]byte   // SHA-256 of the (maybe shorter) last chunk when zero
}

func newGeometry(h *Header) *geometry {
	g := &geometry{chunks: h.NumChunks(), chunkSize: h.ChunkSize, diskSize: h.DiskSize}
	g.zsum = ZeroSum(h.ChunkSize)
	g.zlast = ZeroSum(h.ChunkLen(g.chunks - 1))
	n := g.chunks
	for {
		n = (n + fanout - 1) / fanout
		g.counts = append(g.counts, n)
		if n == 1 {
			break
		}
	}
	g.height = len(g.counts)
	// Full zero nodes: level 0 hashes fanout zero sums, level k fanout
	// full zero nodes of level k-1. The last node of each level is hashed
	// from its real children: all full but the last, the edge of the level
	// below.
	below, belowEdge := g.zsum, g.zlast
	prevCount := g.chunks
	for k := 0; k < g.height; k++ {
		var full [32]byte
		h := sha256.New()
		for range fanout {
			h.Write(below[:])
		}
		h.Sum(full[:0])
		h.Reset()
		last := prevCount - (g.counts[k]-1)*fanout // children of the last node
		for range last - 1 {
			h.Write(below[:])
		}
		h.Write(belowEdge[:])
		var edge [32]byte
		h.Sum(edge[:0])
		g.zfull = append(g.zfull, full)
		g.zedge = append(g.zedge, edge)
		below, belowEdge = full, edge
		prevCount = g.counts[k]
	}
	return g
}

// slots is how many children node idx of level k has (chunks for a leaf).
func (g *geometry) slots(k int, idx int64) int {
	below := g.chunks
	if k > 0 {
		below = g.counts[k-1]
	}
	return int(min(int64(fanout), below-idx*fanout))
}

// zeroSum is the sum of chunk c when it reads as zeros.
func (g *geometry) zeroSum(c int64) [32]byte {
	if c == g.chunks-1 {
		return g.zlast
	}
	return g.zsum
}

// zeroHash is the hash of node idx of level k when every chunk under it
// reads as zeros.
func (g *geometry) zeroHash(k int, idx int64) [32]byte {
	if idx == g.counts[k]-1 {
		return g.zedge[k]
	}
	return g.zfull[k]
}

// childZero is the hash of child slot s of node idx at level k when the
// child is all zeros: a chunk's zero sum for a leaf, a zero node below.
func (g *geometry) childZero(k int, idx int64, s int) [32]byte {
	p := idx*fanout + int64(s)
	if k == 0 {
		return g.zeroSum(p)
	}
	return g.zeroHash(k-1, p)
}

// leafStored is a leaf entry for one stored chunk.
type leafStored struct {
	slot   uint16
	method uint8
	slen   uint32
	off    int64 // file offset of the frame header
	sum    [32]byte
}

// leafRun is a leaf entry for a run of zero or unused chunks.
type leafRun struct {
	slot, count uint16
	state       uint8
}

// child is an internal node's entry for one present child node.
type child struct {
	slot   uint16
	length uint32
	off    int64
	hash   [32]byte
}

// node is one index tree node: a leaf (level 0: stored and run entries)
// or an internal node (children). Absent slots are unused chunks (or, in a
// delta, the base's).
type node struct {
	level    int
	index    int64
	stored   []leafStored
	runs     []leafRun
	children []child
}

func (n *node) empty() bool { return len(n.stored) == 0 && len(n.runs) == 0 && len(n.children) == 0 }

func (n *node) size() int {
	return nodeFixedSize + storedEntrySize*len(n.stored) + runEntrySize*len(n.runs) + childEntrySize*len(n.children)
}

func (n *node) marshal() []byte {
	b := make([]byte, n.size())
	le := binary.LittleEndian
	copy(b[0:4], nodeMagic[:])
	b[4] = uint8(n.level)
	if n.level == 0 {
		le.PutUint16(b[6:], uint16(len(n.stored)))
		le.PutUint16(b[8:], uint16(len(n.runs)))
	} else {
		le.PutUint16(b[6:], uint16(len(n.children)))
	}
	le.PutUint32(b[12:], uint32(len(b)))
	le.PutUint64(b[16:], uint64(n.index))
	p := b[24:]
	for _, e := range n.stored {
		le.PutUint16(p[0:], e.slot)
		p[2] = e.method
		le.PutUint32(p[4:], e.slen)
		le.PutUint64(p[8:], uint64(e.off))
		copy(p[16:48], e.sum[:])
		p = p[storedEntrySize:]
	}
	for _, r := range n.runs {
		le.PutUint16(p[0:], r.slot)
		le.PutUint16(p[2:], r.count)
		p[4] = r.state
		p = p[runEntrySize:]
	}
	for _, c := range n.children {
		le.PutUint16(p[0:], c.slot)
		le.PutUint32(p[4:], c.length)
		le.PutUint64(p[8:], uint64(c.off))
		copy(p[16:48], c.hash[:])
		p = p[childEntrySize:]
	}
	le.PutUint32(b[len(b)-4:], crc(b[:len(b)-4]))
	return b
}

// nodeLen returns the length of the node record at off whose first 24
// bytes are b, for readers of a stream.
func nodeLen(b []byte, off int64) (int, error) {
	n := int(binary.LittleEndian.Uint32(b[12:]))
	if [4]byte(b[0:4]) != nodeMagic {
		return 0, broken(RuleNode, off, "no index node (magic %q)", b[0:4])
	}
	if n < nodeFixedSize || n > maxNodeSize {
		return 0, broken(RuleNode, off+12, "index node length %d", n)
	}
	return n, nil
}

// nodeRules is what a node is checked against besides its own bytes.
type nodeRules struct {
	g      *geometry
	delta  bool // unused runs allowed (they override a base)
	zstd   bool // MethodZstd allowed
	isRoot bool // an empty node is allowed
}

// parseNode decodes and checks node record b found at file offset off,
// which must be node idx of level k. Everything a node points to lies
// before it in the file (a node is written after its frames and
// children), which also rules out cycles.
func parseNode(b []byte, off int64, k int, idx int64, r nodeRules) (*node, error) {
	bad := func(format string, a ...any) error {
		return broken(RuleNode, off, "index node (level %d, number %d): %s", k, idx, fmt.Sprintf(format, a...))
	}
	if len(b) < nodeFixedSize {
		return nil, bad("%d bytes", len(b))
	}
	n, err := nodeLen(b, off)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	if n != len(b) {
		return nil, bad("length %d, expected %d", n, len(b))
	}
	if crc(b[:n-4]) != le.Uint32(b[n-4:]) {
		return nil, bad("checksum mismatch")
	}
	nd := &node{level: int(b[4]), index: int64(le.Uint64(b[16:]))}
	if nd.level != k || nd.index != idx {
		return nil, bad("holds level %d number %d", nd.level, nd.index)
	}
	if b[5] != 0 || b[10] != 0 || b[11] != 0 {
		return nil, bad("reserved bytes set")
	}
	ne, nr := int(le.Uint16(b[6:])), int(le.Uint16(b[8:]))
	slots := r.g.slots(k, idx)
	p := b[24 : n-4]
	if k == 0 {
		if nodeFixedSize+ne*storedEntrySize+nr*runEntrySize != n {
			return nil, bad("%d stored and %d run entries do not fill %d bytes", ne, nr, n)
		}
		nd.stored = make([]leafStored, ne)
		for i := range nd.stored {
			e := leafStored{slot: le.Uint16(p[0:]), method: p[2], slen: le.Uint32(p[4:]), off: int64(le.Uint64(p[8:]))}
			copy(e.sum[:], p[16:48])
			c := idx*fanout + int64(e.slot)
			clen := chunkLen(r.g, c)
			switch {
			case int(e.slot) >= slots || i > 0 && e.slot <= nd.stored[i-1].slot:
				return nil, bad("stored entry %d: slot %d out of order or range", i, e.slot)
			case p[3] != 0:
				return nil, bad("stored entry %d: reserved byte set", i)
			case e.method != MethodRaw && e.method != MethodLZ4 && (e.method != MethodZstd || !r.zstd):
				return nil, bad("chunk %d: compression method %d not allowed here", c, e.method)
			case e.slen == 0 || int(e.slen) > maxFrameSize(clen) || e.method == MethodRaw && int(e.slen) != clen:
				return nil, bad("chunk %d: stored length %d", c, e.slen)
			case e.off < dataStart || e.off+FrameHeaderSize+int64(e.slen) > off:
				return nil, bad("chunk %d: frame at %d+%d is not before the node", c, e.off, e.slen)
			}
			nd.stored[i] = e
			p = p[storedEntrySize:]
		}
		nd.runs = make([]leafRun, nr)
		si := 0
		for i := range nd.runs {
			rn := leafRun{slot: le.Uint16(p[0:]), count: le.Uint16(p[2:]), state: p[4]}
			end := int(rn.slot) + int(rn.count)
			for si < len(nd.stored) && int(nd.stored[si].slot) < int(rn.slot) {
				si++
			}
			switch {
			case rn.count == 0 || end > slots:
				return nil, bad("run entry %d: slots %d+%d out of range", i, rn.slot, rn.count)
			case rn.state != diskZero && (rn.state != diskUnused || !r.delta):
				return nil, bad("run entry %d: state %d not allowed here", i, rn.state)
			case p[5] != 0 || p[6] != 0 || p[7] != 0:
				return nil, bad("run entry %d: reserved bytes set", i)
			case i > 0 && int(rn.slot) < int(nd.runs[i-1].slot)+int(nd.runs[i-1].count):
				return nil, bad("run entry %d overlaps the one before", i)
			case si < len(nd.stored) && int(nd.stored[si].slot) < end:
				return nil, bad("run entry %d overlaps stored slot %d", i, nd.stored[si].slot)
			case i > 0 && nd.runs[i-1].state == rn.state && int(nd.runs[i-1].slot)+int(nd.runs[i-1].count) == int(rn.slot):
				return nil, bad("run entries %d and %d are adjacent and not merged", i-1, i)
			}
			nd.runs[i] = rn
			p = p[runEntrySize:]
		}
	} else {
		if nr != 0 || nodeFixedSize+ne*childEntrySize != n {
			return nil, bad("%d children do not fill %d bytes", ne, n)
		}
		nd.children = make([]child, ne)
		for i := range nd.children {
			c := child{slot: le.Uint16(p[0:]), length: le.Uint32(p[4:]), off: int64(le.Uint64(p[8:]))}
			copy(c.hash[:], p[16:48])
			switch {
			case int(c.slot) >= slots || i > 0 && c.slot <= nd.children[i-1].slot:
				return nil, bad("child %d: slot %d out of order or range", i, c.slot)
			case p[2] != 0 || p[3] != 0:
				return nil, bad("child %d: reserved bytes set", i)
			case c.length < nodeFixedSize || c.length > maxNodeSize || c.off < dataStart || c.off+int64(c.length) > off:
				return nil, bad("child %d at %d+%d is not before the node", i, c.off, c.length)
			}
			nd.children[i] = c
			p = p[childEntrySize:]
		}
	}
	if nd.empty() && !r.isRoot {
		return nil, bad("empty node below the root")
	}
	return nd, nil
}

func chunkLen(g *geometry, c int64) int {
	if end := (c + 1) * int64(g.chunkSize); end > g.diskSize {
		return int(g.diskSize - c*int64(g.chunkSize))
	}
	return g.chunkSize
}

// leafFind returns the entry for slot s of a leaf: a stored entry, or the
// state of the run holding it, or diskAbsent (0).
func (n *node) leafFind(s int) (state uint8, e *leafStored) {
	i := sort.Search(len(n.stored), func(i int) bool { return int(n.stored[i].slot) >= s })
	if i < len(n.stored) && int(n.stored[i].slot) == s {
		return diskStored, &n.stored[i]
	}
	j := sort.Search(len(n.runs), func(j int) bool { return int(n.runs[j].slot)+int(n.runs[j].count) > s })
	if j < len(n.runs) && int(n.runs[j].slot) <= s {
		return n.runs[j].state, nil
	}
	return 0, nil
}

// childFind returns the child entry for slot s of an internal node.
func (n *node) childFind(s int) *child {
	i := sort.Search(len(n.children), func(i int) bool { return int(n.children[i].slot) >= s })
	if i < len(n.children) && int(n.children[i].slot) == s {
		return &n.children[i]
	}
	return nil
}

// leafHash hashes a leaf from its entries. absent gives the sum of an
// absent slot: a zero sum in a standalone image, the base's sum in a
// delta.
func leafHash(g *geometry, n *node, absent func(s int) ([32]byte, error)) ([32]byte, error) {
	h := sha256.New()
	slots := g.slots(0, n.index)
	si, ri := 0, 0
	for s := 0; s < slots; s++ {
		var sum [32]byte
		switch {
		case si < len(n.stored) && int(n.stored[si].slot) == s:
			sum = n.stored[si].sum
			si++
		case ri < len(n.runs) && int(n.runs[ri].slot) <= s:
			sum = g.zeroSum(n.index*fanout + int64(s))
			if s+1 == int(n.runs[ri].slot)+int(n.runs[ri].count) {
				ri++
			}
		default:
			var err error
			if sum, err = absent(s); err != nil {
				return sum, err
			}
		}
		h.Write(sum[:])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out, nil
}

// internalHash hashes an internal node from its children's hashes; absent
// gives the hash of an absent child (a zero subtree, or the base's node).
func internalHash(g *geometry, n *node, absent func(s int) ([32]byte, error)) ([32]byte, error) {
	h := sha256.New()
	slots := g.slots(n.level, n.index)
	ci := 0
	for s := 0; s < slots; s++ {
		var x [32]byte
		if ci < len(n.children) && int(n.children[ci].slot) == s {
			x = n.children[ci].hash
			ci++
		} else {
			var err error
			if x, err = absent(s); err != nil {
				return x, err
			}
		}
		h.Write(x[:])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out, nil
}

// nodeLoc is where a written node lies.
type nodeLoc struct {
	off    int64
	length int
}

// treeBuilder builds the index tree of a commit whose chunks arrive in
// increasing order (the streaming Writer, the stream reader checking it,
// and the Digester, which only hashes). Absent chunks are unused and hash
// as zeros. The open node of level k+1 is always the parent of the open
// node of level k, so a closed node's hash goes straight into its parent.
type treeBuilder struct {
	g      *geometry
	levels []buildLevel
	// emit writes a closed node (writer) or checks it against the next
	// record (stream reader); nil only hashes.
	emit func(n *node, b []byte) (nodeLoc, error)
	// strict: nodes are closed only by close (the stream reader, driven by
	// the node records it reads); advancing past an open node is an error.
	strict  bool
	root    nodeLoc
	rootSum [32]byte
	done    bool
	stored  int64 // stored chunks added
	storedB int64 // frame bytes of those
	zero    int64 // zero chunks added
}

type buildLevel struct {
	open    bool
	index   int64
	h       hash.Hash
	next    int  // next slot whose hash is not yet written
	written bool // a hash other than zero was written: else the node is a zero node
	n       node
}

func newTreeBuilder(g *geometry, emit func(*node, []byte) (nodeLoc, error), strict bool) *treeBuilder {
	b := &treeBuilder{g: g, levels: make([]buildLevel, g.height), emit: emit, strict: strict}
	for k := range b.levels {
		b.levels[k].h = sha256.New()
	}
	return b
}

// put writes hash x for slot s of the open node at level k, writing zero
// hashes for the slots skipped before it only when the node is not a
// zero node so far (they are written lazily: a zero node costs nothing).
func (b *treeBuilder) put(k int, s int, x [32]byte, zero bool) {
	L := &b.levels[k]
	if zero && !L.written {
		L.next = s + 1
		return
	}
	if !L.written {
		L.written = true
		for i := 0; i < L.next; i++ {
			z := b.g.childZero(k, L.index, i)
			L.h.Write(z[:])
		}
	}
	for i := L.next; i < s; i++ {
		z := b.g.childZero(k, L.index, i)
		L.h.Write(z[:])
	}
	L.h.Write(x[:])
	L.next = s + 1
}

// open makes node idx of level k (and its ancestors) the open nodes,
// closing the nodes they replace (or failing, when strict).
func (b *treeBuilder) open(k int, idx int64) error {
	if b.done {
		return fmt.Errorf("imagefmt: index tree already finished")
	}
	L := &b.levels[k]
	if L.open && L.index == idx {
		return nil
	}
	if L.open {
		if L.index > idx {
			return fmt.Errorf("records of index node (level %d, number %d) after those of number %d", k, idx, L.index)
		}
		if b.strict {
			return fmt.Errorf("index node (level %d, number %d) missing before the records of number %d", k, L.index, idx)
		}
		if err := b.closeOpen(k); err != nil {
			return err
		}
	}
	if k+1 < b.g.height {
		if err := b.open(k+1, idx/fanout); err != nil {
			return err
		}
		if P := &b.levels[k+1]; P.next > int(idx%fanout) {
			return fmt.Errorf("records of index node (level %d, number %d) out of order", k, idx)
		}
	}
	L.open, L.index, L.next, L.written = true, idx, 0, false
	L.h.Reset()
	L.n = node{level: k, index: idx, stored: L.n.stored[:0], runs: L.n.runs[:0], children: L.n.children[:0]}
	return nil
}

// closeOpen closes the open node of level k: hashes it, emits it, and
// records it in its parent (or as the root).
func (b *treeBuilder) closeOpen(k int) error {
	L := &b.levels[k]
	if k > 0 && b.levels[k-1].open {
		return fmt.Errorf("index node (level %d, number %d) before its child (level %d, number %d)", k, L.index, k-1, b.levels[k-1].index)
	}
	var sum [32]byte
	if L.written {
		slots := b.g.slots(k, L.index)
		for i := L.next; i < slots; i++ {
			z := b.g.childZero(k, L.index, i)
			L.h.Write(z[:])
		}
		L.h.Sum(sum[:0])
	} else {
		sum = b.g.zeroHash(k, L.index)
	}
	L.open = false
	var loc nodeLoc
	if b.emit != nil {
		var err error
		if loc, err = b.emit(&L.n, L.n.marshal()); err != nil {
			return err
		}
	}
	if k+1 == b.g.height {
		b.root, b.rootSum, b.done = loc, sum, true
		return nil
	}
	P := &b.levels[k+1]
	s := int(L.index % fanout)
	P.n.children = append(P.n.children, child{slot: uint16(s), length: uint32(loc.length), off: loc.off, hash: sum})
	b.put(k+1, s, sum, sum == b.g.zeroHash(k, L.index))
	return nil
}

// addStored adds stored chunk c.
func (b *treeBuilder) addStored(c int64, e leafStored) error {
	if err := b.open(0, c/fanout); err != nil {
		return err
	}
	L := &b.levels[0]
	s := int(c % fanout)
	if s < L.next {
		return fmt.Errorf("chunk %d out of order", c)
	}
	e.slot = uint16(s)
	L.n.stored = append(L.n.stored, e)
	b.put(0, s, e.sum, false)
	b.stored++
	b.storedB += FrameHeaderSize + int64(e.slen)
	return nil
}

// addSum adds chunk c's sum only (the Digester: no entries kept).
func (b *treeBuilder) addSum(c int64, sum [32]byte) error {
	if err := b.open(0, c/fanout); err != nil {
		return err
	}
	L := &b.levels[0]
	s := int(c % fanout)
	if s < L.next {
		return fmt.Errorf("imagefmt: digest: chunk %d out of order", c)
	}
	b.put(0, s, sum, sum == b.g.zeroSum(c))
	return nil
}

// addRun adds a run of chunks in one state (zero, or unused in a delta),
// split across the leaves it spans.
func (b *treeBuilder) addRun(start, count int64, state uint8) error {
	for count > 0 {
		if err := b.open(0, start/fanout); err != nil {
			return err
		}
		L := &b.levels[0]
		s := int(start % fanout)
		if s < L.next {
			return fmt.Errorf("run at chunk %d out of order", start)
		}
		n := min(count, int64(b.g.slots(0, L.index)-s))
		if m := len(L.n.runs); m > 0 && L.n.runs[m-1].state == state && int(L.n.runs[m-1].slot+L.n.runs[m-1].count) == s {
			L.n.runs[m-1].count += uint16(n)
		} else {
			L.n.runs = append(L.n.runs, leafRun{slot: uint16(s), count: uint16(n), state: state})
		}
		for i := range n {
			b.put(0, s+int(i), b.g.zeroSum(start+i), true)
		}
		if state == diskZero {
			b.zero += n
		}
		start += n
		count -= n
	}
	return nil
}

// closeNode closes node idx of level k because its record arrived (the
// stream reader, strict): it must be the open node of its level, with no
// open child. The root of an empty commit was never opened.
func (b *treeBuilder) closeNode(k int, idx int64) error {
	L := &b.levels[k]
	if !L.open && !b.done && k == b.g.height-1 && idx == 0 {
		L.open, L.index, L.next, L.written = true, 0, 0, false
		L.h.Reset()
		L.n = node{level: k}
	}
	if !L.open || L.index != idx {
		return fmt.Errorf("index node (level %d, number %d) where the records do not end one", k, idx)
	}
	return b.closeOpen(k)
}

// finish closes every open node up to the root (writing an empty root
// when nothing was added) and returns the root's location and hash.
func (b *treeBuilder) finish() (nodeLoc, [32]byte, error) {
	if !b.done {
		for k := 0; k < b.g.height; k++ {
			if !b.levels[k].open && k == b.g.height-1 {
				// Nothing reached the root: an empty image.
				b.levels[k] = buildLevel{open: true, h: b.levels[k].h, n: node{level: k}}
				b.levels[k].h.Reset()
			}
			if b.levels[k].open {
				if err := b.closeOpen(k); err != nil {
					return nodeLoc{}, [32]byte{}, err
				}
			}
		}
	}
	return b.root, b.rootSum, nil
}
