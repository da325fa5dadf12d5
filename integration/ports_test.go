package integration

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The host as a destination of published ports: its address on the world
// link (what the world connects to, "from outside") and its loopback.
var (
	hostAddrPeer = &peer{Name: "host-address", V4: worldGateway4.String(), V6: worldGateway6.String()}
	loopbackPeer = &peer{Name: "loopback", V4: "127.0.0.1", V6: "::1"}
)

// publishedServeCmd serves TCP echo on 7000 and 7001 and UDP echo on 7001,
// so that a port range maps onto two live ports.
func publishedServeCmd() []string {
	return []string{"/bin/probe", "serve", "-tcp", "7000,7001", "-udp", "7001"}
}

// TestPorts: `docker run -p` on a membrane network publishes ports with
// DNAT rules (no proxy): the world reaches them at the host's address over
// IPv4 and IPv6, the host at that address and at 127.0.0.1; a host address
// given with -p binds only that address; UDP and port ranges work; a
// second container cannot take a published port; the rules survive a
// daemon restart that finds them gone, and leave with the container.
// `docker port` stays empty for a remote driver: membrane endpoint get
// shows the ports instead. [::1] is not published (IPv6 has no
// route_localnet).
func TestPorts(t *testing.T) {
	onlyMembrane(t, func(t *testing.T, d netDriver) {
		w := newWorld(t, tcpPort, udpPort)
		net := d.newNetwork(t, subnets{})
		name := uniqueName("published")
		flags := []string{"--name", name,
			"-p", "8080:7000",
			"-p", "127.0.0.1:8081:7000",
			"-p", "[::]:8082:7000",
			"-p", worldGateway4.String() + ":8083:7000",
			"-p", "8090:7001/udp",
			"-p", "8100-8101:7000-7001",
			"-p", "8110-8119:7000", // any one free port of the range
			"-p", "7001", // an ephemeral port
		}
		web, err := runContainerCmdErr(net, flags, publishedServeCmd()...)
		if web != "" {
			removeAtCleanup(t, web)
		}
		if err != nil {
			t.Fatal(err)
		}
		host := hostPeer()

		t.Run("reach", func(t *testing.T) {
			type want struct {
				probe probe
				v4    bool
				v6    bool
			}
			fromOutside := []want{
				{tcpProbe(8080), true, true},
				{tcpProbe(8081), false, false}, // loopback only
				{tcpProbe(8082), false, true},  // [::] only
				{tcpProbe(8083), true, false},  // 198.18.0.1 only
				{udpProbe(8090), true, true},
				{tcpProbe(8100), true, true}, // → 7000
				{tcpProbe(8101), true, true}, // → 7001
			}
			fromHostToLoopback := []want{
				{tcpProbe(8080), true, false}, // [::1] cannot be published without a proxy
				{tcpProbe(8081), true, false},
				{udpProbe(8090), true, false},
				{tcpProbe(8083), false, false},
			}
			var cases []reachCase
			add := func(from, to *peer, ws []want) {
				for _, x := range ws {
					cases = append(cases,
						reachCase{From: from, To: to, Probe: x.probe, Family: "4", Want: x.v4},
						reachCase{From: from, To: to, Probe: x.probe, Family: "6", Want: x.v6})
				}
			}
			add(w.Peer, hostAddrPeer, fromOutside)
			add(host, hostAddrPeer, fromOutside)
			add(host, loopbackPeer, fromHostToLoopback)
			checkReach(t, t.Name(), cases)
		})

		t.Run("shown-by-membrane", func(t *testing.T) {
			ports := publishedPorts(t, name)
			for _, want := range []string{
				"*:8080->7000/tcp", "127.0.0.1:8081->7000/tcp", "[::]:8082->7000/tcp", "198.18.0.1:8083->7000/tcp",
				"*:8090->7001/udp", "*:8100->7000/tcp", "*:8101->7001/tcp",
			} {
				if !slices.Contains(ports, want) {
					t.Errorf("membrane endpoint get %s: ports %q, want %q among them", name, ports, want)
				}
			}
			first, last := ephemeralRange(t)
			ranged := hostPortOf(ports, "->7000/tcp", 8110, 8119)
			ephemeral := hostPortOf(ports, "->7001/tcp", first, last)
			if ranged == 0 || ephemeral == 0 {
				t.Fatalf("membrane endpoint get %s: ports %q, want one of 8110-8119 for 7000/tcp and one of %d-%d for 7001/tcp", name, ports, first, last)
			}
			cases := []reachCase{
				{From: w.Peer, To: hostAddrPeer, Probe: tcpProbe(ranged), Family: "4", Want: true},
				{From: w.Peer, To: hostAddrPeer, Probe: tcpProbe(ephemeral), Family: "6", Want: true},
			}
			checkReach(t, t.Name(), cases)
			out, _ := dockerErr("port", web)
			t.Logf("docker port %s (Docker shows nothing for a remote driver): %q", short(web), out)
		})

		t.Run("port-already-allocated", func(t *testing.T) {
			other, err := runContainerErr(net, "-p", "8080:7000")
			if other != "" {
				removeAtCleanup(t, other)
			}
			if err == nil || !strings.Contains(err.Error(), "port is already allocated") {
				t.Errorf("a second container on host port 8080: %v, want Docker to refuse it with 'port is already allocated'", err)
			}
			// The first one keeps it.
			checkReach(t, t.Name(), []reachCase{{From: w.Peer, To: hostAddrPeer, Probe: tcpProbe(8080), Family: "4", Want: true}})
		})

		t.Run("restored-after-restart", func(t *testing.T) {
			// A flushed chain (a reboot, an `iptables -F`) while the
			// daemon is down: the restarted daemon writes it again.
			killMembrane(t)
			for _, tool := range []string{"iptables", "ip6tables"} {
				if out, err := execLocal(tool, "-w", "-t", "nat", "-F", instanceChain("DNAT")); err != nil {
					t.Fatalf("flush %s: %v: %s", instanceChain("DNAT"), err, out)
				}
			}
			startMembrane(t)
			checkReach(t, t.Name(), []reachCase{
				{From: w.Peer, To: hostAddrPeer, Probe: tcpProbe(8080), Family: "4", Want: true},
				{From: w.Peer, To: hostAddrPeer, Probe: tcpProbe(8080), Family: "6", Want: true},
				{From: host, To: loopbackPeer, Probe: tcpProbe(8081), Family: "4", Want: true},
			})
		})

		t.Run("removed-with-the-container", func(t *testing.T) {
			docker(t, "rm", "-f", web)
			for _, tool := range []string{"iptables", "ip6tables"} {
				if rules := chainRules(t, tool, "nat", instanceChain("DNAT")); strings.Contains(rules, "--dport 8080 ") {
					t.Errorf("%s: the DNAT rule of 8080 outlived its container:\n%s", tool, rules)
				}
			}
			checkReach(t, t.Name(), []reachCase{
				{From: w.Peer, To: hostAddrPeer, Probe: tcpProbe(8080), Family: "4", Want: false},
				{From: w.Peer, To: hostAddrPeer, Probe: tcpProbe(8080), Family: "6", Want: false},
				{From: host, To: loopbackPeer, Probe: tcpProbe(8081), Family: "4", Want: false},
			})
			// The port is free again.
			runContainer(t, net, "-p", "8080:7000")
			checkReach(t, t.Name(), []reachCase{{From: w.Peer, To: hostAddrPeer, Probe: tcpProbe(8080), Family: "4", Want: true}})
		})
	})
}

