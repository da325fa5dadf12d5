package state

import (
	"encoding/json"
	"errors"
	"fmt"

	memdb "github.com/hashicorp/go-memdb"
)

// GetPolicy returns the policy rule named name, or an error wrapping
// ErrNotFound.
func GetPolicy(txn *memdb.Txn, name string) (*Policy, error) {
	return get[Policy](txn, TablePolicies, "policy", name)
}

// PutPolicy inserts or replaces a policy rule. Name must be set and Rule
// must be a JSON document: package policy validates the rule and writes
// it before it gets here, so that is not checked again (an import of many
// rules would spend a tenth of its time on it); rules read from disk are
// (putPolicyFromDisk).
func PutPolicy(txn *memdb.Txn, p *Policy) error {
	if p.Name == "" {
		return errors.New("policy: empty name")
	}
	return insert(txn, TablePolicies, "policy", p.Name, p)
}

// putPolicyFromDisk is PutPolicy for a rule read from a checkpoint or the
// journal: it also checks that the rule is a JSON document.
func putPolicyFromDisk(txn *memdb.Txn, p *Policy) error {
	if !json.Valid(p.Rule) {
		return fmt.Errorf("policy %q: rule is not JSON", p.Name)
	}
	return PutPolicy(txn, p)
}

// DeletePolicy deletes a policy rule, or returns an error wrapping
// ErrNotFound.
func DeletePolicy(txn *memdb.Txn, name string) error {
	return del(txn, TablePolicies, "policy", name)
}

// ListPolicies returns every policy rule, by name.
func ListPolicies(txn *memdb.Txn) ([]*Policy, error) {
	return list[Policy](txn, TablePolicies, IndexID)
}
