package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// registryStartTimeout bounds the wait for the local registry to answer.
const registryStartTimeout = 10 * time.Second

// startRegistry runs Debian's distribution registry (package
// docker-registry) on a free loopback port, with its own config file and
// storage under the run's temporary directory, until t ends. It returns
// the registry's address (127.0.0.1:PORT): Docker pushes to and pulls from
// a registry on 127.0.0.0/8 without TLS.
func startRegistry(t *testing.T) string {
	t.Helper()
	bin, err := findBinary("docker-registry", "/usr/bin/docker-registry")
	if err != nil {
		t.Fatalf("the managed plugin test pushes to a local registry: %v (install docker-registry)", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	dir := filepath.Join(h.tmp, "registry")
	storage := filepath.Join(dir, "storage")
	if err := os.MkdirAll(storage, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.yml")
	config := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: %s
`, storage, addr)
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "registry.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "serve", cfg)
	// Keep the host's /etc/docker/registry settings out of the run.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start registry: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		terminate("registry", cmd.Process, done, 5*time.Second)
		if t.Failed() {
			t.Logf("registry log:\n%s", tailFile(logPath, 30))
		}
	})

	c := http.Client{Timeout: time.Second}
	deadline := time.Now().Add(registryStartTimeout)
	for {
		select {
		case <-done:
			t.Fatalf("registry exited during start (%v): %s", cmd.ProcessState, tailFile(logPath, 20))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/", nil)
		resp, err := c.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
			err = fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry on %s did not answer within %s: %v: %s", addr, registryStartTimeout, err, tailFile(logPath, 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
