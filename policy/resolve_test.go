package policy

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/labels"
)

const (
	web    labels.Identity = 256
	client labels.Identity = 257
	db     labels.Identity = 258

	host  = labels.IdentityHost
	world = labels.IdentityWorld
	init_ = labels.IdentityInit
	any_  = labels.IdentityUnknown

	cidr8   labels.Identity = labels.MinCIDRIdentity + 1 // 10.0.0.0/8
	cidr16  labels.Identity = labels.MinCIDRIdentity + 2 // 10.1.0.0/16
	cidr24  labels.Identity = labels.MinCIDRIdentity + 3 // 10.1.2.0/24
	cidr16b labels.Identity = labels.MinCIDRIdentity + 4 // 10.2.0.0/16
	cidrV6  labels.Identity = labels.MinCIDRIdentity + 5 // fd00::/8
)

var (
	testIdentities = map[labels.Identity]labels.Labels{
		web:    {"app": "web", "tier": "front"},
		client: {"app": "client"},
		db:     {"app": "db", "tier": "back"},
	}
	testCIDRs = map[netip.Prefix]labels.Identity{
		netip.MustParsePrefix("10.0.0.0/8"):  cidr8,
		netip.MustParsePrefix("10.1.0.0/16"): cidr16,
		netip.MustParsePrefix("10.1.2.0/24"): cidr24,
		netip.MustParsePrefix("10.2.0.0/16"): cidr16b,
		netip.MustParsePrefix("fd00::/8"):    cidrV6,
	}
)

func in(subject, peer labels.Identity, proto uint8, port uint16) Key {
	return Key{Subject: subject, Peer: peer, Proto: proto, Port: port, Dir: Ingress}
}

func eg(subject, peer labels.Identity, proto uint8, port uint16) Key {
	return Key{Subject: subject, Peer: peer, Proto: proto, Port: port, Dir: Egress}
}

func allow(keys ...Key) map[Key]Verdict { return verdicts(Allow, keys) }
func deny(keys ...Key) map[Key]Verdict  { return verdicts(Deny, keys) }

func verdicts(v Verdict, keys []Key) map[Key]Verdict {
	m := make(map[Key]Verdict, len(keys))
	for _, k := range keys {
		m[k] = v
	}
	return m
}

func merge(ms ...map[Key]Verdict) map[Key]Verdict {
	out := map[Key]Verdict{}
	for _, m := range ms {
		maps.Copy(out, m)
	}
	return out
}

func mustParse(t testing.TB, doc string) []Rule {
	t.Helper()
	rules, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse(%s): %v", doc, err)
	}
	return rules
}

