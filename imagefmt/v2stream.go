package imagefmt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// streamV2 is a StreamReader's version 2 state. Commit 1 is checked
// record by record: the reader rebuilds each index node from the frames
// and run records before it and requires the node in the stream to be
// byte for byte the same, then the commit record's root and digest. Later
// commits (an image committed to in place) replace chunks: their records
// are passed on as they come, and at the end the digest of the disk they
// leave is compared with the newest commit's.
type streamV2 struct {
	r       io.Reader
	off     int64 // file offset of the next byte of r
	g       *geometry
	tree    *treeBuilder // commit 1
	end     int64        // logical end from the newest slot; 0: the footer ends commit 1
	newest  commitSlot
	commit  *commitRecord // the last commit record read
	recOff  int64         // its offset
	next    int64         // lowest chunk the next record of this commit may cover
	multi   bool
	sums1   []chunkSum1 // commit 1's stored chunks (multi only)
	changes map[int64]*[32]byte
	meta    []byte
	// pending is the node record just read, for expectNode.
	pending    []byte
	pendingOff int64
	// root is the last root-level node read and where (commits after the
	// first: their commit record must name it, and it must hash to the
	// commit's digest, as the random-access reader checks at open).
	root    *node
	rootOff int64
}

type chunkSum1 struct {
	chunk uint32
	sum   [32]byte
}

// newStreamV2 reads the rest of the header region (b holds its first 16
// bytes) and the metadata record that starts the data area.
func newStreamV2(r io.Reader, fixed []byte) (*StreamReader, error) {
	b := make([]byte, dataStart)
	copy(b, fixed)
	if _, err := io.ReadFull(r, b[len(fixed):]); err != nil {
		return nil, streamEnded(err, int64(dataStart), "header region")
	}
	hdr, err := unmarshalHeaderV2(b)
	if err != nil {
		return nil, err
	}
	if hdr.Base != nil {
		return nil, fmt.Errorf("%w: the image is a delta over image %s commit %d (last seen at %q): a delta cannot be read from a stream, its base is needed; restore it from its file",
			ErrBase, formatUUID(hdr.Base.UUID), hdr.Base.Commit, hdr.Base.PathHint)
	}
	v := &streamV2{r: r, off: dataStart, g: newGeometry(hdr)}
	// The slots as the random-access reader takes them (findNewest): a
	// damaged slot is ignored when the other names a commit, and two
	// damaged slots are an error even if the stream ends with a footer.
	var errs []error
	for _, off := range []int64{slotAOff, slotBOff} {
		s, ok, err := parseSlot(b[off:off+slotSize], off, commitSlotMagic, hdr.UUID, 1<<62)
		if err != nil {
			errs = append(errs, err)
		}
		if ok && s.commit > v.newest.commit {
			v.newest = s
		}
	}
	if v.newest.commit == 0 && len(errs) == 2 {
		return nil, errors.Join(errs...)
	}
	v.end = v.newest.end
	v.multi = v.newest.commit > 1
	if v.multi {
		v.changes = map[int64]*[32]byte{}
	}
	s := &StreamReader{hdr: hdr, buf: make([]byte, FrameBufSize(hdr.ChunkSize)), v2: v}
	v.tree = newTreeBuilder(v.g, s.expectNode, true)
	// The metadata record of commit 1.
	if _, err := io.ReadFull(r, s.buf[:8]); err != nil {
		return nil, streamEnded(err, s.v2.off, "metadata record")
	}
	n, err := metaLen(s.buf[:8], s.v2.off)
	if err != nil {
		return nil, err
	}
	mb := make([]byte, n)
	copy(mb, s.buf[:8])
	if _, err := io.ReadFull(r, mb[8:]); err != nil {
		return nil, streamEnded(err, s.v2.off+int64(n), "metadata record")
	}
	if hdr.Metadata, err = parseMeta(mb, s.v2.off); err != nil {
		return nil, err
	}
	s.v2.off += int64(n)
	return s, nil
}

func streamEnded(err error, off int64, what string) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return ended(off, what)
	}
	return fmt.Errorf("imagefmt: read %s: %w", what, err)
}

// Commits is how many commits the stream holds, as its header region
// says (1 for an image written as a stream). With more than one, Next
// yields the chunks of each commit in turn: a chunk may come again, and
// chunks come out of order; the last frame or run for a chunk is its
// content in the newest commit.
func (s *StreamReader) Commits() int64 {
	if s.v2 == nil || s.v2.newest.commit == 0 {
		return 1
	}
	return s.v2.newest.commit
}

// expectNode is the tree builder's emit for the stream: the node it
// rebuilt must be the record just read.
func (s *StreamReader) expectNode(n *node, b []byte) (nodeLoc, error) {
	v := s.v2
	if v.pending == nil || !slicesEqual(v.pending, b) {
		return nodeLoc{}, broken(RuleRecords, v.pendingOff, "index node (level %d, number %d) is not the one its records make", n.level, n.index)
	}
	v.pending = nil
	return nodeLoc{off: v.pendingOff, length: len(b)}, nil
}

