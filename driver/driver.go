package driver

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/vishvananda/netlink"

	"github.com/membrane-net/membrane/datapath"
	"github.com/membrane-net/membrane/firewall"
	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/state"
)

// Datapath is what the driver needs from the BPF datapath.
type Datapath interface {
	Attach(ep datapath.Endpoint) error
	Detach(ep datapath.Endpoint) error
	AttachedEndpoints() ([]string, error)
	Prepare(ifindex int) error
	Unprepare(ifindex int) error
}

var _ Datapath = (*datapath.Datapath)(nil)

// Config configures a Driver.
type Config struct {
	// HostDevice is the host interface (a veth pair) that holds every network's gateway
	// addresses, so containers reach the host at their gateway.
	HostDevice string
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
	// Firewall masquerades, publishes ports and isolates internal
	// networks; nil leaves iptables alone.
	Firewall Firewall
	// Ports picks host ports for published ports.
	Ports firewall.PortAllocator
	// EndpointRemoved, when set, is called after an endpoint left state
	// (its identity may be unused now). It must not block.
	EndpointRemoved func()
	// SpareVeths is how many veth pairs FillSpares and KeepSpares keep
	// ready for new endpoints (spares.go); 0 for none.
	SpareVeths int
	// Log receives what goes wrong off the request path (a spare that
	// could not be adopted); nil discards it.
	Log *slog.Logger
}

// Firewall is what the driver needs from the host firewall: make its rules
// match the networks and endpoints in state.
type Firewall interface {
	Sync(firewall.State) error
}

var _ Firewall = (*firewall.Firewall)(nil)

// Driver serves Docker's NetworkDriver calls.
type Driver struct {
	store *state.Store
	dp    Datapath
	k     kernel
	cfg   Config
	locks keyedLocks
	// spares are veth pairs ready for new endpoints.
	spares *spares
	// fw serialises reading state for the firewall with programming it
	// (and port allocation with recording it), so that an older view
	// never overwrites a newer one.
	fw sync.Mutex
}

