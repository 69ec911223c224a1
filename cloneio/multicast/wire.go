package multicast

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"sync/atomic"

	"github.com/dimg-project/dimg/imagefmt"
)

// Wire format, version 1. All integers are big-endian (network order).
//
// Every packet starts with a 24-byte common header:
//
//	0   3  magic "DMC"
//	3   1  version (1)
//	4   1  type (pktAnnounce ...)
//	5   1  flags: bit 0 = a 16-byte HMAC-SHA256 tag ends the packet
//	6   2  reserved, zero
//	8   8  session id
//	16  8  digest tag: the first 8 bytes of the image digest
//
// and, when flag bit 0 is set, ends with HMAC-SHA256(key, packet without
// the tag) truncated to 16 bytes. The bodies follow at offset 24; see the
// marshal functions below for each layout.
const (
	hdrLen   = 24
	tagLen   = 16
	version  = 1
	flagAuth = 1

	pktAnnounce = 1 // sender → group: session description and state
	pktHello    = 2 // receiver → sender: join
	pktWelcome  = 3 // sender → receiver: join acknowledged
	pktData     = 4 // sender → group: one symbol of an object
	pktStatus   = 5 // receiver → sender: progress, loss and NACKs
	pktDone     = 6 // receiver → sender: final result
	pktDoneAck  = 7 // sender → receiver: result recorded

	maxDatagram = 65507 // largest UDP payload over IPv4
)

// Session states carried by ANNOUNCE.
const (
	stateWaiting   = 1 // waiting for receivers
	stateSending   = 2 // first pass in progress
	stateRepairing = 3 // pass done: repair rounds
	stateFinished  = 4 // session over (BYE)
	stateAborted   = 5 // session over, sender failed
)

var magic = [3]byte{'D', 'M', 'C'}

// Errors of packet parsing. Callers count them; none is fatal.
var (
	errMalformed = errors.New("multicast: malformed packet")
	errAuth      = errors.New("multicast: packet authentication failed")
	errForeign   = errors.New("multicast: packet of another session")
)

// header is the common header.
type header struct {
	typ       uint8
	auth      bool
	session   uint64
	digestTag [8]byte
}

// signer appends and checks packet tags. A nil signer means no key.
type signer struct {
	h hash.Hash
}

func newSigner(key []byte) *signer {
	if len(key) == 0 {
		return nil
	}
	return &signer{h: hmac.New(sha256.New, key)}
}

func (s *signer) tag(dst, msg []byte) []byte {
	s.h.Reset()
	s.h.Write(msg)
	var sum [sha256.Size]byte
	return append(dst, s.h.Sum(sum[:0])[:tagLen]...)
}

// putHeader writes the common header into b[:hdrLen].
func putHeader(b []byte, h header) {
	copy(b[0:3], magic[:])
	b[3] = version
	b[4] = h.typ
	b[5] = 0
	if h.auth {
		b[5] = flagAuth
	}
	b[6], b[7] = 0, 0
	binary.BigEndian.PutUint64(b[8:], h.session)
	copy(b[16:24], h.digestTag[:])
}

// seal finishes a packet built in b (header + body): it sets the auth flag
// and appends the tag when s is not nil.
func (s *signer) seal(b []byte) []byte {
	if s == nil {
		b[5] &^= flagAuth
		return b
	}
	b[5] |= flagAuth
	return s.tag(b, b)
}