func slicesEqual(a, b []byte) bool { return slices.Equal(a, b) }

// nextV2 reads the next record of a version 2 stream.
func (s *StreamReader) nextV2() (Frame, error) {
	v := s.v2
	for {
		if v.end > 0 && s.v2.off >= v.end {
			return Frame{}, broken(RuleRecords, s.v2.off, "records run past the end of the newest commit")
		}
		hb := s.buf[:FrameHeaderSize]
		if _, err := io.ReadFull(s.v2.r, hb[:8]); err != nil {
			return Frame{}, streamEnded(err, s.v2.off, "data area")
		}
		switch [4]byte(hb[0:4]) {
		case frameMagic:
			return s.frameV2()
		case zeroMagic:
			return s.runV2()
		case nodeMagic:
			if err := s.nodeV2(); err != nil {
				return Frame{}, err
			}
		case metaMagic:
			if err := s.metaV2(); err != nil {
				return Frame{}, err
			}
		case commitMagic:
			done, err := s.commitV2()
			if err != nil || done {
				if err == nil {
					err = io.EOF
				}
				return Frame{}, err
			}
		default:
			return Frame{}, broken(RuleRecords, s.v2.off, "no record here (magic %q)", hb[0:4])
		}
	}
}

// readRest reads the rest of a record of n bytes whose first have bytes
// are in s.buf, into a buffer of its own when it does not fit.
func (s *StreamReader) readRest(n, have int, what string) ([]byte, error) {
	var b []byte
	if n <= len(s.buf) {
		b = s.buf[:n]
	} else {
		b = make([]byte, n)
		copy(b, s.buf[:have])
	}
	if v := s.v2; v.end > 0 && s.v2.off+int64(n) > v.end {
		return nil, broken(RuleRecords, s.v2.off, "a %s of %d bytes runs past the end of the newest commit (%d)", what, n, v.end)
	}
	if _, err := io.ReadFull(s.v2.r, b[have:]); err != nil {
		return nil, streamEnded(err, s.v2.off+int64(n), what)
	}
	return b, nil
}

func (s *StreamReader) frameV2() (Frame, error) {
	v := s.v2
	hb := s.buf[:FrameHeaderSize]
	if _, err := io.ReadFull(s.v2.r, hb[8:]); err != nil {
		return Frame{}, streamEnded(err, s.v2.off+FrameHeaderSize, "frame header")
	}
	f, slen, err := parseFrameHeader(hb, s.v2.off, s.hdr.ChunkSize)
	if err == nil {
		err = checkFrameChunk(&f, s.hdr)
	}
	if err != nil {
		return Frame{}, err
	}
	zstdOK := s.hdr.Incompat&IncompatZstd != 0 || v.commit != nil && v.commit.incompat&IncompatZstd != 0 || v.multi
	switch {
	case f.Chunk < v.next || f.Chunk >= v.g.chunks || f.LogicalLen != s.hdr.ChunkLen(f.Chunk):
		return Frame{}, broken(RuleRecords, s.v2.off, "frame of chunk %d (%d bytes) out of order or range", f.Chunk, f.LogicalLen)
	case f.Method == MethodZstd && !zstdOK:
		return Frame{}, broken(RuleFrameEntry, s.v2.off+4, "zstd frame in an image without the zstd feature")
	}
	raw, err := s.readRest(FrameHeaderSize+slen, FrameHeaderSize, "frame")
	if err != nil {
		return Frame{}, err
	}
	f.Raw, f.Payload = raw, raw[FrameHeaderSize:]
	e := leafStored{method: f.Method, slen: uint32(slen), off: s.v2.off, sum: f.Sum}
	if v.commit == nil {
		if err := v.tree.addStored(f.Chunk, e); err != nil {
			return Frame{}, broken(RuleRecords, s.v2.off, "%v", err)
		}
		if v.multi {
			v.sums1 = append(v.sums1, chunkSum1{uint32(f.Chunk), f.Sum})
		}
	} else {
		sum := f.Sum
		v.changes[f.Chunk] = &sum
	}
	v.next = f.Chunk + 1
	s.v2.off += int64(len(raw))
	return f, nil
}

