package multicast

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/dimg-project/dimg/imagefmt"
)

var testTag = [8]byte{1, 2, 3, 4, 5, 6, 7, 8}

func testAnnounce() *announce {
	a := &announce{imageVersion: 2, state: stateSending, symSize: 1408, k: 64, p: 4, objects: 10, cursor: 3, seq: 7,
		sectorSize: 512, chunkSize: 256 << 10, diskSize: 10 << 20, rate: 12345, receivers: 2, bytes: 10 * 1000, frames: 9}
	copy(a.digest[:], testTag[:])
	a.uuid[0] = 0xaa
	return a
}

func TestWireRoundTrip(t *testing.T) {
	for _, key := range [][]byte{nil, []byte("k")} {
		sig := newSigner(key)
		open := func(b []byte) (header, []byte) {
			t.Helper()
			h, body, err := newSigner(key).open(sig.seal(b))
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			if h.session != 42 || h.auth != (key != nil) {
				t.Fatalf("header %+v", h)
			}
			return h, body
		}
		buf := make([]byte, maxDatagram)

		a := testAnnounce()
		h, body := open(a.marshal(buf, 42))
		if h.typ != pktAnnounce {
			t.Fatal("type")
		}
		got, err := parseAnnounce(h, body)
		if err != nil || !reflect.DeepEqual(got, a) {
			t.Fatalf("announce: %v\n%+v\n%+v", err, got, a)
		}

		hl := &hello{id: 9, name: "host-1"}
		_, body = open(hl.marshal(buf, 42, testTag))
		if got, err := parseHello(body); err != nil || *got != *hl {
			t.Fatalf("hello: %v %+v", err, got)
		}

		_, body = open(marshalID(buf, pktDoneAck, 42, testTag, 77))
		if id, err := parseID(body); err != nil || id != 77 {
			t.Fatalf("id: %v %d", err, id)
		}

		st := &status{id: 5, state: rxReceiving, complete: 3, low: 2, lossPPM: 1000, highSeq: 99, written: 1 << 40, seq: 4,
			nacks: []nack{{kind: nackBlock, need: 3, block: 2, object: 1, count: 1}, {kind: nackObjects, object: 5, count: 4}}}
		_, body = open(st.marshal(buf, 42, testTag))
		if got, err := parseStatus(body); err != nil || !reflect.DeepEqual(got, st) {
			t.Fatalf("status: %v\n%+v", err, got)
		}

		dn := &done{id: 5, result: resultIncomplete, failed: 7, written: 99, message: "seven missing",
			ranges: []span{{1, 2}, {10, 5}}}
		dn.digest[3] = 1
		_, body = open(dn.marshal(buf, 42, testTag, 1500))
		if got, err := parseDone(body); err != nil || !reflect.DeepEqual(got, dn) {
			t.Fatalf("done: %v\n%+v", err, got)
		}

		g := &geometry{sym: 1000, k: 4, p: 1, objects: 10, frames: 10, chunkSize: 64 << 10, numChunks: 100}
		d := dataHdr{seq: 1, object: 9, chunk: 99, frameLen: 4500, block: 1, index: 0, k: 1, plen: 500, repair: true}
		p := make([]byte, dataHdrLen, 2000)
		d.put(p, 42, testTag)
		p = append(p, bytes.Repeat([]byte{7}, 500)...)
		_, body = open(p)
		gd, payload, err := parseData(body, g)
		if err != nil || gd != d || len(payload) != 500 {
			t.Fatalf("data: %v %+v", err, gd)
		}
	}
}

