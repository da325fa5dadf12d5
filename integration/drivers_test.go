package integration

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
)

// netDriver is a network driver the connectivity tests run against.
type netDriver struct {
	// Name is the subtest name: select with -run '/bridge$' or '/membrane$'.
	Name string
	// Driver and IPAM go to `docker network create -d` and --ipam-driver
	// ("" leaves Docker's default IPAM).
	Driver string
	IPAM   string
}

var (
	// bridgeDriver is Docker's own driver: the baseline that shows a test
	// can pass on this machine.
	bridgeDriver   = netDriver{Name: "bridge", Driver: "bridge"}
	membraneDriver = netDriver{Name: "membrane", Driver: pluginName, IPAM: pluginName}
	allDrivers     = []netDriver{bridgeDriver, membraneDriver}
)

func (d netDriver) isMembrane() bool { return d.Driver == pluginName }

// forEachDriver runs fn as one subtest per driver.
func forEachDriver(t *testing.T, fn func(t *testing.T, d netDriver)) {
	for _, d := range allDrivers {
		t.Run(d.Name, func(t *testing.T) {
			requireEnv(t)
			if d.isMembrane() {
				requireMembrane(t)
			}
			fn(t, d)
		})
	}
}

// onlyMembrane runs fn as the single subtest "membrane", for behaviour the
// bridge driver does not share.
func onlyMembrane(t *testing.T, fn func(t *testing.T, d netDriver)) {
	t.Run(membraneDriver.Name, func(t *testing.T) {
		requireEnv(t)
		requireMembrane(t)
		fn(t, membraneDriver)
	})
}

// subnets are the pools asked for at `docker network create`; empty means
// the IPAM driver chooses.
type subnets struct {
	V4, V6 netip.Prefix
}

// createArgs returns the `docker network create` arguments for a dual-stack
// network of this driver. The bridge driver cannot pick an IPv6 pool by
// itself, so it always gets one.
func (d netDriver) createArgs(s subnets) []string {
	args := []string{"-d", d.Driver, "--ipv6"}
	if d.IPAM != "" {
		args = append(args, "--ipam-driver", d.IPAM)
	}
	if s.V4.IsValid() {
		args = append(args, "--subnet", s.V4.String())
	}
	if !s.V6.IsValid() && !d.isMembrane() {
		s.V6 = nextSubnets().V6
	}
	if s.V6.IsValid() {
		args = append(args, "--subnet", s.V6.String())
	}
	return args
}

// newNetwork creates a dual-stack network, with the given pools or, if s is
// zero, pools the driver picks. It is removed when the test ends.
func (d netDriver) newNetwork(t testing.TB, s subnets) string {
	t.Helper()
	return newNetwork(t, uniqueName("net"), d.createArgs(s)...)
}

var subnetSeq atomic.Int64

// nextSubnets returns a fresh IPv4 /24 and IPv6 /64 from the run's free bases.
func nextSubnets() subnets {
	n := subnetSeq.Add(1)
	if n > 255 {
		panic("integration: more than 255 test subnets")
	}
	a4 := h.v4Base.Addr().As4()
	a4[2] = byte(n)
	a16 := h.v6Base.Addr().As16()
	a16[6], a16[7] = byte(n>>8), byte(n)
	return subnets{
		V4: netip.PrefixFrom(netip.AddrFrom4(a4), 24),
		V6: netip.PrefixFrom(netip.AddrFrom16(a16), 64),
	}
}

// hostPrefixes lists every prefix and address the host's routing tables
// and interfaces mention.
func hostPrefixes(family string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, args := range [][]string{{family, "route", "show", "table", "all"}, {family, "addr", "show"}} {
		b, err := exec.Command("ip", args...).Output()
		if err != nil {
			return nil, fmt.Errorf("ip %s: %w", strings.Join(args, " "), err)
		}
		for _, tok := range strings.Fields(string(b)) {
			if p, err := netip.ParsePrefix(tok); err == nil && p.Bits() > 0 {
				out = append(out, p.Masked())
			} else if a, err := netip.ParseAddr(tok); err == nil && !a.IsUnspecified() {
				out = append(out, netip.PrefixFrom(a, a.BitLen()))
			}
		}
	}
	return out, nil
}

func overlapsAny(p netip.Prefix, used []netip.Prefix) bool {
	for _, u := range used {
		if u.Overlaps(p) {
			return true
		}
	}
	return false
}

// freeBases picks an IPv4 /16 and an IPv6 /48 that nothing on the host
// uses, so explicit test subnets never shadow a real network.
func freeBases() (v4, v6 netip.Prefix, err error) {
	used4, err := hostPrefixes("-4")
	if err != nil {
		return v4, v6, err
	}
	used6, err := hostPrefixes("-6")
	if err != nil {
		return v4, v6, err
	}
	for i := 234; i < 255 && !v4.IsValid(); i++ {
		if p := netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", i)); !overlapsAny(p, used4) {
			v4 = p
		}
	}
	for i := 0x6974; i < 0x6974+32 && !v6.IsValid(); i++ {
		if p := netip.MustParsePrefix(fmt.Sprintf("fd6d:6272:%x::/48", i)); !overlapsAny(p, used6) {
			v6 = p
		}
	}
	if !v4.IsValid() || !v6.IsValid() {
		return v4, v6, fmt.Errorf("no free private IPv4 /16 in 10.234-254 or IPv6 /48 in fd6d:6272::/32 on this host")
	}
	return v4, v6, nil
}

// addrAt returns the address at offset n inside p.
func addrAt(p netip.Prefix, n int) netip.Addr {
	a := p.Masked().Addr()
	for range n {
		a = a.Next()
	}
	return a
}
