package ipam

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// lastAddr returns the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	p = p.Masked()
	if p.Addr().Is4() {
		b := p.Addr().As4()
		setHostBits(b[:], p.Bits())
		return netip.AddrFrom4(b)
	}
	b := p.Addr().As16()
	setHostBits(b[:], p.Bits())
	return netip.AddrFrom16(b)
}

func setHostBits(b []byte, bits int) {
	for i := range b {
		switch {
		case bits >= 8*(i+1):
		case bits <= 8*i:
			b[i] = 0xff
		default:
			b[i] |= 0xff >> (bits - 8*i)
		}
	}
}

// reserved says whether a is an address of pool that is never handed out,
// and what it is: the IPv4 network and broadcast addresses (not in /31 and
// /32 pools, RFC 3021) or the IPv6 subnet-router anycast address.
func reserved(pool netip.Prefix, a netip.Addr) (string, bool) {
	if a.Is4() {
		if 32-pool.Bits() < 2 {
			return "", false
		}
		switch a {
		case pool.Addr():
			return "network address", true
		case lastAddr(pool):
			return "broadcast address", true
		}
		return "", false
	}
	if a == pool.Addr() {
		return "subnet-router anycast address", true
	}
	return "", false
}

// firstUsable returns the lowest address of pool that is not reserved.
func firstUsable(pool netip.Prefix) (netip.Addr, bool) {
	a := pool.Addr()
	if _, r := reserved(pool, a); r {
		a = a.Next()
	}
	if !a.IsValid() || !pool.Contains(a) {
		return netip.Addr{}, false
	}
	if _, r := reserved(pool, a); r {
		return netip.Addr{}, false
	}
	return a, true
}

// nextFreePrefix returns the lowest prefix of length bits inside within that
// overlaps none of taken. taken may hold prefixes of any length and family.
func nextFreePrefix(within netip.Prefix, bits int, taken []netip.Prefix) (netip.Prefix, bool) {
	within = within.Masked()
	cand := netip.PrefixFrom(within.Addr(), bits)
	for within.Contains(cand.Addr()) {
		// Of the taken prefixes overlapping cand, the one ending last.
		var hit netip.Prefix
		for _, t := range taken {
			if t.Overlaps(cand) && (!hit.IsValid() || lastAddr(hit).Less(lastAddr(t))) {
				hit = t
			}
		}
		if !hit.IsValid() {
			return cand, true
		}
		// Jump to the first aligned prefix after hit.
		next := lastAddr(hit).Next()
		if !next.IsValid() {
			return netip.Prefix{}, false
		}
		c := netip.PrefixFrom(next, bits).Masked()
		if c.Addr() != next {
			// hit ends inside c, so c overlaps it: take the one after.
			if next = lastAddr(c).Next(); !next.IsValid() {
				return netip.Prefix{}, false
			}
			c = netip.PrefixFrom(next, bits)
		}
		cand = c
	}
	return netip.Prefix{}, false
}

// parsePrefix parses a user's CIDR prefix and clears its host bits.
func parsePrefix(what, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s %q: %w: not an address prefix in CIDR notation (like 10.1.0.0/24 or fd00:1::/64)", what, s, ErrBadRequest)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%s %q: %w: IPv4-mapped IPv6 prefixes are not supported; write the IPv4 prefix", what, s, ErrBadRequest)
	}
	return p.Masked(), nil
}

// parseAddr parses an address as Docker sends it: bare, or with a prefix
// length, which is ignored.
func parseAddr(s string) (netip.Addr, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("address %q: %w: not an IP address", s, ErrBadRequest)
		}
		return p.Addr().Unmap(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("address %q: %w: not an IP address", s, ErrBadRequest)
	}
	return a.Unmap(), nil
}

// newULA returns a random RFC 4193 unique local /48: fd00::/8 followed by a
// 40-bit global ID read from r.
func newULA(r io.Reader) (netip.Prefix, error) {
	var b [16]byte
	b[0] = 0xfd
	if _, err := io.ReadFull(r, b[1:6]); err != nil {
		return netip.Prefix{}, fmt.Errorf("ULA global ID: %w", err)
	}
	return netip.PrefixFrom(netip.AddrFrom16(b), 48), nil
}

var ulaRange = netip.MustParsePrefix("fd00::/8")

// parseULA checks a stored ULA prefix.
func parseULA(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if p.Bits() != 48 || p != p.Masked() || !ulaRange.Contains(p.Addr()) {
		return netip.Prefix{}, fmt.Errorf("%s is not a /48 inside fd00::/8", p)
	}
	return p, nil
}
