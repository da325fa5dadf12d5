package datapath

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// requirePrivileged skips t unless it runs as root: loading BPF programs and
// creating network namespaces need CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN.
func requirePrivileged(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("privileged test: needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN) to load BPF programs; run `go test` as root")
	}
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

var (
	gateway4 = netip.MustParseAddr("10.210.1.1")
	gateway6 = netip.MustParseAddr("fd12:3456:789a:1::1")

	// The endpoint under test.
	epA = Endpoint{
		ID:           "ep-a",
		HostIfIndex:  42,
		HostMAC:      mustMAC("02:00:00:00:01:05"),
		MAC:          mustMAC("02:00:00:00:0a:05"),
		IPv4:         netip.MustParseAddr("10.210.1.5"),
		IPv6:         netip.MustParseAddr("fd12:3456:789a:1::5"),
		NetworkIndex: 1,
		Identity:     256,
	}
	// A peer on the same network.
	epB = Endpoint{
		ID:           "ep-b",
		HostIfIndex:  43,
		HostMAC:      mustMAC("02:00:00:00:01:06"),
		MAC:          mustMAC("02:00:00:00:0a:06"),
		IPv4:         netip.MustParseAddr("10.210.1.6"),
		IPv6:         netip.MustParseAddr("fd12:3456:789a:1::6"),
		NetworkIndex: 1,
		Identity:     257,
	}
	// An endpoint of another network (same subnet, to prove isolation is by network, not address).
	epC = Endpoint{
		ID:           "ep-c",
		HostIfIndex:  44,
		HostMAC:      mustMAC("02:00:00:00:01:07"),
		MAC:          mustMAC("02:00:00:00:0a:07"),
		IPv4:         netip.MustParseAddr("10.210.1.7"),
		IPv6:         netip.MustParseAddr("fd12:3456:789a:1::7"),
		NetworkIndex: 2,
		Identity:     258,
	}

	// Addresses that are no endpoint's (documentation ranges; only ever in crafted packets).
	unknown4  = netip.MustParseAddr("192.0.2.1")
	unknown6  = netip.MustParseAddr("2001:db8::1")
	forged4   = netip.MustParseAddr("10.210.1.99")
	forged6   = netip.MustParseAddr("fd12:3456:789a:1::99")
	linkLoc6  = netip.MustParseAddr("fe80::5")
	forgedMAC = mustMAC("02:00:00:00:0a:99")
)

// progFixture is a Datapath with unpinned maps holding epA, epB and epC, and
// the programs of one endpoint loaded (not attached).
type progFixture struct {
	d     *Datapath
	progs *endpointProgs
}

func newProgFixture(t testing.TB, ep Endpoint) *progFixture {
	t.Helper()
	requirePrivileged(t)
	d, err := newDatapath("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	for _, e := range []Endpoint{epA, epB, epC} {
		if err := d.putEndpoint(&e); err != nil {
			t.Fatal(err)
		}
	}
	progs, err := d.loadPrograms(&ep)
	if err != nil {
		t.Fatalf("load programs (verifier): %+v", err)
	}
	t.Cleanup(func() { progs.Close() })
	return &progFixture{d: d, progs: progs}
}

func (f *progFixture) counters(t testing.TB) map[string]Counter {
	t.Helper()
	cs, err := f.d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]Counter, len(cs))
	for _, c := range cs {
		m[c.Reason] = c
	}
	return m
}

