package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/membrane-net/membrane/labels"
)

// MaxPortRange is the largest number of ports one port range (port to
// endPort) may span. Ranges are expanded into one policy key per port.
const MaxPortRange = 1024

// IP protocol numbers used in keys.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
	protoSCTP   = 132
)

// l4 is the protocol and port part of a policy key.
type l4 struct {
	proto uint8
	port  uint16
}

// cidrPeer is a CIDR peer: the addresses in prefix and in no except.
type cidrPeer struct {
	prefix netip.Prefix
	except []netip.Prefix
}

// compiledSection is one ingress/egress (deny) list entry, checked and
// parsed.
type compiledSection struct {
	anyPeer      bool // no peer list: every peer
	endpoints    []labels.Selector
	endpointKeys []string // selectorKey of each of endpoints
	entities     []Entity
	cidrs        []cidrPeer
	l4           []l4 // nil: every protocol and port
}

const (
	allowList = 0
	denyList  = 1
)

// compiledRule is a rule checked and parsed for resolution.
type compiledRule struct {
	subject     labels.Selector
	subjectKey  string                  // selectorKey(subject)
	sections    [2][2][]compiledSection // [Direction][allowList, denyList]
	defaultDeny [2]bool                 // the rule puts its subjects into default deny, per Direction
}

// compiler checks one rule. With fix set it also rewrites values into
// their canonical form (protocol names upper case, CIDRs masked, ...).
type compiler struct {
	fix   bool
	paths bool // build paths; without, every path is ""
	errs  []error
	// known holds the selectors that many rules share (see
	// fastSelector), by their MatchLabels map (they have no
	// matchExpressions): with their selectorKey once one was checked
	// valid, with "" until then. Nil for none.
	known map[uintptr]string
}

func (c *compiler) child(path, key string) string {
	if !c.paths {
		return ""
	}
	return childPath(path, key)
}

func (c *compiler) index(path string, i int) string {
	if !c.paths {
		return ""
	}
	return indexPath(path, i)
}

