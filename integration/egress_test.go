package integration

import (
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// TestEgress: containers reach the world (the namespace behind the host)
// over IPv4 and IPv6, TCP and UDP, and the world sees the host's address
// on its link as the source: private IPv4 and unique local IPv6 subnets
// are masqueraded, a global IPv6 subnet is routed as it is. The masquerade
// rules come and go with their network. On an --internal network
// containers reach each other and their gateway (the host) and nothing
// else: no default route, no world in either direction, no published
// ports.
func TestEgress(t *testing.T) {
	onlyMembrane(t, func(t *testing.T, d netDriver) {
		w := newWorld(t, tcpPort, udpPort)
		net := d.newNetwork(t, subnets{})
		c := runContainer(t, net)
		v4pool, v6pool := networkPools(t, net)

		t.Run("masqueraded", func(t *testing.T) {
			for _, tc := range []struct{ dst, wantSrc netip.Addr }{
				{worldAddr4, worldGateway4},
				{worldAddr6, worldGateway6},
			} {
				src, err := sourceSeenByWorld(t, c, tc.dst)
				if err != nil {
					t.Errorf("TCP from the container to the world at %s: %v", tc.dst, err)
				} else if src != tc.wantSrc {
					t.Errorf("the world at %s saw the container's connection from %s, want the host's %s (masquerade)", tc.dst, src, tc.wantSrc)
				}
				if err := udpFrom(c, tc.dst.String(), "", 3*time.Second); err != nil {
					t.Errorf("UDP from the container to the world at %s: %v", tc.dst, err)
				}
			}
		})

		t.Run("rules-follow-the-network", func(t *testing.T) {
			for tool, want := range map[string]string{
				"iptables":  "-A " + instanceChain("POST") + " -s " + v4pool.Subnet.String() + " ! -o mbr+ -j MASQUERADE",
				"ip6tables": "-A " + instanceChain("POST") + " -s " + v6pool.Subnet.String() + " ! -o mbr+ -j MASQUERADE",
			} {
				if rules := chainRules(t, tool, "nat", instanceChain("POST")); !containsLine(rules, want) {
					t.Errorf("%s: want %q for the network's subnet, the chain holds:\n%s", tool, want, rules)
				}
			}
			// A network of its own: its rule appears with it and goes
			// with it.
			other := uniqueName("egress-gone")
			docker(t, append(append([]string{"network", "create", "--label", testLabel}, d.createArgs(subnets{})...), other)...)
			o4, _ := networkPools(t, other)
			want := "-A " + instanceChain("POST") + " -s " + o4.Subnet.String() + " ! -o mbr+ -j MASQUERADE"
			if rules := chainRules(t, "iptables", "nat", instanceChain("POST")); !containsLine(rules, want) {
				t.Errorf("after `docker network create`: want %q, the chain holds:\n%s", want, rules)
			}
			docker(t, "network", "rm", other)
			if rules := chainRules(t, "iptables", "nat", instanceChain("POST")); containsLine(rules, want) {
				t.Errorf("after `docker network rm`: %q is still there", want)
			}
		})

		t.Run("global-ipv6-is-routed", func(t *testing.T) {
			global := freeGlobalSubnet(t)
			gnet := d.newNetwork(t, subnets{V4: nextSubnets().V4, V6: global})
			g := runContainer(t, gnet)
			_, g6 := containerIPs(t, g, gnet)
			src, err := sourceSeenByWorld(t, g, worldAddr6)
			if err != nil {
				t.Fatalf("TCP from a container on %s to the world: %v", global, err)
			}
			if src.String() != canonical(g6) {
				t.Errorf("the world saw the connection from %s, want the container's own %s (a global subnet is not masqueraded)", src, g6)
			}
			if src4, err := sourceSeenByWorld(t, g, worldAddr4); err != nil || src4 != worldGateway4 {
				t.Errorf("IPv4 of the same container: source %s, %v; want the host's %s", src4, err, worldGateway4)
			}
		})

		t.Run("internal", func(t *testing.T) {
			inet := newNetwork(t, uniqueName("internal"), append(d.createArgs(subnets{}), "--internal")...)
			nameB := uniqueName("internal-b")
			a := runContainer(t, inet)
			b := runContainer(t, inet, "--name", nameB, "-p", "8099:7000")
			b4, b6 := containerIPs(t, b, inet)
			p4, p6 := networkPools(t, inet)

			// Each other, by address and by name.
			assertReach(t, a, b4, b6, nameB)
			// Nothing beyond: not the world, not the host's other
			// addresses (there is no default route to them).
			assertNoReach(t, a, worldAddr4.String(), worldAddr6.String(), worldGateway4.String(), worldGateway6.String())
			for _, fam := range []string{"-4", "-6"} {
				if routes := execIn(t, a, "ip", fam, "route"); strings.Contains(routes, "default") {
					t.Errorf("a container on an internal network has a default route (ip %s route):\n%s", fam, routes)
				}
			}
			// The world cannot come in either, routed or through the
			// port b asked to publish.
			for _, dst := range []string{b4, b6} {
				if out, err := w.Peer.run(t.Context(), "", "tcp-check", "-timeout", "1s", dst, tcpPort); err == nil {
					t.Errorf("the world reached %s on the internal network: %s", dst, out)
				}
			}
			if out, err := w.Peer.run(t.Context(), "", "tcp-check", "-timeout", "1s", worldGateway4.String(), "8099"); err == nil {
				t.Errorf("a port published on an internal network is reachable: %s", out)
			}
			if rules := chainRules(t, "iptables", "nat", instanceChain("DNAT")); strings.Contains(rules, "--dport 8099 ") {
				t.Errorf("a port of an internal network has a DNAT rule:\n%s", rules)
			}
			// The host: it reaches the containers, and they reach it at
			// their gateway, which is on their link (as on Docker's
			// bridge, where the bridge's address answers).
			if err := tcpFromHost(b4, tcpPort); err != nil {
				t.Errorf("host -> %s on the internal network: %v", b4, err)
			}
			if p4.Gateway.IsValid() {
				port := hostEchoServer(t, p4.Gateway.String())
				if _, err := execErr(a, "/bin/probe", "tcp-check", "-timeout", "3s", p4.Gateway.String(), port); err != nil {
					t.Errorf("a container on an internal network does not reach the host at its gateway %s: %v", p4.Gateway, err)
				}
			}
			for tool, sub := range map[string]netip.Prefix{"iptables": p4.Subnet, "ip6tables": p6.Subnet} {
				rules := chainRules(t, tool, "filter", instanceChain("FWD"))
				for _, want := range []string{"-s " + sub.String() + " -j DROP", "-d " + sub.String() + " -j DROP"} {
					if !containsLine(rules, "-A "+instanceChain("FWD")+" "+want) {
						t.Errorf("%s: want %q in %s, it holds:\n%s", tool, want, instanceChain("FWD"), rules)
					}
				}
				if nat := chainRules(t, tool, "nat", instanceChain("POST")); strings.Contains(nat, sub.String()) {
					t.Errorf("%s: the internal network %s is masqueraded:\n%s", tool, sub, nat)
				}
			}
		})
	})
}

// TestInbound: from beyond the host, a container's own address takes no
// new connections (only published ports and the replies to the
// container's connections come in); a network created with
// -o membrane.inbound=routed takes them, and policy decides as for any
// peer. membrane drops them with rules of its own: Docker 20.10's bridge
// leaves them to the FORWARD chain's policy, which dockerd sets to DROP
// only when it turned forwarding on itself, so the bridge is no baseline
// here.
func TestInbound(t *testing.T) {
	onlyMembrane(t, func(t *testing.T, d netDriver) {
		w := newWorld(t, tcpPort, udpPort)
		net := d.newNetwork(t, subnets{})
		c := runContainer(t, net, "-p", worldGateway4.String()+":8097:7000")
		c4, c6 := containerIPs(t, c, net)
		for _, dst := range []string{c4, c6} {
			if out, err := w.Peer.run(t.Context(), "", "tcp-check", "-timeout", "1s", dst, tcpPort); err == nil {
				t.Errorf("the world reached %s:%s, which is not published: %s", dst, tcpPort, out)
			}
		}
		if out, err := w.Peer.run(t.Context(), "", "tcp-check", "-timeout", "3s", worldGateway4.String(), "8097"); err != nil {
			t.Errorf("the world does not reach the published port %s:8097: %v: %s", worldGateway4, err, out)
		}
		if err := tcpFrom(c, worldAddr4.String(), "", 3*time.Second); err != nil {
			t.Errorf("the container does not reach the world (replies must come in): %v", err)
		}
		routed := newNetwork(t, uniqueName("routed"), append(d.createArgs(subnets{}), "-o", "membrane.inbound=routed")...)
		r := runContainer(t, routed)
		r4, r6 := containerIPs(t, r, routed)
		for _, dst := range []string{r4, r6} {
			if out, err := w.Peer.run(t.Context(), "", "tcp-check", "-timeout", "3s", dst, tcpPort); err != nil {
				t.Errorf("the world does not reach %s:%s on a network with membrane.inbound=routed: %v: %s", dst, tcpPort, err, out)
			}
		}
		if _, err := dockerErr("network", "create", "-d", d.Driver, "--ipam-driver", d.IPAM, "--ipv6", "-o", "membrane.inbound=open", uniqueName("bad")); err == nil ||
			!strings.Contains(err.Error(), "membrane.inbound") {
			t.Errorf("membrane.inbound=open: want a refusal naming the option, got %v", err)
		}
	})
}

// instanceChain names one of the harness daemon's own chains (see
// firewall/rules.go): MBR-<host device>-DNAT, -POST or -FWD.
func instanceChain(suffix string) string { return "MBR-" + hostDevice + "-" + suffix }

// chainRules lists one chain as `iptables -S` prints it.
func chainRules(t testing.TB, tool, table, chain string) string {
	t.Helper()
	out, err := exec.Command(tool, "-w", "-t", table, "-S", chain).CombinedOutput()
	if err != nil {
		t.Fatalf("%s -t %s -S %s: %v: %s", tool, table, chain, err, out)
	}
	return string(out)
}

// freeGlobalSubnet picks a /64 from the documentation prefix 2001:db8::/32
// (never routed anywhere) that no route of this host touches: a "global"
// subnet, as far as membrane can tell. Its traffic only ever goes between
// a container and the world namespace.
func freeGlobalSubnet(t testing.TB) netip.Prefix {
	t.Helper()
	used, err := hostPrefixes("-6")
	if err != nil {
		t.Fatal(err)
	}
	for range 16 {
		var b [16]byte
		b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
		_, _ = rand.Read(b[4:8])
		p := netip.PrefixFrom(netip.AddrFrom16(b), 64)
		if !overlapsAny(p, used) {
			return p
		}
	}
	t.Fatal("no free /64 in 2001:db8::/32")
	return netip.Prefix{}
}

// sourceSeenByWorld connects from container ctr to a TCP listener the test
// opens at dst (an address of the world namespace, on a fresh port) and
// returns the source address the world saw.
func sourceSeenByWorld(t testing.TB, ctr string, dst netip.Addr) (netip.Addr, error) {
	t.Helper()
	rec := recordSourcesInWorld(t, dst)
	if _, err := execErr(ctr, "/bin/probe", "tcp-check", "-timeout", "3s", dst.String(), rec.port); err != nil {
		return netip.Addr{}, err
	}
	select {
	case src := <-rec.sources:
		return src, nil
	case <-time.After(3 * time.Second):
		return netip.Addr{}, fmt.Errorf("the echo came back but the listener at %s recorded no connection", dst)
	}
}

// sourceRecorder is a TCP echo listener inside the world namespace that
// reports each client's address.
type sourceRecorder struct {
	port    string
	sources chan netip.Addr
}

// recordSourcesInWorld listens on addr, port 0, in the world namespace
// until the test ends.
func recordSourcesInWorld(t testing.TB, addr netip.Addr) *sourceRecorder {
	t.Helper()
	var ln net.Listener
	err := inNetns(worldNetns, func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, worldNetns, err)
	}
	t.Cleanup(func() { ln.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	rec := &sourceRecorder{port: port, sources: make(chan netip.Addr, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
				select {
				case rec.sources <- ap.Addr().Unmap():
				default:
				}
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return rec
}

// inNetns runs fn on an OS thread switched into the named network
// namespace: sockets fn opens live there, while the rest of the test stays
// on the host. The thread goes back to the host's namespace before it is
// unlocked; should that fail it stays locked, and Go ends it with its
// goroutine.
func inNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		ns, err := netns.GetFromName(name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		err = fn()
		if rerr := netns.Set(orig); rerr != nil {
			errc <- fmt.Errorf("return to the host namespace: %w (after: %v)", rerr, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}
