package objstore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dimg-project/dimg/cloneio"
	"github.com/dimg-project/dimg/cloneio/objstore"
	"github.com/dimg-project/dimg/cloneio/objstore/objtest"
)

const mib = 1 << 20

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// writeInPieces writes data in uneven pieces, as capture's frames come.
func writeInPieces(w io.Writer, data []byte) error {
	sizes := []int{1, 4095, 65536, 3 * mib, 777}
	for i := 0; len(data) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(data))
		if _, err := w.Write(data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestS3UploadAndRead(t *testing.T) {
	srv := objtest.StartS3(t)
	ctx := testCtx(t)
	data := randomBytes(12*mib+12345, 1)
	var acked atomic.Int64
	up, err := objstore.Create(ctx, srv.URL("dir/a.dimg"), objstore.UploadOptions{PartSize: 5 * mib, Inflight: 2, Progress: addFunc(func(n int64) { acked.Add(n) })})
	if err != nil {
		t.Fatal(err)
	}
	if err := writeInPieces(up, data); err != nil {
		t.Fatal(err)
	}
	if got := srv.Keys(t); len(got) != 0 {
		t.Fatalf("objects before Commit: %v", got)
	}
	if err := up.Commit(); err != nil {
		t.Fatal(err)
	}
	if acked.Load() != int64(len(data)) || up.Written() != int64(len(data)) {
		t.Errorf("progress %d, written %d, want %d", acked.Load(), up.Written(), len(data))
	}
	if got := srv.Get(t, "dir/a.dimg"); !bytes.Equal(got, data) {
		t.Fatalf("object differs from what was written (%d vs %d bytes)", len(got), len(data))
	}
	if u := srv.Uploads(t); len(u) != 0 {
		t.Errorf("incomplete uploads left: %v", u)
	}

	s, err := objstore.NewS3(ctx, objstore.S3Options{})
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.Stat(ctx, objtest.Bucket, "dir/a.dimg")
	if err != nil {
		t.Fatal(err)
	}
	if obj.Size() != int64(len(data)) || obj.ETag() == "" {
		t.Fatalf("stat: size %d etag %q", obj.Size(), obj.ETag())
	}
	for _, r := range [][2]int64{{0, 1}, {0, 4096}, {5*mib - 10, 20}, {int64(len(data)) - 7, 7}, {0, int64(len(data))}} {
		buf := make([]byte, r[1])
		if n, err := obj.ReadAt(buf, r[0]); err != nil || n != len(buf) || !bytes.Equal(buf, data[r[0]:r[0]+r[1]]) {
			t.Fatalf("ReadAt(%d, %d): n %d err %v, equal %v", r[0], r[1], n, err, bytes.Equal(buf, data[r[0]:r[0]+r[1]]))
		}
	}
	// Past the end: short read with io.EOF.
	buf := make([]byte, 10)
	if n, err := obj.ReadAt(buf, int64(len(data))-3); n != 3 || err != io.EOF {
		t.Errorf("ReadAt over the end: %d, %v", n, err)
	}
}

// TestS3UploadBoundedMemory: a long upload through a slow server holds
// at most Inflight+1 part buffers: Write waits for the server.
func TestS3UploadBoundedMemory(t *testing.T) {
	srv := objtest.StartS3(t)
	var inflight, peak atomic.Int32
	srv.Fault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Query().Get("partNumber") != "" {
			n := inflight.Add(1)
			defer inflight.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			time.Sleep(50 * time.Millisecond)
		}
		return false
	})
	up, err := objstore.Create(testCtx(t), srv.URL("big.dimg"), objstore.UploadOptions{PartSize: 5 * mib, Inflight: 2})
	if err != nil {
		t.Fatal(err)
	}
	chunk := randomBytes(mib, 9)
	for range 24 {
		if _, err := up.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := up.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := objstore.PartBuffers(up); n > 3 {
		t.Errorf("%d part buffers for 5 parts with 2 in flight (want at most 3)", n)
	}
	if p := peak.Load(); p > 2 {
		t.Errorf("%d parts in flight at once (want at most 2)", p)
	}
	if got := srv.Get(t, "big.dimg"); len(got) != 24*mib || !bytes.Equal(got[23*mib:], chunk) {
		t.Errorf("object: %d bytes", len(got))
	}
}

type addFunc func(int64)

func (f addFunc) Start(string, int64) {}
func (f addFunc) Add(n int64)         { f(n) }

