package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/membrane-net/membrane/internal/testhost"
)

// Names the harness shares with the membrane daemon it starts.
const (
	pluginName   = "membrane-it"
	pluginSocket = "/run/docker/plugins/" + pluginName + ".sock"
	bpfDir       = "/sys/fs/bpf/" + pluginName
	hostDevice   = "mbrit0"
	testImage    = "membrane-it/probe:latest"

	// Every container and network the tests create carries this label.
	testLabel = "membrane-it=1"

	// Ports of `probe serve`, the default command of test containers.
	tcpPort    = "7000"
	udpPort    = "7001"
	streamPort = "7002"
)

// Timeouts: nothing in the suite waits without one.
const (
	dockerdStartTimeout  = 60 * time.Second
	dockerdStopTimeout   = 20 * time.Second
	membraneStartTimeout = 20 * time.Second
	membraneStopTimeout  = 5 * time.Second
	// Docker retries an unanswered plugin for 30 s; a CLI call gets more
	// than that, so a dead plugin shows up as Docker's error, not ours.
	dockerCmdTimeout = 90 * time.Second
	buildTimeout     = 5 * time.Minute
	lockTimeout      = 60 * time.Minute
)

// harness is the environment TestMain sets up once for the whole run.
type harness struct {
	tmp        string
	moduleRoot string
	goBin      string
	dockerBin  string
	dockerHost string
	dockerEnv  []string

	// forwardPolicy holds the iptables and ip6tables FORWARD policies
	// from before dockerd set them to DROP, restored at teardown.
	forwardPolicy map[string]string

	dockerd     *exec.Cmd
	dockerdDone chan struct{}
	dockerdLog  string

	membraneLog string

	// v4Base is a /16 that no host route or address touches; explicit
	// IPv4 subnets are carved from it. v6Base is the same for IPv6 /64s.
	v4Base netip.Prefix
	v6Base netip.Prefix
}

var (
	h harness
	// skipReason, when set, makes every test skip.
	skipReason string
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if skipReason = preflight(); skipReason != "" {
		fmt.Printf("integration: skipping all tests: %s\n", skipReason)
		return m.Run()
	}
	unlock, err := testhost.Lock(context.Background(), lockTimeout, func() {
		fmt.Printf("integration: waiting for another run to release %s\n", testhost.LockFile)
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "integration: %v\n", err)
		return 1
	}
	defer unlock()

	start := time.Now()
	if err := setup(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: setup: %v\n", err)
		dumpLogs()
		teardown()
		return 1
	}
	fmt.Printf("integration: dockerd and test image ready in %s (tmp %s)\n", time.Since(start).Round(time.Millisecond), h.tmp)
	code := m.Run()
	if code != 0 {
		dumpLogs()
	}
	teardown()
	return code
}

