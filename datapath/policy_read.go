package datapath

import (
	"fmt"
	"net/netip"
)

// ReadPolicy reads what the policy maps hold, from the kernel: the entries,
// and the enforcement of every subject that has any (Lockdown included).
// It is for checks and diagnostics; SyncPolicy and ApplyPolicy never need
// it.
func (d *Datapath) ReadPolicy() (PolicyState, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return PolicyState{}, ErrClosed
	}
	d.policyMu.Lock()
	defer d.policyMu.Unlock()
	s := PolicyState{Entries: map[PolicyKey]Verdict{}, Enforcement: map[uint32]Enforcement{}}
	err := readMap(d.policy, func(k endpointPolicyKey, v endpointPolicyValue) {
		s.Entries[policyKeyOf(k)] = Verdict(v.Verdict)
	})
	if err != nil {
		return s, fmt.Errorf("read policy map: %w", err)
	}
	err = readMap(d.policyEnforce, func(k uint32, v endpointPolicyEnforceValue) {
		s.Enforcement[k] = Enforcement{Ingress: v.Ingress != 0, Egress: v.Egress != 0, Lockdown: v.Lockdown != 0}
	})
	if err != nil {
		return s, fmt.Errorf("read policy_enforce map: %w", err)
	}
	return s, nil
}

// ReadIPCache reads what the ipcache holds, from the kernel.
func (d *Datapath) ReadIPCache() (map[netip.Prefix]uint32, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil, ErrClosed
	}
	d.policyMu.Lock()
	defer d.policyMu.Unlock()
	out := map[netip.Prefix]uint32{}
	err := readMap(d.ipcache, func(k endpointIpcacheKey, v endpointIpcacheValue) { out[ipcachePrefix(k)] = v.Identity })
	if err != nil {
		return nil, fmt.Errorf("read ipcache map: %w", err)
	}
	return out, nil
}
