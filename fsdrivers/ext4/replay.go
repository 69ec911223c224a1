package ext4

import (
	"encoding/binary"
	"fmt"

	"github.com/dimg-project/dimg/fsdrivers"
)

// Journal replay, the way the kernel's jbd2 recovery and e2fsck do it:
//
//  1. scan: walk the log from s_start, transaction by transaction, while
//     each block carries the jbd2 magic and the expected sequence; a
//     transaction counts only when its commit block is found (and its
//     checksums hold). The first transaction without a valid commit ends
//     the log.
//  2. revoke: collect the revoke records of the committed transactions,
//     remembering for each home block the newest transaction revoking it.
//  3. replay: copy every logged block of the committed transactions home,
//     in log order, unless a revoke in the same or a later transaction
//     covers it.
//
// Then the journal superblock is marked empty (s_start 0, the sequence
// moved past the last transaction so stale commit blocks can never match
// again) and needs_recovery is cleared in the ext4 superblock.
//
// Work is bounded by the log's length: the scan visits each log block at
// most once, so a hostile log (loops, sequences that never end) stops with
// an error, not a hang.

// jtag is one logged block of a committed transaction.
type jtag struct {
	jblk   uint32 // journal block holding the data
	target uint64 // home block in the filesystem
	flags  uint32
}

type jtrans struct {
	tid     uint32
	tags    []jtag
	revokes []uint32 // journal blocks of revoke blocks
}

// replayStats describes a replay, for tests and messages.
type replayStats struct {
	transactions int
	blocks       int // blocks written to their home location
	revoked      int // logged blocks skipped because a revoke covers them
	escaped      int // blocks whose magic was restored
	wrapped      bool
	lastOrphan   uint32 // s_last_orphan after replay (the writer handles orphans)
	journalErrno int32  // the error the kernel recorded in the journal, 0 if none
	jcompat      uint32 // the journal's feature flags
	jincompat    uint32
}

// journal reads an internal journal (a file in the filesystem).
type journal struct {
	dev       fsdrivers.ReadWriterAt
	v         *Volume
	ino       *inode
	bs        int64
	sb        jsuper
	raw       []byte // journal block 0
	first     uint32 // the log is journal blocks [first, last)
	last      uint32
	seed      uint32 // crc32c seed for v2/v3 checksums
	tagBytes  int
	cache     run // last mapping of journal blocks to filesystem blocks
	scanLimit int // journal blocks the scan may still visit
	wrapped   bool
}

// replayJournal replays the journal of the filesystem on dev when its
// superblock says it needs recovery, and returns how many blocks were
// written home. A filesystem without needs_recovery is left untouched. It
// refuses, with an error wrapping fsdrivers.ErrReadOnly, what it cannot
// replay (an external journal, unknown journal features, a non-empty
// fast-commit area), and with fsdrivers.ErrCorrupt a damaged log; in
// both cases nothing has been written.
func replayJournal(dev fsdrivers.ReadWriterAt, size int64) (replayed int, err error) {
	st, err := replay(dev, size)
	return st.blocks, err
}

