package policy

import "github.com/membrane-net/membrane/labels"

// The fast path of a large import. A valid rule in the shape imports use
// is decoded straight from its JSON into a Rule, without the tree of
// nodes that (*jsonParser).value builds and (*decoder).rule walks: that
// tree was most of what reading 10,000 rules cost, in time and in memory
// to collect. The fast path decodes exactly as the two steps do, and gives
// up (returns false) at anything it does not take the same way: any
// problem at all, and what valid rules rarely hold (null, numbers,
// booleans, enableDefaultDeny, icmps). The caller then reads the rule
// the usual way, which also says what is wrong. FuzzParse and
// TestFastRuleDecodesAsTheTree hold the two to the same result.

// fastRule decodes the rule object at p.pos into r, which must be zero.
// On false, r and p.pos are garbage.
func (p *jsonParser) fastRule(r *Rule) bool {
	var seen fieldSet
	haveSelector := false
	ok := p.fastObject(func(key string) bool {
		switch key {
		case "labels":
			return seen.add(0) && p.fastArray(func() bool {
				var l Label
				if !p.fastLabel(&l) {
					return false
				}
				r.Labels = append(r.Labels, l)
				return true
			})
		case "endpointSelector":
			haveSelector = true
			return seen.add(1) && p.fastSelector(&r.EndpointSelector)
		case "ingress":
			return seen.add(2) && p.fastArray(func() bool {
				s, ok := p.fastSection(fromPeers)
				r.Ingress = append(r.Ingress, IngressRule{FromEndpoints: s.endpoints, FromEntities: s.entities, FromCIDR: s.cidr, FromCIDRSet: s.cidrSet, ToPorts: portRules[PortRule](s.ports)})
				return ok
			})
		case "ingressDeny":
			return seen.add(3) && p.fastArray(func() bool {
				s, ok := p.fastSection(fromPeers)
				r.IngressDeny = append(r.IngressDeny, IngressDenyRule{FromEndpoints: s.endpoints, FromEntities: s.entities, FromCIDR: s.cidr, FromCIDRSet: s.cidrSet, ToPorts: portRules[PortDenyRule](s.ports)})
				return ok
			})
		case "egress":
			return seen.add(4) && p.fastArray(func() bool {
				s, ok := p.fastSection(toPeers)
				r.Egress = append(r.Egress, EgressRule{ToEndpoints: s.endpoints, ToEntities: s.entities, ToCIDR: s.cidr, ToCIDRSet: s.cidrSet, ToPorts: portRules[PortRule](s.ports)})
				return ok
			})
		case "egressDeny":
			return seen.add(5) && p.fastArray(func() bool {
				s, ok := p.fastSection(toPeers)
				r.EgressDeny = append(r.EgressDeny, EgressDenyRule{ToEndpoints: s.endpoints, ToEntities: s.entities, ToCIDR: s.cidr, ToCIDRSet: s.cidrSet, ToPorts: portRules[PortDenyRule](s.ports)})
				return ok
			})
		case "description":
			var ok bool
			r.Description, ok = p.fastString()
			return seen.add(6) && ok
		}
		return false // enableDefaultDeny, or a problem
	})
	return ok && haveSelector
}

// portRules turns a section's toPorts entries into the rule's type, as
// (*decoder).ingress and the others do.
func portRules[T PortRule | PortDenyRule](ports [][]PortProtocol) []T {
	var out []T
	for _, p := range ports {
		out = append(out, T{Ports: p})
	}
	return out
}

// fieldSet tells which fields of an object were seen: the tree refuses
// duplicate keys.
type fieldSet uint16

func (s *fieldSet) add(bit uint) bool {
	if *s&(1<<bit) != 0 {
		return false
	}
	*s |= 1 << bit
	return true
}

func (p *jsonParser) fastLabel(l *Label) bool {
	var seen fieldSet
	return p.fastObject(func(key string) bool {
		var ok bool
		switch key {
		case "key":
			l.Key, ok = p.fastString()
			return seen.add(0) && ok
		case "value":
			l.Value, ok = p.fastString() // numbers and booleans: the tree's way
			return seen.add(1) && ok
		case "source":
			l.Source, ok = p.fastString()
			return seen.add(2) && ok
		}
		return false
	})
}

