package driver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
)

// Spare veth pairs.
//
// A new endpoint needs a veth pair with the datapath's programs on the host
// side. The first program attached to an interface's hook costs a kernel
// RCU grace period under the RTNL lock (datapath.Prepare), which would be
// most of CreateEndpoint's time and would stall dockerd's own netlink work
// meanwhile. So the driver keeps a few veth pairs ready, down, with
// placeholder programs attached (they drop everything); CreateEndpoint
// renames one to the endpoint's names and the datapath only replaces the
// programs. Spares are refilled off the request path, once endpoint
// creation has been quiet for a moment; when they run out (a burst of
// container starts), CreateEndpoint makes a veth pair itself, as before.
//
// Spares are named spareHostPrefix/sparePeerPrefix + 12 random hex digits
// and carry the alias spareAlias(host device), so that each daemon on a
// host removes only its own leftovers after a crash.
const (
	spareHostPrefix = "mbs"
	sparePeerPrefix = "mbt"
	// spareQuiet is how long endpoint creation must have been quiet before
	// spares are refilled: long enough for dockerd to finish plumbing the
	// container that took one, whose netlink calls the refill would delay.
	spareQuiet = 250 * time.Millisecond
)

func spareAlias(hostDevice string) string { return "membrane spare of " + hostDevice }

// spare is a veth pair kept ready for an endpoint.
type spare struct {
	host, peer string
	ifindex    int // of host
}

// spares is the driver's pool of ready veth pairs.
type spares struct {
	mu    sync.Mutex
	ready []spare
	// taken wakes KeepSpares when a spare was taken.
	taken chan struct{}
}

func newSpares() *spares { return &spares{taken: make(chan struct{}, 1)} }

func (s *spares) pop() (spare, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ready) == 0 {
		return spare{}, false
	}
	sp := s.ready[len(s.ready)-1]
	s.ready = s.ready[:len(s.ready)-1]
	select {
	case s.taken <- struct{}{}:
	default:
	}
	return sp, true
}

func (s *spares) push(sp spare) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ready = append(s.ready, sp)
}

func (s *spares) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ready)
}

func (s *spares) drain() []spare {
	s.mu.Lock()
	defer s.mu.Unlock()
	all := s.ready
	s.ready = nil
	return all
}

// FillSpares creates spare veth pairs until Config.SpareVeths are ready.
// It must run in the namespace of the driver's netlink handle (the
// datapath attaches by ifindex in the calling thread's namespace).
func (d *Driver) FillSpares() error {
	for d.spares.count() < d.cfg.SpareVeths {
		sp, err := d.newSpare()
		if err != nil {
			return fmt.Errorf("spare veth pair: %w", err)
		}
		d.spares.push(sp)
	}
	return nil
}

// KeepSpares fills the spares, then refills them whenever one was taken and
// endpoint creation has been quiet for spareQuiet, until ctx ends; then it
// removes them. It must run in the namespace of the driver's netlink
// handle. Errors go to report; the driver works without spares.
func (d *Driver) KeepSpares(ctx context.Context, report func(error)) {
	defer func() {
		if err := d.RemoveSpares(); err != nil {
			report(err)
		}
	}()
	quiet := time.NewTimer(0)
	defer quiet.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.spares.taken:
			quiet.Reset(spareQuiet)
			continue
		case <-quiet.C:
		}
		// One at a time, so that a take in between postpones the rest.
		if d.spares.count() < d.cfg.SpareVeths {
			sp, err := d.newSpare()
			if err != nil {
				report(fmt.Errorf("spare veth pair: %w", err))
				quiet.Reset(10 * spareQuiet)
				continue
			}
			d.spares.push(sp)
			quiet.Reset(0)
		}
	}
}

// RemoveSpares deletes the ready spares.
func (d *Driver) RemoveSpares() error {
	var errs []error
	for _, sp := range d.spares.drain() {
		errs = append(errs, d.discardSpare(sp))
	}
	return errors.Join(errs...)
}

