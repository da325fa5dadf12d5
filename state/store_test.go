package state

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

// tables is everything a store holds, for comparisons.
type tables struct {
	Networks   []*Network
	Endpoints  []*Endpoint
	Pools      []*Pool
	Addresses  []*Address
	Meta       []*Meta
	Identities []*Identity
	Policies   []*Policy
}

func dump(t *testing.T, s *Store) tables {
	t.Helper()
	txn := s.Read()
	var d tables
	var err error
	if d.Networks, err = ListNetworks(txn); err != nil {
		t.Fatal(err)
	}
	if d.Endpoints, err = ListEndpoints(txn); err != nil {
		t.Fatal(err)
	}
	if d.Pools, err = ListPools(txn); err != nil {
		t.Fatal(err)
	}
	if d.Addresses, err = ListAddresses(txn); err != nil {
		t.Fatal(err)
	}
	if d.Meta, err = ListMeta(txn); err != nil {
		t.Fatal(err)
	}
	if d.Identities, err = ListIdentities(txn); err != nil {
		t.Fatal(err)
	}
	if d.Policies, err = ListPolicies(txn); err != nil {
		t.Fatal(err)
	}
	return d
}

// mustOpen opens a store that checkpoints every write, as the checkpoint
// tests of this file expect; journal_test.go tests the journal, with
// mustOpenJournaled.
func mustOpen(t *testing.T, dir string) (*Store, Restored) {
	t.Helper()
	s, r := mustOpenJournaled(t, dir)
	s.checkpointEveryWrite = true
	return s, r
}

func mustOpenJournaled(t *testing.T, dir string) (*Store, Restored) {
	t.Helper()
	s, r, err := Open(dir)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	// Wait for the store's background files (the next journal) before
	// the test's directory is removed.
	t.Cleanup(func() { s.Close() })
	return s, r
}

func mustWrite(t *testing.T, s *Store, fn func(txn *memdb.Txn) error) {
	t.Helper()
	if err := s.Write(fn); err != nil {
		t.Fatalf("Write: %v", err)
	}
	s.waitPruned()
}

func checkpointFiles(t *testing.T, dir string) []string {
	t.Helper()
	seqs, err := listCheckpoints(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range seqs {
		names = append(names, checkpointName(s))
	}
	return names
}

var (
	created = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)
	pfx     = netip.MustParsePrefix
	addr    = netip.MustParseAddr
)