func describe(m map[Key]Verdict) string {
	var lines []string
	for k, v := range m {
		lines = append(lines, fmt.Sprintf("  %v: %v", k, v))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name        string
		doc         string
		want        map[Key]Verdict
		enforcement map[labels.Identity]Enforcement
	}{
		{
			name: "ingress from endpoints on a TCP port enables ingress default deny only",
			doc: `[{"endpointSelector": {"matchLabels": {"app": "web"}},
			        "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}],
			                     "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]}]`,
			want:        allow(in(web, client, 6, 80)),
			enforcement: map[labels.Identity]Enforcement{web: {Ingress: true}},
		},
		{
			name:        "egress-only rule enables egress default deny only",
			doc:         `[{"endpointSelector": {"matchLabels": {"app": "web"}}, "egress": [{"toEntities": ["host"]}]}]`,
			want:        allow(eg(web, host, 0, 0)),
			enforcement: map[labels.Identity]Enforcement{web: {Egress: true}},
		},
		{
			name:        "ingressDeny-only rule enables ingress default deny, as in Cilium",
			doc:         `[{"endpointSelector": {"matchLabels": {"app": "web"}}, "ingressDeny": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}]}]`,
			want:        deny(in(web, client, 0, 0)),
			enforcement: map[labels.Identity]Enforcement{web: {Ingress: true}},
		},
		{
			name: "enableDefaultDeny false lets a deny-only rule subtract without closing",
			doc: `[{"endpointSelector": {"matchLabels": {"app": "web"}}, "enableDefaultDeny": {"egress": false},
			        "egressDeny": [{"toCIDR": ["10.1.0.0/16"]}]}]`,
			want:        deny(eg(web, cidr16, 0, 0), eg(web, cidr24, 0, 0)),
			enforcement: map[labels.Identity]Enforcement{web: {}},
		},
		{
			name: "rules are unioned",
			doc: `[{"endpointSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "web"}}], "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"}]}]}]},
			       {"endpointSelector": {"matchLabels": {"tier": "back"}}, "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}], "toPorts": [{"ports": [{"port": "9187", "protocol": "TCP"}]}]}],
			        "egress": [{"toEntities": ["world"], "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]}]}]`,
			want: allow(in(db, web, 6, 5432), in(db, client, 6, 9187),
				eg(db, world, 6, 443), eg(db, cidr8, 6, 443), eg(db, cidr16, 6, 443), eg(db, cidr24, 6, 443), eg(db, cidr16b, 6, 443), eg(db, cidrV6, 6, 443)),
			enforcement: map[labels.Identity]Enforcement{db: {Ingress: true, Egress: true}},
		},
		{
			name: "deny beats allow on the same key, in either order",
			doc: `[{"endpointSelector": {"matchLabels": {"app": "web"}}, "ingressDeny": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}]},
			       {"endpointSelector": {}, "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}]}]`,
			want:        merge(allow(in(client, client, 0, 0), in(db, client, 0, 0)), deny(in(web, client, 0, 0))),
			enforcement: map[labels.Identity]Enforcement{web: {Ingress: true}, client: {Ingress: true}, db: {Ingress: true}},
		},
		{
			name: "deny and allow on different keys are both kept",
			doc: `[{"endpointSelector": {"matchLabels": {"app": "web"}},
			        "ingress": [{}],
			        "ingressDeny": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}], "toPorts": [{"ports": [{"port": "22", "protocol": "TCP"}]}]}]}]`,
			want:        merge(allow(in(web, any_, 0, 0)), deny(in(web, client, 6, 22))),
			enforcement: map[labels.Identity]Enforcement{web: {Ingress: true}},
		},
		{
			name: "entities host, init and world; world includes every CIDR identity",
			doc:  `[{"endpointSelector": {"matchLabels": {"app": "web"}}, "egress": [{"toEntities": ["host", "init", "world"]}]}]`,
			want: allow(eg(web, host, 0, 0), eg(web, init_, 0, 0), eg(web, world, 0, 0),
				eg(web, cidr8, 0, 0), eg(web, cidr16, 0, 0), eg(web, cidr24, 0, 0), eg(web, cidr16b, 0, 0), eg(web, cidrV6, 0, 0)),
			enforcement: map[labels.Identity]Enforcement{web: {Egress: true}},
		},
		{
			name:        "entity all is the wildcard peer and absorbs the others",
			doc:         `[{"endpointSelector": {"matchLabels": {"app": "web"}}, "egress": [{"toEntities": ["host", "all"], "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}]}]}]}]`,
			want:        allow(eg(web, any_, 17, 53)),
			enforcement: map[labels.Identity]Enforcement{web: {Egress: true}},
		},
		{
			name:        "empty selector as a peer is every endpoint identity and nothing else",
			doc:         `[{"endpointSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"fromEndpoints": [{}]}]}]`,
			want:        allow(in(db, web, 0, 0), in(db, client, 0, 0), in(db, db, 0, 0)),
			enforcement: map[labels.Identity]Enforcement{db: {Ingress: true}},
		},
		{
			name: "nested CIDRs: a CIDR selects the identities inside it, except removes those inside the except",
			doc: `[{"endpointSelector": {"matchLabels": {"app": "web"}},
			        "egress": [{"toCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}]},
			                   {"toCIDR": ["10.1.2.0/24", "fd00::1/8"], "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]}]`,
			want: allow(eg(web, cidr8, 0, 0), eg(web, cidr16b, 0, 0),
				eg(web, cidr24, 6, 80), eg(web, cidrV6, 6, 80)),
			enforcement: map[labels.Identity]Enforcement{web: {Egress: true}},
		},
		{
			name:        "no peer list means any peer",
			doc:         `[{"endpointSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]}], "egress": [{}]}]`,
			want:        allow(in(web, any_, 6, 443), eg(web, any_, 0, 0)),
			enforcement: map[labels.Identity]Enforcement{web: {Ingress: true, Egress: true}},
		},
		{
			name:        "an empty peer list selects no peer but still enables default deny",
			doc:         `[{"endpointSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"fromEntities": []}], "egressDeny": [{"toEndpoints": []}]}]`,
			want:        map[Key]Verdict{},
			enforcement: map[labels.Identity]Enforcement{web: {Ingress: true, Egress: true}},
		},
		{
			name: "ICMP keys carry the type in Port with 0x100, so echo reply is not every type",
			doc: `[{"endpointSelector": {"matchLabels": {"app": "web"}},
			        "ingress": [{"icmps": [{"fields": [{"type": 0}, {"type": "EchoRequest"}, {"type": "EchoRequest", "family": "IPv6"}, {"type": 129, "family": "IPv6"}]}]}]}]`,
			want:        allow(in(web, any_, 1, 0x100), in(web, any_, 1, 0x108), in(web, any_, 58, 0x180), in(web, any_, 58, 0x181)),
			enforcement: map[labels.Identity]Enforcement{web: {Ingress: true}},
		},
		{
			name: "port 0 is every port of its protocol; ANY is TCP, UDP and SCTP",
			doc: `[{"endpointSelector": {"matchLabels": {"app": "web"}},
			        "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}], "toPorts": [{"ports": [{"port": "0", "protocol": "TCP"}, {"port": 53}]}]}]}]`,
			want:        allow(in(web, client, 6, 0), in(web, client, 6, 53), in(web, client, 17, 53), in(web, client, 132, 53)),
			enforcement: map[labels.Identity]Enforcement{web: {Ingress: true}},
		},
		{
			name:        "ANY port 0 is every protocol",
			doc:         `[{"endpointSelector": {"matchLabels": {"app": "web"}}, "egress": [{"toEntities": ["host"], "toPorts": [{"ports": [{"port": "0"}, {"port": "22", "protocol": "TCP"}]}]}]}]`,
			want:        allow(eg(web, host, 0, 0)),
			enforcement: map[labels.Identity]Enforcement{web: {Egress: true}},
		},
		{
			name:        "a port range becomes one key per port",
			doc:         `[{"endpointSelector": {"matchLabels": {"app": "web"}}, "egress": [{"toEntities": ["host"], "toPorts": [{"ports": [{"port": "8080", "endPort": 8082, "protocol": "UDP"}]}]}]}]`,
			want:        allow(eg(web, host, 17, 8080), eg(web, host, 17, 8081), eg(web, host, 17, 8082)),
			enforcement: map[labels.Identity]Enforcement{web: {Egress: true}},
		},
		{
			name: "selector expressions pick subjects",
			doc: `[{"endpointSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db", "nope"]}, {"key": "container:tier", "operator": "NotIn", "values": ["back"]}]},
			        "egress": [{"toEntities": ["host"]}]},
			       {"endpointSelector": {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, "ingress": [{"fromEntities": ["host"]}]}]`,
			want:        allow(eg(web, host, 0, 0), in(client, host, 0, 0)),
			enforcement: map[labels.Identity]Enforcement{web: {Egress: true}, client: {Ingress: true}},
		},
		{
			name:        "a selector that selects nothing adds nothing",
			doc:         `[{"endpointSelector": {"matchLabels": {"app": "nope"}}, "ingress": [{}]}]`,
			want:        map[Key]Verdict{},
			enforcement: map[labels.Identity]Enforcement{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Resolve(Input{Rules: mustParse(t, tt.doc), Identities: testIdentities, CIDRs: testCIDRs})
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(res.Entries, tt.want) {
				t.Errorf("Entries =\n%s\nwant\n%s", describe(res.Entries), describe(tt.want))
			}
			if !maps.Equal(res.Enforcement, tt.enforcement) {
				t.Errorf("Enforcement = %v, want %v", res.Enforcement, tt.enforcement)
			}
		})
	}
}

