package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// runDocker runs the docker CLI against the harness's dockerd.
func runDocker(ctx context.Context, stdin io.Reader, args ...string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, h.dockerBin, append([]string{"-H", h.dockerHost}, args...)...)
	cmd.Env = h.dockerEnv
	cmd.Stdin = stdin
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out: %w", ctx.Err())
	}
	if err != nil && h.dockerdDone != nil && isClosed(h.dockerdDone) {
		// Say so plainly: every later Docker call fails the same way.
		err = fmt.Errorf("%w (the harness's dockerd has exited, %v: its log at the end of the run says why)", err, h.dockerd.ProcessState)
	}
	return strings.TrimSpace(o.String()), strings.TrimSpace(e.String()), err
}

// dockerErr runs `docker args...` with dockerCmdTimeout. On failure the
// error carries the command and its stderr.
func dockerErr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dockerCmdTimeout)
	defer cancel()
	out, stderr, err := runDocker(ctx, nil, args...)
	if err != nil {
		msg := stderr
		if msg == "" {
			msg = out
		}
		return out, fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, msg)
	}
	return out, nil
}

// docker runs `docker args...` and fails the test if it fails.
func docker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := dockerErr(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var nameSeq atomic.Int64

// uniqueName returns a container or network name no other test uses.
// Docker wants at least two characters.
func uniqueName(prefix string) string {
	return fmt.Sprintf("it-%s-%d", prefix, nameSeq.Add(1))
}

// newNetwork creates a network with `docker network create args... name`
// and removes it when the test ends (after the test's containers, which
// were registered later). A failed removal fails the test: users see it.
func newNetwork(t testing.TB, name string, args ...string) string {
	t.Helper()
	a := append([]string{"network", "create", "--label", testLabel}, args...)
	recordNetwork(docker(t, append(a, name)...))
	t.Cleanup(func() {
		if _, err := dockerErr("network", "rm", name); err != nil {
			t.Errorf("remove network at cleanup: %v", err)
		}
	})
	return name
}

var createdNetworks struct {
	sync.Mutex
	ids []string
}

// recordNetwork remembers a network ID so that teardown can remove its
// bridge should dockerd die with the network still in place.
func recordNetwork(id string) {
	createdNetworks.Lock()
	createdNetworks.ids = append(createdNetworks.ids, strings.TrimSpace(id))
	createdNetworks.Unlock()
}

// runContainerErr starts a detached test container running `probe serve`
// (TCP echo on 7000, UDP echo on 7001, counter stream on 7002). It does not
// register cleanup, so goroutines may call it.
func runContainerErr(network string, flags ...string) (string, error) {
	return runContainerCmdErr(network, flags, "/bin/probe", "serve")
}

// runContainerCmdErr starts a detached test container running cmd instead
// of `probe serve`; like runContainerErr it registers no cleanup.
func runContainerCmdErr(network string, flags []string, cmd ...string) (string, error) {
	args := []string{"run", "-d", "--label", testLabel}
	if network != "" {
		args = append(args, "--network", network)
	}
	args = append(args, flags...)
	args = append(args, testImage)
	args = append(args, cmd...)
	return dockerErr(args...)
}

// runContainer starts a test container (see runContainerErr) on network
// and removes it when the test ends. flags go to `docker run`.
func runContainer(t testing.TB, network string, flags ...string) string {
	t.Helper()
	id, err := runContainerErr(network, flags...)
	if id != "" {
		removeAtCleanup(t, id)
	}
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func removeAtCleanup(t testing.TB, id string) {
	t.Cleanup(func() {
		if _, err := dockerErr("rm", "-f", "-v", id); err != nil && !strings.Contains(err.Error(), "No such container") {
			t.Errorf("remove container at cleanup: %v", err)
		}
	})
}

// execErr runs cmd in container ctr and returns its combined output.
func execErr(ctr string, cmd ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dockerCmdTimeout)
	defer cancel()
	out, stderr, err := runDocker(ctx, nil, append([]string{"exec", ctr}, cmd...)...)
	combined := strings.TrimSpace(out + "\n" + stderr)
	if err != nil {
		return combined, fmt.Errorf("in %s: %s: %w: %s", short(ctr), strings.Join(cmd, " "), err, combined)
	}
	return combined, nil
}

// execIn runs cmd in container ctr and fails the test if it fails.
func execIn(t testing.TB, ctr string, cmd ...string) string {
	t.Helper()
	out, err := execErr(ctr, cmd...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// endpointSettings is the part of `docker inspect` .NetworkSettings.Networks
// the tests read.
type endpointSettings struct {
	IPAddress         string
	IPPrefixLen       int
	GlobalIPv6Address string
	Gateway           string
	IPv6Gateway       string
	MacAddress        string
}

func containerNetworks(t testing.TB, ctr string) map[string]endpointSettings {
	t.Helper()
	out := docker(t, "inspect", "--format", "{{json .NetworkSettings.Networks}}", ctr)
	var nets map[string]endpointSettings
	if err := json.Unmarshal([]byte(out), &nets); err != nil {
		t.Fatalf("parse networks of %s: %v: %s", short(ctr), err, out)
	}
	return nets
}

// containerIPs returns ctr's IPv4 and IPv6 address on network; both must exist.
func containerIPs(t testing.TB, ctr, network string) (v4, v6 string) {
	t.Helper()
	ep, ok := containerNetworks(t, ctr)[network]
	if !ok {
		t.Fatalf("container %s is not on network %s", short(ctr), network)
	}
	if ep.IPAddress == "" || ep.GlobalIPv6Address == "" {
		t.Fatalf("container %s on %s: want an IPv4 and an IPv6 address, docker inspect shows IPv4 %q IPv6 %q",
			short(ctr), network, ep.IPAddress, ep.GlobalIPv6Address)
	}
	return ep.IPAddress, ep.GlobalIPv6Address
}

// networkInfo is the part of `docker network inspect` the tests read.
type networkInfo struct {
	Name       string
	Driver     string
	EnableIPv6 bool
	IPAM       struct {
		Driver string
		Config []struct {
			Subnet  string
			Gateway string
		}
	}
	Containers map[string]struct {
		Name        string
		IPv4Address string
		IPv6Address string
	}
}

func inspectNetwork(t testing.TB, name string) networkInfo {
	t.Helper()
	out := docker(t, "network", "inspect", "--format", "{{json .}}", name)
	var ni networkInfo
	if err := json.Unmarshal([]byte(out), &ni); err != nil {
		t.Fatalf("parse network %s: %v: %s", name, err, out)
	}
	return ni
}

// pool is one subnet of a network with its gateway.
type pool struct {
	Subnet  netip.Prefix
	Gateway netip.Addr
}

// parseGateway reads a gateway as network inspect shows it. Docker 20.10
// prints the gateway of a pool the IPAM driver chose as an address for IPv4
// but in CIDR form for IPv6 ("fd00::1/64"), so both forms are accepted.
func parseGateway(s string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Addr{}, err
	}
	return p.Addr(), nil
}

// networkPools returns the network's IPv4 and IPv6 pools; the network must
// have exactly one of each. A gateway, where inspect shows one, must lie in
// its subnet; Docker leaves it blank for subnets the user gave (whatever the
// IPAM driver), as the user gave no gateway.
func networkPools(t testing.TB, name string) (v4, v6 pool) {
	t.Helper()
	ni := inspectNetwork(t, name)
	var n4, n6 int
	for _, c := range ni.IPAM.Config {
		p, err := netip.ParsePrefix(c.Subnet)
		if err != nil {
			t.Fatalf("network %s: subnet %q: %v", name, c.Subnet, err)
		}
		var gw netip.Addr
		if c.Gateway != "" {
			if gw, err = parseGateway(c.Gateway); err != nil {
				t.Fatalf("network %s: subnet %s has gateway %q: %v", name, c.Subnet, c.Gateway, err)
			}
			if !p.Contains(gw) {
				t.Errorf("network %s: gateway %s is outside subnet %s", name, gw, p)
			}
		}
		if p.Addr().Is4() {
			v4, n4 = pool{p, gw}, n4+1
		} else {
			v6, n6 = pool{p, gw}, n6+1
		}
	}
	if n4 != 1 || n6 != 1 {
		t.Fatalf("network %s: want one IPv4 and one IPv6 subnet, inspect shows %+v", name, ni.IPAM.Config)
	}
	return v4, v6
}
