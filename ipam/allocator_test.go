package ipam

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	memdb "github.com/hashicorp/go-memdb"

	"github.com/membrane-net/membrane/state"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

// testULA is what testRand yields: fd + 12 34 56 78 9a.
var testULA = pfx("fd12:3456:789a::/48")

func testRand() *bytes.Reader { return bytes.NewReader([]byte{0x12, 0x34, 0x56, 0x78, 0x9a}) }

func testConfig() Config {
	return Config{
		Now:  func() time.Time { return time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC) },
		Rand: testRand(),
	}
}

func openStore(t *testing.T, dir string) *state.Store {
	t.Helper()
	s, r, err := state.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if len(r.Skipped) > 0 {
		t.Fatalf("state.Open skipped checkpoints: %v", r.Skipped)
	}
	return s
}

func newTestAllocator(t *testing.T, cfg Config) (*Allocator, *state.Store, string) {
	t.Helper()
	dir := t.TempDir()
	s := openStore(t, dir)
	a, err := New(s, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a, s, dir
}

func mustPool(t *testing.T, a *Allocator, req PoolRequest) PoolResponse {
	t.Helper()
	resp, err := a.RequestPool(req)
	if err != nil {
		t.Fatalf("RequestPool(%+v): %v", req, err)
	}
	return resp
}

func mustAddr(t *testing.T, a *Allocator, poolID, address string, opts map[string]string) netip.Prefix {
	t.Helper()
	got, err := a.RequestAddress(poolID, address, opts)
	if err != nil {
		t.Fatalf("RequestAddress(%s, %q, %v): %v", poolID, address, opts, err)
	}
	return got
}

// useInNetwork records a network on the pool's prefix, as the driver does.
func useInNetwork(t *testing.T, s *state.Store, id string, p netip.Prefix) {
	t.Helper()
	err := s.Write(func(txn *memdb.Txn) error {
		idx, err := state.NextNetworkIndex(txn)
		if err != nil {
			return err
		}
		n := &state.Network{ID: id, Index: idx}
		if p.Addr().Is6() {
			n.IPv6 = &state.Subnet{Pool: p}
		} else {
			n.IPv4 = &state.Subnet{Pool: p}
		}
		return state.PutNetwork(txn, n)
	})
	if err != nil {
		t.Fatal(err)
	}
}

var gw = map[string]string{OptionRequestAddressType: RequestAddressTypeGateway}

// endpointOpts is what Docker passes for a container's address.
var endpointOpts = map[string]string{
	"com.docker.network.endpoint.name":       "web",
	"com.docker.network.endpoint.macaddress": "02:42:ac:11:00:02",
}

// wantErr checks that err wraps sentinel, classifies as kind, and mentions
// every fragment.
func wantErr(t *testing.T, err, sentinel error, kind Kind, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", sentinel)
	}
	if !errors.Is(err, sentinel) {
		t.Errorf("error %q does not wrap %v", err, sentinel)
	}
	if got := Classify(err); got != kind {
		t.Errorf("Classify(%q) = %v, want %v", err, got, kind)
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not mention %q", err, f)
		}
	}
}

func TestDefaultAddressSpaces(t *testing.T) {
	a, _, _ := newTestAllocator(t, testConfig())
	if l, g := a.DefaultAddressSpaces(); l != "membrane-local" || g != "membrane-global" {
		t.Errorf("DefaultAddressSpaces = %q, %q; want membrane-local, membrane-global", l, g)
	}
	cfg := testConfig()
	cfg.LocalSpace, cfg.GlobalSpace = "here", "everywhere"
	a, _, _ = newTestAllocator(t, cfg)
	if l, g := a.DefaultAddressSpaces(); l != "here" || g != "everywhere" {
		t.Errorf("configured DefaultAddressSpaces = %q, %q; want here, everywhere", l, g)
	}
}

func TestRequestPoolDynamicIPv6ComesFromHostULA(t *testing.T) {
	a, _, _ := newTestAllocator(t, testConfig())
	if a.ULA() != testULA {
		t.Fatalf("ULA = %s, want %s (fd + the 40 random bits)", a.ULA(), testULA)
	}
	want := []string{"fd12:3456:789a::/64", "fd12:3456:789a:1::/64", "fd12:3456:789a:2::/64"}
	for i, w := range want {
		resp := mustPool(t, a, PoolRequest{V6: true, Options: map[string]string{"n": fmt.Sprint(i)}})
		if resp.Pool != pfx(w) {
			t.Errorf("pool %d = %s, want %s", i, resp.Pool, w)
		}
	}
	// The global space has its own pools in the same /48: no overlap
	// check across spaces.
	resp := mustPool(t, a, PoolRequest{AddressSpace: "membrane-global", V6: true})
	if resp.Pool != pfx("fd12:3456:789a::/64") {
		t.Errorf("first global pool = %s, want fd12:3456:789a::/64", resp.Pool)
	}
}

