package remotetest

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Fault is what Proxy does to a request.
type Fault int

const (
	// None forwards the request as it is.
	None Fault = iota
	// Drop sends the headers and half of the body, then closes the
	// connection.
	Drop
	// ShiftRange asks the server for the range one byte later and
	// answers with the server's (truthful) Content-Range.
	ShiftRange
	// LieRange asks the server for the range one byte later but answers
	// with the Content-Range asked for: wrong bytes a transfer check
	// cannot see.
	LieRange
	// Corrupt flips one byte in the middle of the body.
	Corrupt
	// NoRange drops the Range header: the server answers 200 with the
	// whole object.
	NoRange
	// Unavailable answers 503 Service Unavailable.
	Unavailable
	// Forbidden answers 403.
	Forbidden
)

// Proxy forwards requests to an upstream HTTP server, injecting faults.
// Requests for /r/N/PATH are redirected (302) to /r/N-1/PATH, and
// /r/0/PATH to /PATH: a chain of N+1 redirects.
type Proxy struct {
	URL      string // the proxy's base URL
	upstream string
	srv      *httptest.Server

	mu    sync.Mutex
	fault Fault
	count int // faulty requests left; <0: every request
	after int // healthy requests to pass before the faults start

	Requests  atomic.Int64 // range requests forwarded (redirects excluded)
	Redirects atomic.Int64
	BodyBytes atomic.Int64 // body bytes sent to clients
	Faults    atomic.Int64 // faults injected
	client    *http.Client
}

// NewProxy starts a proxy in front of upstream ("http://host:port") until
// the test ends.
func NewProxy(t interface{ Cleanup(func()) }, upstream string) *Proxy {
	p := &Proxy{upstream: strings.TrimSuffix(upstream, "/"),
		client: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	p.URL = p.srv.URL
	t.Cleanup(p.srv.Close)
	return p
}

// Inject makes the next count requests (after the next `after` healthy
// ones) suffer f; count < 0: all of them. Inject(None, 0, 0) heals.
func (p *Proxy) Inject(f Fault, after, count int) {
	p.mu.Lock()
	p.fault, p.after, p.count = f, after, count
	p.mu.Unlock()
}

// take returns the fault for this request.
func (p *Proxy) take() Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fault == None || p.count == 0 {
		return None
	}
	if p.after > 0 {
		p.after--
		return None
	}
	if p.count > 0 {
		p.count--
	}
	p.Faults.Add(1)
	return p.fault
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	if rest, ok := strings.CutPrefix(r.URL.Path, "/r/"); ok {
		n, path, _ := strings.Cut(rest, "/")
		k, err := strconv.Atoi(n)
		if err != nil {
			http.Error(w, "bad redirect chain", http.StatusBadRequest)
			return
		}
		p.Redirects.Add(1)
		to := "/" + path
		if k > 0 {
			to = fmt.Sprintf("/r/%d/%s", k-1, path)
		}
		http.Redirect(w, r, to, http.StatusFound)
		return
	}
	p.Requests.Add(1)
	f := p.take()
	switch f {
	case Unavailable:
		http.Error(w, "try again", http.StatusServiceUnavailable)
		return
	case Forbidden:
		http.Error(w, "no", http.StatusForbidden)
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.upstream+r.URL.RequestURI(), nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	for k, v := range r.Header {
		req.Header[k] = v
	}
	asked := r.Header.Get("Range")
	switch f {
	case NoRange:
		req.Header.Del("Range")
	case ShiftRange, LieRange:
		if a, b, ok := parseRange(asked); ok {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", a+1, b+1))
		}
	}
	resp, err := p.client.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	if f == LieRange && resp.StatusCode == http.StatusPartialContent {
		if a, b, ok := parseRange(asked); ok {
			total := resp.Header.Get("Content-Range")
			total = total[strings.LastIndexByte(total, '/')+1:]
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%s", a, b, total))
		}
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	switch f {
	case Corrupt:
		if len(body) > 0 {
			body[len(body)/2] ^= 0x55
		}
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(resp.StatusCode)
	if f == Drop && len(body) > 1 {
		n, _ := w.Write(body[:len(body)/2])
		p.BodyBytes.Add(int64(n))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // closes the connection mid-body
	}
	n, _ := w.Write(body)
	p.BodyBytes.Add(int64(n))
}

// parseRange parses "bytes=A-B".
func parseRange(s string) (int64, int64, bool) {
	r, ok := strings.CutPrefix(s, "bytes=")
	if !ok {
		return 0, 0, false
	}
	as, bs, ok := strings.Cut(r, "-")
	if !ok {
		return 0, 0, false
	}
	a, err1 := strconv.ParseInt(as, 10, 64)
	b, err2 := strconv.ParseInt(bs, 10, 64)
	return a, b, err1 == nil && err2 == nil
}
