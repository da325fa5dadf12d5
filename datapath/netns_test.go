package datapath

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// This file tests the attached datapath with real traffic between network
// namespaces that the test creates and deletes: a "host" namespace holding
// the host-side veths, and one namespace per container. Nothing is attached
// to, or sent from, the namespace the test runs in.

// requireBPFFS skips t unless it can pin under /sys/fs/bpf.
func requireBPFFS(t testing.TB) {
	t.Helper()
	requirePrivileged(t)
	var fs unix.Statfs_t
	if err := unix.Statfs("/sys/fs/bpf", &fs); err != nil || fs.Type != unix.BPF_FS_MAGIC {
		t.Skip("privileged test: needs a bpffs mounted on /sys/fs/bpf")
	}
}

// requireNetnsTools skips t when the namespace tests cannot run here.
func requireNetnsTools(t testing.TB) {
	t.Helper()
	requireBPFFS(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("privileged test: needs the ip command (iproute2)")
	}
}

func randomSuffix(t testing.TB) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// inNetns runs fn on a thread switched into the named namespace, then
// switches the thread back. Sockets created by fn stay in that namespace.
func inNetns(t testing.TB, name string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := os.Open(filepath.Join("/run/netns", name))
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer ns.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("enter namespace %s: %v", name, err)
	}
	defer func() {
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Keep the thread locked: Go discards it when the goroutine ends,
			// rather than reusing a thread in the wrong namespace.
			panic(fmt.Sprintf("restore network namespace: %v", err))
		}
		runtime.UnlockOSThread()
	}()
	fn()
}

// container is a namespace with a veth whose host side is in the host namespace.
type container struct {
	ns      string
	ep      Endpoint
	hostIf  string
	ifindex int // of eth0, in ns
}

type topology struct {
	host       string
	containers map[string]*container
}

