package firewall

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

var (
	ep = Endpoint{
		ID: "ep1", NetworkID: "net1", Interface: "mbr0123456789ab",
		IPv4: netip.MustParseAddr("10.210.0.2"), IPv6: netip.MustParseAddr("fd00:aa::2"),
	}
	ep4only = Endpoint{ID: "ep2", NetworkID: "net1", Interface: "mbrfedcba987654", IPv4: netip.MustParseAddr("10.210.0.3")}
)

func args(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Fields(s)
}

func TestDNATRuleFromMapping(t *testing.T) {
	tcp := func(host string, hostPort, port uint16) Mapping {
		m := Mapping{Proto: TCP, HostPort: hostPort, Port: port}
		if host != "" {
			m.HostIP = netip.MustParseAddr(host)
		}
		return m
	}
	for _, tc := range []struct {
		name     string
		m        Mapping
		ep       Endpoint
		want4    string
		want6    string
		loopback bool
	}{
		{
			name:     "every address of both families (-p 8080:7000)",
			m:        tcp("", 8080, 7000),
			ep:       ep,
			want4:    "-p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.210.0.2:7000",
			want6:    "-p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd00:aa::2]:7000",
			loopback: true,
		},
		{
			name:     "IPv4 loopback only (-p 127.0.0.1:8081:7000)",
			m:        tcp("127.0.0.1", 8081, 7000),
			ep:       ep,
			want4:    "-d 127.0.0.1/32 -p tcp -m tcp --dport 8081 -j DNAT --to-destination 10.210.0.2:7000",
			loopback: true,
		},
		{
			name:     "every IPv4 address (-p 0.0.0.0:8082:7000)",
			m:        tcp("0.0.0.0", 8082, 7000),
			ep:       ep,
			want4:    "-p tcp -m tcp --dport 8082 -j DNAT --to-destination 10.210.0.2:7000",
			loopback: true,
		},
		{
			name:  "every IPv6 address (-p [::]:8083:7000)",
			m:     tcp("::", 8083, 7000),
			ep:    ep,
			want6: "-p tcp -m tcp --dport 8083 -j DNAT --to-destination [fd00:aa::2]:7000",
		},
		{
			name:  "one IPv6 address",
			m:     tcp("fd00:198:18::1", 8084, 7000),
			ep:    ep,
			want6: "-d fd00:198:18::1/128 -p tcp -m tcp --dport 8084 -j DNAT --to-destination [fd00:aa::2]:7000",
		},
		{
			name:  "one IPv4 address that is not loopback",
			m:     tcp("198.18.0.1", 8085, 7000),
			ep:    ep,
			want4: "-d 198.18.0.1/32 -p tcp -m tcp --dport 8085 -j DNAT --to-destination 10.210.0.2:7000",
		},
		{
			name:     "UDP",
			m:        Mapping{Proto: UDP, HostPort: 8090, Port: 7001},
			ep:       ep,
			want4:    "-p udp -m udp --dport 8090 -j DNAT --to-destination 10.210.0.2:7001",
			want6:    "-p udp -m udp --dport 8090 -j DNAT --to-destination [fd00:aa::2]:7001",
			loopback: true,
		},
		{
			name:  "SCTP on IPv6",
			m:     Mapping{Proto: SCTP, HostIP: netip.IPv6Unspecified(), HostPort: 9000, Port: 9},
			ep:    ep,
			want6: "-p sctp -m sctp --dport 9000 -j DNAT --to-destination [fd00:aa::2]:9",
		},
		{
			name:     "IPv4-only container: nothing on IPv6",
			m:        tcp("", 8080, 7000),
			ep:       ep4only,
			want4:    "-p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.210.0.3:7000",
			loopback: true,
		},
		{
			name: "IPv4-only container published on IPv6 only: nothing at all",
			m:    tcp("::", 8080, 7000),
			ep:   ep4only,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := DNATRule(IPv4, tc.m, tc.ep); !reflect.DeepEqual(got, args(tc.want4)) {
				t.Errorf("IPv4 rule:\n got %q\nwant %q", got, args(tc.want4))
			}
			if got := DNATRule(IPv6, tc.m, tc.ep); !reflect.DeepEqual(got, args(tc.want6)) {
				t.Errorf("IPv6 rule:\n got %q\nwant %q", got, args(tc.want6))
			}
			e := tc.ep
			e.Ports = []Mapping{tc.m}
			if got := needsRouteLocalnet(e, false); got != tc.loopback {
				t.Errorf("route_localnet needed = %v, want %v", got, tc.loopback)
			}
			if needsRouteLocalnet(e, true) {
				t.Error("route_localnet needed on an internal network, which publishes nothing")
			}
		})
	}
}