// open checks the common header and the tag of a received packet and
// returns the header and the body (without the tag). A keyed receiver
// rejects unauthenticated packets; an unkeyed one rejects authenticated
// ones (it cannot check them).
func (s *signer) open(p []byte) (header, []byte, error) {
	var h header
	if len(p) < hdrLen || [3]byte(p[0:3]) != magic {
		return h, nil, fmt.Errorf("%w: no dimg header", errMalformed)
	}
	if p[3] != version {
		return h, nil, fmt.Errorf("%w: version %d", errMalformed, p[3])
	}
	h.typ = p[4]
	h.auth = p[5]&flagAuth != 0
	h.session = binary.BigEndian.Uint64(p[8:])
	copy(h.digestTag[:], p[16:24])
	if p[5]&^flagAuth != 0 || p[6] != 0 || p[7] != 0 {
		return h, nil, fmt.Errorf("%w: reserved bits set", errMalformed)
	}
	switch {
	case s == nil && h.auth:
		return h, nil, fmt.Errorf("%w: packet is signed and no key was given", errAuth)
	case s != nil && !h.auth:
		return h, nil, fmt.Errorf("%w: packet is not signed", errAuth)
	case s != nil:
		if len(p) < hdrLen+tagLen {
			return h, nil, fmt.Errorf("%w: short tag", errAuth)
		}
		n := len(p) - tagLen
		var want [tagLen + sha256.Size]byte
		if !hmac.Equal(s.tag(want[:0], p[:n]), p[n:]) {
			return h, nil, fmt.Errorf("%w: bad HMAC", errAuth)
		}
		p = p[:n]
	}
	return h, p[hdrLen:], nil
}

// announce describes a session (pktAnnounce). Body layout:
//
//	24  1  state
//	25  1  reserved
//	26  2  symbol size
//	28  2  K, data symbols per block
//	30  2  P, proactive parity symbols per full block
//	32  4  objects (stored frames)
//	36  4  pass cursor: objects sent by the first pass so far
//	40  4  announce sequence number
//	44  4  sector size
//	48  4  chunk size
//	52  8  disk size
//	60  16 image UUID
//	76  32 image digest
//	108 8  current rate, bytes/s (0: unpaced)
//	116 4  receivers known
//	120 8  total bytes of all objects
//	128 4  frames: objects [0, frames) are image frames, the rest zero-run
//	       tables (see the end of this file)
//	132 4  reserved, zero
//	136
type announce struct {
	state      uint8
	symSize    int
	k, p       int
	objects    uint32
	cursor     uint32
	seq        uint32
	sectorSize int
	chunkSize  int
	diskSize   int64
	uuid       [16]byte
	digest     [32]byte
	rate       uint64
	receivers  uint32
	bytes      uint64
	frames     uint32
	// imageVersion is the image's format version, which decides how its
	// digest is computed (version 2's is the root of its index tree); 0
	// from older senders means 1.
	imageVersion uint8
}

const announceLen = 136

func (a *announce) marshal(b []byte, session uint64) []byte {
	b = b[:announceLen]
	putHeader(b, header{typ: pktAnnounce, session: session, digestTag: [8]byte(a.digest[:8])})
	be := binary.BigEndian
	b[24], b[25] = a.state, a.imageVersion
	be.PutUint16(b[26:], uint16(a.symSize))
	be.PutUint16(b[28:], uint16(a.k))
	be.PutUint16(b[30:], uint16(a.p))
	be.PutUint32(b[32:], a.objects)
	be.PutUint32(b[36:], a.cursor)
	be.PutUint32(b[40:], a.seq)
	be.PutUint32(b[44:], uint32(a.sectorSize))
	be.PutUint32(b[48:], uint32(a.chunkSize))
	be.PutUint64(b[52:], uint64(a.diskSize))
	copy(b[60:76], a.uuid[:])
	copy(b[76:108], a.digest[:])
	be.PutUint64(b[108:], a.rate)
	be.PutUint32(b[116:], a.receivers)
	be.PutUint64(b[120:], a.bytes)
	be.PutUint32(b[128:], a.frames)
	be.PutUint32(b[132:], 0)
	return b
}

// Bounds a receiver accepts from an announcement. They keep every later
// allocation proportional to what a real image could need.
const (
	minSymbolSize = 256
	maxSymbolSize = 9000 - 28 - dataHdrLen // a 9000-byte jumbo frame
	maxK          = 128
	// maxObjects bounds the per-object state a receiver allocates when it
	// joins (about 37 bytes each): 16.7 million frames is 4 TiB of stored
	// 256 KiB chunks, 64 TiB of 4 MiB ones.
	maxObjects   = 1 << 24
	minChunkSize = 4 << 10
	maxChunkSize = 16 << 20
	maxDiskSize  = 1 << 56
)

