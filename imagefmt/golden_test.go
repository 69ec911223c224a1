package imagefmt

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"slices"
	"testing"
)

// The golden image is assembled here byte by byte from FORMAT.md's tables
// with encoding/binary — not with the Writer — so the readers are checked
// against the spec rather than against our own encoder. goldenSpec says
// what to assemble, golden holds the bytes and where each part went, so a
// forgery can change one field and re-seal the checksums around it.

// goldenSpec describes an image to assemble.
type goldenSpec struct {
	Version               uint32
	SectorSize, ChunkSize uint32
	DiskSize              uint64
	UUID                  [16]byte
	Created               int64
	Tool, Meta            string
	Records               []goldenRecord // the data area, in file order
	// IndexFrames and IndexRuns are what the index lists; nil: derived
	// from Records (frames in order, adjacent zero-run records merged).
	IndexFrames []goldenEntry
	IndexRuns   []ZeroRun
	BeforeIndex []byte // bytes between the last record and the index
	Trailer     []byte // bytes after the footer
}

// goldenRecord is one frame or zero-run record.
type goldenRecord struct {
	Chunk   uint64
	Zeros   uint64 // > 0: a zero-run record of this many chunks
	Method  byte   // frame: 0 raw, 1 lz4
	Data    []byte // frame: the chunk's logical bytes
	Payload []byte // frame: the stored bytes
	Before  []byte // bytes placed just before the record (a forged gap)
}

type goldenEntry struct {
	Chunk, Off uint64
	Len        uint32
}

// golden is an assembled image.
type golden struct {
	b         []byte
	hlen      int64
	recOff    []int64 // file offset of each record
	indexOff  int64
	footerOff int64
	disk      []byte   // the logical disk the spec holds
	digest    [32]byte // its digest, from FORMAT.md "Image digest"
}

var le32, le64 = binary.LittleEndian.PutUint32, binary.LittleEndian.PutUint64

func castagnoliCRC(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(0x82F63B78)) }

// goldenLZ4 is the chunk "dimg golden lz4" followed by 'A' up to n bytes,
// and its lz4 block written by hand from the LZ4 block format: 16
// literals, a match at distance 1 for all but the last 5 bytes, 5 literals.
func goldenLZ4(n int) (data, block []byte) {
	data = bytes.Repeat([]byte{'A'}, n)
	copy(data, "dimg golden lz4A")
	block = []byte{0xff, 16 - 15}       // token: 15+ literals, 15+ match; literal length 16
	block = append(block, data[:16]...) // literals
	block = append(block, 1, 0)         // match distance 1
	ml := n - 16 - 5 - 4 - 15           // match length beyond the token's 4+15
	block = append(block, bytes.Repeat([]byte{0xff}, ml/255)...)
	block = append(block, byte(ml%255))       // ends the match length
	block = append(block, 5<<4)               // last sequence: 5 literals, no match
	return data, append(block, data[n-5:]...) // the last 5 bytes
}

// goldenV1Spec is the reference image: 64 KiB chunks, a disk of 5 chunks
// and 1000 bytes (not a multiple of the sector size: allowed), holding a
// raw chunk, two adjacent zero-run records (merged in the index), an lz4
// chunk, an unused chunk and a short raw last chunk.
func goldenV1Spec() *goldenSpec {
	const cs = 64 << 10
	raw := make([]byte, cs)
	for i := range raw {
		raw[i] = byte(i * 7 % 251)
	}
	last := make([]byte, 1000)
	for i := range last {
		last[i] = byte(255 - i)
	}
	text, block := goldenLZ4(cs)
	return &goldenSpec{
		Version: 1, SectorSize: 512, ChunkSize: cs, DiskSize: 5*cs + 1000,
		UUID:    [16]byte{0x67, 0x6f, 0x6c, 0x64, 0x65, 0x6e, 0x40, 0x01, 0x80, 1, 2, 3, 4, 5, 6, 7},
		Created: 1700000000e9, Tool: "golden 1", Meta: `{"table":"none","mode":"sector","partitions":[]}`,
		Records: []goldenRecord{
			{Chunk: 0, Method: MethodRaw, Data: raw, Payload: raw},
			{Chunk: 1, Zeros: 1},
			{Chunk: 2, Zeros: 1},
			{Chunk: 3, Method: MethodLZ4, Data: text, Payload: block},
			// chunk 4: unused
			{Chunk: 5, Method: MethodRaw, Data: last, Payload: last},
		},
	}
}