func (c *compiler) fail(path, format string, args ...any) {
	c.errs = append(c.errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// compileRule checks r (the rule at path) and returns it compiled, or
// the problems found. Building paths costs more than the rest; callers
// compile without them first and again with them when there are problems.
func compileRule(r *Rule, path string, fix, paths bool) (*compiledRule, []error) {
	return compileRuleKnown(r, path, fix, paths, nil)
}

// compileRuleKnown is compileRule with the selectors known valid (see
// compiler.known), which it adds to.
func compileRuleKnown(r *Rule, path string, fix, paths bool, known map[uintptr]string) (*compiledRule, []error) {
	c := &compiler{fix: fix, paths: paths, known: known}
	cr := &compiledRule{subject: r.EndpointSelector}

	for i, l := range r.Labels {
		p := c.child(c.index(c.child(path, "labels"), i), "key")
		if l.Key == "" {
			c.fail(p, "empty label key")
			continue
		}
		for j := range i {
			if r.Labels[j].Key == l.Key {
				c.fail(p, "duplicate label key %q (also labels[%d])", l.Key, j)
				break
			}
		}
	}
	c.selector(r.EndpointSelector, c.child(path, "endpointSelector"))

	for i := range r.Ingress {
		s := &r.Ingress[i]
		v := sectionView{s.FromEndpoints, s.FromEntities, s.FromCIDR, s.FromCIDRSet, nil, s.ICMPs}
		for _, pr := range s.ToPorts {
			v.ports = append(v.ports, pr.Ports)
		}
		cs := c.section(v, c.index(c.child(path, "ingress"), i), fromPeers)
		cr.sections[Ingress][allowList] = append(cr.sections[Ingress][allowList], cs)
	}
	for i := range r.IngressDeny {
		s := &r.IngressDeny[i]
		v := sectionView{s.FromEndpoints, s.FromEntities, s.FromCIDR, s.FromCIDRSet, nil, s.ICMPs}
		for _, pr := range s.ToPorts {
			v.ports = append(v.ports, pr.Ports)
		}
		cs := c.section(v, c.index(c.child(path, "ingressDeny"), i), fromPeers)
		cr.sections[Ingress][denyList] = append(cr.sections[Ingress][denyList], cs)
	}
	for i := range r.Egress {
		s := &r.Egress[i]
		v := sectionView{s.ToEndpoints, s.ToEntities, s.ToCIDR, s.ToCIDRSet, nil, s.ICMPs}
		for _, pr := range s.ToPorts {
			v.ports = append(v.ports, pr.Ports)
		}
		cs := c.section(v, c.index(c.child(path, "egress"), i), toPeers)
		cr.sections[Egress][allowList] = append(cr.sections[Egress][allowList], cs)
	}
	for i := range r.EgressDeny {
		s := &r.EgressDeny[i]
		v := sectionView{s.ToEndpoints, s.ToEntities, s.ToCIDR, s.ToCIDRSet, nil, s.ICMPs}
		for _, pr := range s.ToPorts {
			v.ports = append(v.ports, pr.Ports)
		}
		cs := c.section(v, c.index(c.child(path, "egressDeny"), i), toPeers)
		cr.sections[Egress][denyList] = append(cr.sections[Egress][denyList], cs)
	}

	// A non-empty section, allow or deny, puts the subjects into default
	// deny in its direction (as in Cilium), unless the rule says otherwise.
	cr.defaultDeny[Ingress] = len(r.Ingress)+len(r.IngressDeny) > 0
	cr.defaultDeny[Egress] = len(r.Egress)+len(r.EgressDeny) > 0
	if !cr.defaultDeny[Ingress] && !cr.defaultDeny[Egress] {
		c.fail(path, "rule has no ingress, ingressDeny, egress or egressDeny rules")
	}
	if dd := r.EnableDefaultDeny; dd != nil {
		if dd.Ingress != nil && !*dd.Ingress {
			cr.defaultDeny[Ingress] = false
		}
		if dd.Egress != nil && !*dd.Egress {
			cr.defaultDeny[Egress] = false
		}
	}
	if len(c.errs) > 0 {
		return nil, c.errs
	}
	cr.subjectKey = c.key(cr.subject)
	forEachSection(cr, func(s *compiledSection) {
		if len(s.endpoints) == 0 {
			return
		}
		s.endpointKeys = make([]string, len(s.endpoints))
		for i, sel := range s.endpoints {
			s.endpointKeys[i] = c.key(sel)
		}
	})
	return cr, nil
}

// sharedMap returns the identity of a selector's MatchLabels map when the
// selector may be in compiler.known: it has labels and no expressions.
func sharedMap(s labels.Selector) (uintptr, bool) {
	if s.MatchLabels == nil || s.MatchExpressions != nil {
		return 0, false
	}
	return reflect.ValueOf(s.MatchLabels).Pointer(), true
}

// key returns the selectorKey of a selector checked valid, and remembers
// it in c.known for a shared selector.
func (c *compiler) key(s labels.Selector) string {
	id, ok := sharedMap(s)
	if !ok {
		return selectorKey(s)
	}
	k, shared := c.known[id]
	if k == "" {
		k = selectorKey(s)
		if shared {
			c.known[id] = k
		}
	}
	return k
}

// selectorKey is a canonical key of a selector: two selectors have the
// same key exactly when they have the same labels.Selector.String. It is
// what resolution memoizes and an Index shares selectors by, computed once
// per selector of a compiled rule, at a fraction of String's cost (no
// quoting; lengths and counts, each closed by a separator, tell the parts
// apart).
func selectorKey(sel labels.Selector) string {
	if sel.Empty() {
		return ""
	}
	var stack [4]string
	keys := stack[:0]
	size := 8
	for k, v := range sel.MatchLabels {
		keys = append(keys, k)
		size += len(k) + len(v) + 8
	}
	if len(keys) > 1 {
		slices.SortFunc(keys, func(x, y string) int {
			if c := strings.Compare(labels.LabelKey(x), labels.LabelKey(y)); c != 0 {
				return c
			}
			return strings.Compare(x, y)
		})
	}
	for _, r := range sel.MatchExpressions {
		size += len(r.Key) + len(r.Operator) + 8
		for _, v := range r.Values {
			size += len(v) + 4
		}
	}
	var buf [128]byte
	b := buf[:0]
	if size > len(buf) {
		b = make([]byte, 0, size)
	}
	b = strconv.AppendInt(b, int64(len(keys)), 10)
	b = append(b, '=')
	for _, k := range keys {
		b = appendKeyPart(b, labels.LabelKey(k))
		b = appendKeyPart(b, sel.MatchLabels[k])
	}
	for _, r := range sel.MatchExpressions {
		b = append(b, '&')
		b = appendKeyPart(b, labels.LabelKey(r.Key))
		b = appendKeyPart(b, r.Operator)
		b = strconv.AppendInt(b, int64(len(r.Values)), 10)
		b = append(b, '#') // ends the count: the first value's length follows
		for _, v := range r.Values {
			b = appendKeyPart(b, v)
		}
	}
	return string(b)
}

// appendKeyPart appends s to a selectorKey, after its length.
func appendKeyPart(b []byte, s string) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, ':')
	return append(b, s...)
}

