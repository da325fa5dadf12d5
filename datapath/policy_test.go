package datapath

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// Programs tests of policy, conntrack, fragments and events, through the
// exported Testbed (so the helper other packages use is tested too).

var (
	world4  = netip.MustParseAddr("198.51.100.7")
	world6  = netip.MustParseAddr("2001:db8:77::7")
	cidr4   = netip.MustParsePrefix("192.0.2.0/24")
	inCIDR4 = netip.MustParseAddr("192.0.2.9")
	router4 = netip.MustParseAddr("203.0.113.1")
	router6 = netip.MustParseAddr("2001:db8:ffff::1")
)

const cidrIdentity = 1 << 24

func newTestbedT(t *testing.T) *Testbed {
	t.Helper()
	requirePrivileged(t)
	tb, err := NewTestbed()
	if err != nil {
		t.Fatalf("new testbed (verifier): %+v", err)
	}
	t.Cleanup(func() { tb.Close() })
	for _, ep := range []Endpoint{epA, epB, epC} {
		if err := tb.AddEndpoint(ep); err != nil {
			t.Fatal(err)
		}
	}
	return tb
}

func syncPolicy(t *testing.T, tb *Testbed, entries map[PolicyKey]Verdict, enf map[uint32]Enforcement) PolicySync {
	t.Helper()
	res, err := tb.Datapath().SyncPolicy(PolicyState{Entries: entries, Enforcement: enf})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func flush(t *testing.T, tb *Testbed) {
	t.Helper()
	if err := tb.Datapath().FlushConntrack(); err != nil {
		t.Fatal(err)
	}
}

// expectRun runs p through hook of ep and checks the reason (which implies the action).
func expectRun(t *testing.T, tb *Testbed, ep Endpoint, hook Hook, p Packet, reason string) RunResult {
	t.Helper()
	r, err := tb.RunPacket(ep.ID, hook, p)
	if err != nil {
		t.Fatal(err)
	}
	return checkResult(t, r, reason)
}

func expectFrame(t *testing.T, tb *Testbed, ep Endpoint, hook Hook, frame []byte, reason string) RunResult {
	t.Helper()
	r, err := tb.Run(ep.ID, hook, frame)
	if err != nil {
		t.Fatal(err)
	}
	return checkResult(t, r, reason)
}

func checkResult(t *testing.T, r RunResult, reason string) RunResult {
	t.Helper()
	want := ActionPass
	switch {
	case reason == "forward_peer" || reason == "arp_reply" || reason == "nd_reply":
		want = ActionRedirect
	case len(reason) > 5 && reason[:5] == "drop_":
		want = ActionDrop
	}
	if r.Reason != reason || r.Action != want {
		t.Errorf("got %s (%s), want %s (%s)", r.Action, r.Reason, want, reason)
	}
	return r
}

func tcp(src, dst netip.Addr, sport, dport uint16) Packet {
	return Packet{Src: src, Dst: dst, Proto: ProtoTCP, SrcPort: sport, DstPort: dport}
}

func udp(src, dst netip.Addr, sport, dport uint16) Packet {
	return Packet{Src: src, Dst: dst, Proto: ProtoUDP, SrcPort: sport, DstPort: dport}
}

func icmpEcho(src, dst netip.Addr, typ uint8, id uint16) Packet {
	proto := ProtoICMP
	if src.Is6() {
		proto = ProtoICMPv6
	}
	return Packet{Src: src, Dst: dst, Proto: proto, ICMPType: typ, ICMPID: id}
}

// families runs fn for IPv4 and IPv6 addresses of the fixture's endpoints.
func families(t *testing.T, fn func(t *testing.T, a, b, world netip.Addr)) {
	t.Run("IPv4", func(t *testing.T) { fn(t, epA.IPv4, epB.IPv4, world4) })
	t.Run("IPv6", func(t *testing.T) { fn(t, epA.IPv6, epB.IPv6, world6) })
}

func egress(subject, peer uint32, port uint16, proto uint8) PolicyKey {
	return PolicyKey{Subject: subject, Peer: peer, Port: port, Proto: proto, Dir: DirEgress}
}

func ingress(subject, peer uint32, port uint16, proto uint8) PolicyKey {
	return PolicyKey{Subject: subject, Peer: peer, Port: port, Proto: proto, Dir: DirIngress}
}

var (
	idA = epA.Identity
	idB = epB.Identity
)

func TestPolicyKeyShapes(t *testing.T) {
	tb := newTestbedT(t)
	enforceA := map[uint32]Enforcement{idA: {Egress: true}}
	families(t, func(t *testing.T, a, b, world netip.Addr) {
		tests := []struct {
			name    string
			key     PolicyKey
			allowed []Packet
			denied  []Packet
		}{
			{"peer, port, protocol", egress(idA, idB, 80, ProtoTCP),
				[]Packet{tcp(a, b, 40000, 80)},
				[]Packet{tcp(a, b, 40000, 81), udp(a, b, 40000, 80), tcp(a, world, 40000, 80)}},
			{"peer, protocol", egress(idA, idB, 0, ProtoTCP),
				[]Packet{tcp(a, b, 40000, 80), tcp(a, b, 40000, 22)},
				[]Packet{udp(a, b, 40000, 80), tcp(a, world, 40000, 80)}},
			{"peer", egress(idA, idB, 0, 0),
				[]Packet{tcp(a, b, 40000, 80), udp(a, b, 40000, 53), {Src: a, Dst: b, Proto: ProtoSCTP, SrcPort: 1, DstPort: 2}},
				[]Packet{udp(a, world, 40000, 53)}},
			{"port, protocol", egress(idA, 0, 80, ProtoTCP),
				[]Packet{tcp(a, b, 40000, 80), tcp(a, world, 40000, 80)},
				[]Packet{tcp(a, b, 40000, 81), udp(a, world, 40000, 80)}},
			{"protocol", egress(idA, 0, 0, ProtoUDP),
				[]Packet{udp(a, b, 40000, 53), udp(a, world, 40000, 9)},
				[]Packet{tcp(a, world, 40000, 53)}},
			{"anything", egress(idA, 0, 0, 0),
				[]Packet{udp(a, b, 40000, 53), tcp(a, world, 40000, 443), {Src: a, Dst: world, Proto: 47}},
				nil},
			{"another subject's entry", egress(idB, 0, 0, 0),
				nil,
				[]Packet{udp(a, b, 40000, 53)}},
			{"the other direction's entry", ingress(idA, 0, 0, 0),
				nil,
				[]Packet{udp(a, b, 40000, 53)}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				syncPolicy(t, tb, map[PolicyKey]Verdict{tt.key: VerdictAllow}, enforceA)
				for _, p := range tt.allowed {
					flush(t, tb)
					want := "forward_host"
					if p.Dst == b {
						want = "forward_peer"
					}
					expectRun(t, tb, epA, HookFromContainer, p, want)
				}
				for _, p := range tt.denied {
					flush(t, tb)
					expectRun(t, tb, epA, HookFromContainer, p, "drop_policy")
				}
			})
		}
	})
}

