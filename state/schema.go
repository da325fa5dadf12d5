package state

import (
	"fmt"
	"net/netip"
	"reflect"

	memdb "github.com/hashicorp/go-memdb"
)

// Table names.
const (
	TableNetworks   = "networks"
	TableEndpoints  = "endpoints"
	TablePools      = "pools"
	TableAddresses  = "addresses"
	TableMeta       = "meta"
	TableIdentities = "identities"
	TablePolicies   = "policies"
)

// Index names. IndexID is the primary key of every table. No name may end in
// "_prefix": memdb reads that suffix as "prefix scan of the index named
// before it" (so the pools' space+prefix index is "space_cidr").
const (
	IndexID           = "id"
	IndexNetworkIndex = "index"      // networks: Index (unique)
	IndexNetwork      = "network"    // endpoints: NetworkID
	IndexRequest      = "request"    // pools: RequestKey
	IndexSpaceCIDR    = "space_cidr" // pools: AddressSpace + Prefix (unique)
	IndexPool         = "pool"       // addresses: PoolID
	IndexIdentity     = "identity"   // endpoints: Identity
	IndexContainer    = "container"  // endpoints: ContainerID (endpoints whose container is not known yet are not in it)
	IndexKey          = "key"        // identities: Key (unique; the empty key is indexed too)
)

// Schema returns the database schema. Every call returns a fresh value.
func Schema() *memdb.DBSchema {
	tables := []*memdb.TableSchema{
		networksTableSchema(),
		endpointsTableSchema(),
		poolsTableSchema(),
		addressesTableSchema(),
		metaTableSchema(),
		identitiesTableSchema(),
		policiesTableSchema(),
	}
	db := &memdb.DBSchema{Tables: make(map[string]*memdb.TableSchema, len(tables))}
	for _, t := range tables {
		db.Tables[t.Name] = t
	}
	return db
}

func networksTableSchema() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: TableNetworks,
		Indexes: map[string]*memdb.IndexSchema{
			IndexID: {
				Name:    IndexID,
				Unique:  true,
				Indexer: &memdb.StringFieldIndex{Field: "ID"},
			},
			IndexNetworkIndex: {
				Name:    IndexNetworkIndex,
				Unique:  true,
				Indexer: &memdb.UintFieldIndex{Field: "Index"},
			},
		},
	}
}

func endpointsTableSchema() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: TableEndpoints,
		Indexes: map[string]*memdb.IndexSchema{
			IndexID: {
				Name:    IndexID,
				Unique:  true,
				Indexer: &memdb.StringFieldIndex{Field: "ID"},
			},
			IndexNetwork: {
				Name:    IndexNetwork,
				Indexer: &memdb.StringFieldIndex{Field: "NetworkID"},
			},
			IndexIdentity: {
				Name:    IndexIdentity,
				Indexer: &memdb.UintFieldIndex{Field: "Identity"},
			},
			IndexContainer: {
				Name:         IndexContainer,
				AllowMissing: true,
				Indexer:      &memdb.StringFieldIndex{Field: "ContainerID"},
			},
		},
	}
}

func poolsTableSchema() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: TablePools,
		Indexes: map[string]*memdb.IndexSchema{
			IndexID: {
				Name:    IndexID,
				Unique:  true,
				Indexer: &memdb.StringFieldIndex{Field: "ID"},
			},
			// Several pools may share a request key (the same dynamic
			// request made for two networks); a pool may have none.
			IndexRequest: {
				Name:         IndexRequest,
				AllowMissing: true,
				Indexer:      &memdb.StringFieldIndex{Field: "RequestKey"},
			},
			IndexSpaceCIDR: {
				Name:    IndexSpaceCIDR,
				Unique:  true,
				Indexer: &stringPrefixFieldIndex{StringField: "AddressSpace", PrefixField: "Prefix"},
			},
		},
	}
}

func addressesTableSchema() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: TableAddresses,
		Indexes: map[string]*memdb.IndexSchema{
			IndexID: {
				Name:    IndexID,
				Unique:  true,
				Indexer: &memdb.StringFieldIndex{Field: "Key"},
			},
			IndexPool: {
				Name:    IndexPool,
				Indexer: &memdb.StringFieldIndex{Field: "PoolID"},
			},
		},
	}
}

func metaTableSchema() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: TableMeta,
		Indexes: map[string]*memdb.IndexSchema{
			IndexID: {
				Name:    IndexID,
				Unique:  true,
				Indexer: &memdb.StringFieldIndex{Field: "Key"},
			},
		},
	}
}

func identitiesTableSchema() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: TableIdentities,
		Indexes: map[string]*memdb.IndexSchema{
			IndexID: {
				Name:    IndexID,
				Unique:  true,
				Indexer: &memdb.UintFieldIndex{Field: "ID"},
			},
			// The key of the empty label set is "": memdb's
			// StringFieldIndex treats "" as missing, so a string index
			// that keeps it is used instead.
			IndexKey: {
				Name:    IndexKey,
				Unique:  true,
				Indexer: &anyStringFieldIndex{Field: "Key"},
			},
		},
	}
}

