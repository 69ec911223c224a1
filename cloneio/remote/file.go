package remote

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dimg-project/dimg/imagefmt"
)

// File is an io.ReaderAt over an opened remote object (what
// imagefmt.NewReader reads). It is safe for concurrent use. ReadAt
// returns exactly the bytes asked for or an error: a failure is retried
// with backoff (a body cut short resumes where it stopped), and an
// object that changed, is gone or refuses access ends the read with the
// package's sentinel.
type File struct {
	name string
	obj  Object
	id   Identity
	opt  *Options
	ctx  context.Context // ends when the File is closed
	stop context.CancelFunc

	fetched  atomic.Int64 // bytes received from the backend
	requests atomic.Int64
	cached   atomic.Int64 // bytes served by the cache instead

	ra readAhead
}

var (
	_ imagefmt.ImageFile   = (*File)(nil)
	_ imagefmt.FrameCacher = (*File)(nil)
)

// metaMax is the largest read File keeps in the cache by itself: the
// header, commit records and index nodes of an image are smaller, its
// chunks go through imagefmt's FrameCache (Cache.Frames) instead.
const metaMax = 64 << 10

func newFile(name string, obj Object, opt *Options) *File {
	ctx, stop := context.WithCancel(context.Background())
	f := &File{name: name, obj: obj, id: obj.Identity(), opt: opt, ctx: ctx, stop: stop}
	f.ra.init(f)
	return f
}

// Name is the URL the File was opened with (for messages).
func (f *File) Name() string { return f.name }

// Size is the object's size in bytes.
func (f *File) Size() int64 { return f.id.Size }

// Identity names the version of the object this File reads.
func (f *File) Identity() Identity { return f.id }

// Stats reports what the File fetched so far.
type Stats struct {
	Fetched  int64 // bytes received from the server
	Requests int64 // range requests sent (retries included)
	Cached   int64 // bytes of small reads served by the cache
}

// Stats reports what the File fetched so far.
func (f *File) Stats() Stats {
	return Stats{Fetched: f.fetched.Load(), Requests: f.requests.Load(), Cached: f.cached.Load()}
}

// FrameCache is the Client's cache as an imagefmt.FrameCache (nil
// without one): imagefmt.OpenChain reads this File's frames through it.
func (f *File) FrameCache() imagefmt.FrameCache {
	if f.opt.Cache == nil {
		return nil
	}
	return f.opt.Cache.Frames()
}

// Close stops the reads in flight and releases the object.
func (f *File) Close() error {
	f.stop()
	f.ra.close()
	return f.obj.Close()
}

// ReadAt reads len(p) bytes at off.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("remote: %s: negative offset", f.name)
	}
	if off >= f.id.Size {
		return 0, io.EOF
	}
	var eof error
	if rem := f.id.Size - off; int64(len(p)) > rem {
		p, eof = p[:rem], io.EOF
	}
	if len(p) == 0 {
		return 0, eof
	}
	// Small reads are cached by the object's version: only when the
	// server names versions (a changed object of the same size could
	// otherwise be answered from the old one's entries).
	small := len(p) <= metaMax && f.opt.Cache != nil && (f.id.ETag != "" || !f.id.LastModified.IsZero())
	var key []byte
	if small {
		key = f.metaKey(off, len(p))
		if b, ok := f.opt.Cache.Get(key, p); ok && len(b) == len(p) {
			f.cached.Add(int64(len(p)))
			return len(p), eof
		}
	}
	if f.ra.serve(p, off) {
		return len(p), eof
	}
	if err := f.fetch(f.ctx, p, off); err != nil {
		return 0, err
	}
	f.ra.saw(off, int64(len(p)))
	if small {
		f.opt.Cache.Put(key, f.id.URL, p)
	}
	return len(p), eof
}

// metaKey is the cache key of the small read [off, off+n) of this version.
func (f *File) metaKey(off int64, n int) []byte {
	k := append([]byte("m\x00"), f.id.Key()...)
	k = binary.BigEndian.AppendUint64(k, uint64(off))
	return binary.BigEndian.AppendUint32(k, uint32(n))
}

