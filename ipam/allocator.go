package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"strconv"
	"time"

	memdb "github.com/hashicorp/go-memdb"

	"github.com/membrane-net/membrane/state"
)

// Keys of the state meta table owned by this package.
const (
	metaULAPrefix = "ipam.ula-prefix" // the host's ULA /48
	metaPoolSeq   = "ipam.pool-seq"   // last pool sequence number handed out
)

// Allocator hands out pools and addresses. It is safe for concurrent use:
// every call is one state transaction.
type Allocator struct {
	store *state.Store
	cfg   Config
	ula   netip.Prefix
}

// New returns an Allocator over store. On first use of a state directory it
// generates the host's ULA /48 and stores it.
func New(store *state.Store, cfg Config) (*Allocator, error) {
	if store == nil {
		return nil, errNilStore
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	a := &Allocator{store: store, cfg: cfg}
	if a.ula, err = a.ensureULA(); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Allocator) ensureULA() (netip.Prefix, error) {
	var ula netip.Prefix
	err := a.store.Write(func(txn *memdb.Txn) error {
		v, err := state.GetMeta(txn, metaULAPrefix)
		switch {
		case err == nil:
			if ula, err = parseULA(v); err != nil {
				return fmt.Errorf("stored IPv6 ULA prefix (meta %s): %w", metaULAPrefix, err)
			}
			return nil
		case errors.Is(err, state.ErrNotFound):
			if ula, err = newULA(a.cfg.Rand); err != nil {
				return err
			}
			return state.PutMeta(txn, metaULAPrefix, ula.String())
		default:
			return err
		}
	})
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("IPv6 ULA prefix: %w", err)
	}
	return ula, nil
}

// DefaultAddressSpaces returns the names of the local and global address
// spaces.
func (a *Allocator) DefaultAddressSpaces() (local, global string) {
	return a.cfg.LocalSpace, a.cfg.GlobalSpace
}

// ULA returns the host's unique local IPv6 /48, which dynamic IPv6 pools come
// from.
func (a *Allocator) ULA() netip.Prefix { return a.ula }

// PoolRequest is Docker's RequestPool call.
type PoolRequest struct {
	AddressSpace string            // "" means the local space
	Pool         string            // --subnet, CIDR; "" for a dynamic pool
	SubPool      string            // --ip-range, CIDR inside Pool
	Options      map[string]string // --ipam-opt; unknown options are ignored
	V6           bool              // the family of a dynamic pool; must match Pool
}

// PoolResponse is the reply to RequestPool.
type PoolResponse struct {
	PoolID string
	Pool   netip.Prefix
	Data   map[string]string // always empty: Docker then asks for the gateway
}

// poolRequest is a validated PoolRequest.
type poolRequest struct {
	space string
	pool  netip.Prefix // invalid for a dynamic pool
	rng   netip.Prefix // invalid when no SubPool was given
	v6    bool
	key   string
}

func (a *Allocator) parsePoolRequest(req PoolRequest) (poolRequest, error) {
	var r poolRequest
	var err error
	if r.space, err = a.space(req.AddressSpace); err != nil {
		return r, err
	}
	r.v6 = req.V6
	family := func(v6 bool) string {
		if v6 {
			return "IPv6"
		}
		return "IPv4"
	}
	if req.Pool == "" {
		if req.SubPool != "" {
			return r, fmt.Errorf("IP range %q without a subnet: %w: pass --subnet along with --ip-range", req.SubPool, ErrBadRequest)
		}
	} else {
		if r.pool, err = parsePrefix("subnet", req.Pool); err != nil {
			return r, err
		}
		if is6 := r.pool.Addr().Is6(); is6 != req.V6 {
			return r, fmt.Errorf("subnet %s: %w: it is %s but Docker asked for an %s pool; give each family its own --subnet",
				r.pool, ErrBadRequest, family(is6), family(req.V6))
		}
		if req.SubPool != "" {
			if r.rng, err = parsePrefix("IP range", req.SubPool); err != nil {
				return r, err
			}
			if r.rng.Bits() < r.pool.Bits() || !r.pool.Contains(r.rng.Addr()) {
				return r, fmt.Errorf("IP range %s: %w: it is not inside subnet %s; pick an --ip-range inside --subnet",
					r.rng, ErrBadRequest, r.pool)
			}
			if r.rng == r.pool {
				r.rng = netip.Prefix{}
			}
		}
	}
	r.key = requestKey(r, req.Options)
	return r, nil
}

