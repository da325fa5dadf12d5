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
)

// networkOptions are the parsed driver options of one network.
type networkOptions struct {
	MTU      int
	IPv4Only bool
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
	return parsed, nil
}
