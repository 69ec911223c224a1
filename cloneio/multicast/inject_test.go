package multicast

import (
	"context"
	"log/slog"
	"math/rand"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dimg-project/dimg/imagefmt"
)

// onLog is a slog.Handler that passes each message to a function: a test
// learns what the sender did as it happens.
type onLog func(msg string)

func (f onLog) Enabled(context.Context, slog.Level) bool { return true }
func (f onLog) Handle(_ context.Context, r slog.Record) error {
	f(r.Message)
	return nil
}
func (f onLog) WithAttrs([]slog.Attr) slog.Handler { return f }
func (f onLog) WithGroup(string) slog.Handler      { return f }

// forgery builds data packets carrying a well-formed frame with the wrong
// content for the image's first stored chunk: if a receiver accepted them,
// that chunk would be written wrong and its verification would fail.
type forgery struct {
	g     geometry
	chunk uint32
	raw   []byte
}

func newForgery(t *testing.T, img string, a *announce) *forgery {
	r, err := imagefmt.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var first imagefmt.Entry
	for e := range r.Entries() {
		first = e
		break
	}
	// Incompressible, so the forged object spans many packets and blocks.
	data := make([]byte, r.Header().ChunkLen(first.Chunk))
	rand.New(rand.NewSource(99)).Read(data)
	var enc imagefmt.Encoder
	f, err := enc.Encode(make([]byte, imagefmt.FrameBufSize(len(data))), first.Chunk, data)
	if err != nil {
		t.Fatal(err)
	}
	g := geometry{sym: a.symSize, k: a.k, p: a.p, objects: a.objects, chunkSize: a.chunkSize, numChunks: a.numChunks()}
	return &forgery{g: g, chunk: uint32(first.Chunk), raw: f.Raw}
}

// packets returns every data symbol of the forged object 0, sealed by sig
// (nil: unsigned), with the given session and digest tag.
func (f *forgery) packets(session uint64, tag [8]byte, sig *signer) [][]byte {
	var out [][]byte
	n := len(f.raw)
	for b := range f.g.blocks(n) {
		k := f.g.blockK(n, b)
		for i := range k {
			off := (b*f.g.k + i) * f.g.sym
			pl := f.raw[off:min(n, off+f.g.sym)]
			d := dataHdr{object: 0, chunk: f.chunk, frameLen: uint32(n), block: uint16(b), index: uint8(i), k: uint8(k), plen: uint16(len(pl))}
			p := make([]byte, dataHdrLen, dataHdrLen+len(pl)+tagLen)
			d.put(p, session, tag)
			p = append(p, pl...)
			if sig != nil {
				p = sig.seal(p)
			}
			out = append(out, p)
		}
	}
	return out
}

