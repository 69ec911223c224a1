package imagefmt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand"
	"strings"
	"testing"
	"time"
)

// The golden tests build version 2 records byte by byte from FORMAT.md's
// tables (offsets written out here, not taken from the code) and compare
// them with what the writer produces; then the readers read the hand-made
// bytes.

func gcrc(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }

type gbuf struct{ b []byte }

func (g *gbuf) at(off int, v any) {
	var p []byte
	switch x := v.(type) {
	case uint8:
		p = []byte{x}
	case uint16:
		p = binary.LittleEndian.AppendUint16(nil, x)
	case uint32:
		p = binary.LittleEndian.AppendUint32(nil, x)
	case uint64:
		p = binary.LittleEndian.AppendUint64(nil, x)
	case string:
		p = []byte(x)
	case []byte:
		p = x
	default:
		panic(fmt.Sprintf("gbuf: %T", v))
	}
	copy(g.b[off:], p)
}

// goldenV2 is the version 2 golden image: a stream-written image of a
// disk of three 64 KiB chunks less 100 bytes (chunk 0 stored raw, chunk 1
// zero, chunk 2 unused and short), assembled from FORMAT.md's tables, with
// where each part went.
type goldenV2 struct {
	b                                      []byte
	frameOff, runOff, rootOff, recOff, end int
	created                                time.Time
	uuid                                   [16]byte
	chunk0                                 []byte
	digest, z1, z2                         [32]byte
}

const goldenV2Meta = `{"table":"none"}`