func TestPolicyDenyBeatsAllow(t *testing.T) {
	tb := newTestbedT(t)
	families(t, func(t *testing.T, a, b, world netip.Addr) {
		tests := []struct {
			name    string
			entries map[PolicyKey]Verdict
			enf     map[uint32]Enforcement
			packet  Packet
			reason  string
		}{
			{"specific deny over allow-all", map[PolicyKey]Verdict{
				egress(idA, 0, 0, 0):           VerdictAllow,
				egress(idA, idB, 80, ProtoTCP): VerdictDeny,
			}, map[uint32]Enforcement{idA: {Egress: true}}, tcp(a, b, 40000, 80), "drop_policy"},
			{"allow-all beside the deny still allows the rest", map[PolicyKey]Verdict{
				egress(idA, 0, 0, 0):           VerdictAllow,
				egress(idA, idB, 80, ProtoTCP): VerdictDeny,
			}, map[uint32]Enforcement{idA: {Egress: true}}, tcp(a, b, 40000, 81), "forward_peer"},
			{"broad deny over specific allow", map[PolicyKey]Verdict{
				egress(idA, idB, 80, ProtoTCP): VerdictAllow,
				egress(idA, 0, 0, ProtoTCP):    VerdictDeny,
			}, map[uint32]Enforcement{idA: {Egress: true}}, tcp(a, b, 40000, 80), "drop_policy"},
			{"deny applies without enforcement", map[PolicyKey]Verdict{
				egress(idA, 0, 53, ProtoUDP): VerdictDeny,
			}, nil, udp(a, world, 40000, 53), "drop_policy"},
			{"no entry, no enforcement: allowed", nil, nil, udp(a, world, 40000, 53), "forward_host"},
			{"receiver's ingress deny on the local path", map[PolicyKey]Verdict{
				egress(idA, 0, 0, 0):    VerdictAllow,
				ingress(idB, idA, 0, 0): VerdictDeny,
			}, map[uint32]Enforcement{idA: {Egress: true}}, udp(a, b, 40000, 53), "drop_policy"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				syncPolicy(t, tb, tt.entries, tt.enf)
				flush(t, tb)
				expectRun(t, tb, epA, HookFromContainer, tt.packet, tt.reason)
			})
		}
	})
}

func TestPolicyEnforcementPerDirection(t *testing.T) {
	tb := newTestbedT(t)
	if err := tb.Datapath().SyncIPCache(map[netip.Prefix]uint32{cidr4: cidrIdentity}); err != nil {
		t.Fatal(err)
	}
	families(t, func(t *testing.T, a, b, world netip.Addr) {
		run := func(name string, entries map[PolicyKey]Verdict, enf map[uint32]Enforcement, checks func(t *testing.T)) {
			t.Run(name, func(t *testing.T) {
				syncPolicy(t, tb, entries, enf)
				checks(t)
			})
		}
		run("egress enforced", nil, map[uint32]Enforcement{idA: {Egress: true}}, func(t *testing.T) {
			flush(t, tb)
			expectRun(t, tb, epA, HookFromContainer, udp(a, b, 40000, 53), "drop_policy")
			flush(t, tb)
			expectRun(t, tb, epB, HookFromContainer, udp(b, a, 40000, 53), "forward_peer")
			flush(t, tb)
			expectRun(t, tb, epA, HookToContainer, udp(world, a, 40000, 53), "to_container")
		})
		run("ingress enforced", nil, map[uint32]Enforcement{idA: {Ingress: true}}, func(t *testing.T) {
			flush(t, tb)
			expectRun(t, tb, epA, HookFromContainer, udp(a, b, 40000, 53), "forward_peer")
			flush(t, tb)
			// B's program enforces A's ingress: redirect_peer skips A's to_container.
			expectRun(t, tb, epB, HookFromContainer, udp(b, a, 40000, 53), "drop_policy")
			flush(t, tb)
			expectRun(t, tb, epA, HookToContainer, udp(world, a, 40000, 53), "drop_policy")
		})
		run("ingress enforced, allowed from B and world", map[PolicyKey]Verdict{
			ingress(idA, idB, 53, ProtoUDP):           VerdictAllow,
			ingress(idA, IdentityWorld, 53, ProtoUDP): VerdictAllow,
		}, map[uint32]Enforcement{idA: {Ingress: true}}, func(t *testing.T) {
			flush(t, tb)
			expectRun(t, tb, epB, HookFromContainer, udp(b, a, 40000, 53), "forward_peer")
			flush(t, tb)
			expectRun(t, tb, epA, HookToContainer, udp(world, a, 40000, 53), "to_container")
			flush(t, tb)
			expectRun(t, tb, epA, HookToContainer, udp(world, a, 40000, 54), "drop_policy")
		})
		if a.Is4() {
			run("ingress from a CIDR identity", map[PolicyKey]Verdict{
				ingress(idA, cidrIdentity, 0, 0): VerdictAllow,
			}, map[uint32]Enforcement{idA: {Ingress: true}}, func(t *testing.T) {
				flush(t, tb)
				expectRun(t, tb, epA, HookToContainer, udp(inCIDR4, a, 40000, 53), "to_container")
				flush(t, tb)
				expectRun(t, tb, epA, HookToContainer, udp(world, a, 40000, 53), "drop_policy")
			})
		}
	})
}

func TestPolicyLockdown(t *testing.T) {
	tb := newTestbedT(t)
	syncPolicy(t, tb, map[PolicyKey]Verdict{egress(idA, 0, 0, 0): VerdictAllow, ingress(idA, 0, 0, 0): VerdictAllow},
		map[uint32]Enforcement{idA: {Lockdown: true}})
	families(t, func(t *testing.T, a, b, world netip.Addr) {
		flush(t, tb)
		expectRun(t, tb, epA, HookFromContainer, udp(a, b, 40000, 53), "drop_policy_lockdown")
		flush(t, tb)
		expectRun(t, tb, epB, HookFromContainer, udp(b, a, 40000, 53), "drop_policy_lockdown")
		flush(t, tb)
		expectRun(t, tb, epA, HookToContainer, udp(world, a, 40000, 53), "drop_policy_lockdown")
	})
}