// build assembles the image.
func (s *goldenSpec) build() *golden {
	g := &golden{}
	// Header (FORMAT.md "Header").
	h := make([]byte, 64, 72+len(s.Tool)+len(s.Meta))
	copy(h, "\x89DIMG\r\n\x1a")
	le32(h[8:], s.Version)
	le32(h[12:], uint32(72+len(s.Tool)+len(s.Meta)))
	copy(h[16:], s.UUID[:])
	le32(h[32:], s.SectorSize)
	le32(h[36:], s.ChunkSize)
	le64(h[40:], s.DiskSize)
	le64(h[48:], uint64(s.Created))
	le32(h[56:], 0) // flags
	le32(h[60:], uint32(len(s.Tool)))
	h = append(h, s.Tool...)
	h = binary.LittleEndian.AppendUint32(h, uint32(len(s.Meta)))
	h = append(h, s.Meta...)
	h = binary.LittleEndian.AppendUint32(h, castagnoliCRC(h))
	g.b, g.hlen = h, int64(len(h))

	// Data area: frames and zero-run records.
	var frames []goldenEntry
	var runs []ZeroRun
	var frameBytes uint64
	sums := map[uint64][32]byte{}
	g.disk = make([]byte, s.DiskSize)
	lastWasRun := false
	for _, r := range s.Records {
		g.b = append(g.b, r.Before...)
		off := int64(len(g.b))
		g.recOff = append(g.recOff, off)
		rec := make([]byte, 64)
		if r.Zeros > 0 { // FORMAT.md "Zero-run record"
			copy(rec, "DZRO")
			rec[4] = 0xff
			le64(rec[8:], r.Chunk)
			le64(rec[16:], r.Zeros)
			le32(rec[60:], castagnoliCRC(rec[:60]))
			g.b = append(g.b, rec...)
			if n := len(runs); n > 0 && lastWasRun && uint64(runs[n-1].Start+runs[n-1].Count) == r.Chunk {
				runs[n-1].Count += int64(r.Zeros)
			} else {
				runs = append(runs, ZeroRun{int64(r.Chunk), int64(r.Zeros)})
			}
			lastWasRun = true
			continue
		}
		lastWasRun = false
		sum := sha256.Sum256(r.Data) // FORMAT.md "Frame"
		copy(rec, "DCHK")
		rec[4] = r.Method
		le64(rec[8:], r.Chunk)
		le32(rec[16:], uint32(len(r.Payload)))
		le32(rec[20:], uint32(len(r.Data)))
		copy(rec[24:56], sum[:])
		le32(rec[56:], castagnoliCRC(r.Payload))
		le32(rec[60:], castagnoliCRC(rec[:60]))
		g.b = append(append(g.b, rec...), r.Payload...)
		frames = append(frames, goldenEntry{r.Chunk, uint64(off), uint32(len(r.Payload))})
		frameBytes += 64 + uint64(len(r.Payload))
		sums[r.Chunk] = sum
		copy(g.disk[r.Chunk*uint64(s.ChunkSize):], r.Data)
	}
	slices.SortFunc(frames, func(a, b goldenEntry) int { return cmp.Compare(a.Chunk, b.Chunk) })
	if s.IndexFrames != nil {
		frames = s.IndexFrames
	}
	if s.IndexRuns != nil {
		runs = s.IndexRuns
	}

	// Index (FORMAT.md "Index").
	g.b = append(g.b, s.BeforeIndex...)
	g.indexOff = int64(len(g.b))
	idx := make([]byte, 24)
	copy(idx, "DIDX")
	le64(idx[8:], uint64(len(frames)))
	le64(idx[16:], uint64(len(runs)))
	for _, f := range frames {
		e := make([]byte, 24)
		le64(e, f.Chunk)
		le64(e[8:], f.Off)
		le32(e[16:], f.Len)
		idx = append(idx, e...)
	}
	for _, z := range runs {
		idx = binary.LittleEndian.AppendUint64(idx, uint64(z.Start))
		idx = binary.LittleEndian.AppendUint64(idx, uint64(z.Count))
	}
	g.b = append(g.b, idx...)

	// Digest (FORMAT.md "Image digest"): SHA-256 over the raw 32-byte
	// sums of every chunk, zero and unused chunks as sums of zeros.
	d := sha256.New()
	nchunks := (s.DiskSize + uint64(s.ChunkSize) - 1) / uint64(s.ChunkSize)
	for c := range nchunks {
		sum, ok := sums[c]
		if !ok {
			n := min(uint64(s.ChunkSize), s.DiskSize-c*uint64(s.ChunkSize))
			sum = sha256.Sum256(make([]byte, n))
		}
		d.Write(sum[:])
	}
	d.Sum(g.digest[:0])

	// Footer (FORMAT.md "Footer").
	g.footerOff = int64(len(g.b))
	f := make([]byte, 128)
	copy(f, "DIMGFOOT")
	le32(f[8:], s.Version)
	le64(f[16:], uint64(g.indexOff))
	le64(f[24:], uint64(len(frames)))
	le32(f[32:], castagnoliCRC(idx))
	le64(f[40:], frameBytes)
	copy(f[48:], s.UUID[:])
	copy(f[64:], g.digest[:])
	le64(f[96:], uint64(len(runs)))
	le32(f[120:], castagnoliCRC(f[:120]))
	copy(f[124:], "DEND")
	g.b = append(g.b, f...)
	g.b = append(g.b, s.Trailer...)
	return g
}