func (s *StreamReader) runV2() (Frame, error) {
	v := s.v2
	hb := s.buf[:runRecordSize]
	if _, err := io.ReadFull(s.v2.r, hb[8:]); err != nil {
		return Frame{}, streamEnded(err, s.v2.off+runRecordSize, "run record")
	}
	if v.end > 0 && s.v2.off+runRecordSize > v.end {
		return Frame{}, broken(RuleRecords, s.v2.off, "a run record runs past the end of the newest commit")
	}
	rr, err := parseRunRecord(hb, s.v2.off, v.g)
	if err != nil {
		return Frame{}, err
	}
	if rr.start < v.next {
		return Frame{}, broken(RuleRecords, s.v2.off, "run %d+%d out of order", rr.start, rr.count)
	}
	if v.commit == nil {
		if rr.state != diskZero {
			return Frame{}, broken(RuleRunRecord, s.v2.off+5, "an unused run in the first commit of an image that is not a delta")
		}
		if err := v.tree.addRun(rr.start, rr.count, rr.state); err != nil {
			return Frame{}, broken(RuleRecords, s.v2.off, "%v", err)
		}
	} else {
		for c := rr.start; c < rr.start+rr.count; c++ {
			v.changes[c] = nil
		}
	}
	v.next = rr.start + rr.count
	s.v2.off += runRecordSize
	// A run that became unused after an earlier commit wrote the chunks is
	// zeroed too: the newest state reads as zeros there.
	return Frame{Chunk: rr.start, Zeros: rr.count}, nil
}

func (s *StreamReader) nodeV2() error {
	v := s.v2
	hb := s.buf[:24]
	if _, err := io.ReadFull(s.v2.r, hb[8:24]); err != nil {
		return streamEnded(err, s.v2.off+24, "index node")
	}
	n, err := nodeLen(hb, s.v2.off)
	if err != nil {
		return err
	}
	nb := make([]byte, n)
	copy(nb, hb)
	if v.end > 0 && s.v2.off+int64(n) > v.end {
		return broken(RuleRecords, s.v2.off, "an index node runs past the end of the newest commit")
	}
	if _, err := io.ReadFull(s.v2.r, nb[24:]); err != nil {
		return streamEnded(err, s.v2.off+int64(n), "index node")
	}
	k, idx := int(nb[4]), int64(binary.LittleEndian.Uint64(nb[16:]))
	if k >= v.g.height || idx < 0 || idx >= v.g.counts[k] {
		return broken(RuleNode, s.v2.off, "index node (level %d, number %d) outside a tree of %d levels", k, idx, v.g.height)
	}
	// The node's own rules first (as a random-access reader checks them),
	// then, in commit 1, that it is the node its records make.
	rules := nodeRules{g: v.g, zstd: true, isRoot: k == v.g.height-1}
	nd, err := parseNode(nb, s.v2.off, k, idx, rules)
	if err != nil {
		return err
	}
	if rules.isRoot {
		v.root, v.rootOff = nd, s.v2.off
	}
	if v.commit == nil {
		v.pending, v.pendingOff = nb, s.v2.off
		if err := v.tree.closeNode(k, idx); err != nil {
			if _, ok := err.(*RuleError); ok {
				return err
			}
			return broken(RuleRecords, s.v2.off, "%v", err)
		}
	}
	s.v2.off += int64(n)
	return nil
}

func (s *StreamReader) metaV2() error {
	v := s.v2
	n, err := metaLen(s.buf[:8], s.v2.off)
	if err != nil {
		return err
	}
	b, err := s.readRest(n, 8, "metadata record")
	if err != nil {
		return err
	}
	if v.commit == nil {
		return broken(RuleRecords, s.v2.off, "a second metadata record in the first commit")
	}
	if v.meta, err = parseMeta(b, s.v2.off); err != nil {
		return err
	}
	s.v2.off += int64(n)
	return nil
}

