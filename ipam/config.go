package ipam

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"
)

// Defaults of Config.
const (
	DefaultLocalSpace   = "membrane-local"
	DefaultGlobalSpace  = "membrane-global"
	DefaultIPv4PoolBits = 24
	DefaultIPv6PoolBits = 64
)

// DefaultIPv4Range is where dynamic IPv4 pools come from by default.
var DefaultIPv4Range = netip.MustParsePrefix("10.210.0.0/16")

// Config configures an Allocator. Zero fields take the defaults.
type Config struct {
	// LocalSpace and GlobalSpace name the two address spaces
	// (DefaultLocalSpace, DefaultGlobalSpace).
	LocalSpace, GlobalSpace string
	// IPv4Range is where dynamic IPv4 pools come from (DefaultIPv4Range).
	IPv4Range netip.Prefix
	// IPv4PoolBits is the prefix length of dynamic IPv4 pools (24); at
	// least IPv4Range's length and at most 30.
	IPv4PoolBits int
	// IPv6PoolBits is the prefix length of dynamic IPv6 pools (64), carved
	// from the host's ULA /48; between 48 and 126.
	IPv6PoolBits int
	// HostRoutes returns the prefixes routed on the host right now; dynamic
	// IPv4 pools avoid them (a default route is ignored). Nil means none:
	// the daemon must inject the real one.
	HostRoutes func() ([]netip.Prefix, error)
	// Now is the clock (time.Now).
	Now func() time.Time
	// Rand is the source of the ULA global ID (crypto/rand.Reader).
	Rand io.Reader
}

func (c Config) withDefaults() (Config, error) {
	if c.LocalSpace == "" {
		c.LocalSpace = DefaultLocalSpace
	}
	if c.GlobalSpace == "" {
		c.GlobalSpace = DefaultGlobalSpace
	}
	if c.LocalSpace == c.GlobalSpace {
		return c, fmt.Errorf("ipam config: local and global address spaces are both %q", c.LocalSpace)
	}
	if !c.IPv4Range.IsValid() {
		c.IPv4Range = DefaultIPv4Range
	}
	if !c.IPv4Range.Addr().Is4() {
		return c, fmt.Errorf("ipam config: IPv4 range %s is not an IPv4 prefix", c.IPv4Range)
	}
	if m := c.IPv4Range.Masked(); m != c.IPv4Range {
		return c, fmt.Errorf("ipam config: IPv4 range %s has host bits set (did you mean %s?)", c.IPv4Range, m)
	}
	if c.IPv4PoolBits == 0 {
		c.IPv4PoolBits = DefaultIPv4PoolBits
	}
	if c.IPv4PoolBits < c.IPv4Range.Bits() || c.IPv4PoolBits > 30 {
		return c, fmt.Errorf("ipam config: IPv4 pool length /%d must be between the range's /%d and /30", c.IPv4PoolBits, c.IPv4Range.Bits())
	}
	if c.IPv6PoolBits == 0 {
		c.IPv6PoolBits = DefaultIPv6PoolBits
	}
	if c.IPv6PoolBits < 48 || c.IPv6PoolBits > 126 {
		return c, fmt.Errorf("ipam config: IPv6 pool length /%d must be between /48 and /126", c.IPv6PoolBits)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	return c, nil
}

var errNilStore = errors.New("ipam: nil state store")