// Re-sealing after a forgery changed bytes a checksum covers.
func (g *golden) sealHeader() {
	le32(g.b[g.hlen-4:], castagnoliCRC(g.b[:g.hlen-4]))
}
func (g *golden) sealRecord(i int) {
	o := g.recOff[i]
	le32(g.b[o+60:], castagnoliCRC(g.b[o:o+60]))
}
func (g *golden) sealPayload(i int) {
	o := g.recOff[i]
	n := int64(binary.LittleEndian.Uint32(g.b[o+16:]))
	le32(g.b[o+56:], castagnoliCRC(g.b[o+64:o+64+n]))
	g.sealRecord(i)
}
func (g *golden) sealFooter() {
	f := g.b[g.footerOff:]
	le32(f[120:], castagnoliCRC(f[:120]))
}
func (g *golden) sealIndex() {
	le32(g.b[g.footerOff+32:], castagnoliCRC(g.b[g.indexOff:g.footerOff]))
	g.sealFooter()
}

// A readPath is one way an image is read. It returns the disk bytes it
// produced (nil when it produces none) and the first error it met.
type readPath struct {
	name string
	read func(img []byte) ([]byte, error)
}

var readPaths = []readPath{
	{"readat", readAtPath},
	{"stream", streamPath},
	{"verify", verifyPath},
	{"restore", restorePath},
}

// readAtPath opens the image and reads the whole disk through ReadAt.
func readAtPath(img []byte) ([]byte, error) {
	r, err := NewReader(bytes.NewReader(img), int64(len(img)), ReaderOptions{})
	if err != nil {
		return nil, err
	}
	disk := make([]byte, r.Size())
	if _, err := r.ReadAt(disk, 0); err != nil && err != io.EOF {
		return nil, err
	}
	return disk, nil
}

