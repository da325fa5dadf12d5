package state

import (
	"errors"
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
}
