package imagefmt

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Version 2 layout constants (FORMAT.md, "Version 2").
const (
	// Version2 is the format with commits, a hash-tree index, feature flags,
	// delta images and zstd frames.
	Version2 = 2

	headerBlockSize = 4096 // the header block, never rewritten
	slotSectorSize  = 4096 // each commit slot sits alone in one sector
	slotAOff        = headerBlockSize
	slotBOff        = headerBlockSize + slotSectorSize
	// dataStart is where a v2 image's records begin: the header region is
	// the header block and the two slot sectors.
	dataStart = headerBlockSize + 2*slotSectorSize
	slotSize  = 128 // a slot and the v2 footer share this layout

	maxToolVersion2 = 1024
	maxPathHint     = 2048
	maxMessage      = 16 << 10
	maxMetadata     = 16 << 20

	commitFixedSize = 208
	metaFixedSize   = 12 // magic, length, CRC
	nodeFixedSize   = 28 // 24-byte node header + CRC
	storedEntrySize = 48
	runEntrySize    = 8
	childEntrySize  = 48
	runRecordSize   = FrameHeaderSize

	// fanoutBits: a node has up to 256 children (FORMAT.md, "Index tree").
	fanoutBits = 8
	fanout     = 1 << fanoutBits
	// maxNodeSize bounds a node: a full leaf, 256 stored entries.
	maxNodeSize = nodeFixedSize + fanout*storedEntrySize

	// MethodZstd is a zstd frame payload (version 2 with FeatureZstd only).
	MethodZstd = 2
)

// The rules of a version-2 image (FORMAT.md, "Version 2: validity"), on
// top of the version-1 rules its frames and run records share.
const (
	RuleHeaderBlock Rule = "v2-header"       // the header block: CRC, region length, string lengths, base reference
	RuleFeatures    Rule = "features"        // no incompatible feature bit this reader does not know (ErrFormat)
	RuleSlot        Rule = "slot"            // a slot or the v2 footer: magic, CRC, UUID, where its commit record lies
	RuleNoCommit    Rule = "commit-found"    // a valid slot, or else a valid footer that ends the file
	RuleCommit      Rule = "commit"          // a commit record: CRC, fields, everything it names lies before it
	RuleCommitChain Rule = "commit-chain"    // a parent is the previous commit; slot, commit and root agree
	RuleMetaRecord  Rule = "metadata-record" // a metadata record: CRC, length, a JSON object
	RuleNode        Rule = "node"            // an index node: CRC, level, number, entries in order and in range
	RuleTreeHash    Rule = "tree-hash"       // a node's hash is the one its parent or its commit records
	RuleRunRecord   Rule = "run-record"      // a v2 run record: CRC, state, within one leaf, in range
	RuleFrameEntry  Rule = "frame-entry"     // a frame is the one its leaf entry names: chunk, method, length, sum
	RuleRecords     Rule = "records"         // records in a commit: kinds, increasing chunks, each node after its records
)

// On-disk chunk states in leaf run entries and run records.
const (
	diskStored = 1
	diskZero   = 2
	diskUnused = 3
)

// Feature flags. An incompatible feature changes how the image must be
// read: a reader refuses an image with an incompatible bit it does not
// know. A read-only-compatible feature may be read but not committed to
// by a writer that does not know it. A compatible feature is ignored by
// readers that do not know it.
const (
	// IncompatDelta: the image is a delta over a base image named in the
	// header; absent chunks are the base's, not unused.
	IncompatDelta uint32 = 1 << 0
	// IncompatZstd: some frame reachable from the commit (or, in the
	// header, from the image as written) uses MethodZstd.
	IncompatZstd uint32 = 1 << 1

	knownIncompat = IncompatDelta | IncompatZstd
	knownROCompat = 0
)

// featureNames names the known incompatible bits for messages.
var featureNames = map[uint32]string{IncompatDelta: "delta", IncompatZstd: "zstd"}

