package policy

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/membrane-net/membrane/labels"
)

// Peer is one end of a flow. An endpoint has its identity and labels; the
// host and the outside world have their reserved identity (host, world),
// and Addr, the address CIDR rules match for a peer outside membrane. An
// endpoint whose labels are not known yet has identity init.
type Peer struct {
	Identity labels.Identity
	Labels   labels.Labels
	Addr     netip.Addr
}

// Flow is the first packet of a connection.
type Flow struct {
	Src, Dst Peer
	Proto    uint8  // IP protocol number
	Port     uint16 // destination port, or the ICMP (ICMPv6) message type
}

// Evaluate decides a flow straight from the rules, the slow and obvious
// way: the flow passes when the source's egress and the destination's
// ingress both allow it. It is the reference Resolve is tested against,
// and shares no code with it beyond label selectors and ICMP type names.
// Rules are read as Parse would read them; a value that does not parse
// matches nothing.
//
// A side that is not a membrane endpoint (the host, the world) has no
// policy of its own. An endpoint with identity init is denied everything.
func Evaluate(rules []Rule, f Flow) bool {
	return sideAllows(rules, f.Src, f.Dst, f, Egress) && sideAllows(rules, f.Dst, f.Src, f, Ingress)
}

func isEndpoint(p Peer) bool {
	return p.Identity >= labels.MinUserIdentity && p.Identity < labels.MinCIDRIdentity
}

// isOutside reports a peer that CIDR rules and the world entity match.
func isOutside(p Peer) bool {
	return p.Identity == labels.IdentityWorld || p.Identity >= labels.MinCIDRIdentity
}

// sideAllows decides one side: subject's policy in direction dir about
// traffic with peer.
func sideAllows(rules []Rule, subject, peer Peer, f Flow, dir Direction) bool {
	if subject.Identity == labels.IdentityInit {
		return false
	}
	if !isEndpoint(subject) {
		return true
	}
	enforced, allowed, denied := false, false, false
	for i := range rules {
		r := &rules[i]
		if !r.EndpointSelector.Matches(subject.Labels) {
			continue
		}
		if dir == Ingress {
			if len(r.Ingress)+len(r.IngressDeny) > 0 && !(r.EnableDefaultDeny != nil && r.EnableDefaultDeny.Ingress != nil && !*r.EnableDefaultDeny.Ingress) {
				enforced = true
			}
			for _, s := range r.Ingress {
				var ports [][]PortProtocol
				for _, pr := range s.ToPorts {
					ports = append(ports, pr.Ports)
				}
				if evalPeer(s.FromEndpoints, s.FromEntities, s.FromCIDR, s.FromCIDRSet, peer) && evalL4(ports, s.ICMPs, f) {
					allowed = true
				}
			}
			for _, s := range r.IngressDeny {
				var ports [][]PortProtocol
				for _, pr := range s.ToPorts {
					ports = append(ports, pr.Ports)
				}
				if evalPeer(s.FromEndpoints, s.FromEntities, s.FromCIDR, s.FromCIDRSet, peer) && evalL4(ports, s.ICMPs, f) {
					denied = true
				}
			}
		} else {
			if len(r.Egress)+len(r.EgressDeny) > 0 && !(r.EnableDefaultDeny != nil && r.EnableDefaultDeny.Egress != nil && !*r.EnableDefaultDeny.Egress) {
				enforced = true
			}
			for _, s := range r.Egress {
				var ports [][]PortProtocol
				for _, pr := range s.ToPorts {
					ports = append(ports, pr.Ports)
				}
				if evalPeer(s.ToEndpoints, s.ToEntities, s.ToCIDR, s.ToCIDRSet, peer) && evalL4(ports, s.ICMPs, f) {
					allowed = true
				}
			}
			for _, s := range r.EgressDeny {
				var ports [][]PortProtocol
				for _, pr := range s.ToPorts {
					ports = append(ports, pr.Ports)
				}
				if evalPeer(s.ToEndpoints, s.ToEntities, s.ToCIDR, s.ToCIDRSet, peer) && evalL4(ports, s.ICMPs, f) {
					denied = true
				}
			}
		}
	}
	switch {
	case denied:
		return false
	case allowed:
		return true
	}
	return !enforced
}

// evalPeer reports whether a section's peer lists match the peer. No
// list at all matches every peer; a present list matches what it names.
func evalPeer(endpoints []labels.Selector, entities []Entity, cidrs []string, sets []CIDRRule, peer Peer) bool {
	if endpoints == nil && entities == nil && cidrs == nil && sets == nil {
		return true
	}
	if isEndpoint(peer) {
		for _, sel := range endpoints {
			if sel.Matches(peer.Labels) {
				return true
			}
		}
	}
	for _, e := range entities {
		switch {
		case e == EntityAll,
			e == EntityHost && peer.Identity == labels.IdentityHost,
			e == EntityInit && peer.Identity == labels.IdentityInit,
			e == EntityWorld && isOutside(peer):
			return true
		}
	}
	if !isOutside(peer) {
		return false
	}
	for _, c := range cidrs {
		if p, ok := evalPrefix(c, true); ok && p.Contains(peer.Addr) {
			return true
		}
	}
	for _, set := range sets {
		p, ok := evalPrefix(set.Cidr, false)
		if !ok || !p.Contains(peer.Addr) {
			continue
		}
		excepted := false
		for _, e := range set.Except {
			if ep, ok := evalPrefix(e, false); ok && ep.Contains(peer.Addr) {
				excepted = true
			}
		}
		if !excepted {
			return true
		}
	}
	return false
}

func evalPrefix(s string, bareIP bool) (netip.Prefix, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), true
	}
	if a, err := netip.ParseAddr(s); bareIP && err == nil {
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	return netip.Prefix{}, false
}

// evalL4 reports whether a section's toPorts or icmps match the flow;
// with neither, every flow matches.
func evalL4(ports [][]PortProtocol, icmps []ICMPRule, f Flow) bool {
	if len(ports) == 0 && len(icmps) == 0 {
		return true
	}
	for _, list := range ports {
		for _, pp := range list {
			n, err := strconv.ParseUint(pp.Port, 10, 16)
			if err != nil {
				continue
			}
			port := int(n)
			proto := strings.ToUpper(string(pp.Protocol))
			if proto == "" {
				proto = string(ProtoAny)
			}
			if proto == string(ProtoAny) && port == 0 {
				return true // every protocol, ICMP included
			}
			var want uint8
			switch proto {
			case string(ProtoTCP):
				want = protoTCP
			case string(ProtoUDP):
				want = protoUDP
			case string(ProtoSCTP):
				want = protoSCTP
			}
			if proto == string(ProtoAny) {
				if f.Proto != protoTCP && f.Proto != protoUDP && f.Proto != protoSCTP {
					continue
				}
			} else if want == 0 || f.Proto != want {
				continue
			}
			end := port
			if pp.EndPort != 0 {
				end = int(pp.EndPort)
			}
			if port == 0 || (int(f.Port) >= port && int(f.Port) <= end) {
				return true
			}
		}
	}
	for _, ir := range icmps {
		for _, field := range ir.Fields {
			family, proto := FamilyIPv4, uint8(protoICMP)
			if strings.EqualFold(field.Family, FamilyIPv6) {
				family, proto = FamilyIPv6, protoICMPv6
			}
			t, ok := icmpTypeNumber(family, string(field.Type))
			if ok && f.Proto == proto && f.Port == uint16(t) {
				return true
			}
		}
	}
	return false
}