// newTopology creates the host namespace and a container namespace per
// endpoint, wired like the driver does: eth0 in the container with the
// endpoint's addresses and default routes via the gateways, its peer in the
// host namespace. Endpoint IDs and ifindexes are filled in.
func newTopology(t testing.TB, eps ...Endpoint) *topology {
	t.Helper()
	suffix := randomSuffix(t)
	topo := &topology{host: "mbrt-host-" + suffix, containers: map[string]*container{}}
	addNetns := func(name string) {
		ipCmd(t, "netns", "add", name)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
				t.Errorf("delete namespace %s: %v: %s", name, err, out)
			}
		})
		// No duplicate address detection: addresses are usable at once.
		inNetns(t, name, func() {
			for _, p := range []string{"all", "default"} {
				if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+p+"/accept_dad", []byte("0"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	addNetns(topo.host)

	for i, ep := range eps {
		name := fmt.Sprintf("mbrt-%s-%s", ep.ID, suffix)
		hostIf := fmt.Sprintf("veth%d", i)
		addNetns(name)
		ipCmd(t, "-n", topo.host, "link", "add", hostIf, "address", ep.HostMAC.String(), "type", "veth",
			"peer", "name", "eth0", "address", ep.MAC.String(), "netns", name)
		ipCmd(t, "-n", name, "link", "set", "lo", "up")
		ipCmd(t, "-n", name, "link", "set", "eth0", "up")
		ipCmd(t, "-n", name, "addr", "add", ep.IPv4.String()+"/24", "dev", "eth0")
		ipCmd(t, "-n", name, "addr", "add", ep.IPv6.String()+"/64", "dev", "eth0", "nodad")
		ipCmd(t, "-n", name, "route", "add", "default", "via", gateway4.String())
		ipCmd(t, "-n", name, "-6", "route", "add", "default", "via", gateway6.String())
		ipCmd(t, "-n", topo.host, "link", "set", hostIf, "up")

		c := &container{ns: name, ep: ep, hostIf: hostIf}
		inNetns(t, topo.host, func() {
			iface, err := net.InterfaceByName(hostIf)
			if err != nil {
				t.Fatal(err)
			}
			c.ep.HostIfIndex = iface.Index
		})
		inNetns(t, name, func() {
			iface, err := net.InterfaceByName("eth0")
			if err != nil {
				t.Fatal(err)
			}
			c.ifindex = iface.Index
		})
		topo.containers[ep.ID] = c
	}
	return topo
}

// icmpSocket opens a raw ICMP (or ICMPv6) socket in the container's namespace.
func (c *container) icmpSocket(t testing.TB, v6 bool) net.PacketConn {
	t.Helper()
	var conn net.PacketConn
	inNetns(t, c.ns, func() {
		var err error
		if v6 {
			conn, err = net.ListenPacket("ip6:ipv6-icmp", "::")
		} else {
			conn, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		}
		if err != nil {
			t.Fatal(err)
		}
	})
	return conn
}

// awaitICMP reads ICMP messages from conn until one of type typ carries
// marker, or the deadline passes.
func awaitICMP(conn net.PacketConn, typ byte, marker []byte, timeout time.Duration) error {
	if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			return err
		}
		if n >= 8 && buf[0] == typ && bytes.Contains(buf[8:n], marker) {
			return nil
		}
	}
}

// ping sends ICMP echo requests from the container to dst through its kernel
// stack (so ARP and neighbour discovery run for real) until a reply comes
// or attempts run out.
func (c *container) ping(t testing.TB, dst netip.Addr, attempts int, timeout time.Duration) error {
	t.Helper()
	conn := c.icmpSocket(t, dst.Is6())
	defer conn.Close()
	marker := []byte("membrane-ping-" + randomSuffix(t))
	reqType, replyType := byte(8), byte(0)
	if dst.Is6() {
		reqType, replyType = 128, 129
	}
	var err error
	for i := 0; i < attempts; i++ {
		msg := make([]byte, 8, 8+len(marker))
		msg[0] = reqType
		binary.BigEndian.PutUint16(msg[4:6], 0x6d62)
		binary.BigEndian.PutUint16(msg[6:8], uint16(i))
		msg = append(msg, marker...)
		if !dst.Is6() {
			binary.BigEndian.PutUint16(msg[2:4], checksum(msg))
		} // the kernel computes ICMPv6 checksums on raw sockets
		if _, err = conn.WriteTo(msg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			return err
		}
		if err = awaitICMP(conn, replyType, marker, timeout); err == nil {
			return nil
		}
	}
	return fmt.Errorf("ping %s from %s: no reply: %w", dst, c.ep.ID, err)
}

// sendFrame injects a raw Ethernet frame at the container's eth0, as a
// process in the container with CAP_NET_RAW could.
func (c *container) sendFrame(t testing.TB, frame []byte) {
	t.Helper()
	inNetns(t, c.ns, func() {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if err := unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: c.ifindex}); err != nil {
			t.Fatal(err)
		}
	})
}

func counterDeltas(t *testing.T, d *Datapath, fn func()) map[string]uint64 {
	t.Helper()
	read := func() map[string]uint64 {
		cs, err := d.Counters()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]uint64{}
		for _, c := range cs {
			m[c.Reason] = c.Packets
		}
		return m
	}
	before := read()
	fn()
	after := read()
	for k := range after {
		after[k] -= before[k]
	}
	return after
}

// tempPinDir returns a unique, not yet existing directory on /sys/fs/bpf,
// removed with everything pinned in it when the test ends.
func tempPinDir(t testing.TB) string {
	dir := filepath.Join("/sys/fs/bpf", "membrane-test-"+randomSuffix(t))
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	return dir
}

type linkState struct{ link, prog uint32 }