func buildGoldenV2() *goldenV2 {
	const cs = 64 << 10
	const diskSize = 3*cs - 100 // chunks: 0 stored (raw), 1 zero, 2 unused (short)
	created := time.Unix(1700000000, 123)
	uuid := [16]byte{0xaa, 0xbb, 0xcc, 0xdd, 4: 1, 6: 0x40, 8: 0x80, 15: 9}
	meta := goldenV2Meta
	chunk0 := make([]byte, cs)
	rand.New(rand.NewSource(5)).Read(chunk0) // incompressible: a raw frame

	// Header block: FORMAT.md "Header block".
	hb := gbuf{make([]byte, 4096)}
	hb.at(0, []byte{0x89, 'D', 'I', 'M', 'G', '\r', '\n', 0x1a})
	hb.at(8, uint32(2))
	hb.at(12, uint32(12288))
	hb.at(16, uuid[:])
	hb.at(32, uint32(512))
	hb.at(36, uint32(cs))
	hb.at(40, uint64(diskSize))
	hb.at(48, uint64(created.UnixNano()))
	hb.at(68, uint32(4))
	hb.at(136, "gold")
	hb.at(4092, gcrc(hb.b[:4092]))
	file := append(hb.b, make([]byte, 8192)...) // two empty slots

	// Metadata record at 12288.
	mr := gbuf{make([]byte, 12+len(meta))}
	mr.at(0, "DMET")
	mr.at(4, uint32(12+len(meta)))
	mr.at(8, meta)
	mr.at(8+len(meta), gcrc(mr.b[:8+len(meta)]))
	file = append(file, mr.b...)

	// Frame of chunk 0 (version 1's layout, method 0 raw).
	frameOff := len(file)
	sum0 := sha256.Sum256(chunk0)
	fr := gbuf{make([]byte, 64)}
	fr.at(0, "DCHK")
	fr.at(8, uint64(0))
	fr.at(16, uint32(cs))
	fr.at(20, uint32(cs))
	fr.at(24, sum0[:])
	fr.at(56, gcrc(chunk0))
	fr.at(60, gcrc(fr.b[:60]))
	file = append(append(file, fr.b...), chunk0...)

	// Run record: chunk 1 zero.
	runOff := len(file)
	rr := gbuf{make([]byte, 64)}
	rr.at(0, "DZRO")
	rr.at(4, uint8(0xff))
	rr.at(5, uint8(2))
	rr.at(8, uint64(1))
	rr.at(16, uint64(1))
	rr.at(60, gcrc(rr.b[:60]))
	file = append(file, rr.b...)

	// The root, a leaf (3 chunks: height 1): one stored, one run entry.
	rootOff := len(file)
	nd := gbuf{make([]byte, 28+48+8)}
	nd.at(0, "DNOD")
	nd.at(4, uint8(0))
	nd.at(6, uint16(1))
	nd.at(8, uint16(1))
	nd.at(12, uint32(84))
	nd.at(16, uint64(0))
	nd.at(24, uint16(0))        // slot
	nd.at(26, uint8(0))         // method raw
	nd.at(28, uint32(cs))       // S
	nd.at(32, uint64(frameOff)) // frame offset
	nd.at(40, sum0[:])          // SHA-256
	nd.at(72, uint16(1))        // run: first slot
	nd.at(74, uint16(1))        // count
	nd.at(76, uint8(2))         // zero
	nd.at(80, gcrc(nd.b[:80]))
	file = append(file, nd.b...)

	// The digest: SHA-256 over the three chunks' sums (one leaf).
	z1, z2 := sha256.Sum256(make([]byte, cs)), sha256.Sum256(make([]byte, cs-100))
	digest := sha256.Sum256(append(append(sum0[:], z1[:]...), z2[:]...))

	// Commit record 1, no message: 212 bytes.
	recOff := len(file)
	cr := gbuf{make([]byte, 212)}
	cr.at(0, "DCMT")
	cr.at(4, uint32(212))
	cr.at(8, uint64(1))
	cr.at(16, uint64(created.UnixNano()))
	cr.at(48, uint64(rootOff))
	cr.at(56, uint32(84))
	cr.at(64, digest[:])
	cr.at(96, uint64(12288))
	cr.at(104, uint64(12288))
	cr.at(112, uint32(12+len(meta)))
	cr.at(120, uint64(2))     // chunks changed: stored + zero
	cr.at(128, uint64(2*cs))  // their bytes
	cr.at(136, uint64(1))     // stored
	cr.at(144, uint64(64+cs)) // frame bytes
	cr.at(152, uint64(1))     // zero
	cr.at(208, gcrc(cr.b[:208]))
	file = append(file, cr.b...)

	// Footer.
	end := len(file)
	ft := gbuf{make([]byte, 128)}
	ft.at(0, "DIMGFOOT")
	ft.at(8, uint32(2))
	ft.at(16, uuid[:])
	ft.at(32, uint64(1))
	ft.at(40, uint64(recOff))
	ft.at(48, uint32(212))
	ft.at(56, digest[:])
	ft.at(88, uint64(end))
	ft.at(120, gcrc(ft.b[:120]))
	ft.at(124, "DEND")
	file = append(file, ft.b...)
	return &goldenV2{b: file, frameOff: frameOff, runOff: runOff, rootOff: rootOff, recOff: recOff, end: end,
		created: created, uuid: uuid, chunk0: chunk0, digest: digest, z1: z1, z2: z2}
}

// Re-sealing after a forgery.
func (g *goldenV2) sealHeader() { le32(g.b[4092:], gcrc(g.b[:4092])) }
func (g *goldenV2) sealRun()    { le32(g.b[g.runOff+60:], gcrc(g.b[g.runOff:g.runOff+60])) }
func (g *goldenV2) sealRoot()   { le32(g.b[g.rootOff+80:], gcrc(g.b[g.rootOff:g.rootOff+80])) }
func (g *goldenV2) sealCommit() { le32(g.b[g.recOff+208:], gcrc(g.b[g.recOff:g.recOff+208])) }
func (g *goldenV2) sealFooter() { le32(g.b[g.end+120:], gcrc(g.b[g.end:g.end+120])) }