func TestLoopbackInjection(t *testing.T) {
	loopbackOK(t)
	fx := newFixture(t, 8<<20, 256<<10, 6)
	key := []byte("the real key")
	for _, tc := range []struct {
		name        string
		key         []byte
		wantForeign int // forged variants the receiver must count as foreign
		wantBadAuth int // ... as failing authentication
	}{
		// Keyed session: another session signed with the right key
		// (foreign), the right session with a wrong key and unsigned (bad
		// authentication).
		{name: "keyed", key: key, wantForeign: 1, wantBadAuth: 2},
		// Open session: another session id and a wrong digest tag
		// (foreign); a signed packet the receiver cannot check (bad auth).
		{name: "open", wantForeign: 2, wantBadAuth: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			grp, port := loopEndpoint()
			ep, err := resolveEndpoint(grp, port, "lo")
			if err != nil {
				t.Fatal(err)
			}
			// Listen like a receiver to learn the session, as an attacker on
			// the LAN would.
			spy, err := openGroupSocket(ctx, ep)
			if err != nil {
				t.Fatal(err)
			}
			defer spy.Close()
			targets, outs := startReceivers(ctx, t, 1, grp, port, ReceiveOptions{Key: tc.key, Wait: 20 * time.Second})

			joined := make(chan struct{})
			var once sync.Once
			logger := slog.New(onLog(func(msg string) {
				if msg == "receiver joined" {
					once.Do(func() { close(joined) })
				}
			}))
			sendDone := make(chan error, 1)
			var res *SendResult
			go func() {
				var err error
				res, err = Send(ctx, fx.img, SendOptions{Group: grp, Port: port, Interface: "lo", MinReceivers: 2,
					MaxWait: 30 * time.Second, Key: tc.key, Logger: logger})
				sendDone <- err
			}()

			var a *announce
			var h header
			buf := make([]byte, maxDatagram)
			for a == nil {
				spy.SetReadDeadline(time.Now().Add(10 * time.Second))
				n, _, err := spy.ReadFromUDPAddrPort(buf)
				if err != nil {
					t.Fatalf("no announcement: %v", err)
				}
				var body []byte
				if h, body, err = newSigner(tc.key).open(buf[:n]); err == nil && h.typ == pktAnnounce {
					a, _ = parseAnnounce(h, body)
				}
			}
			select {
			case <-joined:
			case err := <-sendDone:
				t.Fatalf("send ended before the receiver joined: %v", err)
			case <-time.After(awaitTimeout):
				t.Fatal("the receiver never joined")
			}
			fg := newForgery(t, fx.img, a)
			var batches [][][]byte
			wrongTag := h.digestTag
			wrongTag[0] ^= 0xff
			if tc.key != nil {
				batches = append(batches,
					fg.packets(h.session^0x5555, h.digestTag, newSigner(tc.key)), // foreign
					fg.packets(h.session, h.digestTag, newSigner([]byte("wrong"))),
					fg.packets(h.session, h.digestTag, nil))
			} else {
				batches = append(batches,
					fg.packets(h.session^0x5555, h.digestTag, nil), // foreign
					fg.packets(h.session, wrongTag, nil),           // foreign image
					fg.packets(h.session, h.digestTag, newSigner([]byte("some key"))))
			}
			inj, err := openSenderSocket(ep, 1)
			if err != nil {
				t.Fatal(err)
			}
			defer inj.Close()
			per := len(batches[0])
			for _, b := range batches {
				for _, p := range b {
					if _, err := inj.WriteToUDPAddrPort(p, netip.AddrPortFrom(ep.group.Addr(), ep.group.Port())); err != nil {
						t.Fatal(err)
					}
				}
			}
			time.Sleep(300 * time.Millisecond) // let the first receiver read them
			late, lateOut := filepath.Join(t.TempDir(), "second"), make(chan rxOut, 1)
			go func() {
				r, err := Receive(ctx, late, ReceiveOptions{Group: grp, Port: port, Interface: "lo", Key: tc.key, Wait: 20 * time.Second})
				lateOut <- rxOut{r, err}
			}()
			if err := await(t, "send", sendDone); err != nil {
				t.Fatalf("send: %v", err)
			}
			o := await(t, "receiver", outs[0])
			if o.err != nil || !o.res.OK {
				t.Fatalf("receiver: %v %+v", o.err, o.res)
			}
			if l := await(t, "second receiver", lateOut); l.err != nil {
				t.Fatalf("second receiver: %v", l.err)
			}
			sameFile(t, fx.disk, targets[0])
			sameFile(t, fx.disk, late)
			d := o.res.Dropped
			if d.Foreign < int64(tc.wantForeign*per) || d.BadAuth < int64(tc.wantBadAuth*per) {
				t.Fatalf("dropped %+v, want at least %d foreign and %d bad-auth (%d packets per forgery)",
					d, tc.wantForeign*per, tc.wantBadAuth*per, per)
			}
			if o.res.Corrupt != 0 {
				t.Fatalf("%d forged objects reached the frame check", o.res.Corrupt)
			}
			t.Logf("dropped %+v (forgery of %d packets); sender dropped %+v", d, per, res.Dropped)
		})
	}
}
