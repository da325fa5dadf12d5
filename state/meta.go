package state

import (
	"errors"

	memdb "github.com/hashicorp/go-memdb"
)

// GetMeta returns the value of a host-wide setting, or an error wrapping
// ErrNotFound.
func GetMeta(txn *memdb.Txn, key string) (string, error) {
	m, err := get[Meta](txn, TableMeta, "meta", key)
	if err != nil {
		return "", err
	}
	return m.Value, nil
}

// PutMeta sets a host-wide setting.
func PutMeta(txn *memdb.Txn, key, value string) error {
	if key == "" {
		return errors.New("meta: empty key")
	}
	return insert(txn, TableMeta, "meta", key, &Meta{Key: key, Value: value})
}

// ListMeta returns every setting, by key.
func ListMeta(txn *memdb.Txn) ([]*Meta, error) {
	return list[Meta](txn, TableMeta, IndexID)
}
