package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// membraned is the run's private membrane daemon and its CLI.
type membraned struct {
	bin        string
	dir        string
	apiSocket  string
	logPath    string
	dockerHost string
	ipv4Range  netip.Prefix
	proc       *proc
}

func newMembraned(bin, dir, dockerHost string, ipv4Range netip.Prefix) *membraned {
	return &membraned{
		bin: bin, dir: dir, dockerHost: dockerHost, ipv4Range: ipv4Range,
		apiSocket: filepath.Join(dir, "api.sock"),
		logPath:   filepath.Join(dir, "membrane.log"),
	}
}

func (m *membraned) pluginSocket() string { return filepath.Join(pluginDir, pluginName+".sock") }

// start runs `membrane daemon` under the harness's own names and waits
// until its management API answers and its plugin socket exists.
func (m *membraned) start(ctx context.Context) error {
	args := []string{
		m.bin, "daemon",
		"--plugin-name", pluginName,
		"--plugin-dir", pluginDir,
		"--state-dir", filepath.Join(m.dir, "state"),
		"--bpf-dir", bpfDir,
		"--api-socket", m.apiSocket,
		"--docker-host", m.dockerHost,
		"--host-device", hostDevice,
		"--ipv4-range", m.ipv4Range.String(),
		// Debug logs carry the duration of every Docker call, which is
		// where the per-endpoint setup time comes from.
		"--log-level", "debug",
	}
	p, err := startProc("membrane daemon", m.logPath, nil, args...)
	if err != nil {
		return err
	}
	m.proc = p
	deadline := time.Now().Add(membraneStartTimeout)
	for {
		if p.exited() {
			return fmt.Errorf("membrane daemon exited during start: %v%s", p.cmd.ProcessState, logTail(m.logPath))
		}
		if _, err := os.Stat(m.pluginSocket()); err == nil {
			if _, err := m.cli(ctx, "status"); err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("membrane daemon did not come up within %s%s", membraneStartTimeout, logTail(m.logPath))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (m *membraned) stop() error {
	if m.proc == nil {
		return nil
	}
	return m.proc.stop(stopGrace)
}

func (m *membraned) pid() int { return m.proc.cmd.Process.Pid }

// cli runs `membrane SUBCOMMAND... --api-socket S ARGS`.
func (m *membraned) cli(ctx context.Context, args ...string) (string, error) {
	argv := append([]string{m.bin}, args...)
	argv = append(argv, "--api-socket", m.apiSocket)
	out, err := cmdSpec{argv: argv, timeout: 10 * time.Minute}.run(ctx)
	if err != nil {
		return out, fmt.Errorf("membrane %s: %w", args[0], err)
	}
	return out, nil
}

// importPolicy imports a policy file and returns how long the CLI took:
// the daemon answers once the new revision is applied to the datapath, so
// this is the time from the command to enforcement.
func (m *membraned) importPolicy(ctx context.Context, file string) (time.Duration, error) {
	start := time.Now()
	if _, err := m.cli(ctx, "policy", "import", file); err != nil {
		return 0, fmt.Errorf("import %s: %w", filepath.Base(file), err)
	}
	return time.Since(start), nil
}

func (m *membraned) deleteAllPolicy(ctx context.Context) error {
	_, err := m.cli(ctx, "policy", "delete", "--all")
	return err
}

func (m *membraned) deletePolicy(ctx context.Context, name string) error {
	_, err := m.cli(ctx, "policy", "delete", name)
	return err
}

// status is the part of `membrane status -o json` the harness reads.
type status struct {
	Endpoints      int    `json:"endpoints"`
	PolicyRules    int    `json:"policyRules"`
	PolicyRevision uint64 `json:"policyRevision"`
	Lockdown       []int  `json:"lockdown"`
}

func (m *membraned) status(ctx context.Context) (status, error) {
	out, err := m.cli(ctx, "status", "-o", "json")
	if err != nil {
		return status{}, err
	}
	var st status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return status{}, fmt.Errorf("membrane status: %w", err)
	}
	return st, nil
}

// endpointView is the part of `membrane endpoint list -o json` the
// harness reads.
type endpointView struct {
	ContainerName string `json:"containerName"`
	Identity      uint32 `json:"identity"`
	PolicyIngress bool   `json:"policyIngress"`
	PolicyEgress  bool   `json:"policyEgress"`
}

func (m *membraned) endpoints(ctx context.Context) ([]endpointView, error) {
	out, err := m.cli(ctx, "endpoint", "list", "-o", "json")
	if err != nil {
		return nil, err
	}
	var eps []endpointView
	if err := json.Unmarshal([]byte(out), &eps); err != nil {
		return nil, fmt.Errorf("membrane endpoint list: %w", err)
	}
	return eps, nil
}

// minUserIdentity is the first identity derived from labels; below are
// the reserved ones (init among them).
const minUserIdentity = 256

// waitIdentities waits until every named container's endpoint has a
// label-derived identity: until then it may send nothing but ARP and
// neighbour discovery.
func (m *membraned) waitIdentities(ctx context.Context, names []string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		eps, err := m.endpoints(ctx)
		if err != nil {
			return err
		}
		missing := map[string]bool{}
		for _, n := range names {
			missing[n] = true
		}
		for _, e := range eps {
			if e.Identity >= minUserIdentity {
				delete(missing, e.ContainerName)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containers %v have no identity after %s", keys(missing), timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func keys(m map[string]bool) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	return k
}

// logMark is an offset in the daemon's log, to read what came after.
type logMark int64

func (m *membraned) markLog() logMark {
	fi, err := os.Stat(m.logPath)
	if err != nil {
		return 0
	}
	return logMark(fi.Size())
}

// dockerCallRE matches the daemon's debug line for a Docker call, e.g.
// `level=DEBUG msg="docker call" method=/NetworkDriver.CreateEndpoint duration=3.1ms`.
var dockerCallRE = regexp.MustCompile(`msg="docker call" method=(\S+) duration=(\S+)`)

// dockerCallDurations returns the durations of the Docker calls named
// method (e.g. "/NetworkDriver.CreateEndpoint") logged since mark.
func (m *membraned) dockerCallDurations(since logMark, method string) ([]time.Duration, error) {
	f, err := os.Open(m.logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(int64(since), 0); err != nil {
		return nil, err
	}
	return parseDockerCalls(bufio.NewScanner(f), method)
}

func parseDockerCalls(sc *bufio.Scanner, method string) ([]time.Duration, error) {
	var ds []time.Duration
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		mt := dockerCallRE.FindStringSubmatch(sc.Text())
		if mt == nil || mt[1] != method {
			continue
		}
		d, err := time.ParseDuration(mt[2])
		if err != nil {
			return nil, fmt.Errorf("daemon log: duration %q: %w", mt[2], err)
		}
		ds = append(ds, d)
	}
	return ds, sc.Err()
}

// rssMiB is the daemon's resident set size.
func (m *membraned) rssMiB() (float64, error) {
	path := "/proc/" + strconv.Itoa(m.pid()) + "/status"
	kb, ok := procStatusField(path, "VmRSS")
	if !ok {
		return 0, fmt.Errorf("read VmRSS from %s", path)
	}
	return float64(kb) / 1024, nil
}

// cpuTicks is the daemon's CPU time so far, in clock ticks.
func (m *membraned) cpuTicks() (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(m.pid()) + "/stat")
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may
	// hold spaces: utime and stime are the 12th and 13th of them.
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", m.pid())
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", m.pid(), f[11], f[12])
	}
	return utime + stime, nil
}

// waitIdle waits until the daemon used less than 10% of a CPU over
// 200 ms (or timeout passed): on a small machine, work the daemon does
// after answering (freeing a large policy, garbage collection) would
// otherwise compete with the traffic measured next.
func (m *membraned) waitIdle(ctx context.Context, timeout time.Duration) error {
	const window = 200 * time.Millisecond
	deadline := time.Now().Add(timeout)
	prev, err := m.cpuTicks()
	if err != nil {
		return err
	}
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(window):
		}
		now, err := m.cpuTicks()
		if err != nil {
			return err
		}
		// USER_HZ is 100 on Linux: 2 ticks in 200 ms is 10%.
		if now-prev < 2 {
			return nil
		}
		prev = now
	}
	return nil
}

// restart stops the daemon and starts it again on the same state; the
// datapath keeps forwarding meanwhile.
func (m *membraned) restart(ctx context.Context) error {
	if err := m.stop(); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	return m.start(ctx)
}
