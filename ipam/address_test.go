package ipam

import (
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/membrane-net/membrane/state"
)

func TestRequestAddressHonoursStaticIP(t *testing.T) {
	a, s, _ := newTestAllocator(t, testConfig())
	p4 := mustPool(t, a, PoolRequest{Pool: "10.60.0.0/16", SubPool: "10.60.1.0/24"})
	p6 := mustPool(t, a, PoolRequest{Pool: "2001:db8:60::/64", V6: true})
	tests := []struct {
		name, pool, address, want string
	}{
		{"inside the range", p4.PoolID, "10.60.1.77", "10.60.1.77/16"},
		{"outside the range, inside the pool", p4.PoolID, "10.60.200.3", "10.60.200.3/16"},
		{"with a prefix length", p4.PoolID, "10.60.1.78/16", "10.60.1.78/16"},
		{"IPv6", p6.PoolID, "2001:db8:60::beef", "2001:db8:60::beef/64"},
		{"IPv6 last address", p6.PoolID, "2001:db8:60::ffff:ffff:ffff:ffff", "2001:db8:60::ffff:ffff:ffff:ffff/64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mustAddr(t, a, tt.pool, tt.address, endpointOpts); got != pfx(tt.want) {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
	got, err := state.GetAddress(s.Read(), p4.PoolID, addr("10.60.1.77"))
	if err != nil || got.Kind != state.AddressKindEndpoint {
		t.Errorf("stored static address = %+v, %v; want kind endpoint", got, err)
	}
}

func TestRequestAddressRefusesBadStaticIP(t *testing.T) {
	a, _, _ := newTestAllocator(t, testConfig())
	p4 := mustPool(t, a, PoolRequest{Pool: "10.60.0.0/24"})
	p6 := mustPool(t, a, PoolRequest{Pool: "2001:db8:60::/64", V6: true})
	mustAddr(t, a, p4.PoolID, "10.60.0.10", endpointOpts)
	tests := []struct {
		name, pool, address string
		sentinel            error
		kind                Kind
		fragments           []string
	}{
		{"in use", p4.PoolID, "10.60.0.10", ErrAddressInUse, KindConflict, []string{"10.60.0.10", "10.60.0.0/24", "already in use", "--ip"}},
		{"outside the pool", p4.PoolID, "10.61.0.10", ErrBadRequest, KindBadRequest, []string{"10.61.0.10", "10.60.0.0/24", "outside the pool"}},
		{"other family", p4.PoolID, "2001:db8:60::5", ErrBadRequest, KindBadRequest, []string{"2001:db8:60::5", "outside the pool"}},
		{"network address", p4.PoolID, "10.60.0.0", ErrBadRequest, KindBadRequest, []string{"10.60.0.0", "network address"}},
		{"broadcast address", p4.PoolID, "10.60.0.255", ErrBadRequest, KindBadRequest, []string{"10.60.0.255", "broadcast address"}},
		{"subnet-router anycast", p6.PoolID, "2001:db8:60::", ErrBadRequest, KindBadRequest, []string{"2001:db8:60::", "anycast"}},
		{"garbage", p4.PoolID, "10.60.0.256", ErrBadRequest, KindBadRequest, []string{`"10.60.0.256"`, "not an IP address"}},
		{"unknown pool", "membrane-local/10.1.0.0/24#42", "", ErrNoSuchPool, KindNotFound, []string{"membrane-local/10.1.0.0/24#42", "recreate the network"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.RequestAddress(tt.pool, tt.address, endpointOpts)
			wantErr(t, err, tt.sentinel, tt.kind, tt.fragments...)
		})
	}
}

func TestRequestAddressGateway(t *testing.T) {
	tests := []struct {
		name    string
		pool    PoolRequest
		address string
		want    string
	}{
		{"IPv4 default", PoolRequest{Pool: "10.70.0.0/24"}, "", "10.70.0.1/24"},
		{"IPv4 default ignores the range", PoolRequest{Pool: "10.70.0.0/16", SubPool: "10.70.9.0/24"}, "", "10.70.0.1/16"},
		{"IPv4 explicit", PoolRequest{Pool: "10.70.0.0/24"}, "10.70.0.254", "10.70.0.254/24"},
		{"IPv4 /31 default", PoolRequest{Pool: "10.70.0.0/31"}, "", "10.70.0.0/31"},
		{"IPv6 default", PoolRequest{Pool: "2001:db8:70::/64", V6: true}, "", "2001:db8:70::1/64"},
		{"IPv6 dynamic pool default", PoolRequest{V6: true}, "", "fd12:3456:789a::1/64"},
		{"IPv6 explicit", PoolRequest{Pool: "2001:db8:70::/64", V6: true}, "2001:db8:70::fe", "2001:db8:70::fe/64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, s, _ := newTestAllocator(t, testConfig())
			p := mustPool(t, a, tt.pool)
			got := mustAddr(t, a, p.PoolID, tt.address, gw)
			if got != pfx(tt.want) {
				t.Fatalf("gateway = %s, want %s", got, tt.want)
			}
			rec, err := state.GetAddress(s.Read(), p.PoolID, got.Addr())
			if err != nil || rec.Kind != state.AddressKindGateway {
				t.Errorf("stored gateway = %+v, %v; want kind gateway", rec, err)
			}
			// Endpoints never get the gateway.
			for range 3 {
				ep, err := a.RequestAddress(p.PoolID, "", endpointOpts)
				if err != nil {
					break // the /31 is full after one
				}
				if ep == got {
					t.Errorf("endpoint got the gateway address %s", ep)
				}
			}
		})
	}

	a, _, _ := newTestAllocator(t, testConfig())
	p := mustPool(t, a, PoolRequest{Pool: "10.71.0.0/24"})
	mustAddr(t, a, p.PoolID, "10.71.0.1", endpointOpts) // someone's --ip took .1
	_, err := a.RequestAddress(p.PoolID, "", gw)
	wantErr(t, err, ErrAddressInUse, KindConflict, "gateway 10.71.0.1", "10.71.0.0/24", "--gateway")
}

func TestRequestAddressAuxAddress(t *testing.T) {
	a, s, _ := newTestAllocator(t, testConfig())
	p := mustPool(t, a, PoolRequest{Pool: "10.80.0.0/24", SubPool: "10.80.0.0/25"})
	mustAddr(t, a, p.PoolID, "", gw)
	// --aux-address host=10.80.0.200: Docker sends no options.
	if got := mustAddr(t, a, p.PoolID, "10.80.0.200", nil); got != pfx("10.80.0.200/24") {
		t.Errorf("aux address = %s, want 10.80.0.200/24", got)
	}
	if got := mustAddr(t, a, p.PoolID, "10.80.0.5", map[string]string{}); got != pfx("10.80.0.5/24") {
		t.Errorf("aux address = %s, want 10.80.0.5/24", got)
	}
	for _, ip := range []string{"10.80.0.200", "10.80.0.5"} {
		rec, err := state.GetAddress(s.Read(), p.PoolID, addr(ip))
		if err != nil || rec.Kind != state.AddressKindAux {
			t.Errorf("stored %s = %+v, %v; want kind aux", ip, rec, err)
		}
	}
	_, err := a.RequestAddress(p.PoolID, "10.80.0.200", nil)
	wantErr(t, err, ErrAddressInUse, KindConflict, "10.80.0.200", "--aux-address")
	// Dynamic allocation steps over the aux address.
	var seen []netip.Addr
	for range 5 {
		seen = append(seen, mustAddr(t, a, p.PoolID, "", endpointOpts).Addr())
	}
	for _, got := range seen {
		if got == addr("10.80.0.5") {
			t.Errorf("dynamic allocation handed out the aux address 10.80.0.5")
		}
	}
}

func TestRequestAddressIgnoresUnknownOptions(t *testing.T) {
	a, _, _ := newTestAllocator(t, testConfig())
	p := mustPool(t, a, PoolRequest{Pool: "10.81.0.0/24"})
	opts := map[string]string{"com.example.whatever": "x", OptionRequestAddressType: "com.example.not-a-gateway"}
	if got := mustAddr(t, a, p.PoolID, "", opts); got != pfx("10.81.0.1/24") {
		t.Errorf("got %s, want the first free address 10.81.0.1/24", got)
	}
}

func TestRequestAddressExhaustion(t *testing.T) {
	tests := []struct {
		name      string
		pool      PoolRequest
		want      []string // gateway, then endpoints
		fragments []string
	}{
		{"IPv4 /30", PoolRequest{Pool: "10.90.0.0/30"}, []string{"10.90.0.1/30", "10.90.0.2/30"},
			[]string{"pool 10.90.0.0/30", "every usable address of 10.90.0.0/30 is allocated", "larger --subnet or --ip-range"}},
		{"IPv6 /126", PoolRequest{Pool: "2001:db8:90::/126", V6: true}, []string{"2001:db8:90::1/126", "2001:db8:90::2/126", "2001:db8:90::3/126"},
			[]string{"pool 2001:db8:90::/126", "every usable address of 2001:db8:90::/126 is allocated"}},
		{"IPv4 /31 has two", PoolRequest{Pool: "10.90.0.8/31"}, []string{"10.90.0.8/31", "10.90.0.9/31"},
			[]string{"10.90.0.8/31"}},
		{"IPv4 range /30 of a /24", PoolRequest{Pool: "10.91.0.0/24", SubPool: "10.91.0.4/30"},
			[]string{"10.91.0.1/24", "10.91.0.4/24", "10.91.0.5/24", "10.91.0.6/24", "10.91.0.7/24"},
			[]string{"range 10.91.0.4/30 of pool 10.91.0.0/24"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, _, _ := newTestAllocator(t, testConfig())
			p := mustPool(t, a, tt.pool)
			for i, w := range tt.want {
				opts := endpointOpts
				if i == 0 {
					opts = gw
				}
				if got := mustAddr(t, a, p.PoolID, "", opts); got != pfx(w) {
					t.Errorf("allocation %d = %s, want %s", i, got, w)
				}
			}
			_, err := a.RequestAddress(p.PoolID, "", endpointOpts)
			wantErr(t, err, ErrPoolExhausted, KindUnavailable, tt.fragments...)
			// A release makes room again.
			if err := a.ReleaseAddress(p.PoolID, pfx(tt.want[len(tt.want)-1]).Addr().String()); err != nil {
				t.Fatal(err)
			}
			if got := mustAddr(t, a, p.PoolID, "", endpointOpts); got != pfx(tt.want[len(tt.want)-1]) {
				t.Errorf("after release got %s, want the freed %s", got, tt.want[len(tt.want)-1])
			}
		})
	}
}

func TestRequestAddressDoesNotHandBackJustReleasedAddress(t *testing.T) {
	a, _, _ := newTestAllocator(t, testConfig())
	p := mustPool(t, a, PoolRequest{Pool: "10.100.0.0/29"}) // .1-.6 usable
	mustAddr(t, a, p.PoolID, "", gw)                        // .1
	first := mustAddr(t, a, p.PoolID, "", endpointOpts)     // .2
	mustAddr(t, a, p.PoolID, "", endpointOpts)              // .3
	if err := a.ReleaseAddress(p.PoolID, first.Addr().String()); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 4 {
		got = append(got, mustAddr(t, a, p.PoolID, "", endpointOpts).Addr().String())
	}
	// .4 .5 .6 first, then the search wraps and finds the released .2.
	want := []string{"10.100.0.4", "10.100.0.5", "10.100.0.6", "10.100.0.2"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("allocations after releasing %s = %v, want %v", first.Addr(), got, want)
		}
	}
}

