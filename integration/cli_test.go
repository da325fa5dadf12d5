package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Helpers around the membrane CLI, run against the harness's daemon
// (--api-socket). Every call has a timeout: a CLI that hangs fails the
// test instead of the run.

const (
	cliTimeout = 15 * time.Second
	// identityTimeout bounds the wait for an endpoint's identity: labels
	// arrive within 1-2 s of the container's start.
	identityTimeout = 10 * time.Second
	// revisionTimeout bounds the wait for the datapath to enforce an
	// imported revision.
	revisionTimeout = 5 * time.Second

	// firstUserIdentity is the lowest identity allocated for labels;
	// below are reserved ones such as init (5).
	firstUserIdentity = 256
	initIdentity      = 5
)

// cliResult is what one CLI run gave.
type cliResult struct {
	Stdout, Stderr string
	Code           int // exit code; -1 when it did not exit by itself
}

func (r cliResult) output() string {
	return strings.TrimSpace(strings.TrimSpace(r.Stdout) + "\n" + strings.TrimSpace(r.Stderr))
}

// cliHung, once a CLI call went unanswered, says which: later calls fail
// at once instead of each waiting out cliTimeout.
var cliHung atomic.Pointer[string]

// runCLI runs `membrane args... --api-socket SOCK` with stdin.
func runCLI(stdin string, args ...string) (cliResult, error) {
	if hung := cliHung.Load(); hung != nil {
		return cliResult{Code: -1}, fmt.Errorf("membrane %s: not run: an earlier call (membrane %s) got no answer within %s", strings.Join(args, " "), *hung, cliTimeout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, membrane.bin, append(args, "--api-socket", apiSocket())...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	r := cliResult{Stdout: o.String(), Stderr: e.String(), Code: cmd.ProcessState.ExitCode()}
	if ctx.Err() != nil {
		call := strings.Join(args, " ")
		cliHung.CompareAndSwap(nil, &call)
		return r, fmt.Errorf("membrane %s: no answer within %s", call, cliTimeout)
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return r, fmt.Errorf("membrane %s: %w", strings.Join(args, " "), err)
	}
	return r, nil
}

// cli runs the CLI and fails t unless it exits 0; it returns stdout.
func cli(t testing.TB, args ...string) string {
	t.Helper()
	return cliIn(t, "", args...)
}

func cliIn(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	r, err := runCLI(stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	if r.Code != 0 {
		t.Fatalf("membrane %s: exit code %d: %s", strings.Join(args, " "), r.Code, r.output())
	}
	return r.Stdout
}

// cliJSON runs the CLI with -o json and decodes its output into out.
func cliJSON(t testing.TB, out any, args ...string) {
	t.Helper()
	stdout := cli(t, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(stdout), out); err != nil {
		t.Fatalf("membrane %s -o json: %v in output:\n%s", strings.Join(args, " "), err, firstLine(stdout, 500))
	}
}

// endpointInfo is an endpoint as `membrane endpoint list -o json` shows it.
type endpointInfo struct {
	ID            string            `json:"id"`
	ContainerID   string            `json:"containerId"`
	Identity      uint32            `json:"identity"`
	Labels        map[string]string `json:"labels"`
	IPv4          string            `json:"ipv4"`
	IPv6          string            `json:"ipv6"`
	PolicyIngress bool              `json:"policyIngress"`
	PolicyEgress  bool              `json:"policyEgress"`
	IdentitySince string            `json:"identitySince"`
}

// since parses identitySince; zero when unset.
func (e endpointInfo) since() (time.Time, error) {
	if e.IdentitySince == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339Nano, e.IdentitySince)
}

func listEndpoints(t testing.TB) []endpointInfo {
	t.Helper()
	var eps []endpointInfo
	cliJSON(t, &eps, "endpoint", "list")
	return eps
}

// endpointByAddr finds the endpoint holding IPv6 address v6 (which is
// known as soon as Docker ran the container, before its labels are).
func endpointByAddr(eps []endpointInfo, v6 string) (endpointInfo, bool) {
	for _, e := range eps {
		if stripLen(e.IPv6) == canonical(v6) || e.IPv6 == v6 {
			return e, true
		}
	}
	return endpointInfo{}, false
}

// waitIdentities polls the endpoint list until the endpoint of each
// container (given by name → IPv6 address) has an identity of its own
// (>= 256), and returns those endpoints by name. It fails t after
// identityTimeout, listing what the daemon shows.
func waitIdentities(t testing.TB, byName map[string]string) map[string]endpointInfo {
	t.Helper()
	got, err := waitIdentitiesErr(t, byName)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func waitIdentitiesErr(t testing.TB, byName map[string]string) (map[string]endpointInfo, error) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(identityTimeout)
	for {
		r, err := runCLI("", "endpoint", "list", "-o", "json")
		if err != nil {
			return nil, err
		}
		if r.Code != 0 {
			return nil, fmt.Errorf("membrane endpoint list -o json: exit code %d: %s", r.Code, r.output())
		}
		var eps []endpointInfo
		if err := json.Unmarshal([]byte(r.Stdout), &eps); err != nil {
			return nil, fmt.Errorf("membrane endpoint list -o json: %v in output:\n%s", err, firstLine(r.Stdout, 500))
		}
		got := map[string]endpointInfo{}
		var missing []string
		for name, v6 := range byName {
			e, ok := endpointByAddr(eps, v6)
			switch {
			case !ok:
				missing = append(missing, fmt.Sprintf("%s (%s): no endpoint", name, v6))
			case e.Identity < firstUserIdentity:
				missing = append(missing, fmt.Sprintf("%s (%s): identity %d", name, v6, e.Identity))
			default:
				got[name] = e
			}
		}
		if len(missing) == 0 {
			t.Logf("identities of %d endpoints known after %s", len(got), time.Since(start).Round(time.Millisecond))
			return got, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("endpoints without an identity of their own (>= %d) %s after the check began: %s",
				firstUserIdentity, identityTimeout, strings.Join(missing, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// statusInfo is the part of `membrane status -o json` the tests read.
type statusInfo struct {
	PolicyRevision *uint64 `json:"policyRevision"`
}

// policyState is `membrane policy get -o json`.
type policyState struct {
	Revision uint64            `json:"revision"`
	Rules    []json.RawMessage `json:"rules"`
}

// names lists the `name` label of every loaded rule.
func (p policyState) names() []string {
	var out []string
	for _, r := range p.Rules {
		var rule struct {
			Labels []struct{ Key, Value string } `json:"labels"`
		}
		_ = json.Unmarshal(r, &rule)
		for _, l := range rule.Labels {
			if l.Key == "name" {
				out = append(out, l.Value)
			}
		}
	}
	return out
}

func getPolicy(t testing.TB) policyState {
	t.Helper()
	var p policyState
	cliJSON(t, &p, "policy", "get")
	return p
}

var revisionRE = regexp.MustCompile(`\brevision (\d+)\b`)

// importPolicy imports policy (JSON or YAML) through `membrane policy
// import -`, then waits until `membrane status` reports that the datapath
// enforces the revision the import printed. It returns that revision.
func importPolicy(t testing.TB, policy string) uint64 {
	t.Helper()
	out := cliIn(t, policy, "policy", "import", "-")
	m := revisionRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("membrane policy import: want output `revision N`, got %q", strings.TrimSpace(out))
	}
	rev, _ := strconv.ParseUint(m[1], 10, 64)
	waitRevision(t, rev)
	return rev
}

// waitRevision polls `membrane status -o json` until policyRevision >= rev.
func waitRevision(t testing.TB, rev uint64) {
	t.Helper()
	deadline := time.Now().Add(revisionTimeout)
	for {
		var st statusInfo
		cliJSON(t, &st, "status")
		if st.PolicyRevision == nil {
			t.Fatalf("membrane status -o json has no policyRevision: cannot tell when revision %d is enforced", rev)
		}
		if *st.PolicyRevision >= rev {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("membrane status reports policy revision %d, %s after the import of revision %d", *st.PolicyRevision, revisionTimeout, rev)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// deletePolicy runs `membrane policy delete NAME` (or --all) and waits for
// the revision it prints, if it prints one.
func deletePolicy(t testing.TB, name string) {
	t.Helper()
	out := cli(t, "policy", "delete", name)
	if m := revisionRE.FindStringSubmatch(out); m != nil {
		rev, _ := strconv.ParseUint(m[1], 10, 64)
		waitRevision(t, rev)
	}
}

// deleteAllPolicyAtCleanup removes every rule when t ends, so that a failed
// scenario leaves no policy to the next.
func deleteAllPolicyAtCleanup(t testing.TB) {
	t.Cleanup(func() {
		if r, err := runCLI("", "policy", "delete", "--all"); err != nil || r.Code != 0 {
			t.Errorf("membrane policy delete --all at cleanup: %v %s", err, r.output())
		}
	})
}

// monitorStream is a running `membrane monitor -o json`.
type monitorStream struct {
	cmd    *exec.Cmd
	events chan map[string]any
	stderr *bytes.Buffer
	mu     sync.Mutex
	bad    []string // lines that were not JSON objects
}

// startMonitor starts `membrane monitor --type typ -o json`, killed when t
// ends.
func startMonitor(t testing.TB, typ string) *monitorStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, membrane.bin, "monitor", "--type", typ, "-o", "json", "--api-socket", apiSocket())
	m := &monitorStream{cmd: cmd, events: make(chan map[string]any, 4096), stderr: &bytes.Buffer{}}
	cmd.Stderr = m.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start membrane monitor: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(m.events)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			var ev map[string]any
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				m.mu.Lock()
				m.bad = append(m.bad, sc.Text())
				m.mu.Unlock()
				continue
			}
			select {
			case m.events <- ev:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = cmd.Wait()
	})
	return m
}

// waitFor returns the first event match accepts, or, after timeout, nil
// and a description of what came instead.
func (m *monitorStream) waitFor(timeout time.Duration, match func(map[string]any) bool) (map[string]any, string) {
	deadline := time.After(timeout)
	var seen []string
	for {
		select {
		case ev, ok := <-m.events:
			if !ok {
				return nil, fmt.Sprintf("monitor exited (%v): %s; events before: %s", m.cmd.ProcessState, strings.TrimSpace(m.stderr.String()), m.describe(seen))
			}
			if match(ev) {
				return ev, ""
			}
			if len(seen) < 20 {
				b, _ := json.Marshal(ev)
				seen = append(seen, string(b))
			}
		case <-deadline:
			return nil, fmt.Sprintf("none within %s; events seen: %s", timeout, m.describe(seen))
		}
	}
}

func (m *monitorStream) describe(seen []string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := strings.Join(seen, "\n  ")
	if s == "" {
		s = "none"
	}
	if len(m.bad) > 0 {
		s += fmt.Sprintf("\n  %d lines that are not JSON objects, first: %q", len(m.bad), firstLine(m.bad[0], 200))
	}
	return s
}

// scrapeMetrics fetches the daemon's Prometheus metrics and returns every
// sample as line → value.
func scrapeMetrics(addr string) (map[string]float64, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s: %s", resp.Status, firstLine(string(body), 200))
	}
	samples := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("GET /metrics: not Prometheus text format: %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("GET /metrics: not Prometheus text format: %q", line)
		}
		samples[line[:i]] = v
	}
	return samples, nil
}
