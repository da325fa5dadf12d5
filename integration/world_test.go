package integration

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The "world": a network namespace the tests create, standing for anything
// beyond the host. It hangs off the host on a veth pair and routes
// everything back through it, so containers reach it the way they reach
// any outside address: through the host's routing and FORWARD chain. No
// packet to or from it leaves the machine.
const (
	worldNetns   = "mbit-world"
	worldHostDev = "mbitw0" // host side
	worldPeerDev = "mbitw1" // world side
)

var (
	worldPrefix4 = netip.MustParsePrefix("198.18.0.0/24")
	worldPrefix6 = netip.MustParsePrefix("fd00:198:18::/64")
	// The host's addresses on worldHostDev: the world's gateways.
	worldGateway4 = netip.MustParseAddr("198.18.0.1")
	worldGateway6 = netip.MustParseAddr("fd00:198:18::1")
	// The world's addresses: every policy test reaches both. The second
	// pair is what a CIDR rule with an `except` for the first one still
	// allows.
	worldAddr4  = netip.MustParseAddr("198.18.0.2")
	worldAddr6  = netip.MustParseAddr("fd00:198:18::2")
	world2Addr4 = netip.MustParseAddr("198.18.0.3")
	world2Addr6 = netip.MustParseAddr("fd00:198:18::3")
)

// world is the running world namespace with its probe servers.
type world struct {
	// Peers are the world as two destinations (its two address pairs);
	// Peer is also the source of checks run in the namespace.
	Peer, Peer2 *peer
	server      *exec.Cmd
	serverDone  chan struct{}
}

// probeBin is the probe binary the harness built for the test image; the
// world namespace and the host run it directly.
func probeBin() string { return filepath.Join(h.tmp, "probe") }

// newWorld creates the world namespace, its veth pair, addresses and
// routes, and starts `probe serve` in it on the given ports. Everything is
// removed when the test ends.
func newWorld(t testing.TB, tcpPorts, udpPorts string) *world {
	t.Helper()
	if err := checkWorldPrefixesFree(); err != nil {
		t.Fatal(err)
	}
	removeWorld()
	t.Cleanup(removeWorld)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	inWorld := func(args ...string) {
		t.Helper()
		run(append([]string{"-n", worldNetns}, args...)...)
	}
	run("netns", "add", worldNetns)
	run("link", "add", worldHostDev, "type", "veth", "peer", "name", worldPeerDev, "netns", worldNetns)
	// nodad: the addresses are usable at once, not tentative for a second.
	run("addr", "add", prefixString(worldGateway4, worldPrefix4), "dev", worldHostDev)
	run("addr", "add", prefixString(worldGateway6, worldPrefix6), "dev", worldHostDev, "nodad")
	run("link", "set", worldHostDev, "up")
	inWorld("link", "set", "lo", "up")
	for _, a := range []struct {
		addr netip.Addr
		p    netip.Prefix
	}{{worldAddr4, worldPrefix4}, {world2Addr4, worldPrefix4}} {
		inWorld("addr", "add", prefixString(a.addr, a.p), "dev", worldPeerDev)
	}
	for _, a := range []netip.Addr{worldAddr6, world2Addr6} {
		inWorld("addr", "add", prefixString(a, worldPrefix6), "dev", worldPeerDev, "nodad")
	}
	inWorld("link", "set", worldPeerDev, "up")
	inWorld("route", "add", "default", "via", worldGateway4.String())
	inWorld("-6", "route", "add", "default", "via", worldGateway6.String())

	w := &world{
		Peer:  netnsPeer("world", worldNetns, worldAddr4.String(), worldAddr6.String()),
		Peer2: netnsPeer("world2", worldNetns, world2Addr4.String(), world2Addr6.String()),
	}
	cmd := exec.Command("ip", "netns", "exec", worldNetns, probeBin(), "serve", "-tcp", tcpPorts, "-udp", udpPorts)
	logf, err := os.Create(filepath.Join(h.tmp, "world-probe.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	// `ip netns exec` execs the probe in place: the signal reaches it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start probe server in the world namespace: %v", err)
	}
	w.server, w.serverDone = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(w.serverDone) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-w.serverDone
	})

	// The servers answer inside the namespace before anyone relies on them.
	port, _, _ := strings.Cut(tcpPorts, ",")
	for _, addr := range []netip.Addr{worldAddr4, worldAddr6, world2Addr4, world2Addr6} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", worldNetns, probeBin(), "tcp-check", "-timeout", "5s", addr.String(), port).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("probe server in the world namespace does not answer on %s port %s: %v: %s (server log: %s)",
				addr, port, err, strings.TrimSpace(string(out)), tailFile(logf.Name(), 5))
		}
	}
	return w
}

// removeWorld deletes the world namespace and its veth pair; whatever is
// already gone is fine.
func removeWorld() {
	_ = exec.Command("ip", "link", "del", worldHostDev).Run()
	_ = exec.Command("ip", "netns", "del", worldNetns).Run()
}

func prefixString(a netip.Addr, p netip.Prefix) string {
	return netip.PrefixFrom(a, p.Bits()).String()
}

// checkWorldPrefixesFree makes sure no host address or route overlaps the
// world's prefixes (other than a world left over from a crashed run).
func checkWorldPrefixesFree() error {
	removeWorld()
	for fam, p := range map[string]netip.Prefix{"-4": worldPrefix4, "-6": worldPrefix6} {
		used, err := hostPrefixes(fam)
		if err != nil {
			return err
		}
		if overlapsAny(p, used) {
			return fmt.Errorf("the world namespace's prefix %s overlaps a route or address of this host (`ip %s route`, `ip %s addr`): the policy tests need it free", p, fam, fam)
		}
	}
	return nil
}