// New returns a driver that records objects in store, programs the host
// namespace through nl and attaches endpoints to dp.
func New(store *state.Store, dp Datapath, nl *netlink.Handle, cfg Config) (*Driver, error) {
	if cfg.HostDevice == "" {
		return nil, fmt.Errorf("%w: driver config: host device name is empty", ErrInvalidOption)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SpareVeths < 0 {
		return nil, fmt.Errorf("%w: driver config: %d spare veth pairs", ErrInvalidOption, cfg.SpareVeths)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Driver{store: store, dp: dp, k: kernel{nl: nl}, cfg: cfg, spares: newSpares()}, nil
}

// IPAMData is one subnet Docker's IPAM assigned to a network.
type IPAMData struct {
	Pool    netip.Prefix
	Gateway netip.Addr // invalid when none
}

// NetworkRequest is a CreateNetwork call.
type NetworkRequest struct {
	ID      string
	IPv4    []IPAMData
	IPv6    []IPAMData
	Options map[string]string // the user's -o options
	// Internal is `docker network create --internal`.
	Internal bool
}

// CreateNetwork records a network, puts its gateways on the host device and
// programs its masquerade (or, for an internal network, its isolation).
func (d *Driver) CreateNetwork(req NetworkRequest) error {
	if req.ID == "" {
		return fmt.Errorf("%w: create network: empty network ID", ErrInvalidRequest)
	}
	unlock := d.locks.lock(req.ID)
	defer unlock()

	opts, err := parseNetworkOptions(req.Options)
	if err != nil {
		return fmt.Errorf("create network %s: %w", req.ID, err)
	}
	if len(req.IPv6) == 0 && !opts.IPv4Only {
		return fmt.Errorf("create network %s: %w: add --ipv6 to `docker network create` "+
			"(with --ipam-driver membrane a /64 is chosen for you), or opt out with -o %s=true",
			req.ID, ErrIPv6Required, OptionIPv4Only)
	}
	v4, err := singleSubnet("IPv4", req.IPv4)
	if err != nil {
		return fmt.Errorf("create network %s: %w", req.ID, err)
	}
	v6, err := singleSubnet("IPv6", req.IPv6)
	if err != nil {
		return fmt.Errorf("create network %s: %w", req.ID, err)
	}
	if v4 == nil && v6 == nil {
		return fmt.Errorf("create network %s: %w: the network has no subnet at all", req.ID, ErrInvalidRequest)
	}

	var nw *state.Network
	err = d.store.Write(func(txn *memdb.Txn) error {
		existing, err := state.GetNetwork(txn, req.ID)
		if err == nil {
			nw = existing // a retry: the network is recorded already
			return nil
		}
		if !errors.Is(err, state.ErrNotFound) {
			return err
		}
		index, err := state.NextNetworkIndex(txn)
		if err != nil {
			return err
		}
		nw = &state.Network{
			ID: req.ID, Index: index, IPv4: v4, IPv6: v6, MTU: opts.MTU,
			Options: req.Options, Internal: req.Internal, Created: d.cfg.Now(),
		}
		return state.PutNetwork(txn, nw)
	})
	if err != nil {
		return fmt.Errorf("create network %s: %w", req.ID, err)
	}
	if err := d.realizeNetwork(nw); err != nil {
		return fmt.Errorf("create network %s: %w", req.ID, err)
	}
	if err := d.SyncFirewall(); err != nil {
		return fmt.Errorf("create network %s: %w", req.ID, err)
	}
	return nil
}

func singleSubnet(family string, data []IPAMData) (*state.Subnet, error) {
	switch len(data) {
	case 0:
		return nil, nil
	case 1:
	default:
		return nil, fmt.Errorf("%w: %d %s subnets given: a membrane network has at most one subnet per address family",
			ErrInvalidRequest, len(data), family)
	}
	sub := data[0]
	if !sub.Pool.IsValid() {
		return nil, fmt.Errorf("%w: %s subnet missing", ErrInvalidRequest, family)
	}
	if sub.Gateway.IsValid() && !sub.Pool.Contains(sub.Gateway) {
		return nil, fmt.Errorf("%w: %s gateway %s is outside subnet %s", ErrInvalidRequest, family, sub.Gateway, sub.Pool)
	}
	return &state.Subnet{Pool: sub.Pool.Masked(), Gateway: sub.Gateway}, nil
}

// gateways returns the gateway addresses of a network.
func gateways(nw *state.Network) []netip.Addr {
	var out []netip.Addr
	for _, sub := range []*state.Subnet{nw.IPv4, nw.IPv6} {
		if sub != nil && sub.Gateway.IsValid() {
			out = append(out, sub.Gateway)
		}
	}
	return out
}

// realizeNetwork puts the network's gateways on the host device.
func (d *Driver) realizeNetwork(nw *state.Network) error {
	gws := gateways(nw)
	if len(gws) == 0 {
		return nil
	}
	dev, err := d.k.ensureHostDevice(d.cfg.HostDevice)
	if err != nil {
		return err
	}
	for _, gw := range gws {
		if err := d.k.ensureAddress(dev, gw); err != nil {
			return err
		}
	}
	return nil
}

// DeleteNetwork forgets a network, removing whatever of its endpoints is
// left and its gateways. An unknown network is fine.
func (d *Driver) DeleteNetwork(id string) error {
	unlock := d.locks.lock(id)
	defer unlock()

	txn := d.store.Read()
	nw, err := state.GetNetwork(txn, id)
	if errors.Is(err, state.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete network %s: %w", id, err)
	}
	eps, err := state.ListEndpointsByNetwork(txn, id)
	if err != nil {
		return fmt.Errorf("delete network %s: %w", id, err)
	}
	for _, ep := range eps {
		if err := d.DeleteEndpoint(id, ep.ID); err != nil {
			return fmt.Errorf("delete network %s: %w", id, err)
		}
	}
	if gws := gateways(nw); len(gws) > 0 {
		dev, err := d.k.nl.LinkByName(d.cfg.HostDevice)
		if err != nil && !isNotFound(err) {
			return fmt.Errorf("delete network %s: look up host device: %w", id, err)
		}
		if err == nil {
			for _, gw := range gws {
				if err := d.k.removeAddress(dev, gw); err != nil {
					return fmt.Errorf("delete network %s: %w", id, err)
				}
			}
		}
	}
	err = d.store.Write(func(txn *memdb.Txn) error {
		return ignoreNotFound(state.DeleteNetwork(txn, id))
	})
	if err != nil {
		return fmt.Errorf("delete network %s: %w", id, err)
	}
	if err := d.SyncFirewall(); err != nil {
		return fmt.Errorf("delete network %s: %w", id, err)
	}
	return nil
}

// EndpointRequest is a CreateEndpoint call.
type EndpointRequest struct {
	NetworkID  string
	EndpointID string
	IPv4       netip.Prefix // zero when none
	IPv6       netip.Prefix // zero when none
	MAC        string       // empty when Docker leaves the choice to the driver
}

// CreateEndpoint records an endpoint, creates its veth pair, routes its
// addresses to it and attaches its datapath. It returns the MAC address the
// container gets.
func (d *Driver) CreateEndpoint(req EndpointRequest) (string, error) {
	if req.EndpointID == "" {
		return "", fmt.Errorf("%w: create endpoint: empty endpoint ID", ErrInvalidRequest)
	}
	if !req.IPv4.IsValid() && !req.IPv6.IsValid() {
		return "", fmt.Errorf("%w: create endpoint %s: no address: the endpoint needs an IPv4 or IPv6 address from IPAM",
			ErrInvalidRequest, req.EndpointID)
	}
	mac, err := endpointMAC(req.MAC, req.EndpointID)
	if err != nil {
		return "", fmt.Errorf("create endpoint %s: %w", req.EndpointID, err)
	}
	unlock := d.locks.lock(req.EndpointID)
	defer unlock()

	var (
		nw *state.Network
		ep *state.Endpoint
	)
	err = d.store.Write(func(txn *memdb.Txn) error {
		var err error
		nw, err = state.GetNetwork(txn, req.NetworkID)
		if errors.Is(err, state.ErrNotFound) {
			return fmt.Errorf("%w: %s is not a membrane network (it may have been created while membrane kept no state)",
				ErrNetworkNotFound, req.NetworkID)
		}
		if err != nil {
			return err
		}
		existing, err := state.GetEndpoint(txn, req.EndpointID)
		if err == nil {
			if existing.NetworkID != req.NetworkID || existing.IPv4 != req.IPv4 || existing.IPv6 != req.IPv6 || existing.MAC != mac.String() {
				return fmt.Errorf("%w: endpoint %s exists with other settings", ErrInvalidRequest, req.EndpointID)
			}
			ep = existing // a retry
			return nil
		}
		if !errors.Is(err, state.ErrNotFound) {
			return err
		}
		ep = &state.Endpoint{
			ID: req.EndpointID, NetworkID: req.NetworkID,
			HostIfName: hostIfName(req.EndpointID), PeerIfName: peerIfName(req.EndpointID),
			MAC: mac.String(), IPv4: req.IPv4, IPv6: req.IPv6, Created: d.cfg.Now(),
			// Labels reach membrane later, from Docker's events: until then
			// the endpoint may do nothing but come up.
			Identity: uint32(labels.IdentityInit),
		}
		return state.PutEndpoint(txn, ep)
	})
	if err != nil {
		return "", fmt.Errorf("create endpoint %s: %w", req.EndpointID, err)
	}
	if err := d.realizeEndpoint(nw, ep); err != nil {
		rollback := d.removeEndpoint(ep)
		return "", fmt.Errorf("create endpoint %s: %w", req.EndpointID, errors.Join(err, rollback))
	}
	if req.MAC != "" {
		return "", nil // Docker chose the MAC; it must not be handed back
	}
	return ep.MAC, nil
}

// endpointMAC parses the MAC Docker asked for, or derives one from the
// endpoint ID: the same on every retry, locally administered, unicast.
func endpointMAC(requested, endpointID string) (net.HardwareAddr, error) {
	if requested != "" {
		mac, err := net.ParseMAC(requested)
		if err != nil || len(mac) != 6 {
			return nil, fmt.Errorf("%w: MAC address %q: want six colon-separated hex bytes", ErrInvalidOption, requested)
		}
		if mac[0]&1 == 1 {
			return nil, fmt.Errorf("%w: MAC address %s is a multicast address", ErrInvalidOption, mac)
		}
		return mac, nil
	}
	sum := sha256.Sum256([]byte(endpointID))
	mac := net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
	return mac, nil
}

// realizeEndpoint makes the kernel match one endpoint record: veth pair,
// routes and neighbours toward the container, BPF programs and map entries.
func (d *Driver) realizeEndpoint(nw *state.Network, ep *state.Endpoint) error {
	mac, err := net.ParseMAC(ep.MAC)
	if err != nil {
		return fmt.Errorf("endpoint %s: stored MAC %q: %w", ep.ID, ep.MAC, err)
	}
	link, err := d.endpointVeth(ep, mac, nw.MTU)
	if err != nil {
		return err
	}
	dpe := DatapathEndpoint(ep)
	dpe.HostIfIndex = link.Attrs().Index
	dpe.HostMAC = link.Attrs().HardwareAddr
	dpe.MAC = mac
	dpe.NetworkIndex = nw.Index
	if dpe.IPv4.IsValid() {
		if err := d.k.ensureRouteToContainer(link, dpe.IPv4, mac, gatewayOf(nw.IPv4)); err != nil {
			return err
		}
	}
	if dpe.IPv6.IsValid() {
		if err := d.k.ensureRouteToContainer(link, dpe.IPv6, mac, gatewayOf(nw.IPv6)); err != nil {
			return err
		}
	}
	return d.dp.Attach(dpe)
}

// endpointVeth returns the host side of ep's veth pair, up: the existing
// one, else a spare renamed for ep, else a new one.
func (d *Driver) endpointVeth(ep *state.Endpoint, mac net.HardwareAddr, mtu int) (netlink.Link, error) {
	if _, err := d.k.nl.LinkByName(ep.HostIfName); !isNotFound(err) {
		return d.k.ensureVeth(ep.HostIfName, ep.PeerIfName, mac, mtu)
	}
	link, err := d.adoptSpare(ep.HostIfName, ep.PeerIfName, mac, mtu)
	if err != nil {
		d.cfg.Log.Warn("spare veth pair not used", "endpoint", ep.ID, "error", err.Error())
	}
	if link != nil {
		return link, nil
	}
	return d.k.ensureVeth(ep.HostIfName, ep.PeerIfName, mac, mtu)
}

func gatewayOf(sub *state.Subnet) netip.Addr {
	if sub == nil {
		return netip.Addr{}
	}
	return sub.Gateway
}

// DatapathEndpoint is what an endpoint record tells the datapath: ID,
// addresses and identity (0, not known yet, is init to the datapath). The
// kernel's side (ifindex, MACs, network number) is filled in when the
// endpoint is attached; detaching and identity changes need only this.
func DatapathEndpoint(ep *state.Endpoint) datapath.Endpoint {
	dpe := datapath.Endpoint{ID: ep.ID, Identity: ep.Identity}
	if ep.IPv4.IsValid() {
		dpe.IPv4 = ep.IPv4.Addr()
	}
	if ep.IPv6.IsValid() {
		dpe.IPv6 = ep.IPv6.Addr()
	}
	return dpe
}

// removeEndpoint takes an endpoint out of the kernel and out of state. The
// veth goes first: detaching the programs of a gone interface costs the
// kernel no grace period, while detaching them from a live one holds the
// RTNL lock through one per hook.
func (d *Driver) removeEndpoint(ep *state.Endpoint) error {
	if err := d.k.deleteLink(ep.HostIfName); err != nil {
		return err
	}
	if err := d.dp.Detach(DatapathEndpoint(ep)); err != nil {
		return err
	}
	removed := false
	err := d.store.Write(func(txn *memdb.Txn) error {
		err := state.DeleteEndpoint(txn, ep.ID)
		removed = err == nil
		return ignoreNotFound(err)
	})
	if removed && d.cfg.EndpointRemoved != nil {
		d.cfg.EndpointRemoved()
	}
	if err != nil || len(ep.Ports) == 0 {
		return err
	}
	// Docker revokes published ports before it deletes an endpoint,
	// unless it never got to (a crash, a daemon that was down).
	return d.SyncFirewall()
}

// DeleteEndpoint removes an endpoint. An unknown endpoint is fine, but its
// veth, if one is left under the derived name, is removed all the same.
func (d *Driver) DeleteEndpoint(networkID, endpointID string) error {
	unlock := d.locks.lock(endpointID)
	defer unlock()

	ep, err := state.GetEndpoint(d.store.Read(), endpointID)
	if errors.Is(err, state.ErrNotFound) {
		ep = &state.Endpoint{ID: endpointID, NetworkID: networkID, HostIfName: hostIfName(endpointID)}
	} else if err != nil {
		return fmt.Errorf("delete endpoint %s: %w", endpointID, err)
	}
	if err := d.removeEndpoint(ep); err != nil {
		return fmt.Errorf("delete endpoint %s: %w", endpointID, err)
	}
	return nil
}

// JoinResponse is what Docker needs to plumb the endpoint into a sandbox.
type JoinResponse struct {
	SrcName     string     // the container side of the veth, as it is named now
	DstPrefix   string     // Docker names it DstPrefix + N inside the container
	Gateway     netip.Addr // invalid when none
	GatewayIPv6 netip.Addr // invalid when none
}

// Join records the sandbox an endpoint joins and says which interface to
// move into it.
func (d *Driver) Join(networkID, endpointID, sandboxKey string) (JoinResponse, error) {
	unlock := d.locks.lock(endpointID)
	defer unlock()

	var resp JoinResponse
	err := d.store.Write(func(txn *memdb.Txn) error {
		ep, err := state.GetEndpoint(txn, endpointID)
		if errors.Is(err, state.ErrNotFound) {
			return fmt.Errorf("%w: %s (create it first)", ErrEndpointNotFound, endpointID)
		}
		if err != nil {
			return err
		}
		nw, err := state.GetNetwork(txn, ep.NetworkID)
		if err != nil {
			return err
		}
		resp = JoinResponse{SrcName: ep.PeerIfName, DstPrefix: "eth"}
		// As on Docker's bridge, a container gets no default route from
		// an internal network: it reaches its network and the gateway,
		// which is on-link, and nothing beyond.
		if ep.IPv4.IsValid() && !nw.Internal {
			resp.Gateway = gatewayOf(nw.IPv4)
		}
		if ep.IPv6.IsValid() && !nw.Internal {
			resp.GatewayIPv6 = gatewayOf(nw.IPv6)
		}
		if ep.SandboxKey == sandboxKey {
			return nil
		}
		joined := *ep
		joined.SandboxKey = sandboxKey
		return state.PutEndpoint(txn, &joined)
	})
	if err != nil {
		return JoinResponse{}, fmt.Errorf("join endpoint %s: %w", endpointID, err)
	}
	return resp, nil
}

// Leave records that an endpoint left its sandbox. An unknown endpoint is fine.
func (d *Driver) Leave(networkID, endpointID string) error {
	unlock := d.locks.lock(endpointID)
	defer unlock()

	err := d.store.Write(func(txn *memdb.Txn) error {
		ep, err := state.GetEndpoint(txn, endpointID)
		if errors.Is(err, state.ErrNotFound) {
			return nil
		}
		if err != nil || ep.SandboxKey == "" {
			return err
		}
		left := *ep
		left.SandboxKey = ""
		return state.PutEndpoint(txn, &left)
	})
	if err != nil {
		return fmt.Errorf("leave endpoint %s: %w", endpointID, err)
	}
	return nil
}

// EndpointInfo reports what Docker shows in `docker inspect` for an endpoint.
func (d *Driver) EndpointInfo(networkID, endpointID string) (map[string]string, error) {
	ep, err := state.GetEndpoint(d.store.Read(), endpointID)
	if errors.Is(err, state.ErrNotFound) {
		return nil, fmt.Errorf("endpoint info %s: %w", endpointID, ErrEndpointNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("endpoint info %s: %w", endpointID, err)
	}
	return map[string]string{
		"membrane.host-interface": ep.HostIfName,
		"membrane.mac-address":    ep.MAC,
	}, nil
}

func ignoreNotFound(err error) error {
	if errors.Is(err, state.ErrNotFound) {
		return nil
	}
	return err
}

// keyedLocks serialises calls about the same object (Docker may retry a call
// while the first attempt still runs) and lets calls about different objects
// run side by side.
type keyedLocks struct {
	mu    sync.Mutex
	locks map[string]*keyedLock
}

type keyedLock struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedLocks) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = make(map[string]*keyedLock)
	}
	l := k.locks[key]
	if l == nil {
		l = &keyedLock{}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()

	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		k.mu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
