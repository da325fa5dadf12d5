package datapath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Endpoint is what the datapath needs to know about a container endpoint.
type Endpoint struct {
	ID           string           // Docker endpoint ID
	HostIfIndex  int              // host-side veth ifindex
	HostMAC      net.HardwareAddr // host-side veth MAC
	MAC          net.HardwareAddr // container-side MAC
	IPv4         netip.Addr       // invalid when none
	IPv6         netip.Addr       // invalid when none
	NetworkIndex uint32
	// Identity is the endpoint's security identity; 0 stands for
	// IdentityInit (labels not known yet: the endpoint may do ARP and
	// neighbour discovery, nothing else). SetIdentity changes it at run time.
	Identity uint32
}

// Reserved identities the datapath knows (the same as labels.Identity*).
const (
	IdentityHost  uint32 = 1 // the host's addresses (ipcache)
	IdentityWorld uint32 = 2 // any address no ipcache prefix or endpoint holds
	IdentityInit  uint32 = 5 // an endpoint whose labels are not known yet
)

// identity is the identity the endpoints map holds for ep.
func (ep *Endpoint) identity() uint32 {
	if ep.Identity == 0 {
		return IdentityInit
	}
	return ep.Identity
}

// Names of the per-endpoint link pins.
const (
	pinFromContainer = "from-container"
	pinToContainer   = "to-container"
)

// endpointProgs are the programs loaded for each endpoint, with its
// constants. (endpointPrograms, generated, also lists the shared ones.)
type endpointProgs struct {
	FromContainer *ebpf.Program `ebpf:"from_container"`
	ToContainer   *ebpf.Program `ebpf:"to_container"`
}

func (p *endpointProgs) Close() error {
	return errors.Join(p.FromContainer.Close(), p.ToContainer.Close())
}

// hook is one tcx attach point of an endpoint.
type hook struct {
	pin    string
	attach ebpf.AttachType
	prog   func(*endpointProgs) *ebpf.Program
}

var hooks = []hook{
	{pinFromContainer, ebpf.AttachTCXIngress, func(p *endpointProgs) *ebpf.Program { return p.FromContainer }},
	{pinToContainer, ebpf.AttachTCXEgress, func(p *endpointProgs) *ebpf.Program { return p.ToContainer }},
}

// validateID checks that id can name a pin directory: not empty, at most
// 255 bytes, no slash, and no dot (bpffs reserves names with dots).
func validateID(id string) error {
	if id == "" || strings.ContainsAny(id, "/.\x00") || len(id) > 255 {
		return fmt.Errorf("%w: bad ID %q", ErrInvalidEndpoint, id)
	}
	return nil
}

func (ep *Endpoint) validate() error {
	if err := validateID(ep.ID); err != nil {
		return err
	}
	if ep.HostIfIndex <= 0 {
		return fmt.Errorf("%w: host ifindex %d", ErrInvalidEndpoint, ep.HostIfIndex)
	}
	if len(ep.HostMAC) != 6 {
		return fmt.Errorf("%w: host MAC %q is not 6 bytes", ErrInvalidEndpoint, ep.HostMAC)
	}
	if len(ep.MAC) != 6 {
		return fmt.Errorf("%w: MAC %q is not 6 bytes", ErrInvalidEndpoint, ep.MAC)
	}
	if ep.IPv4.IsValid() && (!ep.IPv4.Is4() || ep.IPv4.IsUnspecified()) {
		return fmt.Errorf("%w: IPv4 address %s", ErrInvalidEndpoint, ep.IPv4)
	}
	if ep.IPv6.IsValid() && (!ep.IPv6.Is6() || ep.IPv6.Is4In6() || ep.IPv6.IsUnspecified() || ep.IPv6.Zone() != "") {
		return fmt.Errorf("%w: IPv6 address %s", ErrInvalidEndpoint, ep.IPv6)
	}
	return nil
}