// ctKey is the conntrack key of a packet's own tuple.
func ctKey(p Packet) endpointCtKey {
	return endpointCtKey{Saddr: p.Src.As16(), Daddr: p.Dst.As16(), Proto: p.Proto,
		Sport: htons(p.SrcPort), Dport: htons(p.DstPort)}
}

// reversed is the packet's tuple the other way round (the reply's).
func reversed(p Packet) Packet {
	p.Src, p.Dst = p.Dst, p.Src
	p.SrcPort, p.DstPort = p.DstPort, p.SrcPort
	return p
}

// ctLookup returns the conntrack entry of a flow's tuple, stored under
// either orientation of it.
func ctLookup(t *testing.T, d *Datapath, p Packet) (endpointCtEntry, bool) {
	t.Helper()
	var e endpointCtEntry
	for _, key := range []endpointCtKey{ctKey(p), ctKey(reversed(p))} {
		err := d.ct.Lookup(key, &e)
		if err == nil {
			return e, true
		}
		if !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Fatal(err)
		}
	}
	return e, false
}

// ctEntries counts the conntrack map's entries.
func ctEntries(t *testing.T, d *Datapath) int {
	t.Helper()
	n := 0
	if err := readMap(d.ct, func(endpointCtKey, endpointCtEntry) { n++ }); err != nil {
		t.Fatal(err)
	}
	return n
}

// htons is the in-memory value of a big-endian port on this (little-endian) host.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

func TestConntrackRepliesPassAgainstPolicy(t *testing.T) {
	tb := newTestbedT(t)
	syncPolicy(t, tb, map[PolicyKey]Verdict{
		egress(idA, idB, 80, ProtoTCP):            VerdictAllow,
		ingress(idB, idA, 80, ProtoTCP):           VerdictAllow,
		egress(idA, IdentityWorld, 443, ProtoTCP): VerdictAllow,
	}, map[uint32]Enforcement{
		idA: {Ingress: true, Egress: true},
		idB: {Ingress: true, Egress: true},
	})
	families(t, func(t *testing.T, a, b, world netip.Addr) {
		flush(t, tb)
		// Local flow: the reply goes through B's from_container.
		expectRun(t, tb, epA, HookFromContainer, tcp(a, b, 40000, 80), "forward_peer")
		if _, ok := ctLookup(t, tb.Datapath(), tcp(a, b, 40000, 80)); !ok {
			t.Error("no conntrack entry for the allowed flow")
		}
		expectRun(t, tb, epB, HookFromContainer, tcp(b, a, 80, 40000), "forward_peer")
		expectRun(t, tb, epA, HookFromContainer, tcp(a, b, 40000, 80), "forward_peer")
		// What the policy denies B is still denied: a new flow, not a reply.
		expectRun(t, tb, epB, HookFromContainer, tcp(b, a, 80, 40001), "drop_policy")
		expectRun(t, tb, epB, HookFromContainer, tcp(b, a, 40000, 80), "drop_policy")

		// A flow to the world: its reply comes through A's to_container.
		expectRun(t, tb, epA, HookFromContainer, tcp(a, world, 40002, 443), "forward_host")
		expectRun(t, tb, epA, HookToContainer, tcp(world, a, 443, 40002), "to_container")
		expectRun(t, tb, epA, HookToContainer, tcp(world, a, 443, 40003), "drop_policy")
	})
}

func TestConntrackStoresAFlowUnderOneKeyWhicheverEndStartedIt(t *testing.T) {
	tb := newTestbedT(t)
	d := tb.Datapath()
	enf := map[uint32]Enforcement{idA: {Egress: true}, idB: {Egress: true}}
	families(t, func(t *testing.T, a, b, _ netip.Addr) {
		// The same 5-tuple, first opened from A, then from B; each time
		// only the opener may open it.
		fromA := tcp(a, b, 40000, 80)
		var keys []endpointCtKey
		var flags []uint8
		for _, first := range []struct {
			from, to Endpoint
			p        Packet
			allow    PolicyKey
		}{
			{epA, epB, fromA, egress(idA, idB, 80, ProtoTCP)},
			{epB, epA, reversed(fromA), egress(idB, idA, 40000, ProtoTCP)},
		} {
			syncPolicy(t, tb, map[PolicyKey]Verdict{first.allow: VerdictAllow}, enf)
			flush(t, tb)
			for range 2 {
				expectRun(t, tb, first.from, HookFromContainer, first.p, "forward_peer")
				expectRun(t, tb, first.to, HookFromContainer, reversed(first.p), "forward_peer")
			}
			n := 0
			if err := readMap(d.ct, func(k endpointCtKey, e endpointCtEntry) {
				keys, flags = append(keys, k), append(flags, e.Flags)
				n++
			}); err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				t.Fatalf("flow from %s: %d conntrack entries after both directions passed, want 1", first.from.ID, n)
			}
			// A new revision checks the entry again, as the opener's:
			// the reply still passes.
			syncPolicy(t, tb, map[PolicyKey]Verdict{first.allow: VerdictAllow, egress(idA, 0, 53, ProtoUDP): VerdictAllow}, enf)
			expectRun(t, tb, first.to, HookFromContainer, reversed(first.p), "forward_peer")
			expectRun(t, tb, first.from, HookFromContainer, first.p, "forward_peer")
		}
		if keys[0] != keys[1] {
			t.Errorf("the flow is stored under %+v when A opened it, under %+v when B did", keys[0], keys[1])
		}
		if flags[0]&ctReversed == flags[1]&ctReversed {
			t.Errorf("flags %#x and %#x: want the orientation bit set in exactly one", flags[0], flags[1])
		}
	})
}

// ctCheckEgress and ctReversed are CT_CHECK_EGRESS and CT_F_REVERSED of
// bpf/lib/conntrack.h.
const (
	ctCheckEgress = 0x1
	ctReversed    = 0x80
)

