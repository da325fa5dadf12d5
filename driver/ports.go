package driver

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/go-memdb"

	"github.com/membrane-net/membrane/firewall"
	"github.com/membrane-net/membrane/state"
)

// HostInterfaces matches the host side of every endpoint's veth in
// iptables' interface syntax.
const HostInterfaces = hostIfPrefix + "+"

// ProgramExternalConnectivity publishes the ports Docker asks for
// (`docker run -p`) for an endpoint: it picks the host ports, records them
// with the endpoint and programs their DNAT rules. Docker calls it for the
// endpoint that gives the container its default route, after Join. A
// retry with the same requests keeps the ports picked the first time. On
// an internal network nothing is published, as on Docker's bridge.
func (d *Driver) ProgramExternalConnectivity(networkID, endpointID string, reqs []firewall.Request) ([]firewall.Mapping, error) {
	unlock := d.locks.lock(endpointID)
	defer unlock()
	d.fw.Lock()
	defer d.fw.Unlock()

	txn := d.store.Read()
	ep, err := state.GetEndpoint(txn, endpointID)
	if errors.Is(err, state.ErrNotFound) {
		return nil, fmt.Errorf("program external connectivity: %w: %s (create it first)", ErrEndpointNotFound, endpointID)
	}
	if err != nil {
		return nil, fmt.Errorf("program external connectivity of %s: %w", endpointID, err)
	}
	nw, err := state.GetNetwork(txn, ep.NetworkID)
	if err != nil {
		return nil, fmt.Errorf("program external connectivity of %s: %w", endpointID, err)
	}
	if nw.Internal {
		reqs = nil
	}
	current := mappingsOf(ep.Ports)
	if d.satisfied(reqs, current) {
		// Nothing to publish, or published already: the rules were
		// written when the ports were recorded (or at start, from state).
		// Docker calls this at every container start; an iptables run
		// here would cost every `docker run` tens of milliseconds.
		return current, nil
	}
	all, err := state.ListEndpoints(txn)
	if err != nil {
		return nil, fmt.Errorf("program external connectivity of %s: %w", endpointID, err)
	}
	var taken []firewall.Mapping
	for _, other := range all {
		if other.ID != ep.ID {
			taken = append(taken, mappingsOf(other.Ports)...)
		}
	}
	ports, err := d.cfg.Ports.Allocate(reqs, taken)
	if err != nil {
		return nil, fmt.Errorf("program external connectivity of %s: %w", endpointID, err)
	}
	if err := d.setPorts(ep.ID, ports); err != nil {
		return nil, fmt.Errorf("program external connectivity of %s: %w", endpointID, err)
	}
	if err := d.syncFirewallLocked(); err != nil {
		// Leave nothing half-published: Docker fails the container's start.
		rollback := d.setPorts(ep.ID, current)
		return nil, fmt.Errorf("program external connectivity of %s: %w", endpointID, errors.Join(err, rollback))
	}
	return ports, nil
}

// RevokeExternalConnectivity unpublishes an endpoint's ports. An unknown
// endpoint, or one without ports, is fine.
func (d *Driver) RevokeExternalConnectivity(networkID, endpointID string) error {
	unlock := d.locks.lock(endpointID)
	defer unlock()
	d.fw.Lock()
	defer d.fw.Unlock()

	ep, err := state.GetEndpoint(d.store.Read(), endpointID)
	if errors.Is(err, state.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("revoke external connectivity of %s: %w", endpointID, err)
	}
	if len(ep.Ports) == 0 {
		return nil
	}
	if err := d.setPorts(ep.ID, nil); err != nil {
		return fmt.Errorf("revoke external connectivity of %s: %w", endpointID, err)
	}
	if err := d.syncFirewallLocked(); err != nil {
		return fmt.Errorf("revoke external connectivity of %s: %w", endpointID, err)
	}
	return nil
}

