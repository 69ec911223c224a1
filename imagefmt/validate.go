package imagefmt

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"slices"
	"time"
	"unicode/utf8"
)

// This file is the one validator of version-1 images: every rule of
// FORMAT.md ("Validity") is checked here and nowhere else. The reading
// paths differ only in when they feed it:
//
//   - the random-access Reader checks the header, then the tail (footer,
//     index and the layout arithmetic between them) at open; a frame header
//     when its chunk is read; the zero-run records between two frames when a
//     chunk between them is read (or by CheckRecords, which Verify calls);
//   - the StreamReader checks the header, every record as it arrives (the
//     same record checks, in file order), then at the index the same tail
//     checks as the open, then that the records it saw are the ones the
//     index lists, and the digest.
//
// So every path accepts and rejects the same files, and a file that breaks
// one rule gets the same *RuleError (rule and file offset) from each.

var le = binary.LittleEndian

// checkStart checks the first bytes of a file, up to 16 (fewer when the
// file is shorter: then end is where it ends), and returns the header
// length H.
func checkStart(b []byte, end int64) (int, error) {
	n := min(len(b), len(headerMagic))
	if !bytes.Equal(b[:n], headerMagic[:n]) {
		return 0, notImage(RuleMagic, 0, "no dimg magic at the start of the file")
	}
	if len(b) < 16 {
		return 0, ended(end, "header")
	}
	if v := le.Uint32(b[8:]); v != Version {
		return 0, notImage(RuleVersion, 8, "format version %d (this dimg reads versions %d and %d: a newer dimg wrote it)", v, Version, Version2)
	}
	h := le.Uint32(b[12:])
	if h < minHeaderSize || h > maxHeaderSize {
		return 0, broken(RuleHeaderLength, 12, "header length %d (from %d to %d)", h, minHeaderSize, maxHeaderSize)
	}
	return int(h), nil
}

// parseHeader checks a whole header (b holds exactly the H bytes that
// checkStart announced).
func parseHeader(b []byte) (*Header, error) {
	n := len(b)
	if crc(b[:n-4]) != le.Uint32(b[n-4:]) {
		return nil, broken(RuleHeaderCRC, int64(n-4), "header checksum mismatch")
	}
	h := &Header{
		Version:    le.Uint32(b[8:]),
		SectorSize: int(le.Uint32(b[32:])),
		ChunkSize:  int(le.Uint32(b[36:])),
		DiskSize:   int64(le.Uint64(b[40:])),
		Created:    time.Unix(0, int64(le.Uint64(b[48:]))).UTC(),
	}
	copy(h.UUID[:], b[16:32])
	if err := h.checkGeometry(); err != nil {
		return nil, err
	}
	if f := le.Uint32(b[56:]); f != 0 {
		return nil, broken(RuleReserved, 56, "header flags %#x (version 1 has none)", f)
	}
	tl := int(le.Uint32(b[60:]))
	if tl > maxToolVersion || minHeaderSize+tl > n {
		return nil, broken(RuleToolVersion, 60, "tool version length %d", tl)
	}
	p := headerFixedSize + tl
	if ml := int(le.Uint32(b[p:])); minHeaderSize+tl+ml != n {
		return nil, broken(RuleMetadata, int64(p), "metadata length %d does not fill the header (H = %d)", ml, n)
	}
	h.ToolVersion = string(b[headerFixedSize:p])
	h.Metadata = append([]byte(nil), b[p+4:n-4]...)
	if err := h.checkContent(); err != nil {
		return nil, err
	}
	return h, nil
}

// check is what a header must satisfy to be written (the Writer calls it)
// or read.
func (h *Header) check() error {
	if err := h.checkGeometry(); err != nil {
		return err
	}
	if len(h.ToolVersion) > maxToolVersion {
		return broken(RuleToolVersion, 60, "tool version of %d bytes (at most %d)", len(h.ToolVersion), maxToolVersion)
	}
	if h.headerLen() > maxHeaderSize {
		return broken(RuleMetadata, int64(headerFixedSize+len(h.ToolVersion)), "metadata of %d bytes makes the header longer than %d bytes", len(h.Metadata), maxHeaderSize)
	}
	return h.checkContent()
}

