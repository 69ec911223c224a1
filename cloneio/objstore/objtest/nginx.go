package objtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// DAV is nginx serving Root over WebDAV on loopback: under URL/ it takes
// PUT, DELETE and MOVE; under URL/nomove/ only PUT and DELETE (a server
// that cannot rename).
type DAV struct {
	URL  string
	Root string
}

// StartDAV runs nginx (Debian's nginx-light has the DAV module) for t; it
// skips t when nginx is not installed.
func StartDAV(t testing.TB) *DAV {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/sbin/nginx"} {
			if _, e := os.Stat(p); e == nil {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		t.Skip("nginx not installed (apt-get install nginx-light): no WebDAV server to upload to")
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "www")
	for _, d := range []string{root, filepath.Join(root, "nomove"), filepath.Join(dir, "tmp"), filepath.Join(dir, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	port := freePorts(t, 1)[0]
	// As root nginx's workers would run as nobody, who cannot write into
	// the test's directory: keep them as the user running the test.
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	conf := fmt.Sprintf(`%s
daemon off;
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/logs/error.log;
events { worker_connections 64; }
http {
	access_log off;
	client_body_temp_path %[2]s/tmp/body;
	proxy_temp_path %[2]s/tmp/proxy;
	fastcgi_temp_path %[2]s/tmp/fastcgi;
	uwsgi_temp_path %[2]s/tmp/uwsgi;
	scgi_temp_path %[2]s/tmp/scgi;
	client_max_body_size 0;
	server {
		listen 127.0.0.1:%[3]d;
		root %[4]s;
		location / {
			dav_methods PUT DELETE MOVE;
			create_full_put_path on;
			dav_access user:rw group:r all:r;
			autoindex on;
		}
		location /nomove/ {
			dav_methods PUT DELETE;
			autoindex on;
		}
	}
}
`, user, dir, port, root)
	cf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out, exited, err := startServer(t, filepath.Join(dir, "logs", "stderr"), bin, "-c", cf, "-p", dir)
	if err != nil {
		t.Skipf("nginx: %v", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := waitListening(addr, exited, 15*time.Second); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "logs", "error.log"))
		so, _ := os.ReadFile(out.Name())
		t.Fatalf("nginx: %v\n%s%s", err, so, log)
	}
	return &DAV{URL: "http://" + addr, Root: root}
}

// Files lists the files under the served directory (relative paths,
// hidden ones included), so a test sees temporary names left behind.
func (d *DAV) Files(t testing.TB) []string {
	t.Helper()
	var files []string
	err := filepath.Walk(d.Root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !info.IsDir() {
			rel, _ := filepath.Rel(d.Root, p)
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