func parseAnnounce(h header, body []byte) (*announce, error) {
	if len(body) != announceLen-hdrLen {
		return nil, fmt.Errorf("%w: announce length %d", errMalformed, len(body)+hdrLen)
	}
	b := body
	be := binary.BigEndian
	a := &announce{
		state:        b[0],
		imageVersion: max(b[1], 1),
		symSize:      int(be.Uint16(b[2:])),
		k:            int(be.Uint16(b[4:])),
		p:            int(be.Uint16(b[6:])),
		objects:      be.Uint32(b[8:]),
		cursor:       be.Uint32(b[12:]),
		seq:          be.Uint32(b[16:]),
		sectorSize:   int(be.Uint32(b[20:])),
		chunkSize:    int(be.Uint32(b[24:])),
		diskSize:     int64(be.Uint64(b[28:])),
		rate:         be.Uint64(b[84:]),
		receivers:    be.Uint32(b[92:]),
		bytes:        be.Uint64(b[96:]),
		frames:       be.Uint32(b[104:]),
	}
	copy(a.uuid[:], b[36:52])
	copy(a.digest[:], b[52:84])
	switch {
	case a.imageVersion > imagefmt.Version2:
		return nil, fmt.Errorf("%w: image format version %d", errMalformed, a.imageVersion)
	case a.state < stateWaiting || a.state > stateAborted:
		return nil, fmt.Errorf("%w: announce state %d", errMalformed, a.state)
	case a.symSize < minSymbolSize || a.symSize > maxSymbolSize:
		return nil, fmt.Errorf("%w: symbol size %d", errMalformed, a.symSize)
	case a.k < 1 || a.k > maxK || a.p < 0 || a.p > a.k:
		return nil, fmt.Errorf("%w: FEC %d/%d", errMalformed, a.p, a.k)
	case a.chunkSize < minChunkSize || a.chunkSize > maxChunkSize || a.chunkSize&(a.chunkSize-1) != 0:
		return nil, fmt.Errorf("%w: chunk size %d", errMalformed, a.chunkSize)
	case a.sectorSize < 512 || a.sectorSize > a.chunkSize || a.sectorSize&(a.sectorSize-1) != 0:
		return nil, fmt.Errorf("%w: sector size %d", errMalformed, a.sectorSize)
	case a.diskSize <= 0 || a.diskSize > maxDiskSize:
		return nil, fmt.Errorf("%w: disk size %d", errMalformed, a.diskSize)
	case a.objects > maxObjects:
		return nil, fmt.Errorf("%w: %d objects is more than a receiver takes (%d)", errMalformed, a.objects, maxObjects)
	case int64(a.frames) > a.numChunks() || a.frames > a.objects || a.cursor > a.objects ||
		int64(a.objects-a.frames) > a.numChunks()/2+1:
		return nil, fmt.Errorf("%w: %d objects (%d frames) for %d chunks", errMalformed, a.objects, a.frames, a.numChunks())
	case be.Uint32(b[108:]) != 0:
		return nil, fmt.Errorf("%w: announce reserved field", errMalformed)
	case a.bytes < uint64(a.objects)*(tableOverhead+16) || a.bytes > uint64(a.objects)*uint64(maxFrameLen(a.chunkSize)):
		return nil, fmt.Errorf("%w: %d bytes in %d objects", errMalformed, a.bytes, a.objects)
	case [8]byte(a.digest[:8]) != h.digestTag:
		return nil, fmt.Errorf("%w: digest tag does not match the digest", errMalformed)
	}
	return a, nil
}

func (a *announce) numChunks() int64 {
	return (a.diskSize + int64(a.chunkSize) - 1) / int64(a.chunkSize)
}

func (a *announce) chunkLen(c int64) int {
	if end := (c + 1) * int64(a.chunkSize); end > a.diskSize {
		return int(a.diskSize - c*int64(a.chunkSize))
	}
	return a.chunkSize
}

// maxFrameLen bounds an object: the frame header plus lz4's worst case.
func maxFrameLen(chunkSize int) int { return 64 + chunkSize + chunkSize/255 + 16 }