// TestS3UploadRefusesExisting: without Force an object at the key is
// refused before anything is sent; with it, replaced.
func TestS3UploadRefusesExisting(t *testing.T) {
	srv := objtest.StartS3(t)
	ctx := testCtx(t)
	srv.Put(t, "x.dimg", []byte("old"))
	if _, err := objstore.Create(ctx, srv.URL("x.dimg"), objstore.UploadOptions{}); !errors.Is(err, cloneio.ErrExists) || !strings.Contains(err.Error(), "s3://dimg-test/x.dimg") {
		t.Fatalf("existing object: %v", err)
	}
	if u := srv.Uploads(t); len(u) != 0 {
		t.Errorf("uploads started: %v", u)
	}
	up, err := objstore.Create(ctx, srv.URL("x.dimg"), objstore.UploadOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	up.Write([]byte("new"))
	if err := up.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := string(srv.Get(t, "x.dimg")); got != "new" {
		t.Fatalf("got %q", got)
	}
}

// TestS3UploadFailures: an upload that fails or is abandoned mid-way
// leaves no object and no incomplete multipart upload.
func TestS3UploadFailures(t *testing.T) {
	srv := objtest.StartS3(t)
	data := randomBytes(16*mib, 2)
	check := func(t *testing.T) {
		t.Helper()
		if k := srv.Keys(t); len(k) != 0 {
			t.Errorf("objects left: %v", k)
		}
		if u := srv.Uploads(t); len(u) != 0 {
			t.Errorf("incomplete uploads left: %v", u)
		}
	}
	t.Run("abort", func(t *testing.T) {
		up, err := objstore.Create(testCtx(t), srv.URL("abort.dimg"), objstore.UploadOptions{PartSize: 5 * mib})
		if err != nil {
			t.Fatal(err)
		}
		if err := writeInPieces(up, data[:11*mib]); err != nil {
			t.Fatal(err)
		}
		up.Abort()
		if err := up.Commit(); err == nil {
			t.Fatal("Commit after Abort succeeded")
		}
		check(t)
	})
	t.Run("part refused", func(t *testing.T) {
		// Part 2 is refused for good (403 is not retried).
		srv.Fault(func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method == http.MethodPut && r.URL.Query().Get("partNumber") == "2" {
				// Read the body first, as S3 does: a refusal sent while
				// the client writes is a reset connection, retried.
				io.Copy(io.Discard, r.Body)
				w.WriteHeader(http.StatusForbidden)
				io.WriteString(w, `<Error><Code>AccessDenied</Code><Message>injected</Message></Error>`)
				return true
			}
			return false
		})
		defer srv.Fault(nil)
		up, err := objstore.Create(testCtx(t), srv.URL("fail.dimg"), objstore.UploadOptions{PartSize: 5 * mib})
		if err != nil {
			t.Fatal(err)
		}
		err = writeInPieces(up, data)
		if err == nil {
			err = up.Commit()
		} else {
			up.Abort()
		}
		if !errors.Is(err, objstore.ErrAccess) || !strings.Contains(err.Error(), "part 2") {
			t.Fatalf("want an access error naming part 2, got %v", err)
		}
		check(t)
	})
	t.Run("connection dropped", func(t *testing.T) {
		// Every part's connection is cut: retried, then given up.
		var n atomic.Int32
		srv.Fault(func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method == http.MethodPut && r.URL.Query().Get("partNumber") != "" {
				n.Add(1)
				panic(http.ErrAbortHandler)
			}
			return false
		})
		defer srv.Fault(nil)
		up, err := objstore.Create(testCtx(t), srv.URL("drop.dimg"), objstore.UploadOptions{PartSize: 5 * mib, Inflight: 1})
		if err != nil {
			t.Fatal(err)
		}
		err = writeInPieces(up, data)
		if err == nil {
			err = up.Commit()
		} else {
			up.Abort()
		}
		if err == nil {
			t.Fatal("upload through a server that drops every part succeeded")
		}
		if n.Load() < 2 {
			t.Errorf("part sent %d times: not retried", n.Load())
		}
		check(t)
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(testCtx(t))
		up, err := objstore.Create(ctx, srv.URL("cancel.dimg"), objstore.UploadOptions{PartSize: 5 * mib})
		if err != nil {
			t.Fatal(err)
		}
		if err := writeInPieces(up, data[:7*mib]); err != nil {
			t.Fatal(err)
		}
		cancel()
		if _, err := up.Write(data[:6*mib]); err == nil {
			// The write may fit in the buffer; Commit must fail then.
			if err := up.Commit(); !errors.Is(err, context.Canceled) {
				t.Fatalf("Commit after cancel: %v", err)
			}
		} else {
			up.Abort()
		}
		check(t)
	})
}

