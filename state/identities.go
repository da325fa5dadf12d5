package state

import (
	"errors"
	"fmt"

	memdb "github.com/hashicorp/go-memdb"
)

// GetIdentity returns the identity numbered id, or an error wrapping
// ErrNotFound.
func GetIdentity(txn *memdb.Txn, id uint32) (*Identity, error) {
	raw, err := txn.First(TableIdentities, IndexID, id)
	if err != nil {
		return nil, fmt.Errorf("identity %d: %w", id, err)
	}
	if raw == nil {
		return nil, fmt.Errorf("identity %d: %w", id, ErrNotFound)
	}
	return raw.(*Identity), nil
}

// GetIdentityByKey returns the identity whose Key is key (the empty key
// included), or an error wrapping ErrNotFound.
func GetIdentityByKey(txn *memdb.Txn, key string) (*Identity, error) {
	raw, err := txn.First(TableIdentities, IndexKey, key)
	if err != nil {
		return nil, fmt.Errorf("identity with key %q: %w", key, err)
	}
	if raw == nil {
		return nil, fmt.Errorf("identity with key %q: %w", key, ErrNotFound)
	}
	return raw.(*Identity), nil
}

// PutIdentity inserts or replaces an identity. ID must be > 0 and Key must
// not belong to another identity (else ErrConflict). Which numbers and keys
// are valid beyond that is the allocator's business (package labels).
func PutIdentity(txn *memdb.Txn, id *Identity) error {
	if id.ID == 0 {
		return fmt.Errorf("identity with key %q: number 0 is reserved", id.Key)
	}
	other, err := GetIdentityByKey(txn, id.Key)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("identity %d: %w", id.ID, err)
	}
	if other != nil && other.ID != id.ID {
		return fmt.Errorf("identity %d: key %q belongs to identity %d: %w", id.ID, id.Key, other.ID, ErrConflict)
	}
	if err := txn.Insert(TableIdentities, id); err != nil {
		return fmt.Errorf("insert identity %d: %w", id.ID, err)
	}
	return nil
}

// DeleteIdentity deletes an identity, or returns an error wrapping
// ErrNotFound. Endpoints that hold it are left alone.
func DeleteIdentity(txn *memdb.Txn, id uint32) error {
	obj, err := GetIdentity(txn, id)
	if err != nil {
		return err
	}
	if err := txn.Delete(TableIdentities, obj); err != nil {
		return fmt.Errorf("delete identity %d: %w", id, err)
	}
	return nil
}

// ListIdentities returns every identity, by number.
func ListIdentities(txn *memdb.Txn) ([]*Identity, error) {
	return list[Identity](txn, TableIdentities, IndexID)
}

// FreeIdentityNumber returns the lowest number in [from, to] that no
// identity has; ok is false when every one of them is taken.
func FreeIdentityNumber(txn *memdb.Txn, from, to uint32) (n uint32, ok bool, err error) {
	if from == 0 || from > to {
		return 0, false, fmt.Errorf("free identity number in [%d, %d]: empty or reserved range", from, to)
	}
	it, err := txn.LowerBound(TableIdentities, IndexID, from)
	if err != nil {
		return 0, false, fmt.Errorf("free identity number in [%d, %d]: %w", from, to, err)
	}
	want := from
	for raw := it.Next(); raw != nil; raw = it.Next() {
		id := raw.(*Identity).ID
		if id > want {
			break
		}
		if id == to {
			return 0, false, nil
		}
		want = id + 1
	}
	return want, true, nil
}