func TestNoAddressHandedOutTwiceAcrossReopen(t *testing.T) {
	a, _, dir := newTestAllocator(t, testConfig())
	p4 := mustPool(t, a, PoolRequest{})
	p6 := mustPool(t, a, PoolRequest{V6: true})
	seen := map[netip.Prefix]bool{}
	take := func(a *Allocator, pool, opts string) {
		t.Helper()
		o := endpointOpts
		if opts == "gw" {
			o = gw
		}
		got := mustAddr(t, a, pool, "", o)
		if seen[got] {
			t.Fatalf("%s handed out twice", got)
		}
		seen[got] = true
	}
	take(a, p4.PoolID, "gw")
	take(a, p6.PoolID, "gw")
	for range 5 {
		take(a, p4.PoolID, "")
		take(a, p6.PoolID, "")
	}
	// Release one so the cursor, not the lowest free address, decides.
	if err := a.ReleaseAddress(p4.PoolID, "10.210.0.3"); err != nil {
		t.Fatal(err)
	}
	delete(seen, pfx("10.210.0.3/24"))

	// Restart: a new store and allocator on the same directory.
	a2, err := New(openStore(t, dir), testConfig())
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		take(a2, p4.PoolID, "")
		take(a2, p6.PoolID, "")
	}
	if seen[pfx("10.210.0.3/24")] {
		t.Errorf("the address released before the restart came straight back")
	}
	// Pools survive too: the next dynamic pools are new ones.
	if p := mustPool(t, a2, PoolRequest{Options: map[string]string{"n": "2"}}); p.Pool == p4.Pool {
		t.Errorf("after restart a new IPv4 pool reused %s, which holds addresses", p.Pool)
	}
}

