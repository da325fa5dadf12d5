package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

const (
	streamMaxGap = time.Second
	daemonDown   = 3 * time.Second
	stopFile     = "/tmp/stop-stream"
)

// TestDaemonKillKeepsConnections: while two containers exchange a TCP stream
// (over IPv4 and over IPv6) the membrane daemon is killed with SIGKILL, stays
// dead for 3 s and is restarted; the streams never pause for more than 1 s
// and still flow after the restart; a container started afterwards on the
// same network gets addresses no other container has and connects to the
// old server. The bridge variant has no daemon to kill: it shows that the
// stream check passes when nothing is disturbed.
func TestDaemonKillKeepsConnections(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d netDriver) {
		net := d.newNetwork(t, subnets{})
		server := runContainer(t, net)
		client := runContainer(t, net)
		s4, s6 := containerIPs(t, server, net)

		streams := []*streamClient{startStream(t, client, s4), startStream(t, client, s6)}
		time.Sleep(time.Second)

		if d.isMembrane() {
			killMembrane(t)
			t.Logf("membrane daemon killed with SIGKILL; down for %s", daemonDown)
			time.Sleep(daemonDown)
			startMembrane(t)
			t.Logf("membrane daemon restarted")
		} else {
			time.Sleep(daemonDown)
		}
		// The streams must keep flowing after the restart too.
		time.Sleep(2 * time.Second)
		execIn(t, client, "touch", stopFile)
		for _, s := range streams {
			s.check(t)
		}

		newer := runContainer(t, net)
		n4, n6 := containerIPs(t, newer, net)
		for id, ep := range inspectNetwork(t, net).Containers {
			if id == newer {
				continue
			}
			if stripLen(ep.IPv4Address) == n4 || stripLen(ep.IPv6Address) == n6 {
				t.Errorf("new container got %s %s, already held by %s (%s %s)", n4, n6, ep.Name, ep.IPv4Address, ep.IPv6Address)
			}
		}
		for _, addr := range []string{s4, s6} {
			if err := tcpFrom(newer, addr, "", 3*time.Second); err != nil {
				t.Errorf("new container -> server %s after the restart: %v", addr, err)
			}
		}
	})
}

func stripLen(cidr string) string {
	addr, _, _ := strings.Cut(cidr, "/")
	return addr
}

// streamClient is a `probe stream` running in a container via docker exec.
type streamClient struct {
	target string
	cmd    *exec.Cmd
	cancel context.CancelFunc
	lines  chan string
	done   chan error
	stderr *bytes.Buffer
}

// startStream connects a `probe stream` in ctr to target's stream server
// and returns once the connection is established.
func startStream(t *testing.T, ctr, target string) *streamClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, h.dockerBin, "-H", h.dockerHost, "exec", ctr,
		"/bin/probe", "stream", "-max-gap", streamMaxGap.String(), "-stop-file", stopFile, "-max-duration", "90s", target, streamPort)
	cmd.Env = h.dockerEnv
	s := &streamClient{target: target, cmd: cmd, cancel: cancel, lines: make(chan string, 16), done: make(chan error, 1), stderr: &bytes.Buffer{}}
	cmd.Stderr = s.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start stream client: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
		s.done <- cmd.Wait()
	}()
	t.Cleanup(func() { cancel() })

	select {
	case line, ok := <-s.lines:
		if !ok || !strings.HasPrefix(line, "connected") {
			err := <-s.done
			t.Fatalf("stream to %s did not connect (%q, %v): %s", target, line, err, s.stderr)
		}
		t.Logf("stream %s: %s", target, line)
	case <-time.After(10 * time.Second):
		t.Fatalf("stream to %s: no connection within 10s: %s", target, s.stderr)
	}
	return s
}

// check waits for the stopped client and fails t unless it reported an
// unbroken stream with no gap above streamMaxGap.
func (s *streamClient) check(t *testing.T) {
	t.Helper()
	report, err := s.wait()
	if err != nil {
		t.Errorf("stream to %s: %v: %s", s.target, err, report)
		return
	}
	t.Logf("stream to %s: %s", s.target, report)
}

// wait waits for the stopped client (at most 15 s) and returns what it
// printed, and an error unless it reported an unbroken stream with no gap
// above streamMaxGap.
func (s *streamClient) wait() (report string, err error) {
	var out []string
	timeout := time.After(15 * time.Second)
	for waiting := true; waiting; {
		select {
		case line, ok := <-s.lines:
			if ok {
				out = append(out, line)
				continue
			}
			select {
			case err = <-s.done:
			case <-timeout:
				err = fmt.Errorf("client did not exit")
			}
			waiting = false
		case <-timeout:
			s.cancel()
			err = fmt.Errorf("client did not stop within 15s of the stop file")
			waiting = false
		}
	}
	report = strings.Join(out, "; ")
	if err != nil {
		return strings.TrimSpace(report + " " + strings.TrimSpace(s.stderr.String())), err
	}
	return report, nil
}
