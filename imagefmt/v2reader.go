package imagefmt

import (
	"errors"
	"fmt"
	"io"
	"iter"
	"runtime"
	"time"

	"github.com/dimg-project/dimg/internal/lru"
)

// ErrBase: a delta image's base is missing, or is not the image and
// commit the delta was made over.
var ErrBase = errors.New("imagefmt: wrong or missing base image")

// CommitInfo describes one commit of a version 2 image.
type CommitInfo struct {
	Number        int64 // from 1 (the capture)
	Time          time.Time
	Message       string
	ChunksChanged int64    // chunks this commit stored, zeroed or dropped
	BytesChanged  int64    // their logical bytes
	StoredChunks  int64    // chunks stored in this file's tree at this commit
	StoredBytes   int64    // frame bytes (headers and payloads) of those
	Digest        [32]byte // root hash of the index tree: the disk's digest
	Incompat      uint32   // incompatible features the commit uses
	Offset        int64    // file offset of the commit record
	// Session is what the writer recorded to recognise its commit after a
	// crash (an overlay's ScratchInfo.Session), or zero.
	Session [16]byte
}

func (c *commitRecord) info(off int64) CommitInfo {
	return CommitInfo{Number: c.number, Time: c.time, Message: c.message, ChunksChanged: c.changed, BytesChanged: c.changedB,
		StoredChunks: c.stored, StoredBytes: c.storedB, Digest: c.digest, Incompat: c.incompat, Offset: off, Session: c.session}
}

// treeIndex is a version 2 Reader's index: one commit's tree, read on
// demand through a bounded cache of nodes.
type treeIndex struct {
	g         *geometry
	rules     nodeRules
	commit    *commitRecord
	commitOff int64
	newest    commitSlot // the file's newest commit (Log starts there)
	root      *node
	nodes     *lru.Cache[int64, *node] // by file offset
	base      *Reader                  // delta images: the image under this one
}

// nodeCacheEntries bounds the node cache: at most 12 KiB a node, 12 MiB.
const nodeCacheEntries = 1024

// isV2 reports whether the first bytes of a file announce version 2.
func isV2(b []byte) bool {
	return len(b) >= 12 && [8]byte(b[0:8]) == headerMagic && b[8] == Version2 && b[9] == 0 && b[10] == 0 && b[11] == 0
}