func (h *Header) checkGeometry() error {
	switch {
	case h.SectorSize < 512 || h.SectorSize > maxSectorSize || h.SectorSize&(h.SectorSize-1) != 0:
		return broken(RuleGeometry, 32, "sector size %d (a power of two from 512 to %d)", h.SectorSize, maxSectorSize)
	case h.ChunkSize < MinChunkSize || h.ChunkSize > MaxChunkSize || h.ChunkSize&(h.ChunkSize-1) != 0:
		return broken(RuleGeometry, 36, "chunk size %d (a power of two from %d to %d)", h.ChunkSize, MinChunkSize, MaxChunkSize)
	case h.ChunkSize%h.SectorSize != 0:
		return broken(RuleGeometry, 36, "chunk size %d is not a multiple of the sector size %d", h.ChunkSize, h.SectorSize)
	case h.DiskSize <= 0 || h.DiskSize >= maxDiskSize:
		return broken(RuleGeometry, 40, "disk size %d (from 1 to 2^56-1)", h.DiskSize)
	case h.NumChunks() >= maxChunkNumbers:
		return broken(RuleGeometry, 40, "%d chunks (at most 2^32-1)", h.NumChunks())
	}
	return nil
}

// checkContent checks the tool version and metadata bytes.
func (h *Header) checkContent() error {
	if !utf8.ValidString(h.ToolVersion) {
		return broken(RuleToolVersion, headerFixedSize, "tool version is not UTF-8")
	}
	if len(h.Metadata) > 0 && !isJSONObject(h.Metadata) {
		return broken(RuleMetadata, int64(headerFixedSize+len(h.ToolVersion)+4), "metadata is not a JSON object")
	}
	return nil
}

func isJSONObject(b []byte) bool {
	t := bytes.TrimLeft(b, " \t\r\n")
	return len(t) > 0 && t[0] == '{' && utf8.Valid(b) && json.Valid(b)
}

// parseFrameHeader checks a frame header found at file offset off and
// returns the frame (without payload) and its stored length. maxLogical is
// the image's chunk size; checkFrameChunk adds what needs the header.
func parseFrameHeader(b []byte, off int64, maxLogical int) (Frame, int, error) {
	var f Frame
	if [4]byte(b[0:4]) != frameMagic {
		return f, 0, broken(RuleLayout, off, "no frame where one must start (magic %q)", b[0:4])
	}
	if crc(b[:60]) != le.Uint32(b[60:]) {
		return f, 0, broken(RuleFrameCRC, off+60, "frame header checksum mismatch")
	}
	if b[5]|b[6]|b[7] != 0 {
		return f, 0, broken(RuleReserved, off+5, "frame header reserved bytes %x", b[5:8])
	}
	f.Offset = off
	f.Method = b[4]
	f.Chunk = int64(le.Uint64(b[8:]))
	slen := int64(le.Uint32(b[16:]))
	f.LogicalLen = int(le.Uint32(b[20:]))
	copy(f.Sum[:], b[24:56])
	f.PayloadCRC = le.Uint32(b[56:])
	switch {
	case f.Method != MethodRaw && f.Method != MethodLZ4 && f.Method != MethodZstd:
		return f, 0, broken(RuleFrame, off+4, "unknown compression method %d", f.Method)
	case f.LogicalLen <= 0 || f.LogicalLen > maxLogical:
		return f, 0, broken(RuleFrame, off+20, "logical length %d (chunk size %d)", f.LogicalLen, maxLogical)
	case f.Method == MethodRaw && slen != int64(f.LogicalLen):
		return f, 0, broken(RuleFrame, off+16, "raw frame stores %d bytes of a %d-byte chunk", slen, f.LogicalLen)
	case slen <= 0 || slen > int64(maxFrameSize(f.LogicalLen)):
		return f, 0, broken(RuleFrame, off+16, "stored length %d for %d logical bytes", slen, f.LogicalLen)
	}
	return f, int(slen), nil
}

