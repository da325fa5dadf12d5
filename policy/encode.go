package policy

import (
	"encoding/json"
	"slices"
	"strconv"

	"github.com/membrane-net/membrane/labels"
)

// Encode returns the canonical JSON of a rule that Parse returned: the
// bytes Canonical gives for it, without checking and normalizing it again
// (Parse did), and without reflection. Importing many rules spends most of
// its time here otherwise. The output is byte for byte what encoding/json
// writes for the rule (tests hold it to that), so stored rules and the
// names derived from them do not depend on which of the two wrote them.
func Encode(r *Rule) []byte {
	b := make([]byte, 0, 512)
	return appendRule(b, r)
}

func appendRule(b []byte, r *Rule) []byte {
	b = append(b, '{')
	first := true
	if len(r.Labels) > 0 {
		b = appendKey(b, &first, "labels")
		b = appendList(b, r.Labels, appendLabel)
	}
	b = appendKey(b, &first, "endpointSelector")
	b = appendSelector(b, &r.EndpointSelector)
	if len(r.Ingress) > 0 {
		b = appendKey(b, &first, "ingress")
		b = appendList(b, r.Ingress, func(b []byte, s *IngressRule) []byte {
			return appendSection(b, fromPeers, sectionView{s.FromEndpoints, s.FromEntities, s.FromCIDR, s.FromCIDRSet, portLists(s.ToPorts), s.ICMPs})
		})
	}
	if len(r.IngressDeny) > 0 {
		b = appendKey(b, &first, "ingressDeny")
		b = appendList(b, r.IngressDeny, func(b []byte, s *IngressDenyRule) []byte {
			return appendSection(b, fromPeers, sectionView{s.FromEndpoints, s.FromEntities, s.FromCIDR, s.FromCIDRSet, denyPortLists(s.ToPorts), s.ICMPs})
		})
	}
	if len(r.Egress) > 0 {
		b = appendKey(b, &first, "egress")
		b = appendList(b, r.Egress, func(b []byte, s *EgressRule) []byte {
			return appendSection(b, toPeers, sectionView{s.ToEndpoints, s.ToEntities, s.ToCIDR, s.ToCIDRSet, portLists(s.ToPorts), s.ICMPs})
		})
	}
	if len(r.EgressDeny) > 0 {
		b = appendKey(b, &first, "egressDeny")
		b = appendList(b, r.EgressDeny, func(b []byte, s *EgressDenyRule) []byte {
			return appendSection(b, toPeers, sectionView{s.ToEndpoints, s.ToEntities, s.ToCIDR, s.ToCIDRSet, denyPortLists(s.ToPorts), s.ICMPs})
		})
	}
	if dd := r.EnableDefaultDeny; dd != nil {
		b = appendKey(b, &first, "enableDefaultDeny")
		b = append(b, '{')
		ddFirst := true
		if dd.Ingress != nil {
			b = appendKey(b, &ddFirst, "ingress")
			b = strconv.AppendBool(b, *dd.Ingress)
		}
		if dd.Egress != nil {
			b = appendKey(b, &ddFirst, "egress")
			b = strconv.AppendBool(b, *dd.Egress)
		}
		b = append(b, '}')
	}
	if r.Description != "" {
		b = appendKey(b, &first, "description")
		b = appendString(b, r.Description)
	}
	return append(b, '}')
}

func portLists(rules []PortRule) [][]PortProtocol {
	var out [][]PortProtocol
	for _, r := range rules {
		out = append(out, r.Ports)
	}
	return out
}

func denyPortLists(rules []PortDenyRule) [][]PortProtocol {
	var out [][]PortProtocol
	for _, r := range rules {
		out = append(out, r.Ports)
	}
	return out
}

// appendSection writes an ingress or egress entry; peer lists that are
// present are written even when empty (they then select nothing).
func appendSection(b []byte, names peerNames, s sectionView) []byte {
	b = append(b, '{')
	first := true
	if s.endpoints != nil {
		b = appendKey(b, &first, names.endpoints)
		b = appendList(b, s.endpoints, appendSelector)
	}
	if s.entities != nil {
		b = appendKey(b, &first, names.entities)
		b = appendList(b, s.entities, func(b []byte, e *Entity) []byte { return appendString(b, string(*e)) })
	}
	if s.cidr != nil {
		b = appendKey(b, &first, names.cidr)
		b = appendList(b, s.cidr, func(b []byte, c *string) []byte { return appendString(b, *c) })
	}
	if s.cidrSet != nil {
		b = appendKey(b, &first, names.cidrSet)
		b = appendList(b, s.cidrSet, appendCIDRRule)
	}
	if len(s.ports) > 0 {
		b = appendKey(b, &first, "toPorts")
		b = appendList(b, s.ports, func(b []byte, ports *[]PortProtocol) []byte {
			b = append(b, `{"ports":`...)
			b = appendNullableList(b, *ports, appendPort)
			return append(b, '}')
		})
	}
	if len(s.icmps) > 0 {
		b = appendKey(b, &first, "icmps")
		b = appendList(b, s.icmps, func(b []byte, r *ICMPRule) []byte {
			b = append(b, `{"fields":`...)
			b = appendNullableList(b, r.Fields, appendICMPField)
			return append(b, '}')
		})
	}
	return append(b, '}')
}