// newReaderV2 opens a version 2 image: the header region (buf holds the
// file's first bytes, at least the header region when the file has it),
// the commit record a slot (or the footer) names, its metadata record and
// its root node. A constant number of small reads, whatever the size of
// the disk or the length of a torn tail.
func newReaderV2(ra io.ReaderAt, size int64, buf []byte, opt ReaderOptions) (*Reader, error) {
	if size < dataStart || len(buf) < dataStart {
		return nil, ended(size, "header region")
	}
	hdr, err := unmarshalHeaderV2(buf)
	if err != nil {
		return nil, err
	}
	g := newGeometry(hdr)
	newest, err := findNewest(ra, size, buf, hdr)
	if err != nil {
		return nil, err
	}
	read := func(off int64, n int) ([]byte, error) {
		if off+int64(n) <= int64(len(buf)) {
			return buf[off : off+int64(n)], nil
		}
		b := make([]byte, n)
		if _, err := ra.ReadAt(b, off); err != nil {
			if err == io.EOF {
				return nil, ended(size, "data area")
			}
			return nil, fmt.Errorf("imagefmt: read at file offset %d: %w", off, err)
		}
		return b, nil
	}
	if opt.Commit < 0 || opt.Commit > newest.commit {
		return nil, fmt.Errorf("imagefmt: no commit %d: the image has commits 1 to %d", opt.Commit, newest.commit)
	}
	// The newest commit; an older one by its parents.
	off, n := newest.recOff, newest.recLen
	var c *commitRecord
	for {
		b, err := read(off, n)
		if err != nil {
			return nil, err
		}
		child := c
		if c, err = parseCommit(b, off, g, hdr); err != nil {
			return nil, err
		}
		switch {
		case child == nil && (c.number != newest.commit || c.digest != newest.digest):
			return nil, broken(RuleCommitChain, off, "commit record %d (digest %x) is not the commit %d (digest %x) its slot names", c.number, c.digest[:8], newest.commit, newest.digest[:8])
		case child != nil && (c.number != child.number-1 || c.digest != child.parentDig):
			return nil, broken(RuleCommitChain, off, "commit %d's parent record is commit %d with another digest", child.number, c.number)
		}
		if opt.Commit == 0 || c.number == opt.Commit {
			break
		}
		off, n = c.parentOff, c.parentLen
	}
	if hdr.Incompat&IncompatDelta == 0 && opt.Base != nil {
		return nil, fmt.Errorf("imagefmt: a base was given but the image is not a delta")
	}
	if hdr.Incompat&IncompatDelta != 0 && opt.Base == nil {
		return nil, fmt.Errorf("%w: the image is a delta over image %s commit %d (last seen at %q): open its base first",
			ErrBase, formatUUID(hdr.Base.UUID), hdr.Base.Commit, hdr.Base.PathHint)
	}
	mb, err := read(c.metaOff, c.metaLen)
	if err != nil {
		return nil, err
	}
	if hdr.Metadata, err = parseMeta(mb, c.metaOff); err != nil {
		return nil, err
	}
	t := &treeIndex{g: g, commit: c, commitOff: off, newest: newest, nodes: lru.New[int64, *node](nodeCacheEntries)}
	t.rules = nodeRules{g: g, delta: hdr.Incompat&IncompatDelta != 0, zstd: c.incompat&IncompatZstd != 0}
	rb, err := read(c.rootOff, c.rootLen)
	if err != nil {
		return nil, err
	}
	rr := t.rules
	rr.isRoot = true
	if t.root, err = parseNode(rb, c.rootOff, g.height-1, 0, rr); err != nil {
		return nil, err
	}
	if opt.Base != nil && hdr.Base != nil {
		if err := checkBase(hdr, opt.Base); err != nil {
			return nil, err
		}
		t.base = opt.Base
	}
	cb := opt.CacheBytes
	if cb <= 0 {
		cb = 32 << 20
	}
	r := &Reader{ra: ra, size: size, hdr: hdr, t: t, cache: lru.New[int64, []byte](max(int(cb/int64(hdr.ChunkSize)), 4)), log: opt.Logger, frames: opt.Frames}
	r.prefetch = make(chan struct{}, runtime.GOMAXPROCS(0))
	r.bufs.New = func() any { b := make([]byte, FrameBufSize(hdr.ChunkSize)); return &b }
	if err := r.checkRootHash(); err != nil {
		return nil, err
	}
	return r, nil
}

// checkRootHash checks that the root node hashes to the commit's digest.
// The root is in memory and its absent children hash from the geometry
// (or the base's root), so this costs no read; without it a root whose
// child hashes were damaged, CRC and all, opened and restored with exit 0,
// and a commit on top would carry the wrong hashes into a digest its
// disk can never match.
func (r *Reader) checkRootHash() error {
	t := r.t
	var h [32]byte
	var err error
	if t.root.level == 0 {
		h, err = r.hashLeaf(t.root)
	} else {
		h, err = internalHash(t.g, t.root, func(s int) ([32]byte, error) { return r.absentChild(t.root.level, t.root.index, s) })
	}
	if err != nil {
		return err
	}
	if h != t.commit.digest {
		return broken(RuleTreeHash, t.commitOff+64, "commit %d records digest %x, its index root (at %d) hashes to %x",
			t.commit.number, t.commit.digest[:8], t.commit.rootOff, h[:8])
	}
	return nil
}

