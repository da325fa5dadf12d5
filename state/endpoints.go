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

// ListEndpointsByIdentity returns the endpoints that hold identity id, by
// ID.
func ListEndpointsByIdentity(txn *memdb.Txn, id uint32) ([]*Endpoint, error) {
	return list[Endpoint](txn, TableEndpoints, IndexIdentity, id)
}

// IdentityInUse reports whether any endpoint holds identity id.
func IdentityInUse(txn *memdb.Txn, id uint32) (bool, error) {
	raw, err := txn.First(TableEndpoints, IndexIdentity, id)
	if err != nil {
		return false, fmt.Errorf("endpoints with identity %d: %w", id, err)
	}
	return raw != nil, nil
}

// ListEndpointsByContainer returns the endpoints of one container, by ID.
// Endpoints whose container is not known yet are never returned, not even
// for containerID "".
func ListEndpointsByContainer(txn *memdb.Txn, containerID string) ([]*Endpoint, error) {
	if containerID == "" {
		return nil, nil
	}
	return list[Endpoint](txn, TableEndpoints, IndexContainer, containerID)
}
