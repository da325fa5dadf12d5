package state

import (
	"fmt"

	memdb "github.com/hashicorp/go-memdb"
)

// get returns the object of table whose primary key is id.
func get[T any](txn *memdb.Txn, table, what, id string) (*T, error) {
	raw, err := txn.First(table, IndexID, id)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", what, id, err)
	}
	if raw == nil {
		return nil, fmt.Errorf("%s %q: %w", what, id, ErrNotFound)
	}
	return raw.(*T), nil
}

// list returns the objects an index lookup yields, in index order.
func list[T any](txn *memdb.Txn, table, index string, args ...any) ([]*T, error) {
	it, err := txn.Get(table, index, args...)
	if err != nil {
		return nil, fmt.Errorf("%s by %s: %w", table, index, err)
	}
	var out []*T
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*T))
	}
	return out, nil
}

// del deletes the object of table whose primary key is id.
func del(txn *memdb.Txn, table, what, id string) error {
	raw, err := txn.First(table, IndexID, id)
	if err != nil {
		return fmt.Errorf("%s %q: %w", what, id, err)
	}
	if raw == nil {
		return fmt.Errorf("%s %q: %w", what, id, ErrNotFound)
	}
	if err := txn.Delete(table, raw); err != nil {
		return fmt.Errorf("delete %s %q: %w", what, id, err)
	}
	return nil
}

// insert inserts obj into table, wrapping memdb's error.
func insert(txn *memdb.Txn, table, what, id string, obj any) error {
	if err := txn.Insert(table, obj); err != nil {
		return fmt.Errorf("insert %s %q: %w", what, id, err)
	}
	return nil
}