// findNewest picks the newest valid slot, or the footer when no slot was
// ever written (an image written as a stream). A slot torn by a crash
// fails its CRC and the other slot, which a commit never writes at the
// same time, still names a complete commit. But an intact slot naming a
// newer commit that lies past the end of the file means the file was
// truncated: that is an error, not a reason to show an older commit as if
// it were the newest.
func findNewest(ra io.ReaderAt, size int64, buf []byte, hdr *Header) (commitSlot, error) {
	var best, cut commitSlot
	var found bool
	var errs []error
	var cutErr error
	for _, off := range []int64{slotAOff, slotBOff} {
		s, ok, err := parseSlot(buf[off:off+slotSize], off, commitSlotMagic, hdr.UUID, size)
		if err != nil {
			errs = append(errs, err)
			if ruleOf(err) == RuleEnd && s.commit > cut.commit {
				cut, cutErr = s, err
			}
		}
		if ok && (!found || s.commit > best.commit) {
			best, found = s, true
		}
	}
	if cutErr != nil && (!found || cut.commit > best.commit) {
		return best, cutErr
	}
	if found {
		return best, nil
	}
	if len(errs) == 2 {
		return best, errors.Join(errs...)
	}
	if size < dataStart+slotSize {
		return best, ended(size, "data area: no footer")
	}
	fb := make([]byte, slotSize)
	if _, err := ra.ReadAt(fb, size-slotSize); err != nil {
		return best, fmt.Errorf("imagefmt: read footer: %w", err)
	}
	s, ok, err := parseSlot(fb, size-slotSize, footerMagic, hdr.UUID, size)
	if err != nil || !ok {
		return best, noCommit(size - slotSize)
	}
	if s.end != size-slotSize {
		return best, broken(RuleNoCommit, size-slotSize, "the footer does not name the commit just before it")
	}
	return s, nil
}

// noCommit: neither a slot nor a footer at off names a commit.
func noCommit(off int64) error {
	return broken(RuleNoCommit, off, "no commit slot is set and no valid footer is here: the image is incomplete (an interrupted capture or copy), truncated, or damaged")
}

// checkBase checks that base is the image and commit delta hdr was made
// over, with the same geometry.
func checkBase(hdr *Header, base *Reader) error {
	ref, bh := hdr.Base, base.hdr
	name := base.name
	if name == "" {
		name = "the base image"
	}
	switch {
	case bh.UUID != ref.UUID:
		return fmt.Errorf("%w: %s is image %s; the delta was made over image %s (last seen at %q)", ErrBase, name, bh.UUIDString(), formatUUID(ref.UUID), ref.PathHint)
	case base.Digest() != ref.Digest:
		return fmt.Errorf("%w: %s (image %s) is at commit %d with digest %x; the delta was made over its commit %d with digest %x (open the base at that commit)",
			ErrBase, name, bh.UUIDString(), base.Commit().Number, base.Digest(), ref.Commit, ref.Digest)
	case bh.ChunkSize != hdr.ChunkSize || bh.DiskSize != hdr.DiskSize || bh.SectorSize != hdr.SectorSize:
		return fmt.Errorf("%w: %s has another geometry than the delta", ErrBase, name)
	case base.t == nil:
		return fmt.Errorf("%w: %s is a version 1 image; a delta needs a version 2 base", ErrBase, name)
	}
	return nil
}

// node returns node idx of level k stored at loc, through the cache.
func (t *treeIndex) node(ra io.ReaderAt, off int64, length int, k int, idx int64) (*node, error) {
	n, err := t.nodes.Get(off, func() (*node, error) {
		b := make([]byte, length)
		if _, err := ra.ReadAt(b, off); err != nil {
			if err == io.EOF {
				return nil, ended(off+int64(length), "index node")
			}
			return nil, fmt.Errorf("imagefmt: read index node at file offset %d: %w", off, err)
		}
		return parseNode(b, off, k, idx, t.rules)
	})
	if err != nil {
		return nil, err
	}
	if n.level != k || n.index != idx || n.size() != length {
		return nil, broken(RuleNode, off, "index node at this offset is (level %d, number %d), its parent expects (level %d, number %d)", n.level, n.index, k, idx)
	}
	return n, nil
}