// TestPortsPolicy: published traffic reaches the container with its
// client's address as source, so ingress policy sees the world as world
// and the host as host: a rule admitting only the host keeps the world
// out of a published port while the host (at 127.0.0.1 and at its own
// address) still gets in, and a rule admitting only the world does the
// opposite.
func TestPortsPolicy(t *testing.T) {
	onlyMembrane(t, func(t *testing.T, d netDriver) {
		w := newWorld(t, tcpPort, udpPort)
		net := d.newNetwork(t, subnets{})
		name := uniqueName("published-policy")
		pub := runContainer(t, net, "--name", name, "--label", "app=it-published", "-p", "8120:7000", "-p", "8121:7001/udp")
		_, v6 := containerIPs(t, pub, net)
		if r, err := runCLI("", "policy", "delete", "--all"); err != nil || r.Code != 0 {
			t.Logf("membrane policy delete --all before the test: %v %s", err, r.output())
		}
		waitIdentities(t, map[string]string{"pub": v6})
		deleteAllPolicyAtCleanup(t)
		host := hostPeer()

		matrixFor := func(worldIn, hostIn bool) []reachCase {
			var cases []reachCase
			for _, p := range []probe{tcpProbe(8120), udpProbe(8121)} {
				for _, fam := range families {
					cases = append(cases,
						reachCase{From: w.Peer, To: hostAddrPeer, Probe: p, Family: fam, Want: worldIn},
						reachCase{From: host, To: hostAddrPeer, Probe: p, Family: fam, Want: hostIn})
				}
				cases = append(cases, reachCase{From: host, To: loopbackPeer, Probe: p, Family: "4", Want: hostIn})
			}
			return cases
		}
		policy := func(entity string) string {
			return fmt.Sprintf(`[{
  "labels": [{"key": "name", "value": "it-published-ingress"}],
  "endpointSelector": {"matchLabels": {"app": "it-published"}},
  "ingress": [{"fromEntities": [%q]}]
}]`, entity)
		}

		t.Run("no-policy", func(t *testing.T) { checkReach(t, t.Name(), matrixFor(true, true)) })
		t.Run("only-host", func(t *testing.T) {
			importPolicy(t, policy("host"))
			checkReach(t, t.Name(), matrixFor(false, true))
		})
		t.Run("only-world", func(t *testing.T) {
			importPolicy(t, policy("world"))
			checkReach(t, t.Name(), matrixFor(true, false))
		})
	})
}

// publishedPorts are the ports `membrane endpoint get CONTAINER` shows.
func publishedPorts(t testing.TB, container string) []string {
	t.Helper()
	var ep struct {
		Ports []string `json:"ports"`
	}
	cliJSON(t, &ep, "endpoint", "get", container)
	return ep.Ports
}

// hostPortOf finds the host port of the first mapping ending in suffix
// whose host port lies in [first, last]; 0 when there is none.
func hostPortOf(ports []string, suffix string, first, last int) int {
	for _, p := range ports {
		hostSide, ok := strings.CutSuffix(p, suffix)
		if !ok {
			continue
		}
		i := strings.LastIndexByte(hostSide, ':')
		n, err := strconv.Atoi(hostSide[i+1:])
		if err == nil && n >= first && n <= last {
			return n
		}
	}
	return 0
}

// ephemeralRange is the kernel's ip_local_port_range.
func ephemeralRange(t testing.TB) (int, int) {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Fatal(err)
	}
	var first, last int
	if _, err := fmt.Sscan(string(b), &first, &last); err != nil {
		t.Fatalf("ip_local_port_range %q: %v", b, err)
	}
	return first, last
}

// execLocal runs a command on the host with a timeout.
func execLocal(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return runLocal(ctx, "", append([]string{name}, args...)...)
}
