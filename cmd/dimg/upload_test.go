package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dimg-project/dimg/cloneio/objstore/objtest"
)

// TestUploadS3: capture streams to s3:// and push uploads an image; what
// is stored is the image (it restores the same disk as the local
// capture), an existing object is refused without --force, and bad
// credentials or a file that is not an image are clear errors that store
// nothing. The S3 server is gofakes3 in the test process, or SeaweedFS
// with DIMG_TEST_S3=seaweedfs (see cloneio/objstore/objtest).
func TestUploadS3(t *testing.T) {
	srv := objtest.StartS3(t)
	src := disk(t, "bare")
	dir := t.TempDir()
	local := filepath.Join(dir, "local.dimg")
	mustRun(t, "capture", "-q", src, local)
	want := filepath.Join(dir, "want.raw")
	mustRun(t, "restore", "-q", local, want)

	// capture SRC s3://...: the stored object is a sound image of SRC.
	mustRun(t, "capture", "-q", src, srv.URL("host/cap.dimg"))
	got := filepath.Join(dir, "cap.dimg")
	if err := os.WriteFile(got, srv.Get(t, "host/cap.dimg"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "verify", "-q", got)
	restored := filepath.Join(dir, "cap.raw")
	mustRun(t, "restore", "-q", got, restored)
	sameFiles(t, want, restored)

	// Read from s3:// directly: the same as the downloaded file.
	url, cache := srv.URL("host/cap.dimg"), "--cache="+t.TempDir()
	var li, ri map[string]any
	json.Unmarshal([]byte(mustRun(t, "info", "--json", got)), &li)
	json.Unmarshal([]byte(mustRun(t, "info", "--json", cache, url)), &ri)
	delete(li, "image")
	delete(ri, "image")
	if a, b := mustJSON(t, li), mustJSON(t, ri); a != b {
		t.Fatalf("info differs:\n%s\n%s", a, b)
	}
	mustRun(t, "verify", "-q", cache, url)
	lsLocal := mustRun(t, "ls", "-R", "--json", got, "/")
	if rem := mustRun(t, "ls", "-R", "--json", cache, url, "/"); rem != lsLocal {
		t.Fatal("ls -R differs between the file and s3://")
	}
	var ents []struct {
		Path string
		Type string
		Size int64
	}
	if err := json.Unmarshal([]byte(lsLocal), &ents); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if e.Type != "file" || e.Size == 0 || n >= 4 {
			continue
		}
		n++
		p := "/" + strings.TrimPrefix(e.Path, "/")
		if mustRun(t, "cat", got, p) != mustRun(t, "cat", "--no-cache", url, p) {
			t.Fatalf("cat %s differs between the file and s3://", p)
		}
	}
	fromS3 := filepath.Join(dir, "s3.raw")
	mustRun(t, "restore", "-q", cache, url, fromS3)
	sameFiles(t, want, fromS3)
	// Missing objects and refused reads: clear errors naming the URL.
	if _, errs, code := run(t, nil, "info", "--no-cache", srv.URL("host/missing.dimg")); code != exitFailure || !strings.Contains(errs, "s3://"+objtest.Bucket+"/host/missing.dimg") || !strings.Contains(errs, "no such object") {
		t.Errorf("info of a missing object: exit %d, %s", code, errs)
	}

	// capture again to the same key: refused, then replaced with --force.
	if _, errs, code := run(t, nil, "capture", "-q", src, srv.URL("host/cap.dimg")); code != exitFailure || !strings.Contains(errs, "already exists") {
		t.Errorf("capture over an object: exit %d, %s", code, errs)
	}

	// push IMAGE s3://...: the object is the image file, byte for byte.
	mustRun(t, "push", "-q", local, srv.URL("pushed.dimg"))
	if b, _ := os.ReadFile(local); !bytes.Equal(srv.Get(t, "pushed.dimg"), b) {
		t.Fatal("pushed object differs from the image file")
	}
	if _, errs, code := run(t, nil, "push", local, srv.URL("pushed.dimg")); code != exitFailure || !strings.Contains(errs, "--force") {
		t.Errorf("push over an object: exit %d, %s", code, errs)
	}
	mustRun(t, "push", "-q", "--force", local, srv.URL("pushed.dimg"))

	// Not an image: refused before anything is sent (exit 3, damage).
	if _, errs, code := run(t, nil, "push", src, srv.URL("raw.dimg")); code != exitCorrupt {
		t.Errorf("push of a raw disk: exit %d, %s", code, errs)
	}
	if _, errs, code := run(t, nil, "push", local, "/tmp/x.dimg"); code != exitUsage {
		t.Errorf("push to a path: exit %d, %s", code, errs)
	}

	// Bad credentials: a message naming the bucket and key.
	t.Setenv("AWS_ACCESS_KEY_ID", "NOSUCHKEY")
	_, errs, code := run(t, nil, "push", local, srv.URL("denied.dimg"))
	if code != exitFailure || !strings.Contains(errs, "s3://"+objtest.Bucket+"/denied.dimg") || !strings.Contains(errs, "access denied") {
		t.Errorf("bad credentials: exit %d, %s", code, errs)
	}
	_, errs, code = run(t, nil, "ls", "--no-cache", url)
	if code != exitFailure || !strings.Contains(errs, url) || !strings.Contains(errs, "access denied") {
		t.Errorf("bad credentials, ls: exit %d, %s", code, errs)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", objtest.AccessKey)

	keys := srv.Keys(t)
	if strings.Join(keys, " ") != "host/cap.dimg pushed.dimg" {
		t.Errorf("objects in the bucket: %v", keys)
	}
	if u := srv.Uploads(t); len(u) != 0 {
		t.Errorf("incomplete uploads: %v", u)
	}
}

// TestUploadS3Interrupted: Ctrl-C while the image is being uploaded
// aborts the multipart upload (no object, no upload left); kill -9 leaves
// no object either (the incomplete upload stays until a lifecycle rule or
// a later abort removes it: S3 shows it in no listing of objects).
func TestUploadS3Interrupted(t *testing.T) {
	srv := objtest.StartS3(t)
	src := disk(t, "bare")
	stalled := make(chan struct{}, 1)
	release := make(chan struct{})
	defer close(release)
	// Every part upload hangs until the client gives up.
	srv.Fault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPut || r.URL.Query().Get("partNumber") == "" {
			return false
		}
		select {
		case stalled <- struct{}{}:
		default:
		}
		select {
		case <-r.Context().Done():
		case <-release:
		case <-time.After(time.Minute):
		}
		panic(http.ErrAbortHandler)
	})
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			key := "int-" + strings.ReplaceAll(sig.String(), " ", "") + ".dimg"
			cmd := exec.Command(dimgBin, "capture", "-q", src, srv.URL(key))
			var errb bytes.Buffer
			cmd.Stderr = &errb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-stalled:
			case <-time.After(time.Minute):
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("no part upload started: %s", errb.String())
			}
			cmd.Process.Signal(sig)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatal("dimg did not stop within 30 s of the signal")
			}
			if ee, ok := err.(*exec.ExitError); sig == syscall.SIGINT && (!ok || ee.ExitCode() != exitCanceled) {
				t.Errorf("after Ctrl-C: %v (want exit %d)\n%s", err, exitCanceled, errb.String())
			}
			if k := srv.Keys(t); len(k) != 0 {
				t.Errorf("objects after %s: %v", sig, k)
			}
			uploads := srv.Uploads(t)
			if sig == syscall.SIGINT && len(uploads) != 0 {
				t.Errorf("incomplete uploads after Ctrl-C: %v", uploads)
			}
			t.Logf("after %s: incomplete uploads %v", sig, uploads)
		})
	}
}