func replay(dev fsdrivers.ReadWriterAt, size int64) (replayStats, error) {
	var st replayStats
	if size < superOffset+superSize {
		return st, fmt.Errorf("ext4: %d bytes is too small for a superblock: %w", size, fsdrivers.ErrNotFound)
	}
	raw := make([]byte, superSize)
	if err := readAtFull(dev, raw, superOffset); err != nil {
		return st, fmt.Errorf("ext4: read superblock: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint16(raw[0x38:]) != superMagic {
		return st, fmt.Errorf("ext4: no superblock magic 0xEF53: %w", fsdrivers.ErrNotFound)
	}
	sb := parseSuperblock(raw)
	if sb.incompat&incompatRecover == 0 {
		return st, nil
	}
	v, err := Open(dev, size)
	if err != nil {
		return st, err
	}
	if sb.compat&compatHasJournal == 0 {
		// needs_recovery without a journal: nothing to replay; e2fsck
		// clears the flag the same way.
		return st, finishRecovery(dev, size, nil, &st)
	}
	inum := le.Uint32(raw[sbJournalInum:])
	if inum == 0 {
		return st, errExternalJournal(raw)
	}
	j, err := openJournal(dev, v, inum)
	if err != nil {
		return st, err
	}
	st.jcompat, st.jincompat = j.sb.compat, j.sb.incompat
	if j.sb.start == 0 {
		// The journal is empty (the kernel marked it so before the crash):
		// only the flag is stale.
		return st, finishRecovery(dev, size, j, &st)
	}
	trans, end, err := j.scan()
	if err != nil {
		return st, err
	}
	if err := j.checkFastCommit(end); err != nil {
		return st, err
	}
	revoked, err := j.revokes(trans)
	if err != nil {
		return st, err
	}
	st.transactions = len(trans)
	st.wrapped = j.wrapped
	if err := j.replay(trans, revoked, &st); err != nil {
		return st, err
	}
	j.sb.sequence = end + 1 // past every transaction the log may still hold
	return st, finishRecovery(dev, size, j, &st)
}

func readAtFull(r fsdrivers.ReadWriterAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil {
		err = fmt.Errorf("short read of %d bytes at %d", n, off)
	}
	return err
}

func openJournal(dev fsdrivers.ReadWriterAt, v *Volume, inum uint32) (*journal, error) {
	ino, err := v.readInode(inum)
	if err != nil {
		return nil, fmt.Errorf("ext4: journal inode: %w", err)
	}
	if !ino.isReg() {
		return nil, corruptf("journal inode %d is not a regular file", inum)
	}
	j := &journal{dev: dev, v: v, ino: ino, bs: v.blockSize}
	j.scanLimit = 1 // the superblock
	if j.raw, err = j.read(0); err != nil {
		return nil, err
	}
	if j.sb, err = parseJSuper(j.raw); err != nil {
		return nil, err
	}
	s := &j.sb
	if int64(s.blockSize) != v.blockSize {
		return nil, corruptf("journal block size %d differs from the filesystem's %d", s.blockSize, v.blockSize)
	}
	if s.incompat&^jIncompatKnown != 0 {
		return nil, fmt.Errorf("ext4: journal has unknown incompatible features %#x: %w",
			s.incompat&^jIncompatKnown, fsdrivers.ErrReadOnly)
	}
	if s.csumV23() {
		if s.checksumType != jChecksumCRC32C {
			return nil, corruptf("journal checksum type %d is not crc32c", s.checksumType)
		}
		if got := jsuperChecksum(j.raw); got != s.checksum {
			return nil, corruptf("journal superblock checksum %#08x, computed %#08x", s.checksum, got)
		}
		j.seed = crc32c(^uint32(0), s.uuid[:])
	}
	fileBlocks := ino.size / uint64(j.bs)
	if uint64(s.maxLen) > fileBlocks || s.first == 0 || s.first >= s.maxLen {
		return nil, corruptf("journal log [%d, %d) does not fit the journal file of %d blocks", s.first, s.maxLen, fileBlocks)
	}
	j.last = s.maxLen
	if s.incompat&jIncompatFastCommit != 0 {
		fc := s.numFC
		if fc == 0 {
			fc = jDefaultFCBlocks
		}
		if fc >= s.maxLen-s.first {
			return nil, corruptf("journal of %d blocks with %d fast-commit blocks", s.maxLen, fc)
		}
		j.last = s.maxLen - fc
	}
	if s.start != 0 && (s.start < s.first || s.start >= j.last) {
		return nil, corruptf("journal log start %d outside the log [%d, %d)", s.start, s.first, j.last)
	}
	j.tagBytes = s.tagBytes()
	j.scanLimit = int(j.last - s.first)
	return j, nil
}

// phys maps journal block n to its filesystem block.
func (j *journal) phys(n uint32) (uint64, error) {
	l := uint64(n)
	if !j.cache.contains(l) {
		r, err := j.v.mapBlock(j.ino, l)
		if err != nil {
			return 0, fmt.Errorf("ext4: journal block %d: %w", n, err)
		}
		if r.kind != runData {
			return 0, corruptf("journal block %d is not allocated", n)
		}
		j.cache = r
	}
	p := j.cache.phys + (l - j.cache.lblk)
	if p >= j.v.sb.blocksCount {
		return 0, corruptf("journal block %d maps to block %d beyond the filesystem", n, p)
	}
	return p, nil
}

func (j *journal) read(n uint32) ([]byte, error) {
	p, err := j.phys(n)
	if err != nil {
		return nil, err
	}
	b := make([]byte, j.bs)
	if err := readAtFull(j.dev, b, int64(p)*j.bs); err != nil {
		return nil, fmt.Errorf("ext4: read journal block %d: %w", n, err)
	}
	return b, nil
}

// next returns the log block after n, wrapping at the end of the log, and
// charges it to the scan's budget.
func (j *journal) next(n uint32) (uint32, error) {
	n++
	if n >= j.last {
		n = j.sb.first
		j.wrapped = true
	}
	j.scanLimit--
	if j.scanLimit < 0 {
		return 0, corruptf("journal log runs around its whole length without ending")
	}
	return n, nil
}

// blockTailOK verifies the checksum at the end of a descriptor or revoke
// block (v2/v3).
func (j *journal) blockTailOK(b []byte) bool {
	n := len(b) - jTailSize
	want := binary.BigEndian.Uint32(b[n:])
	c := crc32c(j.seed, b[:n])
	return crc32c(c, []byte{0, 0, 0, 0}) == want
}

func (j *journal) commitOK(b []byte) bool {
	const off = 0x10 // h_chksum[0]
	want := binary.BigEndian.Uint32(b[off:])
	c := crc32c(j.seed, b[:off])
	c = crc32c(c, []byte{0, 0, 0, 0})
	return crc32c(c, b[off+4:]) == want
}

// tagChecksum is the v2/v3 checksum of a logged block: crc32c of the
// transaction's sequence (big-endian) and the block as it is in the log.
func (j *journal) tagChecksum(tid uint32, data []byte) uint32 {
	var s [4]byte
	binary.BigEndian.PutUint32(s[:], tid)
	return crc32c(crc32c(j.seed, s[:]), data)
}

// parseTags decodes a descriptor block's tags.
func (j *journal) parseTags(b []byte, at uint32) ([]jtag, []uint32, error) {
	be := binary.BigEndian
	end := len(b)
	if j.sb.csumV23() {
		end -= jTailSize
	}
	var tags []jtag
	var sums []uint32
	v3 := j.sb.incompat&jIncompatCsumV3 != 0
	for p := jHdrSize; p+j.tagBytes <= end; {
		t := b[p:]
		var tg jtag
		var sum uint32
		tg.target = uint64(be.Uint32(t))
		if v3 {
			tg.flags = be.Uint32(t[4:])
			if j.sb.incompat&jIncompat64bit != 0 {
				tg.target |= uint64(be.Uint32(t[8:])) << 32
			}
			sum = be.Uint32(t[12:])
		} else {
			sum = uint32(be.Uint16(t[4:]))
			tg.flags = uint32(be.Uint16(t[6:]))
			if j.sb.incompat&jIncompat64bit != 0 {
				tg.target |= uint64(be.Uint32(t[8:])) << 32
			}
		}
		tags = append(tags, tg)
		sums = append(sums, sum)
		p += j.tagBytes
		if tg.flags&jFlagSameUUID == 0 {
			p += 16
		}
		if tg.flags&jFlagLastTag != 0 {
			return tags, sums, nil
		}
	}
	if len(tags) == 0 {
		return nil, nil, corruptf("journal descriptor block %d has no tags", at)
	}
	return tags, sums, nil
}

// scan is pass 1: it returns the committed transactions in log order and
// the id of the first transaction that is not in the log.
func (j *journal) scan() ([]jtrans, uint32, error) {
	be := binary.BigEndian
	var done []jtrans
	tid := j.sb.sequence
	cur := jtrans{tid: tid}
	var crc uint32 = ^uint32(0) // v1 (compat checksum) running crc32 of the transaction
	badTag := ""                // first logged block whose checksum failed in this transaction
	asyncCommit := j.sb.incompat&jIncompatAsyncCommit != 0
	v1sum := j.sb.compat&jCompatChecksum != 0 && !j.sb.csumV23()
	v1seen := false
	blk := j.sb.start
	j.scanLimit--
	for {
		b, err := j.read(blk)
		if err != nil {
			return nil, 0, err
		}
		if be.Uint32(b) != jMagic || be.Uint32(b[8:]) != tid {
			break // the end of the log
		}
		typ := be.Uint32(b[4:])
		switch typ {
		case jDescriptor:
			if j.sb.csumV23() && !j.blockTailOK(b) {
				return nil, 0, corruptf("journal descriptor block %d (transaction %d): bad checksum", blk, tid)
			}
			tags, sums, err := j.parseTags(b, blk)
			if err != nil {
				return nil, 0, err
			}
			if v1sum {
				crc = crc32be(crc, b)
			}
			for i, tg := range tags {
				if blk, err = j.next(blk); err != nil {
					return nil, 0, err
				}
				tg.jblk = blk
				if tg.target >= j.v.sb.blocksCount {
					return nil, 0, corruptf("journal block %d (transaction %d) logs block %d beyond the filesystem's %d",
						blk, tid, tg.target, j.v.sb.blocksCount)
				}
				if j.sb.csumV23() || v1sum {
					data, err := j.read(blk)
					if err != nil {
						return nil, 0, err
					}
					if v1sum {
						crc = crc32be(crc, data)
					}
					if j.sb.csumV23() && badTag == "" {
						c := j.tagChecksum(tid, data)
						if j.sb.incompat&jIncompatCsumV3 == 0 {
							c &= 0xFFFF
						}
						if c != sums[i] {
							badTag = fmt.Sprintf("journal block %d (home block %d)", blk, tg.target)
						}
					}
				}
				cur.tags = append(cur.tags, tg)
			}
		case jCommit:
			ok, why := true, ""
			switch {
			case j.sb.csumV23():
				if !j.commitOK(b) {
					ok, why = false, "bad commit block checksum"
				} else if badTag != "" {
					ok, why = false, "bad checksum of "+badTag
				}
			case v1sum:
				typ, sz, found := b[0xC], b[0xD], be.Uint32(b[0x10:])
				switch {
				case typ == jChecksumCRC32 && sz == 4 && found == crc:
					v1seen = true
				case typ == 0 && sz == 0 && found == 0 && !v1seen:
					// written before checksums were turned on
				default:
					ok, why = false, "commit checksum mismatch"
				}
			}
			if !ok {
				if asyncCommit {
					// With async commits the commit block may reach the
					// disk before the blocks it covers: a mismatch there
					// is an interrupted transaction, the end of the log.
					return done, tid, nil
				}
				return nil, 0, corruptf("journal transaction %d (commit block %d): %s", tid, blk, why)
			}
			done = append(done, cur)
			tid++
			cur = jtrans{tid: tid}
			crc, badTag = ^uint32(0), ""
		case jRevoke:
			if j.sb.csumV23() && !j.blockTailOK(b) {
				return nil, 0, corruptf("journal revoke block %d (transaction %d): bad checksum", blk, tid)
			}
			cur.revokes = append(cur.revokes, blk)
		default:
			// Not a log block after all (the kernel stops here too).
			return done, tid, nil
		}
		if blk, err = j.next(blk); err != nil {
			return nil, 0, err
		}
	}
	return done, tid, nil
}

// revokes is pass 2: home block -> the newest transaction revoking it.
func (j *journal) revokes(trans []jtrans) (map[uint64]uint32, error) {
	be := binary.BigEndian
	out := map[uint64]uint32{}
	recSize := 4
	if j.sb.incompat&jIncompat64bit != 0 {
		recSize = 8
	}
	limit := int(j.bs)
	if j.sb.csumV23() {
		limit -= jTailSize
	}
	for _, t := range trans {
		for _, rb := range t.revokes {
			b, err := j.read(rb)
			if err != nil {
				return nil, err
			}
			count := int(be.Uint32(b[jHdrSize:]))
			if count < 16 || count > limit {
				return nil, corruptf("journal revoke block %d (transaction %d): %d bytes of records", rb, t.tid, count)
			}
			for p := 16; p+recSize <= count; p += recSize {
				var blk uint64
				if recSize == 8 {
					blk = be.Uint64(b[p:])
				} else {
					blk = uint64(be.Uint32(b[p:]))
				}
				if old, ok := out[blk]; !ok || tidGT(t.tid, old) {
					out[blk] = t.tid
				}
			}
		}
	}
	return out, nil
}

// replay is pass 3: copy the logged blocks home.
func (j *journal) replay(trans []jtrans, revoked map[uint64]uint32, st *replayStats) error {
	for _, t := range trans {
		for _, tg := range t.tags {
			if r, ok := revoked[tg.target]; ok && !tidGT(t.tid, r) {
				st.revoked++
				continue
			}
			b, err := j.read(tg.jblk)
			if err != nil {
				return err
			}
			if tg.flags&jFlagEscape != 0 {
				binary.BigEndian.PutUint32(b, jMagic)
				st.escaped++
			}
			if _, err := j.dev.WriteAt(b, int64(tg.target)*j.bs); err != nil {
				return fmt.Errorf("ext4: journal replay: write block %d: %w", tg.target, err)
			}
			st.blocks++
		}
	}
	return nil
}

// checkFastCommit refuses a journal whose fast-commit area holds commits
// following the last full transaction: replaying them needs ext4's
// logical fast-commit replay, which dimg does not implement.
func (j *journal) checkFastCommit(end uint32) error {
	if j.sb.incompat&jIncompatFastCommit == 0 {
		return nil
	}
	b, err := j.read(j.last)
	if err != nil {
		return err
	}
	le := binary.LittleEndian
	if le.Uint16(b) != fcTagHead || le.Uint16(b[2:]) < 8 {
		return nil // never used, or cleared
	}
	if tid := le.Uint32(b[8:]); tid != end && !tidGT(tid, end) {
		return nil // stale: it belongs to a transaction already in the log
	}
	return fmt.Errorf("ext4: the journal's fast-commit area holds commits after transaction %d "+
		"(replay it with the kernel or e2fsck -fy first): fast_commit replay: %w", end, fsdrivers.ErrReadOnly)
}

// finishRecovery marks the journal empty and clears needs_recovery, as
// e2fsck does after a replay. The ext4 superblock is read again: the
// replay may have rewritten it. Its free block and inode counts are
// recomputed from the group descriptors, since the kernel does not keep
// the superblock's copies exact in the journal (it recomputes them at
// mount).
func finishRecovery(dev fsdrivers.ReadWriterAt, size int64, j *journal, st *replayStats) error {
	if j != nil {
		b := j.raw
		be := binary.BigEndian
		be.PutUint32(b[0x18:], j.sb.sequence)
		be.PutUint32(b[0x1C:], 0) // s_start: empty
		be.PutUint32(b[0x20:], 0) // s_errno: moved to the ext4 superblock below
		if j.sb.version == 2 && j.sb.csumV23() {
			be.PutUint32(b[0xFC:], jsuperChecksum(b))
		}
		p, err := j.phys(0)
		if err != nil {
			return err
		}
		if _, err := dev.WriteAt(b, int64(p)*j.bs); err != nil {
			return fmt.Errorf("ext4: write journal superblock: %w", err)
		}
	}
	v, err := Open(dev, size)
	if err != nil {
		return fmt.Errorf("ext4: after journal replay: %w", err)
	}
	raw := make([]byte, superSize)
	if err := readAtFull(dev, raw, superOffset); err != nil {
		return fmt.Errorf("ext4: read superblock: %w", err)
	}
	le := binary.LittleEndian
	var freeClusters, freeInodes uint64
	for g := range v.groups {
		blk, off := v.descLocation(g)
		b, err := v.readBlock(blk)
		if err != nil {
			return fmt.Errorf("ext4: after journal replay: group %d descriptor: %w", g, err)
		}
		d := b[off : off+v.descSize]
		fc, fi := uint64(le.Uint16(d[0xC:])), uint64(le.Uint16(d[0xE:]))
		if v.descSize >= 64 {
			fc |= uint64(le.Uint16(d[0x2C:])) << 16
			fi |= uint64(le.Uint16(d[0x2E:])) << 16
		}
		freeClusters += fc
		freeInodes += fi
	}
	freeBlocks := freeClusters << v.clusterBits
	if freeBlocks > v.sb.blocksCount || freeInodes > uint64(v.sb.inodesCount) {
		return corruptf("after journal replay: group descriptors count %d free blocks of %d, %d free inodes of %d",
			freeBlocks, v.sb.blocksCount, freeInodes, v.sb.inodesCount)
	}
	le.PutUint32(raw[0x60:], le.Uint32(raw[0x60:])&^incompatRecover)
	if j != nil && j.sb.errno != 0 {
		// The kernel recorded an error in the journal before it stopped:
		// like e2fsck, mark the filesystem as having errors so it gets
		// checked (the writer refuses it until then).
		le.PutUint16(raw[sbOffState:], le.Uint16(raw[sbOffState:])|stateErrorFS)
		st.journalErrno = j.sb.errno
	}
	le.PutUint32(raw[0xC:], uint32(freeBlocks))
	if v.sb.incompat&incompat64bit != 0 {
		le.PutUint32(raw[0x158:], uint32(freeBlocks>>32))
	}
	le.PutUint32(raw[0x10:], uint32(freeInodes))
	if v.metaCsum {
		le.PutUint32(raw[sbOffChecksum:], crc32c(^uint32(0), raw[:sbOffChecksum]))
	}
	if _, err := dev.WriteAt(raw, superOffset); err != nil {
		return fmt.Errorf("ext4: write superblock: %w", err)
	}
	st.lastOrphan = le.Uint32(raw[sbOffLastOrphan:])
	return nil
}