// run runs prog on frame and checks that exactly the counter of reason went
// up, by one packet of len(frame) bytes. It returns the verdict and the
// frame as the program left it.
func (f *progFixture) run(t *testing.T, prog *ebpf.Program, frame []byte, reason string) (uint32, []byte) {
	t.Helper()
	before := f.counters(t)
	if _, ok := before[reason]; !ok {
		t.Fatalf("unknown reason %q", reason)
	}
	opts := ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256)}
	ret, err := prog.Run(&opts)
	if err != nil {
		t.Fatal(err)
	}
	after := f.counters(t)
	for name, a := range after {
		b := before[name]
		dp, db := a.Packets-b.Packets, a.Bytes-b.Bytes
		switch {
		case name == reason && (dp != 1 || db != uint64(len(frame))):
			t.Errorf("counter %s went up by %d packets, %d bytes; want 1 packet, %d bytes", name, dp, db, len(frame))
		case name != reason && dp != 0:
			t.Errorf("counter %s went up by %d packets; want only %s to count", name, dp, reason)
		}
	}
	return ret, opts.DataOut
}

func verdictName(v uint32) string {
	switch v {
	case tcActOK:
		return "TC_ACT_OK"
	case tcActShot:
		return "TC_ACT_SHOT"
	case tcActRedirect:
		return "TC_ACT_REDIRECT"
	}
	return "unknown verdict"
}