// keys returns the endpoints-map keys of ep's addresses.
func (ep *Endpoint) keys() []endpointEndpointKey {
	var keys []endpointEndpointKey
	for _, a := range []netip.Addr{ep.IPv4, ep.IPv6} {
		if a.IsValid() {
			keys = append(keys, endpointKey(a))
		}
	}
	return keys
}

// endpointKey is the endpoints-map key of a: IPv4 as IPv4-mapped IPv6.
func endpointKey(a netip.Addr) endpointEndpointKey {
	return endpointEndpointKey{Addr: a.As16()}
}

func (d *Datapath) endpointDir(id string) string {
	return filepath.Join(d.pinDir, endpointsDir, id)
}

// loadPrograms loads both programs with ep's constants, sharing d's maps.
func (d *Datapath) loadPrograms(ep *Endpoint) (*endpointProgs, error) {
	return d.loadProgramsWith(ep, ebpf.ProgramOptions{})
}

func (d *Datapath) loadProgramsWith(ep *Endpoint, popts ebpf.ProgramOptions) (*endpointProgs, error) {
	spec := d.epSpec.Copy()

	var ipv4 [4]byte
	if ep.IPv4.IsValid() {
		ipv4 = ep.IPv4.As4()
	}
	var ipv6 [16]byte
	if ep.IPv6.IsValid() {
		ipv6 = ep.IPv6.As16()
	}
	for _, v := range []struct {
		name  string
		value any
	}{
		{endpointVarConfigEndpointIfindex, uint32(ep.HostIfIndex)},
		{endpointVarConfigEndpointMac, [6]byte(ep.MAC)},
		{endpointVarConfigHostMac, [6]byte(ep.HostMAC)},
		{endpointVarConfigEndpointIpv4, ipv4},
		{endpointVarConfigEndpointIpv6, ipv6},
		{endpointVarConfigNetworkIndex, ep.NetworkIndex},
	} {
		vs, ok := spec.Variables[v.name]
		if !ok {
			return nil, fmt.Errorf("variable %s not in object", v.name)
		}
		if err := vs.Set(v.value); err != nil {
			return nil, fmt.Errorf("set %s: %w", v.name, err)
		}
	}

	var progs endpointProgs
	err := spec.LoadAndAssign(&progs, &ebpf.CollectionOptions{
		MapReplacements: d.mapReplacements(),
		Programs:        popts,
	})
	if err != nil {
		return nil, fmt.Errorf("load programs: %w", err)
	}
	return &progs, nil
}

// Attach points ep's addresses at ep in the endpoints map (with its
// identity), then loads the programs with ep's constants and attaches them
// to ep's host-side veth: the programs never run without their entry.
//
// It is idempotent and is how endpoints are reconciled after a restart: a
// pinned link of ep is updated in place to the new program (atomic, no
// packet is dropped); a link that is missing, or pinned for another
// interface or for one that no longer exists, is (re)created and pinned.
// Must be called in the network namespace of the host-side veth.
//
// Addresses that ep had before but no longer has are not removed: Detach
// with the old Endpoint does that.
func (d *Datapath) Attach(ep Endpoint) error {
	if err := d.attach(&ep); err != nil {
		return fmt.Errorf("attach endpoint %s: %w", ep.ID, err)
	}
	return nil
}

