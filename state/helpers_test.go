package state

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	memdb "github.com/hashicorp/go-memdb"
)

func memTxn(t *testing.T) *memdb.Txn {
	t.Helper()
	db, err := newDB()
	if err != nil {
		t.Fatal(err)
	}
	txn := db.Txn(true)
	t.Cleanup(txn.Abort)
	return txn
}

func TestGetOfMissingObjectWrapsErrNotFound(t *testing.T) {
	txn := memTxn(t)
	checks := map[string]error{}
	_, checks["GetNetwork"] = GetNetwork(txn, "n")
	_, checks["GetEndpoint"] = GetEndpoint(txn, "e")
	_, checks["GetPool"] = GetPool(txn, "p")
	_, checks["GetAddress"] = GetAddress(txn, "p", addr("10.0.0.1"))
	_, checks["GetMeta"] = GetMeta(txn, "k")
	_, checks["FindPoolByPrefix"] = FindPoolByPrefix(txn, "s", pfx("10.0.0.0/24"))
	checks["DeleteNetwork"] = DeleteNetwork(txn, "n")
	checks["DeleteEndpoint"] = DeleteEndpoint(txn, "e")
	checks["DeletePool"] = DeletePool(txn, "p")
	checks["DeleteAddress"] = DeleteAddress(txn, "p", addr("10.0.0.1"))
	_, checks["GetIdentity"] = GetIdentity(txn, 256)
	_, checks["GetIdentityByKey"] = GetIdentityByKey(txn, "")
	_, checks["GetPolicy"] = GetPolicy(txn, "p")
	checks["DeleteIdentity"] = DeleteIdentity(txn, 256)
	checks["DeletePolicy"] = DeletePolicy(txn, "p")
	for name, err := range checks {
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("%s of a missing object = %v, want ErrNotFound", name, err)
		}
	}
}