// fill writes one of everything, with every field set somewhere.
func fill(t *testing.T, s *Store) {
	t.Helper()
	mustWrite(t, s, func(txn *memdb.Txn) error {
		for _, n := range []*Network{
			{
				ID: "net-a", Index: 1,
				IPv4:    &Subnet{Pool: pfx("10.210.0.0/24"), Gateway: addr("10.210.0.1")},
				IPv6:    &Subnet{Pool: pfx("fd12:3456:789a::/64"), Gateway: addr("fd12:3456:789a::1")},
				MTU:     1450,
				Options: map[string]string{"com.docker.network.enable_ipv6": "true"},
				Created: created,
			},
			{ID: "net-b", Index: 2, IPv6: &Subnet{Pool: pfx("fd12:3456:789a:1::/64")}, Created: created},
		} {
			if err := PutNetwork(txn, n); err != nil {
				return err
			}
		}
		for _, e := range []*Endpoint{
			{ID: "ep-1", NetworkID: "net-a", HostIfName: "mbr1a2b", PeerIfName: "mbrp1a2b", MAC: "02:42:0a:d2:00:02",
				IPv4: pfx("10.210.0.2/24"), IPv6: pfx("fd12:3456:789a::2/64"), SandboxKey: "/var/run/docker/netns/abc", Created: created,
				ContainerID: "c0ffee", Labels: map[string]string{"app": "web", "tier": "front"}, Identity: 256, IdentitySince: created.Add(time.Second)},
			{ID: "ep-2", NetworkID: "net-b", IPv6: pfx("fd12:3456:789a:1::2/64"), Created: created, Identity: 5},
			{ID: "ep-3", NetworkID: "net-b", IPv6: pfx("fd12:3456:789a:1::3/64"), Created: created,
				ContainerID: "c0ffee", Labels: map[string]string{"app": "web", "tier": "front"}, Identity: 256, IdentitySince: created},
			{ID: "ep-4", NetworkID: "net-b", IPv6: pfx("fd12:3456:789a:1::4/64"), Created: created,
				ContainerID: "bare", Labels: map[string]string{}, Identity: 257, IdentitySince: created},
		} {
			if err := PutEndpoint(txn, e); err != nil {
				return err
			}
		}
		for _, p := range []*Pool{
			{ID: "pool-4", AddressSpace: "membrane-local", Prefix: pfx("10.210.0.0/24"), Range: pfx("10.210.0.128/25"),
				RequestKey: `{"space":"membrane-local"}`, Next: addr("10.210.0.130"), Created: created},
			{ID: "pool-6", AddressSpace: "membrane-local", Prefix: pfx("fd12:3456:789a::/64"), Range: pfx("fd12:3456:789a::/64"),
				V6: true, Next: addr("fd12:3456:789a::3"), Created: created},
		} {
			if err := PutPool(txn, p); err != nil {
				return err
			}
		}
		for _, a := range []*Address{
			{Key: AddressKey("pool-4", addr("10.210.0.1")), PoolID: "pool-4", Addr: addr("10.210.0.1"), Kind: AddressKindGateway},
			{Key: AddressKey("pool-4", addr("10.210.0.2")), PoolID: "pool-4", Addr: addr("10.210.0.2"), Kind: AddressKindEndpoint},
			{Key: AddressKey("pool-6", addr("fd12:3456:789a::9")), PoolID: "pool-6", Addr: addr("fd12:3456:789a::9"), Kind: AddressKindAux},
		} {
			if err := PutAddress(txn, a); err != nil {
				return err
			}
		}
		for _, id := range []*Identity{
			{ID: 256, Key: "app=web,tier=front", Labels: map[string]string{"app": "web", "tier": "front"}, Created: created},
			{ID: 257, Key: "", Labels: map[string]string{}, Created: created}, // a container without labels
			{ID: 1 << 24, Key: "cidr:10.0.0.0/8=", Labels: map[string]string{"cidr:10.0.0.0/8": ""}, Created: created},
		} {
			if err := PutIdentity(txn, id); err != nil {
				return err
			}
		}
		for _, p := range []*Policy{
			{Name: "web-ingress", Rule: []byte(`{"endpointSelector":{"matchLabels":{"app":"web"}}}`), Revision: 3, Imported: created},
			{Name: "sha256:0123456789abcdef", Rule: []byte(`{"endpointSelector":{}}`), Revision: 2, Imported: created},
		} {
			if err := PutPolicy(txn, p); err != nil {
				return err
			}
		}
		return PutMeta(txn, "ipam.ula-prefix", "fd12:3456:789a::/48")
	})
}

func TestOpenCreatesMissingDirectoryPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "state")
	s, r := mustOpen(t, dir)
	if r.Path != "" || len(r.Skipped) != 0 {
		t.Errorf("Restored = %+v, want nothing loaded and nothing skipped", r)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("state directory mode = %v, want 0700", perm)
	}
	if d := dump(t, s); !reflect.DeepEqual(d, tables{}) {
		t.Errorf("new store is not empty: %+v", d)
	}
}

