package ipam

import (
	"errors"
	"fmt"
	"net/netip"

	memdb "github.com/hashicorp/go-memdb"

	"github.com/membrane-net/membrane/state"
)

// Options Docker passes to RequestAddress that this package reads.
const (
	// OptionRequestAddressType is the option key that marks a gateway
	// request (libnetwork ipamapi.RequestAddressType).
	OptionRequestAddressType = "RequestAddressType"
	// RequestAddressTypeGateway is its value for the gateway
	// (libnetwork netlabel.Gateway).
	RequestAddressTypeGateway = "com.docker.network.gateway"
)

// RequestAddress allocates an address in a pool and returns it with the
// pool's prefix length. address is a specific address ("" for any free one);
// options may mark the request as the gateway's.
func (a *Allocator) RequestAddress(poolID, address string, options map[string]string) (netip.Prefix, error) {
	gateway := options[OptionRequestAddressType] == RequestAddressTypeGateway
	var want netip.Addr
	if address != "" {
		var err error
		if want, err = parseAddr(address); err != nil {
			return netip.Prefix{}, fmt.Errorf("allocate address in pool %q: %w", poolID, err)
		}
	}
	kind := state.AddressKindEndpoint
	switch {
	case gateway:
		kind = state.AddressKindGateway
	case want.IsValid() && len(options) == 0:
		// Docker reserves --aux-address with no options; endpoints
		// always carry some (endpoint name, MAC address).
		kind = state.AddressKindAux
	}

	var got netip.Addr
	var bits int
	err := a.store.Write(func(txn *memdb.Txn) error {
		p, err := state.GetPool(txn, poolID)
		if errors.Is(err, state.ErrNotFound) {
			return fmt.Errorf("allocate address in pool %q: %w: membrane has no record of it (was its state directory lost?); recreate the network", poolID, ErrNoSuchPool)
		}
		if err != nil {
			return err
		}
		bits = p.Prefix.Bits()
		switch {
		case want.IsValid():
			got, err = allocateSpecific(txn, p, want, kind)
		case gateway:
			got, err = allocateGateway(txn, p)
		default:
			got, err = allocateNext(txn, p)
		}
		if err != nil {
			return err
		}
		return state.PutAddress(txn, &state.Address{
			Key:    state.AddressKey(p.ID, got),
			PoolID: p.ID,
			Addr:   got,
			Kind:   kind,
		})
	})
	if err != nil {
		if Classify(err) == KindInternal {
			// State or checkpoint failure: the request itself was fine.
			err = fmt.Errorf("allocate address in pool %q: %w", poolID, err)
		}
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(got, bits), nil
}

func allocateSpecific(txn *memdb.Txn, p *state.Pool, want netip.Addr, kind string) (netip.Addr, error) {
	if !p.Prefix.Contains(want) {
		return netip.Addr{}, fmt.Errorf("allocate address %s in pool %s: %w: the address is outside the pool; choose an address inside the network's subnet",
			want, p.Prefix, ErrBadRequest)
	}
	if what, r := reserved(p.Prefix, want); r {
		return netip.Addr{}, fmt.Errorf("allocate address %s in pool %s: %w: it is the pool's %s, which is never assigned; choose another address",
			want, p.Prefix, ErrBadRequest, what)
	}
	if err := checkFree(txn, p, want); err != nil {
		hint := "choose another --ip, or leave it out to get a free one"
		switch kind {
		case state.AddressKindGateway:
			hint = "choose another --gateway"
		case state.AddressKindAux:
			hint = "choose another --aux-address"
		}
		return netip.Addr{}, fmt.Errorf("allocate address %s in pool %s: %w: %s", want, p.Prefix, err, hint)
	}
	return want, nil
}

func allocateGateway(txn *memdb.Txn, p *state.Pool) (netip.Addr, error) {
	gw, ok := firstUsable(p.Prefix)
	if !ok {
		return netip.Addr{}, fmt.Errorf("allocate gateway in pool %s: %w: the pool has no usable address; use a larger --subnet",
			p.Prefix, ErrPoolExhausted)
	}
	if err := checkFree(txn, p, gw); err != nil {
		return netip.Addr{}, fmt.Errorf("allocate gateway %s in pool %s: %w: pass --gateway with a free address",
			gw, p.Prefix, err)
	}
	return gw, nil
}

// allocateNext takes the next free address of the pool's range, searching
// from the cursor and wrapping, and moves the cursor past it.
func allocateNext(txn *memdb.Txn, p *state.Pool) (netip.Addr, error) {
	rng := p.Range
	if !rng.IsValid() {
		rng = p.Prefix
	}
	start := p.Next
	if !start.IsValid() || !rng.Contains(start) {
		start = rng.Addr()
	}
	// Ends within len(allocated)+3 steps unless the range is full, and a
	// full range is small.
	for a := start; ; {
		if _, r := reserved(p.Prefix, a); !r {
			err := checkFree(txn, p, a)
			if err == nil {
				c := p.Copy()
				c.Next = a.Next() // may leave the range; wraps on next use
				if err := state.PutPool(txn, c); err != nil {
					return netip.Addr{}, err
				}
				return a, nil
			}
			if !errors.Is(err, ErrAddressInUse) {
				return netip.Addr{}, err
			}
		}
		if a = a.Next(); !a.IsValid() || !rng.Contains(a) {
			a = rng.Addr()
		}
		if a == start {
			break
		}
	}
	where := p.Prefix.String()
	if rng != p.Prefix {
		where = fmt.Sprintf("range %s of pool %s", rng, p.Prefix)
	}
	return netip.Addr{}, fmt.Errorf("allocate address in pool %s: %w: every usable address of %s is allocated; release some, or recreate the network with a larger --subnet or --ip-range",
		p.Prefix, ErrPoolExhausted, where)
}

// checkFree returns an error wrapping ErrAddressInUse if a is allocated in p.
func checkFree(txn *memdb.Txn, p *state.Pool, a netip.Addr) error {
	cur, err := state.GetAddress(txn, p.ID, a)
	switch {
	case errors.Is(err, state.ErrNotFound):
		return nil
	case err != nil:
		return err
	}
	return fmt.Errorf("%w (held as %s address)", ErrAddressInUse, cur.Kind)
}

// ReleaseAddress frees an address. Releasing an unknown pool or an address
// that is not allocated succeeds.
func (a *Allocator) ReleaseAddress(poolID, address string) error {
	addr, err := parseAddr(address)
	if err != nil {
		return fmt.Errorf("release address in pool %q: %w", poolID, err)
	}
	err = a.store.Write(func(txn *memdb.Txn) error {
		err := state.DeleteAddress(txn, poolID, addr)
		if errors.Is(err, state.ErrNotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("release address %s in pool %q: %w", addr, poolID, err)
	}
	return nil
}