// satisfied reports whether the mappings answer the requests one to one
// (a retry of the same call).
func (d *Driver) satisfied(reqs []firewall.Request, mappings []firewall.Mapping) bool {
	if len(reqs) != len(mappings) {
		return false
	}
	used := make([]bool, len(mappings))
	for _, r := range reqs {
		found := false
		for i, m := range mappings {
			if !used[i] && r.Satisfies(m, d.cfg.Ports.EphemeralFirst, d.cfg.Ports.EphemeralLast) {
				used[i], found = true, true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// setPorts records an endpoint's published ports (nil for none).
func (d *Driver) setPorts(endpointID string, ports []firewall.Mapping) error {
	return d.store.Write(func(txn *memdb.Txn) error {
		ep, err := state.GetEndpoint(txn, endpointID)
		if err != nil {
			return err
		}
		stored := portMappingsOf(ports)
		if slices.Equal(ep.Ports, stored) {
			return nil
		}
		c := ep.Copy()
		c.Ports = stored
		return state.PutEndpoint(txn, c)
	})
}

// SyncFirewall makes the firewall match state: masquerade of every
// network, isolation of internal ones, published ports. The daemon calls
// it periodically too, since Docker rebuilds its chains when it restarts.
func (d *Driver) SyncFirewall() error {
	d.fw.Lock()
	defer d.fw.Unlock()
	return d.syncFirewallLocked()
}

func (d *Driver) syncFirewallLocked() error {
	if d.cfg.Firewall == nil {
		return nil
	}
	txn := d.store.Read()
	networks, err := state.ListNetworks(txn)
	if err != nil {
		return fmt.Errorf("firewall: %w", err)
	}
	endpoints, err := state.ListEndpoints(txn)
	if err != nil {
		return fmt.Errorf("firewall: %w", err)
	}
	var s firewall.State
	for _, nw := range networks {
		s.Networks = append(s.Networks, firewallNetwork(nw))
	}
	for _, ep := range endpoints {
		s.Endpoints = append(s.Endpoints, firewallEndpoint(ep))
	}
	if err := d.cfg.Firewall.Sync(s); err != nil {
		return fmt.Errorf("firewall: %w", err)
	}
	return nil
}

func firewallNetwork(nw *state.Network) firewall.Network {
	out := firewall.Network{ID: nw.ID, Internal: nw.Internal}
	// The options were checked when the network was created.
	if opts, err := parseNetworkOptions(nw.Options); err == nil {
		out.RoutedInbound = opts.RoutedInbound
	}
	if nw.IPv4 != nil {
		out.IPv4, out.Gateway4 = nw.IPv4.Pool, nw.IPv4.Gateway
	}
	if nw.IPv6 != nil {
		out.IPv6, out.Gateway6 = nw.IPv6.Pool, nw.IPv6.Gateway
	}
	return out
}

func firewallEndpoint(ep *state.Endpoint) firewall.Endpoint {
	out := firewall.Endpoint{ID: ep.ID, NetworkID: ep.NetworkID, Interface: ep.HostIfName, Ports: mappingsOf(ep.Ports)}
	if ep.IPv4.IsValid() {
		out.IPv4 = ep.IPv4.Addr()
	}
	if ep.IPv6.IsValid() {
		out.IPv6 = ep.IPv6.Addr()
	}
	return out
}

func mappingsOf(ports []state.PortMapping) []firewall.Mapping {
	var out []firewall.Mapping
	for _, p := range ports {
		out = append(out, firewall.Mapping{Proto: firewall.Proto(p.Proto), HostIP: p.HostIP, HostPort: p.HostPort, Port: p.Port})
	}
	return out
}

// portMappingsOf converts mappings for state, in a stable order.
func portMappingsOf(ports []firewall.Mapping) []state.PortMapping {
	var out []state.PortMapping
	for _, p := range ports {
		out = append(out, state.PortMapping{Proto: string(p.Proto), HostIP: p.HostIP, HostPort: p.HostPort, Port: p.Port})
	}
	slices.SortFunc(out, func(a, b state.PortMapping) int {
		if c := strings.Compare(a.Proto, b.Proto); c != 0 {
			return c
		}
		if a.HostPort != b.HostPort {
			return int(a.HostPort) - int(b.HostPort)
		}
		if c := a.HostIP.Compare(b.HostIP); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
	return out
}