// hello joins a session (pktHello). Body: 24 receiver id (8), 32 name
// length (1), name (at most maxName bytes).
type hello struct {
	id   uint64
	name string
}

const maxName = 64

func (m *hello) marshal(b []byte, session uint64, tag [8]byte) []byte {
	name := m.name
	if len(name) > maxName {
		name = name[:maxName]
	}
	b = b[:33+len(name)]
	putHeader(b, header{typ: pktHello, session: session, digestTag: tag})
	binary.BigEndian.PutUint64(b[24:], m.id)
	b[32] = byte(len(name))
	copy(b[33:], name)
	return b
}

func parseHello(body []byte) (*hello, error) {
	if len(body) < 9 || len(body) != 9+int(body[8]) || body[8] > maxName {
		return nil, fmt.Errorf("%w: hello length %d", errMalformed, len(body))
	}
	return &hello{id: binary.BigEndian.Uint64(body), name: string(body[9:])}, nil
}

// welcome and doneAck (pktWelcome, pktDoneAck) carry the receiver id (8
// bytes at 24).
func marshalID(b []byte, typ uint8, session uint64, tag [8]byte, id uint64) []byte {
	b = b[:32]
	putHeader(b, header{typ: typ, session: session, digestTag: tag})
	binary.BigEndian.PutUint64(b[24:], id)
	return b
}

func parseID(body []byte) (uint64, error) {
	if len(body) != 8 {
		return 0, fmt.Errorf("%w: id message length %d", errMalformed, len(body))
	}
	return binary.BigEndian.Uint64(body), nil
}

// dataHdr is the header of a symbol (pktData). Layout after the common
// header:
//
//	24 4  packet sequence number (every data packet of the session)
//	28 4  object
//	32 4  chunk number of the object
//	36 4  object (frame) length in bytes
//	40 2  block number within the object
//	42 1  symbol index in the block: < k data, >= k parity row index-k
//	43 1  k: data symbols in this block
//	44 2  payload length
//	46 1  flags: bit 0 = repair (not part of the first pass)
//	47 1  reserved
//	48    payload
//
// A data symbol's bytes are frame[(block·K+index)·SymbolSize:][:payload];
// a parity symbol's payload is always SymbolSize bytes.
type dataHdr struct {
	seq      uint32
	object   uint32
	chunk    uint32
	frameLen uint32
	block    uint16
	index    uint8
	k        uint8
	plen     uint16
	repair   bool
}

const dataHdrLen = 48

func (d *dataHdr) put(b []byte, session uint64, tag [8]byte) {
	putHeader(b, header{typ: pktData, session: session, digestTag: tag})
	be := binary.BigEndian
	be.PutUint32(b[24:], d.seq)
	be.PutUint32(b[28:], d.object)
	be.PutUint32(b[32:], d.chunk)
	be.PutUint32(b[36:], d.frameLen)
	be.PutUint16(b[40:], d.block)
	b[42], b[43] = d.index, d.k
	be.PutUint16(b[44:], d.plen)
	b[46], b[47] = 0, 0
	if d.repair {
		b[46] = 1
	}
}

// parseData decodes a symbol's header and checks it against the session
// geometry; payload is the symbol's bytes.
func parseData(body []byte, g *geometry) (d dataHdr, payload []byte, err error) {
	if len(body) < dataHdrLen-hdrLen {
		return d, nil, fmt.Errorf("%w: data header", errMalformed)
	}
	be := binary.BigEndian
	d = dataHdr{
		seq:      be.Uint32(body[0:]),
		object:   be.Uint32(body[4:]),
		chunk:    be.Uint32(body[8:]),
		frameLen: be.Uint32(body[12:]),
		block:    be.Uint16(body[16:]),
		index:    body[18],
		k:        body[19],
		plen:     be.Uint16(body[20:]),
		repair:   body[22]&1 != 0,
	}
	payload = body[dataHdrLen-hdrLen:]
	if body[22]&^1 != 0 || body[23] != 0 {
		return d, nil, fmt.Errorf("%w: data reserved bits", errMalformed)
	}
	if int(d.plen) != len(payload) {
		return d, nil, fmt.Errorf("%w: payload %d bytes, header says %d", errMalformed, len(payload), d.plen)
	}
	if err := g.checkSymbol(&d); err != nil {
		return d, nil, err
	}
	return d, payload, nil
}

