package remotetest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// NginxOptions configure Nginx; the zero value serves root as it is.
type NginxOptions struct {
	// LimitRate throttles each response (nginx limit_rate, e.g. "12500k"
	// for 100 Mbit/s); empty: no limit.
	LimitRate string
	// Listen is the address to listen on (default 127.0.0.1 and a free
	// port).
	Listen string
}

// Nginx serves the directory root over HTTP from an nginx subprocess
// until the test ends and returns its base URL ("http://127.0.0.1:PORT").
// It skips the test, saying why, when nginx is not installed.
func Nginx(t testing.TB, root string, opt NginxOptions) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx"} {
			if _, e := os.Stat(p); e == nil {
				bin, err = p, nil
				break
			}
		}
	}
	if err != nil {
		t.Skip("nginx not installed (apt-get install nginx-light): remote reads are tested against it")
	}
	url, stop, err := StartNginx(bin, root, t.TempDir(), opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return url
}

// StartNginx starts nginx (the binary bin) serving root, with its files in
// dir, and waits until it answers. stop ends it.
func StartNginx(bin, root, dir string, opt NginxOptions) (url string, stop func(), err error) {
	addr := opt.Listen
	if addr == "" {
		if addr, err = freeAddr(); err != nil {
			return "", nil, err
		}
	}
	root, err = filepath.Abs(root)
	if err != nil {
		return "", nil, err
	}
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", nil, err
	}
	limit := ""
	if opt.LimitRate != "" {
		limit = "limit_rate " + opt.LimitRate + ";"
	}
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 100000;
  client_body_temp_path %[2]s;
  proxy_temp_path %[2]s;
  fastcgi_temp_path %[2]s;
  uwsgi_temp_path %[2]s;
  scgi_temp_path %[2]s;
  types { application/octet-stream dimg; }
  default_type application/octet-stream;
  server {
    listen %[3]s;
    root %[4]s;
    %[5]s
  }
}
`, dir, tmp, addr, root, limit)
	cf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin, "-c", cf, "-p", dir, "-e", filepath.Join(dir, "error.log"))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start nginx: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop = func() {
		cmd.Process.Kill()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	}
	url = "http://" + addr
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url + "/")
		if err == nil {
			resp.Body.Close()
			return url, stop, nil
		}
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			return "", nil, fmt.Errorf("nginx exited: %s%s", out.String(), log)
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, fmt.Errorf("nginx did not answer on %s within 10 s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
