package policy

import (
	"slices"
	"strconv"
	"strings"

	"github.com/membrane-net/membrane/labels"
)

// decoder turns a tree into rules, collecting one *FieldError per problem.
// It checks shapes (objects, arrays, strings, known fields); values are
// checked by compileRule. A null top-level field of a rule is the same as
// an absent one (as Kubernetes reads it); anywhere deeper null is an
// error, because there an absent field often means more than an empty
// one (no peer list is every peer, no matchLabels value is no condition).
// Lists whose emptiness means nothing become nil; peer lists keep the
// difference between absent (nil) and empty (selects nothing).
type decoder struct {
	paths bool // build paths; without, every path is "" (see Parse)
	errs  []error
}

func (d *decoder) child(path, key string) string {
	if !d.paths {
		return ""
	}
	return childPath(path, key)
}

func (d *decoder) index(path string, i int) string {
	if !d.paths {
		return ""
	}
	return indexPath(path, i)
}

func (d *decoder) fail(path, msg string) {
	d.errs = append(d.errs, &FieldError{Path: path, Msg: msg})
}

func (d *decoder) want(path, what string, n *node) {
	d.fail(path, "want "+what+", got "+n.kind.String())
}

// object calls field for every non-null member of an object node.
func (d *decoder) object(n *node, path string, field func(key string, val *node, path string)) bool {
	if n.kind != kindObject {
		d.want(path, "an object", n)
		return false
	}
	for _, m := range n.members {
		field(m.key, m.val, d.child(path, m.key))
	}
	return true
}

// array calls item for every element of an array node and reports
// whether n is an array.
func (d *decoder) array(n *node, path string, item func(i int, val *node, path string)) bool {
	if n.kind != kindArray {
		d.want(path, "an array", n)
		return false
	}
	for i, v := range n.items {
		item(i, v, d.index(path, i))
	}
	return true
}

func (d *decoder) str(n *node, path string) string {
	if n.kind != kindString {
		d.want(path, "a string", n)
		return ""
	}
	return n.text
}

// scalarText accepts a string, a number or a boolean and returns its text:
// label values written without quotes in YAML (version: 2) mean the text.
func (d *decoder) scalarText(n *node, path string) string {
	switch n.kind {
	case kindString, kindNumber, kindBool:
		return n.text
	}
	d.want(path, "a string", n)
	return ""
}

func (d *decoder) strings(n *node, path string) []string {
	var out []string
	if !d.array(n, path, func(_ int, v *node, p string) { out = append(out, d.str(v, p)) }) {
		return nil
	}
	return out
}

// peerStrings is strings for a peer list: present and empty stays non-nil.
func (d *decoder) peerStrings(n *node, path string) []string {
	out := d.strings(n, path)
	if out == nil && n.kind == kindArray {
		out = []string{}
	}
	return out
}

func (d *decoder) entities(n *node, path string) []Entity {
	ss := d.peerStrings(n, path)
	if ss == nil {
		return nil
	}
	out := make([]Entity, len(ss))
	for i, s := range ss {
		out[i] = Entity(s)
	}
	return out
}

// Fields membrane knows from Cilium but does not implement: naming them
// gets a clearer message than "unknown field".
var (
	unsupportedRuleFields = map[string]string{
		"nodeSelector": "node selectors are not supported: membrane rules select endpoints (endpointSelector)",
		"log":          "policy logging is not supported yet",
		"apiVersion":   kubernetesObject,
		"kind":         kubernetesObject,
		"metadata":     kubernetesObject,
		"spec":         kubernetesObject,
		"specs":        kubernetesObject,
	}
	unsupportedPeerFields = map[string]string{
		"fromRequires":   "fromRequires is not supported (Cilium deprecated it)",
		"toRequires":     "toRequires is not supported (Cilium deprecated it)",
		"fromNodes":      "node selectors are not supported: use the host entity",
		"toNodes":        "node selectors are not supported: use the host entity",
		"fromGroups":     "cloud provider groups are not supported",
		"toGroups":       "cloud provider groups are not supported",
		"toServices":     "service selectors are not supported",
		"toFQDNs":        "DNS-based rules (toFQDNs) are not supported yet",
		"authentication": "mutual authentication is not supported",
	}
	unsupportedPortRuleFields = map[string]string{
		"rules":          "L7 rules are not supported yet",
		"terminatingTLS": "TLS interception is not supported",
		"originatingTLS": "TLS interception is not supported",
		"serverNames":    "TLS server names are not supported",
		"listener":       "Envoy listeners are not supported",
	}
	unsupportedCIDRRuleFields = map[string]string{
		"cidrGroupRef":      "CIDR groups are not supported",
		"cidrGroupSelector": "CIDR groups are not supported",
	}
)