func TestFromContainerDropsAndPasses(t *testing.T) {
	f := newProgFixture(t, epA)
	a := epA

	mldReport := func(src netip.Addr) []byte {
		// MLDv2 report: Hop-by-Hop header with router alert, then ICMPv6 143.
		dst := netip.MustParseAddr("ff02::16")
		msg := icmp6Message(src, dst, icmp6MLDv2Report, 0, make([]byte, 4))
		hbh := []byte{protoICMPv6, 0, 5, 2, 0, 0, 1, 0}
		return append(ethHeader(mustMAC("33:33:00:00:00:16"), a.MAC, etherTypeIPv6),
			ipv6Packet(src, dst, protoHopOpt, 1, append(hbh, msg...))...)
	}
	tooManyExtHeaders := func() []byte {
		var payload []byte
		for i := 0; i < 5; i++ {
			payload = append(payload, 60, 0, 1, 4, 0, 0, 0, 0) // destination options, PadN
		}
		payload[len(payload)-8] = protoUDP
		payload = append(payload, make([]byte, 8)...)
		return append(ethHeader(a.HostMAC, a.MAC, etherTypeIPv6), ipv6Packet(a.IPv6, epB.IPv6, 60, 64, payload)...)
	}
	shortIHL := udp4Frame(a.HostMAC, a.MAC, a.IPv4, epB.IPv4, []byte("x"))
	shortIHL[14] = 0x44
	longIHL := udp4Frame(a.HostMAC, a.MAC, a.IPv4, epB.IPv4, []byte("x"))
	longIHL[14] = 0x4f

	tests := []struct {
		name   string
		frame  []byte
		want   uint32
		reason string
	}{
		{"gratuitous ARP is not answered", arpFrame(broadcastMAC, a.MAC, 1, a.MAC, a.IPv4, broadcastMAC, a.IPv4), tcActShot, "drop_arp_ignored"},
		{"ARP reply is not passed on", arpFrame(a.HostMAC, a.MAC, 2, a.MAC, a.IPv4, a.HostMAC, gateway4), tcActShot, "drop_arp_ignored"},
		{"ARP probe is not answered", arpFrame(broadcastMAC, a.MAC, 1, a.MAC, netip.IPv4Unspecified(), net.HardwareAddr(make([]byte, 6)), gateway4), tcActShot, "drop_arp_ignored"},
		{"ARP request with forged sender IP", arpFrame(broadcastMAC, a.MAC, 1, a.MAC, forged4, net.HardwareAddr(make([]byte, 6)), gateway4), tcActShot, "drop_spoof_ip4"},
		{"ARP request with forged sender MAC", arpFrame(broadcastMAC, a.MAC, 1, forgedMAC, a.IPv4, net.HardwareAddr(make([]byte, 6)), gateway4), tcActShot, "drop_spoof_mac"},
		{"truncated ARP", arpFrame(broadcastMAC, a.MAC, 1, a.MAC, a.IPv4, broadcastMAC, gateway4)[:30], tcActShot, "drop_malformed"},

		{"DAD solicitation is not answered", icmp6Frame(broadcastMAC, a.MAC, netip.IPv6Unspecified(), gateway6, 255, icmp6NeighSolicit, nsBody(gateway6, nil)), tcActShot, "drop_nd_ignored"},
		{"solicitation for own address is not answered", icmp6Frame(broadcastMAC, a.MAC, linkLoc6, a.IPv6, 255, icmp6NeighSolicit, nsBody(a.IPv6, a.MAC)), tcActShot, "drop_nd_ignored"},
		{"solicitation from forged source", icmp6Frame(broadcastMAC, a.MAC, forged6, gateway6, 255, icmp6NeighSolicit, nsBody(gateway6, a.MAC)), tcActShot, "drop_spoof_ip6"},
		{"router advertisement", icmp6Frame(broadcastMAC, a.MAC, linkLoc6, netip.MustParseAddr("ff02::1"), 255, icmp6RouterAdvert, make([]byte, 12)), tcActShot, "drop_router_advert"},
		{"redirect", icmp6Frame(a.HostMAC, a.MAC, linkLoc6, epB.IPv6, 255, icmp6Redirect, make([]byte, 36)), tcActShot, "drop_icmp6_redirect"},
		{"router solicitation", icmp6Frame(broadcastMAC, a.MAC, linkLoc6, netip.MustParseAddr("ff02::2"), 255, icmp6RouterSolicit, make([]byte, 4)), tcActShot, "drop_router_solicit"},
		{"MLD report from ::", mldReport(netip.IPv6Unspecified()), tcActShot, "drop_mld"},
		{"MLD report from link-local", mldReport(linkLoc6), tcActShot, "drop_mld"},

		{"forged source IPv4", udp4Frame(a.HostMAC, a.MAC, forged4, epB.IPv4, []byte("x")), tcActShot, "drop_spoof_ip4"},
		{"forged source IPv6", udp6Frame(a.HostMAC, a.MAC, forged6, epB.IPv6, []byte("x")), tcActShot, "drop_spoof_ip6"},
		{"link-local source outside ND", udp6Frame(a.HostMAC, a.MAC, linkLoc6, epB.IPv6, []byte("x")), tcActShot, "drop_spoof_ip6"},
		{"forged source MAC", udp4Frame(a.HostMAC, forgedMAC, a.IPv4, epB.IPv4, []byte("x")), tcActShot, "drop_spoof_mac"},

		{"IPv4 to another network's endpoint", udp4Frame(a.HostMAC, a.MAC, a.IPv4, epC.IPv4, []byte("x")), tcActShot, "drop_isolation"},
		{"IPv6 to another network's endpoint", udp6Frame(a.HostMAC, a.MAC, a.IPv6, epC.IPv6, []byte("x")), tcActShot, "drop_isolation"},
		{"IPv4 to unknown address goes to the host", udp4Frame(a.HostMAC, a.MAC, a.IPv4, unknown4, []byte("x")), tcActOK, "forward_host"},
		{"IPv6 to unknown address goes to the host", udp6Frame(a.HostMAC, a.MAC, a.IPv6, unknown6, []byte("x")), tcActOK, "forward_host"},
		{"IPv6 neighbour advertisement to the host", icmp6Frame(a.HostMAC, a.MAC, linkLoc6, netip.MustParseAddr("fe80::1"), 255, icmp6NeighAdvert, nsBody(linkLoc6, nil)), tcActOK, "forward_host"},

		{"IPv4 multicast", udp4Frame(mustMAC("01:00:5e:00:00:fb"), a.MAC, a.IPv4, netip.MustParseAddr("224.0.0.251"), []byte("x")), tcActShot, "drop_multicast_ip4"},
		{"IPv4 broadcast", udp4Frame(broadcastMAC, a.MAC, a.IPv4, netip.MustParseAddr("255.255.255.255"), []byte("x")), tcActShot, "drop_multicast_ip4"},
		{"IPv6 multicast", udp6Frame(mustMAC("33:33:00:00:00:fb"), a.MAC, a.IPv6, netip.MustParseAddr("ff02::fb"), []byte("x")), tcActShot, "drop_multicast_ip6"},

		// BPF_PROG_RUN refuses IP frames shorter than their base header, so
		// truncation is tested past it.
		{"Ethernet header only", ethHeader(broadcastMAC, a.MAC, etherTypeARP), tcActShot, "drop_malformed"},
		{"IPv4 header length below 20", shortIHL, tcActShot, "drop_malformed"},
		{"IPv4 options beyond the frame", longIHL, tcActShot, "drop_malformed"},
		{"truncated IPv6 extension header", append(ethHeader(a.HostMAC, a.MAC, etherTypeIPv6), ipv6Packet(a.IPv6, epB.IPv6, protoHopOpt, 64, []byte{protoUDP})...), tcActShot, "drop_malformed"},
		{"truncated neighbour solicitation", icmp6Frame(broadcastMAC, a.MAC, a.IPv6, gateway6, 255, icmp6NeighSolicit, make([]byte, 8)), tcActShot, "drop_malformed"},
		{"too many IPv6 extension headers", tooManyExtHeaders(), tcActShot, "drop_ip6_exthdr_limit"},
		{"VLAN-tagged frame", append(ethHeader(a.HostMAC, a.MAC, etherTypeVLAN), make([]byte, 46)...), tcActShot, "drop_unsupported_l3"},
		{"not IP", append(ethHeader(a.HostMAC, a.MAC, 0x88cc), make([]byte, 46)...), tcActShot, "drop_unsupported_l3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := bytes.Clone(tt.frame)
			got, out := f.run(t, f.progs.FromContainer, tt.frame, tt.reason)
			if got != tt.want {
				t.Errorf("verdict %s (%d), want %s (%d)", verdictName(got), got, verdictName(tt.want), tt.want)
			}
			if tt.want == tcActOK && !bytes.Equal(out, in) {
				t.Errorf("frame passed to the host was modified:\n got %x\nwant %x", out, in)
			}
		})
	}
}

