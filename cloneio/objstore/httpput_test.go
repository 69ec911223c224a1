package objstore_test

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dimg-project/dimg/cloneio"
	"github.com/dimg-project/dimg/cloneio/objstore"
	"github.com/dimg-project/dimg/cloneio/objstore/objtest"
)

// TestDAVUpload: an upload to nginx's WebDAV appears at the URL only on
// Commit, complete; an abort leaves no file, not even the temporary one.
func TestDAVUpload(t *testing.T) {
	dav := objtest.StartDAV(t)
	ctx := testCtx(t)
	data := randomBytes(9*mib+7, 5)

	up, err := objstore.Create(ctx, dav.URL+"/images/a.dimg", objstore.UploadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := writeInPieces(up, data); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dav.Root, "images", "a.dimg")); err == nil {
		t.Fatal("the image is at its URL before Commit")
	}
	if err := up.Commit(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dav.Root, "images", "a.dimg"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("uploaded file: %d bytes, %v; want %d bytes equal", len(got), err, len(data))
	}
	if f := dav.Files(t); len(f) != 1 {
		t.Errorf("files on the server: %v (temporary files left?)", f)
	}

	// An existing file is refused without Force, replaced with it.
	if _, err := objstore.Create(ctx, dav.URL+"/images/a.dimg", objstore.UploadOptions{}); !errors.Is(err, cloneio.ErrExists) {
		t.Fatalf("existing file: %v", err)
	}
	up, err = objstore.Create(ctx, dav.URL+"/images/a.dimg", objstore.UploadOptions{Force: true, Size: 5})
	if err != nil {
		t.Fatal(err)
	}
	up.Write([]byte("hello"))
	if err := up.Commit(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dav.Root, "images", "a.dimg")); string(got) != "hello" {
		t.Fatalf("replaced file holds %q", got)
	}

	// Abort mid-way: nothing new on the server.
	up, err = objstore.Create(ctx, dav.URL+"/images/b.dimg", objstore.UploadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := writeInPieces(up, data[:3*mib]); err != nil {
		t.Fatal(err)
	}
	up.Abort()
	if f := dav.Files(t); len(f) != 1 || f[0] != filepath.Join("images", "a.dimg") {
		t.Errorf("files after an abort: %v", f)
	}
}

// TestDAVNoMove: a server that takes PUT but not MOVE is refused before
// anything is uploaded, with a message saying what to enable.
func TestDAVNoMove(t *testing.T) {
	dav := objtest.StartDAV(t)
	_, err := objstore.Create(testCtx(t), dav.URL+"/nomove/a.dimg", objstore.UploadOptions{})
	if !errors.Is(err, objstore.ErrNoMove) || !strings.Contains(err.Error(), "dav_methods") {
		t.Fatalf("server without MOVE: %v", err)
	}
	if testing.Verbose() {
		t.Log(err)
	}
	if f := dav.Files(t); len(f) != 0 {
		t.Errorf("files left: %v", f)
	}
}

// TestHTTPUploadErrors: a server without PUT, one refusing access and a
// PUT that fails at the end each give a clear error and leave nothing.
func TestHTTPUploadErrors(t *testing.T) {
	ctx := testCtx(t)
	noPut := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.WriteHeader(http.StatusMethodNotAllowed)
	}))
	defer noPut.Close()
	if _, err := objstore.Create(ctx, noPut.URL+"/a.dimg", objstore.UploadOptions{}); err == nil || !strings.Contains(err.Error(), "does not accept PUT") {
		t.Errorf("server without PUT: %v", err)
	}
	denied := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer denied.Close()
	if _, err := objstore.Create(ctx, denied.URL+"/a.dimg", objstore.UploadOptions{}); !errors.Is(err, objstore.ErrAccess) || !strings.Contains(err.Error(), "/a.dimg") {
		t.Errorf("refused: %v", err)
	}
	if _, err := objstore.Create(ctx, denied.URL+"/dir/", objstore.UploadOptions{}); err == nil {
		t.Error("a folder URL was accepted")
	}
}