func TestResolveNeedsAnIdentityForEveryCIDR(t *testing.T) {
	rules := mustParse(t, `[{"endpointSelector": {}, "egress": [{"toCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["10.9.0.0/16"]}]}]}]`)
	_, err := Resolve(Input{Rules: rules, Identities: testIdentities, CIDRs: testCIDRs})
	if !errors.Is(err, ErrMissingCIDRIdentity) || !strings.Contains(err.Error(), "10.9.0.0/16, named by rule [0]") {
		t.Errorf("Resolve() = %v, want ErrMissingCIDRIdentity naming 10.9.0.0/16", err)
	}
}

func TestResolveRefusesIdentitiesOutOfRange(t *testing.T) {
	tests := []struct {
		name string
		in   Input
		want string
	}{
		{"reserved identity as an endpoint", Input{Identities: map[labels.Identity]labels.Labels{init_: nil}}, "endpoint identity 5"},
		{"CIDR identity as an endpoint", Input{Identities: map[labels.Identity]labels.Labels{cidr8: nil}}, "endpoint identity 16777217"},
		{"endpoint identity for a CIDR", Input{CIDRs: map[netip.Prefix]labels.Identity{netip.MustParsePrefix("10.0.0.0/8"): web}}, "identity 256 of CIDR 10.0.0.0/8"},
		{"unmasked CIDR", Input{CIDRs: map[netip.Prefix]labels.Identity{netip.MustParsePrefix("10.0.0.1/8"): cidr8}}, "CIDR 10.0.0.1/8 is not a masked prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Resolve(tt.in)
			if !errors.Is(err, ErrInvalidIdentity) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Resolve() = %v, want ErrInvalidIdentity with %q", err, tt.want)
			}
		})
	}
}

