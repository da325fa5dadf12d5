package policy

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/membrane-net/membrane/labels"
)

// Rule is one policy rule, in Cilium's JSON form. The zero value of every
// optional field means "absent". Rules that come out of Parse are valid
// and normalized (see Parse); read rules with Parse, not encoding/json,
// which would skip the checks. Canonical writes them.
type Rule struct {
	// Labels name and describe the rule; the label with key "name" is
	// the rule's name (see Name).
	Labels []Label `json:"labels,omitempty"`
	// EndpointSelector selects the endpoints the rule applies to. Parse
	// requires it; the empty selector {} selects every endpoint.
	EndpointSelector labels.Selector `json:"endpointSelector"`

	Ingress     []IngressRule     `json:"ingress,omitempty"`
	IngressDeny []IngressDenyRule `json:"ingressDeny,omitempty"`
	Egress      []EgressRule      `json:"egress,omitempty"`
	EgressDeny  []EgressDenyRule  `json:"egressDeny,omitempty"`

	// EnableDefaultDeny overrides, per direction, whether this rule puts
	// the endpoints it selects into default deny. Nil (or a nil field)
	// keeps the default: a rule with an ingress or ingressDeny section
	// enables default deny at ingress, and likewise at egress.
	EnableDefaultDeny *DefaultDeny `json:"enableDefaultDeny,omitempty"`

	Description string `json:"description,omitempty"`
}

// Label is a rule label.
type Label struct {
	Key    string `json:"key"`
	Value  string `json:"value,omitempty"`
	Source string `json:"source,omitempty"`
}

// DefaultDeny is a rule's per-direction default-deny override.
type DefaultDeny struct {
	Ingress *bool `json:"ingress,omitempty"`
	Egress  *bool `json:"egress,omitempty"`
}

// Entity names a class of peers that has no labels of its own.
type Entity string

// Supported entities.
const (
	EntityAll   Entity = "all"   // every peer: endpoints, host, world, init
	EntityHost  Entity = "host"  // the host (identity 1)
	EntityWorld Entity = "world" // everything outside membrane and the host: identity 2 and every CIDR identity
	EntityInit  Entity = "init"  // endpoints whose labels are not known yet (identity 5)
)

// Protocol is a toPorts protocol.
type Protocol string

// Supported protocols. ANY is TCP, UDP and SCTP for a port other than 0,
// and every IP protocol for port 0.
const (
	ProtoTCP  Protocol = "TCP"
	ProtoUDP  Protocol = "UDP"
	ProtoSCTP Protocol = "SCTP"
	ProtoAny  Protocol = "ANY"
)

// ICMP families.
const (
	FamilyIPv4 = "IPv4"
	FamilyIPv6 = "IPv6"
)

// IngressRule allows traffic from its peers to the rule's endpoints. A
// peer list that is present selects the peers it names (an empty list
// selects none); a rule with no peer list at all selects every peer. Only
// one kind of peer list may be present. ToPorts and ICMPs narrow the
// traffic; with neither, every protocol and port is allowed. ToPorts and
// ICMPs cannot both be present.
type IngressRule struct {
	FromEndpoints []labels.Selector
	FromEntities  []Entity
	FromCIDR      []string
	FromCIDRSet   []CIDRRule
	ToPorts       []PortRule
	ICMPs         []ICMPRule
}

// IngressDenyRule denies traffic from its peers to the rule's endpoints;
// peers and ports work as in IngressRule.
type IngressDenyRule struct {
	FromEndpoints []labels.Selector
	FromEntities  []Entity
	FromCIDR      []string
	FromCIDRSet   []CIDRRule
	ToPorts       []PortDenyRule
	ICMPs         []ICMPRule
}

// EgressRule allows traffic from the rule's endpoints to its peers; see
// IngressRule.
type EgressRule struct {
	ToEndpoints []labels.Selector
	ToEntities  []Entity
	ToCIDR      []string
	ToCIDRSet   []CIDRRule
	ToPorts     []PortRule
	ICMPs       []ICMPRule
}

// EgressDenyRule denies traffic from the rule's endpoints to its peers;
// see IngressRule.
type EgressDenyRule struct {
	ToEndpoints []labels.Selector
	ToEntities  []Entity
	ToCIDR      []string
	ToCIDRSet   []CIDRRule
	ToPorts     []PortDenyRule
	ICMPs       []ICMPRule
}

// CIDRRule selects the addresses in Cidr that are in none of Except.
type CIDRRule struct {
	Cidr   string   `json:"cidr"`
	Except []string `json:"except,omitempty"`
}

// PortRule is a toPorts entry of an allow section.
type PortRule struct {
	Ports []PortProtocol `json:"ports"`
}

// PortDenyRule is a toPorts entry of a deny section.
type PortDenyRule struct {
	Ports []PortProtocol `json:"ports"`
}

// PortProtocol is a destination port, or the range Port..EndPort, of a
// protocol. Port "0" is every port of the protocol.
type PortProtocol struct {
	Port     string   `json:"port"`
	EndPort  int32    `json:"endPort,omitempty"`
	Protocol Protocol `json:"protocol,omitempty"`
}

