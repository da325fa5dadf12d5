package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// netnsPath is where `ip netns add NAME` puts a namespace.
func netnsPath(name string) string { return filepath.Join("/run/netns", name) }

// addNetns creates a named network namespace with its loopback up.
func addNetns(ctx context.Context, name string) error {
	if _, err := runCmd(ctx, "ip", "netns", "add", name); err != nil {
		return fmt.Errorf("create netns %s: %w", name, err)
	}
	if _, err := runCmd(ctx, "ip", "-n", name, "link", "set", "lo", "up"); err != nil {
		return fmt.Errorf("netns %s: loopback up: %w", name, err)
	}
	return nil
}

func delNetns(ctx context.Context, name string) error {
	if _, err := os.Stat(netnsPath(name)); os.IsNotExist(err) {
		return nil
	}
	if _, err := runCmd(ctx, "ip", "netns", "del", name); err != nil {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	return nil
}

// staleNetns lists the namespaces an earlier, crashed run left.
func staleNetns() []string {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), namePrefix+"-") {
			names = append(names, e.Name())
		}
	}
	return names
}

// vethEnd is one end of a veth pair: its namespace, name and address,
// and optionally an IPv6 address.
type vethEnd struct {
	netns string
	dev   string
	addr  netip.Prefix
	addr6 netip.Prefix // none if not valid
}

// addVethPair connects two namespaces with a veth pair and puts an
// address on each end; an IPv6 address goes on without duplicate address
// detection, so it is usable at once.
func addVethPair(ctx context.Context, a, b vethEnd) error {
	if _, err := runCmd(ctx, "ip", "-n", a.netns, "link", "add", a.dev, "type", "veth", "peer", "name", b.dev, "netns", b.netns); err != nil {
		return fmt.Errorf("veth %s/%s - %s/%s: %w", a.netns, a.dev, b.netns, b.dev, err)
	}
	for _, end := range []vethEnd{a, b} {
		if _, err := runCmd(ctx, "ip", "-n", end.netns, "addr", "add", end.addr.String(), "dev", end.dev); err != nil {
			return fmt.Errorf("netns %s: address %s on %s: %w", end.netns, end.addr, end.dev, err)
		}
		if end.addr6.IsValid() {
			if _, err := runCmd(ctx, "ip", "-n", end.netns, "-6", "addr", "add", end.addr6.String(), "dev", end.dev, "nodad"); err != nil {
				return fmt.Errorf("netns %s: address %s on %s: %w", end.netns, end.addr6, end.dev, err)
			}
		}
		if _, err := runCmd(ctx, "ip", "-n", end.netns, "link", "set", end.dev, "up"); err != nil {
			return fmt.Errorf("netns %s: %s up: %w", end.netns, end.dev, err)
		}
	}
	return nil
}

// enableForwarding turns on IPv4 forwarding in a named namespace. Writing
// /proc/sys/net from a thread inside the namespace sets the namespace's
// own value (net.* sysctls are per namespace), with no sysctl binary.
func enableForwarding(name string) error {
	err := inNamedNetns(name, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644)
	})
	if err != nil {
		return fmt.Errorf("netns %s: enable forwarding: %w", name, err)
	}
	return nil
}