func TestFromContainerAnswersARP(t *testing.T) {
	f := newProgFixture(t, epA)
	a := epA
	for _, target := range []netip.Addr{gateway4, epB.IPv4, unknown4} {
		t.Run(target.String(), func(t *testing.T) {
			req := arpFrame(broadcastMAC, a.MAC, 1, a.MAC, a.IPv4, net.HardwareAddr(make([]byte, 6)), target)
			got, out := f.run(t, f.progs.FromContainer, req, "arp_reply")
			if got != tcActRedirect {
				t.Fatalf("verdict %s, want TC_ACT_REDIRECT", verdictName(got))
			}
			want := arpFrame(a.MAC, a.HostMAC, 2, a.HostMAC, target, a.MAC, a.IPv4)
			if !bytes.Equal(out, want) {
				t.Errorf("ARP reply:\n got %x\nwant %x", out, want)
			}
		})
	}
}

// checkNA checks that frame is the neighbour advertisement for target that
// the host veth (epA.HostMAC) sends to dst.
func checkNA(t *testing.T, frame []byte, target, dst netip.Addr) {
	t.Helper()
	if len(frame) != 14+40+32 {
		t.Fatalf("NA frame is %d bytes, want %d: %x", len(frame), 14+40+32, frame)
	}
	if eth := ethHeader(epA.MAC, epA.HostMAC, etherTypeIPv6); !bytes.Equal(frame[:14], eth) {
		t.Errorf("Ethernet header %x, want %x", frame[:14], eth)
	}
	ip := frame[14:54]
	if ip[0]>>4 != 6 || binary.BigEndian.Uint16(ip[4:6]) != 32 || ip[6] != protoICMPv6 || ip[7] != 255 {
		t.Errorf("IPv6 header: version %d, payload length %d, next header %d, hop limit %d; want 6, 32, 58, 255",
			ip[0]>>4, binary.BigEndian.Uint16(ip[4:6]), ip[6], ip[7])
	}
	src, _ := netip.AddrFromSlice(ip[8:24])
	gotDst, _ := netip.AddrFromSlice(ip[24:40])
	if src != target || gotDst != dst {
		t.Errorf("IPv6 %s -> %s, want %s -> %s", src, gotDst, target, dst)
	}
	msg := frame[54:]
	if msg[0] != icmp6NeighAdvert || msg[1] != 0 {
		t.Errorf("ICMPv6 type %d code %d, want 136 0", msg[0], msg[1])
	}
	if flags := msg[4]; flags&0x40 == 0 || flags&0x20 == 0 || flags&0x1f != 0 || !bytes.Equal(msg[5:8], []byte{0, 0, 0}) {
		t.Errorf("NA flags %#x %x, want Solicited and Override set, reserved zero", flags, msg[5:8])
	}
	if tgt, _ := netip.AddrFromSlice(msg[8:24]); tgt != target {
		t.Errorf("NA target %s, want %s", tgt, target)
	}
	if opt := msg[24:32]; !bytes.Equal(opt, append([]byte{2, 1}, epA.HostMAC...)) {
		t.Errorf("NA option %x, want target link-layer address %s", opt, epA.HostMAC)
	}
	if c := checksum(ipv6Pseudo(src, gotDst, len(msg), protoICMPv6), msg); c != 0 {
		t.Errorf("ICMPv6 checksum %#04x is invalid (residue %#04x)", binary.BigEndian.Uint16(msg[2:4]), c)
	}
}

