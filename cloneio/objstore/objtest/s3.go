// Package objtest starts the servers the object store tests upload to and
// read from, on loopback: an S3 server (gofakes3 in the test process by
// default; SeaweedFS's weed when DIMG_TEST_S3=seaweedfs) and nginx with
// WebDAV. Only tests import it.
//
// Both S3 servers sit behind a small proxy in the test process that can
// refuse or break chosen requests (Fault), so failures mid-upload are
// tested the same way on either. gofakes3 checks no signatures: the proxy
// refuses an unknown access key with S3's InvalidAccessKeyId, as AWS does;
// SeaweedFS checks them itself.
package objtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/dimg-project/dimg/cloneio/objstore"
)

// Credentials the test servers accept.
const (
	AccessKey = "DIMGTESTKEY"
	SecretKey = "dimg-test-secret-key"
	Bucket    = "dimg-test"
)

// S3 is a running S3 server with one empty bucket, Bucket.
type S3 struct {
	// Kind is "gofakes3" or "seaweedfs".
	Kind string
	// Endpoint is the proxy's URL (http://127.0.0.1:PORT).
	Endpoint string
	// Client is an SDK client with the test credentials.
	Client *s3.Client

	mu    sync.Mutex
	fault func(w http.ResponseWriter, r *http.Request) bool
}

// Fault installs f: it sees every request first and returns true when it
// answered (or broke) the request itself. nil removes it.
func (s *S3) Fault(f func(w http.ResponseWriter, r *http.Request) bool) {
	s.mu.Lock()
	s.fault = f
	s.mu.Unlock()
}