func TestCheckpointRoundTripRestoresEveryTable(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpen(t, dir)
	fill(t, s)
	want := dump(t, s)
	if len(want.Networks) != 2 || len(want.Endpoints) != 4 || len(want.Pools) != 2 || len(want.Addresses) != 3 || len(want.Meta) != 1 ||
		len(want.Identities) != 3 || len(want.Policies) != 2 {
		t.Fatalf("fill wrote %+v", want)
	}

	s2, r := mustOpen(t, dir)
	if wantPath := filepath.Join(dir, checkpointName(1)); r.Path != wantPath {
		t.Errorf("Restored.Path = %q, want %q", r.Path, wantPath)
	}
	if len(r.Skipped) != 0 {
		t.Errorf("Restored.Skipped = %v, want none", r.Skipped)
	}
	if got := dump(t, s2); !reflect.DeepEqual(got, want) {
		t.Errorf("after reopen:\n got %+v\nwant %+v", got, want)
	}
	// Indexes are rebuilt, not only the primary key.
	txn := s2.Read()
	eps, err := ListEndpointsByNetwork(txn, "net-a")
	if err != nil || len(eps) != 1 || eps[0].ID != "ep-1" {
		t.Errorf("ListEndpointsByNetwork(net-a) = %v, %v; want [ep-1]", eps, err)
	}
	p, err := FindPoolByPrefix(txn, "membrane-local", pfx("10.210.0.0/24"))
	if err != nil || p.ID != "pool-4" {
		t.Errorf("FindPoolByPrefix = %v, %v; want pool-4", p, err)
	}
	if got := endpointIDs(t)(ListEndpointsByIdentity(txn, 256)); !reflect.DeepEqual(got, []string{"ep-1", "ep-3"}) {
		t.Errorf("ListEndpointsByIdentity(256) = %v, want [ep-1 ep-3]", got)
	}
	if got := endpointIDs(t)(ListEndpointsByContainer(txn, "c0ffee")); !reflect.DeepEqual(got, []string{"ep-1", "ep-3"}) {
		t.Errorf("ListEndpointsByContainer(c0ffee) = %v, want [ep-1 ep-3]", got)
	}
	for key, wantID := range map[string]uint32{"app=web,tier=front": 256, "": 257, "cidr:10.0.0.0/8=": 1 << 24} {
		if id, err := GetIdentityByKey(txn, key); err != nil || id.ID != wantID {
			t.Errorf("GetIdentityByKey(%q) = %v, %v; want identity %d", key, id, err, wantID)
		}
	}
	if pol, err := GetPolicy(txn, "web-ingress"); err != nil || pol.Revision != 3 {
		t.Errorf("GetPolicy(web-ingress) = %v, %v; want revision 3", pol, err)
	}
}

// endpointIDs adapts a List helper's results to their IDs.
func endpointIDs(t *testing.T) func([]*Endpoint, error) []string {
	return func(eps []*Endpoint, err error) []string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		ids := []string{}
		for _, e := range eps {
			ids = append(ids, e.ID)
		}
		return ids
	}
}

// TestOpenLoadsCheckpointFromBeforeIdentities loads a payload as written
// before the identities and policies tables and the endpoint identity
// fields existed: it loads whole, with those tables empty.
func TestOpenLoadsCheckpointFromBeforeIdentities(t *testing.T) {
	const old = `{"networks":[{"ID":"net-a","Index":1,"IPv4":{"Pool":"10.210.0.0/24","Gateway":"10.210.0.1"},"IPv6":null,"MTU":0,"Options":null,"Created":"2025-03-14T15:09:26.535897932Z"}],` +
		`"endpoints":[{"ID":"ep-1","NetworkID":"net-a","HostIfName":"mbr1","PeerIfName":"mbrp1","MAC":"02:42:0a:d2:00:02","IPv4":"10.210.0.2/24","IPv6":"","SandboxKey":"","Created":"2025-03-14T15:09:26.535897932Z"}],` +
		`"pools":[],"addresses":[],"meta":[{"Key":"ipam.ula-prefix","Value":"fd12:3456:789a::/48"}]}` + "\n"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, checkpointName(7)), frame([]byte(old)), 0o600); err != nil {
		t.Fatal(err)
	}
	s, r := mustOpen(t, dir)
	if len(r.Skipped) != 0 || r.Path == "" {
		t.Fatalf("Restored = %+v, want the old checkpoint loaded", r)
	}
	got := dump(t, s)
	if len(got.Networks) != 1 || len(got.Endpoints) != 1 || len(got.Meta) != 1 || len(got.Identities) != 0 || len(got.Policies) != 0 {
		t.Fatalf("loaded %+v, want one network, one endpoint, one setting, no identities or policies", got)
	}
	if ep := got.Endpoints[0]; ep.ContainerID != "" || ep.Labels != nil || ep.Identity != 0 {
		t.Errorf("old endpoint = %+v, want no container, labels or identity", ep)
	}
	// The next write carries the new tables.
	mustWrite(t, s, func(txn *memdb.Txn) error {
		return PutIdentity(txn, &Identity{ID: 256, Key: "app=web", Labels: map[string]string{"app": "web"}})
	})
	s2, _ := mustOpen(t, dir)
	if got := dump(t, s2); len(got.Identities) != 1 || len(got.Networks) != 1 {
		t.Errorf("after a write and reopen: %+v, want the network and the new identity", got)
	}
}