// TestS3Errors: missing objects and buckets, bad credentials, an object
// replaced under a reader and a server that ignores Range each give an
// error that names the object and says what happened.
func TestS3Errors(t *testing.T) {
	srv := objtest.StartS3(t)
	ctx := testCtx(t)
	s, err := objstore.NewS3(ctx, objstore.S3Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, objtest.Bucket, "missing.dimg"); !errors.Is(err, objstore.ErrNotFound) || !strings.Contains(err.Error(), "s3://dimg-test/missing.dimg") {
		t.Errorf("missing object: %v", err)
	}
	if _, err := s.Stat(ctx, "no-such-bucket", "a.dimg"); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("missing bucket: %v", err)
	}

	bad, err := objstore.NewS3(ctx, objstore.S3Options{AccessKey: "WRONGKEY", SecretKey: "wrong"})
	if err != nil {
		t.Fatal(err)
	}
	srv.Put(t, "a.dimg", randomBytes(1000, 3))
	if _, err := bad.Stat(ctx, objtest.Bucket, "a.dimg"); !errors.Is(err, objstore.ErrAccess) || !strings.Contains(err.Error(), "s3://dimg-test/a.dimg") || !strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID") {
		t.Errorf("bad credentials, stat: %v", err)
	}
	if _, err := objstore.Create(ctx, srv.URL("new.dimg"), objstore.UploadOptions{S3: objstore.S3Options{AccessKey: "WRONGKEY", SecretKey: "wrong"}}); !errors.Is(err, objstore.ErrAccess) || !strings.Contains(err.Error(), "s3://dimg-test/new.dimg") {
		t.Errorf("bad credentials, upload: %v", err)
	}

	obj, err := s.Stat(ctx, objtest.Bucket, "a.dimg")
	if err != nil {
		t.Fatal(err)
	}
	srv.Put(t, "a.dimg", randomBytes(1000, 4)) // same size, other bytes
	if _, err := obj.ReadAt(make([]byte, 100), 0); !errors.Is(err, objstore.ErrChanged) || !strings.Contains(err.Error(), "s3://dimg-test/a.dimg") {
		t.Errorf("replaced object: %v", err)
	}

	obj, err = s.Stat(ctx, objtest.Bucket, "a.dimg")
	if err != nil {
		t.Fatal(err)
	}
	whole := randomBytes(1000, 4)
	srv.Fault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || r.Header.Get("Range") == "" {
			return false
		}
		// A server that ignores Range: 200 and the whole object. (Not by
		// deleting the header: a real S3 server checks it is signed.)
		w.Header().Set("ETag", obj.ETag())
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		w.Write(whole)
		return true
	})
	defer srv.Fault(nil)
	if _, err := obj.ReadAt(make([]byte, 100), 10); !errors.Is(err, objstore.ErrNoRange) {
		t.Errorf("server without Range: %v", err)
	}
}

func TestParseS3URL(t *testing.T) {
	for _, c := range []struct {
		in, bucket, key string
		ok              bool
	}{
		{"s3://b/k.dimg", "b", "k.dimg", true},
		{"s3://b/dir/sub/k.dimg", "b", "dir/sub/k.dimg", true},
		{"S3://b/k", "b", "k", true},
		{"s3://b", "", "", false},
		{"s3://b/", "", "", false},
		{"s3://b/dir/", "", "", false},
		{"s3:///k", "", "", false},
		{"s3://b/k?x=1", "", "", false},
		{"http://b/k", "", "", false},
	} {
		b, k, err := objstore.ParseS3URL(c.in)
		if (err == nil) != c.ok || b != c.bucket || k != c.key {
			t.Errorf("ParseS3URL(%q) = %q, %q, %v", c.in, b, k, err)
		}
	}
	for s, want := range map[string]bool{"s3://b/k": true, "https://h/x": true, "http://h/x": true, "x.dimg": false, "/tmp/s3://x": false, "-": false, "s3://": false} {
		if objstore.IsURL(s) != want {
			t.Errorf("IsURL(%q) != %v", s, want)
		}
	}
}
