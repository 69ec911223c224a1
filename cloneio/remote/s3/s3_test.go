package s3_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dimg-project/dimg/cloneio/objstore/objtest"
	"github.com/dimg-project/dimg/cloneio/remote"
	s3backend "github.com/dimg-project/dimg/cloneio/remote/s3"
)

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func client() *remote.Client {
	return remote.New(remote.Options{
		Backends: map[string]remote.Backend{"s3": s3backend.New(s3backend.Options{StallTimeout: 500 * time.Millisecond})},
		Retries:  4, Backoff: 20 * time.Millisecond,
	})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// TestRead: reads through remote.File equal the object; a connection cut
// mid-body and a body that stalls are retried and still give the right
// bytes; an object replaced under the reader is ErrChanged.
func TestRead(t *testing.T) {
	srv := objtest.StartS3(t)
	data := randomBytes(3<<20+5, 7)
	srv.Put(t, "img.dimg", data)
	f, err := client().Open(ctx(t), srv.URL("img.dimg"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Size() != int64(len(data)) || f.Identity().ETag == "" {
		t.Fatalf("size %d, identity %v", f.Size(), f.Identity())
	}
	check := func(off, n int64) {
		t.Helper()
		buf := make([]byte, n)
		if got, err := f.ReadAt(buf, off); err != nil || got != int(n) || !bytes.Equal(buf, data[off:off+n]) {
			t.Fatalf("ReadAt(%d, %d): %d, %v, equal %v", off, n, got, err, bytes.Equal(buf, data[off:off+n]))
		}
	}
	check(0, 4096)
	check(1<<20, 1<<20)

	// The first ranged GET of each kind of fault is broken once.
	var cut, stalled atomic.Bool
	srv.Fault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || r.Header.Get("Range") == "" {
			return false
		}
		switch {
		case !cut.Swap(true):
			// Half the body, then the connection drops.
			var a, b int64
			if _, err := fmtSscan(r.Header.Get("Range"), &a, &b); err != nil {
				return false
			}
			w.Header().Set("Content-Range", "bytes "+strconv.FormatInt(a, 10)+"-"+strconv.FormatInt(b, 10)+"/"+strconv.Itoa(len(data)))
			w.Header().Set("Content-Length", strconv.FormatInt(b-a+1, 10))
			w.Header().Set("ETag", f.Identity().ETag)
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[a : a+(b-a+1)/2])
			panic(http.ErrAbortHandler)
		case !stalled.Swap(true):
			time.Sleep(2 * time.Second) // past the stall timeout
		}
		return false
	})
	f2, err := client().Open(ctx(t), srv.URL("img.dimg"))
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	buf := make([]byte, 300000)
	if n, err := f2.ReadAt(buf, 2<<20); err != nil || n != len(buf) || !bytes.Equal(buf, data[2<<20:2<<20+len(buf)]) {
		t.Fatalf("read through faults: %d, %v, equal %v", n, err, bytes.Equal(buf, data[2<<20:2<<20+len(buf)]))
	}
	srv.Fault(nil)
	if !cut.Load() || !stalled.Load() {
		t.Fatal("faults not injected")
	}

	f3, err := client().Open(ctx(t), srv.URL("img.dimg"))
	if err != nil {
		t.Fatal(err)
	}
	defer f3.Close()
	srv.Put(t, "img.dimg", randomBytes(len(data), 8)) // replaced, same size
	if _, err := f3.ReadAt(make([]byte, 10), 3<<20-100); !errors.Is(err, remote.ErrChanged) || !strings.Contains(err.Error(), "s3://dimg-test/img.dimg") {
		t.Fatalf("replaced object: %v", err)
	}
}

func fmtSscan(rng string, a, b *int64) (int, error) {
	s := strings.TrimPrefix(rng, "bytes=")
	x, y, _ := strings.Cut(s, "-")
	var err error
	if *a, err = strconv.ParseInt(x, 10, 64); err != nil {
		return 0, err
	}
	*b, err = strconv.ParseInt(y, 10, 64)
	return 2, err
}

// TestOpenErrors: a missing object or bucket and bad credentials fail at
// once (no retries) with the sentinel and the URL in the message.
func TestOpenErrors(t *testing.T) {
	srv := objtest.StartS3(t)
	start := time.Now()
	if _, err := client().Open(ctx(t), srv.URL("missing.dimg")); !errors.Is(err, remote.ErrNotFound) || !strings.Contains(err.Error(), "s3://dimg-test/missing.dimg") {
		t.Errorf("missing object: %v", err)
	}
	if _, err := client().Open(ctx(t), "s3://no-such-bucket/x.dimg"); !errors.Is(err, remote.ErrNotFound) {
		t.Errorf("missing bucket: %v", err)
	}
	if _, err := client().Open(ctx(t), "s3://dimg-test/"); err == nil || !remote.IsPermanent(err) {
		t.Errorf("URL without a key: %v", err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "NOSUCHKEY")
	srv.Put(t, "a.dimg", []byte("x"))
	if _, err := client().Open(ctx(t), srv.URL("a.dimg")); !errors.Is(err, remote.ErrDenied) || !strings.Contains(err.Error(), "s3://dimg-test/a.dimg") {
		t.Errorf("bad credentials: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("errors took %s: retried?", d)
	}
}