// commitV2 checks a commit record; done is true after the newest one.
func (s *StreamReader) commitV2() (done bool, err error) {
	v := s.v2
	n, err := commitLen(s.buf[:8], s.v2.off)
	if err != nil {
		return false, err
	}
	b, err := s.readRest(n, 8, "commit record")
	if err != nil {
		return false, err
	}
	c, err := parseCommit(b, s.v2.off, v.g, s.hdr)
	if err != nil {
		return false, err
	}
	if v.commit == nil {
		t := v.tree
		if !t.done {
			return false, broken(RuleRecords, s.v2.off, "commit record before the root of its index tree")
		}
		switch {
		case c.number != 1 || c.start != dataStart || c.metaOff != dataStart:
			return false, broken(RuleCommit, s.v2.off, "the first commit record is commit %d starting at %d", c.number, c.start)
		case c.rootOff != t.root.off || c.rootLen != t.root.length:
			return false, broken(RuleCommit, s.v2.off+48, "commit 1 names the root at %d, the stream's root is at %d", c.rootOff, t.root.off)
		case c.digest != t.rootSum:
			return false, broken(RuleTreeHash, s.v2.off+64, "commit 1 records digest %x, its chunks hash to %x", c.digest[:8], t.rootSum[:8])
		case c.stored != t.stored || c.storedB != t.storedB || c.zero != t.zero:
			return false, broken(RuleCommit, s.v2.off+136, "commit 1 counts %d stored chunks (%d bytes) and %d zero, the stream holds %d (%d) and %d", c.stored, c.storedB, c.zero, t.stored, t.storedB, t.zero)
		}
	} else {
		p := v.commit
		if c.number != p.number+1 || c.parentOff != v.recOff || c.parentDig != p.digest || c.start != v.recOff+int64(p.size()) {
			return false, broken(RuleCommitChain, s.v2.off, "commit %d does not follow commit %d", c.number, p.number)
		}
		if err := v.checkRoot(c, s.v2.off); err != nil {
			return false, err
		}
	}
	v.commit, v.recOff = c, s.v2.off
	s.v2.off += int64(n)
	v.next = 0
	if v.end == 0 {
		// A stream-written image: the footer ends it.
		fb := make([]byte, slotSize)
		if _, err := io.ReadFull(s.v2.r, fb); err != nil {
			return false, streamEnded(err, s.v2.off+slotSize, "footer")
		}
		ft, ok, err := parseSlot(fb, s.v2.off, footerMagic, s.hdr.UUID, s.v2.off+slotSize)
		if err != nil || !ok {
			return false, noCommit(s.v2.off)
		}
		if ft.commit != 1 || ft.recOff != v.recOff || ft.digest != c.digest || ft.end != s.v2.off {
			return false, broken(RuleNoCommit, s.v2.off, "the footer does not name the commit just before it")
		}
		// The footer must end the file, as the random-access reader
		// requires (it looks for the footer in the last bytes): read to
		// the end and report the same rule at the same offset.
		if n, err := io.Copy(io.Discard, s.v2.r); err != nil {
			return false, fmt.Errorf("imagefmt: read after the footer: %w", err)
		} else if n > 0 {
			return false, broken(RuleNoCommit, s.v2.off+n,
				"%d bytes follow the footer at %d: the footer must end the image (bytes were appended, or the stream is not one image)", n, s.v2.off)
		}
		return true, nil
	}
	if s.v2.off < v.end {
		return false, nil
	}
	if c.number != v.newest.commit || c.digest != v.newest.digest || v.recOff != v.newest.recOff {
		return false, broken(RuleCommitChain, v.recOff, "the last commit record is commit %d, the slot names commit %d", c.number, v.newest.commit)
	}
	if v.multi {
		if d := v.finalDigest(s.hdr); d != c.digest {
			return false, broken(RuleTreeHash, v.recOff+64, "commit %d records digest %x, the chunks of the stream leave a disk whose digest is %x", c.number, c.digest[:8], d[:8])
		}
	}
	if v.meta != nil {
		s.hdr.Metadata = v.meta
	}
	return true, nil
}

// checkRoot checks that commit c (its record at recOff) names the root
// node its commit wrote last and that the root hashes to c's digest. A
// stream is never a delta: absent children hash as zeros.
func (v *streamV2) checkRoot(c *commitRecord, recOff int64) error {
	if v.root == nil || v.rootOff != c.rootOff || v.rootOff < c.start {
		return broken(RuleCommit, recOff+48, "commit %d names its root at %d, which is not the root node it wrote", c.number, c.rootOff)
	}
	var h [32]byte
	if v.root.level == 0 {
		h, _ = leafHash(v.g, v.root, func(s int) ([32]byte, error) { return v.g.zeroSum(int64(s)), nil })
	} else {
		h, _ = internalHash(v.g, v.root, func(s int) ([32]byte, error) { return v.g.childZero(v.root.level, 0, s), nil })
	}
	if h != c.digest {
		return broken(RuleTreeHash, recOff+64, "commit %d records digest %x, its index root (at %d) hashes to %x",
			c.number, c.digest[:8], c.rootOff, h[:8])
	}
	return nil
}

// finalDigest hashes the disk the commits of the stream leave: commit 1's
// chunks with the later commits' changes applied.
func (v *streamV2) finalDigest(hdr *Header) [32]byte {
	d := NewDigester(hdr)
	keys := make([]int64, 0, len(v.changes))
	for c := range v.changes {
		keys = append(keys, c)
	}
	slices.Sort(keys)
	i := 0
	for _, e := range v.sums1 {
		c := int64(e.chunk)
		for ; i < len(keys) && keys[i] < c; i++ {
			if sum := v.changes[keys[i]]; sum != nil {
				d.Add(keys[i], *sum)
			}
		}
		if i < len(keys) && keys[i] == c {
			if sum := v.changes[c]; sum != nil {
				d.Add(c, *sum)
			}
			i++
			continue
		}
		d.Add(c, e.sum)
	}
	for ; i < len(keys); i++ {
		if sum := v.changes[keys[i]]; sum != nil {
			d.Add(keys[i], *sum)
		}
	}
	return d.Sum()
}