func TestNextNetworkIndexIsSmallestFreeAboveZero(t *testing.T) {
	tests := []struct {
		name  string
		taken []uint32
		want  uint32
	}{
		{"empty", nil, 1},
		{"dense", []uint32{1, 2, 3}, 4},
		{"gap at start", []uint32{2, 3}, 1},
		{"gap in middle", []uint32{1, 2, 4, 5}, 3},
		{"sparse high", []uint32{1, 1000}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			txn := memTxn(t)
			for i, idx := range tt.taken {
				if err := PutNetwork(txn, &Network{ID: string(rune('a' + i)), Index: idx}); err != nil {
					t.Fatal(err)
				}
			}
			got, err := NextNetworkIndex(txn)
			if err != nil || got != tt.want {
				t.Errorf("NextNetworkIndex = %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

func TestPutNetworkRejectsIndexOfAnotherNetwork(t *testing.T) {
	txn := memTxn(t)
	if err := PutNetwork(txn, &Network{ID: "a", Index: 7}); err != nil {
		t.Fatal(err)
	}
	if err := PutNetwork(txn, &Network{ID: "b", Index: 7}); !errors.Is(err, ErrConflict) {
		t.Errorf("second network with index 7: %v, want ErrConflict", err)
	}
	// Replacing a network keeps or changes its own index freely.
	if err := PutNetwork(txn, &Network{ID: "a", Index: 7, MTU: 1400}); err != nil {
		t.Errorf("replacing network a: %v", err)
	}
	if err := PutNetwork(txn, &Network{ID: "a", Index: 8}); err != nil {
		t.Errorf("moving network a to index 8: %v", err)
	}
	if got, _ := NextNetworkIndex(txn); got != 1 {
		t.Errorf("NextNetworkIndex after move = %d, want 1", got)
	}
	if err := PutNetwork(txn, &Network{ID: "b", Index: 7}); err != nil {
		t.Errorf("index 7 after a moved away: %v", err)
	}
	if err := PutNetwork(txn, &Network{ID: "c"}); err == nil {
		t.Error("network with index 0 accepted")
	}
}

func TestPoolsByRequestSpaceAndPrefix(t *testing.T) {
	txn := memTxn(t)
	pools := []*Pool{
		{ID: "p1", AddressSpace: "local", Prefix: pfx("10.0.0.0/24"), RequestKey: "k"},
		{ID: "p2", AddressSpace: "local", Prefix: pfx("10.0.1.0/24"), RequestKey: "k"},
		{ID: "p3", AddressSpace: "local2", Prefix: pfx("10.0.0.0/24")}, // same prefix, other space; no key
		{ID: "p4", AddressSpace: "global", Prefix: pfx("fd00::/64"), RequestKey: "other"},
	}
	for _, p := range pools {
		if err := PutPool(txn, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := PutPool(txn, &Pool{ID: "p5", AddressSpace: "local", Prefix: pfx("10.0.0.0/24")}); !errors.Is(err, ErrConflict) {
		t.Errorf("second pool 10.0.0.0/24 in local: %v, want ErrConflict", err)
	}

	ids := func(ps []*Pool) (out []string) {
		for _, p := range ps {
			out = append(out, p.ID)
		}
		return out
	}
	got, err := FindPoolByRequest(txn, "k")
	if err != nil || len(got) != 2 || got[0].ID != "p1" || got[1].ID != "p2" {
		t.Errorf("FindPoolByRequest(k) = %v, %v; want [p1 p2]", ids(got), err)
	}
	if got, err := FindPoolByRequest(txn, ""); err != nil || len(got) != 0 {
		t.Errorf("FindPoolByRequest(\"\") = %v, %v; want none", ids(got), err)
	}
	got, err = ListPoolsBySpace(txn, "local")
	if err != nil || len(got) != 2 {
		t.Errorf("ListPoolsBySpace(local) = %v, %v; want p1 and p2 only (not local2)", ids(got), err)
	}
	if p, err := FindPoolByPrefix(txn, "local2", pfx("10.0.0.0/24")); err != nil || p.ID != "p3" {
		t.Errorf("FindPoolByPrefix(local2) = %v, %v; want p3", p, err)
	}
}

func TestAddressesByPoolAndBulkDelete(t *testing.T) {
	txn := memTxn(t)
	for _, a := range []struct {
		pool, addr string
	}{{"p1", "10.0.0.1"}, {"p1", "10.0.0.2"}, {"p2", "10.0.0.1"}} {
		ip := addr(a.addr)
		if err := PutAddress(txn, &Address{Key: AddressKey(a.pool, ip), PoolID: a.pool, Addr: ip, Kind: AddressKindEndpoint}); err != nil {
			t.Fatal(err)
		}
	}
	if err := PutAddress(txn, &Address{Key: "wrong", PoolID: "p1", Addr: addr("10.0.0.3")}); err == nil {
		t.Error("address with a key that is not AddressKey(pool, addr) accepted")
	}
	if got, _ := ListAddressesByPool(txn, "p1"); len(got) != 2 {
		t.Errorf("ListAddressesByPool(p1) = %d addresses, want 2", len(got))
	}
	if n, err := DeleteAddressesByPool(txn, "p1"); err != nil || n != 2 {
		t.Errorf("DeleteAddressesByPool(p1) = %d, %v; want 2", n, err)
	}
	if got, _ := ListAddresses(txn); len(got) != 1 || got[0].PoolID != "p2" {
		t.Errorf("after deleting p1's addresses: %v, want only p2's", got)
	}
}

func TestCopyIsDeep(t *testing.T) {
	n := &Network{ID: "a", Index: 1, IPv4: &Subnet{Pool: pfx("10.0.0.0/24")}, Options: map[string]string{"k": "v"}}
	c := n.Copy()
	c.IPv4.Gateway = addr("10.0.0.1")
	c.Options["k"] = "changed"
	if n.IPv4.Gateway.IsValid() || n.Options["k"] != "v" {
		t.Errorf("changing a copy changed the original: %+v", n)
	}

	e := &Endpoint{ID: "e", Labels: map[string]string{"app": "web"}}
	ec := e.Copy()
	ec.Labels["app"] = "changed"
	if e.Labels["app"] != "web" {
		t.Errorf("changing an endpoint copy's labels changed the original: %v", e.Labels)
	}

	id := &Identity{ID: 256, Key: "app=web", Labels: map[string]string{"app": "web"}}
	idc := id.Copy()
	idc.Labels["app"] = "changed"
	if id.Labels["app"] != "web" {
		t.Errorf("changing an identity copy's labels changed the original: %v", id.Labels)
	}

	p := &Policy{Name: "p", Rule: []byte(`{}`)}
	pc := p.Copy()
	pc.Rule[0] = '['
	if string(p.Rule) != `{}` {
		t.Errorf("changing a policy copy's rule changed the original: %s", p.Rule)
	}
}

func TestPutIdentityRefusesKeyOfAnotherIdentity(t *testing.T) {
	txn := memTxn(t)
	for _, id := range []*Identity{{ID: 256, Key: "app=web"}, {ID: 257, Key: ""}} {
		if err := PutIdentity(txn, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := PutIdentity(txn, &Identity{ID: 258, Key: "app=web"}); !errors.Is(err, ErrConflict) {
		t.Errorf("second identity with key app=web: %v, want ErrConflict", err)
	}
	if err := PutIdentity(txn, &Identity{ID: 258, Key: ""}); !errors.Is(err, ErrConflict) {
		t.Errorf("second identity with the empty key: %v, want ErrConflict", err)
	}
	if err := PutIdentity(txn, &Identity{Key: "app=db"}); err == nil {
		t.Error("identity number 0 accepted")
	}
	// Replacing an identity may keep or change its own key.
	if err := PutIdentity(txn, &Identity{ID: 256, Key: "app=web", Labels: map[string]string{"app": "web"}}); err != nil {
		t.Errorf("replacing identity 256: %v", err)
	}
	if err := PutIdentity(txn, &Identity{ID: 256, Key: "app=api"}); err != nil {
		t.Errorf("rekeying identity 256: %v", err)
	}
	if _, err := GetIdentityByKey(txn, "app=web"); !errors.Is(err, ErrNotFound) {
		t.Errorf("old key still found after rekeying: %v", err)
	}
	if err := DeleteIdentity(txn, 257); err != nil {
		t.Fatal(err)
	}
	if _, err := GetIdentityByKey(txn, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("empty key still found after deleting its identity: %v", err)
	}
}

func TestFreeIdentityNumberIsLowestFreeInRange(t *testing.T) {
	tests := []struct {
		name     string
		taken    []uint32
		from, to uint32
		want     uint32
		ok       bool
	}{
		{"empty", nil, 256, 300, 256, true},
		{"dense start", []uint32{256, 257}, 256, 300, 258, true},
		{"gap", []uint32{256, 258}, 256, 300, 257, true},
		{"below range ignored", []uint32{10, 255}, 256, 300, 256, true},
		{"from inside a run", []uint32{256, 257, 258, 260}, 257, 300, 259, true},
		{"last one free", []uint32{256, 257}, 256, 258, 258, true},
		{"full", []uint32{256, 257, 258}, 256, 258, 0, false},
		{"full, more above", []uint32{256, 257, 258, 259}, 256, 258, 0, false},
		{"single free", nil, 300, 300, 300, true},
		{"single taken", []uint32{300}, 300, 300, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			txn := memTxn(t)
			for _, n := range tt.taken {
				if err := PutIdentity(txn, &Identity{ID: n, Key: fmt.Sprint("n=", n)}); err != nil {
					t.Fatal(err)
				}
			}
			got, ok, err := FreeIdentityNumber(txn, tt.from, tt.to)
			if err != nil || got != tt.want || ok != tt.ok {
				t.Errorf("FreeIdentityNumber(%d, %d) = %d, %v, %v; want %d, %v", tt.from, tt.to, got, ok, err, tt.want, tt.ok)
			}
		})
	}
	if _, _, err := FreeIdentityNumber(memTxn(t), 0, 10); err == nil {
		t.Error("range starting at the reserved number 0 accepted")
	}
	if _, _, err := FreeIdentityNumber(memTxn(t), 10, 9); err == nil {
		t.Error("empty range accepted")
	}
}

func TestEndpointsByIdentityAndContainerFollowReplacement(t *testing.T) {
	txn := memTxn(t)
	put := func(e *Endpoint) {
		t.Helper()
		if err := PutEndpoint(txn, e); err != nil {
			t.Fatal(err)
		}
	}
	put(&Endpoint{ID: "e1", NetworkID: "n", Identity: 5})
	put(&Endpoint{ID: "e2", NetworkID: "n", Identity: 5})
	ids := endpointIDs(t)
	if got := ids(ListEndpointsByIdentity(txn, 5)); !reflect.DeepEqual(got, []string{"e1", "e2"}) {
		t.Errorf("init endpoints = %v, want [e1 e2]", got)
	}
	if got := ids(ListEndpointsByContainer(txn, "")); len(got) != 0 {
		t.Errorf("endpoints of container \"\" = %v, want none", got)
	}
	// Labels arrive for e1: it moves to identity 256 and container c1.
	e1, _ := GetEndpoint(txn, "e1")
	next := e1.Copy()
	next.ContainerID, next.Identity = "c1", 256
	put(next)
	if got := ids(ListEndpointsByIdentity(txn, 5)); !reflect.DeepEqual(got, []string{"e2"}) {
		t.Errorf("init endpoints after e1 got labels = %v, want [e2]", got)
	}
	if got := ids(ListEndpointsByIdentity(txn, 256)); !reflect.DeepEqual(got, []string{"e1"}) {
		t.Errorf("endpoints of identity 256 = %v, want [e1]", got)
	}
	if got := ids(ListEndpointsByContainer(txn, "c1")); !reflect.DeepEqual(got, []string{"e1"}) {
		t.Errorf("endpoints of container c1 = %v, want [e1]", got)
	}
	for id, want := range map[uint32]bool{5: true, 256: true, 257: false} {
		if got, err := IdentityInUse(txn, id); err != nil || got != want {
			t.Errorf("IdentityInUse(%d) = %v, %v; want %v", id, got, err, want)
		}
	}
	if err := DeleteEndpoint(txn, "e1"); err != nil {
		t.Fatal(err)
	}
	if got, _ := IdentityInUse(txn, 256); got {
		t.Error("identity 256 still in use after its only endpoint was deleted")
	}
}

// TestPutPolicyRequiresNameAndJSON: a name always; JSON is checked for
// rules read from disk (package policy writes the others).
func TestPutPolicyRequiresNameAndJSON(t *testing.T) {
	txn := memTxn(t)
	if err := PutPolicy(txn, &Policy{Name: "p", Rule: []byte(`{"endpointSelector":{}}`)}); err != nil {
		t.Fatal(err)
	}
	if err := PutPolicy(txn, &Policy{Rule: []byte(`{}`)}); err == nil {
		t.Error("policy without a name accepted")
	}
	for _, rule := range []string{"", "{", "not json"} {
		if err := putPolicyFromDisk(txn, &Policy{Name: "q", Rule: []byte(rule)}); err == nil {
			t.Errorf("policy rule %q accepted", rule)
		}
	}
	if err := PutPolicy(txn, &Policy{Name: "p", Rule: []byte(`{"endpointSelector":{"matchLabels":{"a":"b"}}}`), Revision: 2}); err != nil {
		t.Errorf("replacing policy p: %v", err)
	}
	if got, _ := ListPolicies(txn); len(got) != 1 || got[0].Revision != 2 {
		t.Errorf("policies = %v, want the replaced p only", got)
	}
	if err := DeletePolicy(txn, "p"); err != nil {
		t.Errorf("DeletePolicy(p) = %v", err)
	}
}
