package policy

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/membrane-net/membrane/datapath"
	"github.com/membrane-net/membrane/labels"
)

// The differential test: random rule sets are resolved, loaded into the
// real BPF maps, and random flows are run through the real programs with
// BPF_PROG_RUN; every verdict must equal the reference evaluator's, which
// reads the rules directly. Addresses of the test endpoints, the host and
// the world are fixed; labels, rules and flows vary with the seed.

// diffEndpoint is one endpoint of the testbed.
type diffEndpoint struct {
	id       string
	identity labels.Identity
	v4, v6   netip.Addr
}

var (
	diffHost4 = netip.MustParseAddr("172.30.0.1")
	diffHost6 = netip.MustParseAddr("fd30::1")
)

func newDiffTestbed(t *testing.T, n int) (*datapath.Testbed, []diffEndpoint) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("privileged test: loading BPF programs needs root")
	}
	tb, err := datapath.NewTestbed()
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	t.Cleanup(func() { tb.Close() })
	var eps []diffEndpoint
	for i := range n {
		ep := diffEndpoint{
			id:       fmt.Sprintf("diff%d", i),
			identity: labels.MinUserIdentity + labels.Identity(i),
			v4:       netip.AddrFrom4([4]byte{172, 31, 0, byte(10 + i)}),
			v6:       netip.MustParseAddr(fmt.Sprintf("fd31::%x", 10+i)),
		}
		err := tb.AddEndpoint(datapath.Endpoint{
			ID: ep.id, HostIfIndex: 100 + i, NetworkIndex: 1, Identity: uint32(ep.identity),
			MAC:     net.HardwareAddr{0x02, 0, 0, 0, 1, byte(i)},
			HostMAC: net.HardwareAddr{0x02, 0, 0, 0, 2, byte(i)},
			IPv4:    ep.v4, IPv6: ep.v6,
		})
		if err != nil {
			t.Fatalf("add endpoint: %v", err)
		}
		eps = append(eps, ep)
	}
	return tb, eps
}

// load resolves rules for the identities and writes the result into the
// testbed's maps, as the daemon does.
func load(t *testing.T, tb *datapath.Testbed, rules []Rule, ids map[labels.Identity]labels.Labels) {
	t.Helper()
	cidrs := map[netip.Prefix]labels.Identity{}
	ipcache := map[netip.Prefix]uint32{
		netip.MustParsePrefix("0.0.0.0/0"): uint32(labels.IdentityWorld),
		netip.MustParsePrefix("::/0"):      uint32(labels.IdentityWorld),
		netip.PrefixFrom(diffHost4, 32):    uint32(labels.IdentityHost),
		netip.PrefixFrom(diffHost6, 128):   uint32(labels.IdentityHost),
	}
	for i, p := range CIDRs(rules) {
		cidrs[p] = labels.MinCIDRIdentity + labels.Identity(i)
		if _, taken := ipcache[p]; !taken || p.Bits() == 0 {
			ipcache[p] = uint32(cidrs[p])
		}
	}
	res, err := Resolve(Input{Rules: rules, Identities: ids, CIDRs: cidrs})
	if err != nil {
		t.Fatalf("resolve: %v\nrules: %s", err, dump(rules))
	}
	st := datapath.PolicyState{Entries: map[datapath.PolicyKey]datapath.Verdict{}, Enforcement: map[uint32]datapath.Enforcement{}}
	for k, v := range res.Entries {
		st.Entries[datapath.PolicyKey{Subject: uint32(k.Subject), Peer: uint32(k.Peer), Port: k.Port, Proto: k.Proto, Dir: uint8(k.Dir)}] = datapath.Verdict(v)
	}
	for id, e := range res.Enforcement {
		st.Enforcement[uint32(id)] = datapath.Enforcement{Ingress: e.Ingress, Egress: e.Egress}
	}
	if err := tb.Datapath().SyncIPCache(ipcache); err != nil {
		t.Fatalf("sync ipcache: %v", err)
	}
	if _, err := tb.Datapath().SyncPolicy(st); err != nil {
		t.Fatalf("sync policy: %v", err)
	}
}

// diffFlow is one packet of the test and the flow the evaluator judges.
type diffFlow struct {
	endpoint string        // whose program runs
	hook     datapath.Hook // which of its programs
	pkt      datapath.Packet
	flow     Flow
}

