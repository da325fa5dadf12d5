package driver

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/membrane-net/membrane/datapath"
	"github.com/membrane-net/membrane/state"
)

// newTestDriver runs the test on a locked OS thread inside a fresh network
// namespace (the real host namespace is never touched) with a real state
// store and a real datapath pinned under a throwaway directory.
func newTestDriver(t *testing.T) *Driver {
	t.Helper()
	return newTestDriverWith(t, Config{HostDevice: "mbtest0"})
}

// newTestDriverWith is newTestDriver with cfg.
func newTestDriverWith(t *testing.T, cfg Config) *Driver {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("privileged test: needs root to create network namespaces, veths and BPF programs")
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatalf("get current netns: %v", err)
	}
	ns, err := netns.New() // also switches this thread into it
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		ns.Close()
		if err := netns.Set(orig); err != nil {
			t.Errorf("restore netns: %v", err)
		}
		orig.Close()
		runtime.UnlockOSThread()
	})
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	t.Cleanup(nl.Close)

	store, _, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatalf("open state: %v", err)
	}
	t.Cleanup(func() { store.Close() })
	pinDir := filepath.Join("/sys/fs/bpf", "membrane-test-"+strings.ReplaceAll(t.Name(), "/", "_"))
	os.RemoveAll(pinDir)
	dp, err := datapath.Open(datapath.Config{PinDir: pinDir})
	if err != nil {
		t.Fatalf("open datapath: %v", err)
	}
	t.Cleanup(func() {
		dp.Close()
		os.RemoveAll(pinDir)
	})
	drv, err := New(store, dp, nl, cfg)
	if err != nil {
		t.Fatalf("new driver: %v", err)
	}
	return drv
}

var (
	testV4     = netip.MustParsePrefix("10.77.0.0/24")
	testV6     = netip.MustParsePrefix("fd00:77::/64")
	testNetReq = NetworkRequest{
		ID:   "net1",
		IPv4: []IPAMData{{Pool: testV4, Gateway: netip.MustParseAddr("10.77.0.1")}},
		IPv6: []IPAMData{{Pool: testV6, Gateway: netip.MustParseAddr("fd00:77::1")}},
	}
	testEpReq = EndpointRequest{
		NetworkID: "net1", EndpointID: "0123456789abcdef0123",
		IPv4: netip.MustParsePrefix("10.77.0.5/24"), IPv6: netip.MustParsePrefix("fd00:77::5/64"),
	}
)

func TestCreateNetworkRefusesNetworkWithoutIPv6(t *testing.T) {
	drv := newTestDriver(t)
	req := testNetReq
	req.IPv6 = nil
	err := drv.CreateNetwork(req)
	if !errors.Is(err, ErrIPv6Required) || !strings.Contains(err.Error(), "--ipv6") {
		t.Fatalf("CreateNetwork without IPv6 = %v, want ErrIPv6Required naming --ipv6", err)
	}
	if _, err := state.GetNetwork(drv.store.Read(), req.ID); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("refused network was recorded: %v", err)
	}
	req.Options = map[string]string{OptionIPv4Only: "true"}
	if err := drv.CreateNetwork(req); err != nil {
		t.Fatalf("CreateNetwork with the IPv4-only opt-out: %v", err)
	}
}

func TestCreateNetworkRejectsBadOptionsAndIgnoresUnknownOnes(t *testing.T) {
	drv := newTestDriver(t)
	req := testNetReq
	req.Options = map[string]string{OptionMTU: "12"}
	if err := drv.CreateNetwork(req); !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), OptionMTU) {
		t.Fatalf("CreateNetwork with mtu=12 = %v, want ErrInvalidOption naming the option", err)
	}
	req.Options = map[string]string{OptionMTU: "1400", "com.example.unknown": "x"}
	if err := drv.CreateNetwork(req); err != nil {
		t.Fatalf("CreateNetwork with a valid MTU and an unknown option: %v", err)
	}
}