// FeatureString lists the incompatible feature bits in f by name; unknown
// bits are named by number ("bit 7").
func FeatureString(f uint32) string {
	var s []string
	for b := 0; b < 32; b++ {
		bit := uint32(1) << b
		if f&bit == 0 {
			continue
		}
		if n, ok := featureNames[bit]; ok {
			s = append(s, n)
		} else {
			s = append(s, fmt.Sprintf("bit %d", b))
		}
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// checkFeatures refuses unknown incompatible bits (and, for a writer,
// unknown read-only-compatible bits), naming them.
func checkFeatures(where string, off int64, incompat, roCompat uint32, write bool) error {
	if u := incompat &^ knownIncompat; u != 0 {
		return notImage(RuleFeatures, off, "%s uses incompatible feature %s, which this dimg does not know (a newer dimg wrote it)", where, FeatureString(u))
	}
	if u := roCompat &^ knownROCompat; write && u != 0 {
		return notImage(RuleFeatures, off+4, "%s uses read-only-compatible feature bits %#x, which this dimg does not know: it can read the image but not commit to it", where, u)
	}
	return nil
}

// BaseRef names the base a delta image overrides: the base image's UUID,
// the commit the delta was made over, its digest, and where the base was
// (a hint: the UUID and digest decide).
type BaseRef struct {
	UUID     [16]byte
	Commit   int64
	Digest   [32]byte
	PathHint string
}

var (
	commitSlotMagic = [8]byte{'D', 'I', 'M', 'G', 'S', 'L', 'O', 'T'}
	nodeMagic       = [4]byte{'D', 'N', 'O', 'D'}
	commitMagic     = [4]byte{'D', 'C', 'M', 'T'}
	metaMagic       = [4]byte{'D', 'M', 'E', 'T'}
)

// marshalHeaderV2 encodes the 4096-byte header block.
func (h *Header) marshalV2() ([]byte, error) {
	switch {
	case len(h.ToolVersion) > maxToolVersion2:
		return nil, fmt.Errorf("imagefmt: tool version longer than %d bytes", maxToolVersion2)
	case h.Base != nil && len(h.Base.PathHint) > maxPathHint:
		return nil, fmt.Errorf("imagefmt: base path hint longer than %d bytes", maxPathHint)
	case (h.Base != nil) != (h.Incompat&IncompatDelta != 0):
		return nil, fmt.Errorf("imagefmt: delta flag and base reference disagree")
	}
	b := make([]byte, headerBlockSize)
	le := binary.LittleEndian
	copy(b[0:8], headerMagic[:])
	le.PutUint32(b[8:], Version2)
	le.PutUint32(b[12:], dataStart)
	copy(b[16:32], h.UUID[:])
	le.PutUint32(b[32:], uint32(h.SectorSize))
	le.PutUint32(b[36:], uint32(h.ChunkSize))
	le.PutUint64(b[40:], uint64(h.DiskSize))
	le.PutUint64(b[48:], uint64(h.Created.UnixNano()))
	le.PutUint32(b[56:], h.Incompat)
	le.PutUint32(b[60:], h.ROCompat)
	le.PutUint32(b[64:], h.Compat)
	le.PutUint32(b[68:], uint32(len(h.ToolVersion)))
	hint := ""
	if h.Base != nil {
		copy(b[72:88], h.Base.UUID[:])
		le.PutUint64(b[88:], uint64(h.Base.Commit))
		copy(b[96:128], h.Base.Digest[:])
		hint = h.Base.PathHint
	}
	le.PutUint32(b[128:], uint32(len(hint)))
	p := 136
	p += copy(b[p:], h.ToolVersion)
	copy(b[p:], hint)
	le.PutUint32(b[headerBlockSize-4:], crc(b[:headerBlockSize-4]))
	return b, nil
}

// unmarshalHeaderV2 decodes and checks a v2 header block (b holds at least
// headerBlockSize bytes). Metadata is not part of it: it lives in a
// metadata record the commit names.
func unmarshalHeaderV2(b []byte) (*Header, error) {
	if len(b) < headerBlockSize {
		return nil, ended(int64(len(b)), "header block")
	}
	b = b[:headerBlockSize]
	le := binary.LittleEndian
	if [8]byte(b[0:8]) != headerMagic || le.Uint32(b[8:]) != Version2 {
		return nil, notImage(RuleVersion, 8, "not a version 2 header")
	}
	if got, want := crc(b[:headerBlockSize-4]), le.Uint32(b[headerBlockSize-4:]); got != want {
		return nil, broken(RuleHeaderBlock, headerBlockSize-4, "header block checksum mismatch")
	}
	if n := le.Uint32(b[12:]); n != dataStart {
		return nil, broken(RuleHeaderBlock, 12, "header region length %d, version 2 has %d", n, dataStart)
	}
	h := &Header{
		Version:    Version2,
		SectorSize: int(le.Uint32(b[32:])),
		ChunkSize:  int(le.Uint32(b[36:])),
		DiskSize:   int64(le.Uint64(b[40:])),
		Created:    time.Unix(0, int64(le.Uint64(b[48:]))).UTC(),
		Incompat:   le.Uint32(b[56:]),
		ROCompat:   le.Uint32(b[60:]),
		Compat:     le.Uint32(b[64:]),
	}
	copy(h.UUID[:], b[16:32])
	if err := checkFeatures("the header", 56, h.Incompat, 0, false); err != nil {
		return nil, err
	}
	tl, pl := int(le.Uint32(b[68:])), int(le.Uint32(b[128:]))
	switch {
	case tl > maxToolVersion2 || !utf8.Valid(b[136:136+tl]):
		return nil, broken(RuleHeaderBlock, 68, "tool version length %d (at most %d, UTF-8)", tl, maxToolVersion2)
	case pl > maxPathHint || !utf8.Valid(b[136+tl:136+tl+pl]):
		return nil, broken(RuleHeaderBlock, 128, "base path hint length %d (at most %d, UTF-8)", pl, maxPathHint)
	case le.Uint32(b[132:]) != 0 || !IsZero(b[136+tl+pl:headerBlockSize-4]):
		return nil, broken(RuleHeaderBlock, 132, "reserved header bytes are not zero")
	}
	h.ToolVersion = string(b[136 : 136+tl])
	var ref BaseRef
	copy(ref.UUID[:], b[72:88])
	ref.Commit = int64(le.Uint64(b[88:]))
	copy(ref.Digest[:], b[96:128])
	ref.PathHint = string(b[136+tl : 136+tl+pl])
	if h.Incompat&IncompatDelta != 0 {
		if ref.UUID == ([16]byte{}) || ref.Commit < 1 {
			return nil, broken(RuleHeaderBlock, 72, "delta image without a base reference")
		}
		h.Base = &ref
	} else if ref != (BaseRef{}) {
		return nil, broken(RuleHeaderBlock, 72, "base reference in an image that is not a delta")
	}
	if err := h.checkGeometry(); err != nil {
		return nil, err
	}
	return h, nil
}

// commitSlot is a commit slot in the header region, or the v2 footer: where the
// newest commit record is and where the image logically ends.
type commitSlot struct {
	commit int64 // commit number, from 1
	recOff int64
	recLen int
	digest [32]byte
	end    int64 // logical end of the image: the commit record's end
}

func (s *commitSlot) marshal(magic [8]byte, uuid [16]byte) []byte {
	b := make([]byte, slotSize)
	le := binary.LittleEndian
	copy(b[0:8], magic[:])
	le.PutUint32(b[8:], Version2)
	copy(b[16:32], uuid[:])
	le.PutUint64(b[32:], uint64(s.commit))
	le.PutUint64(b[40:], uint64(s.recOff))
	le.PutUint32(b[48:], uint32(s.recLen))
	copy(b[56:88], s.digest[:])
	le.PutUint64(b[88:], uint64(s.end))
	le.PutUint32(b[120:], crc(b[:120]))
	copy(b[124:128], footerEnd[:])
	return b
}

// parseSlot decodes the slot or footer found at file offset off. It
// returns ok false, without an error, for an empty (all zero) slot; any
// other invalid slot is an error that says why (the caller decides
// whether another slot replaces it).
func parseSlot(b []byte, off int64, magic [8]byte, uuid [16]byte, fileSize int64) (s commitSlot, ok bool, err error) {
	what := "slot"
	if magic == footerMagic {
		what = "footer"
	}
	if len(b) < slotSize {
		return s, false, ended(off+int64(len(b)), what)
	}
	b = b[:slotSize]
	if IsZero(b) {
		return s, false, nil
	}
	le := binary.LittleEndian
	switch {
	case [8]byte(b[0:8]) != magic || [4]byte(b[124:128]) != footerEnd:
		return s, false, broken(RuleSlot, off, "no %s magic", what)
	case crc(b[:120]) != le.Uint32(b[120:]):
		return s, false, broken(RuleSlot, off+120, "%s checksum mismatch", what)
	case le.Uint32(b[8:]) != Version2:
		return s, false, broken(RuleSlot, off+8, "%s version %d", what, le.Uint32(b[8:]))
	case [16]byte(b[16:32]) != uuid:
		return s, false, broken(RuleSlot, off+16, "%s belongs to image %s", what, formatUUID([16]byte(b[16:32])))
	case le.Uint32(b[12:]) != 0 || le.Uint32(b[52:]) != 0 || !IsZero(b[96:120]):
		return s, false, broken(RuleSlot, off+12, "%s reserved bytes are not zero", what)
	}
	s = commitSlot{
		commit: int64(le.Uint64(b[32:])),
		recOff: int64(le.Uint64(b[40:])),
		recLen: int(le.Uint32(b[48:])),
		end:    int64(le.Uint64(b[88:])),
	}
	copy(s.digest[:], b[56:88])
	if s.commit < 1 || s.recOff < dataStart || s.recLen < commitFixedSize+4 || s.recLen > commitFixedSize+maxMessage+4 ||
		s.recOff+int64(s.recLen) != s.end {
		return s, false, broken(RuleSlot, off+32, "%s (commit %d, record at %d+%d, end %d) does not fit a %d-byte file",
			what, s.commit, s.recOff, s.recLen, s.end, fileSize)
	}
	if s.end > fileSize {
		// An intact slot is written only once its commit is durable, so
		// a commit past the end of the file was cut off after the fact.
		return s, false, broken(RuleEnd, fileSize, "the file ends at byte %d, but its %s names commit %d, which ends at byte %d: the image was truncated (an interrupted or partial copy)",
			fileSize, what, s.commit, s.end)
	}
	return s, true, nil
}

// commitRecord is one commit: what it changed, its tree and its digest.
type commitRecord struct {
	number    int64
	time      time.Time
	parentOff int64 // 0 for commit 1
	parentLen int
	incompat  uint32
	roCompat  uint32
	compat    uint32
	rootOff   int64
	rootLen   int
	digest    [32]byte // root hash
	start     int64    // first byte this commit wrote
	metaOff   int64
	metaLen   int
	changed   int64 // chunks changed by this commit
	changedB  int64 // logical bytes of those chunks
	stored    int64 // chunks stored in this commit's tree (this file's)
	storedB   int64 // frame bytes (headers + payloads) of those chunks
	zero      int64 // chunks recorded zero in this commit's tree
	parentDig [32]byte
	session   [16]byte // the writer's session (an overlay's), or zero
	message   string
}

func (c *commitRecord) size() int { return commitFixedSize + len(c.message) + 4 }

func (c *commitRecord) marshal() []byte {
	b := make([]byte, c.size())
	le := binary.LittleEndian
	copy(b[0:4], commitMagic[:])
	le.PutUint32(b[4:], uint32(len(b)))
	le.PutUint64(b[8:], uint64(c.number))
	le.PutUint64(b[16:], uint64(c.time.UnixNano()))
	le.PutUint64(b[24:], uint64(c.parentOff))
	le.PutUint32(b[32:], uint32(c.parentLen))
	le.PutUint32(b[36:], c.incompat)
	le.PutUint32(b[40:], c.roCompat)
	le.PutUint32(b[44:], c.compat)
	le.PutUint64(b[48:], uint64(c.rootOff))
	le.PutUint32(b[56:], uint32(c.rootLen))
	copy(b[64:96], c.digest[:])
	le.PutUint64(b[96:], uint64(c.start))
	le.PutUint64(b[104:], uint64(c.metaOff))
	le.PutUint32(b[112:], uint32(c.metaLen))
	le.PutUint32(b[116:], uint32(len(c.message)))
	le.PutUint64(b[120:], uint64(c.changed))
	le.PutUint64(b[128:], uint64(c.changedB))
	le.PutUint64(b[136:], uint64(c.stored))
	le.PutUint64(b[144:], uint64(c.storedB))
	le.PutUint64(b[152:], uint64(c.zero))
	copy(b[160:192], c.parentDig[:])
	copy(b[192:208], c.session[:])
	copy(b[commitFixedSize:], c.message)
	le.PutUint32(b[len(b)-4:], crc(b[:len(b)-4]))
	return b
}

// commitLen returns the length of the commit record at off whose first 8
// bytes are b, for readers of a stream.
func commitLen(b []byte, off int64) (int, error) {
	n := int(binary.LittleEndian.Uint32(b[4:]))
	if [4]byte(b[0:4]) != commitMagic {
		return 0, broken(RuleCommit, off, "no commit record (magic %q)", b[0:4])
	}
	if n < commitFixedSize+4 || n > commitFixedSize+maxMessage+4 {
		return 0, broken(RuleCommit, off+4, "commit record length %d", n)
	}
	return n, nil
}

// parseCommit decodes and checks a commit record found at file offset off.
// Offsets it holds must lie before it, in the data area.
func parseCommit(b []byte, off int64, g *geometry, hdr *Header) (*commitRecord, error) {
	n, err := commitLen(b, off)
	if err != nil {
		return nil, err
	}
	if len(b) != n {
		return nil, broken(RuleCommit, off+4, "commit record length %d where %d bytes were expected", n, len(b))
	}
	le := binary.LittleEndian
	if crc(b[:n-4]) != le.Uint32(b[n-4:]) {
		return nil, broken(RuleCommit, off+int64(n)-4, "commit record checksum mismatch")
	}
	c := &commitRecord{
		number:    int64(le.Uint64(b[8:])),
		time:      time.Unix(0, int64(le.Uint64(b[16:]))).UTC(),
		parentOff: int64(le.Uint64(b[24:])),
		parentLen: int(le.Uint32(b[32:])),
		incompat:  le.Uint32(b[36:]),
		roCompat:  le.Uint32(b[40:]),
		compat:    le.Uint32(b[44:]),
		rootOff:   int64(le.Uint64(b[48:])),
		rootLen:   int(le.Uint32(b[56:])),
		start:     int64(le.Uint64(b[96:])),
		metaOff:   int64(le.Uint64(b[104:])),
		metaLen:   int(le.Uint32(b[112:])),
		changed:   int64(le.Uint64(b[120:])),
		changedB:  int64(le.Uint64(b[128:])),
		stored:    int64(le.Uint64(b[136:])),
		storedB:   int64(le.Uint64(b[144:])),
		zero:      int64(le.Uint64(b[152:])),
	}
	copy(c.digest[:], b[64:96])
	copy(c.parentDig[:], b[160:192])
	copy(c.session[:], b[192:208])
	ml := int(le.Uint32(b[116:]))
	if commitFixedSize+ml+4 != n || !utf8.Valid(b[commitFixedSize:commitFixedSize+ml]) {
		return nil, broken(RuleCommit, off+116, "commit message length %d in a %d-byte record (UTF-8)", ml, n)
	}
	c.message = string(b[commitFixedSize : commitFixedSize+ml])
	if err := checkFeatures(fmt.Sprintf("commit %d", c.number), off+36, c.incompat, c.roCompat, false); err != nil {
		return nil, err
	}
	nc := g.chunks
	switch {
	case c.number < 1:
		return nil, broken(RuleCommit, off+8, "commit number %d", c.number)
	case le.Uint32(b[60:]) != 0:
		return nil, broken(RuleCommit, off+60, "reserved bytes are not zero")
	case (c.number == 1) != (c.parentOff == 0) || c.parentOff != 0 && (c.parentOff < dataStart || c.parentOff+int64(c.parentLen) > c.start) ||
		c.parentOff == 0 && (c.parentLen != 0 || c.parentDig != [32]byte{}):
		return nil, broken(RuleCommit, off+24, "commit %d: parent record at %d+%d", c.number, c.parentOff, c.parentLen)
	case c.start < dataStart || c.start > off:
		return nil, broken(RuleCommit, off+96, "commit %d: data start %d", c.number, c.start)
	case c.rootOff < c.start || c.rootLen < nodeFixedSize || c.rootLen > maxNodeSize || c.rootOff+int64(c.rootLen) > off:
		// The root is always new: every commit writes its root node.
		return nil, broken(RuleCommit, off+48, "commit %d: root node at %d+%d is not between the commit's start %d and its record", c.number, c.rootOff, c.rootLen, c.start)
	case c.metaOff < dataStart || c.metaLen < metaFixedSize || c.metaLen > maxMetadata+metaFixedSize || c.metaOff+int64(c.metaLen) > off:
		return nil, broken(RuleCommit, off+104, "commit %d: metadata record at %d+%d", c.number, c.metaOff, c.metaLen)
	case c.changed < 0 || c.changed > nc || c.stored < 0 || c.stored > nc || c.zero < 0 || c.zero > nc-c.stored ||
		c.changedB < 0 || c.changedB > hdr.DiskSize || c.storedB < 0:
		return nil, broken(RuleCommit, off+120, "commit %d: chunk counts out of range", c.number)
	case hdr.Incompat&^c.incompat != 0:
		return nil, broken(RuleCommit, off+36, "commit %d: incompatible features %s lack the header's %s", c.number, FeatureString(c.incompat), FeatureString(hdr.Incompat))
	}
	return c, nil
}

// marshalMeta encodes a metadata record.
func marshalMeta(meta []byte) ([]byte, error) {
	if len(meta) > maxMetadata {
		return nil, fmt.Errorf("imagefmt: metadata too large (%d bytes)", len(meta))
	}
	b := make([]byte, metaFixedSize+len(meta))
	copy(b[0:4], metaMagic[:])
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)))
	copy(b[8:], meta)
	binary.LittleEndian.PutUint32(b[len(b)-4:], crc(b[:len(b)-4]))
	return b, nil
}