func policiesTableSchema() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: TablePolicies,
		Indexes: map[string]*memdb.IndexSchema{
			IndexID: {
				Name:    IndexID,
				Unique:  true,
				Indexer: policyNameIndex{},
			},
		},
	}
}

// policyNameIndex indexes policies by Name, as memdb.StringFieldIndex
// {Field: "Name"} does (the name followed by "\x00"; an empty name is not
// indexed) but without reflection: imports insert policies by the
// thousand, and reflection was a third of each insert's allocations.
type policyNameIndex struct{}

var (
	_ memdb.SingleIndexer = policyNameIndex{}
	_ memdb.PrefixIndexer = policyNameIndex{}
)

func (policyNameIndex) FromObject(obj any) (bool, []byte, error) {
	p, ok := obj.(*Policy)
	if !ok {
		return false, nil, fmt.Errorf("object %T is not a *Policy", obj)
	}
	if p.Name == "" {
		return false, nil, nil
	}
	key := make([]byte, len(p.Name)+1)
	copy(key, p.Name)
	return true, key, nil
}

func (x policyNameIndex) FromArgs(args ...any) ([]byte, error) {
	return (&memdb.StringFieldIndex{Field: "Name"}).FromArgs(args...)
}

func (x policyNameIndex) PrefixFromArgs(args ...any) ([]byte, error) {
	return (&memdb.StringFieldIndex{Field: "Name"}).PrefixFromArgs(args...)
}

// anyStringFieldIndex indexes a string field, the empty string included.
// Its key is the string followed by "\x00", like memdb.StringFieldIndex.
type anyStringFieldIndex struct {
	Field string
}

var _ memdb.SingleIndexer = (*anyStringFieldIndex)(nil)

func (x *anyStringFieldIndex) FromObject(obj any) (bool, []byte, error) {
	v := reflect.Indirect(reflect.ValueOf(obj))
	if v.Kind() != reflect.Struct {
		return false, nil, fmt.Errorf("object %T is not a struct", obj)
	}
	fv := v.FieldByName(x.Field)
	if !fv.IsValid() || fv.Kind() != reflect.String {
		return false, nil, fmt.Errorf("field %q of %T is not a string", x.Field, obj)
	}
	return true, []byte(fv.String() + "\x00"), nil
}

func (x *anyStringFieldIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("want 1 argument (string), got %d", len(args))
	}
	s, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("argument 0 must be a string: %#v", args[0])
	}
	return []byte(s + "\x00"), nil
}

// stringPrefixFieldIndex indexes a non-empty string field followed by a valid
// netip.Prefix field. Its key is "<string>\x00<prefix>\x00", so lookups take
// (string, netip.Prefix), and the "_prefix" form of the index takes just the
// string and lists every object with that string.
type stringPrefixFieldIndex struct {
	StringField string
	PrefixField string
}

var (
	_ memdb.SingleIndexer = (*stringPrefixFieldIndex)(nil)
	_ memdb.PrefixIndexer = (*stringPrefixFieldIndex)(nil)
)

func (x *stringPrefixFieldIndex) FromObject(obj any) (bool, []byte, error) {
	v := reflect.Indirect(reflect.ValueOf(obj))
	if v.Kind() != reflect.Struct {
		return false, nil, fmt.Errorf("object %T is not a struct", obj)
	}
	sv := v.FieldByName(x.StringField)
	if !sv.IsValid() || sv.Kind() != reflect.String {
		return false, nil, fmt.Errorf("field %q of %T is not a string", x.StringField, obj)
	}
	pv := v.FieldByName(x.PrefixField)
	if !pv.IsValid() {
		return false, nil, fmt.Errorf("field %q of %T is missing", x.PrefixField, obj)
	}
	p, ok := pv.Interface().(netip.Prefix)
	if !ok {
		return false, nil, fmt.Errorf("field %q of %T is not a netip.Prefix", x.PrefixField, obj)
	}
	if sv.String() == "" || !p.IsValid() {
		return false, nil, nil
	}
	return true, encodeStringPrefix(sv.String(), p), nil
}

func (x *stringPrefixFieldIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 2 {
		return nil, fmt.Errorf("want 2 arguments (string, netip.Prefix), got %d", len(args))
	}
	s, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("argument 0 must be a string: %#v", args[0])
	}
	p, ok := args[1].(netip.Prefix)
	if !ok {
		return nil, fmt.Errorf("argument 1 must be a netip.Prefix: %#v", args[1])
	}
	return encodeStringPrefix(s, p), nil
}

func (x *stringPrefixFieldIndex) PrefixFromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("want 1 argument (string), got %d", len(args))
	}
	s, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("argument 0 must be a string: %#v", args[0])
	}
	return []byte(s + "\x00"), nil
}

func encodeStringPrefix(s string, p netip.Prefix) []byte {
	return []byte(s + "\x00" + p.String() + "\x00")
}