func TestDriverCallsAreIdempotent(t *testing.T) {
	drv := newTestDriver(t)
	for i := range 2 {
		if err := drv.CreateNetwork(testNetReq); err != nil {
			t.Fatalf("CreateNetwork #%d: %v", i, err)
		}
	}
	nw, err := state.GetNetwork(drv.store.Read(), "net1")
	if err != nil || nw.Index != 1 {
		t.Fatalf("network after two creates = %+v, %v; want index 1", nw, err)
	}
	dev, err := drv.k.nl.LinkByName("mbtest0")
	if err != nil {
		t.Fatalf("host device: %v", err)
	}
	addrs, _ := drv.k.nl.AddrList(dev, netlink.FAMILY_ALL)
	if !hasAddr(addrs, "10.77.0.1") || !hasAddr(addrs, "fd00:77::1") {
		t.Fatalf("host device addresses %v lack the gateways", addrs)
	}

	var macs []string
	for i := range 2 {
		mac, err := drv.CreateEndpoint(testEpReq)
		if err != nil {
			t.Fatalf("CreateEndpoint #%d: %v", i, err)
		}
		macs = append(macs, mac)
	}
	if macs[0] == "" || macs[0] != macs[1] {
		t.Fatalf("CreateEndpoint MACs = %q, want the same non-empty MAC twice", macs)
	}
	host, err := drv.k.nl.LinkByName(hostIfName(testEpReq.EndpointID))
	if err != nil {
		t.Fatalf("host veth: %v", err)
	}
	routes, _ := drv.k.nl.RouteList(host, netlink.FAMILY_ALL)
	if !hasRoute(routes, "10.77.0.5/32") || !hasRoute(routes, "fd00:77::5/128") {
		t.Fatalf("routes on %s = %v, want host routes to both container addresses", host.Attrs().Name, routes)
	}

	for i := range 2 {
		j, err := drv.Join("net1", testEpReq.EndpointID, "/var/run/docker/netns/x")
		if err != nil {
			t.Fatalf("Join #%d: %v", i, err)
		}
		if j.SrcName != peerIfName(testEpReq.EndpointID) || j.DstPrefix != "eth" ||
			j.Gateway.String() != "10.77.0.1" || j.GatewayIPv6.String() != "fd00:77::1" {
			t.Fatalf("Join #%d = %+v", i, j)
		}
	}
	for i := range 2 {
		if err := drv.Leave("net1", testEpReq.EndpointID); err != nil {
			t.Fatalf("Leave #%d: %v", i, err)
		}
		if err := drv.DeleteEndpoint("net1", testEpReq.EndpointID); err != nil {
			t.Fatalf("DeleteEndpoint #%d: %v", i, err)
		}
	}
	if _, err := drv.k.nl.LinkByName(hostIfName(testEpReq.EndpointID)); !isNotFound(err) {
		t.Fatalf("veth still there after DeleteEndpoint: %v", err)
	}
	attached, err := drv.dp.AttachedEndpoints()
	if err != nil || len(attached) != 0 {
		t.Fatalf("attached endpoints after delete = %v, %v; want none", attached, err)
	}
	for i := range 2 {
		if err := drv.DeleteNetwork("net1"); err != nil {
			t.Fatalf("DeleteNetwork #%d: %v", i, err)
		}
	}
	addrs, _ = drv.k.nl.AddrList(dev, netlink.FAMILY_ALL)
	if hasAddr(addrs, "10.77.0.1") || hasAddr(addrs, "fd00:77::1") {
		t.Fatalf("gateways left on the host device: %v", addrs)
	}
}

func TestUnknownObjectsDeleteCleanly(t *testing.T) {
	drv := newTestDriver(t)
	if err := drv.DeleteNetwork("nope"); err != nil {
		t.Errorf("DeleteNetwork(unknown) = %v", err)
	}
	if err := drv.DeleteEndpoint("nope", "nope"); err != nil {
		t.Errorf("DeleteEndpoint(unknown) = %v", err)
	}
	if err := drv.Leave("nope", "nope"); err != nil {
		t.Errorf("Leave(unknown) = %v", err)
	}
	if _, err := drv.Join("nope", "nope", "/x"); !errors.Is(err, ErrEndpointNotFound) {
		t.Errorf("Join(unknown) = %v, want ErrEndpointNotFound", err)
	}
	if _, err := drv.CreateEndpoint(testEpReq); !errors.Is(err, ErrNetworkNotFound) {
		t.Errorf("CreateEndpoint on an unknown network = %v, want ErrNetworkNotFound", err)
	}
}