func TestV2Golden(t *testing.T) {
	const cs = 64 << 10
	const diskSize = 3*cs - 100
	gd := buildGoldenV2()
	file, frameOff, rootOff, recOff, end := gd.b, gd.frameOff, gd.rootOff, gd.recOff, gd.end
	created, uuid, chunk0, digest, z1, z2 := gd.created, gd.uuid, gd.chunk0, gd.digest, gd.z1, gd.z2
	meta := goldenV2Meta
	_, _ = frameOff, rootOff
	ft := gbuf{file[end : end+128]}
	// The writer writes exactly these bytes.
	var buf bytes.Buffer
	w, err := NewWriter(&buf, WriterOptions{DiskSize: diskSize, ChunkSize: cs, UUID: uuid, Created: created, ToolVersion: "gold", Metadata: []byte(meta)})
	if err != nil {
		t.Fatal(err)
	}
	var enc Encoder
	f, _ := enc.Encode(make([]byte, FrameBufSize(cs)), 0, chunk0)
	if f.Method != MethodRaw {
		t.Fatal("chunk 0 compressed")
	}
	if err := w.WriteFrame(f); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteZeroRun(1, 1); err != nil {
		t.Fatal(err)
	}
	d, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if d != digest {
		t.Fatalf("writer digest %x, spec %x", d, digest)
	}
	if got := buf.Bytes(); !bytes.Equal(got, file) {
		for i := range min(len(got), len(file)) {
			if got[i] != file[i] {
				t.Fatalf("writer output differs from the spec first at byte %d (of %d, spec %d)", i, len(got), len(file))
			}
		}
		t.Fatalf("writer output is %d bytes, the spec's %d", len(got), len(file))
	}

	// The readers read the hand-made bytes.
	r := openMem(t, file, ReaderOptions{})
	want := append(append(chunk0, make([]byte, cs)...), make([]byte, cs-100)...)
	got := make([]byte, diskSize)
	if _, err := r.ReadAt(got, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) || r.ChunkState(1) != ChunkZero || r.ChunkState(2) != ChunkUnused || r.Digest() != digest {
		t.Fatal("reader of the golden image")
	}
	verifyOK(t, r, true)
	out, _, err := streamRead(file, diskSize)
	if err != nil || !bytes.Equal(out, want) {
		t.Fatalf("stream reader of the golden image: %v", err)
	}

	// A commit in place: slot A gets commit 1 first, then slot B commit 2.
	mf := &memFile{b: bytes.Clone(file)}
	ed, err := newEditor(mf, int64(len(file)), EditorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	session := [16]byte{7, 7, 7}
	ci, err := ed.Commit(context.Background(), func(yield func(ChunkChange, error) bool) {
		yield(ChunkChange{Chunk: 0, State: ChunkUnused}, nil)
	}, CommitOptions{Message: "drop", Time: created.Add(time.Second), Session: session})
	if err != nil {
		t.Fatal(err)
	}
	img := mf.bytes()
	slotA := gbuf{make([]byte, 128)}
	slotA.at(0, "DIMGSLOT")
	copy(slotA.b[8:], ft.b[8:120]) // the footer's fields
	slotA.at(120, gcrc(slotA.b[:120]))
	slotA.at(124, "DEND")
	if !bytes.Equal(img[4096:4096+128], slotA.b) || !IsZero(img[4096+128:8192]) {
		t.Fatal("slot A is not commit 1's footer fields")
	}
	// Commit 2 starts where commit 1 ended (over the footer): a run record
	// (chunk 0 unused), the new root (only chunk 1's zero run left), the
	// commit record; the file ends there.
	p := end
	ur := gbuf{make([]byte, 64)}
	ur.at(0, "DZRO")
	ur.at(4, uint8(0xff))
	ur.at(5, uint8(3))
	ur.at(8, uint64(0))
	ur.at(16, uint64(1))
	ur.at(60, gcrc(ur.b[:60]))
	if !bytes.Equal(img[p:p+64], ur.b) {
		t.Fatal("commit 2's run record")
	}
	p += 64
	root2 := gbuf{make([]byte, 36)}
	root2.at(0, "DNOD")
	root2.at(8, uint16(1))
	root2.at(12, uint32(36))
	root2.at(24, uint16(1))
	root2.at(26, uint16(1))
	root2.at(28, uint8(2))
	root2.at(32, gcrc(root2.b[:32]))
	if !bytes.Equal(img[p:p+36], root2.b) {
		t.Fatal("commit 2's root")
	}
	digest2 := sha256.Sum256(append(append(z1[:], z1[:]...), z2[:]...))
	c2 := gbuf{make([]byte, 216)}
	c2.at(0, "DCMT")
	c2.at(4, uint32(216))
	c2.at(8, uint64(2))
	c2.at(16, uint64(created.Add(time.Second).UnixNano()))
	c2.at(24, uint64(recOff))
	c2.at(32, uint32(212))
	c2.at(48, uint64(p))
	c2.at(56, uint32(36))
	c2.at(64, digest2[:])
	c2.at(96, uint64(end))
	c2.at(104, uint64(12288))
	c2.at(112, uint32(12+len(meta)))
	c2.at(116, uint32(4))
	c2.at(120, uint64(1))
	c2.at(128, uint64(cs))
	c2.at(152, uint64(1))
	c2.at(160, digest[:])
	c2.at(192, session[:])
	c2.at(208, "drop")
	c2.at(212, gcrc(c2.b[:212]))
	p += 36
	if !bytes.Equal(img[p:p+216], c2.b) || len(img) != p+216 {
		t.Fatal("commit 2's record, or the file does not end with it")
	}
	slotB := gbuf{make([]byte, 128)}
	slotB.at(0, "DIMGSLOT")
	slotB.at(8, uint32(2))
	slotB.at(16, uuid[:])
	slotB.at(32, uint64(2))
	slotB.at(40, uint64(p))
	slotB.at(48, uint32(216))
	slotB.at(56, digest2[:])
	slotB.at(88, uint64(p+216))
	slotB.at(120, gcrc(slotB.b[:120]))
	slotB.at(124, "DEND")
	if !bytes.Equal(img[8192:8192+128], slotB.b) {
		t.Fatal("slot B")
	}
	if ci.Digest != digest2 || ci.Session != session {
		t.Fatalf("commit info %+v", ci)
	}
}

// TestV2GoldenNode builds an internal node by hand.
func TestV2GoldenNode(t *testing.T) {
	h1, h2 := sha256.Sum256([]byte("a")), sha256.Sum256([]byte("b"))
	n := &node{level: 2, index: 3, children: []child{{slot: 4, length: 100, off: 20000, hash: h1}, {slot: 255, length: 12316, off: 30000, hash: h2}}}
	g := gbuf{make([]byte, 28+2*48)}
	g.at(0, "DNOD")
	g.at(4, uint8(2))
	g.at(6, uint16(2))
	g.at(12, uint32(124))
	g.at(16, uint64(3))
	g.at(24, uint16(4))
	g.at(28, uint32(100))
	g.at(32, uint64(20000))
	g.at(40, h1[:])
	g.at(72, uint16(255))
	g.at(76, uint32(12316))
	g.at(80, uint64(30000))
	g.at(88, h2[:])
	g.at(120, gcrc(g.b[:120]))
	if !bytes.Equal(n.marshal(), g.b) {
		t.Fatal("internal node bytes differ from the spec")
	}
}

// v1HeaderLen is version 1's header check exactly as the last reader of
// version 1 only had it (before version 2 existed): a v1 reader.
func v1HeaderLen(fixed []byte) (int, error) {
	if len(fixed) < 16 || [8]byte(fixed[0:8]) != headerMagic {
		return 0, fmt.Errorf("%w: bad magic", ErrFormat)
	}
	if v := binary.LittleEndian.Uint32(fixed[8:]); v != 1 {
		return 0, fmt.Errorf("%w: format version %d (this dimg reads version %d)", ErrFormat, v, 1)
	}
	n := int(binary.LittleEndian.Uint32(fixed[12:]))
	if n < 64+8 || n > 16<<20 {
		return 0, fmt.Errorf("%w: header length %d", ErrCorrupt, n)
	}
	return n, nil
}

// v1FooterCheck is version 1's footer check as that reader had it.
func v1FooterCheck(b []byte) error {
	le := binary.LittleEndian
	if [8]byte(b[0:8]) != footerMagic || [4]byte(b[124:128]) != footerEnd {
		return fmt.Errorf("%w: footer magic not found at the end of the file (truncated or incomplete image?)", ErrCorrupt)
	}
	if gcrc(b[:120]) != le.Uint32(b[120:]) {
		return fmt.Errorf("%w: footer checksum mismatch", ErrCorrupt)
	}
	if v := le.Uint32(b[8:]); v != 1 {
		return fmt.Errorf("%w: footer version %d", ErrFormat, v)
	}
	return nil
}

func TestV1ReaderRefusesV2(t *testing.T) {
	d := newDisk(1<<20, 64<<10)
	stream := writeV2(t, d, WriterOptions{})
	mf := &memFile{b: bytes.Clone(stream)}
	ed, err := newEditor(mf, int64(len(stream)), EditorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ed.Commit(context.Background(), changesOf(d, nil), CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, img := range map[string][]byte{"stream": stream, "committed": mf.bytes()} {
		if _, err := v1HeaderLen(img[:16]); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "format version 2") {
			t.Fatalf("%s: v1 header check: %v", name, err)
		}
		if err := v1FooterCheck(img[len(img)-128:]); err == nil {
			t.Fatalf("%s: v1 footer check accepted a v2 image", name)
		}
	}
}

// setFeature sets a feature bit in a stream-written image's header block
// (at field offset fo: 56, 60 or 64) or its commit record (36, 40, 44).
func setFeature(t *testing.T, img []byte, inCommit bool, fo int, bit uint32) []byte {
	t.Helper()
	img = bytes.Clone(img)
	le := binary.LittleEndian
	if !inCommit {
		le.PutUint32(img[fo:], le.Uint32(img[fo:])|bit)
		le.PutUint32(img[4092:], gcrc(img[:4092]))
		return img
	}
	ft := img[len(img)-128:]
	off, n := int(le.Uint64(ft[40:])), int(le.Uint32(ft[48:]))
	rec := img[off : off+n]
	le.PutUint32(rec[fo:], le.Uint32(rec[fo:])|bit)
	le.PutUint32(rec[n-4:], gcrc(rec[:n-4]))
	return img
}

func TestV2Features(t *testing.T) {
	d := newDisk(1<<20, 64<<10)
	img := writeV2(t, d, WriterOptions{})
	for _, tc := range []struct {
		name      string
		img       []byte
		open      bool // a reader opens it
		edit      bool // an editor commits to it
		wantInErr string
	}{
		{"header-incompat", setFeature(t, img, false, 56, 1<<9), false, false, "bit 9"},
		{"commit-incompat", setFeature(t, img, true, 36, 1<<17), false, false, "bit 17"},
		{"header-rocompat", setFeature(t, img, false, 60, 1<<2), true, false, "read-only-compatible"},
		{"commit-rocompat", setFeature(t, img, true, 40, 1<<5), true, false, "read-only-compatible"},
		{"header-compat", setFeature(t, img, false, 64, 1<<30), true, true, ""},
		{"commit-compat", setFeature(t, img, true, 44, 1<<4), true, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewReader(bytes.NewReader(tc.img), int64(len(tc.img)), ReaderOptions{})
			if tc.open != (err == nil) {
				t.Fatalf("open: %v", err)
			}
			if err != nil {
				if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), tc.wantInErr) {
					t.Fatalf("open: %v", err)
				}
				if _, err := NewStreamReader(bytes.NewReader(tc.img)); tc.name == "header-incompat" && !errors.Is(err, ErrFormat) {
					t.Fatalf("stream: %v", err)
				}
				return
			}
			checkReader(t, r, d)
			_, err = newEditor(&memFile{b: bytes.Clone(tc.img)}, int64(len(tc.img)), EditorOptions{})
			if tc.edit != (err == nil) || err != nil && (!errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), tc.wantInErr)) {
				t.Fatalf("editor: %v", err)
			}
		})
	}
	// Known bits have names.
	if s := FeatureString(IncompatDelta | IncompatZstd | 1<<7); s != "delta, zstd, bit 7" {
		t.Fatal(s)
	}
}

