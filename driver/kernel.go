package driver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Interface name prefixes. Names are derived from the endpoint ID so that
// every step can find its veth again after a retry or a restart.
const (
	hostIfPrefix = "mbr" // host side of an endpoint's veth pair
	peerIfPrefix = "mbc" // container side, until Docker moves and renames it
	ifIDChars    = 12    // IFNAMSIZ leaves 15 characters: prefix + 12 of the ID
)

// hostIfName returns the host-side veth name of an endpoint.
func hostIfName(endpointID string) string { return hostIfPrefix + shortID(endpointID) }

// peerIfName returns the container-side veth name of an endpoint.
func peerIfName(endpointID string) string { return peerIfPrefix + shortID(endpointID) }

func shortID(id string) string {
	if len(id) > ifIDChars {
		return id[:ifIDChars]
	}
	return id
}

// kernel programs the host network namespace through one netlink handle.
type kernel struct {
	nl *netlink.Handle
}

// retryDump reruns a netlink dump that the kernel interrupted because the
// table changed underneath it.
func retryDump[T any](dump func() (T, error)) (T, error) {
	var (
		out T
		err error
	)
	for range 5 {
		out, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return out, err
}

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}

// ensureHostDevice returns the device that holds the networks' gateway
// addresses, creating it and bringing it up when needed. It is a veth pair
// whose two ends stay on the host (the dummy driver is not in every kernel):
// addresses on it are local, so a container reaches the host at its gateway.
func (k kernel) ensureHostDevice(name string) (netlink.Link, error) {
	link, err := k.nl.LinkByName(name)
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("look up host device %s: %w", name, err)
	}
	peer := hostDevicePeer(name)
	if err != nil {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer}
		if err := k.nl.LinkAdd(veth); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create host device %s: %w", name, err)
		}
		if link, err = k.nl.LinkByName(name); err != nil {
			return nil, fmt.Errorf("look up host device %s: %w", name, err)
		}
	}
	switch link.Type() {
	case "veth":
		peerLink, err := k.nl.LinkByName(peer)
		if err != nil {
			return nil, fmt.Errorf("host device %s: look up its peer %s: %w", name, peer, err)
		}
		if err := k.nl.LinkSetUp(peerLink); err != nil {
			return nil, fmt.Errorf("bring up %s: %w", peer, err)
		}
	case "dummy":
	default:
		return nil, fmt.Errorf("host device %s exists and is a %s, not a veth or dummy device: pick another name with --host-device", name, link.Type())
	}
	if err := k.nl.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("bring up host device %s: %w", name, err)
	}
	return link, nil
}

// hostDevicePeer names the other end of the host device's veth pair.
func hostDevicePeer(name string) string {
	if len(name) > 13 {
		name = name[:13]
	}
	return name + "_p"
}

// hostPrefix is the single-address prefix of addr (/32 or /128).
func hostPrefix(addr netip.Addr) *net.IPNet {
	return &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(addr.BitLen(), addr.BitLen())}
}

// ensureAddress puts addr on link as a host address (no on-link prefix, no
// duplicate address detection).
func (k kernel) ensureAddress(link netlink.Link, addr netip.Addr) error {
	a := &netlink.Addr{IPNet: hostPrefix(addr)}
	if addr.Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := k.nl.AddrReplace(link, a); err != nil {
		return fmt.Errorf("add address %s to %s: %w", addr, link.Attrs().Name, err)
	}
	return nil
}

// removeAddress removes addr from link; an address that is not there is fine.
func (k kernel) removeAddress(link netlink.Link, addr netip.Addr) error {
	err := k.nl.AddrDel(link, &netlink.Addr{IPNet: hostPrefix(addr)})
	if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !isNotFound(err) {
		return fmt.Errorf("remove address %s from %s: %w", addr, link.Attrs().Name, err)
	}
	return nil
}

// ensureVeth creates the endpoint's veth pair unless it exists already, and
// returns the host side, up.
func (k kernel) ensureVeth(hostName, peerName string, peerMAC net.HardwareAddr, mtu int) (netlink.Link, error) {
	link, err := k.nl.LinkByName(hostName)
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("look up veth %s: %w", hostName, err)
	}
	if err != nil {
		veth := &netlink.Veth{
			LinkAttrs:        netlink.LinkAttrs{Name: hostName, MTU: mtu},
			PeerName:         peerName,
			PeerHardwareAddr: peerMAC,
			PeerMTU:          uint32(mtu),
		}
		if err := k.nl.LinkAdd(veth); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create veth pair %s/%s: %w", hostName, peerName, err)
		}
		if link, err = k.nl.LinkByName(hostName); err != nil {
			return nil, fmt.Errorf("look up veth %s: %w", hostName, err)
		}
	}
	if link.Type() != "veth" {
		return nil, fmt.Errorf("interface %s exists and is a %s, not a veth", hostName, link.Type())
	}
	if err := k.nl.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("bring up veth %s: %w", hostName, err)
	}
	return link, nil
}

// deleteLink removes an interface; one that is already gone is fine.
func (k kernel) deleteLink(name string) error {
	link, err := k.nl.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up interface %s: %w", name, err)
	}
	if err := k.nl.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete interface %s: %w", name, err)
	}
	return nil
}

// ensureRouteToContainer routes addr to the endpoint's host-side veth and
// pins the container's MAC for it, so the host never needs to resolve it.
// src, when valid, is the preferred source of host-originated packets.
func (k kernel) ensureRouteToContainer(link netlink.Link, addr netip.Addr, mac net.HardwareAddr, src netip.Addr) error {
	route := &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       hostPrefix(addr),
		Scope:     netlink.SCOPE_LINK,
	}
	if src.IsValid() {
		route.Src = src.AsSlice()
	}
	if err := k.nl.RouteReplace(route); err != nil {
		return fmt.Errorf("route %s to %s: %w", addr, link.Attrs().Name, err)
	}
	family := netlink.FAMILY_V4
	if addr.Is6() {
		family = netlink.FAMILY_V6
	}
	neigh := &netlink.Neigh{
		LinkIndex:    link.Attrs().Index,
		Family:       family,
		State:        netlink.NUD_PERMANENT,
		IP:           addr.AsSlice(),
		HardwareAddr: mac,
	}
	if err := k.nl.NeighSet(neigh); err != nil {
		return fmt.Errorf("neighbour %s on %s: %w", addr, link.Attrs().Name, err)
	}
	return nil
}