func TestFromContainerAnswersNeighbourSolicitation(t *testing.T) {
	f := newProgFixture(t, epA)
	a := epA
	tests := []struct {
		name   string
		src    netip.Addr
		target netip.Addr
		sll    net.HardwareAddr
	}{
		{"gateway, global source, with option", a.IPv6, gateway6, a.MAC},
		{"peer, link-local source, no option", linkLoc6, epB.IPv6, nil},
		{"unknown, global source, with option", a.IPv6, unknown6, a.MAC},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst, dstMAC := solicitedNode(tt.target)
			ns := icmp6Frame(dstMAC, a.MAC, tt.src, dst, 255, icmp6NeighSolicit, nsBody(tt.target, tt.sll))
			got, out := f.run(t, f.progs.FromContainer, ns, "nd_reply")
			if got != tcActRedirect {
				t.Fatalf("verdict %s, want TC_ACT_REDIRECT", verdictName(got))
			}
			checkNA(t, out, tt.target, tt.src)
		})
	}
}

func TestFromContainerForwardsToPeer(t *testing.T) {
	f := newProgFixture(t, epA)
	a := epA
	tests := []struct {
		name  string
		frame []byte
		to    Endpoint
	}{
		{"IPv4 to same network", udp4Frame(a.HostMAC, a.MAC, a.IPv4, epB.IPv4, []byte("hello")), epB},
		{"IPv6 to same network", udp6Frame(a.HostMAC, a.MAC, a.IPv6, epB.IPv6, []byte("hello")), epB},
		{"IPv4 to itself", udp4Frame(a.HostMAC, a.MAC, a.IPv4, a.IPv4, []byte("hello")), epA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := bytes.Clone(tt.frame)
			got, out := f.run(t, f.progs.FromContainer, tt.frame, "forward_peer")
			if got != tcActRedirect {
				t.Fatalf("verdict %s, want TC_ACT_REDIRECT", verdictName(got))
			}
			if eth := ethHeader(tt.to.MAC, tt.to.HostMAC, 0); !bytes.Equal(out[:12], eth[:12]) {
				t.Errorf("MACs %x, want dst %s src %s", out[:12], tt.to.MAC, tt.to.HostMAC)
			}
			if !bytes.Equal(out[12:], in[12:]) {
				t.Errorf("packet after the MACs was modified:\n got %x\nwant %x", out[12:], in[12:])
			}
		})
	}
}