// checkFrameChunk checks a frame's chunk number and length against the
// image's geometry.
func checkFrameChunk(f *Frame, hdr *Header) error {
	if f.Method == MethodZstd && hdr.Version < Version2 {
		return broken(RuleFrame, f.Offset+4, "compression method 2 (zstd) in a version 1 image")
	}
	if f.Chunk < 0 || f.Chunk >= hdr.NumChunks() {
		return broken(RuleFrame, f.Offset+8, "chunk %d of a disk of %d chunks", f.Chunk, hdr.NumChunks())
	}
	if f.LogicalLen != hdr.ChunkLen(f.Chunk) {
		return broken(RuleFrame, f.Offset+20, "logical length %d, chunk %d has %d bytes", f.LogicalLen, f.Chunk, hdr.ChunkLen(f.Chunk))
	}
	return nil
}

// parseZeroRecord checks a zero-run record found at file offset off.
func parseZeroRecord(b []byte, off int64, hdr *Header) (ZeroRun, error) {
	if crc(b[:60]) != le.Uint32(b[60:]) {
		return ZeroRun{}, broken(RuleZeroRunCRC, off+60, "zero-run record checksum mismatch")
	}
	if b[4] != methodZeroRun {
		return ZeroRun{}, broken(RuleZeroRun, off+4, "zero-run record marker %#x (want 0xff)", b[4])
	}
	if b[5]|b[6]|b[7] != 0 {
		return ZeroRun{}, broken(RuleReserved, off+5, "zero-run record reserved bytes %x", b[5:8])
	}
	if i := slices.IndexFunc(b[24:60], func(c byte) bool { return c != 0 }); i >= 0 {
		return ZeroRun{}, broken(RuleReserved, off+24+int64(i), "zero-run record reserved bytes are not zero")
	}
	start, count := le.Uint64(b[8:]), le.Uint64(b[16:])
	n := uint64(hdr.NumChunks())
	if start >= n {
		return ZeroRun{}, broken(RuleZeroRun, off+8, "zero run starts at chunk %d of a disk of %d chunks", start, n)
	}
	if count == 0 || count > n-start {
		return ZeroRun{}, broken(RuleZeroRun, off+16, "zero run of %d chunks from chunk %d (disk of %d chunks)", count, start, n)
	}
	return ZeroRun{Start: int64(start), Count: int64(count)}, nil
}

// seenRun is a zero run found in the data area: adjacent records merged,
// with the file offset of its first record.
type seenRun struct {
	ZeroRun
	off int64
}

// records follows the data area in file order: where the next record must
// start and the lowest chunk it may cover. The stream reader runs one over
// the whole data area, the random-access reader one per gap between frames.
type records struct {
	off     int64     // where the next record starts
	next    int64     // lowest chunk number the next record may cover
	runs    []seenRun // zero runs seen, adjacent records merged
	lastRun bool      // the previous record was a zero-run record
}

func (s *records) zeroRun(z ZeroRun) error {
	if z.Start < s.next {
		return broken(RuleOrder, s.off, "zero run %d+%d after a record that covered chunk %d", z.Start, z.Count, s.next-1)
	}
	if n := len(s.runs); n > 0 && s.lastRun && s.runs[n-1].Start+s.runs[n-1].Count == z.Start {
		s.runs[n-1].Count += z.Count
	} else {
		s.runs = append(s.runs, seenRun{z, s.off})
	}
	s.next = z.Start + z.Count
	s.off += FrameHeaderSize
	s.lastRun = true
	return nil
}

func (s *records) frame(f *Frame, slen int) error {
	if f.Chunk < s.next {
		return broken(RuleOrder, s.off, "frame of chunk %d after a record that covered chunk %d", f.Chunk, s.next-1)
	}
	s.next = f.Chunk + 1
	s.off += FrameHeaderSize + int64(slen)
	s.lastRun = false
	return nil
}

