package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/membrane-net/membrane/driver"
	"github.com/membrane-net/membrane/firewall"
	ipamalloc "github.com/membrane-net/membrane/ipam"
	"github.com/membrane-net/membrane/state"
)

// dockerResync compares state with Docker's own account, outside of any
// Docker call, and deletes what Docker no longer knows (endpoints of
// containers that went away while membrane was down), releasing their
// addresses.
type dockerResync struct {
	cfg    Config
	drv    *driver.Driver
	fw     *firewall.Firewall
	ipam   *ipamalloc.Allocator
	store  *state.Store
	docker *client.Client
	log    *slog.Logger
}

func (r *dockerResync) loop(ctx context.Context) {
	wait := 5 * time.Second // Docker may still be starting with us
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = r.cfg.Resync
		// Docker may have rebuilt its chains meanwhile (it does when it
		// restarts), or someone flushed them.
		if err := r.drv.SyncFirewall(); err != nil {
			r.log.Warn("program iptables", logKeyError, err.Error())
		}
		if r.cfg.ManageForwarding {
			if err := r.fw.EnableForwarding(); err != nil {
				r.log.Warn("accept forwarding", logKeyError, err.Error())
			}
		}
		if err := r.once(ctx, r.docker); err != nil {
			r.log.Warn("compare state with Docker", logKeyError, err.Error())
		}
	}
}

func (r *dockerResync) once(ctx context.Context, cli *client.Client) error {
	networks, err := state.ListNetworks(r.store.Read())
	if err != nil {
		return err
	}
	view := driver.DockerView{}
	for _, nw := range networks {
		inspectCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		res, err := cli.NetworkInspect(inspectCtx, nw.ID, network.InspectOptions{})
		cancel()
		if client.IsErrNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("inspect network %s: %w", nw.ID, err)
		}
		attached := map[string]bool{}
		for _, c := range res.Containers {
			attached[c.EndpointID] = true
		}
		view[nw.ID] = attached
	}
	removed, err := r.drv.RemoveStale(view, r.cfg.StaleGrace)
	for _, rm := range removed {
		r.log.Info("removed endpoint Docker no longer knows", logKeyEndpoint, rm.Endpoint.ID, logKeyNetwork, rm.Network.ID)
		err = errors.Join(err, r.releaseAddresses(rm))
	}
	return err
}

// releaseAddresses returns a removed endpoint's addresses to the membrane
// pool they came from, if they came from one.
func (r *dockerResync) releaseAddresses(rm driver.Removed) error {
	pools, err := state.ListPools(r.store.Read())
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range []netip.Prefix{rm.Endpoint.IPv4, rm.Endpoint.IPv6} {
		if !p.IsValid() {
			continue
		}
		for _, pool := range pools {
			if pool.Prefix == p.Masked() {
				errs = append(errs, r.ipam.ReleaseAddress(pool.ID, p.Addr().String()))
			}
		}
	}
	return errors.Join(errs...)
}