// path returns the node of level k on the path to chunk c, or nil when
// the subtree holding c is absent at or above level k.
func (r *Reader) pathNode(c int64, k int) (*node, error) {
	t := r.t
	n := t.root
	for lv := t.g.height - 1; lv > k; lv-- {
		s := int(c>>(fanoutBits*lv)) % fanout
		ch := n.childFind(s)
		if ch == nil {
			return nil, nil
		}
		var err error
		if n, err = t.node(r.ra, ch.off, int(ch.length), lv-1, c>>(fanoutBits*lv)); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// locate finds chunk c in this file's tree: its on-disk state (0: absent)
// and, when stored, its leaf entry.
func (r *Reader) locate(c int64) (uint8, leafStored, error) {
	leaf, err := r.pathNode(c, 0)
	if err != nil || leaf == nil {
		return 0, leafStored{}, err
	}
	st, e := leaf.leafFind(int(c % fanout))
	if e != nil {
		return st, *e, nil
	}
	return st, leafStored{}, nil
}

// chunkStateV2 is ChunkState for version 2, composing a delta's base.
func (r *Reader) chunkStateV2(c int64) (ChunkState, error) {
	st, _, err := r.locate(c)
	if err != nil {
		return ChunkStored, err
	}
	switch st {
	case diskStored:
		return ChunkStored, nil
	case diskZero:
		return ChunkZero, nil
	case 0:
		if r.t.base != nil {
			return r.t.base.chunkState(c)
		}
	}
	return ChunkUnused, nil
}

// readFrameV2 reads chunk c's frame from this file, or from the base when
// a delta inherits it, and checks it is the frame its leaf entry names.
func (r *Reader) readFrameV2(c int64, buf []byte, nocache bool) (Frame, bool, error) {
	st, e, err := r.locate(c)
	if err != nil {
		return Frame{}, true, r.chunkErr(c, err)
	}
	if st == 0 && r.t.base != nil {
		b := r.t.base
		f, ok, err := b.readFrame(c, buf, nocache)
		if f.File == "" {
			f.File = b.Path()
		}
		return f, ok, inFile(b.Path(), err)
	}
	if st != diskStored {
		return Frame{}, false, nil
	}
	f, err := r.frameAt(c, e, buf, nocache)
	if err != nil {
		return Frame{}, true, r.chunkErr(c, err)
	}
	return f, true, nil
}

// frameAt reads the frame leaf entry e names for chunk c (into buf, grown
// as needed) and checks it: the frame rules, then that it is the frame the
// entry names (chunk, method, length, SHA-256).
func (r *Reader) frameAt(c int64, e leafStored, buf []byte, nocache bool) (Frame, error) {
	n := FrameHeaderSize + int(e.slen)
	return r.readFrameBytes(c, e.off, n, e.sum, buf, nocache, func(b []byte) (Frame, error) {
		f, slen, err := parseFrameHeader(b, e.off, r.hdr.ChunkSize)
		if err == nil {
			err = checkFrameChunk(&f, r.hdr)
		}
		if err == nil && (f.Chunk != c || f.Method != e.method || slen != int(e.slen) || f.Sum != e.sum) {
			err = broken(RuleFrameEntry, e.off, "the frame here (chunk %d, method %d, %d bytes) is not the one the index names for chunk %d", f.Chunk, f.Method, slen, c)
		}
		if err != nil {
			return Frame{}, err
		}
		f.Raw, f.Payload = b, b[FrameHeaderSize:]
		return f, nil
	})
}

// span is a run of chunks in one state, as the composed index yields
// them: a stored chunk (count 1, its entry and the reader whose file
// holds it) or a run of zero chunks. Unused chunks are not yielded.
type span struct {
	start, count int64
	state        uint8 // diskStored or diskZero
	e            leafStored
	src          *Reader
}

// ownSpans walks this file's tree in chunk order: stored entries, zero
// runs and (in a delta) unused runs, which override the base.
func (r *Reader) ownSpans() iter.Seq2[span, error] {
	return func(yield func(span, error) bool) {
		var walk func(n *node) bool
		walk = func(n *node) bool {
			if n.level == 0 {
				si, ri := 0, 0
				base := n.index * fanout
				for si < len(n.stored) || ri < len(n.runs) {
					if ri >= len(n.runs) || si < len(n.stored) && n.stored[si].slot < n.runs[ri].slot {
						e := n.stored[si]
						if !yield(span{start: base + int64(e.slot), count: 1, state: diskStored, e: e, src: r}, nil) {
							return false
						}
						si++
						continue
					}
					rn := n.runs[ri]
					if !yield(span{start: base + int64(rn.slot), count: int64(rn.count), state: rn.state, src: r}, nil) {
						return false
					}
					ri++
				}
				return true
			}
			for _, ch := range n.children {
				cn, err := r.t.node(r.ra, ch.off, int(ch.length), n.level-1, n.index*fanout+int64(ch.slot))
				if err != nil {
					yield(span{}, err)
					return false
				}
				if !walk(cn) {
					return false
				}
			}
			return true
		}
		walk(r.t.root)
	}
}

// spans yields the composed disk in chunk order: stored chunks and zero
// runs (unused chunks are gaps). A delta's own spans replace the base's
// over the chunks they cover.
func (r *Reader) spans() iter.Seq2[span, error] {
	if r.t == nil {
		return r.spansV1()
	}
	if r.t.base == nil {
		return func(yield func(span, error) bool) {
			for s, err := range r.ownSpans() {
				if err == nil && s.state == diskUnused {
					continue
				}
				if !yield(s, err) {
					return
				}
			}
		}
	}
	return func(yield func(span, error) bool) {
		nextBase, stop := iter.Pull2(r.t.base.spans())
		defer stop()
		var b span
		var bok bool
		var berr error
		pull := func() { b, berr, bok = nextBase() }
		pull()
		// emitBase yields base spans (clipped) that end before chunk end.
		emitBase := func(end int64) bool {
			for bok {
				if berr != nil {
					yield(span{}, berr)
					return false
				}
				if b.start >= end {
					return true
				}
				cut := b
				if cut.start+cut.count > end {
					cut.count = end - cut.start
				}
				if !yield(cut, nil) {
					return false
				}
				if b.start+b.count > end {
					b.count -= end - b.start
					b.start = end
					return true
				}
				pull()
			}
			return true
		}
		// skipBase drops base spans over [start, end).
		skipBase := func(end int64) {
			for bok && berr == nil && b.start < end {
				if b.start+b.count > end {
					b.count -= end - b.start
					b.start = end
					return
				}
				pull()
			}
		}
		for s, err := range r.ownSpans() {
			if err != nil {
				yield(span{}, err)
				return
			}
			if !emitBase(s.start) {
				return
			}
			skipBase(s.start + s.count)
			if s.state != diskUnused && !yield(s, nil) {
				return
			}
		}
		emitBase(r.hdr.NumChunks())
	}
}

// spansV1 yields a version 1 image's stored chunks and zero runs.
func (r *Reader) spansV1() iter.Seq2[span, error] {
	return func(yield func(span, error) bool) {
		ri := 0
		for _, e := range r.entries {
			for ri < len(r.runs) && r.runs[ri].Start < int64(e.chunk) {
				if !yield(span{start: r.runs[ri].Start, count: r.runs[ri].Count, state: diskZero, src: r}, nil) {
					return
				}
				ri++
			}
			if !yield(span{start: int64(e.chunk), count: 1, state: diskStored, e: leafStored{off: e.off, slen: e.slen}, src: r}, nil) {
				return
			}
		}
		for ; ri < len(r.runs); ri++ {
			if !yield(span{start: r.runs[ri].Start, count: r.runs[ri].Count, state: diskZero, src: r}, nil) {
				return
			}
		}
	}
}

// walkErr records the first error met while walking the index for
// Entries or ZeroRuns, which cannot return one; Err reports it.
func (r *Reader) walkErr(err error) {
	r.errMu.Lock()
	if r.indexErr == nil {
		r.indexErr = err
	}
	r.errMu.Unlock()
	if r.log != nil {
		r.log.Error("image index unreadable", "err", err)
	}
}

// Err returns the first error met while walking the index for Entries,
// ZeroRuns or StoredChunks (version 2 reads its index on demand, so a
// damaged node shows up there). A caller that walked them checks it.
func (r *Reader) Err() error {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return r.indexErr
}

func (r *Reader) entriesV2(yield func(Entry) bool) {
	for s, err := range r.spans() {
		if err != nil {
			r.walkErr(err)
			return
		}
		if s.state == diskStored && !yield(Entry{Chunk: s.start, Offset: s.e.off, StoredLen: int(s.e.slen)}) {
			return
		}
	}
}

func (r *Reader) zeroRunsV2() []ZeroRun {
	var runs []ZeroRun
	for s, err := range r.spans() {
		if err != nil {
			r.walkErr(err)
			return runs
		}
		if s.state != diskZero {
			continue
		}
		if n := len(runs); n > 0 && runs[n-1].Start+runs[n-1].Count == s.start {
			runs[n-1].Count += s.count
		} else {
			runs = append(runs, ZeroRun{Start: s.start, Count: s.count})
		}
	}
	return runs
}

func (r *Reader) storedChunksV2() int {
	if r.t.base == nil {
		return int(r.t.commit.stored)
	}
	n := 0
	for s, err := range r.spans() {
		if err != nil {
			r.walkErr(err)
			break
		}
		if s.state == diskStored {
			n++
		}
	}
	return n
}

// Commit describes the commit this Reader shows (a version 1 image has
// one, commit 1, without a time or message).
func (r *Reader) Commit() CommitInfo {
	if r.t == nil {
		return CommitInfo{Number: 1, Time: r.hdr.Created, StoredChunks: int64(len(r.entries)), StoredBytes: r.ft.storedData, Digest: r.ft.digest}
	}
	return r.t.commit.info(r.t.commitOff)
}

// Commits is the number of the image's newest commit.
func (r *Reader) Commits() int64 {
	if r.t == nil {
		return 1
	}
	return r.t.newest.commit
}

// Log lists the image's commits, newest first, from the file's newest
// commit (whichever one this Reader shows). It reads one small record per
// commit.
func (r *Reader) Log() ([]CommitInfo, error) {
	if r.t == nil {
		return []CommitInfo{r.Commit()}, nil
	}
	var out []CommitInfo
	off, n := r.t.newest.recOff, r.t.newest.recLen
	var child *commitRecord
	for n > 0 {
		b := make([]byte, n)
		if _, err := r.ra.ReadAt(b, off); err != nil {
			return out, fmt.Errorf("imagefmt: read commit record at file offset %d: %w", off, err)
		}
		c, err := parseCommit(b, off, r.t.g, r.hdr)
		if err != nil {
			return out, err
		}
		if child != nil && (c.number != child.number-1 || c.digest != child.parentDig) {
			return out, broken(RuleCommitChain, off, "commit %d's parent record is commit %d with another digest", child.number, c.number)
		}
		out = append(out, c.info(off))
		child = c
		off, n = c.parentOff, c.parentLen
	}
	return out, nil
}

// Features is the incompatible features the opened commit uses
// (IncompatDelta, IncompatZstd); 0 for version 1.
func (r *Reader) Features() uint32 {
	if r.t == nil {
		return 0
	}
	return r.t.commit.incompat
}

// BaseRef names the base of a delta image (nil otherwise).
func (r *Reader) BaseRef() *BaseRef { return r.hdr.Base }

// Base is the opened base of a delta image (nil otherwise).
func (r *Reader) Base() *Reader {
	if r.t == nil {
		return nil
	}
	return r.t.base
}
