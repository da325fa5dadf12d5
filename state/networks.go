package state

import (
	"errors"
	"fmt"
	"math"

	memdb "github.com/hashicorp/go-memdb"
)

// GetNetwork returns the network with Docker ID id, or an error wrapping
// ErrNotFound.
func GetNetwork(txn *memdb.Txn, id string) (*Network, error) {
	return get[Network](txn, TableNetworks, "network", id)
}

// PutNetwork inserts or replaces a network. Its ID must be set and its Index
// must be > 0 and not used by another network (else ErrConflict).
func PutNetwork(txn *memdb.Txn, n *Network) error {
	if n.ID == "" {
		return errors.New("network: empty ID")
	}
	if n.Index == 0 {
		return fmt.Errorf("network %q: index 0 is reserved", n.ID)
	}
	raw, err := txn.First(TableNetworks, IndexNetworkIndex, n.Index)
	if err != nil {
		return fmt.Errorf("network %q: %w", n.ID, err)
	}
	if other, ok := raw.(*Network); ok && other.ID != n.ID {
		return fmt.Errorf("network %q: index %d belongs to network %q: %w", n.ID, n.Index, other.ID, ErrConflict)
	}
	return insert(txn, TableNetworks, "network", n.ID, n)
}

// DeleteNetwork deletes a network, or returns an error wrapping ErrNotFound.
// Its endpoints are left alone.
func DeleteNetwork(txn *memdb.Txn, id string) error {
	return del(txn, TableNetworks, "network", id)
}

// ListNetworks returns every network, by ID.
func ListNetworks(txn *memdb.Txn) ([]*Network, error) {
	return list[Network](txn, TableNetworks, IndexID)
}

// NextNetworkIndex returns the smallest network index > 0 that no network
// uses.
func NextNetworkIndex(txn *memdb.Txn) (uint32, error) {
	it, err := txn.LowerBound(TableNetworks, IndexNetworkIndex, uint32(1))
	if err != nil {
		return 0, fmt.Errorf("network index: %w", err)
	}
	want := uint32(1)
	for raw := it.Next(); raw != nil; raw = it.Next() {
		n := raw.(*Network)
		if n.Index > want {
			break
		}
		if n.Index == math.MaxUint32 {
			return 0, errors.New("network index: every index is in use")
		}
		want = n.Index + 1
	}
	return want, nil
}