// ICMPRule is an icmps entry.
type ICMPRule struct {
	Fields []ICMPField `json:"fields"`
}

// ICMPField is one ICMP or ICMPv6 message type.
type ICMPField struct {
	Family string   `json:"family,omitempty"` // IPv4 (the default) or IPv6
	Type   ICMPType `json:"type"`
}

// ICMPType is an ICMP message type: a number 0-255 or its name as Cilium
// spells it ("EchoRequest"), which depends on the family.
type ICMPType string

// MarshalJSON writes a numeric type as a JSON number, a name as a string.
func (t ICMPType) MarshalJSON() ([]byte, error) {
	if n, err := strconv.ParseUint(string(t), 10, 8); err == nil && strconv.FormatUint(n, 10) == string(t) {
		return []byte(t), nil
	}
	return json.Marshal(string(t))
}

// The peer lists distinguish "absent" (nil) from "present and empty"
// (selects nothing), so they are written through pointers: a nil slice is
// omitted, an empty one is written as [].

func listPtr[T any](s []T) *[]T {
	if s == nil {
		return nil
	}
	return &s
}

// MarshalJSON writes the rule's fields under Cilium's names.
func (r IngressRule) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		FromEndpoints *[]labels.Selector `json:"fromEndpoints,omitempty"`
		FromEntities  *[]Entity          `json:"fromEntities,omitempty"`
		FromCIDR      *[]string          `json:"fromCIDR,omitempty"`
		FromCIDRSet   *[]CIDRRule        `json:"fromCIDRSet,omitempty"`
		ToPorts       []PortRule         `json:"toPorts,omitempty"`
		ICMPs         []ICMPRule         `json:"icmps,omitempty"`
	}{listPtr(r.FromEndpoints), listPtr(r.FromEntities), listPtr(r.FromCIDR), listPtr(r.FromCIDRSet), r.ToPorts, r.ICMPs})
}

// MarshalJSON writes the rule's fields under Cilium's names.
func (r IngressDenyRule) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		FromEndpoints *[]labels.Selector `json:"fromEndpoints,omitempty"`
		FromEntities  *[]Entity          `json:"fromEntities,omitempty"`
		FromCIDR      *[]string          `json:"fromCIDR,omitempty"`
		FromCIDRSet   *[]CIDRRule        `json:"fromCIDRSet,omitempty"`
		ToPorts       []PortDenyRule     `json:"toPorts,omitempty"`
		ICMPs         []ICMPRule         `json:"icmps,omitempty"`
	}{listPtr(r.FromEndpoints), listPtr(r.FromEntities), listPtr(r.FromCIDR), listPtr(r.FromCIDRSet), r.ToPorts, r.ICMPs})
}

// MarshalJSON writes the rule's fields under Cilium's names.
func (r EgressRule) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		ToEndpoints *[]labels.Selector `json:"toEndpoints,omitempty"`
		ToEntities  *[]Entity          `json:"toEntities,omitempty"`
		ToCIDR      *[]string          `json:"toCIDR,omitempty"`
		ToCIDRSet   *[]CIDRRule        `json:"toCIDRSet,omitempty"`
		ToPorts     []PortRule         `json:"toPorts,omitempty"`
		ICMPs       []ICMPRule         `json:"icmps,omitempty"`
	}{listPtr(r.ToEndpoints), listPtr(r.ToEntities), listPtr(r.ToCIDR), listPtr(r.ToCIDRSet), r.ToPorts, r.ICMPs})
}

// MarshalJSON writes the rule's fields under Cilium's names.
func (r EgressDenyRule) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		ToEndpoints *[]labels.Selector `json:"toEndpoints,omitempty"`
		ToEntities  *[]Entity          `json:"toEntities,omitempty"`
		ToCIDR      *[]string          `json:"toCIDR,omitempty"`
		ToCIDRSet   *[]CIDRRule        `json:"toCIDRSet,omitempty"`
		ToPorts     []PortDenyRule     `json:"toPorts,omitempty"`
		ICMPs       []ICMPRule         `json:"icmps,omitempty"`
	}{listPtr(r.ToEndpoints), listPtr(r.ToEntities), listPtr(r.ToCIDR), listPtr(r.ToCIDRSet), r.ToPorts, r.ICMPs})
}

// Name returns the value of the rule's label with key "name" (any
// source), or "" when it has none.
func Name(r Rule) string {
	for _, l := range r.Labels {
		if l.Key == "name" {
			return l.Value
		}
	}
	return ""
}

// Canonical returns the rule as canonical JSON, for storage: equal rules
// give equal bytes, and Parse reads the bytes back into an equal rule. The
// rule is validated and normalized first (without changing r); an invalid
// rule gives the errors Parse would give, with paths relative to the rule.
func Canonical(r Rule) ([]byte, error) {
	raw, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode rule: %w", err)
	}
	rules, err := Parse(raw)
	if err != nil {
		return nil, err
	}
	return json.Marshal(rules[0])
}