func TestConntrackEntriesOfAnOlderDatapathCarryOn(t *testing.T) {
	tb := newTestbedT(t)
	d := tb.Datapath()
	allowA := egress(idA, idB, 80, ProtoTCP)
	allowB := egress(idB, idA, 80, ProtoTCP)
	enf := map[uint32]Enforcement{idA: {Egress: true}, idB: {Egress: true}}
	families(t, func(t *testing.T, a, b, _ netip.Addr) {
		// An older datapath keyed an entry by the tuple of the flow's first
		// packet. For one of these two flows that is not the canonical
		// orientation.
		for _, first := range []struct {
			from, to Endpoint
			p        Packet
			allow    PolicyKey
		}{{epA, epB, tcp(a, b, 40001, 80), allowA}, {epB, epA, tcp(b, a, 40001, 80), allowB}} {
			t.Run("from "+first.from.ID, func(t *testing.T) {
				sync := syncPolicy(t, tb, map[PolicyKey]Verdict{first.allow: VerdictAllow}, enf)
				flush(t, tb)
				old := endpointCtEntry{Revision: sync.Revision, PolicyPort: 80, Flags: ctCheckEgress}
				if err := d.ct.Put(ctKey(first.p), old); err != nil {
					t.Fatal(err)
				}
				// The reply passes although its sender may not open it.
				expectRun(t, tb, first.to, HookFromContainer, reversed(first.p), "forward_peer")
				expectRun(t, tb, first.from, HookFromContainer, first.p, "forward_peer")

				// Checked again at a new revision, on the flow's first
				// tuple: still allowed, so the reply still passes.
				syncPolicy(t, tb, map[PolicyKey]Verdict{first.allow: VerdictAllow, egress(idA, 0, 53, ProtoUDP): VerdictAllow}, enf)
				expectRun(t, tb, first.to, HookFromContainer, reversed(first.p), "forward_peer")
				if n := ctEntries(t, d); n != 1 {
					t.Errorf("%d conntrack entries, want the older datapath's one", n)
				}
				if e, ok := ctLookup(t, d, first.p); !ok || e.Revision == sync.Revision || e.Denied != 0 {
					t.Errorf("entry after the check: %+v, %v; want a later revision, not denied", e, ok)
				}
			})
		}
	})
}

func TestConntrackEntriesCheckedAgainAfterPolicyChange(t *testing.T) {
	tb := newTestbedT(t)
	d := tb.Datapath()
	allow := egress(idA, idB, 80, ProtoTCP)
	enf := map[uint32]Enforcement{idA: {Egress: true}}
	families(t, func(t *testing.T, a, b, world netip.Addr) {
		flow, reply := tcp(a, b, 40000, 80), tcp(b, a, 80, 40000)

		for _, via := range []string{"next packet", "reply"} {
			t.Run(via, func(t *testing.T) {
				first := syncPolicy(t, tb, map[PolicyKey]Verdict{allow: VerdictAllow}, enf)
				flush(t, tb)
				expectRun(t, tb, epA, HookFromContainer, flow, "forward_peer")
				if e, _ := ctLookup(t, d, flow); e.Revision != first.Revision {
					t.Errorf("entry verified at revision %d, want %d", e.Revision, first.Revision)
				}

				// Another rule: the flow is still allowed and goes on.
				second := syncPolicy(t, tb, map[PolicyKey]Verdict{allow: VerdictAllow, egress(idA, 0, 53, ProtoUDP): VerdictAllow}, enf)
				if second.Revision == first.Revision {
					t.Fatal("policy change did not bump the revision")
				}
				expectRun(t, tb, epA, HookFromContainer, flow, "forward_peer")
				if e, ok := ctLookup(t, d, flow); !ok || e.Revision != second.Revision {
					t.Errorf("entry after the check: %+v, %v; want revision %d", e, ok, second.Revision)
				}

				// The rule goes away: the established flow is cut.
				syncPolicy(t, tb, map[PolicyKey]Verdict{egress(idA, 0, 53, ProtoUDP): VerdictAllow}, enf)
				if via == "reply" {
					expectRun(t, tb, epB, HookFromContainer, reply, "drop_policy")
				} else {
					expectRun(t, tb, epA, HookFromContainer, flow, "drop_policy")
				}
				if e, ok := ctLookup(t, d, flow); !ok || e.Denied == 0 {
					t.Errorf("conntrack entry of the denied flow: %+v, %v; want a tombstone", e, ok)
				}
				expectRun(t, tb, epA, HookFromContainer, flow, "drop_policy")
				// B's egress is open, yet B cannot carry on the cut
				// connection as a flow of its own.
				expectRun(t, tb, epB, HookFromContainer, reply, "drop_policy")

				// Allowed again at a later revision: the flow resumes.
				syncPolicy(t, tb, map[PolicyKey]Verdict{allow: VerdictAllow}, enf)
				expectRun(t, tb, epB, HookFromContainer, reply, "forward_peer")
				if e, ok := ctLookup(t, d, flow); !ok || e.Denied != 0 {
					t.Errorf("conntrack entry after the flow was allowed again: %+v, %v", e, ok)
				}
			})
		}
	})
}

func TestIdentityChangeChecksConnectionsAgain(t *testing.T) {
	tb := newTestbedT(t)
	d := tb.Datapath()
	syncPolicy(t, tb, map[PolicyKey]Verdict{egress(idA, 0, 0, 0): VerdictAllow}, map[uint32]Enforcement{idA: {Egress: true}})
	flow := udp(epA.IPv4, epB.IPv4, 40000, 53)
	expectRun(t, tb, epA, HookFromContainer, flow, "forward_peer")

	// A's labels change: its new identity has no policy allowing this.
	rev, _ := d.PolicyRevision()
	if err := d.SetIdentity(Endpoint{ID: epA.ID, IPv4: epA.IPv4, IPv6: epA.IPv6, Identity: 300}); err != nil {
		t.Fatal(err)
	}
	if now, _ := d.PolicyRevision(); now == rev {
		t.Error("SetIdentity did not bump the policy revision")
	}
	syncPolicy(t, tb, map[PolicyKey]Verdict{egress(idA, 0, 0, 0): VerdictAllow}, map[uint32]Enforcement{idA: {Egress: true}, 300: {Egress: true}})
	expectRun(t, tb, epA, HookFromContainer, flow, "drop_policy")
}

func TestInitIdentityMayOnlyComeUp(t *testing.T) {
	tb := newTestbedT(t)
	d := tb.Datapath()
	// The zero Identity is init too.
	for _, id := range []uint32{IdentityInit, 0} {
		if err := d.SetIdentity(Endpoint{ID: epA.ID, IPv4: epA.IPv4, IPv6: epA.IPv6, Identity: id}); err != nil {
			t.Fatal(err)
		}
		families(t, func(t *testing.T, a, b, world netip.Addr) {
			flush(t, tb)
			expectRun(t, tb, epA, HookFromContainer, udp(a, b, 40000, 53), "drop_policy_init")
			expectRun(t, tb, epA, HookFromContainer, tcp(a, world, 40000, 443), "drop_policy_init")
			expectRun(t, tb, epB, HookFromContainer, udp(b, a, 40000, 53), "drop_policy_init")
			expectRun(t, tb, epA, HookToContainer, udp(world, a, 40000, 53), "drop_policy_init")
		})
		expectFrame(t, tb, epA, HookFromContainer, arpFrame(broadcastMAC, epA.MAC, 1, epA.MAC, epA.IPv4, make(net.HardwareAddr, 6), gateway4), "arp_reply")
		dst, dstMAC := solicitedNode(gateway6)
		expectFrame(t, tb, epA, HookFromContainer, icmp6Frame(dstMAC, epA.MAC, epA.IPv6, dst, 255, icmp6NeighSolicit, nsBody(gateway6, epA.MAC)), "nd_reply")
	}
	if err := d.SetIdentity(Endpoint{ID: epA.ID, IPv4: epA.IPv4, IPv6: epA.IPv6, Identity: idA}); err != nil {
		t.Fatal(err)
	}
	flush(t, tb)
	expectRun(t, tb, epA, HookFromContainer, udp(epA.IPv4, epB.IPv4, 40000, 53), "forward_peer")
}

