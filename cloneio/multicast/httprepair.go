package multicast

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/dimg-project/dimg/imagefmt"
)

// httpImage is an image file served over HTTP, read with Range requests:
// imagefmt.NewReader needs only the header, the footer and the index, and
// each frame is then one request of its exact byte range.
type httpImage struct {
	ctx    context.Context
	client *http.Client
	url    string
	size   int64
}

// maxRangeBytes bounds one response body: the largest frame of the
// largest chunk size, or an index read in pieces by the reader.
const maxRangeBytes = 64 << 20

func openHTTPImage(ctx context.Context, client *http.Client, url string) (*imagefmt.Reader, error) {
	if client == nil {
		client = http.DefaultClient
	}
	h := &httpImage{ctx: ctx, client: client, url: url}
	size, err := h.probeSize()
	if err != nil {
		return nil, fmt.Errorf("multicast: repair URL %s: %w", url, err)
	}
	h.size = size
	r, err := imagefmt.NewReader(h, size, imagefmt.ReaderOptions{CacheBytes: 1})
	if err != nil {
		return nil, fmt.Errorf("multicast: repair URL %s: %w", url, err)
	}
	return r, nil
}

// probeSize learns the file size from a one-byte range request (some
// servers omit Content-Length on HEAD).
func (h *httpImage) probeSize() (int64, error) {
	resp, err := h.get(0, 1)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1))
	cr := resp.Header.Get("Content-Range") // "bytes 0-0/12345"
	_, total, ok := strings.Cut(cr, "/")
	n, err := strconv.ParseInt(total, 10, 64)
	if !ok || err != nil || n <= 0 {
		return 0, fmt.Errorf("server did not report the file size (Content-Range %q)", cr)
	}
	return n, nil
}

func (h *httpImage) get(off, n int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(h.ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusPartialContent {
		resp.Body.Close()
		return nil, fmt.Errorf("range request: %s (the server must support Range)", resp.Status)
	}
	return resp, nil
}

// ReadAt implements io.ReaderAt with one range request per call.
func (h *httpImage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("multicast: negative offset")
	}
	if off >= h.size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), h.size-off)
	n := 0
	for int64(n) < want {
		k := min(want-int64(n), maxRangeBytes)
		resp, err := h.get(off+int64(n), k)
		if err != nil {
			return n, fmt.Errorf("multicast: repair URL: %w", err)
		}
		m, err := io.ReadFull(resp.Body, p[n:n+int(k)])
		resp.Body.Close()
		n += m
		if err != nil {
			return n, fmt.Errorf("multicast: repair URL: %w", err)
		}
	}
	if int64(n) < int64(len(p)) {
		return n, io.EOF
	}
	return n, nil
}