// status is a receiver's periodic report (pktStatus). Layout:
//
//	24 8  receiver id
//	32 1  state (rxReceiving, rxVerifying, rxFetching)
//	33 1  reserved
//	34 2  number of NACK entries
//	36 4  objects complete (written)
//	40 4  lowest incomplete object
//	44 4  recent loss, parts per million
//	48 4  highest data packet sequence number seen
//	52 8  logical bytes written
//	60 4  status sequence number
//	64    NACK entries, 12 bytes each:
//	      0 1 kind (nackBlock, nackObjects)
//	      1 1 need: symbols still needed (nackBlock)
//	      2 2 block (nackBlock)
//	      4 4 object (first object of a range)
//	      8 4 count of objects (nackObjects; 1 for nackBlock)
type status struct {
	id       uint64
	state    uint8
	complete uint32
	low      uint32
	lossPPM  uint32
	highSeq  uint32
	written  uint64
	seq      uint32
	nacks    []nack
}

const (
	statusFixed = 64
	nackLen     = 12

	rxReceiving = 1
	rxVerifying = 2
	rxFetching  = 3 // fetching the rest over HTTP

	nackBlock   = 1
	nackObjects = 2
)

type nack struct {
	kind   uint8
	need   uint8
	block  uint16
	object uint32
	count  uint32
}

// maxNacks is how many entries fit a datagram at size (without tag).
func maxNacks(size int) int { return (size - statusFixed - tagLen) / nackLen }

func (s *status) marshal(b []byte, session uint64, tag [8]byte) []byte {
	b = b[:statusFixed+nackLen*len(s.nacks)]
	putHeader(b, header{typ: pktStatus, session: session, digestTag: tag})
	be := binary.BigEndian
	be.PutUint64(b[24:], s.id)
	b[32], b[33] = s.state, 0
	be.PutUint16(b[34:], uint16(len(s.nacks)))
	be.PutUint32(b[36:], s.complete)
	be.PutUint32(b[40:], s.low)
	be.PutUint32(b[44:], s.lossPPM)
	be.PutUint32(b[48:], s.highSeq)
	be.PutUint64(b[52:], s.written)
	be.PutUint32(b[60:], s.seq)
	for i, n := range s.nacks {
		p := b[statusFixed+i*nackLen:]
		p[0], p[1] = n.kind, n.need
		be.PutUint16(p[2:], n.block)
		be.PutUint32(p[4:], n.object)
		be.PutUint32(p[8:], n.count)
	}
	return b
}

func parseStatus(body []byte) (*status, error) {
	if len(body) < statusFixed-hdrLen {
		return nil, fmt.Errorf("%w: status length %d", errMalformed, len(body)+hdrLen)
	}
	be := binary.BigEndian
	n := int(be.Uint16(body[10:]))
	if len(body) != statusFixed-hdrLen+n*nackLen {
		return nil, fmt.Errorf("%w: status with %d NACKs is %d bytes", errMalformed, n, len(body)+hdrLen)
	}
	s := &status{
		id:       be.Uint64(body[0:]),
		state:    body[8],
		complete: be.Uint32(body[12:]),
		low:      be.Uint32(body[16:]),
		lossPPM:  be.Uint32(body[20:]),
		highSeq:  be.Uint32(body[24:]),
		written:  be.Uint64(body[28:]),
		seq:      be.Uint32(body[36:]),
		nacks:    make([]nack, n),
	}
	if s.state < rxReceiving || s.state > rxFetching || s.lossPPM > 1e6 {
		return nil, fmt.Errorf("%w: status state %d loss %d", errMalformed, s.state, s.lossPPM)
	}
	for i := range s.nacks {
		p := body[statusFixed-hdrLen+i*nackLen:]
		nk := nack{kind: p[0], need: p[1], block: be.Uint16(p[2:]), object: be.Uint32(p[4:]), count: be.Uint32(p[8:])}
		switch {
		case nk.kind == nackBlock && nk.need > 0 && nk.count == 1:
		case nk.kind == nackObjects && nk.count > 0 && nk.need == 0 && nk.block == 0:
		default:
			return nil, fmt.Errorf("%w: NACK entry %d", errMalformed, i)
		}
		s.nacks[i] = nk
	}
	return s, nil
}