// pinnedLinks returns the link and program IDs of an endpoint's pinned links.
func pinnedLinks(t testing.TB, pinDir, id string) map[string]linkState {
	t.Helper()
	m := map[string]linkState{}
	for _, h := range hooks {
		l, err := link.LoadPinnedLink(filepath.Join(pinDir, endpointsDir, id, h.pin), nil)
		if err != nil {
			t.Fatal(err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
		m[h.pin] = linkState{uint32(info.ID), uint32(info.Program)}
	}
	return m
}

func TestDatapathInNamespaces(t *testing.T) {
	requireNetnsTools(t)

	pinDir := tempPinDir(t)
	topo := newTopology(t, epA, epB, epC)
	a, b, c := topo.containers[epA.ID], topo.containers[epB.ID], topo.containers[epC.ID]

	d, err := Open(Config{PinDir: pinDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	attachAll := func(d *Datapath) {
		t.Helper()
		inNetns(t, topo.host, func() {
			for _, ct := range []*container{a, b, c} {
				if err := d.Attach(ct.ep); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	mustPing := func(from *container, to netip.Addr) {
		t.Helper()
		if err := from.ping(t, to, 3, time.Second); err != nil {
			t.Error(err)
		}
	}
	mustNotPing := func(from *container, to netip.Addr) {
		t.Helper()
		if err := from.ping(t, to, 1, time.Second); err == nil {
			t.Errorf("ping %s from %s got a reply; want none", to, from.ep.ID)
		}
	}
	connected := func() {
		t.Helper()
		mustPing(a, b.ep.IPv4)
		mustPing(a, b.ep.IPv6)
		mustPing(b, a.ep.IPv4)
		mustPing(b, a.ep.IPv6)
	}

	attachAll(d)

	t.Run("containers of one network reach each other", func(t *testing.T) {
		deltas := counterDeltas(t, d, connected)
		for _, r := range []string{"arp_reply", "nd_reply", "forward_peer"} {
			if deltas[r] == 0 {
				t.Errorf("counter %s did not go up", r)
			}
		}
	})

	t.Run("other network is isolated", func(t *testing.T) {
		deltas := counterDeltas(t, d, func() {
			mustNotPing(c, a.ep.IPv4)
			mustNotPing(c, a.ep.IPv6)
			mustNotPing(a, c.ep.IPv4)
			mustNotPing(a, c.ep.IPv6)
		})
		if deltas["drop_isolation"] < 4 {
			t.Errorf("drop_isolation went up by %d, want at least 4", deltas["drop_isolation"])
		}
	})

	t.Run("forged sources are dropped", func(t *testing.T) {
		tests := []struct {
			name   string
			forge  func(marker []byte) []byte
			v6     bool
			reason string // empty: must get through (control)
		}{
			{"genuine IPv4 (control)", func(m []byte) []byte {
				return append(ethHeader(a.ep.HostMAC, a.ep.MAC, etherTypeIPv4), ipv4Packet(a.ep.IPv4, b.ep.IPv4, protoICMP, icmp4Echo(1, 1, m))...)
			}, false, ""},
			{"forged IPv4 source", func(m []byte) []byte {
				return append(ethHeader(a.ep.HostMAC, a.ep.MAC, etherTypeIPv4), ipv4Packet(forged4, b.ep.IPv4, protoICMP, icmp4Echo(1, 1, m))...)
			}, false, "drop_spoof_ip4"},
			{"forged source MAC", func(m []byte) []byte {
				return append(ethHeader(a.ep.HostMAC, forgedMAC, etherTypeIPv4), ipv4Packet(a.ep.IPv4, b.ep.IPv4, protoICMP, icmp4Echo(1, 1, m))...)
			}, false, "drop_spoof_mac"},
			{"genuine IPv6 (control)", func(m []byte) []byte {
				return icmp6Frame(a.ep.HostMAC, a.ep.MAC, a.ep.IPv6, b.ep.IPv6, 64, icmp6EchoRequest, append([]byte{0, 1, 0, 1}, m...))
			}, true, ""},
			{"forged IPv6 source", func(m []byte) []byte {
				return icmp6Frame(a.ep.HostMAC, a.ep.MAC, forged6, b.ep.IPv6, 64, icmp6EchoRequest, append([]byte{0, 1, 0, 1}, m...))
			}, true, "drop_spoof_ip6"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				listener := b.icmpSocket(t, tt.v6)
				defer listener.Close()
				marker := []byte("membrane-forged-" + randomSuffix(t))
				echoType := byte(8)
				if tt.v6 {
					echoType = 128
				}
				var recvErr error
				deltas := counterDeltas(t, d, func() {
					a.sendFrame(t, tt.forge(marker))
					recvErr = awaitICMP(listener, echoType, marker, 500*time.Millisecond)
				})
				if tt.reason == "" {
					if recvErr != nil {
						t.Errorf("genuine packet did not arrive in %s: %v", b.ep.ID, recvErr)
					}
					return
				}
				if recvErr == nil {
					t.Errorf("forged packet arrived in %s", b.ep.ID)
				}
				if deltas[tt.reason] != 1 {
					t.Errorf("%s went up by %d, want 1", tt.reason, deltas[tt.reason])
				}
			})
		}
	})

	t.Run("attach again updates the links in place", func(t *testing.T) {
		before := pinnedLinks(t, pinDir, a.ep.ID)
		inNetns(t, topo.host, func() {
			if err := d.Attach(a.ep); err != nil {
				t.Fatal(err)
			}
		})
		after := pinnedLinks(t, pinDir, a.ep.ID)
		for pin, s := range after {
			if s.link != before[pin].link {
				t.Errorf("%s: link %d replaced by %d; want the same link updated", pin, before[pin].link, s.link)
			}
			if s.prog == before[pin].prog {
				t.Errorf("%s: still runs program %d; want the newly loaded one", pin, s.prog)
			}
		}
		connected()
	})

	t.Run("forwarding outlives the daemon and resumes after restart", func(t *testing.T) {
		links := pinnedLinks(t, pinDir, a.ep.ID)
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		connected() // no daemon: pinned links and maps keep working

		d, err = Open(Config{PinDir: pinDir})
		if err != nil {
			t.Fatal(err)
		}
		if r := d.ReplacedMaps(); len(r) != 0 {
			t.Errorf("reopen replaced maps %v; want the pinned ones reused", r)
		}
		ids, err := d.AttachedEndpoints()
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{epA.ID, epB.ID, epC.ID}; !slices.Equal(ids, want) {
			t.Errorf("AttachedEndpoints() = %v, want %v", ids, want)
		}
		attachAll(d)
		if after := pinnedLinks(t, pinDir, a.ep.ID); after[pinFromContainer].link != links[pinFromContainer].link {
			t.Errorf("restart replaced the link; want it updated in place")
		}
		connected()
	})

	t.Run("reattach after the interface was recreated", func(t *testing.T) {
		// Recreate b's veth: its pinned links now point at a deleted interface.
		ipCmd(t, "-n", topo.host, "link", "del", b.hostIf)
		ipCmd(t, "-n", topo.host, "link", "add", b.hostIf, "address", b.ep.HostMAC.String(), "type", "veth",
			"peer", "name", "eth0", "address", b.ep.MAC.String(), "netns", b.ns)
		ipCmd(t, "-n", b.ns, "link", "set", "eth0", "up")
		ipCmd(t, "-n", b.ns, "addr", "add", b.ep.IPv4.String()+"/24", "dev", "eth0")
		ipCmd(t, "-n", b.ns, "addr", "add", b.ep.IPv6.String()+"/64", "dev", "eth0", "nodad")
		ipCmd(t, "-n", b.ns, "route", "add", "default", "via", gateway4.String())
		ipCmd(t, "-n", b.ns, "-6", "route", "add", "default", "via", gateway6.String())
		ipCmd(t, "-n", topo.host, "link", "set", b.hostIf, "up")
		inNetns(t, topo.host, func() {
			iface, err := net.InterfaceByName(b.hostIf)
			if err != nil {
				t.Fatal(err)
			}
			b.ep.HostIfIndex = iface.Index
			if err := d.Attach(b.ep); err != nil {
				t.Fatal(err)
			}
		})
		inNetns(t, b.ns, func() {
			iface, err := net.InterfaceByName("eth0")
			if err != nil {
				t.Fatal(err)
			}
			b.ifindex = iface.Index
		})
		connected()
	})

	t.Run("detach removes the pins and the programs", func(t *testing.T) {
		if err := d.Detach(a.ep); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(pinDir, endpointsDir, a.ep.ID)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pin directory of %s still there (stat: %v)", a.ep.ID, err)
		}
		ids, err := d.AttachedEndpoints()
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{epB.ID, epC.ID}; !slices.Equal(ids, want) {
			t.Errorf("AttachedEndpoints() = %v, want %v", ids, want)
		}
		inNetns(t, topo.host, func() {
			for _, attach := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
				res, err := link.QueryPrograms(link.QueryOptions{Target: a.ep.HostIfIndex, Attach: attach})
				if err != nil {
					t.Fatal(err)
				}
				if len(res.Programs) != 0 {
					t.Errorf("%v of %s still runs %d programs", attach, a.hostIf, len(res.Programs))
				}
			}
		})
		for _, addr := range []netip.Addr{a.ep.IPv4, a.ep.IPv6} {
			var info endpointEndpointInfo
			if err := d.endpoints.Lookup(endpointKey(addr), &info); !errors.Is(err, ebpf.ErrKeyNotExist) {
				t.Errorf("endpoints map still has %s (lookup: %v)", addr, err)
			}
		}
		mustNotPing(b, a.ep.IPv4)
		if err := d.Detach(a.ep); err != nil {
			t.Errorf("second detach: %v", err)
		}
	})

	t.Run("detach with a stale ifindex keeps the new owner's address", func(t *testing.T) {
		stale := c.ep
		stale.ID = "gone"
		stale.HostIfIndex = c.ep.HostIfIndex + 1000
		if err := d.Detach(stale); err != nil {
			t.Fatal(err)
		}
		var info endpointEndpointInfo
		if err := d.endpoints.Lookup(endpointKey(c.ep.IPv4), &info); err != nil || int(info.Ifindex) != c.ep.HostIfIndex {
			t.Errorf("entry of %s: %+v, %v; want it kept", c.ep.IPv4, info, err)
		}
	})
}

// tcpEcho serves one-line echoes on port in the container's namespace
// until the test ends.
func (c *container) tcpEcho(t *testing.T, port int) {
	t.Helper()
	var ln net.Listener
	inNetns(t, c.ns, func() {
		var err error
		if ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port)); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				buf := make([]byte, 256)
				n, _ := conn.Read(buf)
				conn.Write(buf[:n])
			}()
		}
	}()
}

// tcpExchange connects from the container to dst:port, sends a line and
// waits for it to come back.
func (c *container) tcpExchange(t *testing.T, dst netip.Addr, port int, timeout time.Duration) error {
	t.Helper()
	var conn net.Conn
	var err error
	inNetns(t, c.ns, func() {
		conn, err = net.DialTimeout("tcp", netip.AddrPortFrom(dst, uint16(port)).String(), timeout)
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	msg := []byte("membrane-" + randomSuffix(t))
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := conn.Write(msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, buf); err != nil {
		return err
	}
	if !bytes.Equal(buf, msg) {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return nil
}

// udpSend sends one datagram from the container to dst:port.
func (c *container) udpSend(t *testing.T, dst netip.Addr, port int) {
	t.Helper()
	inNetns(t, c.ns, func() {
		conn, err := net.Dial("udp", netip.AddrPortFrom(dst, uint16(port)).String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write([]byte("membrane")); err != nil {
			t.Fatal(err)
		}
	})
}

// newPair builds the topology of endpoints A and B and opens a datapath
// pinned under pinDir, closed at the end of the test; nothing is attached.
func newPair(t *testing.T, pinDir string) (*topology, *container, *container, *Datapath) {
	t.Helper()
	requireNetnsTools(t)
	topo := newTopology(t, epA, epB)
	d, err := Open(Config{PinDir: pinDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return topo, topo.containers[epA.ID], topo.containers[epB.ID], d
}

func TestPolicyInNamespaces(t *testing.T) {
	topo, a, b, d := newPair(t, tempPinDir(t))
	inNetns(t, topo.host, func() {
		for _, c := range []*container{a, b} {
			if err := d.Attach(c.ep); err != nil {
				t.Fatal(err)
			}
		}
	})

	// A may open TCP 8080 and ping B; nothing else is allowed either way.
	const port = 8080
	entries := map[PolicyKey]Verdict{}
	for _, k := range []struct {
		port  uint16
		proto uint8
	}{{port, ProtoTCP}, {PortICMP | 8, ProtoICMP}, {PortICMP | 128, ProtoICMPv6}} {
		entries[egress(epA.Identity, epB.Identity, k.port, k.proto)] = VerdictAllow
		entries[ingress(epB.Identity, epA.Identity, k.port, k.proto)] = VerdictAllow
	}
	enforced := Enforcement{Ingress: true, Egress: true}
	if _, err := d.SyncPolicy(PolicyState{Entries: entries, Enforcement: map[uint32]Enforcement{
		epA.Identity: enforced, epB.Identity: enforced,
	}}); err != nil {
		t.Fatal(err)
	}
	a.tcpEcho(t, port)
	b.tcpEcho(t, port)

	t.Run("allowed flows work, replies come back", func(t *testing.T) {
		deltas := counterDeltas(t, d, func() {
			for _, dst := range []netip.Addr{b.ep.IPv4, b.ep.IPv6} {
				if err := a.ping(t, dst, 3, time.Second); err != nil {
					t.Error(err)
				}
				if err := a.tcpExchange(t, dst, port, 2*time.Second); err != nil {
					t.Errorf("TCP from %s to %s: %v", a.ep.ID, dst, err)
				}
			}
		})
		if deltas["drop_policy"] != 0 {
			t.Errorf("drop_policy went up by %d", deltas["drop_policy"])
		}
	})

	t.Run("denied flows are dropped and counted", func(t *testing.T) {
		events, err := d.Events()
		if err != nil {
			t.Fatal(err)
		}
		defer events.Close()
		deltas := counterDeltas(t, d, func() {
			for _, dst := range []netip.Addr{a.ep.IPv4, a.ep.IPv6} {
				if err := b.ping(t, dst, 1, 500*time.Millisecond); err == nil {
					t.Errorf("ping %s from %s got a reply", dst, b.ep.ID)
				}
				if err := b.tcpExchange(t, dst, port, 500*time.Millisecond); err == nil {
					t.Errorf("TCP from %s to %s got through", b.ep.ID, dst)
				}
			}
			a.udpSend(t, b.ep.IPv4, 9)
		})
		// 2 pings, at least 2 SYNs, 1 datagram.
		if deltas["drop_policy"] < 5 {
			t.Errorf("drop_policy went up by %d, want at least 5", deltas["drop_policy"])
		}
		events.SetDeadline(time.Now().Add(2 * time.Second))
		for {
			ev, err := events.Read()
			if err != nil {
				t.Fatalf("no drop event for B's ping: %v", err)
			}
			if ev.Type == EventDrop && ev.Reason == "drop_policy" && ev.Src == b.ep.IPv4 && ev.ICMPType == 8 {
				if ev.Endpoint != uint32(b.ep.HostIfIndex) || ev.SrcIdentity != epB.Identity || ev.DstIdentity != epA.Identity || ev.Dir != DirEgress {
					t.Errorf("drop event %+v", ev)
				}
				break
			}
		}
	})

	t.Run("an endpoint back to init may do nothing", func(t *testing.T) {
		init := a.ep
		init.Identity = IdentityInit
		if err := d.SetIdentity(init); err != nil {
			t.Fatal(err)
		}
		deltas := counterDeltas(t, d, func() {
			if err := a.ping(t, b.ep.IPv4, 1, 500*time.Millisecond); err == nil {
				t.Error("init endpoint got a ping reply")
			}
		})
		if deltas["drop_policy_init"] == 0 {
			t.Error("drop_policy_init did not go up")
		}
		if err := d.SetIdentity(a.ep); err != nil {
			t.Fatal(err)
		}
		if err := a.ping(t, b.ep.IPv4, 3, time.Second); err != nil {
			t.Error(err)
		}
	})
}
