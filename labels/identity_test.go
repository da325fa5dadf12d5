package labels

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"

	memdb "github.com/hashicorp/go-memdb"

	"github.com/membrane-net/membrane/state"
)

var created = time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)

func openStore(t *testing.T, dir string) *state.Store {
	t.Helper()
	s, r, err := state.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if len(r.Skipped) != 0 {
		t.Fatalf("checkpoints skipped: %v", r.Skipped)
	}
	return s
}

func newTestAllocator(t *testing.T) (*Allocator, *state.Store) {
	t.Helper()
	s := openStore(t, t.TempDir())
	return NewAllocator(s, func() time.Time { return created }), s
}

func mustAllocate(t *testing.T, a *Allocator, l Labels) Identity {
	t.Helper()
	id, err := a.Allocate(l)
	if err != nil {
		t.Fatalf("Allocate(%v): %v", l, err)
	}
	return id
}

// putEndpoint gives an endpoint identity id, as the daemon does once the
// endpoint's labels are known.
func putEndpoint(t *testing.T, s *state.Store, epID string, id Identity) {
	t.Helper()
	err := s.Write(func(txn *memdb.Txn) error {
		return state.PutEndpoint(txn, &state.Endpoint{ID: epID, NetworkID: "n", Identity: uint32(id)})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAllocateKeepsIdentitiesAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	a := NewAllocator(s, func() time.Time { return created })
	web := mustAllocate(t, a, Labels{"app": "web", "tier": "front"})
	db := mustAllocate(t, a, Labels{"app": "db"})
	if web != MinUserIdentity || db != MinUserIdentity+1 {
		t.Fatalf("first identities = %d, %d; want %d, %d", web, db, MinUserIdentity, MinUserIdentity+1)
	}
	if again := mustAllocate(t, a, Labels{"tier": "front", "app": "web"}); again != web {
		t.Errorf("same labels again = %d, want %d", again, web)
	}

	s2 := openStore(t, dir)
	a2 := NewAllocator(s2, time.Now)
	if got := mustAllocate(t, a2, Labels{"app": "web", "tier": "front"}); got != web {
		t.Errorf("after reopen, web = %d, want %d", got, web)
	}
	if got := mustAllocate(t, a2, Labels{"app": "db"}); got != db {
		t.Errorf("after reopen, db = %d, want %d", got, db)
	}
	// The cursor was persisted too: a new set gets the next number.
	if got := mustAllocate(t, a2, Labels{"app": "api"}); got != db+1 {
		t.Errorf("after reopen, a new label set = %d, want %d", got, db+1)
	}
	id, err := state.GetIdentity(s2.Read(), uint32(web))
	if err != nil {
		t.Fatal(err)
	}
	want := &state.Identity{ID: uint32(web), Key: "app=web,tier=front", Labels: map[string]string{"app": "web", "tier": "front"}, Created: created}
	if !reflect.DeepEqual(id, want) {
		t.Errorf("stored identity = %+v, want %+v", id, want)
	}
}

func TestAllocateGivesDifferentLabelsDifferentIdentities(t *testing.T) {
	a, _ := newTestAllocator(t)
	sets := []Labels{
		{"app": "web"},
		{"app": "web", "tier": "front"},
		{"app": "Web"},
		{"App": "web"},
		{"app": ""},
		{"": "web"},
		{}, // a container without identity labels
	}
	seen := map[Identity]Labels{}
	for _, l := range sets {
		id := mustAllocate(t, a, l)
		if !a.user.has(id) {
			t.Errorf("labels %v got %d, outside %d..%d", l, id, a.user.min, a.user.max)
		}
		if other, dup := seen[id]; dup {
			t.Errorf("labels %v and %v share identity %d", l, other, id)
		}
		seen[id] = l
	}
	// nil and the empty set are the same set.
	if got, want := mustAllocate(t, a, nil), mustAllocate(t, a, Labels{}); got != want {
		t.Errorf("nil labels = %d, empty labels = %d; want one identity", got, want)
	}
	for _, reserved := range []Identity{IdentityUnknown, IdentityHost, IdentityWorld, IdentityInit} {
		if _, ok := seen[reserved]; ok {
			t.Errorf("reserved identity %d handed out", reserved)
		}
	}
}

func TestAllocateCIDRIdentities(t *testing.T) {
	a, s := newTestAllocator(t)
	var ids []Identity
	for _, p := range []string{"10.0.0.0/8", "10.1.2.3/8", "fd00::/8", "192.0.2.1/32"} {
		// Endpoint identities allocated in between stay in their own range
		// and do not move the CIDR range's cursor.
		if id := mustAllocate(t, a, Labels{"near": p}); !a.user.has(id) {
			t.Fatalf("endpoint identity %d outside its range", id)
		}
		err := s.Write(func(txn *memdb.Txn) error {
			id, err := a.AllocateCIDRTxn(txn, netip.MustParsePrefix(p))
			ids = append(ids, id)
			return err
		})
		if err != nil {
			t.Fatalf("AllocateCIDRTxn(%s): %v", p, err)
		}
	}
	want := []Identity{MinCIDRIdentity, MinCIDRIdentity, MinCIDRIdentity + 1, MinCIDRIdentity + 2}
	if !reflect.DeepEqual(ids, want) {
		t.Errorf("CIDR identities = %v, want %v (10.1.2.3/8 is 10.0.0.0/8)", ids, want)
	}
	id, err := state.GetIdentity(s.Read(), uint32(MinCIDRIdentity))
	if err != nil {
		t.Fatal(err)
	}
	if wantL := map[string]string{"cidr:10.0.0.0/8": ""}; !reflect.DeepEqual(id.Labels, wantL) || id.Key != "cidr:10.0.0.0/8=" {
		t.Errorf("CIDR identity = %+v, want labels %v", id, wantL)
	}
	if p, ok := CIDROf(id.Labels); !ok || p != netip.MustParsePrefix("10.0.0.0/8") {
		t.Errorf("CIDROf(%v) = %v, %v", id.Labels, p, ok)
	}

	err = s.Write(func(txn *memdb.Txn) error {
		_, err := a.AllocateCIDRTxn(txn, netip.Prefix{})
		return err
	})
	if err == nil {
		t.Error("invalid prefix accepted")
	}
	// A container cannot claim a CIDR's identity through its labels.
	if id, err := a.Allocate(Labels{"cidr:10.0.0.0/8": ""}); !errors.Is(err, ErrReservedLabel) {
		t.Errorf("labels with a cidr: key = %d, %v; want ErrReservedLabel", id, err)
	}
}

func TestAllocateSeparatesLabelSetsWithSeparatorsInValues(t *testing.T) {
	a, _ := newTestAllocator(t)
	first := mustAllocate(t, a, Labels{"a": "1,b=2"})
	second := mustAllocate(t, a, Labels{"a": "1", "b": "2"})
	if first == second {
		t.Errorf("label sets {a: \"1,b=2\"} and {a: 1, b: 2} share identity %d", first)
	}
}

func TestCollectDeletesUnusedIdentities(t *testing.T) {
	a, s := newTestAllocator(t)
	web := mustAllocate(t, a, Labels{"app": "web"})
	db := mustAllocate(t, a, Labels{"app": "db"})
	bare := mustAllocate(t, a, Labels{})
	putEndpoint(t, s, "ep-web", web)
	putEndpoint(t, s, "ep-bare", bare)
	var net10, net192, net6 Identity
	err := s.Write(func(txn *memdb.Txn) error {
		var err error
		for p, id := range map[string]*Identity{"10.0.0.0/8": &net10, "192.168.0.0/16": &net192, "fd00::/8": &net6} {
			if *id, err = a.AllocateCIDRTxn(txn, netip.MustParsePrefix(p)); err != nil {
				return err
			}
		}
		// Not the allocator's: below its ranges.
		return state.PutIdentity(txn, &state.Identity{ID: 100, Key: "stray="})
	})
	if err != nil {
		t.Fatal(err)
	}

	keep := map[netip.Prefix]bool{
		netip.MustParsePrefix("10.9.9.9/8"): true, // compared masked
		netip.MustParsePrefix("fd00::/8"):   false,
	}
	deleted, err := a.Collect(keep)
	if err != nil {
		t.Fatal(err)
	}
	wantDeleted := []Identity{db, min(net192, net6), max(net192, net6)}
	if !reflect.DeepEqual(deleted, wantDeleted) {
		t.Errorf("Collect deleted %v, want %v", deleted, wantDeleted)
	}
	ids, err := state.ListIdentities(s.Read())
	if err != nil {
		t.Fatal(err)
	}
	var left []uint32
	for _, id := range ids {
		left = append(left, id.ID)
	}
	if want := []uint32{100, uint32(web), uint32(bare), uint32(net10)}; !reflect.DeepEqual(left, want) {
		t.Errorf("identities left = %v, want %v", left, want)
	}
	if again, err := a.Collect(keep); err != nil || len(again) != 0 {
		t.Errorf("second Collect = %v, %v; want nothing", again, err)
	}

	// db's number is not handed straight back.
	if got := mustAllocate(t, a, Labels{"app": "db"}); got == db {
		t.Errorf("labels of a collected identity got its number %d back at once", got)
	}
}

func TestAllocateWrapsAroundAndReportsExhaustion(t *testing.T) {
	a, s := newTestAllocator(t)
	a.user = idRange{min: 256, max: 259, cursor: metaUserCursor}
	names := []string{"a", "b", "c", "d"}
	for i, n := range names {
		id := mustAllocate(t, a, Labels{"app": n})
		putEndpoint(t, s, n, id)
		if want := Identity(256 + i); id != want {
			t.Fatalf("app=%s = %d, want %d", n, id, want)
		}
	}
	id, err := a.Allocate(Labels{"app": "e"})
	if !errors.Is(err, ErrIdentitiesExhausted) {
		t.Fatalf("fifth label set in a range of four = %d, %v; want ErrIdentitiesExhausted", id, err)
	}
	// Existing sets are still found when the range is full.
	if got := mustAllocate(t, a, Labels{"app": "c"}); got != 258 {
		t.Errorf("app=c in a full range = %d, want 258", got)
	}

	// Free b (257): the search wraps from the top and finds it.
	deleteEndpoint(t, s, "b")
	if _, err := a.Collect(nil); err != nil {
		t.Fatal(err)
	}
	e := mustAllocate(t, a, Labels{"app": "e"})
	putEndpoint(t, s, "e", e)
	if e != 257 {
		t.Errorf("after freeing 257, app=e = %d, want 257", e)
	}

	// Free a (256) and d (259): the cursor sits at 257, so 259 comes
	// before 256, though 256 is lower.
	deleteEndpoint(t, s, "a")
	deleteEndpoint(t, s, "d")
	if got, err := a.Collect(nil); err != nil || !reflect.DeepEqual(got, []Identity{256, 259}) {
		t.Fatalf("Collect = %v, %v; want [256 259]", got, err)
	}
	if got := mustAllocate(t, a, Labels{"app": "f"}); got != 259 {
		t.Errorf("app=f = %d, want 259 (lowest above the cursor)", got)
	}
	if got := mustAllocate(t, a, Labels{"app": "g"}); got != 256 {
		t.Errorf("app=g = %d, want 256 (wrapped)", got)
	}
}

func TestAllocateRefusesCorruptCursor(t *testing.T) {
	a, s := newTestAllocator(t)
	err := s.Write(func(txn *memdb.Txn) error { return state.PutMeta(txn, metaUserCursor, "lots") })
	if err != nil {
		t.Fatal(err)
	}
	if id, err := a.Allocate(Labels{"app": "web"}); err == nil {
		t.Errorf("allocation with a corrupt cursor = %d, want an error", id)
	}
}

func deleteEndpoint(t *testing.T, s *state.Store, id string) {
	t.Helper()
	if err := s.Write(func(txn *memdb.Txn) error { return state.DeleteEndpoint(txn, id) }); err != nil {
		t.Fatal(err)
	}
}
