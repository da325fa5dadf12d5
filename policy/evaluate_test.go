package policy

import (
	"math/rand/v2"
	"net/netip"
	"strconv"
	"testing"

	"github.com/membrane-net/membrane/labels"
)

var (
	webPeer    = Peer{Identity: web, Labels: labels.Labels{"app": "web"}}
	clientPeer = Peer{Identity: client, Labels: labels.Labels{"app": "client"}}
	hostPeer   = Peer{Identity: host, Addr: netip.MustParseAddr("192.0.2.1")}
	initPeer   = Peer{Identity: init_}
)

func worldPeer(addr string) Peer {
	return Peer{Identity: world, Addr: netip.MustParseAddr(addr)}
}

func TestEvaluate(t *testing.T) {
	const webPolicy = `[{"endpointSelector": {"matchLabels": {"app": "web"}},
	  "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}], "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]},
	              {"fromCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}]}],
	  "egress": [{"toEntities": ["host"]}, {"icmps": [{"fields": [{"type": "EchoRequest"}]}]}]}]`
	rules := mustParse(t, webPolicy)
	tests := []struct {
		name string
		flow Flow
		want bool
	}{
		{"allowed port from the allowed peer", Flow{Src: clientPeer, Dst: webPeer, Proto: 6, Port: 80}, true},
		{"other port from the allowed peer", Flow{Src: clientPeer, Dst: webPeer, Proto: 6, Port: 81}, false},
		{"same port number over UDP", Flow{Src: clientPeer, Dst: webPeer, Proto: 17, Port: 80}, false},
		{"an endpoint without policy is open", Flow{Src: clientPeer, Dst: clientPeer, Proto: 132, Port: 5}, true},
		{"egress of a subject is closed by its egress rules", Flow{Src: webPeer, Dst: clientPeer, Proto: 6, Port: 5}, false},
		{"from a CIDR address", Flow{Src: worldPeer("10.2.3.4"), Dst: webPeer, Proto: 17, Port: 53}, true},
		{"from an excepted address", Flow{Src: worldPeer("10.1.3.4"), Dst: webPeer, Proto: 17, Port: 53}, false},
		{"a CIDR never matches the host", Flow{Src: Peer{Identity: host, Addr: netip.MustParseAddr("10.2.0.1")}, Dst: webPeer, Proto: 6, Port: 80}, false},
		{"egress to the host", Flow{Src: webPeer, Dst: hostPeer, Proto: 6, Port: 22}, true},
		{"ICMP echo request out", Flow{Src: webPeer, Dst: worldPeer("8.8.8.8"), Proto: 1, Port: 8}, true},
		{"ICMP echo reply out is another type", Flow{Src: webPeer, Dst: worldPeer("8.8.8.8"), Proto: 1, Port: 0}, false},
		{"host to an open endpoint", Flow{Src: hostPeer, Dst: clientPeer, Proto: 6, Port: 22}, true},
		{"init is denied everything", Flow{Src: initPeer, Dst: clientPeer, Proto: 6, Port: 22}, false},
		{"nothing reaches init", Flow{Src: hostPeer, Dst: initPeer, Proto: 6, Port: 22}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Evaluate(rules, tt.flow); got != tt.want {
				t.Errorf("Evaluate(%+v) = %v, want %v", tt.flow, got, tt.want)
			}
		})
	}
}

// The differential test: random rules, identities and flows; Resolve's
// keys looked up the way the datapath does must agree with Evaluate.