func TestCreateEndpointKeepsDockersMAC(t *testing.T) {
	drv := newTestDriver(t)
	if err := drv.CreateNetwork(testNetReq); err != nil {
		t.Fatal(err)
	}
	req := testEpReq
	req.MAC = "02:42:0a:4d:00:05"
	mac, err := drv.CreateEndpoint(req)
	if err != nil || mac != "" {
		t.Fatalf("CreateEndpoint with Docker's MAC = %q, %v; want no MAC handed back", mac, err)
	}
	ep, _ := state.GetEndpoint(drv.store.Read(), req.EndpointID)
	if ep.MAC != req.MAC {
		t.Fatalf("stored MAC %q, want %q", ep.MAC, req.MAC)
	}
}

func TestReconcileRecreatesMissingVethAndRemovesStale(t *testing.T) {
	drv := newTestDriver(t)
	now := time.Unix(1_700_000_000, 0)
	drv.cfg.Now = func() time.Time { return now }
	if err := drv.CreateNetwork(testNetReq); err != nil {
		t.Fatal(err)
	}
	if _, err := drv.CreateEndpoint(testEpReq); err != nil {
		t.Fatal(err)
	}
	if err := drv.k.deleteLink(hostIfName(testEpReq.EndpointID)); err != nil {
		t.Fatal(err)
	}
	if err := drv.Reconcile(); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if _, err := drv.k.nl.LinkByName(hostIfName(testEpReq.EndpointID)); err != nil {
		t.Fatalf("Reconcile did not recreate the veth of an unjoined endpoint: %v", err)
	}

	// Docker lists the network but not the endpoint: within the grace
	// period it stays, after it it goes.
	view := DockerView{"net1": {}}
	removed, err := drv.RemoveStale(view, time.Minute)
	if err != nil || len(removed) != 0 {
		t.Fatalf("RemoveStale within grace = %v, %v; want nothing removed", removed, err)
	}
	now = now.Add(2 * time.Minute)
	removed, err = drv.RemoveStale(view, time.Minute)
	if err != nil || len(removed) != 1 || removed[0].Endpoint.ID != testEpReq.EndpointID {
		t.Fatalf("RemoveStale after grace = %v, %v; want the endpoint removed", removed, err)
	}
	// Docker no longer lists the network at all.
	if _, err := drv.RemoveStale(DockerView{}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := state.GetNetwork(drv.store.Read(), "net1"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("network Docker forgot is still in state: %v", err)
	}
}

func hasAddr(addrs []netlink.Addr, ip string) bool {
	for _, a := range addrs {
		if a.IP.String() == ip {
			return true
		}
	}
	return false
}

func hasRoute(routes []netlink.Route, dst string) bool {
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() == dst {
			return true
		}
	}
	return false
}

// Newer Docker can create networks with no IPv4 at all (--ipv4=false).
func TestIPv6OnlyNetworkAndEndpoint(t *testing.T) {
	drv := newTestDriver(t)
	req := testNetReq
	req.IPv4 = nil
	if err := drv.CreateNetwork(req); err != nil {
		t.Fatalf("CreateNetwork without IPv4: %v", err)
	}
	ep := testEpReq
	ep.IPv4 = netip.Prefix{}
	if _, err := drv.CreateEndpoint(ep); err != nil {
		t.Fatalf("CreateEndpoint with only IPv6: %v", err)
	}
	j, err := drv.Join("net1", ep.EndpointID, "/x")
	if err != nil || j.Gateway.IsValid() || j.GatewayIPv6.String() != "fd00:77::1" {
		t.Fatalf("Join = %+v, %v; want only an IPv6 gateway", j, err)
	}
}
