package driver

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/membrane-net/membrane/firewall"
	"github.com/membrane-net/membrane/state"
)

// recordingFirewall keeps the last state it was asked to program.
type recordingFirewall struct {
	last  firewall.State
	syncs int
	err   error
}

func (f *recordingFirewall) Sync(s firewall.State) error {
	f.last, f.syncs = s, f.syncs+1
	return f.err
}

func newPortsDriver(t *testing.T) (*Driver, *recordingFirewall) {
	t.Helper()
	drv := newTestDriver(t)
	fw := &recordingFirewall{}
	drv.cfg.Firewall = fw
	drv.cfg.Ports = firewall.PortAllocator{EphemeralFirst: 40000, EphemeralLast: 40009}
	if err := drv.CreateNetwork(testNetReq); err != nil {
		t.Fatal(err)
	}
	if _, err := drv.CreateEndpoint(testEpReq); err != nil {
		t.Fatal(err)
	}
	return drv, fw
}

func portsOf(t *testing.T, drv *Driver, id string) []state.PortMapping {
	t.Helper()
	ep, err := state.GetEndpoint(drv.store.Read(), id)
	if err != nil {
		t.Fatal(err)
	}
	return ep.Ports
}

func TestProgramExternalConnectivityRecordsAndRevokes(t *testing.T) {
	drv, fw := newPortsDriver(t)
	reqs := []firewall.Request{
		{Proto: firewall.TCP, HostPort: 8080, HostPortEnd: 8080, Port: 7000},
		{Proto: firewall.UDP, HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 8090, Port: 7001},
		{Proto: firewall.TCP, Port: 7002}, // -p 7002: an ephemeral port
	}
	want := []state.PortMapping{
		{Proto: "tcp", HostPort: 8080, Port: 7000},
		{Proto: "tcp", HostPort: 40000, Port: 7002},
		{Proto: "udp", HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 8090, Port: 7001},
	}
	for i := range 2 { // a retry keeps what the first call picked
		if _, err := drv.ProgramExternalConnectivity("net1", testEpReq.EndpointID, reqs); err != nil {
			t.Fatalf("ProgramExternalConnectivity #%d: %v", i, err)
		}
		if got := portsOf(t, drv, testEpReq.EndpointID); !reflect.DeepEqual(got, want) {
			t.Fatalf("ports after call #%d:\n got %+v\nwant %+v", i, got, want)
		}
	}
	if len(fw.last.Endpoints) != 1 || len(fw.last.Endpoints[0].Ports) != 3 || fw.last.Endpoints[0].Interface != hostIfName(testEpReq.EndpointID) {
		t.Fatalf("firewall was given %+v, want the endpoint with its three ports", fw.last)
	}

	// Another endpoint cannot take 8080, but gets the next ephemeral port.
	other := testEpReq
	other.EndpointID, other.IPv4, other.IPv6 = "fedcba9876543210", netip.MustParsePrefix("10.77.0.6/24"), netip.MustParsePrefix("fd00:77::6/64")
	if _, err := drv.CreateEndpoint(other); err != nil {
		t.Fatal(err)
	}
	_, err := drv.ProgramExternalConnectivity("net1", other.EndpointID, reqs[:1])
	if !errors.Is(err, firewall.ErrPortAllocated) {
		t.Fatalf("second endpoint on 8080 = %v, want ErrPortAllocated", err)
	}
	if got := portsOf(t, drv, other.EndpointID); len(got) != 0 {
		t.Fatalf("refused endpoint recorded ports %+v", got)
	}
	if _, err := drv.ProgramExternalConnectivity("net1", other.EndpointID, reqs[2:]); err != nil {
		t.Fatal(err)
	}
	if got := portsOf(t, drv, other.EndpointID); len(got) != 1 || got[0].HostPort != 40001 {
		t.Fatalf("second endpoint's ephemeral port: %+v, want 40001", got)
	}

	for i := range 2 {
		if err := drv.RevokeExternalConnectivity("net1", testEpReq.EndpointID); err != nil {
			t.Fatalf("RevokeExternalConnectivity #%d: %v", i, err)
		}
	}
	if got := portsOf(t, drv, testEpReq.EndpointID); len(got) != 0 {
		t.Fatalf("ports after revoke: %+v", got)
	}
	if err := drv.RevokeExternalConnectivity("net1", "unknown"); err != nil {
		t.Fatalf("RevokeExternalConnectivity(unknown) = %v", err)
	}
	if _, err := drv.ProgramExternalConnectivity("net1", "unknown", reqs); !errors.Is(err, ErrEndpointNotFound) {
		t.Fatalf("ProgramExternalConnectivity(unknown) = %v, want ErrEndpointNotFound", err)
	}

	// Deleting an endpoint that still publishes (Docker never revoked)
	// takes its rules away too.
	syncs := fw.syncs
	if err := drv.DeleteEndpoint("net1", other.EndpointID); err != nil {
		t.Fatal(err)
	}
	if fw.syncs == syncs {
		t.Fatal("deleting an endpoint with published ports did not reprogram the firewall")
	}
	for _, e := range fw.last.Endpoints {
		if e.ID == other.EndpointID {
			t.Fatalf("deleted endpoint still given to the firewall: %+v", fw.last)
		}
	}
}

func TestProgramExternalConnectivityRollsBackWhenTheFirewallFails(t *testing.T) {
	drv, fw := newPortsDriver(t)
	fw.err = errors.New("iptables broke")
	_, err := drv.ProgramExternalConnectivity("net1", testEpReq.EndpointID, []firewall.Request{{Proto: firewall.TCP, HostPort: 8080, Port: 80}})
	if err == nil {
		t.Fatal("ProgramExternalConnectivity succeeded while the firewall failed")
	}
	if got := portsOf(t, drv, testEpReq.EndpointID); len(got) != 0 {
		t.Fatalf("ports recorded although they were never programmed: %+v", got)
	}
}

func TestInternalNetworkHasNoDefaultRouteAndPublishesNothing(t *testing.T) {
	drv := newTestDriver(t)
	fw := &recordingFirewall{}
	drv.cfg.Firewall = fw
	req := testNetReq
	req.Internal = true
	if err := drv.CreateNetwork(req); err != nil {
		t.Fatal(err)
	}
	if len(fw.last.Networks) != 1 || !fw.last.Networks[0].Internal || fw.last.Networks[0].IPv4 != testV4 {
		t.Fatalf("firewall was given %+v, want the internal network", fw.last)
	}
	if _, err := drv.CreateEndpoint(testEpReq); err != nil {
		t.Fatal(err)
	}
	j, err := drv.Join("net1", testEpReq.EndpointID, "/x")
	if err != nil || j.Gateway.IsValid() || j.GatewayIPv6.IsValid() {
		t.Fatalf("Join on an internal network = %+v, %v; want no gateways", j, err)
	}
	ports, err := drv.ProgramExternalConnectivity("net1", testEpReq.EndpointID, []firewall.Request{{Proto: firewall.TCP, HostPort: 8080, Port: 80}})
	if err != nil || len(ports) != 0 || len(portsOf(t, drv, testEpReq.EndpointID)) != 0 {
		t.Fatalf("ProgramExternalConnectivity on an internal network = %v, %v; want nothing published", ports, err)
	}
	if err := drv.DeleteEndpoint("net1", testEpReq.EndpointID); err != nil {
		t.Fatal(err)
	}
	if err := drv.DeleteNetwork("net1"); err != nil {
		t.Fatal(err)
	}
	if len(fw.last.Networks) != 0 {
		t.Fatalf("firewall still given %+v after the network was deleted", fw.last.Networks)
	}
}