func TestULAIsPersistedAcrossStoreReopen(t *testing.T) {
	a, _, dir := newTestAllocator(t, testConfig())
	first := mustPool(t, a, PoolRequest{V6: true})

	cfg := testConfig()
	cfg.Rand = bytes.NewReader([]byte{0xaa, 0xbb, 0xcc, 0xdd, 0xee}) // would give another /48
	a2, err := New(openStore(t, dir), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if a2.ULA() != testULA {
		t.Errorf("after restart ULA = %s, want the same %s", a2.ULA(), testULA)
	}
	second := mustPool(t, a2, PoolRequest{V6: true, Options: map[string]string{"other": "network"}})
	if !testULA.Contains(second.Pool.Addr()) || second.Pool == first.Pool {
		t.Errorf("after restart next pool = %s, want a new /64 of %s (first was %s)", second.Pool, testULA, first.Pool)
	}
}

func TestNewGeneratesRandomULAWithoutInjectedRand(t *testing.T) {
	cfg := testConfig()
	cfg.Rand = nil
	a, _, _ := newTestAllocator(t, cfg)
	if u := a.ULA(); u.Bits() != 48 || !pfx("fd00::/8").Contains(u.Addr()) {
		t.Errorf("ULA = %s, want a /48 in fd00::/8", u)
	}
}

func TestRequestPoolDynamicIPv4AvoidsPoolsAndHostRoutes(t *testing.T) {
	tests := []struct {
		name     string
		routes   []string
		explicit []string // pools created first with --subnet
		want     string
	}{
		{"empty host", nil, nil, "10.210.0.0/24"},
		{"default route ignored", []string{"0.0.0.0/0"}, nil, "10.210.0.0/24"},
		{"IPv6 routes ignored", []string{"fd12:3456:789a::/64", "::/0"}, nil, "10.210.0.0/24"},
		{"route on first pool", []string{"10.210.0.0/24"}, nil, "10.210.1.0/24"},
		{"host route inside a pool", []string{"10.210.0.0/24", "10.210.1.77/32"}, nil, "10.210.2.0/24"},
		{"wide route", []string{"10.210.0.0/20"}, nil, "10.210.16.0/24"},
		{"explicit pool and route", []string{"10.210.1.0/24"}, []string{"10.210.0.0/24"}, "10.210.2.0/24"},
		{"explicit pool wider than a dynamic one", nil, []string{"10.210.0.0/23"}, "10.210.2.0/24"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.HostRoutes = func() ([]netip.Prefix, error) {
				var out []netip.Prefix
				for _, r := range tt.routes {
					out = append(out, pfx(r))
				}
				return out, nil
			}
			a, _, _ := newTestAllocator(t, cfg)
			for _, e := range tt.explicit {
				mustPool(t, a, PoolRequest{Pool: e})
			}
			if got := mustPool(t, a, PoolRequest{}); got.Pool != pfx(tt.want) {
				t.Errorf("dynamic IPv4 pool = %s, want %s", got.Pool, tt.want)
			}
		})
	}
}

func TestRequestPoolIPv4RangeExhausted(t *testing.T) {
	cfg := testConfig()
	cfg.IPv4Range = pfx("10.210.0.0/23")
	a, _, _ := newTestAllocator(t, cfg)
	mustPool(t, a, PoolRequest{Options: map[string]string{"net": "1"}})
	mustPool(t, a, PoolRequest{Options: map[string]string{"net": "2"}})
	_, err := a.RequestPool(PoolRequest{Options: map[string]string{"net": "3"}})
	wantErr(t, err, ErrNoFreePool, KindUnavailable, "IPv4 range 10.210.0.0/23", "every /24", "pass --subnet", "--ipv4-range")

	// A host route covering the whole range exhausts it too.
	cfg = testConfig()
	cfg.HostRoutes = func() ([]netip.Prefix, error) { return []netip.Prefix{pfx("10.0.0.0/8")}, nil }
	a, _, _ = newTestAllocator(t, cfg)
	_, err = a.RequestPool(PoolRequest{})
	wantErr(t, err, ErrNoFreePool, KindUnavailable, "10.210.0.0/16", "route of the host")
}