// StartS3 starts the S3 server for t (see the package doc), with its
// environment set for the AWS SDK and for dimg processes the test runs:
// AWS_ENDPOINT_URL, the keys, AWS_REGION, and no shared config files or
// instance metadata (a test never looks outside loopback).
func StartS3(t testing.TB) *S3 {
	t.Helper()
	s := &S3{Kind: "gofakes3"}
	var backend http.Handler
	if os.Getenv("DIMG_TEST_S3") == "seaweedfs" {
		target := startWeed(t)
		s.Kind = "seaweedfs"
		backend = httputil.NewSingleHostReverseProxy(target)
	} else {
		mem := s3mem.New()
		backend = gofakes3.New(mem, gofakes3.WithIntegrityCheck(true), gofakes3.WithLogger(gofakes3.DiscardLog())).Server()
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		f := s.fault
		s.mu.Unlock()
		if f != nil && f(w, r) {
			return
		}
		if s.Kind == "gofakes3" && !strings.Contains(r.Header.Get("Authorization"), "Credential="+AccessKey+"/") {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusForbidden)
			if r.Method != http.MethodHead {
				io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>`)
			}
			return
		}
		backend.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s.Endpoint = srv.URL
	SetEnv(t, s.Endpoint)
	o, err := objstore.NewS3(context.Background(), objstore.S3Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Client = o.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(Bucket)}); err != nil {
		t.Fatalf("%s: create bucket: %v", s.Kind, err)
	}
	t.Logf("S3 server: %s at %s", s.Kind, s.Endpoint)
	return s
}

// SetEnv points the AWS SDK (in this process and in the processes it
// starts) at endpoint with the test credentials, and away from the
// user's config files and the instance metadata service.
func SetEnv(t testing.TB, endpoint string) {
	for k, v := range map[string]string{
		"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": AccessKey, "AWS_SECRET_ACCESS_KEY": SecretKey,
		"AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true", "AWS_PROFILE": "",
		"AWS_CONFIG_FILE": "/nonexistent/dimg-test", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/dimg-test",
		"AWS_ENDPOINT_URL_S3": "", "AWS_SESSION_TOKEN": "",
	} {
		t.Setenv(k, v)
	}
	os.Unsetenv("AWS_PROFILE")
	os.Unsetenv("AWS_ENDPOINT_URL_S3")
	os.Unsetenv("AWS_SESSION_TOKEN")
}

// URL is s3://Bucket/key.
func (s *S3) URL(key string) string { return "s3://" + Bucket + "/" + key }

// Keys lists the bucket's objects.
func (s *S3) Keys(t testing.TB) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := s.Client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(Bucket)})
	if err != nil {
		t.Fatalf("list objects: %v", err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	sort.Strings(keys)
	return keys
}

// Uploads lists the keys of the bucket's incomplete multipart uploads.
func (s *S3) Uploads(t testing.TB) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := s.Client.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(Bucket)})
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorCode() == "NoSuchUpload" {
		return nil // gofakes3's answer when there is none
	}
	if err != nil {
		t.Fatalf("list multipart uploads: %v", err)
	}
	var keys []string
	for _, u := range out.Uploads {
		keys = append(keys, aws.ToString(u.Key))
	}
	return keys
}

// Get reads a whole object.
func (s *S3) Get(t testing.TB, key string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := s.Client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(Bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return b
}

// Put stores an object.
func (s *S3) Put(t testing.TB, key string, data []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := s.Client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(Bucket), Key: aws.String(key),
		Body: strings.NewReader(string(data)), ContentLength: aws.Int64(int64(len(data)))}); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// WeedPath is where a weed binary built for the tests is kept (see
// scripts/build-weed.sh), unless DIMG_WEED names another.
func WeedPath() string {
	if p := os.Getenv("DIMG_WEED"); p != "" {
		return p
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "dimg-s3test", "weed")
}

// startWeed runs `weed server` with its S3 gateway on loopback ports and
// returns the gateway's URL; it skips t if there is no weed binary.
func startWeed(t testing.TB) *url.URL {
	t.Helper()
	bin := WeedPath()
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("DIMG_TEST_S3=seaweedfs but no weed binary at %s (build it with scripts/build-weed.sh): %v", bin, err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "s3.json")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`{"identities":[{"name":"dimg","credentials":[{"accessKey":%q,"secretKey":%q}],"actions":["Admin","Read","Write","List","Tagging"]}]}`, AccessKey, SecretKey)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := freePorts(t, 4)
	logf, exited, err := startServer(t, filepath.Join(dir, "weed.log"), bin, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-dir="+dir,
		fmt.Sprintf("-master.port=%d", p[0]), fmt.Sprintf("-volume.port=%d", p[1]), fmt.Sprintf("-filer.port=%d", p[2]),
		"-s3", fmt.Sprintf("-s3.port=%d", p[3]), "-s3.config="+cfg, "-master.volumeSizeLimitMB=256", "-volume.max=20")
	if err != nil {
		t.Fatalf("start weed: %v", err)
	}
	u := &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", p[3])}
	deadline := time.Now().Add(60 * time.Second)
	for {
		// The gateway is ready when it answers an S3 request (an
		// unsigned one gets an S3 error, not a refused connection).
		resp, err := http.Get(u.String() + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				break
			}
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("weed exited at start:\n%s", tail(log))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("weed's S3 gateway not ready after 60 s:\n%s", tail(log))
		}
	}
	return u
}

// startServer starts bin with args, its output in the file logPath, and
// stops it (waiting at most 10 s) when t ends. It returns the log file, a
// channel closed when the process exits, and the error of a process that
// could not start, for the caller to skip or fail on.
func startServer(t testing.TB, logPath, bin string, args ...string) (*os.File, <-chan struct{}, error) {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		cancel()
		logf.Close()
		return nil, nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
		}
		logf.Close()
	})
	return logf, exited, nil
}

func tail(b []byte) string {
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// freePorts returns n loopback ports free at the time of the call.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// waitListening waits until addr accepts connections or exited closes.
func waitListening(addr string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("the server exited")
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening after %s", addr, timeout)
		}
	}
}