// done is a receiver's final report (pktDone). Layout:
//
//	24 8  receiver id
//	32 1  result (resultOK ...)
//	33 1  reserved
//	34 2  number of ranges listed
//	36 4  total objects or chunks that failed (may exceed what is listed)
//	40 8  logical bytes written
//	48 32 digest recomputed from the target (zero if not computed)
//	80 1  message length, then the message (at most maxMessage bytes)
//	..    ranges, 8 bytes each: first (4), count (4) — object numbers for
//	      resultIncomplete, chunk numbers for resultMismatch
type done struct {
	id      uint64
	result  uint8
	failed  uint32
	written uint64
	digest  [32]byte
	message string
	ranges  []span
}

// span is a run of object or chunk numbers.
type span struct{ first, count uint32 }

const (
	doneFixed  = 81
	maxMessage = 120

	resultOK         = 1 // target verified: digest matches
	resultMismatch   = 2 // every object written, digest differs; ranges are chunks
	resultIncomplete = 3 // some objects never arrived; ranges are objects
	resultError      = 4 // the target failed (write, sync, read back)
)

func (d *done) marshal(b []byte, session uint64, tag [8]byte, size int) []byte {
	msg := d.message
	if len(msg) > maxMessage {
		msg = msg[:maxMessage]
	}
	room := (size - doneFixed - len(msg) - tagLen) / 8
	ranges := d.ranges
	if len(ranges) > room {
		ranges = ranges[:max(room, 0)]
	}
	b = b[:doneFixed+len(msg)+8*len(ranges)]
	putHeader(b, header{typ: pktDone, session: session, digestTag: tag})
	be := binary.BigEndian
	be.PutUint64(b[24:], d.id)
	b[32], b[33] = d.result, 0
	be.PutUint16(b[34:], uint16(len(ranges)))
	be.PutUint32(b[36:], d.failed)
	be.PutUint64(b[40:], d.written)
	copy(b[48:80], d.digest[:])
	b[80] = byte(len(msg))
	p := doneFixed + copy(b[doneFixed:], msg)
	for _, r := range ranges {
		be.PutUint32(b[p:], r.first)
		be.PutUint32(b[p+4:], r.count)
		p += 8
	}
	return b
}

func parseDone(body []byte) (*done, error) {
	const fixed = doneFixed - hdrLen
	if len(body) < fixed {
		return nil, fmt.Errorf("%w: done length %d", errMalformed, len(body)+hdrLen)
	}
	be := binary.BigEndian
	nr, ml := int(be.Uint16(body[10:])), int(body[56])
	if ml > maxMessage || len(body) != fixed+ml+8*nr {
		return nil, fmt.Errorf("%w: done length %d", errMalformed, len(body)+hdrLen)
	}
	d := &done{
		id:      be.Uint64(body[0:]),
		result:  body[8],
		failed:  be.Uint32(body[12:]),
		written: be.Uint64(body[16:]),
		message: string(body[fixed : fixed+ml]),
		ranges:  make([]span, nr),
	}
	copy(d.digest[:], body[24:56])
	if d.result < resultOK || d.result > resultError {
		return nil, fmt.Errorf("%w: done result %d", errMalformed, d.result)
	}
	for i := range d.ranges {
		p := body[fixed+ml+8*i:]
		d.ranges[i] = span{be.Uint32(p), be.Uint32(p[4:])}
		if d.ranges[i].count == 0 {
			return nil, fmt.Errorf("%w: empty range", errMalformed)
		}
	}
	return d, nil
}