// tail is what the end of an image holds: the footer and the index.
type tail struct {
	ft        *footer
	footerOff int64
	entries   []indexEntry // sorted by chunk
	runs      []ZeroRun    // sorted, merged
}

// checkTail reads and checks the end of an image of size bytes whose
// header (hlen bytes) is hdr: the footer in the last FooterSize bytes, the
// index it points at, and the layout arithmetic between index and data
// area. read reads file bytes. at is where a stream reader found the index
// magic (it read the bytes from there to the end), or -1. walk, if not nil,
// is called on a gap the arithmetic rejects (see checkLayout).
func checkTail(hdr *Header, hlen, size int64, read func(p []byte, off int64) error, at int64, walk gapWalker) (*tail, error) {
	if size < max(hlen, at)+indexHeaderSize+FooterSize {
		return nil, ended(size, "data area: no room for an index and footer")
	}
	F := size - FooterSize
	b := make([]byte, FooterSize)
	if err := read(b, F); err != nil {
		return nil, err
	}
	ft, err := parseFooter(b, F, hdr)
	if err != nil {
		return nil, err
	}
	n := hdr.NumChunks()
	if ft.count < 0 || ft.zeroRuns < 0 || ft.count > n || ft.zeroRuns > n-ft.count {
		return nil, broken(RuleIndexLoc, F+24, "%d frames and %d zero runs on a disk of %d chunks", ft.count, ft.zeroRuns, n)
	}
	ilen := indexLen(ft.count, ft.zeroRuns)
	if ft.indexOff < hlen || ft.indexOff != F-ilen {
		return nil, broken(RuleIndexLoc, F+16, "index at offset %d, %d bytes long, does not end where the footer starts (%d)", ft.indexOff, ilen, F)
	}
	if at >= 0 && ft.indexOff != at {
		return nil, broken(RuleLayout, min(at, ft.indexOff), "the data area ends at offset %d, the footer puts the index at %d", at, ft.indexOff)
	}
	idx := make([]byte, ilen)
	if err := read(idx, ft.indexOff); err != nil {
		return nil, err
	}
	t := &tail{ft: ft, footerOff: F}
	if t.entries, t.runs, err = parseIndex(idx, ft, hdr); err != nil {
		return nil, err
	}
	if err := checkLayout(hdr, hlen, ft.indexOff, t.entries, t.runs, walk); err != nil {
		return nil, err
	}
	var total int64
	for _, e := range t.entries {
		total += FrameHeaderSize + int64(e.slen)
	}
	if total != ft.storedData {
		return nil, broken(RuleFrameBytes, F+40, "footer counts %d frame bytes, the index %d", ft.storedData, total)
	}
	return t, nil
}

// parseFooter checks the footer at file offset F.
func parseFooter(b []byte, F int64, hdr *Header) (*footer, error) {
	if [8]byte(b[0:8]) != footerMagic || [4]byte(b[124:128]) != footerEnd {
		return nil, broken(RuleEnd, F+FooterSize, "no footer in the last %d bytes of the file: the image is incomplete (an interrupted capture or copy), truncated, or has bytes appended", FooterSize)
	}
	if crc(b[:120]) != le.Uint32(b[120:]) {
		return nil, broken(RuleFooterCRC, F+120, "footer checksum mismatch")
	}
	if v := le.Uint32(b[8:]); v != hdr.Version {
		return nil, broken(RuleFooterHeader, F+8, "footer version %d, header version %d", v, hdr.Version)
	}
	for _, r := range [][2]int{{12, 16}, {36, 40}, {104, 120}} {
		if i := slices.IndexFunc(b[r[0]:r[1]], func(c byte) bool { return c != 0 }); i >= 0 {
			return nil, broken(RuleReserved, F+int64(r[0]+i), "footer reserved bytes are not zero")
		}
	}
	f := &footer{
		indexOff:   int64(le.Uint64(b[16:])),
		count:      int64(le.Uint64(b[24:])),
		indexCRC:   le.Uint32(b[32:]),
		storedData: int64(le.Uint64(b[40:])),
		zeroRuns:   int64(le.Uint64(b[96:])),
	}
	copy(f.uuid[:], b[48:64])
	copy(f.digest[:], b[64:96])
	if f.uuid != hdr.UUID {
		return nil, broken(RuleFooterHeader, F+48, "footer belongs to image %s, header to %s", formatUUID(f.uuid), hdr.UUIDString())
	}
	return f, nil
}

