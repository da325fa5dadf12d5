package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// membraneDaemon is the plugin under test, started on first use so that a
// bridge-only run never builds it.
type membraneDaemon struct {
	buildOnce sync.Once
	bin       string
	buildErr  error
	// buildReported is set once a test has shown the compiler output.
	buildReported atomic.Bool

	mu sync.Mutex
	// cmd is the running daemon (nil when stopped); done closes when it exits.
	cmd  *exec.Cmd
	done chan struct{}
	// killed is set when the harness itself stopped cmd.
	killed bool
	// startErr is sticky: once the daemon failed to come up, later tests
	// fail at once instead of each waiting for the same timeout.
	startErr error

	// flags are the daemon flags `membrane daemon --help` lists, read once
	// after the build: optional flags are passed only when the binary
	// knows them, so a daemon without them still starts for the other tests.
	flagsOnce sync.Once
	flags     map[string]bool
	// metricsAddr is the loopback address given to --metrics-address,
	// picked once so that restarts keep it.
	metricsAddr string
	// dockerHost, when set, replaces the harness's dockerd as
	// --docker-host at the next start (a test that needs the daemon cut
	// off from Docker's API sets it, and clears it before it restarts
	// the daemon again).
	dockerHost string
}

var membrane membraneDaemon

// membraneArgs are the daemon flags the harness relies on, plus
// --policy-dir (an empty directory the tests may fill) and
// --metrics-address when the binary has them. The caller holds membrane.mu.
func membraneArgs() []string {
	dockerHost := h.dockerHost
	if membrane.dockerHost != "" {
		dockerHost = membrane.dockerHost
	}
	args := []string{
		"daemon",
		"--plugin-name", pluginName,
		"--state-dir", filepath.Join(h.tmp, "state"),
		"--bpf-dir", bpfDir,
		"--api-socket", apiSocket(),
		"--docker-host", dockerHost,
		"--host-device", hostDevice,
		"--log-level", "debug",
	}
	if daemonHasFlag("policy-dir") {
		args = append(args, "--policy-dir", policyDir())
	}
	if daemonHasFlag("metrics-address") && membrane.metricsAddr != "" {
		args = append(args, "--metrics-address", membrane.metricsAddr)
	}
	return args
}

// apiSocket is the daemon's management API socket; the CLI talks to it.
func apiSocket() string { return filepath.Join(h.tmp, "api.sock") }

// policyDir is the daemon's --policy-dir; it is empty unless a test puts a
// file there (and takes it out again).
func policyDir() string { return filepath.Join(h.tmp, "policies") }

// daemonHasFlag reports whether `membrane daemon --help` lists --name. On
// first use it also creates policyDir and picks the metrics address.
func daemonHasFlag(name string) bool {
	membrane.flagsOnce.Do(func() {
		membrane.flags = map[string]bool{}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// --help makes pflag print the flags and the command fail.
		out, _ := exec.CommandContext(ctx, membrane.bin, "daemon", "--help").CombinedOutput()
		for _, f := range strings.Fields(string(out)) {
			if n, ok := strings.CutPrefix(f, "--"); ok {
				n, _, _ = strings.Cut(n, "=")
				membrane.flags[n] = true
			}
		}
		_ = os.MkdirAll(policyDir(), 0o700)
		if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
			membrane.metricsAddr = ln.Addr().String()
			ln.Close()
		}
	})
	return membrane.flags[name]
}

// requireMembrane makes sure the daemon runs, building and starting it if
// needed, and fails t clearly if it cannot. It also fails t if the daemon
// dies while t runs, and prints the daemon's log lines from t's time when t
// fails.
func requireMembrane(t *testing.T) {
	t.Helper()
	membrane.buildOnce.Do(func() {
		// `membrane daemon` runs the membraned beside it.
		membrane.bin = filepath.Join(h.tmp, "membrane")
		membrane.buildErr = errors.Join(
			goBuild(membrane.bin, "./cmd/membrane"),
			goBuild(filepath.Join(h.tmp, "membraned"), "./cmd/membraned"))
	})
	if membrane.buildErr != nil {
		if membrane.buildReported.Swap(true) {
			t.Fatal("membrane binaries do not build (compiler output in the first membrane test's failure)")
		}
		t.Fatalf("membrane binaries do not build: %v", membrane.buildErr)
	}
	membrane.mu.Lock()
	if err := membrane.startErr; err != nil {
		membrane.mu.Unlock()
		t.Fatalf("membrane daemon is unavailable (it failed earlier in this run): %v", err)
	}
	running := membrane.cmd != nil && !isClosed(membrane.done)
	crashed := membrane.cmd != nil && !running && !membrane.killed
	pid := 0
	if running {
		pid = membrane.cmd.Process.Pid
	}
	membrane.mu.Unlock()
	if crashed {
		t.Logf("membrane daemon had exited between tests; restarting it")
	}
	if !running {
		startMembrane(t)
	} else if err := activatePlugin(); err != nil {
		// A hung daemon would make every Docker call below wait for
		// Docker's plugin retries; fail at once instead.
		t.Fatalf("membrane daemon (pid %d) does not answer on %s: %v", pid, pluginSocket, err)
	}
	mlog, dlog := markLog(h.membraneLog), markLog(h.dockerdLog)
	t.Cleanup(func() {
		membrane.mu.Lock()
		cmd, done, killed := membrane.cmd, membrane.done, membrane.killed
		membrane.mu.Unlock()
		if cmd != nil && !killed && isClosed(done) {
			t.Errorf("membrane daemon exited during this test: %v", cmd.ProcessState)
			membrane.mu.Lock()
			membrane.cmd = nil
			membrane.mu.Unlock()
		}
		if t.Failed() {
			t.Logf("membrane log during this test:\n%s", mlog.since(150))
			t.Logf("dockerd log during this test:\n%s", dlog.since(40))
		}
	})
}