func TestICMPTypesArePolicyPorts(t *testing.T) {
	tb := newTestbedT(t)
	families(t, func(t *testing.T, a, b, world netip.Addr) {
		proto, req, reply, other := ProtoICMP, uint8(8), uint8(0), uint8(13)
		if a.Is6() {
			proto, req, reply, other = ProtoICMPv6, 128, 129, 139
		}
		enf := map[uint32]Enforcement{idA: {Egress: true}, idB: {Egress: true}}
		syncPolicy(t, tb, map[PolicyKey]Verdict{egress(idA, idB, PortICMP|uint16(req), proto): VerdictAllow}, enf)
		flush(t, tb)
		expectRun(t, tb, epA, HookFromContainer, icmpEcho(a, b, req, 7), "forward_peer")
		// B's egress is enforced and allows nothing: the echo reply passes as a reply.
		expectRun(t, tb, epB, HookFromContainer, icmpEcho(b, a, reply, 7), "forward_peer")
		// An unsolicited reply is no reply.
		expectRun(t, tb, epB, HookFromContainer, icmpEcho(b, a, reply, 8), "drop_policy")
		expectRun(t, tb, epA, HookFromContainer, icmpEcho(a, b, other, 0), "drop_policy")

		// Type 0 (the IPv4 echo reply) is a type of its own, not "any".
		syncPolicy(t, tb, map[PolicyKey]Verdict{egress(idA, idB, PortICMP|0, proto): VerdictAllow}, enf)
		flush(t, tb)
		expectRun(t, tb, epA, HookFromContainer, icmpEcho(a, b, req, 9), "drop_policy")
		syncPolicy(t, tb, map[PolicyKey]Verdict{egress(idA, idB, 0, proto): VerdictAllow}, enf)
		flush(t, tb)
		expectRun(t, tb, epA, HookFromContainer, icmpEcho(a, b, req, 9), "forward_peer")
		expectRun(t, tb, epA, HookFromContainer, icmpEcho(a, b, other, 0), "forward_peer")
	})
}

// icmpError builds an ICMP or ICMPv6 error from src to dst about the packet
// orig (its IP header and 8 bytes of the rest, as routers quote it).
func icmpError(t *testing.T, src, dst netip.Addr, typ, code uint8, orig Packet) Packet {
	t.Helper()
	frame, err := orig.Frame(epA.MAC, epA.HostMAC)
	if err != nil {
		t.Fatal(err)
	}
	hdr := 20
	proto := ProtoICMP
	if src.Is6() {
		hdr, proto = 40, ProtoICMPv6
	}
	quoted := frame[14 : 14+hdr+8]
	// The 4 bytes after the ICMP header's checksum (unused, or the MTU) are 0.
	return Packet{Src: src, Dst: dst, Proto: proto, ICMPType: typ, ICMPCode: code, Payload: quoted}
}

func TestRelatedICMPErrors(t *testing.T) {
	tb := newTestbedT(t)
	syncPolicy(t, tb, map[PolicyKey]Verdict{
		egress(idA, IdentityWorld, 53, ProtoUDP): VerdictAllow,
		egress(idB, idA, 53, ProtoUDP):           VerdictAllow,
		ingress(idA, idB, 53, ProtoUDP):          VerdictAllow,
	}, map[uint32]Enforcement{idA: {Ingress: true, Egress: true}, idB: {Egress: true}})
	families(t, func(t *testing.T, a, b, world netip.Addr) {
		router, tooBig, tooBigCode, unreach, portCode := router4, uint8(3), uint8(4), uint8(3), uint8(3)
		if a.Is6() {
			router, tooBig, tooBigCode, unreach, portCode = router6, 2, 0, 1, 4
		}
		flush(t, tb)
		out := udp(a, world, 40000, 53)
		expectRun(t, tb, epA, HookFromContainer, out, "forward_host")

		// A router's "packet too big" about A's flow reaches A.
		expectRun(t, tb, epA, HookToContainer, icmpError(t, router, a, tooBig, tooBigCode, out), "to_container")
		// One about a flow A never had does not (A's ingress allows no ICMP).
		expectRun(t, tb, epA, HookToContainer, icmpError(t, router, a, tooBig, tooBigCode, udp(a, world, 40000, 54)), "drop_policy")
		// Nor one that quotes a flow of A's to someone else than A.
		expectRun(t, tb, epA, HookToContainer, icmpError(t, router, a, tooBig, tooBigCode, udp(world, a, 53, 40000)), "drop_policy")

		// A answers B's flow with "port unreachable": related, though
		// A's egress allows no ICMP.
		in := udp(b, a, 40001, 53)
		expectRun(t, tb, epB, HookFromContainer, in, "forward_peer")
		expectRun(t, tb, epA, HookFromContainer, icmpError(t, a, b, unreach, portCode, in), "forward_peer")
		expectRun(t, tb, epA, HookFromContainer, icmpError(t, a, b, unreach, portCode, udp(b, a, 40002, 53)), "drop_policy")
	})
}

func TestICMPErrorsAboutACutFlowAreNotRelated(t *testing.T) {
	tb := newTestbedT(t)
	enf := map[uint32]Enforcement{idA: {Ingress: true, Egress: true}}
	families(t, func(t *testing.T, a, _, world netip.Addr) {
		router, tooBig, tooBigCode := router4, uint8(3), uint8(4)
		if a.Is6() {
			router, tooBig, tooBigCode = router6, 2, 0
		}
		syncPolicy(t, tb, map[PolicyKey]Verdict{egress(idA, IdentityWorld, 53, ProtoUDP): VerdictAllow}, enf)
		flush(t, tb)
		out := udp(a, world, 40000, 53)
		expectRun(t, tb, epA, HookFromContainer, out, "forward_host")
		// The policy cuts the flow: its next packet leaves a tombstone.
		syncPolicy(t, tb, map[PolicyKey]Verdict{egress(idA, IdentityWorld, 54, ProtoUDP): VerdictAllow}, enf)
		expectRun(t, tb, epA, HookFromContainer, out, "drop_policy")
		// An error about it is checked on its own (A's ingress allows no
		// ICMP), not let in as related.
		expectRun(t, tb, epA, HookToContainer, icmpError(t, router, a, tooBig, tooBigCode, out), "drop_policy")
	})
}