const kubernetesObject = "looks like a Kubernetes object (CiliumNetworkPolicy): give its rules (the spec) instead"

// unknown reports a member no field of the object has.
func (d *decoder) unknown(path, key string, unsupported map[string]string, known ...string) {
	if msg, ok := unsupported[key]; ok {
		d.fail(path, msg)
		return
	}
	msg := "unknown field"
	if s := suggest(key, known); s != "" {
		msg += " (did you mean " + `"` + s + `"?)`
	}
	d.fail(path, msg)
}

// suggest returns the known field closest to key, if it is close.
func suggest(key string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if strings.EqualFold(k, key) {
			return k
		}
		if dist := editDistance(strings.ToLower(key), strings.ToLower(k)); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// document decodes the top level: an array of rules, or one rule object.
func (d *decoder) document(n *node) []Rule {
	switch n.kind {
	case kindArray:
		rules := make([]Rule, 0, len(n.items))
		d.array(n, "", func(_ int, v *node, p string) { rules = append(rules, d.rule(v, p)) })
		return rules
	case kindObject:
		return []Rule{d.rule(n, "")}
	}
	d.want("", "an array of rules or a rule object", n)
	return nil
}

var ruleFields = []string{"labels", "endpointSelector", "ingress", "ingressDeny", "egress", "egressDeny", "enableDefaultDeny", "description"}

func (d *decoder) rule(n *node, path string) Rule {
	var r Rule
	haveSelector, kubernetes := false, false
	ok := d.object(n, path, func(key string, v *node, p string) {
		if v.kind == kindNull && slices.Contains(ruleFields, key) {
			return // absent
		}
		switch key {
		case "labels":
			d.array(v, p, func(_ int, v *node, p string) { r.Labels = append(r.Labels, d.label(v, p)) })
		case "endpointSelector":
			haveSelector = true
			r.EndpointSelector = d.selector(v, p)
		case "ingress":
			d.array(v, p, func(_ int, v *node, p string) { r.Ingress = append(r.Ingress, d.ingress(v, p)) })
		case "ingressDeny":
			d.array(v, p, func(_ int, v *node, p string) { r.IngressDeny = append(r.IngressDeny, d.ingressDeny(v, p)) })
		case "egress":
			d.array(v, p, func(_ int, v *node, p string) { r.Egress = append(r.Egress, d.egress(v, p)) })
		case "egressDeny":
			d.array(v, p, func(_ int, v *node, p string) { r.EgressDeny = append(r.EgressDeny, d.egressDeny(v, p)) })
		case "enableDefaultDeny":
			r.EnableDefaultDeny = d.defaultDeny(v, p)
		case "description":
			r.Description = d.str(v, p)
		default:
			kubernetes = kubernetes || unsupportedRuleFields[key] == kubernetesObject
			d.unknown(p, key, unsupportedRuleFields, ruleFields...)
		}
	})
	if ok && !haveSelector && !kubernetes {
		d.fail(d.child(path, "endpointSelector"), "required: use {} to select every endpoint")
	}
	return r
}

func (d *decoder) label(n *node, path string) Label {
	var l Label
	d.object(n, path, func(key string, v *node, p string) {
		switch key {
		case "key":
			l.Key = d.str(v, p)
		case "value":
			l.Value = d.scalarText(v, p)
		case "source":
			l.Source = d.str(v, p)
		default:
			d.unknown(p, key, nil, "key", "value", "source")
		}
	})
	return l
}

func (d *decoder) defaultDeny(n *node, path string) *DefaultDeny {
	var dd DefaultDeny
	d.object(n, path, func(key string, v *node, p string) {
		var field **bool
		switch key {
		case "ingress":
			field = &dd.Ingress
		case "egress":
			field = &dd.Egress
		default:
			d.unknown(p, key, nil, "ingress", "egress")
			return
		}
		if v.kind != kindBool {
			d.want(p, "true or false", v)
			return
		}
		b := v.text == "true"
		*field = &b
	})
	if dd.Ingress == nil && dd.Egress == nil {
		return nil
	}
	return &dd
}

func (d *decoder) selector(n *node, path string) labels.Selector {
	var s labels.Selector
	d.object(n, path, func(key string, v *node, p string) {
		switch key {
		case "matchLabels":
			if v.kind != kindObject {
				d.want(p, "an object", v)
				return
			}
			for _, m := range v.members {
				if s.MatchLabels == nil {
					s.MatchLabels = make(map[string]string, len(v.members))
				}
				mp := ""
				if d.paths {
					mp = p + "[" + strconv.Quote(m.key) + "]" // as labels.Selector.Validate writes it
				}
				s.MatchLabels[m.key] = d.scalarText(m.val, mp)
			}
		case "matchExpressions":
			d.array(v, p, func(_ int, v *node, p string) {
				s.MatchExpressions = append(s.MatchExpressions, d.requirement(v, p))
			})
		default:
			d.unknown(p, key, nil, "matchLabels", "matchExpressions")
		}
	})
	return s
}

func (d *decoder) requirement(n *node, path string) labels.Requirement {
	var r labels.Requirement
	d.object(n, path, func(key string, v *node, p string) {
		switch key {
		case "key":
			r.Key = d.str(v, p)
		case "operator":
			r.Operator = d.str(v, p)
		case "values":
			d.array(v, p, func(_ int, v *node, p string) { r.Values = append(r.Values, d.scalarText(v, p)) })
		default:
			d.unknown(p, key, nil, "key", "operator", "values")
		}
	})
	return r
}

func (d *decoder) selectors(n *node, path string) []labels.Selector {
	out := []labels.Selector{}
	if !d.array(n, path, func(_ int, v *node, p string) { out = append(out, d.selector(v, p)) }) {
		return nil
	}
	return out
}

func (d *decoder) cidrSet(n *node, path string) []CIDRRule {
	out := []CIDRRule{}
	ok := d.array(n, path, func(_ int, v *node, p string) {
		var c CIDRRule
		haveCIDR := false
		if d.object(v, p, func(key string, v *node, p string) {
			switch key {
			case "cidr":
				haveCIDR = true
				c.Cidr = d.str(v, p)
			case "except":
				c.Except = d.strings(v, p)
			default:
				d.unknown(p, key, unsupportedCIDRRuleFields, "cidr", "except")
			}
		}) && !haveCIDR {
			d.fail(d.child(p, "cidr"), "required")
		}
		out = append(out, c)
	})
	if !ok {
		return nil
	}
	return out
}

func (d *decoder) ports(n *node, path string) []PortProtocol {
	var out []PortProtocol
	d.array(n, path, func(_ int, v *node, p string) {
		var pp PortProtocol
		havePort := false
		if d.object(v, p, func(key string, v *node, p string) {
			switch key {
			case "port":
				havePort = true
				switch v.kind {
				case kindString, kindNumber:
					pp.Port = v.text
				default:
					d.want(p, "a port number", v)
				}
			case "endPort":
				if v.kind != kindNumber || !isDecimal(v.text) || len(v.text) > 5 {
					got := v.kind.String()
					if v.kind == kindNumber || v.kind == kindString {
						got = strconv.Quote(v.text)
					}
					d.fail(p, got+": want a number 0-65535")
					return
				}
				pp.EndPort = int32(atoi(v.text))
			case "protocol":
				pp.Protocol = Protocol(d.str(v, p))
			default:
				d.unknown(p, key, nil, "port", "endPort", "protocol")
			}
		}) && !havePort {
			d.fail(d.child(p, "port"), "required: use \"0\" for every port")
		}
		out = append(out, pp)
	})
	return out
}

// portRule decodes a toPorts entry; deny sections have the same fields.
func (d *decoder) portRule(n *node, path string) []PortProtocol {
	var ports []PortProtocol
	d.object(n, path, func(key string, v *node, p string) {
		switch key {
		case "ports":
			ports = d.ports(v, p)
			if ports == nil {
				ports = []PortProtocol{}
			}
		default:
			d.unknown(p, key, unsupportedPortRuleFields, "ports")
		}
	})
	return ports
}

func (d *decoder) icmps(n *node, path string) []ICMPRule {
	var out []ICMPRule
	d.array(n, path, func(_ int, v *node, p string) {
		var r ICMPRule
		d.object(v, p, func(key string, v *node, p string) {
			switch key {
			case "fields":
				d.array(v, p, func(_ int, v *node, p string) { r.Fields = append(r.Fields, d.icmpField(v, p)) })
				if r.Fields == nil {
					r.Fields = []ICMPField{}
				}
			default:
				d.unknown(p, key, nil, "fields")
			}
		})
		out = append(out, r)
	})
	return out
}

func (d *decoder) icmpField(n *node, path string) ICMPField {
	var f ICMPField
	haveType := false
	if d.object(n, path, func(key string, v *node, p string) {
		switch key {
		case "family":
			f.Family = d.str(v, p)
		case "type":
			haveType = true
			switch v.kind {
			case kindString, kindNumber:
				f.Type = ICMPType(v.text)
			default:
				d.want(p, "an ICMP type number or name", v)
			}
		default:
			d.unknown(p, key, nil, "family", "type")
		}
	}) && !haveType {
		d.fail(d.child(path, "type"), "required")
	}
	return f
}

// section is the part common to the four section types, decoded once.
type section struct {
	endpoints []labels.Selector
	entities  []Entity
	cidr      []string
	cidrSet   []CIDRRule
	ports     [][]PortProtocol // one per toPorts entry
	icmps     []ICMPRule
}

// peerNames are the peer field names of one direction.
type peerNames struct {
	endpoints, entities, cidr, cidrSet string
}

var (
	fromPeers = peerNames{"fromEndpoints", "fromEntities", "fromCIDR", "fromCIDRSet"}
	toPeers   = peerNames{"toEndpoints", "toEntities", "toCIDR", "toCIDRSet"}
)

func (d *decoder) section(n *node, path string, names peerNames) section {
	var s section
	known := []string{names.endpoints, names.entities, names.cidr, names.cidrSet, "toPorts", "icmps"}
	d.object(n, path, func(key string, v *node, p string) {
		switch key {
		case names.endpoints:
			s.endpoints = d.selectors(v, p)
		case names.entities:
			s.entities = d.entities(v, p)
		case names.cidr:
			s.cidr = d.peerStrings(v, p)
		case names.cidrSet:
			s.cidrSet = d.cidrSet(v, p)
		case "toPorts":
			d.array(v, p, func(_ int, v *node, p string) { s.ports = append(s.ports, d.portRule(v, p)) })
		case "icmps":
			s.icmps = d.icmps(v, p)
		default:
			d.unknown(p, key, unsupportedPeerFields, known...)
		}
	})
	return s
}

func (d *decoder) ingress(n *node, path string) IngressRule {
	s := d.section(n, path, fromPeers)
	r := IngressRule{FromEndpoints: s.endpoints, FromEntities: s.entities, FromCIDR: s.cidr, FromCIDRSet: s.cidrSet, ICMPs: s.icmps}
	for _, p := range s.ports {
		r.ToPorts = append(r.ToPorts, PortRule{Ports: p})
	}
	return r
}

func (d *decoder) ingressDeny(n *node, path string) IngressDenyRule {
	s := d.section(n, path, fromPeers)
	r := IngressDenyRule{FromEndpoints: s.endpoints, FromEntities: s.entities, FromCIDR: s.cidr, FromCIDRSet: s.cidrSet, ICMPs: s.icmps}
	for _, p := range s.ports {
		r.ToPorts = append(r.ToPorts, PortDenyRule{Ports: p})
	}
	return r
}

func (d *decoder) egress(n *node, path string) EgressRule {
	s := d.section(n, path, toPeers)
	r := EgressRule{ToEndpoints: s.endpoints, ToEntities: s.entities, ToCIDR: s.cidr, ToCIDRSet: s.cidrSet, ICMPs: s.icmps}
	for _, p := range s.ports {
		r.ToPorts = append(r.ToPorts, PortRule{Ports: p})
	}
	return r
}

func (d *decoder) egressDeny(n *node, path string) EgressDenyRule {
	s := d.section(n, path, toPeers)
	r := EgressDenyRule{ToEndpoints: s.endpoints, ToEntities: s.entities, ToCIDR: s.cidr, ToCIDRSet: s.cidrSet, ICMPs: s.icmps}
	for _, p := range s.ports {
		r.ToPorts = append(r.ToPorts, PortDenyRule{Ports: p})
	}
	return r
}

func isDecimal(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// atoi parses a decimal string of at most 9 digits.
func atoi(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		n = n*10 + int(s[i]-'0')
	}
	return n
}