// metaLen returns the length of the metadata record at off starting with
// b[:8].
func metaLen(b []byte, off int64) (int, error) {
	n := int(binary.LittleEndian.Uint32(b[4:]))
	if [4]byte(b[0:4]) != metaMagic {
		return 0, broken(RuleMetaRecord, off, "no metadata record (magic %q)", b[0:4])
	}
	if n < metaFixedSize || n > maxMetadata+metaFixedSize {
		return 0, broken(RuleMetaRecord, off+4, "metadata record length %d", n)
	}
	return n, nil
}

func parseMeta(b []byte, off int64) ([]byte, error) {
	n, err := metaLen(b, off)
	if err != nil {
		return nil, err
	}
	if n != len(b) {
		return nil, broken(RuleMetaRecord, off+4, "metadata record length %d where %d bytes were expected", n, len(b))
	}
	if crc(b[:n-4]) != binary.LittleEndian.Uint32(b[n-4:]) {
		return nil, broken(RuleMetaRecord, off+int64(n)-4, "metadata record checksum mismatch")
	}
	meta := b[8 : n-4]
	if len(meta) > 0 && !isJSONObject(meta) {
		return nil, broken(RuleMetaRecord, off+8, "metadata is not a JSON object")
	}
	return append([]byte(nil), meta...), nil
}

