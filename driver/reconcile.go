package driver

import (
	"errors"
	"fmt"
	"time"

	"github.com/membrane-net/membrane/datapath"
	"github.com/membrane-net/membrane/state"
)

// Reconcile makes the kernel match state after a start: gateways on the host
// device, every endpoint's veth, routes and programs (re-attached in place,
// so traffic keeps flowing), masquerade, published ports and internal
// isolation in iptables, and no BPF attachments for endpoints that state
// does not know. Endpoints whose container side vanished while membrane was
// down are detached and left in state for RemoveStale or Docker to delete.
// It returns one error per object it could not repair, and goes on past them.
func (d *Driver) Reconcile() error {
	txn := d.store.Read()
	networks, err := state.ListNetworks(txn)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	endpoints, err := state.ListEndpoints(txn)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	var errs []error
	byID := make(map[string]*state.Network, len(networks))
	for _, nw := range networks {
		byID[nw.ID] = nw
		if err := d.realizeNetwork(nw); err != nil {
			errs = append(errs, fmt.Errorf("reconcile network %s: %w", nw.ID, err))
		}
	}
	known := make(map[string]bool, len(endpoints))
	for _, ep := range endpoints {
		known[ep.ID] = true
		if err := d.reconcileEndpoint(byID[ep.NetworkID], ep); err != nil {
			errs = append(errs, fmt.Errorf("reconcile endpoint %s: %w", ep.ID, err))
		}
	}
	if err := d.SyncFirewall(); err != nil {
		errs = append(errs, fmt.Errorf("reconcile: %w", err))
	}
	if err := d.removeLeftoverSpares(); err != nil {
		errs = append(errs, fmt.Errorf("reconcile: spare veth pairs: %w", err))
	}
	attached, err := d.dp.AttachedEndpoints()
	if err != nil {
		errs = append(errs, fmt.Errorf("reconcile: %w", err))
	}
	for _, id := range attached {
		if known[id] {
			continue
		}
		if err := d.dp.Detach(datapath.Endpoint{ID: id}); err != nil {
			errs = append(errs, fmt.Errorf("reconcile: detach unknown endpoint %s: %w", id, err))
		}
		if err := d.k.deleteLink(hostIfName(id)); err != nil {
			errs = append(errs, fmt.Errorf("reconcile: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (d *Driver) reconcileEndpoint(nw *state.Network, ep *state.Endpoint) error {
	unlock := d.locks.lock(ep.ID)
	defer unlock()

	if nw == nil {
		return d.removeEndpoint(ep)
	}
	_, err := d.k.nl.LinkByName(ep.HostIfName)
	if isNotFound(err) && ep.SandboxKey != "" {
		// The container's namespace went away with its end of the veth.
		return d.dp.Detach(DatapathEndpoint(ep))
	}
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("look up veth %s: %w", ep.HostIfName, err)
	}
	return d.realizeEndpoint(nw, ep)
}

// DockerView is Docker's account of membrane networks: for each network ID
// Docker knows, the IDs of the endpoints attached to its containers.
type DockerView map[string]map[string]bool

// Removed describes an endpoint that RemoveStale deleted, so the caller can
// release its addresses.
type Removed struct {
	Endpoint *state.Endpoint
	Network  *state.Network
}

// RemoveStale deletes what Docker no longer knows: networks Docker does not
// list, and endpoints that are neither attached to a container nor younger
// than grace (an endpoint exists briefly between CreateEndpoint and Join).
// It never calls Docker itself: the caller builds the view outside any
// Docker call.
func (d *Driver) RemoveStale(view DockerView, grace time.Duration) ([]Removed, error) {
	txn := d.store.Read()
	networks, err := state.ListNetworks(txn)
	if err != nil {
		return nil, fmt.Errorf("remove stale: %w", err)
	}
	var (
		removed []Removed
		errs    []error
	)
	cutoff := d.cfg.Now().Add(-grace)
	for _, nw := range networks {
		attached, dockerKnows := view[nw.ID]
		if !dockerKnows && nw.Created.After(cutoff) {
			continue // Docker may not have recorded a network it is creating
		}
		eps, err := state.ListEndpointsByNetwork(txn, nw.ID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, ep := range eps {
			if dockerKnows && (attached[ep.ID] || ep.Created.After(cutoff)) {
				continue
			}
			if err := d.DeleteEndpoint(nw.ID, ep.ID); err != nil {
				errs = append(errs, err)
				continue
			}
			removed = append(removed, Removed{Endpoint: ep, Network: nw})
		}
		if !dockerKnows {
			if err := d.DeleteNetwork(nw.ID); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return removed, errors.Join(errs...)
}