// lookup simulates the datapath for one flow over Resolve's result.
func lookup(res Result, cidrs map[netip.Prefix]labels.Identity, f Flow) bool {
	src, dst := datapathIdentity(f.Src, cidrs), datapathIdentity(f.Dst, cidrs)
	port := f.Port
	switch f.Proto {
	case protoICMP, protoICMPv6:
		port = ICMPPort(uint8(f.Port))
	case protoTCP, protoUDP, protoSCTP:
	default:
		port = 0
	}
	side := func(subject, peer labels.Identity, dir Direction) bool {
		if subject == labels.IdentityInit {
			return false // the datapath's fixed rule for init
		}
		if subject < labels.MinUserIdentity || subject >= labels.MinCIDRIdentity {
			return true
		}
		allowed := false
		for _, k := range []Key{
			{subject, peer, port, f.Proto, dir},
			{subject, peer, 0, f.Proto, dir},
			{subject, peer, 0, 0, dir},
			{subject, 0, port, f.Proto, dir},
			{subject, 0, 0, f.Proto, dir},
			{subject, 0, 0, 0, dir},
		} {
			switch res.Entries[k] {
			case Deny:
				return false
			case Allow:
				allowed = true
			}
		}
		if allowed {
			return true
		}
		e := res.Enforcement[subject]
		if dir == Ingress {
			return !e.Ingress
		}
		return !e.Egress
	}
	return side(src, dst, Egress) && side(dst, src, Ingress)
}

// datapathIdentity is what the ipcache gives for a peer: its own identity,
// or for the world the identity of the most specific CIDR containing its
// address.
func datapathIdentity(p Peer, cidrs map[netip.Prefix]labels.Identity) labels.Identity {
	if p.Identity != labels.IdentityWorld {
		return p.Identity
	}
	best, id := -1, labels.IdentityWorld
	for prefix, cid := range cidrs {
		if prefix.Contains(p.Addr) && prefix.Bits() > best {
			best, id = prefix.Bits(), cid
		}
	}
	return id
}

// ruleGen makes random valid rules from small vocabularies, so that
// selectors, CIDRs and ports collide often.
type ruleGen struct{ r *rand.Rand }

var (
	genKeys    = []string{"app", "tier", "env"}
	genValues  = []string{"a", "b", "c"}
	genCIDRs   = []string{"0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32", "192.168.0.0/16", "::/0", "fd00::/8", "fd00:1::/32"}
	genAddrs   = []string{"10.1.2.3", "10.1.2.4", "10.1.3.1", "10.2.0.1", "192.168.1.1", "8.8.8.8", "fd00:1::1", "fd00:2::1", "2001:db8::1"}
	genPorts   = []string{"0", "53", "80", "443"}
	genProtos  = []Protocol{"", ProtoTCP, ProtoUDP, ProtoSCTP, ProtoAny, "tcp"}
	genICMP    = []string{"0", "3", "8", "EchoRequest", "EchoReply", "128", "129"}
	genFlowPrt = []uint16{0, 53, 80, 81, 443}
)

func (g ruleGen) pick(n int) int { return g.r.IntN(n) }

func (g ruleGen) selector() labels.Selector {
	var s labels.Selector
	switch g.pick(4) {
	case 0: // empty
	case 1, 2:
		s.MatchLabels = map[string]string{genKeys[g.pick(3)]: genValues[g.pick(3)]}
	case 3:
		ops := []string{labels.OpIn, labels.OpNotIn, labels.OpExists, labels.OpDoesNotExist}
		op := ops[g.pick(4)]
		req := labels.Requirement{Key: "container:" + genKeys[g.pick(3)], Operator: op}
		if op == labels.OpIn || op == labels.OpNotIn {
			req.Values = []string{genValues[g.pick(3)], genValues[g.pick(3)]}
		}
		s.MatchExpressions = []labels.Requirement{req}
	}
	return s
}