func TestRequestPoolHostRoutesErrorIsInternal(t *testing.T) {
	cfg := testConfig()
	boom := errors.New("netlink: dump interrupted")
	cfg.HostRoutes = func() ([]netip.Prefix, error) { return nil, boom }
	a, _, _ := newTestAllocator(t, cfg)
	_, err := a.RequestPool(PoolRequest{})
	if !errors.Is(err, boom) || Classify(err) != KindInternal {
		t.Errorf("RequestPool with failing host routes = %v (%v), want the route error, internal", err, Classify(err))
	}
	// Explicit and IPv6 pools do not need the routes.
	if _, err := a.RequestPool(PoolRequest{Pool: "192.168.7.0/24"}); err != nil {
		t.Errorf("explicit pool with failing host routes: %v", err)
	}
	if _, err := a.RequestPool(PoolRequest{V6: true}); err != nil {
		t.Errorf("IPv6 pool with failing host routes: %v", err)
	}
}

func TestRequestPoolIPv6ULAExhausted(t *testing.T) {
	cfg := testConfig()
	cfg.IPv6PoolBits = 49 // two pools per /48
	a, _, _ := newTestAllocator(t, cfg)
	mustPool(t, a, PoolRequest{V6: true, Options: map[string]string{"net": "1"}})
	mustPool(t, a, PoolRequest{V6: true, Options: map[string]string{"net": "2"}})
	_, err := a.RequestPool(PoolRequest{V6: true, Options: map[string]string{"net": "3"}})
	wantErr(t, err, ErrNoFreePool, KindUnavailable, "IPv6 prefix fd12:3456:789a::/48", "pass --subnet")
}

func TestRequestPoolExplicitSubnetAndRange(t *testing.T) {
	a, _, _ := newTestAllocator(t, testConfig())
	tests := []struct {
		name            string
		req             PoolRequest
		wantPool        string
		wantFirstDynIn  string
		wantGatewayAddr string
	}{
		{"IPv4 subnet", PoolRequest{Pool: "192.168.50.0/24"}, "192.168.50.0/24", "192.168.50.0/24", "192.168.50.1"},
		{"IPv4 host bits cleared", PoolRequest{Pool: "172.30.9.9/16"}, "172.30.0.0/16", "172.30.0.0/16", "172.30.0.1"},
		{"IPv4 with ip-range", PoolRequest{Pool: "10.99.0.0/16", SubPool: "10.99.7.0/24"}, "10.99.0.0/16", "10.99.7.0/24", "10.99.0.1"},
		{"IPv6 subnet", PoolRequest{Pool: "2001:db8:1::/64", V6: true}, "2001:db8:1::/64", "2001:db8:1::/64", "2001:db8:1::1"},
		{"IPv6 with ip-range", PoolRequest{Pool: "2001:db8:2::/64", SubPool: "2001:db8:2::100/120", V6: true}, "2001:db8:2::/64", "2001:db8:2::100/120", "2001:db8:2::1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := mustPool(t, a, tt.req)
			if resp.Pool != pfx(tt.wantPool) {
				t.Errorf("pool = %s, want %s", resp.Pool, tt.wantPool)
			}
			g := mustAddr(t, a, resp.PoolID, "", gw)
			if g != netip.PrefixFrom(addr(tt.wantGatewayAddr), resp.Pool.Bits()) {
				t.Errorf("default gateway = %s, want %s/%d (first usable address of the pool, not of the range)", g, tt.wantGatewayAddr, resp.Pool.Bits())
			}
			for range 3 {
				got := mustAddr(t, a, resp.PoolID, "", endpointOpts)
				if !pfx(tt.wantFirstDynIn).Contains(got.Addr()) || got.Bits() != resp.Pool.Bits() {
					t.Errorf("dynamic address %s, want one in %s with the pool's length /%d", got, tt.wantFirstDynIn, resp.Pool.Bits())
				}
			}
		})
	}
}

func TestRequestPoolExplicitOverlapIsRefused(t *testing.T) {
	a, _, _ := newTestAllocator(t, testConfig())
	first := mustPool(t, a, PoolRequest{Pool: "10.50.0.0/16"})
	tests := []struct {
		name string
		req  PoolRequest
	}{
		{"inside", PoolRequest{Pool: "10.50.3.0/24"}},
		{"around", PoolRequest{Pool: "10.0.0.0/8"}},
		{"same prefix, different range", PoolRequest{Pool: "10.50.0.0/16", SubPool: "10.50.1.0/24"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.RequestPool(tt.req)
			wantErr(t, err, ErrPoolOverlap, KindConflict, "10.50.0.0/16", first.PoolID, "choose a --subnet")
		})
	}
	if _, err := a.RequestPool(PoolRequest{AddressSpace: "membrane-global", Pool: "10.50.0.0/16"}); err != nil {
		t.Errorf("same subnet in the other address space: %v", err)
	}
	// A dynamic pool steps around an explicit one in the range.
	mustPool(t, a, PoolRequest{Pool: "10.210.0.0/24"})
	if got := mustPool(t, a, PoolRequest{}); got.Pool != pfx("10.210.1.0/24") {
		t.Errorf("dynamic pool = %s, want 10.210.1.0/24", got.Pool)
	}
}