func TestDNATRulesSkipInternalNetworksAndKeepOrder(t *testing.T) {
	a, b := ep, ep4only
	a.ID, b.ID = "b-second", "a-first"
	a.Ports = []Mapping{{Proto: TCP, HostPort: 8080, Port: 7000}, {Proto: UDP, HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 8081, Port: 7001}}
	b.Ports = []Mapping{{Proto: TCP, HostPort: 9090, Port: 80}}
	hidden := Endpoint{ID: "c", NetworkID: "internal", IPv4: netip.MustParseAddr("10.9.0.2"), Ports: []Mapping{{Proto: TCP, HostPort: 7070, Port: 80}}}
	s := State{
		Networks:  []Network{{ID: "net1"}, {ID: "internal", Internal: true}},
		Endpoints: []Endpoint{a, hidden, b},
	}
	want := [][]string{
		args("-p tcp -m tcp --dport 9090 -j DNAT --to-destination 10.210.0.3:80"),
		args("-p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.210.0.2:7000"),
		args("-d 127.0.0.1/32 -p udp -m udp --dport 8081 -j DNAT --to-destination 10.210.0.2:7001"),
	}
	if got := dnatRules(IPv4, s); !reflect.DeepEqual(got, want) {
		t.Errorf("dnatRules(IPv4):\n got %q\nwant %q", got, want)
	}
	want6 := [][]string{args("-p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd00:aa::2]:7000")}
	if got := dnatRules(IPv6, s); !reflect.DeepEqual(got, want6) {
		t.Errorf("dnatRules(IPv6):\n got %q\nwant %q", got, want6)
	}
}

func TestPostroutingRules(t *testing.T) {
	dual := Network{
		ID:   "a",
		IPv4: netip.MustParsePrefix("10.210.0.0/24"), Gateway4: netip.MustParseAddr("10.210.0.1"),
		IPv6: netip.MustParsePrefix("fd00:aa::/64"), Gateway6: netip.MustParseAddr("fd00:aa::1"),
	}
	global := Network{ID: "b", IPv4: netip.MustParsePrefix("10.99.0.0/24"), IPv6: netip.MustParsePrefix("2001:db8:1::/64")}
	internal := dual
	internal.ID, internal.Internal = "c", true
	for _, tc := range []struct {
		name         string
		nets         []Network
		want4, want6 []string
	}{
		{
			name: "private IPv4 and unique local IPv6 are masqueraded; 127.0.0.1 is answered through the gateway",
			nets: []Network{dual},
			want4: []string{
				"-s 10.210.0.0/24 ! -o mbr+ -j MASQUERADE",
				"-s 127.0.0.0/8 -d 10.210.0.0/24 -j SNAT --to-source 10.210.0.1",
			},
			want6: []string{"-s fd00:aa::/64 ! -o mbr+ -j MASQUERADE"},
		},
		{
			name: "a global IPv6 subnet is routed; without a gateway loopback traffic is masqueraded",
			nets: []Network{global},
			want4: []string{
				"-s 10.99.0.0/24 ! -o mbr+ -j MASQUERADE",
				"-s 127.0.0.0/8 -d 10.99.0.0/24 -j MASQUERADE",
			},
		},
		{
			name: "internal networks leave nothing",
			nets: []Network{internal},
		},
		{
			name: "networks in ID order",
			nets: []Network{global, internal, dual},
			want4: []string{
				"-s 10.210.0.0/24 ! -o mbr+ -j MASQUERADE",
				"-s 127.0.0.0/8 -d 10.210.0.0/24 -j SNAT --to-source 10.210.0.1",
				"-s 10.99.0.0/24 ! -o mbr+ -j MASQUERADE",
				"-s 127.0.0.0/8 -d 10.99.0.0/24 -j MASQUERADE",
			},
			want6: []string{"-s fd00:aa::/64 ! -o mbr+ -j MASQUERADE"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for fam, want := range map[Family][]string{IPv4: tc.want4, IPv6: tc.want6} {
				var wantRules [][]string
				for _, w := range want {
					wantRules = append(wantRules, args(w))
				}
				if got := postroutingRules(fam, "mbr+", tc.nets); !reflect.DeepEqual(got, wantRules) {
					t.Errorf("%s:\n got %q\nwant %q", fam, got, wantRules)
				}
			}
		})
	}
}