// selector checks a selector and reports its problems under path.
func (c *compiler) selector(s labels.Selector, path string) {
	if id, ok := sharedMap(s); ok && c.known[id] != "" {
		return // checked valid already
	}
	err := s.Validate()
	if err == nil {
		return
	}
	list := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	}
	for _, e := range list {
		var se *labels.SelectorError
		if errors.As(e, &se) {
			c.fail(c.child(path, se.Path), "%s", se.Msg)
		} else {
			c.fail(path, "%v", e)
		}
	}
}

// sectionView is the part common to the four section types. Its slices
// share their arrays with the rule, so fixes land in the rule.
type sectionView struct {
	endpoints []labels.Selector
	entities  []Entity
	cidr      []string
	cidrSet   []CIDRRule
	ports     [][]PortProtocol // one per toPorts entry
	icmps     []ICMPRule
}

// Entities known from Cilium that membrane has no use for.
var ciliumOnlyEntities = map[Entity]bool{
	"cluster": true, "remote-node": true, "health": true, "kube-apiserver": true,
	"ingress": true, "unmanaged": true, "none": true, "world-ipv4": true, "world-ipv6": true,
}

func (c *compiler) section(s sectionView, path string, names peerNames) compiledSection {
	var cs compiledSection

	var present []string
	if s.endpoints != nil {
		present = append(present, names.endpoints)
	}
	if s.entities != nil {
		present = append(present, names.entities)
	}
	if s.cidr != nil {
		present = append(present, names.cidr)
	}
	if s.cidrSet != nil {
		present = append(present, names.cidrSet)
	}
	switch {
	case len(present) == 0:
		cs.anyPeer = true
	case len(present) > 1:
		c.fail(path, "%s and %s cannot be combined in one rule: write one rule for each", present[0], present[1])
	}

	for i, sel := range s.endpoints {
		c.selector(sel, c.index(c.child(path, names.endpoints), i))
	}
	cs.endpoints = s.endpoints

	for i, e := range s.entities {
		p := c.index(c.child(path, names.entities), i)
		switch e {
		case EntityAll, EntityHost, EntityWorld, EntityInit:
			if !slices.Contains(cs.entities, e) {
				cs.entities = append(cs.entities, e)
			}
		default:
			if ciliumOnlyEntities[e] {
				c.fail(p, "entity %q is not supported by membrane (there is no cluster): want host, world, all or init", e)
			} else {
				c.fail(p, "unknown entity %q: want host, world, all or init", e)
			}
		}
	}

	for i, str := range s.cidr {
		p := c.index(c.child(path, names.cidr), i)
		prefix, msg := parseCIDR(str, true)
		if msg != "" {
			c.fail(p, "%s", msg)
			continue
		}
		if c.fix {
			s.cidr[i] = prefix.String()
		}
		cs.cidrs = append(cs.cidrs, cidrPeer{prefix: prefix})
	}

	for i := range s.cidrSet {
		cr := &s.cidrSet[i]
		p := c.index(c.child(path, names.cidrSet), i)
		prefix, msg := parseCIDR(cr.Cidr, false)
		if msg != "" {
			c.fail(c.child(p, "cidr"), "%s", msg)
			continue
		}
		peer := cidrPeer{prefix: prefix}
		for j, str := range cr.Except {
			ep := c.index(c.child(p, "except"), j)
			except, msg := parseCIDR(str, false)
			if msg != "" {
				c.fail(ep, "%s", msg)
				continue
			}
			if except.Addr().Is4() != prefix.Addr().Is4() || except.Bits() < prefix.Bits() || !prefix.Contains(except.Addr()) {
				c.fail(ep, "%q is not inside cidr %q", str, cr.Cidr)
				continue
			}
			if c.fix {
				cr.Except[j] = except.String()
			}
			peer.except = append(peer.except, except)
		}
		if c.fix {
			cr.Cidr = prefix.String()
		}
		cs.cidrs = append(cs.cidrs, peer)
	}

	if len(s.ports) > 0 && len(s.icmps) > 0 {
		c.fail(path, "toPorts and icmps cannot be combined in one rule: write one rule for each")
	}
	if len(s.ports) > 0 || len(s.icmps) > 0 {
		cs.l4 = []l4{}
	}
	for i, ports := range s.ports {
		p := c.child(c.index(c.child(path, "toPorts"), i), "ports")
		if len(ports) == 0 {
			c.fail(p, "at least one port is required")
		}
		for j := range ports {
			c.port(&ports[j], c.index(p, j), &cs.l4)
		}
	}
	for i := range s.icmps {
		p := c.child(c.index(c.child(path, "icmps"), i), "fields")
		fields := s.icmps[i].Fields
		if len(fields) == 0 {
			c.fail(p, "at least one ICMP type is required")
		}
		for j := range fields {
			c.icmp(&fields[j], c.index(p, j), &cs.l4)
		}
	}
	if cs.l4 != nil {
		slices.SortFunc(cs.l4, func(a, b l4) int {
			if a.proto != b.proto {
				return int(a.proto) - int(b.proto)
			}
			return int(a.port) - int(b.port)
		})
		cs.l4 = slices.Compact(cs.l4)
		if len(cs.l4) > 0 && cs.l4[0] == (l4{}) {
			cs.l4 = nil // every protocol: the rest adds nothing
		}
	}
	return cs
}