func TestWireRejects(t *testing.T) {
	sig := newSigner([]byte("key"))
	buf := make([]byte, maxDatagram)
	good := bytes.Clone(sig.seal(testAnnounce().marshal(buf, 42)))
	g := &geometry{sym: 1000, k: 4, p: 1, objects: 10, frames: 10, chunkSize: 64 << 10, numChunks: 100}
	mk := func(d dataHdr, n int) []byte {
		p := make([]byte, dataHdrLen, dataHdrLen+n)
		d.put(p, 1, testTag)
		return append(p, make([]byte, n)...)
	}
	for _, tc := range []struct {
		name string
		key  []byte
		pkt  []byte
		want error
	}{
		{"empty", nil, nil, errMalformed},
		{"short", nil, []byte("DMC"), errMalformed},
		{"bad magic", nil, append([]byte("XMC"), good[3:]...), errMalformed},
		{"tampered", []byte("key"), func() []byte { b := bytes.Clone(good); b[40] ^= 1; return b }(), errAuth},
		{"wrong key", []byte("other"), good, errAuth},
		{"signed, no key", nil, good, errAuth},
		{"unsigned, key", []byte("key"), testAnnounce().marshal(buf, 42), errAuth},
	} {
		_, _, err := newSigner(tc.key).open(tc.pkt)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	for _, tc := range []struct {
		name string
		d    dataHdr
		n    int
	}{
		{"object out of range", dataHdr{object: 10, chunk: 1, frameLen: 100, k: 1, plen: 100}, 100},
		{"chunk out of range", dataHdr{object: 1, chunk: 100, frameLen: 100, k: 1, plen: 100}, 100},
		{"block out of range", dataHdr{object: 1, chunk: 1, frameLen: 100, block: 1, k: 1, plen: 100}, 100},
		{"wrong k", dataHdr{object: 1, chunk: 1, frameLen: 5000, block: 0, k: 3, plen: 1000}, 1000},
		{"short data symbol", dataHdr{object: 1, chunk: 1, frameLen: 5000, k: 4, plen: 999}, 999},
		{"short parity", dataHdr{object: 1, chunk: 1, frameLen: 5000, k: 4, index: 4, plen: 999}, 999},
		{"plen lies", dataHdr{object: 1, chunk: 1, frameLen: 100, k: 1, plen: 100}, 99},
		{"huge frame", dataHdr{object: 1, chunk: 1, frameLen: 1 << 30, k: 4, plen: 1000}, 1000},
		{"tiny frame", dataHdr{object: 1, chunk: 1, frameLen: 10, k: 1, plen: 10}, 10},
	} {
		_, body, err := (*signer)(nil).open(mk(tc.d, tc.n))
		if err == nil {
			_, _, err = parseData(body, g)
		}
		if !errors.Is(err, errMalformed) {
			t.Errorf("%s: err = %v", tc.name, err)
		}
	}
	bad := testAnnounce()
	bad.k = 0
	h, body, _ := (*signer)(nil).open(bad.marshal(buf, 1))
	if _, err := parseAnnounce(h, body); err == nil {
		t.Error("announce with k=0 accepted")
	}
	h.digestTag[0] ^= 1
	_, body, _ = (*signer)(nil).open(testAnnounce().marshal(buf, 1))
	if _, err := parseAnnounce(h, body); err == nil {
		t.Error("announce whose tag does not match its digest accepted")
	}
}

// FuzzPacket feeds arbitrary datagrams through every parser a receiver
// or sender runs, and data packets into an assembler: none may panic,
// and the assembler's bookkeeping must stay within its bounds.
func FuzzPacket(f *testing.F) {
	buf := make([]byte, maxDatagram)
	f.Add(testAnnounce().marshal(buf, 1))
	f.Add((&hello{id: 1, name: "x"}).marshal(buf, 1, testTag))
	f.Add((&status{id: 1, state: 1, nacks: []nack{{kind: nackBlock, need: 1, count: 1}}}).marshal(buf, 1, testTag))
	f.Add((&done{id: 1, result: 3, ranges: []span{{0, 1}}}).marshal(buf, 1, testTag, 1500))
	d := dataHdr{object: 1, chunk: 2, frameLen: 2500, block: 0, index: 1, k: 3, plen: 1000}
	p := make([]byte, dataHdrLen, 1100)
	d.put(p, 1, testTag)
	f.Add(append(p, make([]byte, 1000)...))
	d = dataHdr{object: 1, chunk: 2, frameLen: 2500, block: 0, index: 4, k: 3, plen: 1000}
	p = make([]byte, dataHdrLen, 1100)
	d.put(p, 1, testTag)
	f.Add(append(p, make([]byte, 1000)...))

	f.Add(zeroRunTables([]imagefmt.ZeroRun{{Start: 1, Count: 2}, {Start: 5, Count: 1}}, 64<<10)[0])
	g := &geometry{sym: 1000, k: 3, p: 1, objects: 4, frames: 3, chunkSize: 64 << 10, numChunks: 8}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if runs, err := parseZeroRunTable(pkt, 8); err == nil {
			for _, r := range runs {
				if r.Count <= 0 || r.Start < 0 || r.Start+r.Count > 8 {
					t.Fatalf("table accepted run %+v", r)
				}
			}
		}
		var cs codecs
		asm := newAssembler(g, &cs, 1<<20)
		// Two copies: the second sees the first's state.
		for range 2 {
			h, body, err := (*signer)(nil).open(pkt)
			if err != nil {
				return
			}
			switch h.typ {
			case pktAnnounce:
				parseAnnounce(h, body)
			case pktHello:
				parseHello(body)
			case pktStatus:
				parseStatus(body)
			case pktDone:
				parseDone(body)
			case pktWelcome, pktDoneAck:
				parseID(body)
			case pktData:
				d, payload, err := parseData(body, g)
				if err != nil {
					return
				}
				if _, err := asm.add(&d, payload); err != nil {
					return
				}
				asm.nacks(position{3, 0}, true, true, 100)
			}
		}
		if asm.used < 0 || asm.used > 2<<20 {
			t.Fatalf("assembler holds %d bytes", asm.used)
		}
	})
}

func TestZeroRunTables(t *testing.T) {
	var runs []imagefmt.ZeroRun
	for i := range int64(40000) {
		runs = append(runs, imagefmt.ZeroRun{Start: 3 * i, Count: 2})
	}
	tables := zeroRunTables(runs, 64<<10)
	if len(tables) < 2 {
		t.Fatalf("%d runs in %d tables", len(runs), len(tables))
	}
	var got []imagefmt.ZeroRun
	for _, tb := range tables {
		if len(tb) > maxFrameLen(64<<10) {
			t.Fatalf("table of %d bytes", len(tb))
		}
		r, err := parseZeroRunTable(tb, 3*40000)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r...)
	}
	if !reflect.DeepEqual(got, runs) {
		t.Fatal("runs differ after the round trip")
	}
	bad := bytes.Clone(tables[0])
	bad[20] ^= 1
	if _, err := parseZeroRunTable(bad, 3*40000); !errors.Is(err, imagefmt.ErrChecksum) {
		t.Fatalf("damaged table: %v", err)
	}
	if _, err := parseZeroRunTable(tables[0], 10); !errors.Is(err, imagefmt.ErrCorrupt) {
		t.Fatalf("runs beyond the disk: %v", err)
	}
}