// fragments splits the IP packet of frame (IPv4, or IPv6 with no extension
// header) after split bytes (a multiple of 8) of its payload into two
// fragments with identification id.
func fragments(t *testing.T, frame []byte, id uint32, split int) (first, second []byte) {
	t.Helper()
	eth := frame[:14]
	if binary.BigEndian.Uint16(eth[12:]) == etherTypeIPv4 {
		hdr, payload := frame[14:34], frame[34:]
		mk := func(part []byte, offset int, more bool) []byte {
			h := append([]byte(nil), hdr...)
			binary.BigEndian.PutUint16(h[2:], uint16(20+len(part)))
			binary.BigEndian.PutUint16(h[4:], uint16(id))
			fo := uint16(offset / 8)
			if more {
				fo |= 0x2000
			}
			binary.BigEndian.PutUint16(h[6:], fo)
			h[10], h[11] = 0, 0
			binary.BigEndian.PutUint16(h[10:], checksum(h))
			return append(append(append([]byte(nil), eth...), h...), part...)
		}
		return mk(payload[:split], 0, true), mk(payload[split:], split, false)
	}
	hdr, payload := frame[14:54], frame[54:]
	mk := func(part []byte, offset int, more bool) []byte {
		h := append([]byte(nil), hdr...)
		next := h[6]
		h[6] = 44
		binary.BigEndian.PutUint16(h[4:], uint16(8+len(part)))
		fh := make([]byte, 8)
		fh[0] = next
		fo := uint16(offset)
		if more {
			fo |= 1
		}
		binary.BigEndian.PutUint16(fh[2:], fo)
		binary.BigEndian.PutUint32(fh[4:], id)
		return append(append(append(append([]byte(nil), eth...), h...), fh...), part...)
	}
	return mk(payload[:split], 0, true), mk(payload[split:], split, false)
}

func TestFragmentsFollowTheirFirstFragment(t *testing.T) {
	tb := newTestbedT(t)
	syncPolicy(t, tb, map[PolicyKey]Verdict{egress(idA, idB, 80, ProtoTCP): VerdictAllow},
		map[uint32]Enforcement{idA: {Egress: true}})
	families(t, func(t *testing.T, a, b, world netip.Addr) {
		flush(t, tb)
		frame := func(dport uint16) []byte {
			p := tcp(a, b, 40000, dport)
			p.Payload = make([]byte, 100)
			f, err := p.Frame(epA.HostMAC, epA.MAC)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
		first, second := fragments(t, frame(80), 0x1234, 24)
		expectFrame(t, tb, epA, HookFromContainer, first, "forward_peer")
		expectFrame(t, tb, epA, HookFromContainer, second, "forward_peer")

		// A later fragment whose first one never passed.
		_, orphan := fragments(t, frame(80), 0x4321, 24)
		expectFrame(t, tb, epA, HookFromContainer, orphan, "drop_frag_orphan")

		// Port 81 is denied: so are its fragments, first or not.
		first, second = fragments(t, frame(81), 0x5555, 24)
		expectFrame(t, tb, epA, HookFromContainer, first, "drop_policy")
		expectFrame(t, tb, epA, HookFromContainer, second, "drop_frag_orphan")
	})
}

func TestEventsReportDropsVerdictsAndTraces(t *testing.T) {
	tb := newTestbedT(t)
	d := tb.Datapath()
	syncPolicy(t, tb, map[PolicyKey]Verdict{egress(idA, idB, 80, ProtoTCP): VerdictAllow},
		map[uint32]Enforcement{idA: {Egress: true}})
	r, err := d.Events()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	read := func() (Event, error) {
		r.SetDeadline(time.Now().Add(time.Second))
		return r.Read()
	}
	expectNone := func() {
		t.Helper()
		r.SetDeadline(time.Now().Add(50 * time.Millisecond))
		if ev, err := r.Read(); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("unexpected event %+v, %v", ev, err)
		}
	}
	start := time.Now()

	// Level 0: drops only.
	expectRun(t, tb, epA, HookFromContainer, tcp(epA.IPv4, epB.IPv4, 40000, 80), "forward_peer")
	expectRun(t, tb, epA, HookFromContainer, tcp(epA.IPv4, epB.IPv4, 40000, 81), "drop_policy")
	ev, err := read()
	if err != nil {
		t.Fatal(err)
	}
	want := Event{
		Type: EventDrop, Reason: "drop_policy", Hook: HookFromContainer,
		Src: epA.IPv4, Dst: epB.IPv4, Proto: ProtoTCP, SrcPort: 40000, DstPort: 81,
		Policy: true, SrcIdentity: idA, DstIdentity: idB, Dir: DirEgress,
		Verdict: VerdictDeny, Match: MatchDefault, CT: CTNew, Len: 54,
	}
	checkEvent(t, ev, want, start)
	expectNone()

	// A drop before any flow is parsed: addresses from the headers.
	expectFrame(t, tb, epA, HookFromContainer, udp6Frame(epA.HostMAC, epA.MAC, forged6, epB.IPv6, nil), "drop_spoof_ip6")
	if ev, err = read(); err != nil {
		t.Fatal(err)
	}
	checkEvent(t, ev, Event{Type: EventDrop, Reason: "drop_spoof_ip6", Src: forged6, Dst: epB.IPv6, Proto: protoUDP, Len: 62}, start)
	expectFrame(t, tb, epA, HookFromContainer, udp4Frame(epA.HostMAC, epA.MAC, forged4, epB.IPv4, nil), "drop_spoof_ip4")
	if ev, err = read(); err != nil {
		t.Fatal(err)
	}
	checkEvent(t, ev, Event{Type: EventDrop, Reason: "drop_spoof_ip4", Src: forged4, Dst: epB.IPv4, Proto: protoUDP, Len: 42}, start)

	// Level 1: and verdicts of new flows.
	if err := d.SetMonitorLevel(MonitorVerdicts); err != nil {
		t.Fatal(err)
	}
	flush(t, tb)
	expectRun(t, tb, epA, HookFromContainer, icmpEcho(epA.IPv6, epB.IPv6, 128, 5), "drop_policy")
	if ev, err = read(); err != nil {
		t.Fatal(err)
	}
	checkEvent(t, ev, Event{Type: EventVerdict, Reason: "drop_policy", Src: epA.IPv6, Dst: epB.IPv6, Proto: ProtoICMPv6, SrcPort: 5, ICMPType: 128,
		Policy: true, SrcIdentity: idA, DstIdentity: idB, Dir: DirEgress, Verdict: VerdictDeny, Match: MatchDefault, CT: CTNew, Len: 62}, start)
	if ev, err = read(); err != nil || ev.Type != EventDrop {
		t.Errorf("after the verdict: %+v, %v; want the drop", ev, err)
	}
	expectRun(t, tb, epA, HookFromContainer, tcp(epA.IPv4, epB.IPv4, 40000, 80), "forward_peer")
	if ev, err = read(); err != nil {
		t.Fatal(err)
	}
	checkEvent(t, ev, Event{Type: EventVerdict, Src: epA.IPv4, Dst: epB.IPv4, Proto: ProtoTCP, SrcPort: 40000, DstPort: 80,
		Policy: true, SrcIdentity: idA, DstIdentity: idB, Dir: DirIngress, Verdict: VerdictAllow, Match: MatchDefault, CT: CTNew, Len: 54}, start)
	expectNone()

	// Level 2: and every forwarded packet.
	if err := d.SetMonitorLevel(MonitorTrace); err != nil {
		t.Fatal(err)
	}
	expectRun(t, tb, epA, HookFromContainer, tcp(epA.IPv4, epB.IPv4, 40000, 80), "forward_peer")
	if ev, err = read(); err != nil {
		t.Fatal(err)
	}
	checkEvent(t, ev, Event{Type: EventTrace, Reason: "forward_peer", Src: epA.IPv4, Dst: epB.IPv4, Proto: ProtoTCP, SrcPort: 40000, DstPort: 80,
		CT: CTEstablished, Len: 54}, start)
	expectRun(t, tb, epA, HookToContainer, tcp(epB.IPv4, epA.IPv4, 80, 40000), "to_container")
	if ev, err = read(); err != nil {
		t.Fatal(err)
	}
	checkEvent(t, ev, Event{Type: EventTrace, Reason: "to_container", Hook: HookToContainer, Src: epB.IPv4, Dst: epA.IPv4, Proto: ProtoTCP, SrcPort: 80, DstPort: 40000,
		CT: CTReply, Len: 54}, start)

	if err := d.SetMonitorLevel(3); !errors.Is(err, ErrInvalidMonitorLevel) {
		t.Errorf("SetMonitorLevel(3): %v, want ErrInvalidMonitorLevel", err)
	}
	if n, err := d.LostEvents(); err != nil || n != 0 {
		t.Errorf("LostEvents() = %d, %v; want 0", n, err)
	}
}

