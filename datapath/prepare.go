package datapath

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// Attaching a program to an interface's tcx hook for the first time makes
// the kernel wait for an RCU grace period while it holds the RTNL lock:
// about 12 ms per hook on a 2-CPU machine with HZ=250, so 25 ms per
// endpoint, during which every other netlink change on the host (dockerd's
// included) waits too. Replacing the program of an existing link does not
// wait. Prepare pays the wait ahead of time, for interfaces that will
// become endpoints later (the driver's spare veth pairs), by attaching a
// placeholder that drops every packet; Attach then only replaces it.

// preparedLinks are the placeholder links of one prepared interface, held
// open (not pinned) until Attach takes them over or Unprepare closes them.
type preparedLinks map[ebpf.AttachType]link.Link

// preparedSet is the Datapath's prepared interfaces, by ifindex.
type preparedSet struct {
	mu      sync.Mutex
	byIndex map[int]preparedLinks
}

// loadPlaceholder loads the program prepared interfaces run until they
// become endpoints: it drops every packet.
func loadPlaceholder() (*ebpf.Program, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    "mbr_placeholder",
		Type:    ebpf.SchedCLS,
		License: "Dual BSD/GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, tcActShot),
			asm.Return(),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("load placeholder program: %w", err)
	}
	return prog, nil
}

// Prepare attaches the placeholder program, which drops every packet, to
// both hooks of the interface ifindex, so that a later Attach of an
// endpoint on that interface replaces programs instead of attaching them.
// The links are held by the Datapath, not pinned: they go away with
// Unprepare, with Close, or with the process. Preparing a prepared
// interface does nothing. Must be called in the interface's namespace.
func (d *Datapath) Prepare(ifindex int) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	d.prepared.mu.Lock()
	_, done := d.prepared.byIndex[ifindex]
	d.prepared.mu.Unlock()
	if done {
		return nil
	}

	links := preparedLinks{}
	for _, h := range hooks {
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: d.placeholder, Attach: h.attach})
		if err != nil {
			return errors.Join(fmt.Errorf("prepare interface %d: %s: %w", ifindex, h.pin, err), links.close())
		}
		links[h.attach] = l
	}

	d.prepared.mu.Lock()
	defer d.prepared.mu.Unlock()
	if d.prepared.byIndex == nil {
		d.prepared.byIndex = map[int]preparedLinks{}
	}
	if _, raced := d.prepared.byIndex[ifindex]; raced {
		return links.close()
	}
	d.prepared.byIndex[ifindex] = links
	return nil
}

// Unprepare detaches the placeholder from the interface ifindex, if it is
// prepared. Deleting the interface first makes this cheap: links of a gone
// interface detach without a grace period.
func (d *Datapath) Unprepare(ifindex int) error {
	links := d.takePrepared(ifindex)
	if err := links.close(); err != nil {
		return fmt.Errorf("unprepare interface %d: %w", ifindex, err)
	}
	return nil
}

// takePrepared removes and returns the prepared links of ifindex (nil if
// it is not prepared).
func (d *Datapath) takePrepared(ifindex int) preparedLinks {
	d.prepared.mu.Lock()
	defer d.prepared.mu.Unlock()
	links := d.prepared.byIndex[ifindex]
	delete(d.prepared.byIndex, ifindex)
	return links
}

// closePrepared closes every prepared link (Close).
func (d *Datapath) closePrepared() error {
	d.prepared.mu.Lock()
	defer d.prepared.mu.Unlock()
	var errs []error
	for ifindex, links := range d.prepared.byIndex {
		errs = append(errs, links.close())
		delete(d.prepared.byIndex, ifindex)
	}
	return errors.Join(errs...)
}

func (p preparedLinks) close() error {
	var errs []error
	for _, l := range p {
		errs = append(errs, l.Close())
	}
	return errors.Join(errs...)
}