// parseIndex checks the index (idx, at the footer's index offset) and
// returns its frame entries and zero runs.
func parseIndex(idx []byte, ft *footer, hdr *Header) ([]indexEntry, []ZeroRun, error) {
	at := ft.indexOff
	if [4]byte(idx[0:4]) != indexMagic {
		return nil, nil, broken(RuleLayout, at, "no index where the footer puts it (magic %q)", idx[0:4])
	}
	if crc(idx) != ft.indexCRC {
		return nil, nil, broken(RuleIndexCRC, at, "index checksum mismatch")
	}
	if r := le.Uint32(idx[4:]); r != 0 {
		return nil, nil, broken(RuleReserved, at+4, "index reserved field %#x", r)
	}
	if c := int64(le.Uint64(idx[8:])); c != ft.count {
		return nil, nil, broken(RuleIndexHeader, at+8, "index lists %d frames, footer %d", c, ft.count)
	}
	if z := int64(le.Uint64(idx[16:])); z != ft.zeroRuns {
		return nil, nil, broken(RuleIndexHeader, at+16, "index lists %d zero runs, footer %d", z, ft.zeroRuns)
	}
	n := hdr.NumChunks()
	entries := make([]indexEntry, ft.count)
	prev := int64(-1)
	for i := range entries {
		p := idx[indexHeaderSize+i*indexEntrySize:]
		off := at + indexHeaderSize + int64(i)*indexEntrySize
		c, foff, slen := int64(le.Uint64(p[0:])), int64(le.Uint64(p[8:])), int64(le.Uint32(p[16:]))
		if r := le.Uint32(p[20:]); r != 0 {
			return nil, nil, broken(RuleReserved, off+20, "index entry %d reserved field %#x", i, r)
		}
		if c <= prev || c >= n {
			return nil, nil, broken(RuleIndexEntries, off, "index entry %d is for chunk %d (after chunk %d, disk of %d chunks)", i, c, prev, n)
		}
		if slen <= 0 || slen > int64(maxFrameSize(hdr.ChunkLen(c))) {
			return nil, nil, broken(RuleIndexEntries, off+16, "index entry %d (chunk %d) stored length %d", i, c, slen)
		}
		if foff < 0 || foff > ft.indexOff {
			// Beyond any frame position; checkLayout then needs no overflow care.
			return nil, nil, broken(RuleLayout, off+8, "index entry %d (chunk %d) puts its frame at offset %d, outside the data area", i, c, foff)
		}
		entries[i] = indexEntry{off: foff, chunk: uint32(c), slen: uint32(slen)}
		prev = c
	}
	runs := make([]ZeroRun, ft.zeroRuns)
	zbase := indexHeaderSize + indexEntrySize*int(ft.count)
	prevEnd, ei := int64(-1), 0
	for i := range runs {
		p := idx[zbase+i*zeroRunSize:]
		off := at + int64(zbase+i*zeroRunSize)
		s, c := le.Uint64(p), le.Uint64(p[8:])
		switch {
		case s >= uint64(n) || c == 0 || c > uint64(n)-s:
			return nil, nil, broken(RuleZeroRuns, off, "zero run %d (%d+%d) on a disk of %d chunks", i, s, c, n)
		case int64(s) <= prevEnd:
			// Equal: adjacent runs, which the index lists merged.
			return nil, nil, broken(RuleZeroRuns, off, "zero run %d (%d+%d) does not start after the previous one (ending at chunk %d) with a gap", i, s, c, prevEnd)
		}
		z := ZeroRun{Start: int64(s), Count: int64(c)}
		for ei < len(entries) && int64(entries[ei].chunk) < z.Start {
			ei++
		}
		if ei < len(entries) && int64(entries[ei].chunk) < z.Start+z.Count {
			return nil, nil, broken(RuleZeroRuns, off, "zero run %d (%d+%d) covers stored chunk %d", i, s, c, entries[ei].chunk)
		}
		runs[i] = z
		prevEnd = z.Start + z.Count
	}
	return entries, runs, nil
}