// fetch reads p at off from the backend, retrying transient failures and
// resuming a body cut short.
func (f *File) fetch(ctx context.Context, p []byte, off int64) error {
	got := 0
	fails := 0
	var last error
	for got < len(p) {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("remote: %s: %w", f.name, err)
		}
		n, err := f.once(ctx, p[got:], off+int64(got))
		got += n
		if err == nil {
			continue
		}
		if n > 0 {
			fails = 0 // progress: the link works, keep going
		}
		if IsPermanent(err) {
			return f.readErr(len(p), off, err)
		}
		last = err
		fails++
		if fails > f.opt.retries() {
			return f.readErr(len(p), off, fmt.Errorf("gave up after %d attempts: %w", fails, last))
		}
		if f.opt.Logger != nil {
			f.opt.Logger.Warn("remote read failed, retrying", "url", f.name, "off", off+int64(got), "attempt", fails, "err", err)
		}
		if !sleep(ctx, f.opt.backoff(fails)) {
			return fmt.Errorf("remote: %s: %w", f.name, ctx.Err())
		}
	}
	return nil
}

func (f *File) readErr(n int, off int64, err error) error {
	return fmt.Errorf("remote: %s: read %d bytes at offset %d: %w", f.name, n, off, err)
}

// once is one range request: the bytes it got into p, and why it
// stopped short.
func (f *File) once(ctx context.Context, p []byte, off int64) (int, error) {
	f.requests.Add(1)
	if f.opt.Logger != nil {
		f.opt.Logger.Debug("remote range request", "url", f.name, "off", off, "len", len(p))
	}
	rc, err := f.obj.ReadRange(ctx, off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	n, err := io.ReadFull(rc, p)
	f.fetched.Add(int64(n))
	if f.opt.OnFetch != nil && n > 0 {
		f.opt.OnFetch(f, int64(n))
	}
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		err = fmt.Errorf("the response ended after %d of %d bytes: %w", n, len(p), io.ErrUnexpectedEOF)
	}
	return n, err
}

// sleep waits d or until ctx ends (false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// backoff is the wait before retry n (from 1): exponential from Backoff,
// at most 30 times it and 10 s, with jitter so parallel readers do not
// retry in step.
func (o *Options) backoff(n int) time.Duration {
	b := o.Backoff
	if b <= 0 {
		b = 200 * time.Millisecond
	}
	d := b << min(n-1, 5)
	d = min(d, 10*time.Second)
	return d/2 + rand.N(d/2+1)
}

func (o *Options) retries() int {
	if o.Retries <= 0 {
		return 8
	}
	return o.Retries
}

// readAhead fetches ahead of a sequential reader (a restore, a send, a
// FUSE readahead) in large aligned segments on several connections at
// once, so the link stays busy while the reader decodes and writes, and
// adjacent chunks travel in one request. Random reads never trigger it:
// a lazy read fetches only what it asks for.
type readAhead struct {
	f *File

	mu      sync.Mutex
	segs    map[int64]*segment // by segment number
	lastEnd int64              // end of the last read outside the segments
	seqRun  int64              // bytes read sequentially up to lastEnd
	window  int64              // segments to keep ahead; grows while sequential
	sem     chan struct{}
}

// segment is one read-ahead fetch of aligned segment n: the object's
// bytes [from, (n+1)·segSize), from ≥ n·segSize (the first segment of a
// run starts where the reader is, not before).
type segment struct {
	from int64
	done chan struct{}
	data []byte
	err  error
}

const (
	// segSize is the read-ahead request size: large enough that the
	// per-request latency is small beside the transfer, small enough
	// that a restore starts writing soon.
	segSize = 4 << 20
	// seqStart is how much must be read sequentially before reading
	// ahead: a lazy `cat` of one file never gets there.
	seqStart = 1 << 20
	// seqGap: a read starting this close after the previous end still
	// counts as sequential (small records between frames).
	seqGap = 256 << 10
	// seqIgnore: reads smaller than this (index nodes, commit records,
	// tiny frames) neither start nor break a sequential run.
	seqIgnore = 16 << 10
)