// forgeryV2 breaks one rule of the version 2 golden image. Unlike version
// 1, not every path meets every rule at the same place: a reader of a
// stream rebuilds each index node from the records before it, where a
// random-access reader checks a frame against its leaf entry when it reads
// it; other names the paths that report another rule, and where.
type forgeryV2 struct {
	name  string
	rule  Rule
	err   error
	bytes func(g *goldenV2)
	off   func(g *goldenV2) int
	other map[string]forgedAt
	skip  map[string]string // paths that accept it, and why
}

type forgedAt struct {
	rule Rule
	off  func(g *goldenV2) int
}

func v2Forgeries() []forgeryV2 {
	at := func(o int) func(*goldenV2) int { return func(*goldenV2) int { return o } }
	return []forgeryV2{
		{name: "header block crc", rule: RuleHeaderBlock, err: ErrCorrupt, off: at(4092),
			bytes: func(g *goldenV2) { g.b[100] ^= 1 }},
		{name: "unknown incompatible feature", rule: RuleFeatures, err: ErrFormat, off: at(56),
			bytes: func(g *goldenV2) { le32(g.b[56:], 1<<9); g.sealHeader() }},
		{name: "delta without base", rule: RuleHeaderBlock, err: ErrCorrupt, off: at(72),
			bytes: func(g *goldenV2) { le32(g.b[56:], IncompatDelta); g.sealHeader() }},
		{name: "header reserved byte", rule: RuleHeaderBlock, err: ErrCorrupt, off: at(132),
			bytes: func(g *goldenV2) { g.b[3000] = 1; g.sealHeader() }},
		{name: "footer crc", rule: RuleNoCommit, err: ErrCorrupt, off: func(g *goldenV2) int { return g.end },
			bytes: func(g *goldenV2) { g.b[g.end+50] ^= 1 }},
		{name: "commit record crc", rule: RuleCommit, err: ErrCorrupt, off: func(g *goldenV2) int { return g.recOff + 208 },
			bytes: func(g *goldenV2) { g.b[g.recOff+20] ^= 1 }},
		{name: "root node crc", rule: RuleNode, err: ErrCorrupt, off: func(g *goldenV2) int { return g.rootOff },
			bytes: func(g *goldenV2) { g.b[g.rootOff+30] ^= 1 }},
		{name: "leaf entry after its node", rule: RuleNode, err: ErrCorrupt, off: func(g *goldenV2) int { return g.rootOff },
			bytes: func(g *goldenV2) { le64(g.b[g.rootOff+32:], uint64(g.rootOff+100)); g.sealRoot() }},
		// The root (here a leaf) no longer hashes to the commit's digest:
		// found when the root is opened, before any frame is read.
		{name: "leaf sum", rule: RuleTreeHash, err: ErrCorrupt, off: func(g *goldenV2) int { return g.recOff + 64 },
			bytes: func(g *goldenV2) { g.b[g.rootOff+50] ^= 1; g.sealRoot() },
			other: map[string]forgedAt{"stream": {RuleRecords, func(g *goldenV2) int { return g.rootOff }}}},
		{name: "payload crc", rule: RulePayloadCRC, err: ErrChecksum, off: func(g *goldenV2) int { return g.frameOff + 64 },
			bytes: func(g *goldenV2) { g.b[g.frameOff+64+1000] ^= 1 }},
		{name: "commit digest", rule: RuleTreeHash, err: ErrCorrupt, off: func(g *goldenV2) int { return g.recOff + 64 },
			bytes: func(g *goldenV2) {
				g.b[g.recOff+70] ^= 1
				g.sealCommit()
				g.b[g.end+62] ^= 1 // the footer names the same digest
				g.sealFooter()
			}},
		// Every path finds the footer at the very end: the stream reader
		// accepted bytes after it (restore - exited 0 where every other
		// command said the image was damaged).
		{name: "bytes after the footer", rule: RuleNoCommit, err: ErrCorrupt, off: func(g *goldenV2) int { return g.end + 64 },
			bytes: func(g *goldenV2) { g.b = append(g.b, make([]byte, 64)...) }},
		// Two damaged slots are damage even with a footer (the stream
		// reader ignored them and read the footer).
		{name: "both slots damaged", rule: RuleSlot, err: ErrCorrupt, off: at(4096),
			bytes: func(g *goldenV2) { g.b[4096] = 'X'; g.b[8192] = 'X' }},
		// A file cut after a commit: an intact slot names a commit past
		// the end. The random-access reader ignored that slot and opened
		// the older commit the other slot names, exit 0 (only restore -
		// noticed).
		{name: "newest commit cut off", rule: RuleEnd, err: ErrCorrupt, off: func(g *goldenV2) int { return g.end },
			bytes: func(g *goldenV2) {
				old := commitSlot{commit: 1, recOff: int64(g.recOff), recLen: 212, digest: g.digest, end: int64(g.end)}
				gone := commitSlot{commit: 2, recOff: int64(g.end) + 4096, recLen: 212, end: int64(g.end) + 4096 + 212}
				copy(g.b[4096:], old.marshal(commitSlotMagic, g.uuid))
				copy(g.b[8192:], gone.marshal(commitSlotMagic, g.uuid))
				g.b = g.b[:g.end] // in-place commits end without a footer
			}},
		{name: "run record state", rule: RuleRunRecord, err: ErrCorrupt, off: func(g *goldenV2) int { return g.runOff + 5 },
			bytes: func(g *goldenV2) { g.b[g.runOff+5] = 7; g.sealRun() },
			skip: map[string]string{"readat": "run records serve readers of a stream only", "verify": "the same (verify --all reads them)",
				"restore": "the same"}},
	}
}