// Zero runs (chunks that were in use and all zero: a device target must
// zero them, while chunks neither stored nor in a run were unused and are
// left alone) travel as table objects after the frames, through the same
// symbols, parity and repairs. A table object is:
//
//	0      4  magic "DZRT"
//	4      4  number of runs n
//	8      16·n runs: first chunk (8), chunk count (8)
//	8+16n  4  CRC32C of the bytes before it
//
// big-endian, runs in increasing order. A table is at most as long as the
// largest frame, so the receiver's bounds hold for it too.

var tableMagic = [4]byte{'D', 'Z', 'R', 'T'}

const tableOverhead = 12

func runsPerTable(chunkSize int) int { return (maxFrameLen(chunkSize) - tableOverhead) / 16 }

// zeroRunTables encodes runs into table objects.
func zeroRunTables(runs []imagefmt.ZeroRun, chunkSize int) [][]byte {
	per := runsPerTable(chunkSize)
	var out [][]byte
	for len(runs) > 0 {
		n := min(len(runs), per)
		b := make([]byte, tableOverhead+16*n)
		copy(b, tableMagic[:])
		binary.BigEndian.PutUint32(b[4:], uint32(n))
		for i, r := range runs[:n] {
			binary.BigEndian.PutUint64(b[8+16*i:], uint64(r.Start))
			binary.BigEndian.PutUint64(b[16+16*i:], uint64(r.Count))
		}
		binary.BigEndian.PutUint32(b[8+16*n:], crc32.Checksum(b[:8+16*n], castagnoli))
		out = append(out, b)
		runs = runs[n:]
	}
	return out
}

// parseZeroRunTable decodes and checks one table.
func parseZeroRunTable(b []byte, numChunks int64) ([]imagefmt.ZeroRun, error) {
	if len(b) < tableOverhead || [4]byte(b[0:4]) != tableMagic {
		return nil, fmt.Errorf("%w: not a zero-run table", imagefmt.ErrCorrupt)
	}
	n := int(binary.BigEndian.Uint32(b[4:]))
	if n < 1 || len(b) != tableOverhead+16*n {
		return nil, fmt.Errorf("%w: zero-run table of %d bytes lists %d runs", imagefmt.ErrCorrupt, len(b), n)
	}
	if crc32.Checksum(b[:8+16*n], castagnoli) != binary.BigEndian.Uint32(b[8+16*n:]) {
		return nil, fmt.Errorf("%w: zero-run table checksum", imagefmt.ErrChecksum)
	}
	runs := make([]imagefmt.ZeroRun, n)
	end := int64(0)
	for i := range runs {
		s, c := binary.BigEndian.Uint64(b[8+16*i:]), binary.BigEndian.Uint64(b[16+16*i:])
		if c == 0 || s < uint64(end) || s >= uint64(numChunks) || c > uint64(numChunks)-s {
			return nil, fmt.Errorf("%w: zero run %d (%d+%d) out of order or range", imagefmt.ErrCorrupt, i, s, c)
		}
		runs[i] = imagefmt.ZeroRun{Start: int64(s), Count: int64(c)}
		end = int64(s + c)
	}
	return runs, nil
}

// Drops counts packets that were received and thrown away.
type Drops struct {
	Foreign   int64 `json:"foreign"`   // another session or image
	BadAuth   int64 `json:"bad_auth"`  // missing or wrong HMAC
	Malformed int64 `json:"malformed"` // not a valid dimg packet
	Overflow  int64 `json:"overflow,omitempty"`
}

type dropCounters struct{ foreign, badAuth, malformed, overflow atomic.Int64 }

func (d *dropCounters) count(err error) {
	switch {
	case errors.Is(err, errForeign):
		d.foreign.Add(1)
	case errors.Is(err, errAuth):
		d.badAuth.Add(1)
	default:
		d.malformed.Add(1)
	}
}

func (d *dropCounters) snapshot() Drops {
	return Drops{Foreign: d.foreign.Load(), BadAuth: d.badAuth.Load(), Malformed: d.malformed.Load(), Overflow: d.overflow.Load()}
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)