func checkEvent(t *testing.T, got, want Event, after time.Time) {
	t.Helper()
	if got.Time.Before(after.Add(-time.Second)) || got.Time.After(time.Now().Add(time.Second)) {
		t.Errorf("event time %v, want about now (%v)", got.Time, after)
	}
	got.Time = time.Time{}
	got.Endpoint = 0 // BPF_PROG_RUN runs on the loopback device
	if got != want {
		t.Errorf("event\n got %+v\nwant %+v", got, want)
	}
}

func TestSyncPolicyWritesOnlyDifferences(t *testing.T) {
	requireBPFFS(t)
	pinDir := tempPinDir(t)
	d, err := Open(Config{PinDir: pinDir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { d.Close() }()

	state := PolicyState{
		Entries: map[PolicyKey]Verdict{
			egress(idA, idB, 80, ProtoTCP): VerdictAllow,
			egress(idA, 0, 0, ProtoUDP):    VerdictDeny,
			ingress(idB, idA, 0, 0):        VerdictAllow,
		},
		Enforcement: map[uint32]Enforcement{idA: {Egress: true}, idB: {}},
	}
	res, err := d.SyncPolicy(state)
	if err != nil {
		t.Fatal(err)
	}
	if res.Added != 3 || res.Updated != 0 || res.Removed != 0 || len(res.Lockdown) != 0 {
		t.Errorf("first sync: %+v", res)
	}
	again, err := d.SyncPolicy(state)
	if err != nil {
		t.Fatal(err)
	}
	if again.Added+again.Updated+again.Removed != 0 || again.Lockdown != nil || again.Revision != res.Revision {
		t.Errorf("same state again: %+v; want no change at revision %d", again, res.Revision)
	}

	prefixes := map[netip.Prefix]uint32{cidr4: cidrIdentity, netip.MustParsePrefix("2001:db8::/32"): cidrIdentity + 1}
	if err := d.SyncIPCache(prefixes); err != nil {
		t.Fatal(err)
	}

	// A restarted daemon reads back what the pinned maps hold.
	d.Close()
	if d, err = Open(Config{PinDir: pinDir}); err != nil {
		t.Fatal(err)
	}
	rev, _ := d.PolicyRevision()
	if err := d.SyncIPCache(prefixes); err != nil {
		t.Fatal(err)
	}
	if now, _ := d.PolicyRevision(); now != rev {
		t.Errorf("ipcache unchanged after reopen, yet the revision moved from %d to %d", rev, now)
	}
	state.Entries[egress(idA, 0, 0, ProtoUDP)] = VerdictAllow
	delete(state.Entries, ingress(idB, idA, 0, 0))
	state.Entries[ingress(idB, 0, 443, ProtoTCP)] = VerdictAllow
	state.Enforcement[idA] = Enforcement{Egress: true, Ingress: true}
	res2, err := d.SyncPolicy(state)
	if err != nil {
		t.Fatal(err)
	}
	if res2.Added != 1 || res2.Updated != 1 || res2.Removed != 1 || res2.Revision == res.Revision {
		t.Errorf("sync after reopen: %+v", res2)
	}
	got := map[PolicyKey]Verdict{}
	if err := readMap(d.policy, func(k endpointPolicyKey, v endpointPolicyValue) { got[policyKeyOf(k)] = Verdict(v.Verdict) }); err != nil {
		t.Fatal(err)
	}
	if !mapsEqual(got, state.Entries) {
		t.Errorf("policy map holds %v, want %v", got, state.Entries)
	}
	var enf endpointPolicyEnforceValue
	if err := d.policyEnforce.Lookup(idA, &enf); err != nil || enf != (endpointPolicyEnforceValue{Ingress: 1, Egress: 1}) {
		t.Errorf("enforcement of %d: %+v, %v", idA, enf, err)
	}
	if err := d.policyEnforce.Lookup(idB, &enf); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("subject %d enforces nothing, yet has an entry (%v)", idB, err)
	}

	// Nothing written when anything is invalid.
	for name, bad := range map[string]PolicyState{
		"port without protocol": {Entries: map[PolicyKey]Verdict{{Subject: idA, Port: 80}: VerdictAllow}},
		"ICMP port not a type":  {Entries: map[PolicyKey]Verdict{{Subject: idA, Proto: ProtoICMP, Port: 8}: VerdictAllow}},
		"bad direction":         {Entries: map[PolicyKey]Verdict{{Subject: idA, Dir: 2}: VerdictAllow}},
		"bad verdict":           {Entries: map[PolicyKey]Verdict{{Subject: idA}: 3}},
		"subject 0":             {Entries: map[PolicyKey]Verdict{{}: VerdictAllow}},
	} {
		if _, err := d.SyncPolicy(bad); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("%s: %v, want ErrInvalidPolicy", name, err)
		}
	}
	if res3, err := d.SyncPolicy(state); err != nil || res3.Added+res3.Updated+res3.Removed != 0 {
		t.Errorf("after refused syncs: %+v, %v; want nothing to do", res3, err)
	}
}

