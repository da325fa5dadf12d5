package state

import (
	"errors"
	"fmt"
	"net/netip"

	memdb "github.com/hashicorp/go-memdb"
)

// GetPool returns the pool with ID id, or an error wrapping ErrNotFound.
func GetPool(txn *memdb.Txn, id string) (*Pool, error) {
	return get[Pool](txn, TablePools, "pool", id)
}

// PutPool inserts or replaces a pool. ID, AddressSpace and a valid Prefix
// must be set, and no other pool of the address space may have the same
// prefix (else ErrConflict). Overlap between different prefixes is the
// caller's business.
func PutPool(txn *memdb.Txn, p *Pool) error {
	if p.ID == "" {
		return errors.New("pool: empty ID")
	}
	if p.AddressSpace == "" {
		return fmt.Errorf("pool %q: empty address space", p.ID)
	}
	if !p.Prefix.IsValid() {
		return fmt.Errorf("pool %q: invalid prefix", p.ID)
	}
	raw, err := txn.First(TablePools, IndexSpaceCIDR, p.AddressSpace, p.Prefix)
	if err != nil {
		return fmt.Errorf("pool %q: %w", p.ID, err)
	}
	if other, ok := raw.(*Pool); ok && other.ID != p.ID {
		return fmt.Errorf("pool %q: prefix %s of address space %s belongs to pool %q: %w",
			p.ID, p.Prefix, p.AddressSpace, other.ID, ErrConflict)
	}
	return insert(txn, TablePools, "pool", p.ID, p)
}

// DeletePool deletes a pool, or returns an error wrapping ErrNotFound. Its
// addresses are left alone (see DeleteAddressesByPool).
func DeletePool(txn *memdb.Txn, id string) error {
	return del(txn, TablePools, "pool", id)
}

// ListPools returns every pool, by ID.
func ListPools(txn *memdb.Txn) ([]*Pool, error) {
	return list[Pool](txn, TablePools, IndexID)
}

// ListPoolsBySpace returns the pools of one address space.
func ListPoolsBySpace(txn *memdb.Txn, addressSpace string) ([]*Pool, error) {
	return list[Pool](txn, TablePools, IndexSpaceCIDR+"_prefix", addressSpace)
}

// FindPoolByPrefix returns the pool of an address space with exactly this
// prefix, or an error wrapping ErrNotFound.
func FindPoolByPrefix(txn *memdb.Txn, addressSpace string, prefix netip.Prefix) (*Pool, error) {
	raw, err := txn.First(TablePools, IndexSpaceCIDR, addressSpace, prefix)
	if err != nil {
		return nil, fmt.Errorf("pool %s in %s: %w", prefix, addressSpace, err)
	}
	if raw == nil {
		return nil, fmt.Errorf("pool %s in %s: %w", prefix, addressSpace, ErrNotFound)
	}
	return raw.(*Pool), nil
}

// FindPoolByRequest returns every pool created for this request key, by ID
// (none is not an error). An empty key finds nothing.
func FindPoolByRequest(txn *memdb.Txn, key string) ([]*Pool, error) {
	if key == "" {
		return nil, nil
	}
	return list[Pool](txn, TablePools, IndexRequest, key)
}

// GetAddress returns the allocation of addr in a pool, or an error wrapping
// ErrNotFound.
func GetAddress(txn *memdb.Txn, poolID string, addr netip.Addr) (*Address, error) {
	return get[Address](txn, TableAddresses, "address", AddressKey(poolID, addr))
}

// PutAddress inserts or replaces an address allocation. Its Key must be
// AddressKey(PoolID, Addr). The pool need not exist.
func PutAddress(txn *memdb.Txn, a *Address) error {
	if a.PoolID == "" || !a.Addr.IsValid() {
		return fmt.Errorf("address %q: empty pool ID or invalid address", a.Key)
	}
	if want := AddressKey(a.PoolID, a.Addr); a.Key != want {
		return fmt.Errorf("address %q: key must be %q", a.Key, want)
	}
	return insert(txn, TableAddresses, "address", a.Key, a)
}

// DeleteAddress deletes the allocation of addr in a pool, or returns an
// error wrapping ErrNotFound.
func DeleteAddress(txn *memdb.Txn, poolID string, addr netip.Addr) error {
	return del(txn, TableAddresses, "address", AddressKey(poolID, addr))
}

// DeleteAddressesByPool deletes every address allocated in a pool and
// returns how many there were.
func DeleteAddressesByPool(txn *memdb.Txn, poolID string) (int, error) {
	n, err := txn.DeleteAll(TableAddresses, IndexPool, poolID)
	if err != nil {
		return n, fmt.Errorf("delete addresses of pool %q: %w", poolID, err)
	}
	return n, nil
}

// ListAddresses returns every allocated address, by key.
func ListAddresses(txn *memdb.Txn) ([]*Address, error) {
	return list[Address](txn, TableAddresses, IndexID)
}

// ListAddressesByPool returns the addresses allocated in one pool.
func ListAddressesByPool(txn *memdb.Txn, poolID string) ([]*Address, error) {
	return list[Address](txn, TableAddresses, IndexPool, poolID)
}