// streamPath reads the image as `restore -` does: record by record.
func streamPath(img []byte) ([]byte, error) {
	s, err := NewStreamReader(bytes.NewReader(img))
	if err != nil {
		return nil, err
	}
	disk := make([]byte, s.Header().DiskSize)
	for {
		f, err := s.Next()
		if err == io.EOF {
			return disk, nil
		}
		if err != nil {
			return nil, err
		}
		if f.Zeros > 0 {
			continue
		}
		data, err := f.Decode(nil)
		if err != nil {
			return nil, err
		}
		copy(disk[f.Chunk*int64(s.Header().ChunkSize):], data)
	}
}

// verifyPath opens the image and verifies it.
func verifyPath(img []byte) ([]byte, error) {
	r, err := NewReader(bytes.NewReader(img), int64(len(img)), ReaderOptions{})
	if err != nil {
		return nil, err
	}
	res, err := r.Verify(context.Background(), nil)
	if err != nil {
		return nil, err
	}
	if res.Digest != r.Digest() && res.OK() {
		return nil, errors.New("verify: OK with a digest that is not the footer's")
	}
	return nil, res.Err()
}

// restorePath reads the image as a restore of a file does
// (cloneio.RestoreImage): the records, every frame, the digest.
func restorePath(img []byte) ([]byte, error) {
	r, err := NewReader(bytes.NewReader(img), int64(len(img)), ReaderOptions{})
	if err != nil {
		return nil, err
	}
	if err := r.CheckRecords(); err != nil {
		return nil, err
	}
	disk := make([]byte, r.Size())
	d := NewDigester(r.Header())
	for e := range r.Entries() {
		f, _, err := r.ReadFrame(e.Chunk, nil)
		if err != nil {
			return nil, err
		}
		data, err := f.Decode(nil)
		if err != nil {
			return nil, err
		}
		copy(disk[e.Chunk*int64(r.Header().ChunkSize):], data)
		if err := d.Add(e.Chunk, f.Sum); err != nil {
			return nil, err
		}
	}
	return disk, r.CheckDigest(d.Sum())
}

// TestCRC32CParameters pins the checksum FORMAT.md names: CRC-32C, check
// value 0xE3069283 over "123456789".
func TestCRC32CParameters(t *testing.T) {
	if got := crc([]byte("123456789")); got != 0xE3069283 {
		t.Fatalf("crc32c(123456789) = %#x", got)
	}
	if got := castagnoliCRC([]byte("123456789")); got != 0xE3069283 {
		t.Fatalf("hand-made table: %#x", got)
	}
}