// twoCheckpoints leaves checkpoint 1 holding network "old" and checkpoint 2
// holding "old" and "new", and returns the contents of checkpoint 1 and the
// path of checkpoint 2.
func twoCheckpoints(t *testing.T, dir string) (tables, string) {
	t.Helper()
	s, _ := mustOpen(t, dir)
	mustWrite(t, s, func(txn *memdb.Txn) error {
		return PutNetwork(txn, &Network{ID: "old", Index: 1, Created: created})
	})
	first := dump(t, s)
	mustWrite(t, s, func(txn *memdb.Txn) error {
		return PutNetwork(txn, &Network{ID: "new", Index: 2, Options: map[string]string{"k": "v"}, Created: created})
	})
	return first, filepath.Join(dir, checkpointName(2))
}

// assertFallback opens dir and checks that the newest checkpoint was
// reported corrupt and the previous one loaded whole.
func assertFallback(t *testing.T, dir string, want tables, badPath string) {
	t.Helper()
	s, r, err := Open(dir)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if wantPath := filepath.Join(dir, checkpointName(1)); r.Path != wantPath {
		t.Errorf("Restored.Path = %q, want fallback to %q", r.Path, wantPath)
	}
	if len(r.Skipped) != 1 {
		t.Fatalf("Restored.Skipped = %v, want exactly the corrupt checkpoint", r.Skipped)
	}
	var ce *CheckpointError
	if !errors.As(r.Skipped[0], &ce) || ce.Path != badPath || !errors.Is(r.Skipped[0], ErrCorruptCheckpoint) {
		t.Errorf("Skipped[0] = %v, want a *CheckpointError for %s wrapping ErrCorruptCheckpoint", r.Skipped[0], badPath)
	}
	if got := dump(t, s); !reflect.DeepEqual(got, want) {
		t.Errorf("loaded state:\n got %+v\nwant %+v (the previous checkpoint, whole)", got, want)
	}
}

func TestOpenSkipsTruncatedCheckpoint(t *testing.T) {
	dir := t.TempDir()
	first, newest := twoCheckpoints(t, dir)
	full, err := os.ReadFile(newest)
	if err != nil {
		t.Fatal(err)
	}
	h := checkpointHeaderSize
	lengths := map[string]int{
		"empty":                 0,
		"one byte":              1,
		"inside magic":          len(checkpointMagic) - 1,
		"magic only":            len(checkpointMagic),
		"inside version":        len(checkpointMagic) + 2,
		"inside length":         len(checkpointMagic) + 4 + 3,
		"inside checksum":       h - 1,
		"header only":           h,
		"one payload byte":      h + 1,
		"half the payload":      h + (len(full)-h)/2,
		"all but the last byte": len(full) - 1,
	}
	for name, n := range lengths {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(newest, full[:n], 0o600); err != nil {
				t.Fatal(err)
			}
			assertFallback(t, dir, first, newest)
		})
	}
	t.Run("trailing garbage", func(t *testing.T) {
		if err := os.WriteFile(newest, append(append([]byte(nil), full...), '\n'), 0o600); err != nil {
			t.Fatal(err)
		}
		assertFallback(t, dir, first, newest)
	})
}

