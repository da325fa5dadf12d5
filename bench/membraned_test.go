package bench

import (
	"bufio"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParseDockerCallsPicksTheMethodsDurations(t *testing.T) {
	log := `time=2026-11-23T06:36:46.264Z level=DEBUG msg="docker call" method=/IpamDriver.RequestAddress duration=391.134µs
time=2026-11-23T06:36:46.348Z level=DEBUG msg="docker call" method=/NetworkDriver.CreateEndpoint duration=78.719706ms
time=2026-11-23T06:36:46.366Z level=DEBUG msg="docker call" method=/NetworkDriver.Join duration=5.641068ms
time=2026-11-23T06:36:46.906Z level=INFO msg="policy applied" revision=54 rules=4
time=2026-11-23T06:36:47.348Z level=DEBUG msg="docker call" method=/NetworkDriver.CreateEndpoint duration=1.5s
`
	got, err := parseDockerCalls(bufio.NewScanner(strings.NewReader(log)), "/NetworkDriver.CreateEndpoint")
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{78719706 * time.Nanosecond, 1500 * time.Millisecond}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("durations = %v, want %v", got, want)
	}
}

func TestRoutePrefixesReadsIpRouteOutput(t *testing.T) {
	out := `default via 192.0.2.1 dev eth0
192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2
local 192.0.2.2 dev eth0 table local proto kernel scope host src 192.0.2.2
10.200.3.0/24 dev mbrbn0 proto kernel scope link src 10.200.3.1
`
	ps := routePrefixes(out)
	if len(ps) != 3 {
		t.Fatalf("prefixes %v, want 3", ps)
	}
	if !overlapsAny(ps[2], ps) || overlapsAny(ps[0], ps[2:]) {
		t.Errorf("overlap checks wrong for %v", ps)
	}
}

func TestAddressPlanCarvesDisjointSubnets(t *testing.T) {
	plan := addressPlan{base: netip.MustParsePrefix("10.201.0.0/16")}
	subnets := []netip.Prefix{
		plan.subnet24(octetBridge), plan.subnet24(octetOpen), plan.subnet24(octetPolicy), plan.scaleSubnet(), plan.daemonRange(),
	}
	a, b := plan.link(0)
	c, d := plan.link(1)
	if a.String() != "10.201.64.1/30" || b.String() != "10.201.64.2/30" || c.String() != "10.201.64.5/30" || d.Addr().String() != "10.201.64.6" {
		t.Errorf("links 0 and 1 = %s %s %s %s", a, b, c, d)
	}
	last, _ := plan.link(firstAttachLink + 399)
	subnets = append(subnets, a.Masked(), c.Masked(), last.Masked())
	for i, p := range subnets {
		if !plan.base.Contains(p.Addr()) {
			t.Errorf("%s is outside %s", p, plan.base)
		}
		for _, q := range subnets[i+1:] {
			if p.Overlaps(q) {
				t.Errorf("%s overlaps %s", p, q)
			}
		}
	}
}