func TestRequestPoolForExplicitSubnetIsIdempotentWhileUnused(t *testing.T) {
	tests := []struct {
		name string
		req  PoolRequest
	}{
		{"explicit IPv4", PoolRequest{Pool: "192.168.80.0/24", SubPool: "192.168.80.128/25", Options: map[string]string{"a": "1", "b": "2"}}},
		{"explicit IPv6", PoolRequest{Pool: "fd55::/64", V6: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, s, _ := newTestAllocator(t, testConfig())
			first := mustPool(t, a, tt.req)
			again := mustPool(t, a, tt.req) // Docker's retry after a lost reply
			if again.PoolID != first.PoolID || again.Pool != first.Pool {
				t.Fatalf("retry got %s %s, want the same pool %s %s", again.PoolID, again.Pool, first.PoolID, first.Pool)
			}
			// Spelling the request differently is the same request.
			alt := tt.req
			alt.AddressSpace = "membrane-local"
			if alt.Pool == "192.168.80.0/24" {
				alt.Pool = "192.168.80.77/24"
			}
			if got := mustPool(t, a, alt); got.PoolID != first.PoolID {
				t.Errorf("equivalent request got %s, want %s", got.PoolID, first.PoolID)
			}
			// Different options make a different request.
			other := tt.req
			other.Options = map[string]string{"x": "y"}
			if got, err := a.RequestPool(other); err == nil && got.PoolID == first.PoolID {
				t.Errorf("request with other options got the same pool %s", got.PoolID)
			}

			// Once a network uses the pool, the same request is a new network.
			useInNetwork(t, s, "net-1", first.Pool)
			next, err := a.RequestPool(tt.req)
			if tt.req.Pool != "" {
				wantErr(t, err, ErrPoolOverlap, KindConflict, first.Pool.String())
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if next.PoolID == first.PoolID || next.Pool.Overlaps(first.Pool) {
				t.Errorf("request after the pool was used got %s %s, want a new pool", next.PoolID, next.Pool)
			}
		})
	}
}

// Docker asks the same dynamic request again, holding the first pool, when
// the pool overlaps a host route; it must get a different pool each time.
func TestRequestPoolDynamicRepeatGetsNewPool(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		a, _, _ := newTestAllocator(t, testConfig())
		first := mustPool(t, a, PoolRequest{V6: v6})
		again := mustPool(t, a, PoolRequest{V6: v6})
		if again.PoolID == first.PoolID || again.Pool.Overlaps(first.Pool) {
			t.Errorf("v6=%v: repeated dynamic request got %s %s, want a pool other than %s %s",
				v6, again.PoolID, again.Pool, first.PoolID, first.Pool)
		}
	}
}

func TestRequestPoolWithAllocatedAddressIsNotReturnedAgain(t *testing.T) {
	a, _, _ := newTestAllocator(t, testConfig())
	req := PoolRequest{Pool: "fd66::/64", V6: true}
	first := mustPool(t, a, req)
	mustAddr(t, a, first.PoolID, "", gw) // Docker got the pool: it asks for the gateway next
	second, err := a.RequestPool(req)
	if err == nil && second.PoolID == first.PoolID {
		t.Errorf("a pool holding a gateway was handed out again as %s", second.PoolID)
	}
}