// peers returns random peer lists; at most one kind is set.
func (g ruleGen) peers() (eps []labels.Selector, ents []Entity, cidr []string, sets []CIDRRule) {
	switch g.pick(6) {
	case 0: // no peer list: any peer
	case 1:
		eps = []labels.Selector{}
		for range g.pick(3) {
			eps = append(eps, g.selector())
		}
	case 2:
		ents = []Entity{}
		all := []Entity{EntityHost, EntityWorld, EntityInit, EntityAll}
		for range g.pick(3) {
			ents = append(ents, all[g.pick(4)])
		}
	case 3:
		for range 1 + g.pick(2) {
			cidr = append(cidr, genCIDRs[g.pick(len(genCIDRs))])
		}
	case 4, 5:
		c := genCIDRs[g.pick(len(genCIDRs))]
		set := CIDRRule{Cidr: c}
		outer := netip.MustParsePrefix(c)
		for _, e := range genCIDRs {
			p := netip.MustParsePrefix(e)
			if p.Addr().Is4() == outer.Addr().Is4() && p.Bits() > outer.Bits() && outer.Contains(p.Addr()) && g.pick(2) == 0 {
				set.Except = append(set.Except, e)
			}
		}
		sets = []CIDRRule{set}
	}
	return
}

// l4 returns random toPorts or icmps (or neither).
func (g ruleGen) l4() ([]PortProtocol, []ICMPRule) {
	switch g.pick(4) {
	case 0:
		return nil, nil
	case 1:
		var fields []ICMPField
		for range 1 + g.pick(2) {
			f := ICMPField{Type: ICMPType(genICMP[g.pick(len(genICMP))])}
			if g.pick(2) == 0 {
				f.Family = FamilyIPv6
				if f.Type == "0" || f.Type == "3" || f.Type == "8" {
					f.Type = "EchoRequest"
				}
			}
			fields = append(fields, f)
		}
		return nil, []ICMPRule{{Fields: fields}}
	}
	var ports []PortProtocol
	for range 1 + g.pick(2) {
		pp := PortProtocol{Port: genPorts[g.pick(len(genPorts))], Protocol: genProtos[g.pick(len(genProtos))]}
		if pp.Port == "80" && g.pick(3) == 0 {
			pp.EndPort = 82
		}
		ports = append(ports, pp)
	}
	return ports, nil
}

func (g ruleGen) rule() Rule {
	r := Rule{EndpointSelector: g.selector()}
	for r.Ingress == nil && r.IngressDeny == nil && r.Egress == nil && r.EgressDeny == nil {
		for range g.pick(2) {
			eps, ents, cidr, sets := g.peers()
			ports, icmps := g.l4()
			s := IngressRule{FromEndpoints: eps, FromEntities: ents, FromCIDR: cidr, FromCIDRSet: sets, ICMPs: icmps}
			if ports != nil {
				s.ToPorts = []PortRule{{Ports: ports}}
			}
			r.Ingress = append(r.Ingress, s)
		}
		for range g.pick(2) {
			eps, ents, cidr, sets := g.peers()
			ports, icmps := g.l4()
			s := IngressDenyRule{FromEndpoints: eps, FromEntities: ents, FromCIDR: cidr, FromCIDRSet: sets, ICMPs: icmps}
			if ports != nil {
				s.ToPorts = []PortDenyRule{{Ports: ports}}
			}
			r.IngressDeny = append(r.IngressDeny, s)
		}
		for range g.pick(2) {
			eps, ents, cidr, sets := g.peers()
			ports, icmps := g.l4()
			s := EgressRule{ToEndpoints: eps, ToEntities: ents, ToCIDR: cidr, ToCIDRSet: sets, ICMPs: icmps}
			if ports != nil {
				s.ToPorts = []PortRule{{Ports: ports}}
			}
			r.Egress = append(r.Egress, s)
		}
		for range g.pick(2) {
			eps, ents, cidr, sets := g.peers()
			ports, icmps := g.l4()
			s := EgressDenyRule{ToEndpoints: eps, ToEntities: ents, ToCIDR: cidr, ToCIDRSet: sets, ICMPs: icmps}
			if ports != nil {
				s.ToPorts = []PortDenyRule{{Ports: ports}}
			}
			r.EgressDeny = append(r.EgressDeny, s)
		}
	}
	if g.pick(5) == 0 {
		f := false
		r.EnableDefaultDeny = &DefaultDeny{Ingress: &f}
		if g.pick(2) == 0 {
			r.EnableDefaultDeny = &DefaultDeny{Egress: &f}
		}
	}
	return r
}