func mapsEqual[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestSyncPolicyLocksDownSubjectsThatDoNotFit(t *testing.T) {
	requirePrivileged(t)
	const size = 8
	d, err := newDatapathWith("", func(s *ebpf.CollectionSpec) { s.Maps[endpointMapPolicy].MaxEntries = size })
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	progs, err := d.loadPrograms(&epA)
	if err != nil {
		t.Fatal(err)
	}
	defer progs.Close()
	for _, ep := range []Endpoint{epA, epB} {
		if err := d.putEndpoint(&ep); err != nil {
			t.Fatal(err)
		}
	}

	// idB's rules fill the map; idA's allow entries do not fit.
	entries := map[PolicyKey]Verdict{}
	for port := range uint16(size) {
		entries[egress(idB, 0, 1000+port, ProtoTCP)] = VerdictAllow
	}
	if _, err := d.SyncPolicy(PolicyState{Entries: entries}); err != nil {
		t.Fatal(err)
	}
	entries[egress(idA, idB, 80, ProtoTCP)] = VerdictAllow
	res, err := d.SyncPolicy(PolicyState{Entries: entries, Enforcement: map[uint32]Enforcement{idA: {Egress: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Lockdown, []uint32{idA}) || res.Added != 0 {
		t.Errorf("sync into a full map: %+v; want %d locked down, nothing added", res, idA)
	}
	run := func(reason string) {
		t.Helper()
		frame, _ := tcp(epA.IPv4, epB.IPv4, 40000, 80).Frame(epA.HostMAC, epA.MAC)
		f := &progFixture{d: d, progs: progs}
		f.run(t, progs.FromContainer, frame, reason)
	}
	run("drop_policy_lockdown")

	// Room again: the entry goes in, the lockdown is lifted.
	delete(entries, egress(idB, 0, 1000, ProtoTCP))
	res, err = d.SyncPolicy(PolicyState{Entries: entries, Enforcement: map[uint32]Enforcement{idA: {Egress: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Lockdown) != 0 || res.Added != 1 || res.Removed != 1 {
		t.Errorf("sync with room: %+v", res)
	}
	run("forward_peer")
}

func TestSyncIPCache(t *testing.T) {
	tb := newTestbedT(t)
	d := tb.Datapath()
	all := map[netip.Prefix]uint32{
		netip.MustParsePrefix("::/0"):             IdentityWorld,
		netip.MustParsePrefix("0.0.0.0/0"):        IdentityWorld,
		netip.MustParsePrefix("10.210.1.1/32"):    IdentityHost,
		cidr4:                                     cidrIdentity,
		netip.MustParsePrefix("192.0.2.128/25"):   cidrIdentity + 1,
		netip.MustParsePrefix("2001:db8:77::/48"): cidrIdentity + 2,
	}
	if err := d.SyncIPCache(all); err != nil {
		t.Fatal(err)
	}
	syncPolicy(t, tb, map[PolicyKey]Verdict{
		egress(idA, cidrIdentity, 0, 0):   VerdictAllow,
		egress(idA, cidrIdentity+2, 0, 0): VerdictAllow,
		egress(idA, IdentityHost, 0, 0):   VerdictAllow,
	}, map[uint32]Enforcement{idA: {Egress: true}})
	check := func(dst netip.Addr, reason string) {
		t.Helper()
		flush(t, tb)
		expectRun(t, tb, epA, HookFromContainer, udp(epA.IPv4, dst, 40000, 53).withFamily(dst, epA), reason)
	}
	check(inCIDR4, "forward_host")
	check(netip.MustParseAddr("192.0.2.200"), "drop_policy") // longer prefix, another identity
	check(gateway4, "forward_host")
	check(world4, "drop_policy")
	check(world6, "forward_host")

	delete(all, cidr4)
	if err := d.SyncIPCache(all); err != nil {
		t.Fatal(err)
	}
	check(inCIDR4, "drop_policy")

	for name, bad := range map[string]map[netip.Prefix]uint32{
		"host bits":        {netip.MustParsePrefix("192.0.2.1/24"): 9},
		"identity 0":       {cidr4: 0},
		"one key, two ids": {netip.MustParsePrefix("0.0.0.0/0"): 2, netip.MustParsePrefix("::ffff:0.0.0.0/96"): 3},
		"invalid prefix":   {{}: 2},
	} {
		if err := d.SyncIPCache(bad); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("%s: %v, want ErrInvalidPolicy", name, err)
		}
	}
}

// withFamily gives p the source address of ep in dst's family.
func (p Packet) withFamily(dst netip.Addr, ep Endpoint) Packet {
	if dst.Is6() {
		p.Src = ep.IPv6
	} else {
		p.Src = ep.IPv4
	}
	p.Dst = dst
	return p
}

func TestTestbedReportsUnknownEndpoints(t *testing.T) {
	tb := newTestbedT(t)
	if _, err := tb.RunPacket("nope", HookFromContainer, udp(epA.IPv4, epB.IPv4, 1, 2)); !errors.Is(err, ErrUnknownEndpoint) {
		t.Errorf("run on an unknown endpoint: %v", err)
	}
	if err := tb.RemoveEndpoint(epB.ID); err != nil {
		t.Fatal(err)
	}
	// B is gone from the endpoints map: A's packets for it go to the host.
	expectRun(t, tb, epA, HookFromContainer, udp(epA.IPv4, epB.IPv4, 1, 2), "forward_host")
}