// parseCIDR parses a CIDR prefix (or, with bareIP, an address, which
// stands for its /32 or /128) and masks it.
func parseCIDR(s string, bareIP bool) (netip.Prefix, string) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if !bareIP || aerr != nil || a.Zone() != "" {
			if bareIP {
				return netip.Prefix{}, fmt.Sprintf("%q: want an address or a CIDR prefix such as 10.0.0.0/8 or fd00::/8", s)
			}
			return netip.Prefix{}, fmt.Sprintf("%q: want a CIDR prefix such as 10.0.0.0/8 or fd00::/8", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Sprintf("%q: IPv4-mapped IPv6 prefix: write the IPv4 prefix", s)
	}
	return p.Masked(), ""
}

// port checks a ports entry and appends its keys.
func (c *compiler) port(pp *PortProtocol, path string, out *[]l4) {
	ok := true
	port := 0
	if !isDecimal(pp.Port) || len(pp.Port) > 5 || atoi(pp.Port) > 65535 {
		c.fail(c.child(path, "port"), "%q: want a number 0-65535", pp.Port)
		ok = false
	} else {
		port = atoi(pp.Port)
	}

	var protos []uint8
	proto := Protocol(strings.ToUpper(string(pp.Protocol)))
	switch proto {
	case ProtoTCP:
		protos = []uint8{protoTCP}
	case ProtoUDP:
		protos = []uint8{protoUDP}
	case ProtoSCTP:
		protos = []uint8{protoSCTP}
	case ProtoAny, "":
		proto = ProtoAny
		protos = []uint8{protoTCP, protoUDP, protoSCTP}
	case "ICMP", "ICMPV6":
		c.fail(c.child(path, "protocol"), "%q: write ICMP rules with icmps", pp.Protocol)
		ok = false
	default:
		c.fail(c.child(path, "protocol"), "want TCP, UDP, SCTP or ANY, got %q", pp.Protocol)
		ok = false
	}

	end := port
	if pp.EndPort != 0 {
		p := c.child(path, "endPort")
		switch e := int(pp.EndPort); {
		case e < 0 || e > 65535:
			c.fail(p, "%d: want a number 0-65535", e)
			ok = false
		case !ok:
		case port == 0:
			c.fail(p, "a port range cannot start at port 0 (port 0 is every port)")
			ok = false
		case e < port:
			c.fail(p, "%d is below port %d", e, port)
			ok = false
		case e-port+1 > MaxPortRange:
			c.fail(p, "range %d-%d spans %d ports, at most %d are supported: use port \"0\" for every port", port, e, e-port+1, MaxPortRange)
			ok = false
		default:
			end = e
		}
	}
	if !ok {
		return
	}
	if c.fix {
		pp.Port = strconv.Itoa(port)
		pp.Protocol = proto
	}
	if proto == ProtoAny && port == 0 {
		*out = append(*out, l4{})
		return
	}
	for _, pr := range protos {
		for n := port; n <= end; n++ {
			*out = append(*out, l4{proto: pr, port: uint16(n)})
		}
	}
}

// icmp checks an ICMP field and appends its key.
func (c *compiler) icmp(f *ICMPField, path string, out *[]l4) {
	family, proto := "", uint8(0)
	switch strings.ToLower(f.Family) {
	case "", "ipv4":
		family, proto = FamilyIPv4, protoICMP
	case "ipv6":
		family, proto = FamilyIPv6, protoICMPv6
	default:
		c.fail(c.child(path, "family"), "want IPv4 or IPv6, got %q", f.Family)
		return
	}
	t, ok := icmpTypeNumber(family, string(f.Type))
	if !ok {
		c.fail(c.child(path, "type"), "%q: want a number 0-255 or an %s message type name such as \"EchoRequest\"", f.Type, family)
		return
	}
	if c.fix {
		f.Family = family
		if isDecimal(string(f.Type)) {
			f.Type = ICMPType(strconv.Itoa(int(t)))
		}
	}
	*out = append(*out, l4{proto: proto, port: ICMPPort(t)})
}
