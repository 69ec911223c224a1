package imagefmt

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// ChunkChange is one chunk's new content in a commit.
type ChunkChange struct {
	Chunk int64
	// State is ChunkStored (Data holds the chunk's bytes), ChunkZero (in
	// use and all zero) or ChunkUnused (free: reads as zeros, a restore
	// may leave it alone).
	State ChunkState
	// Data is the chunk's Header.ChunkLen(Chunk) logical bytes, for
	// ChunkStored; it is read during the yield only. All-zero data is
	// recorded as ChunkZero.
	Data []byte
}

// CommitOptions describe a commit; the zero value is an unnamed commit
// made now that keeps the metadata.
type CommitOptions struct {
	Message string
	Time    time.Time // zero: now
	// Metadata replaces the disk description (JSON, see DiskInfo); nil
	// keeps the previous commit's.
	Metadata []byte
	// Session is stored with the commit so that a writer that crashed
	// after committing can tell (an overlay's ScratchInfo.Session).
	Session [16]byte
}

// EditorOptions configure OpenEditor and CreateDelta.
type EditorOptions struct {
	// Base is the opened base of a delta image (CreateDelta: the image
	// the delta is made over).
	Base *Reader
	// Compression is how new commits compress chunks; the zero value is
	// zstd when the image was written with zstd, else lz4.
	Compression Compression
	// Reader configures the Reader of the newest commit.
	Reader ReaderOptions
	// ToolVersion is written in the header of a new delta image.
	ToolVersion string
	// UUID is a new delta image's UUID; zero makes a random one. A
	// rewrite of a delta (compact) keeps the delta's, so deltas over it
	// still find it.
	UUID [16]byte
}

// editFile is what an Editor needs of its file; tests inject one that
// simulates a crash (lost or torn writes after the last Sync).
type editFile interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Truncate(size int64) error
}

// Editor appends commits to a version 2 image file in place. Only one
// Editor may have a file open (OpenEditor takes an exclusive lock);
// Readers of the file keep working and see the commit they opened.
//
// A commit writes its frames, run records, changed index nodes and
// commit record after the newest commit (over whatever torn tail a crash
// left there), syncs, then writes the slot that does not hold the newest
// commit and syncs again (FORMAT.md, "Committing"). A crash at any point
// leaves a file that opens at the previous commit or at the new one.
type Editor struct {
	f      editFile
	osf    *os.File // nil when injected
	size   int64    // file size as this Editor knows it
	r      *Reader  // the newest commit (nil: a new file, no commit yet)
	hdr    *Header
	g      *geometry
	newest commitSlot
	inSlot int64 // offset of the slot holding the newest commit; 0: none (the footer has it)
	base   *Reader
	comp   Compression
	ropt   ReaderOptions
	closed bool
}

// OpenEditor opens a version 2 image file for commits, taking an
// exclusive lock on it (a second Editor, in this process or another, is
// refused; Readers are not).
func OpenEditor(path string, opt EditorOptions) (*Editor, error) {
	f, _, err := openRegular(path, os.O_RDWR)
	if err != nil {
		return nil, err
	}
	if err := lockFile(f, path); err != nil {
		f.Close()
		return nil, err
	}
	// The size as of holding the lock: a writer that committed between
	// open and lock has grown the file.
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	e, err := newEditor(f, st.Size(), opt)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	e.osf = f
	e.r.name = path
	return e, nil
}

// lockFile takes an exclusive advisory lock on the image: one writer.
func lockFile(f *os.File, path string) error {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		if h := ReadLockHolder(path); h != nil {
			return &LockedError{Image: path, Holder: h}
		}
		return fmt.Errorf("%w: %s is open for commits by another editor (it holds the image's own lock)", ErrLocked, path)
	}
	if err != nil {
		return fmt.Errorf("imagefmt: lock %s: %w", path, err)
	}
	return nil
}