// space maps a requested address space to one of ours.
func (a *Allocator) space(s string) (string, error) {
	switch s {
	case "", a.cfg.LocalSpace:
		return a.cfg.LocalSpace, nil
	case a.cfg.GlobalSpace:
		return a.cfg.GlobalSpace, nil
	}
	return "", fmt.Errorf("address space %q: %w: use %s (the default) or %s",
		s, ErrUnknownAddressSpace, a.cfg.LocalSpace, a.cfg.GlobalSpace)
}

// requestKey is the canonical form of a pool request: equal keys mean
// requests Docker would consider the same.
func requestKey(r poolRequest, options map[string]string) string {
	k := struct {
		Space   string            `json:"space"`
		Pool    string            `json:"pool,omitempty"`
		SubPool string            `json:"subpool,omitempty"`
		Options map[string]string `json:"options,omitempty"` // marshalled sorted by key
		V6      bool              `json:"v6"`
	}{Space: r.space, V6: r.v6}
	if r.pool.IsValid() {
		k.Pool = r.pool.String()
	}
	if r.rng.IsValid() {
		k.SubPool = r.rng.String()
	}
	if len(options) > 0 {
		k.Options = maps.Clone(options)
	}
	b, err := json.Marshal(k)
	if err != nil {
		panic(err) // strings and a bool always marshal
	}
	return string(b)
}

// RequestPool allocates a pool, or, for an explicit subnet, returns the
// identical request's pool if it is still unused (see the package
// documentation).
func (a *Allocator) RequestPool(req PoolRequest) (PoolResponse, error) {
	r, err := a.parsePoolRequest(req)
	if err != nil {
		return PoolResponse{}, fmt.Errorf("request pool: %w", err)
	}
	var p *state.Pool
	err = a.store.Write(func(txn *memdb.Txn) error {
		var err error
		p, err = a.requestPoolTxn(txn, r)
		return err
	})
	if err != nil {
		return PoolResponse{}, fmt.Errorf("request pool: %w", err)
	}
	return PoolResponse{PoolID: p.ID, Pool: p.Prefix, Data: map[string]string{}}, nil
}

func (a *Allocator) requestPoolTxn(txn *memdb.Txn, r poolRequest) (*state.Pool, error) {
	var same []*state.Pool
	if r.pool.IsValid() { // dynamic requests always get a new pool: see doc.go
		var err error
		if same, err = state.FindPoolByRequest(txn, r.key); err != nil {
			return nil, err
		}
	}
	for _, p := range same {
		used, err := poolInUse(txn, p)
		if err != nil {
			return nil, err
		}
		if !used {
			return p, nil
		}
	}

	existing, err := state.ListPoolsBySpace(txn, r.space)
	if err != nil {
		return nil, err
	}
	taken := make([]netip.Prefix, 0, len(existing))
	for _, p := range existing {
		taken = append(taken, p.Prefix)
	}

	prefix, rng := r.pool, r.rng
	switch {
	case prefix.IsValid():
		for _, p := range existing {
			if p.Prefix.Overlaps(prefix) {
				return nil, fmt.Errorf("subnet %s: %w %s (pool %s in address space %s): choose a --subnet that overlaps no other membrane network",
					prefix, ErrPoolOverlap, p.Prefix, p.ID, r.space)
			}
		}
	case r.v6:
		var ok bool
		if prefix, ok = nextFreePrefix(a.ula, a.cfg.IPv6PoolBits, taken); !ok {
			return nil, fmt.Errorf("IPv6 prefix %s: %w: every /%d of it is in use; pass --subnet",
				a.ula, ErrNoFreePool, a.cfg.IPv6PoolBits)
		}
	default:
		routes, err := a.hostRoutes()
		if err != nil {
			return nil, err
		}
		var ok bool
		if prefix, ok = nextFreePrefix(a.cfg.IPv4Range, a.cfg.IPv4PoolBits, append(taken, routes...)); !ok {
			return nil, fmt.Errorf("IPv4 range %s: %w: every /%d of it overlaps a pool or a route of the host; pass --subnet or start the daemon with a different --ipv4-range",
				a.cfg.IPv4Range, ErrNoFreePool, a.cfg.IPv4PoolBits)
		}
	}
	if !rng.IsValid() {
		rng = prefix
	}

	id, err := nextPoolID(txn, r.space, prefix)
	if err != nil {
		return nil, err
	}
	p := &state.Pool{
		ID:           id,
		AddressSpace: r.space,
		Prefix:       prefix,
		Range:        rng,
		V6:           prefix.Addr().Is6(),
		RequestKey:   r.key,
		Next:         rng.Addr(),
		Created:      a.now(),
	}
	if err := state.PutPool(txn, p); err != nil {
		return nil, err
	}
	return p, nil
}