func TestEndpointWithoutAddressFamilyDropsIt(t *testing.T) {
	v6only := epA
	v6only.IPv4 = netip.Addr{}
	f := newProgFixture(t, v6only)
	if ret, _ := f.run(t, f.progs.FromContainer, udp4Frame(epA.HostMAC, epA.MAC, epA.IPv4, epB.IPv4, nil), "drop_no_ip4"); ret != tcActShot {
		t.Errorf("IPv4 from IPv6-only endpoint: verdict %s, want TC_ACT_SHOT", verdictName(ret))
	}
	if ret, _ := f.run(t, f.progs.FromContainer, udp4Frame(epA.HostMAC, epA.MAC, netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255"), nil), "drop_no_ip4"); ret != tcActShot {
		t.Errorf("IPv4 from 0.0.0.0 of IPv6-only endpoint: verdict %s, want TC_ACT_SHOT", verdictName(ret))
	}
	if ret, _ := f.run(t, f.progs.FromContainer, arpFrame(broadcastMAC, epA.MAC, 1, epA.MAC, epA.IPv4, broadcastMAC, gateway4), "drop_no_ip4"); ret != tcActShot {
		t.Errorf("ARP from IPv6-only endpoint: verdict %s, want TC_ACT_SHOT", verdictName(ret))
	}
	if ret, _ := f.run(t, f.progs.FromContainer, udp6Frame(epA.HostMAC, epA.MAC, epA.IPv6, epB.IPv6, nil), "forward_peer"); ret != tcActRedirect {
		t.Errorf("IPv6 from IPv6-only endpoint: verdict %s, want TC_ACT_REDIRECT", verdictName(ret))
	}

	v4only := epA
	v4only.IPv6 = netip.Addr{}
	f = newProgFixture(t, v4only)
	if ret, _ := f.run(t, f.progs.FromContainer, udp6Frame(epA.HostMAC, epA.MAC, epA.IPv6, epB.IPv6, nil), "drop_no_ip6"); ret != tcActShot {
		t.Errorf("IPv6 from IPv4-only endpoint: verdict %s, want TC_ACT_SHOT", verdictName(ret))
	}
	if ret, _ := f.run(t, f.progs.FromContainer, udp4Frame(epA.HostMAC, epA.MAC, epA.IPv4, epB.IPv4, nil), "forward_peer"); ret != tcActRedirect {
		t.Errorf("IPv4 from IPv4-only endpoint: verdict %s, want TC_ACT_REDIRECT", verdictName(ret))
	}
}

func TestToContainerPassesAndCounts(t *testing.T) {
	f := newProgFixture(t, epA)
	frame := udp4Frame(epA.MAC, epA.HostMAC, unknown4, epA.IPv4, []byte("from the host"))
	if ret, out := f.run(t, f.progs.ToContainer, frame, "to_container"); ret != tcActOK || !bytes.Equal(out, frame) {
		t.Errorf("verdict %s, frame modified %v; want TC_ACT_OK, unmodified", verdictName(ret), !bytes.Equal(out, frame))
	}
}

func TestProgramsUseTheirEndpointsConstants(t *testing.T) {
	// Programs of two endpoints loaded from the one spec each answer with
	// their own host MAC and guard their own addresses.
	f := newProgFixture(t, epA)
	progsB, err := f.d.loadPrograms(&epB)
	if err != nil {
		t.Fatal(err)
	}
	defer progsB.Close()

	req := arpFrame(broadcastMAC, epB.MAC, 1, epB.MAC, epB.IPv4, net.HardwareAddr(make([]byte, 6)), gateway4)
	if ret, out := f.run(t, progsB.FromContainer, req, "arp_reply"); ret != tcActRedirect || !bytes.Equal(out[6:12], epB.HostMAC) {
		t.Errorf("B's program: verdict %s, reply from %x; want TC_ACT_REDIRECT from %s", verdictName(ret), out[6:12], epB.HostMAC)
	}
	if ret, _ := f.run(t, f.progs.FromContainer, req, "drop_spoof_mac"); ret != tcActShot {
		t.Errorf("A's program on B's frame: verdict %s, want TC_ACT_SHOT", verdictName(ret))
	}
}

func TestCountersListEveryReason(t *testing.T) {
	f := newProgFixture(t, epA)
	cs, err := f.d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != len(reasons) {
		t.Fatalf("%d counters, want %d", len(cs), len(reasons))
	}
	seen := map[string]bool{}
	for _, c := range cs {
		if seen[c.Reason] {
			t.Errorf("reason %s listed twice", c.Reason)
		}
		seen[c.Reason] = true
		if c.Drop != strings.HasPrefix(c.Reason, "drop_") {
			t.Errorf("reason %s: Drop = %v", c.Reason, c.Drop)
		}
	}
}

// TestReasonsMatchObject checks the Go reason table against enum
// metric_reason in the compiled object, so the two cannot drift apart.
func TestReasonsMatchObject(t *testing.T) {
	spec, err := loadEndpoint()
	if err != nil {
		t.Fatal(err)
	}
	var enum *btf.Enum
	if err := spec.Types.TypeByName("metric_reason", &enum); err != nil {
		t.Fatal(err)
	}
	if len(enum.Values) != len(reasons) {
		t.Errorf("object has %d reasons, Go table %d", len(enum.Values), len(reasons))
	}
	byID := map[uint64]reason{}
	for _, r := range reasons {
		if _, dup := byID[uint64(r.id)]; dup {
			t.Errorf("reason %d twice in Go table", r.id)
		}
		byID[uint64(r.id)] = r
	}
	for _, v := range enum.Values {
		r, ok := byID[v.Value]
		want := strings.ToLower(strings.TrimPrefix(v.Name, "METRIC_"))
		switch {
		case !ok:
			t.Errorf("%s = %d missing from Go table", v.Name, v.Value)
		case r.name != want:
			t.Errorf("%s = %d named %q in Go, want %q", v.Name, v.Value, r.name, want)
		case r.drop != strings.HasPrefix(v.Name, "METRIC_DROP_"):
			t.Errorf("%s: Drop = %v", v.Name, r.drop)
		case v.Value >= 256:
			t.Errorf("%s = %d does not fit the metrics map", v.Name, v.Value)
		}
	}
}

// TestEndpointProgramsStayCheapToVerify guards the attach time: every
// Attach loads the per-endpoint programs, and their load time is the
// verifier's, proportional to the instructions it walks (about 1 µs each on
// a small VM). Policy, conntrack and events belong in the shared programs,
// verified once at Open. Raise a budget only knowing that.
func TestEndpointProgramsStayCheapToVerify(t *testing.T) {
	f := newProgFixture(t, epA)
	for _, p := range []struct {
		name   string
		prog   *ebpf.Program
		budget uint32
	}{
		{"from_container", f.progs.FromContainer, 2500},
		{"to_container", f.progs.ToContainer, 1000},
	} {
		info, err := p.prog.Info()
		if err != nil {
			t.Fatal(err)
		}
		n, ok := info.VerifiedInstructions()
		if !ok {
			t.Skip("kernel does not report verified instructions (before 5.16)")
		}
		t.Logf("%s: %d instructions verified", p.name, n)
		if n > p.budget {
			t.Errorf("%s: the verifier walked %d instructions; budget %d", p.name, n, p.budget)
		}
	}
	for _, s := range []*ebpf.Program{f.d.shared.PolicyFromContainer, f.d.shared.PolicyToContainer} {
		info, err := s.Info()
		if err != nil {
			t.Fatal(err)
		}
		n, _ := info.VerifiedInstructions()
		t.Logf("shared %s: %d instructions verified (once, at Open)", info.Name, n)
	}
}
