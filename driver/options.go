package driver

import (
	"fmt"
	"strconv"
)

// Network options users pass with `docker network create -o KEY=VALUE`.
const (
	// OptionMTU sets the MTU of every endpoint's veth pair.
	OptionMTU = "com.docker.network.driver.mtu"
	// OptionIPv4Only lets a network be created without IPv6. membrane is
	// IPv6-first; this is the documented opt-out.
	OptionIPv4Only = "membrane.ipv4-only"
	// OptionInbound says what may come in from beyond the host:
	// InboundPublished (the default, as on Docker's bridge) or
	// InboundRouted.
	OptionInbound = "membrane.inbound"
)

// Values of OptionInbound.
const (
	// InboundPublished: connections from beyond the host reach the
	// containers only through published ports.
	InboundPublished = "published"
	// InboundRouted: connections from beyond the host may also reach the
	// containers' own addresses, where something routes them to this host
	// (a global IPv6 subnet, say); policy decides as for any peer.
	InboundRouted = "routed"
)

// networkOptions are the parsed driver options of one network.
type networkOptions struct {
	MTU      int
	IPv4Only bool
	// RoutedInbound is OptionInbound=routed.
	RoutedInbound bool
}

// parseNetworkOptions validates the options membrane understands and ignores
// every other key: Docker and other tools add options of their own.
func parseNetworkOptions(opts map[string]string) (networkOptions, error) {
	var parsed networkOptions
	if v, ok := opts[OptionMTU]; ok && v != "" {
		mtu, err := strconv.Atoi(v)
		if err != nil || mtu < 1280 || mtu > 65535 {
			return parsed, fmt.Errorf("%w: option %s=%q: want an integer between 1280 (the IPv6 minimum) and 65535",
				ErrInvalidOption, OptionMTU, v)
		}
		parsed.MTU = mtu
	}
	if v, ok := opts[OptionIPv4Only]; ok && v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return parsed, fmt.Errorf("%w: option %s=%q: want true or false", ErrInvalidOption, OptionIPv4Only, v)
		}
		parsed.IPv4Only = b
	}
	switch v := opts[OptionInbound]; v {
	case "", InboundPublished:
	case InboundRouted:
		parsed.RoutedInbound = true
	default:
		return parsed, fmt.Errorf("%w: option %s=%q: want %q (the default) or %q",
			ErrInvalidOption, OptionInbound, v, InboundPublished, InboundRouted)
	}
	return parsed, nil
}