// checkLayout checks what the index says about the data area [hlen,
// indexOff) without reading it: frames lie in chunk order without
// overlapping, and the bytes between two frames (and before the first,
// and after the last) can be exactly the zero-run records of the index's
// zero runs there: a multiple of 64 bytes, at least one record per run,
// at most one per chunk.
//
// When a gap fails that arithmetic, walk (the random-access reader's; a
// stream reader has walked every gap already) reads it as a stream reader
// would, so that a damaged or foreign record there is named as the stream
// reader names it rather than as a miscount.
func checkLayout(hdr *Header, hlen, indexOff int64, entries []indexEntry, runs []ZeroRun, walk gapWalker) error {
	prevEnd, ri := hlen, 0
	for i := 0; i <= len(entries); i++ {
		off, chunk := indexOff, hdr.NumChunks()
		if i < len(entries) {
			off, chunk = entries[i].off, int64(entries[i].chunk)
		}
		var nruns, nchunks int64
		for ; ri < len(runs) && runs[ri].Start < chunk; ri++ {
			nruns++
			nchunks += runs[ri].Count
		}
		if off < prevEnd {
			if i > 0 && i < len(entries) && off <= entries[i-1].off {
				return orderError(entries)
			}
			return broken(RuleLayout, prevEnd, "the index puts a record at offset %d, inside the one before", off)
		}
		gap := off - prevEnd
		if k := gap / FrameHeaderSize; gap%FrameHeaderSize != 0 || k < nruns || k > nchunks {
			prevChunk := int64(-1)
			if i > 0 {
				prevChunk = int64(entries[i-1].chunk)
			}
			if walk != nil {
				if err := walk(prevEnd, off, indexOff, prevChunk); err != nil {
					return err
				}
			}
			return broken(RuleLayout, prevEnd, "%d bytes before the next record cannot be the zero-run records of the %d zero runs (%d chunks) the index lists there", gap, nruns, nchunks)
		}
		if i < len(entries) {
			prevEnd = entries[i].end()
		}
	}
	return nil
}

// gapWalker reads the records from start, after the frame of chunk
// prevChunk (-1: none), until it passes end (without going past the index
// at indexOff), and returns the first rule they break.
type gapWalker func(start, end, indexOff, prevChunk int64) error

// orderError names the first frame, in file order, whose chunk does not
// follow the previous frame's: where a stream reader finds it.
func orderError(entries []indexEntry) error {
	s := slices.Clone(entries)
	slices.SortFunc(s, func(a, b indexEntry) int { return cmp.Compare(a.off, b.off) })
	for i := 1; i < len(s); i++ {
		if s[i].chunk <= s[i-1].chunk {
			return broken(RuleOrder, s[i].off, "frame of chunk %d after the frame of chunk %d", s[i].chunk, s[i-1].chunk)
		}
	}
	return broken(RuleOrder, s[0].off, "frames overlap")
}