// TestGoldenAccepted: every reading path accepts the hand-made image and
// gives its bytes; the reader reports its digest and chunk states.
func TestGoldenAccepted(t *testing.T) {
	g := goldenV1Spec().build()
	for _, p := range readPaths {
		disk, err := p.read(g.b)
		if err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		if disk != nil && !bytes.Equal(disk, g.disk) {
			t.Fatalf("%s: disk bytes differ", p.name)
		}
	}
	r, err := NewReader(bytes.NewReader(g.b), int64(len(g.b)), ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Digest() != g.digest {
		t.Fatalf("digest %x, want %x", r.Digest(), g.digest)
	}
	res, err := r.Verify(context.Background(), nil)
	if err != nil || !res.OK() || res.Digest != g.digest {
		t.Fatalf("verify: %v %+v", err, res)
	}
	want := []ChunkState{ChunkStored, ChunkZero, ChunkZero, ChunkStored, ChunkUnused, ChunkStored}
	for c, w := range want {
		if got := r.ChunkState(int64(c)); got != w {
			t.Errorf("chunk %d is %v, want %v", c, got, w)
		}
	}
	if zr := r.ZeroRuns(); len(zr) != 1 || zr[0] != (ZeroRun{1, 2}) {
		t.Errorf("zero runs %v, want the two records merged: [{1 2}]", zr)
	}
}

// forgery breaks one rule of the golden image.
type forgery struct {
	name  string
	rule  Rule
	err   error                 // the sentinel every path must wrap
	spec  func(s *goldenSpec)   // changes before assembling (may be nil)
	bytes func(g *golden)       // changes after (may be nil)
	off   func(g *golden) int64 // the file offset every path must name
	// skip names paths that cannot see this rule, and says why in FORMAT.md's terms.
	skip map[string]string
}

func v1Forgeries() []forgery {
	at := func(o int64) func(*golden) int64 { return func(*golden) int64 { return o } }
	size := func(g *golden) int64 { return int64(len(g.b)) }
	rec := func(i int, o int64) func(*golden) int64 { return func(g *golden) int64 { return g.recOff[i] + o } }
	tool := int64(len("golden 1"))
	return []forgery{
		{name: "magic", rule: RuleMagic, err: ErrFormat, off: at(0),
			bytes: func(g *golden) { g.b[1] = 'X' }},
		{name: "version", rule: RuleVersion, err: ErrFormat, off: at(8),
			bytes: func(g *golden) { le32(g.b[8:], 99); g.sealHeader() }},
		{name: "header length", rule: RuleHeaderLength, err: ErrCorrupt, off: at(12),
			bytes: func(g *golden) { le32(g.b[12:], 71) }},
		{name: "header crc", rule: RuleHeaderCRC, err: ErrCorrupt, off: func(g *golden) int64 { return g.hlen - 4 },
			bytes: func(g *golden) { g.b[20] ^= 1 }},
		{name: "chunk size", rule: RuleGeometry, err: ErrCorrupt, off: at(36),
			bytes: func(g *golden) { le32(g.b[36:], 100000); g.sealHeader() }},
		{name: "disk size", rule: RuleGeometry, err: ErrCorrupt, off: at(40),
			bytes: func(g *golden) { le64(g.b[40:], 0); g.sealHeader() }},
		{name: "header flags", rule: RuleReserved, err: ErrCorrupt, off: at(56),
			bytes: func(g *golden) { g.b[56] = 1; g.sealHeader() }},
		{name: "tool version utf8", rule: RuleToolVersion, err: ErrCorrupt, off: at(64),
			bytes: func(g *golden) { g.b[64] = 0xff; g.sealHeader() }},
		{name: "tool version length", rule: RuleToolVersion, err: ErrCorrupt, off: at(60),
			bytes: func(g *golden) { le32(g.b[60:], 5000); g.sealHeader() }},
		{name: "metadata not an object", rule: RuleMetadata, err: ErrCorrupt, off: at(68 + tool),
			spec: func(s *goldenSpec) { s.Meta = `[1]` }},
		{name: "metadata length", rule: RuleMetadata, err: ErrCorrupt, off: at(64 + tool),
			bytes: func(g *golden) { g.b[64+tool]--; g.sealHeader() }},
		{name: "frame header crc", rule: RuleFrameCRC, err: ErrCorrupt, off: rec(3, 60),
			bytes: func(g *golden) { g.b[g.recOff[3]+30] ^= 1 }},
		{name: "frame reserved", rule: RuleReserved, err: ErrCorrupt, off: rec(0, 5),
			bytes: func(g *golden) { g.b[g.recOff[0]+6] = 1; g.sealRecord(0) }},
		{name: "frame method", rule: RuleFrame, err: ErrCorrupt, off: rec(3, 4),
			bytes: func(g *golden) { g.b[g.recOff[3]+4] = 7; g.sealRecord(3) }},
		{name: "frame logical length", rule: RuleFrame, err: ErrCorrupt, off: rec(3, 20),
			bytes: func(g *golden) { le32(g.b[g.recOff[3]+20:], 999); g.sealRecord(3) }},
		{name: "zero-run record crc (passes a verify that skips records)", rule: RuleZeroRunCRC, err: ErrCorrupt, off: rec(2, 60),
			bytes: func(g *golden) { g.b[g.recOff[2]+10] ^= 1 }},
		{name: "zero-run record reserved", rule: RuleReserved, err: ErrCorrupt, off: rec(1, 40),
			bytes: func(g *golden) { g.b[g.recOff[1]+40] = 1; g.sealRecord(1) }},
		{name: "zero-run record of no chunks", rule: RuleZeroRun, err: ErrCorrupt, off: rec(1, 16),
			bytes: func(g *golden) { le64(g.b[g.recOff[1]+16:], 0); g.sealRecord(1) }},
		{name: "gap between records", rule: RuleLayout, err: ErrCorrupt, off: rec(3, -64),
			spec: func(s *goldenSpec) { s.Records[3].Before = make([]byte, 64) }},
		{name: "gap before the index", rule: RuleLayout, err: ErrCorrupt, off: func(g *golden) int64 { return g.indexOff - 3 },
			spec: func(s *goldenSpec) { s.BeforeIndex = []byte("xyz") }},
		{name: "frames out of order", rule: RuleOrder, err: ErrCorrupt, off: rec(4, 0),
			spec: func(s *goldenSpec) {
				s.Records[3], s.Records[4] = s.Records[4], s.Records[3]
			}},
		{name: "zero-run records overlap", rule: RuleOrder, err: ErrCorrupt, off: rec(2, 0),
			spec: func(s *goldenSpec) { s.Records[1].Zeros = 2; s.IndexRuns = []ZeroRun{{1, 2}} }},
		{name: "zero runs unmerged in the index", rule: RuleZeroRuns, err: ErrCorrupt, off: func(g *golden) int64 { return g.indexOff + 24 + 3*24 + 16 },
			spec: func(s *goldenSpec) { s.IndexRuns = []ZeroRun{{1, 1}, {2, 1}} }},
		{name: "zero runs overlap in the index", rule: RuleZeroRuns, err: ErrCorrupt, off: func(g *golden) int64 { return g.indexOff + 24 + 3*24 + 16 },
			spec: func(s *goldenSpec) { s.IndexRuns = []ZeroRun{{1, 2}, {2, 1}} }},
		{name: "zero run covers a stored chunk", rule: RuleZeroRuns, err: ErrCorrupt, off: func(g *golden) int64 { return g.indexOff + 24 + 3*24 },
			spec: func(s *goldenSpec) { s.IndexRuns = []ZeroRun{{1, 3}} }},
		{name: "zero run missing from the index", rule: RuleLayout, err: ErrCorrupt, off: rec(1, 0),
			spec: func(s *goldenSpec) { s.IndexRuns = []ZeroRun{} }},
		{name: "zero run differs from its records", rule: RuleIndexMatch, err: ErrCorrupt, off: rec(1, 0),
			spec: func(s *goldenSpec) {
				// One record of two chunks; the index has one chunk.
				s.Records = append(s.Records[:2:2], s.Records[3:]...)
				s.Records[1].Zeros = 2
				s.IndexRuns = []ZeroRun{{1, 1}}
			}},
		{name: "frame chunk differs from the index", rule: RuleIndexMatch, err: ErrCorrupt, off: rec(3, 0),
			bytes: func(g *golden) { le64(g.b[g.recOff[3]+8:], 4); g.sealRecord(3) }},
		{name: "index reserved", rule: RuleReserved, err: ErrCorrupt, off: func(g *golden) int64 { return g.indexOff + 4 },
			bytes: func(g *golden) { g.b[g.indexOff+4] = 1; g.sealIndex() }},
		{name: "index entry reserved", rule: RuleReserved, err: ErrCorrupt, off: func(g *golden) int64 { return g.indexOff + 24 + 24 + 20 },
			bytes: func(g *golden) { g.b[g.indexOff+24+24+21] = 1; g.sealIndex() }},
		{name: "index crc", rule: RuleIndexCRC, err: ErrCorrupt, off: func(g *golden) int64 { return g.indexOff },
			bytes: func(g *golden) { g.b[g.indexOff+24+20] = 1 }},
		{name: "index magic", rule: RuleLayout, err: ErrCorrupt, off: func(g *golden) int64 { return g.indexOff },
			bytes: func(g *golden) { g.b[g.indexOff+3] = 'Y'; g.sealIndex() }},
		{name: "index entries unsorted", rule: RuleIndexEntries, err: ErrCorrupt, off: func(g *golden) int64 { return g.indexOff + 24 + 2*24 },
			bytes: func(g *golden) {
				e1, e2 := g.b[g.indexOff+24+24:][:24], g.b[g.indexOff+24+48:][:24]
				t := bytes.Clone(e1)
				copy(e1, e2)
				copy(e2, t)
				g.sealIndex()
			}},
		{name: "footer crc", rule: RuleFooterCRC, err: ErrCorrupt, off: func(g *golden) int64 { return g.footerOff + 120 },
			bytes: func(g *golden) { g.b[g.footerOff+70] ^= 1 }},
		{name: "footer reserved", rule: RuleReserved, err: ErrCorrupt, off: func(g *golden) int64 { return g.footerOff + 110 },
			bytes: func(g *golden) { g.b[g.footerOff+110] = 1; g.sealFooter() }},
		{name: "footer uuid", rule: RuleFooterHeader, err: ErrCorrupt, off: func(g *golden) int64 { return g.footerOff + 48 },
			bytes: func(g *golden) { g.b[g.footerOff+50] ^= 1; g.sealFooter() }},
		{name: "footer version", rule: RuleFooterHeader, err: ErrCorrupt, off: func(g *golden) int64 { return g.footerOff + 8 },
			bytes: func(g *golden) { g.b[g.footerOff+8] = 2; g.sealFooter() }},
		{name: "index offset", rule: RuleIndexLoc, err: ErrCorrupt, off: func(g *golden) int64 { return g.footerOff + 16 },
			bytes: func(g *golden) { le64(g.b[g.footerOff+16:], uint64(g.indexOff+1)); g.sealFooter() }},
		{name: "frame count", rule: RuleIndexLoc, err: ErrCorrupt, off: func(g *golden) int64 { return g.footerOff + 24 },
			bytes: func(g *golden) { le64(g.b[g.footerOff+24:], 7); g.sealFooter() }},
		{name: "frame-byte total", rule: RuleFrameBytes, err: ErrCorrupt, off: func(g *golden) int64 { return g.footerOff + 40 },
			bytes: func(g *golden) { g.b[g.footerOff+40]++; g.sealFooter() }},
		{name: "digest", rule: RuleDigest, err: ErrCorrupt, off: func(g *golden) int64 { return g.footerOff + 64 },
			bytes: func(g *golden) { g.b[g.footerOff+64] ^= 1; g.sealFooter() },
			skip:  map[string]string{"readat": "the digest needs every frame header: checked by verify, restore and the stream reader, not by reads"}},
		{name: "payload crc", rule: RulePayloadCRC, err: ErrChecksum, off: rec(3, 64),
			bytes: func(g *golden) { g.b[g.recOff[3]+64+20] ^= 1 }},
		{name: "payload sha256", rule: RuleChunkSum, err: ErrChecksum, off: rec(0, 64),
			bytes: func(g *golden) { g.b[g.recOff[0]+64+100] ^= 1; g.sealPayload(0) }},
		{name: "payload lz4", rule: RulePayload, err: ErrChecksum, off: rec(3, 64),
			bytes: func(g *golden) { g.b[g.recOff[3]+64+18] = 0; g.sealPayload(3) }}, // match distance 0: invalid
		{name: "truncated in the header", rule: RuleEnd, err: ErrCorrupt, off: size,
			bytes: func(g *golden) { g.b = g.b[:40] }},
		{name: "truncated in a frame", rule: RuleEnd, err: ErrCorrupt, off: size,
			bytes: func(g *golden) { g.b = g.b[:g.recOff[0]+1000] }},
		{name: "truncated after a zero-run record", rule: RuleEnd, err: ErrCorrupt, off: size,
			bytes: func(g *golden) { g.b = g.b[:g.recOff[2]] }},
		{name: "truncated in the index", rule: RuleEnd, err: ErrCorrupt, off: size,
			bytes: func(g *golden) { g.b = g.b[:g.indexOff+30] }},
		{name: "truncated in the footer", rule: RuleEnd, err: ErrCorrupt, off: size,
			bytes: func(g *golden) { g.b = g.b[:len(g.b)-1] }},
		{name: "bytes after the footer", rule: RuleEnd, err: ErrCorrupt, off: size,
			spec: func(s *goldenSpec) { s.Trailer = []byte("x") }},
		{name: "more bytes after the footer than any index", rule: RuleEnd, err: ErrCorrupt, off: size,
			spec: func(s *goldenSpec) { s.Trailer = bytes.Repeat([]byte("x"), 100000) }},
		{name: "a copy of the footer after bytes after the footer", rule: RuleIndexLoc, err: ErrCorrupt,
			off: func(g *golden) int64 { return int64(len(g.b)) - 128 + 16 },
			bytes: func(g *golden) {
				footer := bytes.Clone(g.b[g.footerOff:])
				g.b = append(append(g.b, bytes.Repeat([]byte("x"), 1000)...), footer...)
			}},
	}
}

// TestGoldenForgeries: each forgery of the golden image breaks one rule,
// and every reading path rejects it with the same sentinel, the same rule
// and the same file offset.
func TestGoldenForgeries(t *testing.T) {
	for _, f := range v1Forgeries() {
		t.Run(f.name, func(t *testing.T) {
			s := goldenV1Spec()
			if f.spec != nil {
				f.spec(s)
			}
			g := s.build()
			if f.bytes != nil {
				f.bytes(g)
			}
			wantOff := f.off(g)
			for _, p := range readPaths {
				_, err := p.read(g.b)
				if why, ok := f.skip[p.name]; ok {
					if err != nil {
						t.Errorf("%s: %v (expected to accept: %s)", p.name, err, why)
					}
					continue
				}
				var re *RuleError
				switch {
				case err == nil:
					t.Errorf("%s: accepted", p.name)
				case !errors.Is(err, f.err):
					t.Errorf("%s: %v, want %v", p.name, err, f.err)
				case !errors.As(err, &re):
					t.Errorf("%s: %v is not a *RuleError", p.name, err)
				case re.Rule != f.rule || re.Offset != wantOff:
					t.Errorf("%s: rule %s at offset %d, want %s at %d (%v)", p.name, re.Rule, re.Offset, f.rule, wantOff, err)
				}
			}
		})
	}
}

// TestWriterImagesAcceptedEverywhere: what the Writer makes, every reading
// path accepts, with the same bytes.
func TestWriterImagesAcceptedEverywhere(t *testing.T) {
	for _, size := range []int{1000, 3<<20 + 12345} {
		disk := testDisk(size)
		img := writeImage(t, disk, 64<<10)
		for _, p := range readPaths {
			got, err := p.read(img)
			if err != nil {
				t.Fatalf("size %d, %s: %v", size, p.name, err)
			}
			if got != nil && !bytes.Equal(got, disk) {
				t.Fatalf("size %d, %s: bytes differ", size, p.name)
			}
		}
	}
}

// TestWriterRefusesInvalidHeaders: the Writer never starts an image the
// readers would refuse, and says so as a caller's mistake, not as a
// damaged image.
func TestWriterRefusesInvalidHeaders(t *testing.T) {
	for _, opt := range []WriterOptions{
		{DiskSize: 1 << 20, Metadata: []byte(`[1]`)},
		{DiskSize: 1 << 20, Metadata: []byte(`{"a":`)},
		{DiskSize: 1 << 20, ToolVersion: "\xff"},
		{DiskSize: 1 << 20, ChunkSize: 1000},
		{DiskSize: 0},
	} {
		_, err := NewWriter(io.Discard, opt)
		if err == nil || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrFormat) {
			t.Errorf("%+v: %v", opt, err)
		}
	}
}