func TestOpenSkipsCheckpointWithFlippedBit(t *testing.T) {
	dir := t.TempDir()
	first, newest := twoCheckpoints(t, dir)
	full, err := os.ReadFile(newest)
	if err != nil {
		t.Fatal(err)
	}
	offsets := map[string]int{
		"magic":    0,
		"version":  len(checkpointMagic) + 3,
		"length":   len(checkpointMagic) + 4 + 7,
		"checksum": checkpointHeaderSize - 1,
		"payload":  checkpointHeaderSize + 10,
		"last":     len(full) - 1,
	}
	for name, off := range offsets {
		t.Run(name, func(t *testing.T) {
			b := append([]byte(nil), full...)
			b[off] ^= 0x10
			if err := os.WriteFile(newest, b, 0o600); err != nil {
				t.Fatal(err)
			}
			assertFallback(t, dir, first, newest)
		})
	}
}

// TestDecodeCheckpointRejectsEverySingleBitFlip flips each bit of a valid
// checkpoint in turn: every one must be an error and never a database.
func TestDecodeCheckpointRejectsEverySingleBitFlip(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpen(t, dir)
	fill(t, s)
	full, err := os.ReadFile(filepath.Join(dir, checkpointName(1)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeCheckpoint(full); err != nil {
		t.Fatalf("valid checkpoint: %v", err)
	}
	b := append([]byte(nil), full...)
	for i := range b {
		for bit := 0; bit < 8; bit++ {
			b[i] ^= 1 << bit
			db, err := decodeCheckpoint(b)
			if err == nil || db != nil || !errors.Is(err, ErrCorruptCheckpoint) {
				t.Fatalf("bit %d of byte %d flipped: got db=%v err=%v, want ErrCorruptCheckpoint and no database", bit, i, db != nil, err)
			}
			b[i] ^= 1 << bit
		}
	}
}

func TestDecodeCheckpointRejectsValidChecksumOverBadContent(t *testing.T) {
	// A writer bug (not disk corruption) is still refused whole.
	cases := map[string]string{
		"not JSON":            `{"networks": [`,
		"null object":         `{"networks": [null]}`,
		"duplicate index":     `{"networks": [{"ID":"a","Index":1},{"ID":"b","Index":1}]}`,
		"pool without ID":     `{"pools": [{"AddressSpace":"s","Prefix":"10.0.0.0/24"}]}`,
		"address bad key":     `{"addresses": [{"Key":"x","PoolID":"p","Addr":"10.0.0.1"}]}`,
		"endpoint no net":     `{"endpoints": [{"ID":"e"}]}`,
		"bad prefix":          `{"pools": [{"ID":"p","AddressSpace":"s","Prefix":"10.0.0.0/99"}]}`,
		"network index 0":     `{"networks": [{"ID":"a"}]}`,
		"network without ID":  `{"meta": [{"Key":"k","Value":"v"}], "networks": [{"ID":"","Index":3}]}`,
		"null identity":       `{"identities": [null]}`,
		"identity number 0":   `{"identities": [{"ID":0,"Key":"a=b"}]}`,
		"identity twice":      `{"identities": [{"ID":256,"Key":"a=b"},{"ID":256,"Key":"a=c"}]}`,
		"shared key":          `{"identities": [{"ID":256,"Key":"a=b"},{"ID":257,"Key":"a=b"}]}`,
		"two empty keys":      `{"identities": [{"ID":256,"Key":""},{"ID":257}]}`,
		"null policy":         `{"policies": [null]}`,
		"policy without name": `{"policies": [{"Rule":"e30="}]}`,
		"policy not JSON":     `{"policies": [{"Name":"p","Rule":"ew=="}]}`,
		"policy twice":        `{"policies": [{"Name":"p","Rule":"e30="},{"Name":"p","Rule":"W10="}]}`,
	}
	for name, payload := range cases {
		t.Run(name, func(t *testing.T) {
			b := frame([]byte(payload))
			db, err := decodeCheckpoint(b)
			if err == nil || db != nil || !errors.Is(err, ErrCorruptCheckpoint) {
				t.Errorf("got db=%v err=%v, want ErrCorruptCheckpoint and no database", db != nil, err)
			}
		})
	}
}

// frame wraps a payload in a correct header.
func frame(payload []byte) []byte {
	db, _ := newDB()
	b, _ := checkpointImage(db.Txn(false)) // a valid header for an empty state
	b = append(b[:checkpointHeaderSize:checkpointHeaderSize], payload...)
	return reframe(b)
}

func TestOpenStartsEmptyWhenEveryCheckpointIsCorrupt(t *testing.T) {
	dir := t.TempDir()
	_, newest := twoCheckpoints(t, dir)
	older := filepath.Join(dir, checkpointName(1))
	for _, p := range []string{older, newest} {
		if err := os.WriteFile(p, []byte("MEMBRANE garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, r := mustOpen(t, dir)
	if r.Path != "" {
		t.Errorf("Restored.Path = %q, want none", r.Path)
	}
	if len(r.Skipped) != 2 {
		t.Fatalf("Restored.Skipped = %v, want both checkpoints", r.Skipped)
	}
	for i, want := range []string{newest, older} {
		if !strings.Contains(r.Skipped[i].Error(), want) {
			t.Errorf("Skipped[%d] = %v, want it to name %s (newest first)", i, r.Skipped[i], want)
		}
	}
	if d := dump(t, s); !reflect.DeepEqual(d, tables{}) {
		t.Errorf("state = %+v, want empty", d)
	}
	// The next checkpoint gets a new number: corrupt files are never
	// overwritten in place, and the new one is what the next Open loads.
	mustWrite(t, s, func(txn *memdb.Txn) error { return PutMeta(txn, "k", "v") })
	_, r = mustOpen(t, dir)
	if want := filepath.Join(dir, checkpointName(3)); r.Path != want {
		t.Errorf("after a write, Restored.Path = %q, want %q", r.Path, want)
	}
}

func TestCheckpointRetentionKeepsNewestThree(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpen(t, dir)
	for i := 1; i <= 5; i++ {
		mustWrite(t, s, func(txn *memdb.Txn) error {
			return PutMeta(txn, "counter", fmt.Sprint(i))
		})
	}
	got := checkpointFiles(t, dir)
	want := []string{checkpointName(3), checkpointName(4), checkpointName(5)}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("checkpoint files = %v, want %v", got, want)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("directory holds %d entries, want only the 3 checkpoints (no temporary files)", len(entries))
	}
	s2, _ := mustOpen(t, dir)
	if v, err := GetMeta(s2.Read(), "counter"); err != nil || v != "5" {
		t.Errorf("after reopen counter = %q, %v; want 5", v, err)
	}
	// Retention carries on across a reopen.
	mustWrite(t, s2, func(txn *memdb.Txn) error { return PutMeta(txn, "counter", "6") })
	if got, want := checkpointFiles(t, dir), []string{checkpointName(4), checkpointName(5), checkpointName(6)}; !reflect.DeepEqual(got, want) {
		t.Errorf("after reopen and write, checkpoint files = %v, want %v", got, want)
	}
}

func TestWriteErrorAbortsAndPersistsNothing(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpen(t, dir)
	fill(t, s)
	before := dump(t, s)
	files := checkpointFiles(t, dir)

	boom := errors.New("boom")
	err := s.Write(func(txn *memdb.Txn) error {
		if err := DeleteNetwork(txn, "net-a"); err != nil {
			return err
		}
		if err := PutMeta(txn, "half", "done"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Write returned %v, want fn's error", err)
	}
	if got := dump(t, s); !reflect.DeepEqual(got, before) {
		t.Errorf("memory changed by an aborted write:\n got %+v\nwant %+v", got, before)
	}
	if got := checkpointFiles(t, dir); !reflect.DeepEqual(got, files) {
		t.Errorf("checkpoint files = %v, want unchanged %v", got, files)
	}
	s2, _ := mustOpen(t, dir)
	if got := dump(t, s2); !reflect.DeepEqual(got, before) {
		t.Errorf("disk changed by an aborted write")
	}
}

func TestWriteRollsBackWhenCheckpointFails(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, _ := mustOpen(t, dir)
	fill(t, s)
	before := dump(t, s)

	// Take the directory away: the checkpoint cannot be written.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	err := s.Write(func(txn *memdb.Txn) error { return PutMeta(txn, "lost", "yes") })
	if err == nil || !strings.Contains(err.Error(), "checkpoint") {
		t.Fatalf("Write = %v, want a checkpoint error", err)
	}
	if _, err := GetMeta(s.Read(), "lost"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a write whose checkpoint failed is visible in memory (GetMeta err = %v)", err)
	}
	if got := dump(t, s); !reflect.DeepEqual(got, before) {
		t.Errorf("memory changed by a failed write")
	}

	// Once the directory is back, writes work again and carry everything.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, s, func(txn *memdb.Txn) error { return PutMeta(txn, "after", "yes") })
	s2, _ := mustOpen(t, dir)
	got := dump(t, s2)
	if len(got.Networks) != len(before.Networks) {
		t.Errorf("after recovery the checkpoint holds %d networks, want %d", len(got.Networks), len(before.Networks))
	}
	if _, err := GetMeta(s2.Read(), "lost"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the failed write reached disk later")
	}
}

func TestWriteWithoutChangesWritesNoCheckpoint(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpen(t, dir)
	mustWrite(t, s, func(txn *memdb.Txn) error {
		_, err := GetNetwork(txn, "nope")
		if !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("GetNetwork of a missing network = %v, want ErrNotFound", err)
		}
		return nil
	})
	if files := checkpointFiles(t, dir); len(files) != 0 {
		t.Errorf("a read-only write produced checkpoints %v", files)
	}
}

func TestConcurrentWritersGetDistinctIndexesInCommitOrder(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpen(t, dir)
	const writers = 20
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.Write(func(txn *memdb.Txn) error {
				idx, err := NextNetworkIndex(txn)
				if err != nil {
					return err
				}
				return PutNetwork(txn, &Network{ID: fmt.Sprintf("net-%02d", i), Index: idx})
			})
		}()
	}
	// Readers never block and never see a torn state.
	for range 50 {
		nets, err := ListNetworks(s.Read())
		if err != nil {
			t.Fatal(err)
		}
		seen := map[uint32]bool{}
		for _, n := range nets {
			if seen[n.Index] {
				t.Fatalf("index %d seen twice", n.Index)
			}
			seen[n.Index] = true
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
	nets, _ := ListNetworks(s.Read())
	indexes := map[uint32]string{}
	for _, n := range nets {
		if other, dup := indexes[n.Index]; dup {
			t.Errorf("networks %s and %s share index %d", other, n.ID, n.Index)
		}
		indexes[n.Index] = n.ID
	}
	for i := uint32(1); i <= writers; i++ {
		if _, ok := indexes[i]; !ok {
			t.Errorf("index %d unused, want 1..%d all used", i, writers)
		}
	}
	// Checkpoint k holds exactly k networks: each write's checkpoint
	// includes all earlier commits.
	s.waitPruned()
	for _, name := range checkpointFiles(t, dir) {
		seq, _ := parseCheckpointName(name)
		db, _, err := readCheckpoint(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := ListNetworks(db.Txn(false))
		if uint64(len(got)) != seq {
			t.Errorf("%s holds %d networks, want %d", name, len(got), seq)
		}
	}
	s2, _ := mustOpen(t, dir)
	if got := dump(t, s2); len(got.Networks) != writers {
		t.Errorf("after reopen %d networks, want %d", len(got.Networks), writers)
	}
}

func TestOpenRemovesLeftoverTemporaryFiles(t *testing.T) {
	dir := t.TempDir()
	tmp := filepath.Join(dir, ".checkpoint-123.tmp")
	if err := os.WriteFile(tmp, []byte("half written"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, r := mustOpen(t, dir)
	if len(r.Skipped) != 0 {
		t.Errorf("Skipped = %v; a temporary file is not a checkpoint", r.Skipped)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("leftover temporary file still there (stat err = %v)", err)
	}
}
