package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/membrane-net/membrane/bench/iperf3"
	"github.com/membrane-net/membrane/bench/netload"
)

// place is one end of a measured path: a network namespace and the
// addresses the other end reaches it at.
type place struct {
	netns string     // path: /run/netns/NAME or /proc/PID/ns/net
	ip    netip.Addr // IPv4
	ip6   netip.Addr // IPv6, not valid where the place has none
}

// path is what a setup offers: a client and a server place.
type path struct {
	setup          string // for messages
	client, server place
}

// over returns the path with its places' ip the family's address, which
// is what the loads dial.
func (p path) over(family string) path {
	if family != familyIPv6 {
		return p
	}
	q := p
	q.setup = p.setup + " (IPv6)"
	q.client.ip, q.server.ip = p.client.ip6, p.server.ip6
	return q
}

// loads runs the traffic tools in a place, pinned to a CPU.
type loads struct {
	netload, iperf3      string
	clientCPU, serverCPU int
	duration             time.Duration
	logDir               string
}

// in is argv run inside netns on cpu.
func in(netns string, cpu int, argv ...string) []string {
	return append([]string{"nsenter", "--net=" + netns, "--", "taskset", "-c", strconv.Itoa(cpu)}, argv...)
}

// startServers starts the netload and iperf3 servers in the server place
// and waits until they listen. The IPv4 netload server listens on
// 0.0.0.0, as it always did; where the server has an IPv6 address, a
// second netload server listens on that address (same ports: an IPv6
// address is no IPv4 wildcard's). iperf3 listens on both families with
// one socket. The caller stops the returned processes.
func (l loads) startServers(ctx context.Context, p path) ([]*proc, error) {
	name := strings.ReplaceAll(p.setup, "/", "-")
	serve := func(addr string) []string {
		return in(p.server.netns, l.serverCPU, l.netload, "serve", "-addr", addr,
			"-tcp", fmt.Sprintf("%d,%d", portRR, portProbe), "-udp", strconv.Itoa(portUDP), "-control", strconv.Itoa(portControl))
	}
	servers := []struct {
		what string
		argv []string
	}{
		{"netload", serve("0.0.0.0")},
		{"iperf3", in(p.server.netns, l.serverCPU, l.iperf3, "-s", "-p", strconv.Itoa(portIperf))},
	}
	listening := []string{"0.0.0.0:" + strconv.Itoa(portRR) + " ", ":" + strconv.Itoa(portIperf) + " "}
	if p.server.ip6.IsValid() {
		servers = append(servers, struct {
			what string
			argv []string
		}{"netload-ipv6", serve(p.server.ip6.String())})
		listening = append(listening, netip.AddrPortFrom(p.server.ip6, portRR).String()+" ")
	}
	var procs []*proc
	for _, s := range servers {
		pr, err := startProc(p.setup+" "+s.what+" server", filepath.Join(l.logDir, name+"-"+s.what+".log"), nil, s.argv...)
		if err != nil {
			stopAll(procs)
			return nil, fmt.Errorf("%s: %w", p.setup, err)
		}
		procs = append(procs, pr)
	}
	if err := waitListening(ctx, p.server.netns, procs, listening...); err != nil {
		stopAll(procs)
		return nil, fmt.Errorf("%s: servers: %w", p.setup, err)
	}
	return procs, nil
}

func stopAll(procs []*proc) error {
	var errs []string
	for _, p := range procs {
		if err := p.stop(5 * time.Second); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// waitListening waits until `ss -ltn` in netns shows every wanted local
// address (":PORT " for any address, "[ADDR]:PORT " for one).
func waitListening(ctx context.Context, netns string, procs []*proc, want ...string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, p := range procs {
			if p.exited() {
				return fmt.Errorf("%s exited: %v%s", p.name, p.cmd.ProcessState, logTail(p.log))
			}
		}
		out, err := runCmd(ctx, "nsenter", "--net="+netns, "--", "ss", "-Hltn")
		if err != nil {
			return err
		}
		all := true
		for _, w := range want {
			if !strings.Contains(out, w) {
				all = false
			}
		}
		if all {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on all of %q after 10s", want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// netloadClient runs one netload client load from the client place.
func (l loads) netloadClient(ctx context.Context, p path, mode string) (netload.Result, error) {
	target := netip.AddrPortFrom(p.server.ip, portRR).String()
	argv := in(p.client.netns, l.clientCPU, l.netload, mode, "-addr", target, "-duration", l.duration.String())
	if mode == "udp" {
		argv = append(argv, "-control", strconv.Itoa(portControl))
	}
	out, err := cmdSpec{argv: argv, timeout: l.duration + loadSlack}.run(ctx)
	if err != nil {
		return netload.Result{}, fmt.Errorf("%s: netload %s: %w", p.setup, mode, err)
	}
	var r netload.Result
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return netload.Result{}, fmt.Errorf("%s: netload %s: output %q: %w", p.setup, mode, out, err)
	}
	if r.Rate <= 0 || r.Count == 0 {
		return netload.Result{}, fmt.Errorf("%s: netload %s: measured zero", p.setup, mode)
	}
	return r, nil
}

// iperf runs an iperf3 client with that many parallel streams.
func (l loads) iperf(ctx context.Context, p path, streams int) (iperf3.Result, error) {
	// iperf3 takes whole seconds.
	secs := max(1, int(math.Round(l.duration.Seconds())))
	argv := in(p.client.netns, l.clientCPU, l.iperf3, "-c", p.server.ip.String(), "-p", strconv.Itoa(portIperf),
		"-t", strconv.Itoa(secs), "-P", strconv.Itoa(streams), "-J")
	out, runErr := cmdSpec{argv: argv, timeout: time.Duration(secs)*time.Second + loadSlack}.run(ctx)
	// iperf3 reports its own errors in the JSON it prints before it
	// exits nonzero: prefer that message.
	r, err := iperf3.Parse([]byte(out))
	if err != nil {
		if runErr != nil && strings.TrimSpace(out) == "" {
			err = runErr
		}
		return iperf3.Result{}, fmt.Errorf("%s: iperf3 -P %d: %w", p.setup, streams, err)
	}
	return r, nil
}

// poll runs netload poll from the client place against addr and returns
// when it saw the port in the awaited state.
func (l loads) poll(ctx context.Context, client place, addr netip.AddrPort, until netload.PollUntil, timeout time.Duration) (netload.PollResult, error) {
	argv := in(client.netns, l.clientCPU, l.netload, "poll", "-addr", addr.String(), "-until", string(until),
		"-interval", "2ms", "-attempt-timeout", "200ms", "-timeout", timeout.String())
	out, err := cmdSpec{argv: argv, timeout: timeout + loadSlack}.run(ctx)
	if err != nil {
		return netload.PollResult{}, fmt.Errorf("poll %s until %s: %w", addr, until, err)
	}
	var r netload.PollResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return netload.PollResult{}, fmt.Errorf("poll %s: output %q: %w", addr, out, err)
	}
	return r, nil
}