// newSpare creates a veth pair, down, and has the datapath prepare its
// host side.
func (d *Driver) newSpare() (spare, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return spare{}, err
	}
	suffix := hex.EncodeToString(b[:])
	sp := spare{host: spareHostPrefix + suffix, peer: sparePeerPrefix + suffix}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: sp.host}, PeerName: sp.peer}
	if err := d.k.nl.LinkAdd(veth); err != nil {
		return spare{}, fmt.Errorf("create %s/%s: %w", sp.host, sp.peer, err)
	}
	link, err := d.k.nl.LinkByName(sp.host)
	if err == nil {
		err = d.k.nl.LinkSetAlias(link, spareAlias(d.cfg.HostDevice))
	}
	if err != nil {
		return spare{}, errors.Join(fmt.Errorf("set up %s: %w", sp.host, err), d.k.deleteLink(sp.host))
	}
	sp.ifindex = link.Attrs().Index
	if err := d.dp.Prepare(sp.ifindex); err != nil {
		return spare{}, errors.Join(err, d.k.deleteLink(sp.host))
	}
	return sp, nil
}

// discardSpare deletes a spare's veth pair and then its placeholder links
// (cheap once the interface is gone).
func (d *Driver) discardSpare(sp spare) error {
	return errors.Join(d.k.deleteLink(sp.host), d.dp.Unprepare(sp.ifindex))
}

// adoptSpare turns a spare into the veth pair of an endpoint: host and peer
// names, the peer's MAC, the MTU, host side up. It returns the host side,
// or nil when no spare is ready or the spare could not be adopted (it is
// discarded then, and the error is for the log only: the caller makes a
// veth pair itself).
func (d *Driver) adoptSpare(hostName, peerName string, peerMAC net.HardwareAddr, mtu int) (netlink.Link, error) {
	sp, ok := d.spares.pop()
	if !ok {
		return nil, nil
	}
	link, err := d.renameSpare(sp, hostName, peerName, peerMAC, mtu)
	if err != nil {
		// Whatever it is called by now, the spare has its ifindex.
		var discard error
		if l, lerr := d.k.nl.LinkByIndex(sp.ifindex); lerr == nil {
			discard = d.k.deleteLink(l.Attrs().Name)
		}
		discard = errors.Join(discard, d.dp.Unprepare(sp.ifindex))
		return nil, errors.Join(fmt.Errorf("adopt spare %s: %w", sp.host, err), discard)
	}
	return link, nil
}

// renameSpare does adoptSpare's changes, in an order that leaves the
// host side down until the end.
func (d *Driver) renameSpare(sp spare, hostName, peerName string, peerMAC net.HardwareAddr, mtu int) (netlink.Link, error) {
	host, err := d.k.nl.LinkByIndex(sp.ifindex)
	if err != nil {
		return nil, fmt.Errorf("look up: %w", err)
	}
	if host.Attrs().Name != sp.host {
		return nil, fmt.Errorf("interface %d is %s now", sp.ifindex, host.Attrs().Name)
	}
	peer, err := d.k.nl.LinkByName(sp.peer)
	if err != nil {
		return nil, fmt.Errorf("look up peer %s: %w", sp.peer, err)
	}
	type step struct {
		what string
		do   func() error
	}
	steps := []step{
		{"rename to " + hostName, func() error { return d.k.nl.LinkSetName(host, hostName) }},
		{"rename peer to " + peerName, func() error { return d.k.nl.LinkSetName(peer, peerName) }},
		{"set peer MAC", func() error { return d.k.nl.LinkSetHardwareAddr(peer, peerMAC) }},
		{"clear alias", func() error { return d.k.nl.LinkSetAlias(host, "") }},
	}
	if mtu > 0 && host.Attrs().MTU != mtu {
		steps = append(steps,
			step{"set MTU", func() error { return d.k.nl.LinkSetMTU(host, mtu) }},
			step{"set peer MTU", func() error { return d.k.nl.LinkSetMTU(peer, mtu) }})
	}
	steps = append(steps, step{"bring up", func() error { return d.k.nl.LinkSetUp(host) }})
	for _, s := range steps {
		if err := s.do(); err != nil {
			return nil, fmt.Errorf("%s: %w", s.what, err)
		}
	}
	return d.k.nl.LinkByIndex(sp.ifindex)
}

// removeLeftoverSpares deletes spares of this daemon that a crash left
// behind (Reconcile).
func (d *Driver) removeLeftoverSpares() error {
	links, err := retryDump(d.k.nl.LinkList)
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	alias := spareAlias(d.cfg.HostDevice)
	var errs []error
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, spareHostPrefix) && l.Attrs().Alias == alias {
			errs = append(errs, d.k.deleteLink(l.Attrs().Name))
		}
	}
	return errors.Join(errs...)
}