func newEditor(f editFile, size int64, opt EditorOptions) (*Editor, error) {
	ropt := opt.Reader
	ropt.Base, ropt.Commit = opt.Base, 0
	r, err := NewReader(f, size, ropt)
	if err != nil {
		return nil, err
	}
	if r.t == nil {
		return nil, fmt.Errorf("imagefmt: a version 1 image cannot take commits (convert it to version 2)")
	}
	if err := checkFeatures("the header", 56, r.hdr.Incompat, r.hdr.ROCompat, true); err != nil {
		return nil, err
	}
	if err := checkFeatures(fmt.Sprintf("commit %d", r.t.commit.number), r.t.commitOff+36, r.t.commit.incompat, r.t.commit.roCompat, true); err != nil {
		return nil, err
	}
	e := &Editor{f: f, size: size, r: r, hdr: r.hdr, g: r.t.g, newest: r.t.newest, base: opt.Base, comp: opt.Compression, ropt: ropt}
	// Which slot holds the newest commit, if any (else the footer does).
	buf := make([]byte, slotSize)
	for _, off := range []int64{slotAOff, slotBOff} {
		if _, err := f.ReadAt(buf, off); err != nil {
			return nil, fmt.Errorf("imagefmt: read slot: %w", err)
		}
		if s, ok, _ := parseSlot(buf, off, commitSlotMagic, e.hdr.UUID, size); ok && s == e.newest {
			e.inSlot = off
			break
		}
	}
	if e.comp == (Compression{}) && e.hdr.Incompat&IncompatZstd != 0 {
		e.comp = Compression{Method: "zstd"}
	}
	return e, nil
}