// runRecord is a v2 run record in the data area: chunks [start,
// start+count) became zero (in use, all zero) or unused.
type runRecord struct {
	start, count int64
	state        uint8 // diskZero or diskUnused
}

func putRunRecord(b []byte, r runRecord) {
	putZeroRun(b, ZeroRun{Start: r.start, Count: r.count})
	b[5] = r.state
	binary.LittleEndian.PutUint32(b[60:], crc(b[:60]))
}

// parseRunRecord checks the run record at file offset off: it lies within
// one leaf's chunks.
func parseRunRecord(b []byte, off int64, g *geometry) (runRecord, error) {
	le := binary.LittleEndian
	if crc(b[:60]) != le.Uint32(b[60:]) {
		return runRecord{}, broken(RuleRunRecord, off+60, "run record checksum mismatch")
	}
	r := runRecord{start: int64(le.Uint64(b[8:])), count: int64(le.Uint64(b[16:])), state: b[5]}
	switch {
	case b[4] != methodZeroRun:
		return r, broken(RuleRunRecord, off+4, "run record marker %#x (want 0xff)", b[4])
	case r.state != diskZero && r.state != diskUnused:
		return r, broken(RuleRunRecord, off+5, "run record state %d", r.state)
	case b[6] != 0 || b[7] != 0 || !IsZero(b[24:60]):
		return r, broken(RuleRunRecord, off+6, "run record reserved bytes are not zero")
	case r.start < 0 || r.start >= g.chunks || r.count < 1 || r.count > fanout-r.start%fanout || r.start+r.count > g.chunks:
		return r, broken(RuleRunRecord, off+8, "run %d+%d does not lie within one leaf of a disk of %d chunks", r.start, r.count, g.chunks)
	}
	return r, nil
}