func TestAllocationIsDurableBeforeReturn(t *testing.T) {
	a, _, dir := newTestAllocator(t, testConfig())
	p := mustPool(t, a, PoolRequest{V6: true})
	got := mustAddr(t, a, p.PoolID, "", endpointOpts)
	// A second store opened on the directory now (as after a crash right
	// after the reply) already holds both.
	other := openStore(t, dir)
	if _, err := state.GetPool(other.Read(), p.PoolID); err != nil {
		t.Errorf("pool not on disk when RequestPool returned: %v", err)
	}
	if _, err := state.GetAddress(other.Read(), p.PoolID, got.Addr()); err != nil {
		t.Errorf("address not on disk when RequestAddress returned: %v", err)
	}
}

func TestRequestAddressFailsWhole(t *testing.T) {
	a, s, dir := newTestAllocator(t, testConfig())
	p := mustPool(t, a, PoolRequest{Pool: "10.110.0.0/24"})
	mustAddr(t, a, p.PoolID, "", gw)
	if err := os.RemoveAll(dir); err != nil { // the checkpoint cannot be written
		t.Fatal(err)
	}
	_, err := a.RequestAddress(p.PoolID, "", endpointOpts)
	if err == nil || Classify(err) != KindInternal || !strings.Contains(err.Error(), p.PoolID) {
		t.Fatalf("RequestAddress without a state directory = %v (%v), want an internal error naming the pool", err, Classify(err))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if got := mustAddr(t, a, p.PoolID, "", endpointOpts); got != pfx("10.110.0.2/24") {
		t.Errorf("after the failed call got %s, want 10.110.0.2/24: the failed call must allocate nothing, cursor included", got)
	}
	if addrs, _ := state.ListAddressesByPool(s.Read(), p.PoolID); len(addrs) != 2 {
		t.Errorf("pool holds %d addresses, want 2", len(addrs))
	}
}

func TestConcurrentRequestAddressNeverDuplicates(t *testing.T) {
	a, _, _ := newTestAllocator(t, testConfig())
	p := mustPool(t, a, PoolRequest{Pool: "10.120.0.0/26"}) // 62 usable
	const n = 40
	var wg sync.WaitGroup
	got := make(chan netip.Prefix, n)
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ip, err := a.RequestAddress(p.PoolID, "", endpointOpts)
			if err != nil {
				errs <- err
				return
			}
			got <- ip
		}()
	}
	wg.Wait()
	close(got)
	close(errs)
	for err := range errs {
		t.Errorf("RequestAddress: %v", err)
	}
	seen := map[netip.Prefix]bool{}
	for ip := range got {
		if seen[ip] {
			t.Errorf("%s handed out twice", ip)
		}
		seen[ip] = true
	}
	if len(seen) != n {
		t.Errorf("%d distinct addresses, want %d", len(seen), n)
	}
}
