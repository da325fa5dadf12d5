package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// FlushConntrack empties the conntrack and fragment maps: every flow's next
// packet is a new flow, checked against the policy (replies of connections
// made before then are checked as new flows too, so they may be cut).
func (d *Datapath) FlushConntrack() error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	if err := flushMap[endpointCtKey, endpointCtEntry](d.ct); err != nil {
		return fmt.Errorf("flush conntrack: %w", err)
	}
	if err := flushMap[endpointFragKey, endpointFragValue](d.fragments); err != nil {
		return fmt.Errorf("flush fragments: %w", err)
	}
	return nil
}

// flushMap deletes every entry of the hash map m.
func flushMap[K comparable, V any](m *ebpf.Map) error {
	var keys []K
	err := readMap(m, func(k K, _ V) { keys = append(keys, k) })
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		return nil
	}
	n, err := m.BatchDelete(keys, nil)
	if err == nil {
		return nil
	}
	if !errors.Is(err, ebpf.ErrKeyNotExist) && !errors.Is(err, ebpf.ErrNotSupported) {
		return err
	}
	for _, k := range keys[n:] {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
	}
	return nil
}