func (g ruleGen) diffFlow(eps []diffEndpoint, ids map[labels.Identity]labels.Labels) diffFlow {
	v6 := g.pick(2) == 0
	addr := func(ep diffEndpoint) netip.Addr {
		if v6 {
			return ep.v6
		}
		return ep.v4
	}
	epPeer := func(ep diffEndpoint) Peer { return Peer{Identity: ep.identity, Labels: ids[ep.identity]} }
	outside := func() (Peer, netip.Addr) {
		if g.pick(3) == 0 {
			if v6 {
				return Peer{Identity: labels.IdentityHost, Addr: diffHost6}, diffHost6
			}
			return Peer{Identity: labels.IdentityHost, Addr: diffHost4}, diffHost4
		}
		for {
			a := netip.MustParseAddr(genAddrs[g.pick(len(genAddrs))])
			if a.Is6() == v6 {
				return Peer{Identity: labels.IdentityWorld, Addr: a}, a
			}
		}
	}

	var f diffFlow
	src := eps[g.pick(len(eps))]
	switch g.pick(3) {
	case 0: // endpoint to endpoint: the sender's program checks both sides
		dst := eps[g.pick(len(eps))]
		f = diffFlow{endpoint: src.id, hook: datapath.HookFromContainer,
			pkt: datapath.Packet{Src: addr(src), Dst: addr(dst)}, flow: Flow{Src: epPeer(src), Dst: epPeer(dst)}}
	case 1: // endpoint to the host or the world
		peer, a := outside()
		f = diffFlow{endpoint: src.id, hook: datapath.HookFromContainer,
			pkt: datapath.Packet{Src: addr(src), Dst: a}, flow: Flow{Src: epPeer(src), Dst: peer}}
	default: // the host or the world to an endpoint, through the host stack
		peer, a := outside()
		f = diffFlow{endpoint: src.id, hook: datapath.HookToContainer,
			pkt: datapath.Packet{Src: a, Dst: addr(src)}, flow: Flow{Src: peer, Dst: epPeer(src)}}
	}
	switch g.pick(5) {
	case 0: // an echo request of the packet's family
		f.pkt.Proto, f.pkt.ICMPType, f.pkt.ICMPID = protoICMP, 8, 7
		if v6 {
			f.pkt.Proto, f.pkt.ICMPType = protoICMPv6, 128
		}
		f.flow.Proto, f.flow.Port = f.pkt.Proto, uint16(f.pkt.ICMPType)
	default:
		f.pkt.Proto = []uint8{protoTCP, protoUDP, protoSCTP}[g.pick(3)]
		f.pkt.SrcPort = 40000
		f.pkt.DstPort = genFlowPrt[1+g.pick(len(genFlowPrt)-1)]
		f.flow.Proto, f.flow.Port = f.pkt.Proto, f.pkt.DstPort
	}
	return f
}

func TestDatapathAgreesWithEvaluate(t *testing.T) {
	const (
		endpoints    = 4
		cases        = 300
		flowsPerCase = 30
	)
	tb, eps := newDiffTestbed(t, endpoints)
	allowed, total := 0, 0
	for seed := range uint64(cases) {
		g := ruleGen{rand.New(rand.NewPCG(seed, 7))}
		ids := map[labels.Identity]labels.Labels{}
		for _, ep := range eps {
			l := labels.Labels{}
			for _, k := range genKeys {
				if g.pick(2) == 0 {
					l[k] = genValues[g.pick(3)]
				}
			}
			ids[ep.identity] = l
		}
		var rules []Rule
		for range 1 + g.pick(4) {
			rules = append(rules, g.rule())
		}
		load(t, tb, rules, ids)
		for range flowsPerCase {
			f := g.diffFlow(eps, ids)
			if err := tb.Datapath().FlushConntrack(); err != nil {
				t.Fatal(err)
			}
			want := Evaluate(rules, f.flow)
			res, err := tb.RunPacket(f.endpoint, f.hook, f.pkt)
			if err != nil {
				t.Fatalf("seed %d: run %+v: %v", seed, f.pkt, err)
			}
			total++
			if res.Allowed() {
				allowed++
			}
			if res.Allowed() != want {
				t.Fatalf("seed %d: %s of %s, packet %v -> %v proto %d port %d: datapath %s (%s), evaluator allows=%v\nidentities: %v\nrules: %s",
					seed, f.hook, f.endpoint, f.pkt.Src, f.pkt.Dst, f.pkt.Proto, f.flow.Port, res.Action, res.Reason, want, ids, dump(rules))
			}
		}
	}
	// Both verdicts must be well represented, or the test proves little.
	if allowed < total/10 || allowed > total*9/10 {
		t.Fatalf("%d of %d flows allowed: the generator no longer exercises both verdicts", allowed, total)
	}
	t.Logf("%d flows, %d allowed", total, allowed)
}