// CreateDelta creates a delta image at path over base (opened at the
// commit the delta is to follow): a file of its own whose first commit
// holds changes (may yield nothing), all other chunks being the base's.
// pathHint is stored to find the base again (the UUID and digest decide).
// The returned Editor holds the new file's lock.
func CreateDelta(ctx context.Context, path string, base *Reader, pathHint string, changes iter.Seq2[ChunkChange, error], copt CommitOptions, opt EditorOptions) (*Editor, error) {
	if base.t == nil {
		return nil, fmt.Errorf("%w: %s is a version 1 image; a delta needs a version 2 base", ErrBase, base.name)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	if err := lockFile(f, path); err != nil {
		f.Close()
		return nil, err
	}
	e, err := newDelta(ctx, f, base, pathHint, changes, copt, opt)
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	e.osf = f
	e.r.name = path
	// The new file's name must survive a crash too.
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return e, nil
}

func newDelta(ctx context.Context, f editFile, base *Reader, pathHint string, changes iter.Seq2[ChunkChange, error], copt CommitOptions, opt EditorOptions) (*Editor, error) {
	bh := base.hdr
	h := &Header{Version: Version2, SectorSize: bh.SectorSize, ChunkSize: bh.ChunkSize, DiskSize: bh.DiskSize,
		Created: copt.Time, ToolVersion: opt.ToolVersion, Incompat: IncompatDelta,
		Base: &BaseRef{UUID: bh.UUID, Commit: base.Commit().Number, Digest: base.Digest(), PathHint: pathHint}}
	if h.Created.IsZero() {
		h.Created = time.Now()
	}
	if h.UUID = opt.UUID; h.UUID == ([16]byte{}) {
		if _, err := rand.Read(h.UUID[:]); err != nil {
			return nil, err
		}
		h.UUID[6] = h.UUID[6]&0x0f | 0x40
		h.UUID[8] = h.UUID[8]&0x3f | 0x80
	}
	if copt.Metadata == nil {
		// The first commit writes the metadata record: the base's.
		copt.Metadata = append([]byte{}, bh.Metadata...)
	}
	hb, err := h.marshalV2()
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteAt(append(hb, make([]byte, 2*slotSectorSize)...), 0); err != nil {
		return nil, fmt.Errorf("imagefmt: write: %w", err)
	}
	g := newGeometry(h)
	// An empty tree over the base stands for the commit before the first.
	t := &treeIndex{g: g, commit: &commitRecord{}, root: &node{level: g.height - 1}, base: base,
		rules: nodeRules{g: g, delta: true, zstd: true}}
	r := &Reader{ra: f, size: dataStart, hdr: h, t: t}
	e := &Editor{f: f, size: dataStart, r: r, hdr: h, g: g, base: base, comp: opt.Compression, ropt: opt.Reader}
	e.ropt.Base, e.ropt.Commit = base, 0
	if _, err := e.Commit(ctx, changes, copt); err != nil {
		return nil, err
	}
	return e, nil
}

// Reader is the newest commit (replaced by each Commit; earlier Readers
// stay valid and keep showing their commit).
func (e *Editor) Reader() *Reader { return e.r }

// Close releases the file (and its lock). It does not close the base.
func (e *Editor) Close() error {
	if e.closed {
		return nil
	}
	e.closed = true
	if e.osf != nil {
		return e.osf.Close()
	}
	return nil
}

// appender writes records one after another from an offset, buffered.
type appender struct {
	f   io.WriterAt
	off int64 // file offset of buf[0]
	buf []byte
}

func (a *appender) pos() int64 { return a.off + int64(len(a.buf)) }

func (a *appender) write(b []byte) error {
	if len(a.buf)+len(b) > cap(a.buf) {
		if err := a.flush(); err != nil {
			return err
		}
		if len(b) > cap(a.buf) {
			if _, err := a.f.WriteAt(b, a.off); err != nil {
				return fmt.Errorf("imagefmt: write at file offset %d: %w", a.off, err)
			}
			a.off += int64(len(b))
			return nil
		}
	}
	a.buf = append(a.buf, b...)
	return nil
}

func (a *appender) flush() error {
	if len(a.buf) == 0 {
		return nil
	}
	if _, err := a.f.WriteAt(a.buf, a.off); err != nil {
		return fmt.Errorf("imagefmt: write at file offset %d: %w", a.off, err)
	}
	a.off += int64(len(a.buf))
	a.buf = a.buf[:0]
	return nil
}

// change is one chunk's new state, once its frame is written.
type change struct {
	chunk int64
	state uint8 // diskStored, diskZero or diskUnused
	e     leafStored
}

// nodeUpdate is a node of the new tree: written (loc), or gone (absent).
type nodeUpdate struct {
	idx    int64
	absent bool
	loc    nodeLoc
	hash   [32]byte
}

// Commit appends a commit holding changes, which must come in strictly
// increasing chunk order (an iterator that yields an error aborts the
// commit, which then leaves the image as it was). It returns the new
// commit; Reader then shows it.
func (e *Editor) Commit(ctx context.Context, changes iter.Seq2[ChunkChange, error], opt CommitOptions) (CommitInfo, error) {
	if e.closed {
		return CommitInfo{}, fmt.Errorf("imagefmt: commit on a closed editor")
	}
	if len(opt.Message) > maxMessage {
		return CommitInfo{}, fmt.Errorf("imagefmt: commit message longer than %d bytes", maxMessage)
	}
	be, err := newBatchEncoder(e.comp, e.hdr.ChunkSize)
	if err != nil {
		return CommitInfo{}, err
	}
	old := e.r.t.commit
	delta := e.hdr.Incompat&IncompatDelta != 0
	// A stream-written image: record its commit in a slot, durably, before
	// anything overwrites the footer that holds it now.
	if old.number > 0 && e.inSlot == 0 {
		if err := e.writeSlot(slotAOff, e.newest); err != nil {
			return CommitInfo{}, err
		}
		e.inSlot = slotAOff
	}
	start := e.newest.end
	if old.number == 0 {
		start = dataStart
	}
	rec := commitRecord{number: old.number + 1, time: opt.Time, parentOff: e.newest.recOff, parentLen: e.newest.recLen,
		parentDig: old.digest, start: start, metaOff: old.metaOff, metaLen: old.metaLen,
		incompat: e.hdr.Incompat | old.incompat, roCompat: e.hdr.ROCompat | old.roCompat, compat: e.hdr.Compat | old.compat,
		stored: old.stored, storedB: old.storedB, zero: old.zero, session: opt.Session, message: opt.Message}
	if rec.time.IsZero() {
		rec.time = time.Now()
	}
	w := &appender{f: e.f, off: start, buf: make([]byte, 0, 1<<20)}
	if opt.Metadata != nil {
		mb, err := marshalMeta(opt.Metadata)
		if err != nil {
			return CommitInfo{}, err
		}
		rec.metaOff, rec.metaLen = w.pos(), len(mb)
		if err := w.write(mb); err != nil {
			return CommitInfo{}, err
		}
	}

	// Frames and run records, in chunk order; a run record never crosses
	// a leaf.
	var chs []change
	var run runRecord
	flushRun := func() error {
		if run.count == 0 {
			return nil
		}
		var b [runRecordSize]byte
		putRunRecord(b[:], run)
		run.count = 0
		return w.write(b[:])
	}
	// A run change goes into the pending run record; a stored chunk waits
	// in the batch, which is encoded on all cores and written in order.
	addRun := func(c int64, state uint8) error {
		if run.count > 0 && (run.state != state || run.start+run.count != c || c%fanout == 0) {
			if err := flushRun(); err != nil {
				return err
			}
		}
		if run.count == 0 {
			run = runRecord{start: c, state: state}
		}
		run.count++
		chs = append(chs, change{chunk: c, state: state})
		return nil
	}
	var queued []queuedChange // in chunk order, while the batch fills
	flushBatch := func() error {
		if err := be.encode(); err != nil {
			return err
		}
		for _, q := range queued {
			if q.slot < 0 {
				if err := addRun(q.chunk, q.state); err != nil {
					return err
				}
				continue
			}
			if err := flushRun(); err != nil {
				return err
			}
			f := be.out[q.slot]
			if f.Method == MethodZstd {
				rec.incompat |= IncompatZstd
			}
			off := w.pos()
			if err := w.write(f.Raw); err != nil {
				return err
			}
			chs = append(chs, change{chunk: q.chunk, state: diskStored, e: leafStored{method: f.Method, slen: uint32(len(f.Payload)), off: off, sum: f.Sum}})
		}
		queued = queued[:0]
		be.reset()
		return nil
	}
	next := int64(0)
	for ch, err := range changes {
		if err != nil {
			return CommitInfo{}, fmt.Errorf("imagefmt: commit: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return CommitInfo{}, err
		}
		c := ch.Chunk
		if c < next || c >= e.g.chunks {
			return CommitInfo{}, fmt.Errorf("imagefmt: commit: chunk %d out of order or range (next %d, %d chunks)", c, next, e.g.chunks)
		}
		next = c + 1
		rec.changed++
		rec.changedB += int64(e.hdr.ChunkLen(c))
		state := uint8(0)
		switch ch.State {
		case ChunkStored:
			if len(ch.Data) != e.hdr.ChunkLen(c) {
				return CommitInfo{}, fmt.Errorf("imagefmt: commit: chunk %d has %d bytes, want %d", c, len(ch.Data), e.hdr.ChunkLen(c))
			}
			state = diskStored
			if IsZero(ch.Data) {
				state = diskZero
			}
		case ChunkZero:
			state = diskZero
		case ChunkUnused:
			state = diskUnused
		default:
			return CommitInfo{}, fmt.Errorf("imagefmt: commit: chunk %d: unknown state %d", c, ch.State)
		}
		if state != diskStored {
			if len(queued) == 0 {
				err = addRun(c, state)
			} else {
				queued = append(queued, queuedChange{chunk: c, state: state, slot: -1})
			}
		} else {
			queued = append(queued, queuedChange{chunk: c, slot: be.add(c, ch.Data)})
			if be.full() {
				err = flushBatch()
			}
		}
		if err != nil {
			return CommitInfo{}, err
		}
	}
	if err := flushBatch(); err != nil {
		return CommitInfo{}, err
	}
	if err := flushRun(); err != nil {
		return CommitInfo{}, err
	}

	// The changed leaves, then their parents up to the root.
	root, err := e.writeTree(w, chs, &rec, delta)
	if err != nil {
		return CommitInfo{}, err
	}
	rec.rootOff, rec.rootLen, rec.digest = root.loc.off, root.loc.length, root.hash
	recOff := w.pos()
	if err := w.write(rec.marshal()); err != nil {
		return CommitInfo{}, err
	}
	if err := w.flush(); err != nil {
		return CommitInfo{}, err
	}
	end := w.pos()
	if err := e.f.Sync(); err != nil {
		return CommitInfo{}, fmt.Errorf("imagefmt: sync: %w", err)
	}
	// The commit is complete on disk; the slot makes it the newest.
	s := commitSlot{commit: rec.number, recOff: recOff, recLen: rec.size(), digest: rec.digest, end: end}
	target := int64(slotAOff)
	if e.inSlot == slotAOff {
		target = slotBOff
	}
	if err := e.writeSlot(target, s); err != nil {
		return CommitInfo{}, err
	}
	e.inSlot, e.newest = target, s
	if end > e.size {
		e.size = end
	} else if end < e.size {
		// A torn tail of an earlier interrupted commit, or the footer:
		// garbage past the newest commit, dropped.
		if err := e.f.Truncate(end); err == nil {
			e.size = end
		}
	}
	r, err := NewReader(e.f, e.size, e.ropt)
	if err != nil {
		return CommitInfo{}, fmt.Errorf("imagefmt: reopen after commit %d: %w", rec.number, err)
	}
	r.name = e.r.name
	e.r = r
	return r.Commit(), nil
}

// writeSlot writes slot s at off and syncs.
func (e *Editor) writeSlot(off int64, s commitSlot) error {
	if _, err := e.f.WriteAt(s.marshal(commitSlotMagic, e.hdr.UUID), off); err != nil {
		return fmt.Errorf("imagefmt: write slot: %w", err)
	}
	if err := e.f.Sync(); err != nil {
		return fmt.Errorf("imagefmt: sync: %w", err)
	}
	return nil
}

// writeTree writes the new versions of the leaves chs touches and of
// every node above them, bottom up (children before parents), updating
// rec's counts. It returns the root.
func (e *Editor) writeTree(w *appender, chs []change, rec *commitRecord, delta bool) (nodeUpdate, error) {
	r := e.r
	var ups []nodeUpdate
	for i := 0; i < len(chs); {
		idx := chs[i].chunk / fanout
		j := i
		for j < len(chs) && chs[j].chunk/fanout == idx {
			j++
		}
		old, err := r.pathNode(idx*fanout, 0)
		if err != nil {
			return nodeUpdate{}, err
		}
		n := mergeLeaf(e.g, old, idx, chs[i:j], delta, rec)
		u, err := e.writeNode(w, n)
		if err != nil {
			return nodeUpdate{}, err
		}
		ups = append(ups, u)
		i = j
	}
	for k := 1; k < e.g.height; k++ {
		var next []nodeUpdate
		for i := 0; i < len(ups); {
			p := ups[i].idx / fanout
			j := i
			for j < len(ups) && ups[j].idx/fanout == p {
				j++
			}
			u, err := e.mergeInternal(w, k, p, ups[i:j])
			if err != nil {
				return nodeUpdate{}, err
			}
			next = append(next, u)
			i = j
		}
		ups = next
	}
	if len(ups) == 0 {
		// Nothing changed: every commit still writes its root.
		old := e.r.t.root
		return e.writeNode(w, &node{level: old.level, stored: old.stored, runs: old.runs, children: old.children})
	}
	return ups[0], nil
}

// writeNode writes n (or records it absent when it is empty and not the
// root) and hashes it.
func (e *Editor) writeNode(w *appender, n *node) (nodeUpdate, error) {
	r := e.r
	u := nodeUpdate{idx: n.index}
	isRoot := n.level == e.g.height-1
	if n.empty() && !isRoot {
		u.absent = true
		var err error
		if u.hash, err = r.absentChild(n.level+1, n.index/fanout, int(n.index%fanout)); err != nil {
			return u, err
		}
		return u, nil
	}
	var err error
	if n.level == 0 {
		u.hash, err = r.hashLeaf(n)
	} else {
		u.hash, err = internalHash(e.g, n, func(s int) ([32]byte, error) { return r.absentChild(n.level, n.index, s) })
	}
	if err != nil {
		return u, err
	}
	b := n.marshal()
	u.loc = nodeLoc{off: w.pos(), length: len(b)}
	return u, w.write(b)
}

// mergeInternal makes the new node p of level k from its old version and
// the updates of its children, and writes it.
func (e *Editor) mergeInternal(w *appender, k int, p int64, ups []nodeUpdate) (nodeUpdate, error) {
	old, err := e.r.pathNode(p<<(fanoutBits*(k+1)), k)
	if err != nil {
		return nodeUpdate{}, err
	}
	n := &node{level: k, index: p}
	var oc []child
	if old != nil {
		oc = old.children
	}
	i := 0
	for _, u := range ups {
		s := uint16(u.idx % fanout)
		for i < len(oc) && oc[i].slot < s {
			n.children = append(n.children, oc[i])
			i++
		}
		if i < len(oc) && oc[i].slot == s {
			i++
		}
		if !u.absent {
			n.children = append(n.children, child{slot: s, length: uint32(u.loc.length), off: u.loc.off, hash: u.hash})
		}
	}
	n.children = append(n.children, oc[i:]...)
	return e.writeNode(w, n)
}

// mergeLeaf applies a leaf's changes to its old version (nil: absent) and
// returns the new leaf in canonical form (entries by slot, adjacent runs
// of one state merged), updating rec's counts.
func mergeLeaf(g *geometry, old *node, idx int64, chs []change, delta bool, rec *commitRecord) *node {
	slots := g.slots(0, idx)
	state := make([]uint8, slots)
	entry := make([]leafStored, slots)
	if old != nil {
		for _, e := range old.stored {
			state[e.slot], entry[e.slot] = diskStored, e
		}
		for _, rn := range old.runs {
			for s := rn.slot; s < rn.slot+rn.count; s++ {
				state[s] = rn.state
			}
		}
	}
	for _, ch := range chs {
		s := int(ch.chunk % fanout)
		switch state[s] {
		case diskStored:
			rec.stored--
			rec.storedB -= FrameHeaderSize + int64(entry[s].slen)
		case diskZero:
			rec.zero--
		}
		ns := ch.state
		if ns == diskUnused && !delta {
			ns = 0 // absent is unused
		}
		state[s], entry[s] = ns, ch.e
		switch ns {
		case diskStored:
			rec.stored++
			rec.storedB += FrameHeaderSize + int64(ch.e.slen)
		case diskZero:
			rec.zero++
		}
	}
	n := &node{level: 0, index: idx}
	for s := 0; s < slots; s++ {
		switch st := state[s]; st {
		case diskStored:
			e := entry[s]
			e.slot = uint16(s)
			n.stored = append(n.stored, e)
		case diskZero, diskUnused:
			if m := len(n.runs); m > 0 && n.runs[m-1].state == st && int(n.runs[m-1].slot+n.runs[m-1].count) == s {
				n.runs[m-1].count++
			} else {
				n.runs = append(n.runs, leafRun{slot: uint16(s), count: 1, state: st})
			}
		}
	}
	return n
}

// Committer returns an overlay Committer that makes the overlay's dirty
// chunks one commit of this image, with opt (the overlay gives the
// message; opt.Session is typically the overlay's Info().Session).
func (e *Editor) Committer(opt CommitOptions) Committer {
	return &editorCommitter{e: e, opt: opt}
}

type editorCommitter struct {
	e   *Editor
	opt CommitOptions
	// Info is the commit made, once CommitChunks succeeded.
	info CommitInfo
}

func (c *editorCommitter) CommitChunks(ctx context.Context, message string, _ int, next func() (int64, []byte, bool, error)) error {
	opt := c.opt
	opt.Message = message
	info, err := c.e.Commit(ctx, overlayChanges(next), opt)
	c.info = info
	return err
}

// overlayChanges turns an overlay's next function into commit changes.
func overlayChanges(next func() (int64, []byte, bool, error)) iter.Seq2[ChunkChange, error] {
	return func(yield func(ChunkChange, error) bool) {
		for {
			c, data, zero, err := next()
			if err == io.EOF {
				return
			}
			if err != nil {
				yield(ChunkChange{}, err)
				return
			}
			ch := ChunkChange{Chunk: c, State: ChunkStored, Data: data}
			if zero {
				ch = ChunkChange{Chunk: c, State: ChunkZero}
			}
			if !yield(ch, nil) {
				return
			}
		}
	}
}

// DeltaCommitter is an overlay Committer that writes the overlay's
// changes as a new delta image at Path over Base, leaving Base untouched.
// After CommitChunks, Editor holds the new image (close it).
type DeltaCommitter struct {
	Path     string
	Base     *Reader
	PathHint string // stored to find the base again (e.g. its path)
	Commit   CommitOptions
	Options  EditorOptions
	Editor   *Editor
}

func (d *DeltaCommitter) CommitChunks(ctx context.Context, message string, _ int, next func() (int64, []byte, bool, error)) error {
	opt := d.Commit
	opt.Message = message
	e, err := CreateDelta(ctx, d.Path, d.Base, d.PathHint, overlayChanges(next), opt, d.Options)
	if err != nil {
		return err
	}
	d.Editor = e
	return nil
}

// queuedChange is a change waiting for the batch before it (slot < 0) or
// in it (its slot).
type queuedChange struct {
	chunk int64
	state uint8
	slot  int
}

// batchEncoder compresses a commit's stored chunks on all cores: chunks
// are copied in (a change's data is valid only during its yield) until the
// batch is full, encoded in parallel, then written in order.
type batchEncoder struct {
	encs   []*Encoder
	chunks []int64
	data   [][]byte // copies of the chunks' bytes
	bufs   [][]byte // frame buffers
	out    []Frame
	n      int
}

func newBatchEncoder(c Compression, chunkSize int) (*batchEncoder, error) {
	workers := runtime.GOMAXPROCS(0)
	// Four chunks a core, but at most about 32 MiB of chunks in flight.
	size := max(workers, min(4*workers, (32<<20)/chunkSize))
	b := &batchEncoder{chunks: make([]int64, size), data: make([][]byte, size), bufs: make([][]byte, size), out: make([]Frame, size)}
	for range min(workers, size) {
		enc, err := NewEncoder(c)
		if err != nil {
			return nil, err
		}
		b.encs = append(b.encs, enc)
	}
	for i := range size {
		b.data[i] = make([]byte, 0, chunkSize)
		b.bufs[i] = make([]byte, FrameBufSize(chunkSize))
	}
	return b, nil
}

func (b *batchEncoder) full() bool { return b.n == len(b.data) }
func (b *batchEncoder) reset()     { b.n = 0 }

// add copies chunk c's data into the batch and returns its slot.
func (b *batchEncoder) add(c int64, data []byte) int {
	i := b.n
	b.chunks[i], b.data[i] = c, append(b.data[i][:0], data...)
	b.n++
	return i
}

// encode compresses the batch into out.
func (b *batchEncoder) encode() error {
	if b.n == 0 {
		return nil
	}
	errs := make([]error, b.n)
	var wg sync.WaitGroup
	for k, enc := range b.encs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := k; i < b.n; i += len(b.encs) {
				b.out[i], errs[i] = enc.Encode(b.bufs[i], b.chunks[i], b.data[i])
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