// TestGoldenV2Forgeries: each forgery of the version 2 golden image breaks
// one rule, and every reading path rejects it with the sentinel, rule and
// file offset the table says.
func TestGoldenV2Forgeries(t *testing.T) {
	for _, f := range v2Forgeries() {
		t.Run(f.name, func(t *testing.T) {
			g := buildGoldenV2()
			f.bytes(g)
			for _, p := range readPaths {
				_, err := p.read(g.b)
				if why, ok := f.skip[p.name]; ok {
					if err != nil {
						t.Errorf("%s: %v (expected to accept: %s)", p.name, err, why)
					}
					continue
				}
				rule, off := f.rule, f.off(g)
				if o, ok := f.other[p.name]; ok {
					rule, off = o.rule, o.off(g)
				}
				var re *RuleError
				switch {
				case err == nil:
					t.Errorf("%s: accepted", p.name)
				case !errors.Is(err, f.err):
					t.Errorf("%s: %v, want %v", p.name, err, f.err)
				case !errors.As(err, &re):
					t.Errorf("%s: %v is not a *RuleError", p.name, err)
				case re.Rule != rule || re.Offset != int64(off):
					t.Errorf("%s: rule %s at offset %d, want %s at %d (%v)", p.name, re.Rule, re.Offset, rule, off, err)
				}
			}
		})
	}
	// The unforged image passes every path.
	g := buildGoldenV2()
	for _, p := range readPaths {
		if _, err := p.read(g.b); err != nil {
			t.Errorf("%s: %v", p.name, err)
		}
	}
}
