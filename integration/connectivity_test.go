package integration

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestContainersReachEachOther: two containers on one network reach each
// other over IPv4 and IPv6 with ICMP, TCP and UDP, in both directions, and
// by container name through Docker's embedded DNS, which answers with both
// of the peer's addresses.
func TestContainersReachEachOther(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d netDriver) {
		net := d.newNetwork(t, subnets{})
		nameA, nameB := uniqueName("a"), uniqueName("b")
		a := runContainer(t, net, "--name", nameA)
		b := runContainer(t, net, "--name", nameB)
		a4, a6 := containerIPs(t, a, net)
		b4, b6 := containerIPs(t, b, net)
		if a4 == b4 || a6 == b6 {
			t.Fatalf("containers share an address: a %s %s, b %s %s", a4, a6, b4, b6)
		}

		assertReach(t, b, a4, a6)
		assertReach(t, a, b4, b6)
		for _, addr := range []string{a4, a6} {
			if err := udpFrom(b, addr, "", 3*time.Second); err != nil {
				t.Errorf("UDP %s -> %s: want an echo: %v", short(b), addr, err)
			}
		}

		out, err := execErr(b, "/bin/probe", "dns", nameA)
		if err != nil {
			t.Errorf("resolve %s in %s: %v", nameA, short(b), err)
		}
		got := strings.Fields(out)
		for _, want := range []string{a4, a6} {
			if !slices.Contains(got, canonical(want)) {
				t.Errorf("embedded DNS answers %v for %s, want it to include %s", got, nameA, want)
			}
		}
		assertReach(t, b, nameA)
	})
}

// canonical formats an address the way Go prints it.
func canonical(addr string) string {
	if a, err := netip.ParseAddr(addr); err == nil {
		return a.String()
	}
	return addr
}

// TestStaticAddressesAreHonoured: `docker run --ip --ip6` on a network with
// given subnets puts exactly those addresses on the container's interface,
// docker inspect reports them, and peers reach them.
func TestStaticAddressesAreHonoured(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d netDriver) {
		s := nextSubnets()
		net := d.newNetwork(t, s)
		want4, want6 := addrAt(s.V4, 77), addrAt(s.V6, 0x77)
		c := runContainer(t, net, "--ip", want4.String(), "--ip6", want6.String())

		got4, got6 := containerIPs(t, c, net)
		if canonical(got4) != want4.String() || canonical(got6) != want6.String() {
			t.Errorf("docker inspect shows %s and %s, want %s and %s", got4, got6, want4, want6)
		}
		addrs := execIn(t, c, "ip", "addr", "show", "dev", "eth0")
		for _, want := range []string{"inet " + want4.String() + "/", "inet6 " + want6.String() + "/"} {
			if !strings.Contains(addrs, want) {
				t.Errorf("`ip addr` in the container lacks %q:\n%s", want, addrs)
			}
		}

		peer := runContainer(t, net)
		assertReach(t, peer, want4.String(), want6.String())
	})
}

// TestContainerOnTwoNetworks: a container started on network A and then
// connected to network B (no error) has an IPv4 and an IPv6 address on each,
// one interface per network, is reachable on both from each network's
// peers, and reaches both peers.
func TestContainerOnTwoNetworks(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d netDriver) {
		netA := d.newNetwork(t, subnets{})
		netB := d.newNetwork(t, subnets{})
		x := runContainer(t, netA)
		docker(t, "network", "connect", netB, x)

		xa4, xa6 := containerIPs(t, x, netA)
		xb4, xb6 := containerIPs(t, x, netB)
		addrs := execIn(t, x, "ip", "addr")
		for _, a := range []string{xa4, xa6, xb4, xb6} {
			if !strings.Contains(addrs, " "+canonical(a)+"/") {
				t.Errorf("`ip addr` in the container lacks %s:\n%s", a, addrs)
			}
		}

		peerA := runContainer(t, netA)
		peerB := runContainer(t, netB)
		assertReach(t, peerA, xa4, xa6)
		assertReach(t, peerB, xb4, xb6)
		pa4, pa6 := containerIPs(t, peerA, netA)
		pb4, pb6 := containerIPs(t, peerB, netB)
		assertReach(t, x, pa4, pa6, pb4, pb6)
	})
}

// TestNetworksAreIsolated: a container on network B gets no ICMP reply and
// no TCP echo from a container on network A, over IPv4 or IPv6, while a
// container on A reaches it (so the server is up and the check can pass).
func TestNetworksAreIsolated(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d netDriver) {
		netA := d.newNetwork(t, subnets{})
		netB := d.newNetwork(t, subnets{})
		server := runContainer(t, netA)
		insider := runContainer(t, netA)
		outsider := runContainer(t, netB)
		s4, s6 := containerIPs(t, server, netA)

		assertReach(t, insider, s4, s6)
		assertNoReach(t, outsider, s4, s6)
	})
}

// TestHostAndContainerReachEachOther: from the host's namespace a
// container's IPv4 and IPv6 addresses answer ping and a TCP echo; from the
// container, the network's gateway addresses (which belong to the host)
// accept a TCP connection to a listener the test opens on the host.
func TestHostAndContainerReachEachOther(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d netDriver) {
		net := d.newNetwork(t, subnets{})
		c := runContainer(t, net)
		c4, c6 := containerIPs(t, c, net)

		for _, addr := range []string{c4, c6} {
			if err := retryOnce(t, "host ping "+addr, func() error { return pingFromHost(addr) }); err != nil {
				t.Errorf("host -> %s: %v", addr, err)
			}
			if err := tcpFromHost(addr, tcpPort); err != nil {
				t.Errorf("host -> %s TCP: %v", addr, err)
			}
		}

		// The gateways the container routes through, as docker inspect
		// shows them for the container.
		ep := containerNetworks(t, c)[net]
		if ep.Gateway == "" || ep.IPv6Gateway == "" {
			t.Fatalf("docker inspect shows gateways %q and %q, want an IPv4 and an IPv6 one", ep.Gateway, ep.IPv6Gateway)
		}
		for _, gw := range []string{ep.Gateway, ep.IPv6Gateway} {
			port := hostEchoServer(t, gw)
			if _, err := execErr(c, "/bin/probe", "tcp-check", gw, port); err != nil {
				t.Errorf("container -> host at gateway %s port %s: %v", gw, port, err)
			}
		}
	})
}