func TestResolveChecksRulesLikeParse(t *testing.T) {
	rules := []Rule{{
		EndpointSelector: labels.Selector{MatchLabels: map[string]string{"k8s:app": "web"}},
		Ingress:          []IngressRule{{ToPorts: []PortRule{{Ports: []PortProtocol{{Port: "http"}}}}}},
	}}
	_, err := Resolve(Input{Rules: rules})
	if !errors.Is(err, ErrInvalidPolicy) {
		t.Fatalf("Resolve() = %v, want ErrInvalidPolicy", err)
	}
	for _, want := range []string{`[0].endpointSelector.matchLabels["k8s:app"]`, `[0].ingress[0].toPorts[0].ports[0].port: "http"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Resolve() = %v, want it to name %s", err, want)
		}
	}
}

func TestResolveAcceptsRulesBuiltInGo(t *testing.T) {
	// Not normalized: lower-case protocol, no family, unmasked CIDR.
	rules := []Rule{{
		Egress: []EgressRule{
			{ToCIDR: []string{"10.1.2.3/8"}, ToPorts: []PortRule{{Ports: []PortProtocol{{Port: "80", Protocol: "tcp"}}}}},
			{ICMPs: []ICMPRule{{Fields: []ICMPField{{Type: "8"}}}}},
		},
	}}
	res, err := Resolve(Input{Rules: rules, Identities: map[labels.Identity]labels.Labels{web: {"app": "web"}}, CIDRs: testCIDRs})
	if err != nil {
		t.Fatal(err)
	}
	want := allow(eg(web, cidr8, 6, 80), eg(web, cidr16, 6, 80), eg(web, cidr24, 6, 80), eg(web, cidr16b, 6, 80), eg(web, any_, 1, ICMPPort(8)))
	if !maps.Equal(res.Entries, want) {
		t.Errorf("Entries =\n%s\nwant\n%s", describe(res.Entries), describe(want))
	}
}