// matchGap compares the zero runs found between two frames with the ones
// the index lists there. end is where the gap ends (the next frame or the
// index): where a missing record was due.
func matchGap(seen []seenRun, want []ZeroRun, end int64) error {
	for i := range max(len(seen), len(want)) {
		switch {
		case i >= len(seen):
			return broken(RuleIndexMatch, end, "the index lists zero run %d+%d, no record here holds it", want[i].Start, want[i].Count)
		case i >= len(want):
			return broken(RuleIndexMatch, seen[i].off, "zero run %d+%d is not in the index", seen[i].Start, seen[i].Count)
		case seen[i].ZeroRun != want[i]:
			return broken(RuleIndexMatch, seen[i].off, "records give zero run %d+%d, the index %d+%d", seen[i].Start, seen[i].Count, want[i].Start, want[i].Count)
		}
	}
	return nil
}

// matchFrame compares a frame found at f.Offset with its index entry.
func matchFrame(f *Frame, slen int, e indexEntry) error {
	if f.Offset != e.off || f.Chunk != int64(e.chunk) || slen != int(e.slen) {
		return broken(RuleIndexMatch, f.Offset, "frame of chunk %d (%d bytes stored), the index lists chunk %d at offset %d (%d bytes)", f.Chunk, slen, e.chunk, e.off, e.slen)
	}
	return nil
}

// runsBetween returns the zero runs of runs (sorted) lying between chunks
// a and b, exclusive.
func runsBetween(runs []ZeroRun, a, b int64) []ZeroRun {
	byStart := func(z ZeroRun, c int64) int { return cmp.Compare(z.Start, c) }
	i, _ := slices.BinarySearchFunc(runs, a+1, byStart)
	j, _ := slices.BinarySearchFunc(runs, b, byStart)
	return runs[i:max(i, j)]
}

// seenFrame is a frame a stream reader passed: where, which chunk, and how
// many zero runs it had seen before it (to compare gap by gap).
type seenFrame struct {
	indexEntry
	runsBefore int
}

// matchRecords checks that the records a stream reader found in the data
// area (frames, and zero runs with adjacent records merged) are the ones
// the index lists, gap by gap in file order, as the random-access reader
// checks them when it reads. at is where the data area ended.
func matchRecords(frames []seenFrame, runs []seenRun, at int64, t *tail) error {
	si, ri := 0, 0
	for i := 0; ; i++ {
		seenEnd, end := len(runs), at
		if i < len(frames) {
			seenEnd, end = frames[i].runsBefore, frames[i].off
		}
		wantEnd := len(t.runs)
		if i < len(t.entries) {
			c := int64(t.entries[i].chunk)
			wantEnd = ri + len(runsBetween(t.runs[ri:], -1, c))
		}
		if err := matchGap(runs[si:seenEnd], t.runs[ri:wantEnd], end); err != nil {
			return err
		}
		si, ri = seenEnd, wantEnd
		switch {
		case i >= len(frames) && i >= len(t.entries):
			return nil
		case i >= len(t.entries):
			return broken(RuleIndexMatch, frames[i].off, "frame of chunk %d is not in the index", frames[i].chunk)
		case i >= len(frames):
			e := t.entries[i]
			return broken(RuleIndexMatch, at, "the index lists a frame of chunk %d at offset %d, the data area has none", e.chunk, e.off)
		}
		f := Frame{Chunk: int64(frames[i].chunk), Offset: frames[i].off}
		if err := matchFrame(&f, int(frames[i].slen), t.entries[i]); err != nil {
			return err
		}
	}
}

// ParseFrame parses a whole frame (header + payload) from raw, checking the
// header and that the payload is complete; Decode checks the payload.
// maxLogical bounds the logical length (the image's chunk size). Offsets in
// its errors count from the start of raw.
func ParseFrame(raw []byte, maxLogical int) (Frame, error) {
	if len(raw) < FrameHeaderSize {
		return Frame{}, ended(int64(len(raw)), "frame header")
	}
	f, slen, err := parseFrameHeader(raw, 0, maxLogical)
	if err != nil {
		return f, err
	}
	if len(raw) < FrameHeaderSize+slen {
		return f, ended(int64(len(raw)), "frame payload")
	}
	f.Raw = raw[:FrameHeaderSize+slen]
	f.Payload = f.Raw[FrameHeaderSize:]
	return f, nil
}
