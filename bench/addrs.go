package bench

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
)

// addressPlan is where every setup's addresses come from: one private IPv4
// /16 that no route of the host touches, carved up.
type addressPlan struct {
	base netip.Prefix
}

// Subnets of the plan, by third octet.
const (
	octetBridge   = 1   // Docker bridge network, /24
	octetOpen     = 2   // membrane network without policy, /24
	octetPolicy   = 3   // membrane network with policy, /24
	octetScale    = 8   // membrane network for the endpoint-count runs, /21
	octetLinks    = 64  // namespace-only links, /30 each (64.0 to 127.255)
	octetDaemonV4 = 128 // the daemon's --ipv4-range, /17
)

// pickAddressPlan takes the first 10.X.0.0/16 (X from 200 to 233; the
// integration suite uses 234 and up) that overlaps no route of the host.
func pickAddressPlan(ctx context.Context) (addressPlan, error) {
	out, err := runCmd(ctx, "ip", "-4", "route", "show", "table", "all")
	if err != nil {
		return addressPlan{}, fmt.Errorf("list routes: %w", err)
	}
	used := routePrefixes(out)
	for x := 200; x < 234; x++ {
		p := netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", x))
		if !overlapsAny(p, used) {
			return addressPlan{base: p}, nil
		}
	}
	return addressPlan{}, fmt.Errorf("no 10.X.0.0/16 with X in 200-233 is free of routes on this host")
}

// routePrefixes reads the destinations of `ip route` output; "default" and
// other non-prefix destinations are skipped.
func routePrefixes(out string) []netip.Prefix {
	var ps []netip.Prefix
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		dst := f[0]
		if dst == "local" || dst == "broadcast" || dst == "unicast" {
			if len(f) < 2 {
				continue
			}
			dst = f[1]
		}
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		if p, err := netip.ParsePrefix(dst); err == nil && p.Addr().Is4() {
			ps = append(ps, p)
		}
	}
	return ps
}

func overlapsAny(p netip.Prefix, ps []netip.Prefix) bool {
	for _, q := range ps {
		if p.Overlaps(q) {
			return true
		}
	}
	return false
}

func (a addressPlan) octets() (byte, byte) {
	b := a.base.Addr().As4()
	return b[0], b[1]
}

// subnet24 is the /24 with that third octet.
func (a addressPlan) subnet24(third int) netip.Prefix {
	o1, o2 := a.octets()
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{o1, o2, byte(third), 0}), 24)
}

func (a addressPlan) scaleSubnet() netip.Prefix {
	o1, o2 := a.octets()
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{o1, o2, octetScale, 0}), 21)
}

func (a addressPlan) daemonRange() netip.Prefix {
	o1, o2 := a.octets()
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{o1, o2, octetDaemonV4, 0}), 17)
}

// host returns the address with that last octet in a /24.
func host(subnet netip.Prefix, last int) netip.Addr {
	b := subnet.Addr().As4()
	b[3] = byte(last)
	return netip.AddrFrom4(b)
}

// link returns the two ends (.1 and .2) of the i-th namespace-only /30.
func (a addressPlan) link(i int) (netip.Prefix, netip.Prefix) {
	o1, o2 := a.octets()
	n := i * 4
	third := octetLinks + n/256
	if third >= octetDaemonV4 {
		panic("address plan: too many links")
	}
	base := [4]byte{o1, o2, byte(third), byte(n % 256)}
	one, two := base, base
	one[3]++
	two[3] += 2
	return netip.PrefixFrom(netip.AddrFrom4(one), 30), netip.PrefixFrom(netip.AddrFrom4(two), 30)
}
