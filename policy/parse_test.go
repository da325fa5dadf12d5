package policy

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/labels"
)

// designExample is the example of DESIGN.md's "Policy format".
const designExample = `[{
  "labels": [{"key": "name", "value": "web-ingress"}],
  "endpointSelector": {"matchLabels": {"app": "web"}},
  "ingress": [{
    "fromEndpoints": [{"matchLabels": {"app": "client"}}],
    "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]
  }],
  "egress": [{"toEntities": ["world"]}]
}]`

const designExampleYAML = `
# the same rule, in YAML
- labels:
  - key: name
    value: web-ingress
  endpointSelector:
    matchLabels:
      app: web
  ingress:
  - fromEndpoints:
    - matchLabels: {app: client}
    toPorts:
    - ports:
      - port: 80
        protocol: tcp
  egress:
  - toEntities: [world]
`

func TestParseDesignExample(t *testing.T) {
	want := []Rule{{
		Labels:           []Label{{Key: "name", Value: "web-ingress"}},
		EndpointSelector: labels.Selector{MatchLabels: map[string]string{"app": "web"}},
		Ingress: []IngressRule{{
			FromEndpoints: []labels.Selector{{MatchLabels: map[string]string{"app": "client"}}},
			ToPorts:       []PortRule{{Ports: []PortProtocol{{Port: "80", Protocol: ProtoTCP}}}},
		}},
		Egress: []EgressRule{{ToEntities: []Entity{EntityWorld}}},
	}}
	for name, doc := range map[string]string{"JSON": designExample, "YAML": designExampleYAML} {
		t.Run(name, func(t *testing.T) {
			got, err := Parse([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Parse() =\n%#v\nwant\n%#v", got, want)
			}
			if Name(got[0]) != "web-ingress" {
				t.Errorf("Name() = %q, want web-ingress", Name(got[0]))
			}
		})
	}
}

func TestParseAcceptsASingleRuleObject(t *testing.T) {
	got, err := Parse([]byte(`{"endpointSelector": {}, "ingress": [{}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || len(got[0].Ingress) != 1 {
		t.Errorf("Parse() = %#v, want one rule with one ingress entry", got)
	}
}

func TestParseAcceptsAnEmptyArray(t *testing.T) {
	got, err := Parse([]byte(" [ ] "))
	if err != nil || got == nil || len(got) != 0 {
		t.Errorf("Parse([]) = %#v, %v; want no rules and no error", got, err)
	}
}

func TestParseNormalizes(t *testing.T) {
	doc := `
endpointSelector: {matchLabels: {version: 2, debug: true}}
ingress:
- fromCIDR: [10.1.2.3, 10.0.0.1/8, "FD00::1/8"]
  toPorts:
  - ports:
    - {port: 443}
    - {port: "0053", protocol: udp}
- fromCIDRSet: [{cidr: 192.168.7.7/16, except: [192.168.1.9/24]}]
  icmps:
  - fields: [{type: "8"}, {type: EchoReply, family: ipv6}, {type: 3}]
- fromEndpoints: []
egressDeny:
- toEntities: [host]
enableDefaultDeny: {}
`
	got, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := Rule{
		EndpointSelector: labels.Selector{MatchLabels: map[string]string{"version": "2", "debug": "true"}},
		Ingress: []IngressRule{
			{
				FromCIDR: []string{"10.1.2.3/32", "10.0.0.0/8", "fd00::/8"},
				ToPorts: []PortRule{{Ports: []PortProtocol{
					{Port: "443", Protocol: ProtoAny},
					{Port: "53", Protocol: ProtoUDP},
				}}},
			},
			{
				FromCIDRSet: []CIDRRule{{Cidr: "192.168.0.0/16", Except: []string{"192.168.1.0/24"}}},
				ICMPs: []ICMPRule{{Fields: []ICMPField{
					{Family: FamilyIPv4, Type: "8"},
					{Family: FamilyIPv6, Type: "EchoReply"},
					{Family: FamilyIPv4, Type: "3"},
				}}},
			},
			{FromEndpoints: []labels.Selector{}},
		},
		EgressDeny: []EgressDenyRule{{ToEntities: []Entity{EntityHost}}},
	}
	if !reflect.DeepEqual(got, []Rule{want}) {
		t.Errorf("Parse() =\n%#v\nwant\n%#v", got[0], want)
	}
	canonical, err := Canonical(got[0])
	if err != nil {
		t.Fatal(err)
	}
	const wantJSON = `{"endpointSelector":{"matchLabels":{"debug":"true","version":"2"}},` +
		`"ingress":[{"fromCIDR":["10.1.2.3/32","10.0.0.0/8","fd00::/8"],"toPorts":[{"ports":[{"port":"443","protocol":"ANY"},{"port":"53","protocol":"UDP"}]}]},` +
		`{"fromCIDRSet":[{"cidr":"192.168.0.0/16","except":["192.168.1.0/24"]}],"icmps":[{"fields":[{"family":"IPv4","type":8},{"family":"IPv6","type":"EchoReply"},{"family":"IPv4","type":3}]}]},` +
		`{"fromEndpoints":[]}],` +
		`"egressDeny":[{"toEntities":["host"]}]}`
	if string(canonical) != wantJSON {
		t.Errorf("Canonical() =\n%s\nwant\n%s", canonical, wantJSON)
	}
}

func TestCanonicalRoundTripsAndLeavesTheRuleAlone(t *testing.T) {
	r := Rule{
		EndpointSelector: labels.Selector{MatchLabels: map[string]string{"app": "web"}},
		Ingress: []IngressRule{{
			FromCIDR: []string{"10.0.0.1/8"},
			ToPorts:  []PortRule{{Ports: []PortProtocol{{Port: "080", Protocol: "tcp"}}}},
		}},
		Egress: []EgressRule{{ToEntities: []Entity{}}},
	}
	b, err := Canonical(r)
	if err != nil {
		t.Fatal(err)
	}
	if r.Ingress[0].FromCIDR[0] != "10.0.0.1/8" || r.Ingress[0].ToPorts[0].Ports[0].Port != "080" {
		t.Errorf("Canonical changed its argument: %#v", r)
	}
	back, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Canonical(back[0])
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(b) {
		t.Errorf("Canonical(Parse(Canonical(r))) =\n%s\nwant\n%s", again, b)
	}
	if back[0].Egress[0].ToEntities == nil {
		t.Error("an empty toEntities list came back absent: it would allow every peer")
	}
	const want = `{"endpointSelector":{"matchLabels":{"app":"web"}},"ingress":[{"fromCIDR":["10.0.0.0/8"],"toPorts":[{"ports":[{"port":"80","protocol":"TCP"}]}]}],"egress":[{"toEntities":[]}]}`
	if string(b) != want {
		t.Errorf("Canonical() =\n%s\nwant\n%s", b, want)
	}
}

func TestCanonicalRejectsAnInvalidRule(t *testing.T) {
	_, err := Canonical(Rule{Ingress: []IngressRule{{FromEntities: []Entity{"cluster"}}}})
	if !errors.Is(err, ErrInvalidPolicy) || !strings.Contains(err.Error(), `ingress[0].fromEntities[0]: entity "cluster"`) {
		t.Errorf("Canonical() = %v, want the entity named", err)
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string // the error's lines
	}{
		{"misspelt section", `[{"endpointSelector": {}, "ingres": [{}]}]`,
			[]string{`[0].ingres: unknown field (did you mean "ingress"?)`}},
		{"misspelt section in YAML", "- endpointSelector: {}\n  egres: []\n  ingress: [{}]\n",
			[]string{`[0].egres: unknown field (did you mean "egress"?)`}},
		{"port name", `[{"endpointSelector": {}, "ingress": [{}, {"toPorts": [{"ports": [{"port": "http"}]}]}]}]`,
			[]string{`[0].ingress[1].toPorts[0].ports[0].port: "http": want a number 0-65535`}},
		{"port out of range", "- endpointSelector: {}\n  egress:\n  - toPorts:\n    - ports:\n      - port: 65536\n",
			[]string{`[0].egress[0].toPorts[0].ports[0].port: "65536": want a number 0-65535`}},
		{"negative port", `[{"endpointSelector": {}, "egress": [{"toPorts": [{"ports": [{"port": -1}]}]}]}]`,
			[]string{`[0].egress[0].toPorts[0].ports[0].port: "-1": want a number 0-65535`}},
		{"bad protocol", `[{"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [{"port": "80", "protocol": "TCPX"}]}]}]}]`,
			[]string{`[0].ingress[0].toPorts[0].ports[0].protocol: want TCP, UDP, SCTP or ANY, got "TCPX"`}},
		{"ICMP as a toPorts protocol", `[{"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [{"port": "0", "protocol": "ICMP"}]}]}]}]`,
			[]string{`[0].ingress[0].toPorts[0].ports[0].protocol: "ICMP": write ICMP rules with icmps`}},
		{"unknown entity", `[{"endpointSelector": {}, "ingress": [{"fromEntities": ["host", "everything"]}]}]`,
			[]string{`[0].ingress[0].fromEntities[1]: unknown entity "everything": want host, world, all or init`}},
		{"Cilium-only entity", "- endpointSelector: {}\n  egress:\n  - toEntities: [remote-node]\n",
			[]string{`[0].egress[0].toEntities[0]: entity "remote-node" is not supported by membrane (there is no cluster): want host, world, all or init`}},
		{"bad CIDR", `[{"endpointSelector": {}, "egress": [{"toCIDR": ["10.0.0.0/33"]}]}]`,
			[]string{`[0].egress[0].toCIDR[0]: "10.0.0.0/33": want an address or a CIDR prefix such as 10.0.0.0/8 or fd00::/8`}},
		{"bare address in a CIDR set", `[{"endpointSelector": {}, "egress": [{"toCIDRSet": [{"cidr": "10.0.0.1"}]}]}]`,
			[]string{`[0].egress[0].toCIDRSet[0].cidr: "10.0.0.1": want a CIDR prefix such as 10.0.0.0/8 or fd00::/8`}},
		{"except outside cidr", `[{"endpointSelector": {}, "ingress": [{"fromCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "192.168.0.0/16", "10.0.0.0/7", "fd00::/8"]}]}]}]`,
			[]string{
				`[0].ingress[0].fromCIDRSet[0].except[1]: "192.168.0.0/16" is not inside cidr "10.0.0.0/8"`,
				`[0].ingress[0].fromCIDRSet[0].except[2]: "10.0.0.0/7" is not inside cidr "10.0.0.0/8"`,
				`[0].ingress[0].fromCIDRSet[0].except[3]: "fd00::/8" is not inside cidr "10.0.0.0/8"`,
			}},
		{"IPv4-mapped CIDR", `[{"endpointSelector": {}, "egress": [{"toCIDR": ["::ffff:10.0.0.0/104"]}]}]`,
			[]string{`[0].egress[0].toCIDR[0]: "::ffff:10.0.0.0/104": IPv4-mapped IPv6 prefix: write the IPv4 prefix`}},
		{"bad selector operator", `[{"endpointSelector": {"matchExpressions": [{"key": "app", "operator": "Foo"}]}, "ingress": [{}]}]`,
			[]string{`[0].endpointSelector.matchExpressions[0].operator: want In, NotIn, Exists or DoesNotExist, got "Foo"`}},
		{"k8s label source in a peer selector", "- endpointSelector: {}\n  ingress:\n  - fromEndpoints:\n    - {}\n    - matchLabels: {\"k8s:app\": web}\n",
			[]string{`[0].ingress[0].fromEndpoints[1].matchLabels["k8s:app"]: label source "k8s" is not supported: want "container" or no source (a Docker label key with a colon is written "container:k8s:app")`}},
		{"reserved label in the endpoint selector", `[{"endpointSelector": {"matchLabels": {"reserved:host": ""}}, "ingress": [{}]}]`,
			[]string{`[0].endpointSelector.matchLabels["reserved:host"]: reserved label "reserved:host" cannot be selected: use the entities host, world, all or init (fromEntities, toEntities)`}},
		{"L7 rules", `[{"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}], "rules": {"http": [{"method": "GET"}]}}]}]}]`,
			[]string{`[0].ingress[0].toPorts[0].rules: L7 rules are not supported yet`}},
		{"L7 rules in a deny section", "- endpointSelector: {}\n  egressDeny:\n  - toPorts:\n    - ports: [{port: 80}]\n      rules: {dns: [{matchName: x}]}\n",
			[]string{`[0].egressDeny[0].toPorts[0].rules: L7 rules are not supported yet`}},
		{"toPorts and icmps together", `[{"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [{"port": "80"}]}], "icmps": [{"fields": [{"type": 8}]}]}]}]`,
			[]string{`[0].ingress[0]: toPorts and icmps cannot be combined in one rule: write one rule for each`}},
		{"two kinds of peers together", `[{"endpointSelector": {}, "egress": [{"toEndpoints": [{}], "toCIDR": ["10.0.0.0/8"]}]}]`,
			[]string{`[0].egress[0]: toEndpoints and toCIDR cannot be combined in one rule: write one rule for each`}},
		{"bad ICMP type name", `[{"endpointSelector": {}, "ingress": [{"icmps": [{"fields": [{"type": "PacketTooBig"}]}]}]}]`,
			[]string{`[0].ingress[0].icmps[0].fields[0].type: "PacketTooBig": want a number 0-255 or an IPv4 message type name such as "EchoRequest"`}},
		{"ICMP type out of range", `[{"endpointSelector": {}, "ingress": [{"icmps": [{"fields": [{"type": 256, "family": "IPv6"}]}]}]}]`,
			[]string{`[0].ingress[0].icmps[0].fields[0].type: "256": want a number 0-255 or an IPv6 message type name such as "EchoRequest"`}},
		{"bad ICMP family", `[{"endpointSelector": {}, "ingress": [{"icmps": [{"fields": [{"type": 8, "family": "IPv5"}]}]}]}]`,
			[]string{`[0].ingress[0].icmps[0].fields[0].family: want IPv4 or IPv6, got "IPv5"`}},
		{"port range too wide", `[{"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [{"port": "1024", "endPort": 65535}]}]}]}]`,
			[]string{`[0].ingress[0].toPorts[0].ports[0].endPort: range 1024-65535 spans 64512 ports, at most 1024 are supported: use port "0" for every port`}},
		{"endPort as a string", "- endpointSelector: {}\n  ingress:\n  - toPorts: [{ports: [{port: 80, endPort: \"82\"}]}]\n",
			[]string{`[0].ingress[0].toPorts[0].ports[0].endPort: "82": want a number 0-65535`}},
		{"port range backwards", `[{"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [{"port": "90", "endPort": 80}]}]}]}]`,
			[]string{`[0].ingress[0].toPorts[0].ports[0].endPort: 80 is below port 90`}},
		{"missing endpointSelector", `[{"ingress": [{}]}]`,
			[]string{`[0].endpointSelector: required: use {} to select every endpoint`}},
		{"rule without sections", `[{"endpointSelector": {}, "ingress": []}]`,
			[]string{`[0]: rule has no ingress, ingressDeny, egress or egressDeny rules`}},
		{"wrong type", `[{"endpointSelector": [], "ingress": {}}]`,
			[]string{`[0].endpointSelector: want an object, got an array`, `[0].ingress: want an array, got an object`}},
		{"duplicate key", `[{"endpointSelector": {}, "ingress": [{}], "ingress": []}]`,
			[]string{`[0].ingress: duplicate key`}},
		{"duplicate key in YAML", "- endpointSelector: {}\n  egress: [{}]\n  egress: []\n",
			[]string{`[0].egress: duplicate key (line 3)`}},
		{"duplicate rule name", `[{"labels": [{"key": "name", "value": "a"}], "endpointSelector": {}, "ingress": [{}]}, {"labels": [{"key": "name", "value": "a", "source": "any"}], "endpointSelector": {}, "egress": [{}]}]`,
			[]string{`[1].labels: rule name "a" is also the name of rule [0]`}},
		{"unsupported Cilium field", `[{"endpointSelector": {}, "egress": [{"toFQDNs": [{"matchName": "example.com"}]}]}]`,
			[]string{`[0].egress[0].toFQDNs: DNS-based rules (toFQDNs) are not supported yet`}},
		{"a CiliumNetworkPolicy object", "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nspec:\n  endpointSelector: {}\n",
			[]string{
				`apiVersion: looks like a Kubernetes object (CiliumNetworkPolicy): give its rules (the spec) instead`,
				`kind: looks like a Kubernetes object (CiliumNetworkPolicy): give its rules (the spec) instead`,
				`spec: looks like a Kubernetes object (CiliumNetworkPolicy): give its rules (the spec) instead`,
			}},
		{"empty ports list", `[{"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": []}]}]}]`,
			[]string{`[0].ingress[0].toPorts[0].ports: at least one port is required`}},
		{"errors of several rules, in rule order", `[{"endpointSelector": {}, "ingress": [{"fromEntities": ["x"]}]}, {"endpointSelector": {}, "bogus": 1, "ingress": [{}]}]`,
			[]string{`[0].ingress[0].fromEntities[0]: unknown entity "x": want host, world, all or init`, `[1].bogus: unknown field`}},
		{"JSON syntax", "[{\"endpointSelector\": {},\n \"ingress\": [}]",
			[]string{`invalid policy: JSON: invalid character '}' looking for a value at line 2, column 14`}},
		{"YAML syntax", "- endpointSelector: {}\n ingress: [\n",
			[]string{`invalid policy: YAML: line 1: did not find expected '-' indicator`}},
		{"two YAML documents", "- endpointSelector: {}\n  ingress: [{}]\n---\n- endpointSelector: {}\n",
			[]string{`invalid policy: YAML: more than one document (line 3); put all rules in one array`}},
		{"empty document", " \n ", []string{`invalid policy: empty document`}},
		{"a scalar document", "hello", []string{`want an array of rules or a rule object, got a string`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse() = %#v, want an error", rules)
			}
			if rules != nil {
				t.Errorf("Parse() returned rules along with an error")
			}
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Errorf("errors.Is(%v, ErrInvalidPolicy) = false", err)
			}
			if got, want := err.Error(), strings.Join(tt.want, "\n"); got != want {
				t.Errorf("Parse() error =\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func TestParseErrorsAreFieldErrors(t *testing.T) {
	_, err := Parse([]byte(`[{"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [{"port": "http"}]}]}]}]`))
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("errors.As(%v, *FieldError) = false", err)
	}
	if fe.Path != "[0].ingress[0].toPorts[0].ports[0].port" {
		t.Errorf("Path = %q", fe.Path)
	}
}

func TestParseReportsAtMostFiftyProblems(t *testing.T) {
	var b strings.Builder
	b.WriteString(`[{"endpointSelector": {}, "ingress": [{"fromEntities": [`)
	for i := range 60 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`"x"`)
	}
	b.WriteString(`]}]}]`)
	_, err := Parse([]byte(b.String()))
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 51 || lines[50] != "and 10 more problems" {
		t.Errorf("got %d lines ending %q, want 51 ending \"and 10 more problems\"", len(lines), lines[len(lines)-1])
	}
}

func TestParseDistinguishesAbsentAndEmptyPeerLists(t *testing.T) {
	rules, err := Parse([]byte("- endpointSelector: {}\n  ingress:\n  - toPorts: [{ports: [{port: 80}]}]\n  - fromEntities: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	in := rules[0].Ingress
	if in[0].FromEntities != nil || in[1].FromEntities == nil {
		t.Errorf("peer lists = %#v, want absent then empty", in)
	}
}

func TestParseNull(t *testing.T) {
	// A null rule field is absent, as Kubernetes reads it.
	rules, err := Parse([]byte("- endpointSelector: {}\n  description:\n  labels: ~\n  ingress:\n  egress: [{}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if rules[0].Ingress != nil || rules[0].Labels != nil {
		t.Errorf("null fields became %#v", rules[0])
	}
	// Deeper, null is refused: a forgotten value must not widen a rule.
	tests := []struct{ doc, want string }{
		{"- endpointSelector: {matchLabels: {app: }}\n  ingress: [{}]\n", `[0].endpointSelector.matchLabels["app"]: want a string, got null`},
		{"- endpointSelector: {}\n  ingress:\n  - fromEndpoints:\n    toPorts: [{ports: [{port: 80}]}]\n", `[0].ingress[0].fromEndpoints: want an array, got null`},
		{"- endpointSelector: {}\n  ingress:\n  - toPorts:\n", `[0].ingress[0].toPorts: want an array, got null`},
		{"- endpointSelector: {}\n  ingress:\n  - toPorts: [{ports: [{port: 80, protocol: }]}]\n", `[0].ingress[0].toPorts[0].ports[0].protocol: want a string, got null`},
		{"- endpointSelector: {}\n  ingres:\n  egress: [{}]\n", `[0].ingres: unknown field (did you mean "ingress"?)`},
	}
	for _, tt := range tests {
		if _, err := Parse([]byte(tt.doc)); err == nil || err.Error() != tt.want {
			t.Errorf("Parse(%q) = %v, want %s", tt.doc, err, tt.want)
		}
	}
}

func TestName(t *testing.T) {
	tests := []struct {
		labels []Label
		want   string
	}{
		{nil, ""},
		{[]Label{{Key: "team", Value: "x"}}, ""},
		{[]Label{{Key: "team", Value: "x"}, {Key: "name", Value: "web", Source: "unspec"}}, "web"},
	}
	for _, tt := range tests {
		if got := Name(Rule{Labels: tt.labels}); got != tt.want {
			t.Errorf("Name(%v) = %q, want %q", tt.labels, got, tt.want)
		}
	}
}

func TestCIDRsListsEveryPrefixOnceSorted(t *testing.T) {
	rules, err := Parse([]byte(`[
	  {"endpointSelector": {}, "ingress": [{"fromCIDR": ["10.1.2.3", "fd00::/8"]}],
	   "egressDeny": [{"toCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}]}]},
	  {"endpointSelector": {}, "egress": [{"toCIDR": ["10.0.0.0/8", "0.0.0.0/0"]}],
	   "ingressDeny": [{"fromCIDRSet": [{"cidr": "fd00::/8"}]}]}
	]`))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/0"),
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("10.1.0.0/16"),
		netip.MustParsePrefix("10.1.2.3/32"),
		netip.MustParsePrefix("fd00::/8"),
	}
	if got := CIDRs(rules); !reflect.DeepEqual(got, want) {
		t.Errorf("CIDRs() = %v, want %v", got, want)
	}
}