// hostRoutes returns the host's IPv4 routes that dynamic pools must avoid.
func (a *Allocator) hostRoutes() ([]netip.Prefix, error) {
	if a.cfg.HostRoutes == nil {
		return nil, nil
	}
	all, err := a.cfg.HostRoutes()
	if err != nil {
		return nil, fmt.Errorf("host routes: %w", err)
	}
	var out []netip.Prefix
	for _, p := range all {
		if !p.IsValid() || !p.Addr().Unmap().Is4() {
			continue
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), min(p.Bits(), 32)).Masked()
		if p.Bits() == 0 {
			continue // a default route overlaps everything
		}
		out = append(out, p)
	}
	return out, nil
}

// poolInUse reports whether a network uses the pool's prefix or an address
// is allocated in it.
func poolInUse(txn *memdb.Txn, p *state.Pool) (bool, error) {
	addrs, err := state.ListAddressesByPool(txn, p.ID)
	if err != nil {
		return false, err
	}
	if len(addrs) > 0 {
		return true, nil
	}
	nets, err := state.ListNetworks(txn)
	if err != nil {
		return false, err
	}
	for _, n := range nets {
		for _, s := range []*state.Subnet{n.IPv4, n.IPv6} {
			if s != nil && s.Pool.Masked() == p.Prefix {
				return true, nil
			}
		}
	}
	return false, nil
}

// nextPoolID returns a new pool ID. The per-host sequence number keeps IDs
// unique even when a prefix is released and allocated again.
func nextPoolID(txn *memdb.Txn, space string, prefix netip.Prefix) (string, error) {
	var seq uint64
	v, err := state.GetMeta(txn, metaPoolSeq)
	switch {
	case err == nil:
		if seq, err = strconv.ParseUint(v, 10, 64); err != nil {
			return "", fmt.Errorf("pool sequence (meta %s) %q: %w", metaPoolSeq, v, err)
		}
	case !errors.Is(err, state.ErrNotFound):
		return "", err
	}
	seq++
	if err := state.PutMeta(txn, metaPoolSeq, strconv.FormatUint(seq, 10)); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s/%s#%d", space, prefix, seq), nil
}

// ReleasePool releases a pool and every address still allocated in it.
// Releasing an unknown pool succeeds.
func (a *Allocator) ReleasePool(poolID string) error {
	err := a.store.Write(func(txn *memdb.Txn) error {
		if _, err := state.GetPool(txn, poolID); err != nil {
			if errors.Is(err, state.ErrNotFound) {
				return nil
			}
			return err
		}
		if _, err := state.DeleteAddressesByPool(txn, poolID); err != nil {
			return err
		}
		return state.DeletePool(txn, poolID)
	})
	if err != nil {
		return fmt.Errorf("release pool %q: %w", poolID, err)
	}
	return nil
}

func (a *Allocator) now() time.Time {
	return a.cfg.Now().UTC().Round(0) // no monotonic reading: stored values survive a checkpoint unchanged
}