func TestRequestPoolRejectsBadInput(t *testing.T) {
	a, _, _ := newTestAllocator(t, testConfig())
	tests := []struct {
		name      string
		req       PoolRequest
		sentinel  error
		fragments []string
	}{
		{"garbage subnet", PoolRequest{Pool: "10.0.0.0/33"}, ErrBadRequest, []string{`subnet "10.0.0.0/33"`, "CIDR"}},
		{"not a prefix at all", PoolRequest{Pool: "banana"}, ErrBadRequest, []string{`"banana"`, "CIDR"}},
		{"IPv4 subnet for IPv6", PoolRequest{Pool: "10.1.0.0/24", V6: true}, ErrBadRequest, []string{"10.1.0.0/24", "is IPv4", "IPv6 pool"}},
		{"IPv6 subnet for IPv4", PoolRequest{Pool: "2001:db8::/64"}, ErrBadRequest, []string{"2001:db8::/64", "is IPv6", "IPv4 pool"}},
		{"IPv4-mapped subnet", PoolRequest{Pool: "::ffff:10.0.0.0/120", V6: true}, ErrBadRequest, []string{"IPv4-mapped"}},
		{"range without subnet", PoolRequest{SubPool: "10.1.0.0/24"}, ErrBadRequest, []string{"10.1.0.0/24", "--subnet"}},
		{"garbage range", PoolRequest{Pool: "10.1.0.0/16", SubPool: "10.1.0.0"}, ErrBadRequest, []string{`IP range "10.1.0.0"`}},
		{"range outside subnet", PoolRequest{Pool: "10.1.0.0/16", SubPool: "10.2.0.0/24"}, ErrBadRequest, []string{"10.2.0.0/24", "not inside subnet 10.1.0.0/16"}},
		{"range wider than subnet", PoolRequest{Pool: "10.1.0.0/16", SubPool: "10.0.0.0/8"}, ErrBadRequest, []string{"10.0.0.0/8"}},
		{"range of other family", PoolRequest{Pool: "10.1.0.0/16", SubPool: "2001:db8::/64"}, ErrBadRequest, []string{"2001:db8::/64"}},
		{"unknown address space", PoolRequest{AddressSpace: "LocalDefault"}, ErrUnknownAddressSpace, []string{`"LocalDefault"`, "membrane-local", "membrane-global"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := a.RequestPool(tt.req)
			wantErr(t, err, tt.sentinel, KindBadRequest, tt.fragments...)
			if resp.PoolID != "" {
				t.Errorf("rejected request returned pool %q", resp.PoolID)
			}
		})
	}
	pools, _ := state.ListPools(a.store.Read())
	if len(pools) != 0 {
		t.Errorf("rejected requests left %d pools behind", len(pools))
	}
}

func TestReleasePoolFreesPrefixForReuseWithNewID(t *testing.T) {
	a, s, _ := newTestAllocator(t, testConfig())
	first := mustPool(t, a, PoolRequest{})
	mustAddr(t, a, first.PoolID, "", gw)
	mustAddr(t, a, first.PoolID, "", endpointOpts)
	if err := a.ReleasePool(first.PoolID); err != nil {
		t.Fatal(err)
	}
	if addrs, _ := state.ListAddresses(s.Read()); len(addrs) != 0 {
		t.Errorf("ReleasePool left addresses %v", addrs)
	}
	second := mustPool(t, a, PoolRequest{Options: map[string]string{"other": "net"}})
	if second.Pool != first.Pool {
		t.Errorf("after release the next pool is %s, want the freed %s", second.Pool, first.Pool)
	}
	if second.PoolID == first.PoolID {
		t.Fatalf("reused prefix got the old pool ID %s", first.PoolID)
	}
	// Docker replays the old release: the new pool must survive it.
	if err := a.ReleasePool(first.PoolID); err != nil {
		t.Errorf("replayed ReleasePool: %v", err)
	}
	if _, err := state.GetPool(s.Read(), second.PoolID); err != nil {
		t.Errorf("replayed release of %s removed %s: %v", first.PoolID, second.PoolID, err)
	}
}

func TestReleaseOfUnknownThingsSucceeds(t *testing.T) {
	a, _, _ := newTestAllocator(t, testConfig())
	p := mustPool(t, a, PoolRequest{Pool: "10.7.0.0/24"})
	tests := []struct {
		name string
		fn   func() error
	}{
		{"unknown pool", func() error { return a.ReleasePool("membrane-local/10.9.0.0/24#99") }},
		{"empty pool ID", func() error { return a.ReleasePool("") }},
		{"address of unknown pool", func() error { return a.ReleaseAddress("nope", "10.9.0.5") }},
		{"unallocated address", func() error { return a.ReleaseAddress(p.PoolID, "10.7.0.5") }},
		{"address outside the pool", func() error { return a.ReleaseAddress(p.PoolID, "192.0.2.1") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.fn(); err != nil {
				t.Errorf("got %v, want success (Docker replays releases)", err)
			}
		})
	}
	err := a.ReleaseAddress(p.PoolID, "10.7.0.300")
	wantErr(t, err, ErrBadRequest, KindBadRequest, `"10.7.0.300"`)
}