func appendLabel(b []byte, l *Label) []byte {
	b = append(b, `{"key":`...)
	b = appendString(b, l.Key)
	if l.Value != "" {
		b = append(b, `,"value":`...)
		b = appendString(b, l.Value)
	}
	if l.Source != "" {
		b = append(b, `,"source":`...)
		b = appendString(b, l.Source)
	}
	return append(b, '}')
}

func appendSelector(b []byte, s *labels.Selector) []byte {
	b = append(b, '{')
	first := true
	if len(s.MatchLabels) > 0 {
		b = appendKey(b, &first, "matchLabels")
		b = append(b, '{')
		var stack [4]string
		keys := stack[:0]
		for k := range s.MatchLabels {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendString(b, s.MatchLabels[k])
		}
		b = append(b, '}')
	}
	if len(s.MatchExpressions) > 0 {
		b = appendKey(b, &first, "matchExpressions")
		b = appendList(b, s.MatchExpressions, func(b []byte, r *labels.Requirement) []byte {
			b = append(b, `{"key":`...)
			b = appendString(b, r.Key)
			b = append(b, `,"operator":`...)
			b = appendString(b, r.Operator)
			if len(r.Values) > 0 {
				b = append(b, `,"values":`...)
				b = appendList(b, r.Values, func(b []byte, v *string) []byte { return appendString(b, *v) })
			}
			return append(b, '}')
		})
	}
	return append(b, '}')
}

func appendCIDRRule(b []byte, c *CIDRRule) []byte {
	b = append(b, `{"cidr":`...)
	b = appendString(b, c.Cidr)
	if len(c.Except) > 0 {
		b = append(b, `,"except":`...)
		b = appendList(b, c.Except, func(b []byte, e *string) []byte { return appendString(b, *e) })
	}
	return append(b, '}')
}

func appendPort(b []byte, p *PortProtocol) []byte {
	b = append(b, `{"port":`...)
	b = appendString(b, p.Port)
	if p.EndPort != 0 {
		b = append(b, `,"endPort":`...)
		b = strconv.AppendInt(b, int64(p.EndPort), 10)
	}
	if p.Protocol != "" {
		b = append(b, `,"protocol":`...)
		b = appendString(b, string(p.Protocol))
	}
	return append(b, '}')
}

func appendICMPField(b []byte, f *ICMPField) []byte {
	b = append(b, '{')
	if f.Family != "" {
		b = append(b, `"family":`...)
		b = appendString(b, f.Family)
		b = append(b, ',')
	}
	b = append(b, `"type":`...)
	t, _ := f.Type.MarshalJSON() // a number or a quoted string; never fails
	b = append(b, t...)
	return append(b, '}')
}

// appendKey writes a field name, after a comma unless it is the first.
func appendKey(b []byte, first *bool, key string) []byte {
	if !*first {
		b = append(b, ',')
	}
	*first = false
	b = append(b, '"')
	b = append(b, key...)
	return append(b, '"', ':')
}

// appendList writes a JSON array (nil writes [] too: callers write nil
// lists only where encoding/json would write [] or omit them).
func appendList[T any](b []byte, list []T, fn func([]byte, *T) []byte) []byte {
	b = append(b, '[')
	for i := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b = fn(b, &list[i])
	}
	return append(b, ']')
}

// appendNullableList writes a list that encoding/json writes as null when
// nil.
func appendNullableList[T any](b []byte, list []T, fn func([]byte, *T) []byte) []byte {
	if list == nil {
		return append(b, "null"...)
	}
	return appendList(b, list, fn)
}

// appendString writes s as encoding/json does: strings of plain printable
// ASCII as they are, anything else through encoding/json itself (HTML
// characters, control characters, invalid UTF-8 and U+2028 have escapes of
// their own).
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