func (d *Datapath) attach(ep *Endpoint) error {
	if err := ep.validate(); err != nil {
		return err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	if d.pinDir == "" {
		return ErrNoPinDir
	}

	progs, err := d.loadPrograms(ep)
	if err != nil {
		return err
	}
	defer progs.Close()

	if err := d.putEndpoint(ep); err != nil {
		return err
	}

	d.pinMu.Lock()
	defer d.pinMu.Unlock()

	dir := d.endpointDir(ep.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin directory: %w", err)
	}
	// A prepared interface's placeholder links become the endpoint's: the
	// ones pinned below outlive this close, the others detach.
	prepared := d.takePrepared(ep.HostIfIndex)
	defer prepared.close()
	for _, h := range hooks {
		if err := attachHook(filepath.Join(dir, h.pin), ep.HostIfIndex, h.attach, h.prog(progs), prepared[h.attach]); err != nil {
			return fmt.Errorf("%s: %w", h.pin, err)
		}
	}
	return nil
}

// putEndpoint points ep's addresses at ep in the endpoints map. When that
// changes the identity of an address, it bumps the policy revision, so
// conntrack entries are checked again under the new identity.
func (d *Datapath) putEndpoint(ep *Endpoint) error {
	info := endpointEndpointInfo{
		Ifindex:  uint32(ep.HostIfIndex),
		Network:  ep.NetworkIndex,
		Mac:      [6]byte(ep.MAC),
		HostMac:  [6]byte(ep.HostMAC),
		Identity: ep.identity(),
	}
	d.epMu.Lock()
	defer d.epMu.Unlock()
	changed := false
	for _, key := range ep.keys() {
		var old endpointEndpointInfo
		switch err := d.endpoints.Lookup(key, &old); {
		case err == nil:
			changed = changed || old.Identity != info.Identity
		case !errors.Is(err, ebpf.ErrKeyNotExist):
			return fmt.Errorf("look up %s in endpoints map: %w", netip.AddrFrom16(key.Addr).Unmap(), err)
		}
		if err := d.endpoints.Put(key, info); err != nil {
			return fmt.Errorf("put %s in endpoints map: %w", netip.AddrFrom16(key.Addr).Unmap(), err)
		}
	}
	if changed {
		if _, err := d.bumpRevision(); err != nil {
			return err
		}
	}
	return nil
}

// SetIdentity sets the identity of ep's addresses in the endpoints map to
// ep.Identity (0: init), in place: no program is reloaded, and the policy
// revision is bumped so that established connections are checked again
// under the new identity. Only ep.ID, the addresses and Identity are used
// (HostIfIndex too when not 0: entries pointing at another interface are
// left alone). Addresses not in the map are skipped: the endpoint is not
// attached yet, and Attach writes the identity when it is.
func (d *Datapath) SetIdentity(ep Endpoint) error {
	if err := d.setIdentity(&ep); err != nil {
		return fmt.Errorf("set identity of endpoint %s: %w", ep.ID, err)
	}
	return nil
}

func (d *Datapath) setIdentity(ep *Endpoint) error {
	if err := validateID(ep.ID); err != nil {
		return err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	d.epMu.Lock()
	defer d.epMu.Unlock()
	changed := false
	for _, key := range ep.keys() {
		var info endpointEndpointInfo
		err := d.endpoints.Lookup(key, &info)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("look up %s in endpoints map: %w", netip.AddrFrom16(key.Addr).Unmap(), err)
		}
		if (ep.HostIfIndex != 0 && int(info.Ifindex) != ep.HostIfIndex) || info.Identity == ep.identity() {
			continue
		}
		info.Identity = ep.identity()
		// BPF_F_EXIST: never resurrect an entry that Detach removed meanwhile.
		if err := d.endpoints.Update(key, info, ebpf.UpdateExist); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("update %s in endpoints map: %w", netip.AddrFrom16(key.Addr).Unmap(), err)
		}
		changed = true
	}
	if changed {
		if _, err := d.bumpRevision(); err != nil {
			return err
		}
	}
	return nil
}