func (r *readAhead) init(f *File) {
	r.f = f
	r.segs = map[int64]*segment{}
	r.sem = make(chan struct{}, f.opt.parallel())
}

// maxWindow bounds the segments ahead (memory: maxWindow × segSize).
func (r *readAhead) maxWindow() int64 { return int64(2 * r.f.opt.parallel()) }

// saw records a read the segments did not serve, and starts reading
// ahead once the reads look sequential.
func (r *readAhead) saw(off, n int64) {
	if n < seqIgnore {
		return // an index node or record between the frames: not a change of course
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sawLocked(off, n)
}

// sawLocked is saw with r.mu held.
func (r *readAhead) sawLocked(off, n int64) {
	if off >= r.lastEnd-seqGap && off <= r.lastEnd+seqGap {
		r.seqRun += n
	} else {
		r.seqRun, r.window = n, 0
	}
	r.lastEnd = max(r.lastEnd, off+n)
	if off+n < r.lastEnd-seqGap {
		r.lastEnd = off + n
	}
	if r.seqRun >= seqStart {
		r.ahead(off + n)
	}
}

// ahead starts the segments after pos that are not fetched yet (r.mu
// held), and drops those behind it.
func (r *readAhead) ahead(pos int64) {
	if r.window == 0 {
		r.window = 1
	} else if r.window < r.maxWindow() {
		r.window *= 2
	}
	first := pos / segSize
	for s := range r.segs {
		// One segment of slack: parallel readers (verify's workers)
		// are not all at the same place.
		if s < first-1 {
			delete(r.segs, s)
		}
	}
	for s := first; s < first+min(r.window, r.maxWindow()) && s*segSize < r.f.id.Size; s++ {
		if _, ok := r.segs[s]; ok {
			continue
		}
		sg := &segment{from: max(s*segSize, pos), done: make(chan struct{})}
		r.segs[s] = sg
		go r.fetch(s, sg)
	}
}

func (r *readAhead) fetch(s int64, sg *segment) {
	defer close(sg.done)
	select {
	case r.sem <- struct{}{}:
		defer func() { <-r.sem }()
	case <-r.f.ctx.Done():
		sg.err = r.f.ctx.Err()
		return
	}
	n := min((s+1)*segSize, r.f.id.Size) - sg.from
	buf := make([]byte, n)
	if err := r.f.fetch(r.f.ctx, buf, sg.from); err != nil {
		sg.err = err
		return
	}
	sg.data = buf
}

// serve copies [off, off+len(p)) from the segments when they cover it
// (waiting for ones in flight), and keeps the read-ahead going. False:
// the caller fetches it itself.
func (r *readAhead) serve(p []byte, off int64) bool {
	end := off + int64(len(p))
	r.mu.Lock()
	var segs []*segment
	for s := off / segSize; s*segSize < end; s++ {
		sg, ok := r.segs[s]
		if !ok || sg.from > max(off, s*segSize) {
			r.mu.Unlock()
			return false
		}
		segs = append(segs, sg)
	}
	r.mu.Unlock()
	for i, sg := range segs {
		select {
		case <-sg.done:
		case <-r.f.ctx.Done():
			return false
		}
		if sg.err != nil {
			// Fetch it directly: that retries and reports the error.
			r.mu.Lock()
			s := off/segSize + int64(i)
			if r.segs[s] == sg {
				delete(r.segs, s)
			}
			r.mu.Unlock()
			return false
		}
	}
	for i, sg := range segs {
		s := off/segSize + int64(i)
		lo, hi := max(off, s*segSize), min(end, sg.from+int64(len(sg.data)))
		copy(p[lo-off:hi-off], sg.data[lo-sg.from:hi-sg.from])
	}
	if int64(len(p)) >= seqIgnore {
		r.mu.Lock()
		r.sawLocked(off, int64(len(p)))
		r.mu.Unlock()
	}
	return true
}

func (r *readAhead) close() {
	r.mu.Lock()
	clear(r.segs)
	r.mu.Unlock()
}
