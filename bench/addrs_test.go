package bench

import (
	"net/netip"
	"strings"
	"testing"
)

func TestAddressPlanPairsEachIPv4SubnetWithAnIPv6One(t *testing.T) {
	plan := planFor(200)
	if plan.base.String() != "10.200.0.0/16" || plan.base6.String() != "fd6d:6272:c8::/48" {
		t.Fatalf("plan for 200 = %s and %s", plan.base, plan.base6)
	}
	for _, c := range []struct {
		got  netip.Prefix
		want string
	}{
		{plan.subnet64(octetBridge), "fd6d:6272:c8:1::/64"},
		{plan.subnet64(octetPolicy), "fd6d:6272:c8:3::/64"},
	} {
		if c.got.String() != c.want {
			t.Errorf("subnet %s, want %s", c.got, c.want)
		}
	}
	// The IPv6 host number reads like the IPv4 one.
	for last, want := range map[int]string{10: "fd6d:6272:c8:1::10", 11: "fd6d:6272:c8:1::11", 109: "fd6d:6272:c8:1::109"} {
		if got := host6(plan.subnet64(octetBridge), last); got.String() != want {
			t.Errorf("host6(%d) = %s, want %s", last, got, want)
		}
	}
	a, b := plan.link6(0)
	c, d := plan.link6(1)
	if a.String() != "fd6d:6272:c8:1000::1/64" || b.String() != "fd6d:6272:c8:1000::2/64" || c.Masked() == a.Masked() || d.Addr().String() != "fd6d:6272:c8:1001::2" {
		t.Errorf("IPv6 links 0 and 1 = %s %s %s %s", a, b, c, d)
	}
	last, _ := plan.link6(firstAttachLink + 399)
	subnets := []netip.Prefix{plan.subnet64(octetBridge), plan.subnet64(octetOpen), plan.subnet64(octetPolicy), a.Masked(), c.Masked(), last.Masked()}
	for i, p := range subnets {
		if !plan.base6.Contains(p.Addr()) {
			t.Errorf("%s is outside %s", p, plan.base6)
		}
		for _, q := range subnets[i+1:] {
			if p.Overlaps(q) {
				t.Errorf("%s overlaps %s", p, q)
			}
		}
	}
}

func TestFirstFreePlanAvoidsRoutesOfEitherFamily(t *testing.T) {
	out := `fd00::/64 dev eth0 proto kernel metric 256 pref medium
fd6d:6272:c8:2::/64 dev mbrbn0 proto kernel metric 256 pref medium
anycast fd00:: dev eth0 table local proto kernel metric 0 pref medium
local fd6d:6272:c9::1 dev lo table local proto kernel metric 0 pref medium
multicast ff00::/8 dev eth0 table local proto kernel metric 256 pref medium
default via fd00::1 dev eth0 metric 1024 pref medium
10.202.0.0/16 dev eth1 proto kernel scope link src 10.202.0.1
`
	used := routePrefixes(out)
	if len(used) != 6 {
		t.Fatalf("prefixes %v, want 6", used)
	}
	plan, err := firstFreePlan(used)
	if err != nil {
		t.Fatal(err)
	}
	// 200 (c8) and 201 (c9) have IPv6 routes, 202 an IPv4 one.
	if plan.base.String() != "10.203.0.0/16" || plan.base6.String() != "fd6d:6272:cb::/48" {
		t.Errorf("plan %s and %s, want 10.203.0.0/16 and fd6d:6272:cb::/48", plan.base, plan.base6)
	}
	if _, err := firstFreePlan([]netip.Prefix{netip.MustParsePrefix("fd6d:6272::/32")}); err == nil || !strings.Contains(err.Error(), "no X") {
		t.Errorf("every /48 taken: err = %v", err)
	}
}

func TestPathOverIPv6DialsTheIPv6Addresses(t *testing.T) {
	p := path{setup: "s",
		client: place{netns: "c", ip: netip.MustParseAddr("10.0.0.1"), ip6: netip.MustParseAddr("fd00::1")},
		server: place{netns: "s", ip: netip.MustParseAddr("10.0.0.2"), ip6: netip.MustParseAddr("fd00::2")},
	}
	if got := p.over(familyIPv4); got != p {
		t.Errorf("over IPv4 = %+v, want the path itself", got)
	}
	q := p.over(familyIPv6)
	if q.server.ip != p.server.ip6 || q.client.ip != p.client.ip6 || q.server.netns != "s" || q.setup != "s (IPv6)" {
		t.Errorf("over IPv6 = %+v", q)
	}
}

func TestFamiliesMeasureTheDockerRulesSetupOverIPv4Only(t *testing.T) {
	for _, s := range datapathSetups {
		if _, ok := setupLabels[s]; !ok {
			t.Errorf("setup %s has no label", s)
		}
	}
	if len(familySetups(familyIPv4)) != 5 || len(familySetups(familyIPv6)) != 4 {
		t.Errorf("setups: IPv4 %v, IPv6 %v", familySetups(familyIPv4), familySetups(familyIPv6))
	}
	for _, s := range familySetups(familyIPv6) {
		if s == setupRawNat {
			t.Error("the Docker-rules setup is measured over IPv6, where Docker installs no rules")
		}
	}
	if len(familyMetrics(familyIPv6, false)) != 4 || len(familyMetrics(familyIPv6, true)) != 5 || len(familyMetrics(familyIPv4, false)) != 5 {
		t.Error("IPv6 UDP must follow the flag; IPv4 always runs every load")
	}
	if datapathFamilyID(familyIPv4, setupRaw, metricRR) != "datapath/raw/rr" {
		t.Error("IPv4 series IDs must stay what they were")
	}
	if datapathFamilyID(familyIPv6, setupRaw, metricRR) == datapathID(setupRaw, metricRR) {
		t.Error("IPv6 series share IPv4's IDs")
	}
}