// TestUploadDAV: capture and push to nginx's WebDAV: the file appears
// complete or not at all; a server that cannot MOVE is refused clearly.
func TestUploadDAV(t *testing.T) {
	dav := objtest.StartDAV(t)
	src := disk(t, "bare")
	dir := t.TempDir()
	local := filepath.Join(dir, "local.dimg")
	mustRun(t, "capture", "-q", src, local)

	mustRun(t, "push", "-q", local, dav.URL+"/images/p.dimg")
	sameFiles(t, local, filepath.Join(dav.Root, "images", "p.dimg"))

	mustRun(t, "capture", "-q", src, dav.URL+"/images/c.dimg")
	mustRun(t, "verify", "-q", filepath.Join(dav.Root, "images", "c.dimg"))
	want, got := filepath.Join(dir, "want.raw"), filepath.Join(dir, "got.raw")
	mustRun(t, "restore", "-q", local, want)
	mustRun(t, "restore", "-q", filepath.Join(dav.Root, "images", "c.dimg"), got)
	sameFiles(t, want, got)

	_, errs, code := run(t, nil, "push", local, dav.URL+"/nomove/p.dimg")
	if code != exitFailure || !strings.Contains(errs, "MOVE") {
		t.Errorf("server without MOVE: exit %d, %s", code, errs)
	}
	if f := dav.Files(t); len(f) != 2 {
		t.Errorf("files on the server: %v", f)
	}
}