// attachHook makes the link pinned at path run prog on ifindex. If no live
// link is pinned there, it pins placeholder (a prepared interface's link,
// nil if none) running prog, or else attaches a new link.
func attachHook(path string, ifindex int, attach ebpf.AttachType, prog *ebpf.Program, placeholder link.Link) error {
	l, err := link.LoadPinnedLink(path, nil)
	switch {
	case err == nil:
		updated, err := updateLink(l, ifindex, attach, prog)
		if updated || err != nil {
			l.Close()
			return err
		}
		// Stale: the interface was recreated or is gone. Replace the link.
		err = l.Unpin()
		l.Close()
		if err != nil {
			return fmt.Errorf("unpin stale link: %w", err)
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		return err
	}

	if placeholder != nil {
		if err := placeholder.Update(prog); err != nil {
			return fmt.Errorf("replace placeholder: %w", err)
		}
		if err := placeholder.Pin(path); err != nil {
			return fmt.Errorf("pin link: %w", err)
		}
		return nil
	}
	l, err = link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: attach})
	if err != nil {
		return err
	}
	defer l.Close()
	if err := l.Pin(path); err != nil {
		// Closing the unpinned link detaches it again.
		return fmt.Errorf("pin link: %w", err)
	}
	return nil
}

// updateLink replaces the program of l if l is a live tcx link on ifindex
// with the given attach type. It reports false, and no error, if l is stale.
func updateLink(l link.Link, ifindex int, attach ebpf.AttachType, prog *ebpf.Program) (bool, error) {
	info, err := l.Info()
	if err != nil {
		return false, fmt.Errorf("link info: %w", err)
	}
	tcx := info.TCX()
	if tcx == nil || int(tcx.Ifindex) != ifindex || ebpf.AttachType(tcx.AttachType) != attach {
		return false, nil
	}
	if err := l.Update(prog); err != nil {
		if errors.Is(err, unix.ENOLINK) {
			// The interface went away between Info and Update.
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// Detach removes ep from the datapath: its addresses from the endpoints map
// (only entries that still point at ep.HostIfIndex, or any entry when
// HostIfIndex is 0, so that a late Detach never breaks an endpoint that has
// taken over the address), then its links (which detaches the programs),
// then its pin directory. Absent things are fine: Detach is idempotent.
func (d *Datapath) Detach(ep Endpoint) error {
	if err := d.detach(&ep); err != nil {
		return fmt.Errorf("detach endpoint %s: %w", ep.ID, err)
	}
	return nil
}

func (d *Datapath) detach(ep *Endpoint) error {
	if err := validateID(ep.ID); err != nil {
		return err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}

	if err := d.deleteEndpoint(ep); err != nil {
		return err
	}

	if d.pinDir == "" {
		return nil
	}
	d.pinMu.Lock()
	defer d.pinMu.Unlock()

	dir := d.endpointDir(ep.ID)
	for _, h := range hooks {
		path := filepath.Join(dir, h.pin)
		l, err := link.LoadPinnedLink(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", h.pin, err)
		}
		err = l.Unpin()
		l.Close()
		if err != nil {
			return fmt.Errorf("%s: unpin link: %w", h.pin, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove pin directory: %w", err)
	}
	return nil
}

// deleteEndpoint removes ep's addresses from the endpoints map (see Detach).
func (d *Datapath) deleteEndpoint(ep *Endpoint) error {
	d.epMu.Lock()
	defer d.epMu.Unlock()
	for _, key := range ep.keys() {
		var info endpointEndpointInfo
		err := d.endpoints.Lookup(key, &info)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("look up %s in endpoints map: %w", netip.AddrFrom16(key.Addr).Unmap(), err)
		}
		if ep.HostIfIndex != 0 && int(info.Ifindex) != ep.HostIfIndex {
			continue
		}
		if err := d.endpoints.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete %s from endpoints map: %w", netip.AddrFrom16(key.Addr).Unmap(), err)
		}
	}
	return nil
}

// AttachedEndpoints returns the IDs of the endpoints that have a pin
// directory, sorted, for reconciling with the daemon's state after a restart.
func (d *Datapath) AttachedEndpoints() ([]string, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil, ErrClosed
	}
	if d.pinDir == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(filepath.Join(d.pinDir, endpointsDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list attached endpoints: %w", err)
	}
	var ids []string
	for _, e := range entries {
		if e.IsDir() {
			ids = append(ids, e.Name())
		}
	}
	slices.Sort(ids)
	return ids, nil
}