func TestMasqueradesOnlyULAForIPv6(t *testing.T) {
	for _, tc := range []struct {
		v6   string
		want bool
	}{
		{"fd00:aa::/64", true},
		{"fc00:1::/64", true},
		{"2001:db8::/64", false},
		{"fe80::/64", false},
	} {
		nw := Network{IPv6: netip.MustParsePrefix(tc.v6)}
		if got := Masquerades(IPv6, nw); got != tc.want {
			t.Errorf("Masquerades(IPv6, %s) = %v, want %v", tc.v6, got, tc.want)
		}
		nw.Internal = true
		if Masquerades(IPv6, nw) {
			t.Errorf("internal %s is masqueraded", tc.v6)
		}
	}
}

func TestForwardRules(t *testing.T) {
	nets := []Network{
		{ID: "open", IPv4: netip.MustParsePrefix("10.1.0.0/24")},
		{ID: "closed", IPv4: netip.MustParsePrefix("10.2.0.0/24"), IPv6: netip.MustParsePrefix("fd00:2::/64"), Internal: true},
		{ID: "routed", IPv4: netip.MustParsePrefix("10.3.0.0/24"), IPv6: netip.MustParsePrefix("2001:db8:3::/64"), RoutedInbound: true},
	}
	// Internal: both directions dropped. Default: new inbound connections
	// dropped unless published. Routed: nothing.
	want4 := [][]string{
		args("-s 10.2.0.0/24 -j DROP"), args("-d 10.2.0.0/24 -j DROP"),
		args("-d 10.1.0.0/24 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"),
	}
	if got := forwardRules(IPv4, nets); !reflect.DeepEqual(got, want4) {
		t.Errorf("IPv4: got %q, want %q", got, want4)
	}
	want6 := [][]string{args("-s fd00:2::/64 -j DROP"), args("-d fd00:2::/64 -j DROP")}
	if got := forwardRules(IPv6, nets); !reflect.DeepEqual(got, want6) {
		t.Errorf("IPv6: got %q, want %q", got, want6)
	}
}

func TestInstanceChainNamesFitIPTables(t *testing.T) {
	for _, tc := range []struct {
		instance string
		wantDNAT string
	}{
		{"membrane0", "MBR-membrane0-DNAT"},
		{"mbrit1", "MBR-mbrit1-DNAT"},
		{"a-very-long-dev", "MBR-a-very-long-dev-DNAT"},
		{"dev with space", ""}, // hashed
		{"", ""},
	} {
		c := instanceChains(tc.instance)
		for _, name := range []string{c.dnat, c.post, c.fwd} {
			if len(name) > maxChainName || strings.ContainsAny(name, " \t!") {
				t.Errorf("instance %q: chain %q is not a valid iptables chain name", tc.instance, name)
			}
		}
		if tc.wantDNAT != "" && c.dnat != tc.wantDNAT {
			t.Errorf("instance %q: DNAT chain %q, want %q", tc.instance, c.dnat, tc.wantDNAT)
		}
	}
	if instanceChains("a") == instanceChains("b") {
		t.Error("two instances share chains")
	}
}