func (g ruleGen) peer(ids map[labels.Identity]labels.Labels) Peer {
	switch g.pick(6) {
	case 0:
		return Peer{Identity: labels.IdentityHost, Addr: netip.MustParseAddr(genAddrs[g.pick(len(genAddrs))])}
	case 1:
		return Peer{Identity: labels.IdentityInit}
	case 2:
		return Peer{Identity: labels.IdentityWorld, Addr: netip.MustParseAddr(genAddrs[g.pick(len(genAddrs))])}
	}
	id := labels.MinUserIdentity + labels.Identity(g.pick(len(ids)))
	return Peer{Identity: id, Labels: ids[id]}
}

func (g ruleGen) flow(ids map[labels.Identity]labels.Labels) Flow {
	f := Flow{Src: g.peer(ids), Dst: g.peer(ids)}
	switch g.pick(6) {
	case 0:
		f.Proto = protoICMP
		f.Port = []uint16{0, 3, 8, 11}[g.pick(4)]
	case 1:
		f.Proto = protoICMPv6
		f.Port = []uint16{1, 128, 129, 135}[g.pick(4)]
	case 2:
		f.Proto = 47 // GRE: no ports
	default:
		f.Proto = []uint8{protoTCP, protoUDP, protoSCTP}[g.pick(3)]
		f.Port = genFlowPrt[g.pick(len(genFlowPrt))]
	}
	return f
}

func TestResolveAgreesWithEvaluate(t *testing.T) {
	const cases = 2000
	const flowsPerCase = 60
	for seed := range uint64(cases) {
		g := ruleGen{rand.New(rand.NewPCG(seed, 42))}
		ids := map[labels.Identity]labels.Labels{}
		for i := range 1 + g.pick(5) {
			l := labels.Labels{}
			for _, k := range genKeys {
				if g.pick(2) == 0 {
					l[k] = genValues[g.pick(3)]
				}
			}
			ids[labels.MinUserIdentity+labels.Identity(i)] = l
		}
		var rules []Rule
		for range 1 + g.pick(4) {
			rules = append(rules, g.rule())
		}
		cidrs := map[netip.Prefix]labels.Identity{}
		for i, p := range CIDRs(rules) {
			cidrs[p] = labels.MinCIDRIdentity + labels.Identity(i)
		}
		res, err := Resolve(Input{Rules: rules, Identities: ids, CIDRs: cidrs})
		if err != nil {
			t.Fatalf("seed %d: Resolve: %v\nrules: %s", seed, err, dump(rules))
		}
		for range flowsPerCase {
			f := g.flow(ids)
			want := Evaluate(rules, f)
			if got := lookup(res, cidrs, f); got != want {
				t.Fatalf("seed %d: flow %+v: datapath lookup says %v, Evaluate says %v\nidentities: %v\nrules: %s\nentries:\n%s\nenforcement: %v",
					seed, f, got, want, ids, dump(rules), describe(res.Entries), res.Enforcement)
			}
		}
	}
}

func dump(rules []Rule) string {
	s := ""
	for i, r := range rules {
		b, err := Canonical(r)
		if err != nil {
			b = []byte(err.Error())
		}
		s += "\n[" + strconv.Itoa(i) + "] " + string(b)
	}
	return s
}

// The generator must produce rules Parse accepts, or the differential
// test would be exercising inputs users cannot write.
func TestRuleGeneratorMakesValidRules(t *testing.T) {
	g := ruleGen{rand.New(rand.NewPCG(1, 2))}
	for i := range 500 {
		r := g.rule()
		if _, err := Canonical(r); err != nil {
			t.Fatalf("rule %d: %v", i, err)
		}
	}
}