// fastSelector decodes a selector. Rules share a few selectors: one the
// parser has decoded already, written the same, it gives again, sharing
// its map (Parse's rules are not to be changed), rather than decoding it
// again: the selectors were half of what decoding cost.
func (p *jsonParser) fastSelector(s *labels.Selector) bool {
	p.skipSpace()
	start := p.pos
	end, ok := objectEnd(p.data, start)
	if !ok {
		return false
	}
	raw := p.data[start:end]
	if sel, ok := p.selectors[string(raw)]; ok {
		*s = sel
		p.pos = end
		return true
	}
	if !p.decodeSelector(s) || p.pos != end {
		return false
	}
	if len(p.selectors) < maxSharedSelectors && len(raw) <= maxSharedSelectorBytes {
		if p.selectors == nil {
			p.selectors = make(map[string]labels.Selector)
			p.known = make(map[uintptr]string)
		}
		p.selectors[string(raw)] = *s
		if id, ok := sharedMap(*s); ok {
			p.known[id] = "" // not checked yet
		}
	}
	return true
}

// A parser shares up to maxSharedSelectors selectors of up to
// maxSharedSelectorBytes of text each.
const (
	maxSharedSelectors     = 64
	maxSharedSelectorBytes = 1024
)

// objectEnd returns where the JSON object starting at data[i] ends (just
// after its closing brace), scanning only strings and brackets; false when
// there is no object there, or no end. The object's syntax is left to the
// decoder.
func objectEnd(data []byte, i int) (int, bool) {
	if i >= len(data) || data[i] != '{' {
		return 0, false
	}
	depth := 0
	for ; i < len(data); i++ {
		switch data[i] {
		case '"':
			for i++; i < len(data) && data[i] != '"'; i++ {
				if data[i] == '\\' {
					i++
				}
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth--; depth == 0 {
				return i + 1, true
			}
		}
	}
	return 0, false
}

// decodeSelector is (*decoder).selector.
func (p *jsonParser) decodeSelector(s *labels.Selector) bool {
	var seen fieldSet
	return p.fastObject(func(key string) bool {
		switch key {
		case "matchLabels":
			return seen.add(0) && p.fastObject(func(k string) bool {
				if s.MatchLabels == nil {
					s.MatchLabels = make(map[string]string, 2)
				} else if _, dup := s.MatchLabels[k]; dup {
					return false
				}
				v, ok := p.fastString()
				s.MatchLabels[k] = v
				return ok
			})
		case "matchExpressions":
			return seen.add(1) && p.fastArray(func() bool {
				var r labels.Requirement
				if !p.fastRequirement(&r) {
					return false
				}
				s.MatchExpressions = append(s.MatchExpressions, r)
				return true
			})
		}
		return false
	})
}

func (p *jsonParser) fastRequirement(r *labels.Requirement) bool {
	var seen fieldSet
	return p.fastObject(func(key string) bool {
		var ok bool
		switch key {
		case "key":
			r.Key, ok = p.fastString()
			return seen.add(0) && ok
		case "operator":
			r.Operator, ok = p.fastString()
			return seen.add(1) && ok
		case "values":
			return seen.add(2) && p.fastArray(func() bool {
				v, ok := p.fastString()
				r.Values = append(r.Values, v)
				return ok
			})
		}
		return false
	})
}

// fastSection is (*decoder).section.
func (p *jsonParser) fastSection(names peerNames) (section, bool) {
	var s section
	var seen fieldSet
	ok := p.fastObject(func(key string) bool {
		switch key {
		case names.endpoints:
			s.endpoints = []labels.Selector{}
			return seen.add(0) && p.fastArray(func() bool {
				var sel labels.Selector
				if !p.fastSelector(&sel) {
					return false
				}
				s.endpoints = append(s.endpoints, sel)
				return true
			})
		case names.entities:
			ss, ok := p.fastPeerStrings()
			if !ok {
				return false
			}
			s.entities = make([]Entity, len(ss))
			for i, e := range ss {
				s.entities[i] = Entity(e)
			}
			return seen.add(1)
		case names.cidr:
			var ok bool
			s.cidr, ok = p.fastPeerStrings()
			return seen.add(2) && ok
		case names.cidrSet:
			s.cidrSet = []CIDRRule{}
			return seen.add(3) && p.fastArray(func() bool {
				var c CIDRRule
				if !p.fastCIDRRule(&c) {
					return false
				}
				s.cidrSet = append(s.cidrSet, c)
				return true
			})
		case "toPorts":
			return seen.add(4) && p.fastArray(func() bool {
				ports, ok := p.fastPortRule()
				s.ports = append(s.ports, ports)
				return ok
			})
		}
		return false // icmps, or a problem
	})
	return s, ok
}

func (p *jsonParser) fastCIDRRule(c *CIDRRule) bool {
	var seen fieldSet
	haveCIDR := false
	return p.fastObject(func(key string) bool {
		switch key {
		case "cidr":
			var ok bool
			haveCIDR = true
			c.Cidr, ok = p.fastString()
			return seen.add(0) && ok
		case "except":
			return seen.add(1) && p.fastArray(func() bool {
				e, ok := p.fastString()
				c.Except = append(c.Except, e)
				return ok
			})
		}
		return false
	}) && haveCIDR
}

// fastPortRule is (*decoder).portRule.
func (p *jsonParser) fastPortRule() ([]PortProtocol, bool) {
	var ports []PortProtocol
	var seen fieldSet
	ok := p.fastObject(func(key string) bool {
		if key != "ports" || !seen.add(0) {
			return false
		}
		ports = []PortProtocol{}
		return p.fastArray(func() bool {
			var pp PortProtocol
			var seen fieldSet
			if !p.fastObject(func(key string) bool {
				var ok bool
				switch key {
				case "port":
					pp.Port, ok = p.fastString() // a number: the tree's way
					return seen.add(0) && ok
				case "protocol":
					var proto string
					proto, ok = p.fastString()
					pp.Protocol = Protocol(proto)
					return seen.add(1) && ok
				}
				return false // endPort (a number), or a problem
			}) || seen&1 == 0 {
				return false
			}
			ports = append(ports, pp)
			return true
		})
	})
	return ports, ok
}

// fastPeerStrings is (*decoder).peerStrings: an empty list stays non-nil.
func (p *jsonParser) fastPeerStrings() ([]string, bool) {
	out := []string{}
	ok := p.fastArray(func() bool {
		s, ok := p.fastString()
		out = append(out, s)
		return ok
	})
	return out, ok
}

// fastObject reads an object, calling member with p.pos at the value of
// each member; member reads the value.
func (p *jsonParser) fastObject(member func(key string) bool) bool {
	if !p.fastByte('{') {
		return false
	}
	if p.fastByte('}') {
		return true
	}
	for {
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != '"' {
			return false
		}
		key, err := p.string()
		if err != nil || !p.fastByte(':') {
			return false
		}
		p.skipSpace()
		if !member(key) {
			return false
		}
		if p.fastByte(',') {
			continue
		}
		return p.fastByte('}')
	}
}

// fastArray reads an array, calling item with p.pos at each element; item
// reads the element.
func (p *jsonParser) fastArray(item func() bool) bool {
	if !p.fastByte('[') {
		return false
	}
	if p.fastByte(']') {
		return true
	}
	for {
		p.skipSpace()
		if !item() {
			return false
		}
		if p.fastByte(',') {
			continue
		}
		return p.fastByte(']')
	}
}

// fastString reads a string; anything else is false.
func (p *jsonParser) fastString() (string, bool) {
	p.skipSpace()
	if p.pos >= len(p.data) || p.data[p.pos] != '"' {
		return "", false
	}
	s, err := p.string()
	return s, err == nil
}

// fastByte consumes c, after space, if it is next.
func (p *jsonParser) fastByte(c byte) bool {
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == c {
		p.pos++
		return true
	}
	return false
}