func TestStructureJumps(t *testing.T) {
	c := instanceChains("membrane0")
	for _, tc := range []struct {
		fam       Family
		wantJumps []string
	}{
		{IPv4, []string{
			"nat PREROUTING -m addrtype --dst-type LOCAL -j MEMBRANE-DNAT",
			"nat OUTPUT -m addrtype --dst-type LOCAL -j MEMBRANE-DNAT",
			"nat POSTROUTING -j MEMBRANE-POSTROUTING",
			"filter FORWARD -j MEMBRANE-FORWARD",
			"nat MEMBRANE-DNAT -j MBR-membrane0-DNAT",
			"nat MEMBRANE-POSTROUTING -j MBR-membrane0-POST",
			"filter MEMBRANE-FORWARD -j MBR-membrane0-FWD",
			"filter INPUT -j MEMBRANE-INPUT",
		}},
		{IPv6, []string{
			"nat PREROUTING -m addrtype --dst-type LOCAL -j MEMBRANE-DNAT",
			"nat OUTPUT ! -d ::1/128 -m addrtype --dst-type LOCAL -j MEMBRANE-DNAT",
			"nat POSTROUTING -j MEMBRANE-POSTROUTING",
			"filter FORWARD -j MEMBRANE-FORWARD",
			"nat MEMBRANE-DNAT -j MBR-membrane0-DNAT",
			"nat MEMBRANE-POSTROUTING -j MBR-membrane0-POST",
			"filter MEMBRANE-FORWARD -j MBR-membrane0-FWD",
		}},
	} {
		_, jumps := c.structure(tc.fam)
		var got []string
		for _, j := range jumps {
			got = append(got, j.table+" "+j.chain+" "+strings.Join(j.rule, " "))
		}
		if !reflect.DeepEqual(got, tc.wantJumps) {
			t.Errorf("%s jumps:\n got %q\nwant %q", tc.fam, got, tc.wantJumps)
		}
	}
}

func TestRestoreInputReplacesOwnChainsPerTable(t *testing.T) {
	c := instanceChains("membrane0")
	nw := Network{ID: "net1", IPv4: netip.MustParsePrefix("10.210.0.0/24"), Gateway4: netip.MustParseAddr("10.210.0.1")}
	e := ep4only
	e.Ports = []Mapping{{Proto: TCP, HostPort: 8080, Port: 7000}}
	got := string(restoreInput(c.plan(IPv4, "mbr+", State{Networks: []Network{nw}, Endpoints: []Endpoint{e}})))
	want := `*nat
:MBR-membrane0-DNAT - [0:0]
:MBR-membrane0-POST - [0:0]
-A MBR-membrane0-DNAT -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.210.0.3:7000
-A MBR-membrane0-POST -s 10.210.0.0/24 ! -o mbr+ -j MASQUERADE
-A MBR-membrane0-POST -s 127.0.0.0/8 -d 10.210.0.0/24 -j SNAT --to-source 10.210.0.1
COMMIT
*filter
:MBR-membrane0-FWD - [0:0]
:MEMBRANE-INPUT - [0:0]
-A MBR-membrane0-FWD -d 10.210.0.0/24 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A MEMBRANE-INPUT -d 127.0.0.0/8 -i mbr+ -m conntrack ! --ctstate RELATED,ESTABLISHED -j DROP
COMMIT
`
	if got != want {
		t.Errorf("restore input:\n%s\nwant:\n%s", got, want)
	}
	// Nothing in state: the chains are declared, hence emptied.
	empty := string(restoreInput(c.plan(IPv6, "mbr+", State{})))
	for _, chain := range []string{":MBR-membrane0-DNAT", ":MBR-membrane0-POST", ":MBR-membrane0-FWD"} {
		if !strings.Contains(empty, chain+" - [0:0]\n") {
			t.Errorf("empty state does not empty %s:\n%s", chain, empty)
		}
	}
	if strings.Contains(empty, "-A ") {
		t.Errorf("empty state adds IPv6 rules:\n%s", empty)
	}
}

func TestMappingString(t *testing.T) {
	for m, want := range map[Mapping]string{
		{Proto: TCP, HostPort: 8080, Port: 7000}:                                          "*:8080->7000/tcp",
		{Proto: UDP, HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 53, Port: 5353}:  "127.0.0.1:53->5353/udp",
		{Proto: TCP, HostIP: netip.IPv6Unspecified(), HostPort: 443, Port: 8443}:          "[::]:443->8443/tcp",
		{Proto: SCTP, HostIP: netip.MustParseAddr("fd00::1"), HostPort: 9000, Port: 9000}: "[fd00::1]:9000->9000/sctp",
	} {
		if got := m.String(); got != want {
			t.Errorf("%+v.String() = %q, want %q", m, got, want)
		}
	}
}
