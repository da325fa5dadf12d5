package bench

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// addressPlan is where every setup's addresses come from: one private IPv4
// /16 and one unique local IPv6 /48 that no route of the host touches,
// carved up alike (the /24 with third octet N has the /64 whose fourth
// group is N beside it).
type addressPlan struct {
	base  netip.Prefix // 10.X.0.0/16
	base6 netip.Prefix // fd6d:6272:X::/48
}

// Subnets of the plan, by third octet (IPv4) and fourth group (IPv6).
const (
	octetBridge   = 1   // Docker bridge network, /24 and /64
	octetOpen     = 2   // membrane network without policy, /24 and /64
	octetPolicy   = 3   // membrane network with policy, /24 and /64
	octetBridge4  = 4   // IPv4-only Docker bridge network (docker run timing), /24
	octetOpen4    = 5   // IPv4-only membrane network (docker run timing), /24
	octetScale    = 8   // membrane network for the endpoint-count runs, /21
	octetLinks    = 64  // namespace-only links, /30 each (64.0 to 127.255)
	octetDaemonV4 = 128 // the daemon's --ipv4-range, /17
	// groupLinks6 is the fourth group of the first namespace-only link's
	// IPv6 /64; link i has groupLinks6+i.
	groupLinks6 = 0x1000
)

// pickAddressPlan takes the first X from 200 to 233 (the integration
// suite uses 234 and up) for which neither 10.X.0.0/16 nor
// fd6d:6272:X::/48 overlaps a route of the host.
func pickAddressPlan(ctx context.Context) (addressPlan, error) {
	var used []netip.Prefix
	for _, family := range []string{"-4", "-6"} {
		out, err := runCmd(ctx, "ip", family, "route", "show", "table", "all")
		if err != nil {
			return addressPlan{}, fmt.Errorf("list routes: %w", err)
		}
		used = append(used, routePrefixes(out)...)
	}
	return firstFreePlan(used)
}

// firstFreePlan is pickAddressPlan on a list of routes.
func firstFreePlan(used []netip.Prefix) (addressPlan, error) {
	for x := 200; x < 234; x++ {
		p := planFor(x)
		if !overlapsAny(p.base, used) && !overlapsAny(p.base6, used) {
			return p, nil
		}
	}
	return addressPlan{}, fmt.Errorf("no X in 200-233 with 10.X.0.0/16 and fd6d:6272:X::/48 free of routes on this host")
}

func planFor(x int) addressPlan {
	return addressPlan{
		base:  netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", x)),
		base6: netip.MustParsePrefix(fmt.Sprintf("fd6d:6272:%x::/48", x)),
	}
}

// routePrefixes reads the destinations of `ip route` or `ip -6 route`
// output; "default" and other non-prefix destinations are skipped.
func routePrefixes(out string) []netip.Prefix {
	var ps []netip.Prefix
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		dst := f[0]
		switch dst {
		case "local", "broadcast", "unicast", "anycast", "multicast", "blackhole", "unreachable", "prohibit", "throw":
			if len(f) < 2 {
				continue
			}
			dst = f[1]
		}
		if !strings.Contains(dst, "/") {
			if strings.Contains(dst, ":") {
				dst += "/128"
			} else {
				dst += "/32"
			}
		}
		if p, err := netip.ParsePrefix(dst); err == nil {
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

// subnet64 is the IPv6 /64 whose fourth group is that number, written
// as the IPv4 /24's third octet is (group 0x1 beside 10.X.1.0/24).
func (a addressPlan) subnet64(group int) netip.Prefix {
	b := a.base6.Addr().As16()
	b[6], b[7] = byte(group>>8), byte(group)
	return netip.PrefixFrom(netip.AddrFrom16(b), 64)
}

// host6 returns the address of a /64 whose last group reads as the
// decimal number last (::10 for host 10, ::100 for host 100), so an
// address of either family shows the same host number.
func host6(subnet netip.Prefix, last int) netip.Addr {
	v, err := strconv.ParseUint(strconv.Itoa(last), 16, 16)
	if err != nil {
		panic(fmt.Sprintf("address plan: host %d", last))
	}
	b := subnet.Addr().As16()
	b[14], b[15] = byte(v>>8), byte(v)
	return netip.AddrFrom16(b)
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

// link6 returns the two ends (::1 and ::2) of the i-th namespace-only
// link's IPv6 /64.
func (a addressPlan) link6(i int) (netip.Prefix, netip.Prefix) {
	if groupLinks6+i > 0xffff {
		panic("address plan: too many IPv6 links")
	}
	s := a.subnet64(groupLinks6 + i)
	b := s.Addr().As16()
	one, two := b, b
	one[15], two[15] = 1, 2
	return netip.PrefixFrom(netip.AddrFrom16(one), 64), netip.PrefixFrom(netip.AddrFrom16(two), 64)
}
