package driver

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// spareLinks lists the interfaces named as spares, by name.
func spareLinks(t *testing.T, drv *Driver) map[string]netlink.Link {
	t.Helper()
	links, err := drv.k.nl.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	spares := map[string]netlink.Link{}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, spareHostPrefix) {
			spares[l.Attrs().Name] = l
		}
	}
	return spares
}

// tcxPrograms is the number of programs on ifindex's tcx hook.
func tcxPrograms(t *testing.T, ifindex int, attach ebpf.AttachType) int {
	t.Helper()
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: attach})
	if err != nil {
		t.Fatalf("query tcx programs of %d: %v", ifindex, err)
	}
	return len(res.Programs)
}

func TestEndpointsAdoptSpareVeths(t *testing.T) {
	drv := newTestDriverWith(t, Config{HostDevice: "mbtest0", SpareVeths: 2})
	if err := drv.FillSpares(); err != nil {
		t.Fatal(err)
	}
	spares := spareLinks(t, drv)
	if len(spares) != 2 {
		t.Fatalf("spares after FillSpares: %d, want 2", len(spares))
	}
	var ifindexes []int
	for name, l := range spares {
		if l.Attrs().Alias != spareAlias("mbtest0") || l.Attrs().Flags&net.FlagUp != 0 {
			t.Errorf("spare %s: alias %q, flags %v; want alias %q and down", name, l.Attrs().Alias, l.Attrs().Flags, spareAlias("mbtest0"))
		}
		for _, a := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			if n := tcxPrograms(t, l.Attrs().Index, a); n != 1 {
				t.Errorf("spare %s: %d programs on %v, want the placeholder", name, n, a)
			}
		}
		ifindexes = append(ifindexes, l.Attrs().Index)
	}

	if err := drv.CreateNetwork(testNetReq); err != nil {
		t.Fatal(err)
	}
	req := testEpReq
	req.MAC = "02:11:22:33:44:55"
	if _, err := drv.CreateEndpoint(req); err != nil {
		t.Fatal(err)
	}
	host, err := drv.k.nl.LinkByName(hostIfName(req.EndpointID))
	if err != nil {
		t.Fatalf("host veth: %v", err)
	}
	if !slices.Contains(ifindexes, host.Attrs().Index) {
		t.Errorf("endpoint's veth has ifindex %d, want one of the spares' %v", host.Attrs().Index, ifindexes)
	}
	if host.Attrs().Alias != "" || host.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("endpoint's veth: alias %q, flags %v; want no alias, up", host.Attrs().Alias, host.Attrs().Flags)
	}
	peer, err := drv.k.nl.LinkByName(peerIfName(req.EndpointID))
	if err != nil {
		t.Fatalf("peer veth: %v", err)
	}
	if peer.Attrs().HardwareAddr.String() != req.MAC {
		t.Errorf("peer MAC %s, want %s", peer.Attrs().HardwareAddr, req.MAC)
	}
	for _, a := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
		if n := tcxPrograms(t, host.Attrs().Index, a); n != 1 {
			t.Errorf("endpoint's veth: %d programs on %v, want its own only (the placeholder replaced)", n, a)
		}
	}
	if attached, err := drv.dp.AttachedEndpoints(); err != nil || !slices.Equal(attached, []string{req.EndpointID}) {
		t.Errorf("attached endpoints %v, %v; want the endpoint (its links pinned)", attached, err)
	}
	if n := len(spareLinks(t, drv)); n != 1 {
		t.Errorf("spares after one endpoint: %d, want 1", n)
	}

	// A crash leaves spares behind: the next start removes this daemon's,
	// not another daemon's.
	other := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: spareHostPrefix + "0ther0000000"}, PeerName: sparePeerPrefix + "0ther0000000"}
	if err := drv.k.nl.LinkAdd(other); err != nil {
		t.Fatal(err)
	}
	if err := drv.k.nl.LinkSetAlias(other, spareAlias("othermb0")); err != nil {
		t.Fatal(err)
	}
	if err := drv.Reconcile(); err != nil {
		t.Fatal(err)
	}
	left := spareLinks(t, drv)
	if len(left) != 1 || left[other.Name] == nil {
		t.Errorf("spares after Reconcile: %v, want only the other daemon's %s", keys(left), other.Name)
	}

	if err := drv.DeleteEndpoint(req.NetworkID, req.EndpointID); err != nil {
		t.Fatal(err)
	}
	if _, err := drv.k.nl.LinkByName(hostIfName(req.EndpointID)); !isNotFound(err) {
		t.Errorf("veth still there after DeleteEndpoint: %v", err)
	}
}

func TestSparesRefilledAndRemoved(t *testing.T) {
	drv := newTestDriverWith(t, Config{HostDevice: "mbtest0", SpareVeths: 1})
	if err := drv.CreateNetwork(testNetReq); err != nil {
		t.Fatal(err)
	}
	// Without spares, an endpoint gets a veth pair of its own.
	if _, err := drv.CreateEndpoint(testEpReq); err != nil {
		t.Fatal(err)
	}
	if n := len(spareLinks(t, drv)); n != 0 {
		t.Fatalf("%d spares before FillSpares", n)
	}
	for range 2 {
		if err := drv.FillSpares(); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(spareLinks(t, drv)); n != 1 {
		t.Fatalf("spares after FillSpares twice: %d, want 1", n)
	}
	// A spare that vanished is not adopted; the endpoint gets a new pair.
	for name := range spareLinks(t, drv) {
		if err := drv.k.deleteLink(name); err != nil {
			t.Fatal(err)
		}
	}
	req := testEpReq
	req.EndpointID = "fedcba9876543210fedc"
	req.IPv4, req.IPv6 = netip.MustParsePrefix("10.77.0.6/24"), netip.MustParsePrefix("fd00:77::6/64")
	if _, err := drv.CreateEndpoint(req); err != nil {
		t.Fatalf("CreateEndpoint with a vanished spare: %v", err)
	}
	if err := drv.FillSpares(); err != nil {
		t.Fatal(err)
	}
	if err := drv.RemoveSpares(); err != nil {
		t.Fatal(err)
	}
	if left := spareLinks(t, drv); len(left) != 0 {
		t.Errorf("spares after RemoveSpares: %v", keys(left))
	}
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