// requireEnv skips t when the run as a whole skips.
func requireEnv(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

func preflight() string {
	if testing.Short() {
		return "-short: the integration tests start a dockerd"
	}
	if os.Geteuid() != 0 {
		return "not root: the integration tests start a dockerd and load BPF programs"
	}
	if _, err := findBinary("dockerd", "/usr/sbin/dockerd", "/usr/bin/dockerd"); err != nil {
		return "dockerd not found (install docker.io)"
	}
	if _, err := findBinary("docker"); err != nil {
		return "docker CLI not found"
	}
	if _, err := findBinary("busybox", "/bin/busybox"); err != nil {
		return "busybox not found (install busybox-static)"
	}
	return ""
}

func findBinary(name string, fallbacks ...string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, p := range fallbacks {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", name, exec.ErrNotFound)
}

func setup() error {
	var err error
	if h.goBin, err = findBinary("go", "/usr/local/go/bin/go"); err != nil {
		return err
	}
	if h.dockerBin, err = findBinary("docker"); err != nil {
		return err
	}
	if h.tmp, err = os.MkdirTemp("", "membrane-it-"); err != nil {
		return err
	}
	h.dockerdLog = filepath.Join(h.tmp, "dockerd.log")
	h.membraneLog = filepath.Join(h.tmp, "membrane.log")
	h.dockerHost = "unix://" + filepath.Join(h.tmp, "docker.sock")
	cfgDir := filepath.Join(h.tmp, "docker-config")
	if err := os.MkdirAll(cfgDir, 0o700); err != nil {
		return err
	}
	h.dockerEnv = append(os.Environ(), "DOCKER_CONFIG="+cfgDir, "DOCKER_HOST="+h.dockerHost, "DOCKER_CLI_HINTS=false")

	out, err := exec.Command(h.goBin, "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return errors.New("go env GOMOD: not inside the membrane module")
	}
	h.moduleRoot = filepath.Dir(gomod)

	if h.v4Base, h.v6Base, err = freeBases(); err != nil {
		return err
	}
	if err := testhost.MountBPF(); err != nil {
		return err
	}
	cleanStale()
	h.forwardPolicy = testhost.ForwardPolicies()
	if err := startDockerd(); err != nil {
		return err
	}
	return buildImage()
}

// cleanStale removes what a crashed earlier run may have left under the
// names this harness owns.
func cleanStale() {
	_ = os.Remove(pluginSocket)
	_ = os.RemoveAll(bpfDir)
	_ = exec.Command("ip", "link", "del", hostDevice).Run()
	removeWorld()
}

func overlaySupported() bool {
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(strings.TrimPrefix(line, "nodev")) == "overlay" {
			return true
		}
	}
	// The module may simply not be loaded yet.
	return exec.Command("modprobe", "overlay").Run() == nil
}

func startDockerd() error {
	if err := writeDockerdConfig(false); err != nil {
		return err
	}
	if err := launchDockerd(); err != nil {
		return err
	}
	_, err := waitDockerd(dockerdStartTimeout)
	return err
}

// dockerdConfig is the harness dockerd's --config-file. It keeps
// /etc/docker/daemon.json out of the run; restart tests turn live-restore
// on and off in it.
func dockerdConfig() string { return filepath.Join(h.tmp, "daemon.json") }

func writeDockerdConfig(liveRestore bool) error {
	b, err := json.Marshal(map[string]any{"live-restore": liveRestore})
	if err != nil {
		return err
	}
	return os.WriteFile(dockerdConfig(), append(b, '\n'), 0o644)
}

// launchDockerd starts the harness's dockerd and returns without waiting
// for its API.
func launchDockerd() error {
	dockerd, err := findBinary("dockerd", "/usr/sbin/dockerd", "/usr/bin/dockerd")
	if err != nil {
		return err
	}
	args := []string{
		"--config-file", dockerdConfig(),
		"--data-root", filepath.Join(h.tmp, "data"),
		"--exec-root", filepath.Join(h.tmp, "exec"),
		"--pidfile", filepath.Join(h.tmp, "docker.pid"),
		"-H", h.dockerHost,
		"--bridge=none",
		// iptables stays on (Docker's default, FORWARD policy DROP); with
		// ip6tables Docker filters and isolates IPv6 as it does IPv4, as
		// current Docker releases do by default.
		"--experimental", "--ip6tables",
	}
	if !overlaySupported() {
		args = append(args, "--storage-driver=vfs")
	}
	logf, err := os.OpenFile(h.dockerdLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "===== harness: starting dockerd at %s =====\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(dockerd, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the test binary dies, dockerd shuts down instead of lingering.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start dockerd: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	h.dockerd, h.dockerdDone = cmd, done
	return nil
}

// waitDockerd waits until the dockerd launchDockerd started answers on its
// API, and returns how long that took from now.
func waitDockerd(timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		select {
		case <-h.dockerdDone:
			return 0, fmt.Errorf("dockerd exited during start: %v", h.dockerd.ProcessState)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _, err := runDocker(ctx, nil, "version", "--format", "{{.Server.Version}}")
		cancel()
		if err == nil {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("dockerd did not answer within %s: %w", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func goBuild(out, pkg string, env ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.goBin, "build", "-o", out, pkg)
	cmd.Dir = h.moduleRoot
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

func teardown() {
	if h.dockerd != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		if ids, _, err := runDocker(ctx, nil, "ps", "-aq"); err == nil && ids != "" {
			args := append([]string{"rm", "-f", "-v"}, strings.Fields(ids)...)
			if _, stderr, err := runDocker(ctx, nil, args...); err != nil {
				fmt.Fprintf(os.Stderr, "integration: teardown: remove containers: %v: %s\n", err, stderr)
			}
		}
		if ids, _, err := runDocker(ctx, nil, "network", "ls", "-q", "--filter", "type=custom"); err == nil && ids != "" {
			args := append([]string{"network", "rm"}, strings.Fields(ids)...)
			if _, stderr, err := runDocker(ctx, nil, args...); err != nil {
				fmt.Fprintf(os.Stderr, "integration: teardown: remove networks: %v: %s\n", err, stderr)
			}
		}
		cancel()
		stopDockerd()
		removeBridgeLeftovers()
		testhost.RestoreForwardPolicies(h.forwardPolicy, func(format string, args ...any) {
			fmt.Printf("integration: teardown: "+format+"\n", args...)
		})
	}
	stopMembrane()
	cleanStale()
	if h.tmp != "" {
		testhost.UnmountUnder(h.tmp)
		if err := os.RemoveAll(h.tmp); err != nil {
			fmt.Fprintf(os.Stderr, "integration: teardown: %v\n", err)
		}
	}
}

func stopDockerd() {
	terminate("dockerd", h.dockerd.Process, h.dockerdDone, dockerdStopTimeout)
}

// terminate sends SIGTERM, waits up to grace for done, then SIGKILLs and
// waits a little more.
func terminate(name string, p *os.Process, done <-chan struct{}, grace time.Duration) {
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return
	case <-time.After(grace):
	}
	fmt.Fprintf(os.Stderr, "integration: %s ignored SIGTERM for %s, killing it\n", name, grace)
	_ = p.Kill()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		fmt.Fprintf(os.Stderr, "integration: %s survived SIGKILL for 5s\n", name)
	}
}

// removeBridgeLeftovers deletes the Linux bridges, and the iptables rules
// naming them, of test networks that still exist after dockerd stopped:
// that happens only when dockerd died (or was killed from outside) with
// networks in place, and a stale bridge keeps its subnet's route.
func removeBridgeLeftovers() {
	createdNetworks.Lock()
	defer createdNetworks.Unlock()
	for _, id := range createdNetworks.ids {
		if len(id) < 12 {
			continue
		}
		br := "br-" + id[:12]
		if _, err := os.Stat("/sys/class/net/" + br); err != nil {
			continue
		}
		fmt.Fprintf(os.Stderr, "integration: teardown: removing leftover bridge %s and its iptables rules\n", br)
		_ = exec.Command("ip", "link", "del", br).Run()
		for _, tool := range []string{"iptables", "ip6tables"} {
			for _, table := range []string{"filter", "nat"} {
				out, err := exec.Command(tool+"-save", "-t", table).Output()
				if err != nil {
					continue
				}
				for _, line := range strings.Split(string(out), "\n") {
					f := strings.Fields(line)
					if len(f) < 2 || f[0] != "-A" || !slices.Contains(f, br) {
						continue
					}
					f[0] = "-D"
					_ = exec.Command(tool, append([]string{"-t", table}, f...)...).Run()
				}
			}
		}
	}
}

// dumpLogs prints the ends of the daemons' logs and keeps copies, since the
// temporary directory goes away at teardown.
func dumpLogs() {
	if h.tmp == "" {
		return
	}
	keep, err := os.MkdirTemp("", "membrane-it-logs-")
	if err != nil {
		keep = ""
	}
	for _, p := range []string{h.dockerdLog, h.membraneLog} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		fmt.Fprintf(os.Stderr, "\n===== last 200 lines of %s =====\n%s===== end of %s =====\n", filepath.Base(p), lastLines(string(b), 200), filepath.Base(p))
		if keep != "" {
			_ = os.WriteFile(filepath.Join(keep, filepath.Base(p)), b, 0o644)
		}
	}
	if keep != "" {
		fmt.Fprintf(os.Stderr, "integration: full logs kept in %s\n", keep)
	}
}

func lastLines(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}

// logMark remembers how long a log file is, to print what came after.
type logMark struct {
	path   string
	offset int64
}

func markLog(path string) logMark {
	fi, err := os.Stat(path)
	if err != nil {
		return logMark{path: path}
	}
	return logMark{path: path, offset: fi.Size()}
}

// since returns at most maxLines of what the log gained since the mark.
func (m logMark) since(maxLines int) string {
	f, err := os.Open(m.path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(m.offset, io.SeekStart); err != nil {
		return ""
	}
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > maxLines {
		lines = append([]string{fmt.Sprintf("... (%d earlier lines)", len(lines)-maxLines)}, lines[len(lines)-maxLines:]...)
	}
	return strings.Join(lines, "\n")
}