// startMembrane starts the daemon and waits until its plugin socket answers
// Docker's activation handshake for both drivers.
func startMembrane(t testing.TB) {
	t.Helper()
	if err := startMembraneErr(); err != nil {
		membrane.mu.Lock()
		membrane.startErr = err
		membrane.mu.Unlock()
		t.Fatalf("start membrane daemon: %v", err)
	}
}

func startMembraneErr() error {
	membrane.mu.Lock()
	defer membrane.mu.Unlock()
	if membrane.cmd != nil && !isClosed(membrane.done) {
		return fmt.Errorf("already running as pid %d", membrane.cmd.Process.Pid)
	}
	logf, err := os.OpenFile(h.membraneLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "===== harness: starting %s %s at %s =====\n", membrane.bin, strings.Join(membraneArgs(), " "), time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(membrane.bin, membraneArgs()...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	membrane.cmd, membrane.done, membrane.killed = cmd, done, false

	deadline := time.Now().Add(membraneStartTimeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("daemon exited during start (%v); its log:\n%s", cmd.ProcessState, tailFile(h.membraneLog, 30))
		default:
		}
		if lastErr = activatePlugin(); lastErr == nil {
			cliHung.Store(nil) // a new daemon: the CLI gets another chance
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	<-done
	membrane.killed = true
	return fmt.Errorf("%s did not answer /Plugin.Activate within %s (last error: %v); log:\n%s",
		pluginSocket, membraneStartTimeout, lastErr, tailFile(h.membraneLog, 30))
}

// activatePlugin performs Docker's plugin handshake on the socket: a POST to
// /Plugin.Activate that must list NetworkDriver and IpamDriver.
func activatePlugin() error {
	client := http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", pluginSocket)
		}},
	}
	defer client.CloseIdleConnections()
	resp, err := client.Post("http://plugin/Plugin.Activate", "application/vnd.docker.plugins.v1.2+json", strings.NewReader("{}"))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64*1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("Plugin.Activate: %s: %s", resp.Status, body)
	}
	var act struct{ Implements []string }
	if err := json.Unmarshal(body, &act); err != nil {
		return fmt.Errorf("Plugin.Activate: %w: %s", err, body)
	}
	for _, want := range []string{"NetworkDriver", "IpamDriver"} {
		if !slices.Contains(act.Implements, want) {
			return fmt.Errorf("Plugin.Activate implements %v, missing %s", act.Implements, want)
		}
	}
	return nil
}

// killMembrane sends SIGKILL to the daemon (kill -9) and waits until it is gone.
func killMembrane(t testing.TB) {
	t.Helper()
	membrane.mu.Lock()
	cmd, done := membrane.cmd, membrane.done
	membrane.killed = true
	membrane.mu.Unlock()
	if cmd == nil {
		t.Fatal("kill membrane: not running")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatalf("kill membrane: %v", err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("membrane daemon survived SIGKILL for 5s")
	}
	membrane.mu.Lock()
	membrane.cmd = nil
	membrane.mu.Unlock()
	if f, err := os.OpenFile(h.membraneLog, os.O_WRONLY|os.O_APPEND, 0); err == nil {
		fmt.Fprintf(f, "===== harness: SIGKILL at %s =====\n", time.Now().Format(time.RFC3339Nano))
		f.Close()
	}
}

// stopMembrane ends the daemon at teardown: SIGTERM, then SIGKILL.
func stopMembrane() {
	membrane.mu.Lock()
	defer membrane.mu.Unlock()
	if membrane.cmd == nil || isClosed(membrane.done) {
		return
	}
	membrane.killed = true
	terminate("membrane", membrane.cmd.Process, membrane.done, membraneStopTimeout)
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return lastLines(string(b), n)
}
