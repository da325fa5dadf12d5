package state

import (
	"errors"
	"fmt"

	memdb "github.com/hashicorp/go-memdb"
)

// GetEndpoint returns the endpoint with Docker ID id, or an error wrapping
// ErrNotFound.
func GetEndpoint(txn *memdb.Txn, id string) (*Endpoint, error) {
	return get[Endpoint](txn, TableEndpoints, "endpoint", id)
}

// PutEndpoint inserts or replaces an endpoint. ID and NetworkID must be set;
// the network need not exist (Docker may replay calls in any order).
func PutEndpoint(txn *memdb.Txn, e *Endpoint) error {
	if e.ID == "" {
		return errors.New("endpoint: empty ID")
	}
	if e.NetworkID == "" {
		return fmt.Errorf("endpoint %q: empty network ID", e.ID)
	}
	return insert(txn, TableEndpoints, "endpoint", e.ID, e)
}

// DeleteEndpoint deletes an endpoint, or returns an error wrapping
// ErrNotFound.
func DeleteEndpoint(txn *memdb.Txn, id string) error {
	return del(txn, TableEndpoints, "endpoint", id)
}

// ListEndpoints returns every endpoint, by ID.
func ListEndpoints(txn *memdb.Txn) ([]*Endpoint, error) {
	return list[Endpoint](txn, TableEndpoints, IndexID)
}

// ListEndpointsByNetwork returns the endpoints of one network, by ID.
func ListEndpointsByNetwork(txn *memdb.Txn, networkID string) ([]*Endpoint, error) {
	return list[Endpoint](txn, TableEndpoints, IndexNetwork, networkID)
}
