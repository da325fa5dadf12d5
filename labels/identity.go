package labels

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"strconv"
	"strings"
	"time"

	memdb "github.com/hashicorp/go-memdb"

	"github.com/membrane-net/membrane/state"
)

var (
	// ErrIdentitiesExhausted means every number of an allocation range is
	// held by an identity.
	ErrIdentitiesExhausted = errors.New("identities exhausted")
	// ErrReservedLabel means a label key starts with [CIDRKeyPrefix], which
	// only CIDR identities may use.
	ErrReservedLabel = errors.New("reserved label key")
	// ErrLabelCollision means the stored identity found under a label
	// set's canonical form holds other labels: state is inconsistent.
	ErrLabelCollision = errors.New("label sets collide")
)

// Meta keys (state.PutMeta) of the allocation cursors: the number last
// handed out in each range, in decimal.
const (
	metaUserCursor = "labels.identity-cursor"
	metaCIDRCursor = "labels.cidr-identity-cursor"
)

// idRange is an inclusive range of identity numbers.
type idRange struct {
	min, max Identity
	cursor   string // meta key of its cursor
}

func (r idRange) has(id Identity) bool { return id >= r.min && id <= r.max }

// Allocator hands out identities and keeps them in state, so that they
// survive restarts: one per distinct set of identity labels, one per CIDR
// named in policy.
//
// # Numbering
//
// A label set's identity is found by its canonical form ([Labels.String],
// stored as state.Identity.Key), so equal sets always get the same number.
// The empty set (a container without identity labels) is a set like any
// other: all such containers share one identity of their own, never a
// reserved one.
//
// A new endpoint identity gets a number from [MinUserIdentity] up to
// [MinCIDRIdentity]-1, a new CIDR identity one from [MinCIDRIdentity] to
// [MaxCIDRIdentity]. Within its range the number is the lowest free one
// above the number last handed out (a cursor kept in state), wrapping to
// the bottom of the range once the top is reached. A number freed by
// [Allocator.CollectTxn] is therefore not handed out again until the range
// has been gone through once: conntrack entries, monitor output or a
// peer's cached view that still name it do not silently start meaning a
// different set of labels.
//
// Every method that takes a transaction works inside the caller's write
// transaction and composes with other state changes; memdb serializes
// write transactions, so the Allocator needs no lock of its own.
type Allocator struct {
	store *state.Store
	now   func() time.Time
	user  idRange
	cidr  idRange
}

// NewAllocator returns an allocator over store. now stamps new identities;
// nil means time.Now.
func NewAllocator(store *state.Store, now func() time.Time) *Allocator {
	if now == nil {
		now = time.Now
	}
	return &Allocator{
		store: store,
		now:   now,
		user:  idRange{min: MinUserIdentity, max: MinCIDRIdentity - 1, cursor: metaUserCursor},
		cidr:  idRange{min: MinCIDRIdentity, max: MaxCIDRIdentity, cursor: metaCIDRCursor},
	}
}

// AllocateTxn returns the identity of the label set l, allocating it if no
// identity has l yet. Keys starting with [CIDRKeyPrefix] are refused with
// ErrReservedLabel (a [Filter] never lets them through).
func (a *Allocator) AllocateTxn(txn *memdb.Txn, l Labels) (Identity, error) {
	for k := range l {
		if strings.HasPrefix(k, CIDRKeyPrefix) {
			return 0, fmt.Errorf("identity of labels %q: key %q: %w", l.String(), k, ErrReservedLabel)
		}
	}
	return a.allocate(txn, a.user, l)
}

// AllocateCIDRTxn returns the identity of the prefix p (masked, so
// 10.1.2.3/8 and 10.0.0.0/8 are one), allocating it if needed. Its labels
// are {"cidr:<masked prefix>": ""}.
func (a *Allocator) AllocateCIDRTxn(txn *memdb.Txn, p netip.Prefix) (Identity, error) {
	if !p.IsValid() {
		return 0, fmt.Errorf("identity of CIDR %s: invalid prefix", p)
	}
	return a.allocate(txn, a.cidr, cidrLabels(p))
}

// CollectTxn deletes the endpoint identities that no endpoint holds and the
// CIDR identities whose prefix is not in keepCIDRs (compared masked). It
// returns the numbers it deleted, lowest first. Call it once the endpoints
// of the transaction hold the identities they are to keep: an identity
// allocated in the same transaction but given to no endpoint is collected.
func (a *Allocator) CollectTxn(txn *memdb.Txn, keepCIDRs map[netip.Prefix]bool) ([]Identity, error) {
	keep := make(map[netip.Prefix]bool, len(keepCIDRs))
	for p, ok := range keepCIDRs {
		if ok && p.IsValid() {
			keep[p.Masked()] = true
		}
	}
	ids, err := state.ListIdentities(txn)
	if err != nil {
		return nil, fmt.Errorf("collect identities: %w", err)
	}
	var deleted []Identity
	for _, id := range ids {
		n := Identity(id.ID)
		switch {
		case a.user.has(n):
			used, err := state.IdentityInUse(txn, id.ID)
			if err != nil {
				return nil, fmt.Errorf("collect identities: %w", err)
			}
			if used {
				continue
			}
		case a.cidr.has(n):
			if p, ok := CIDROf(id.Labels); ok && keep[p] {
				continue
			}
		default:
			continue // not the allocator's
		}
		if err := state.DeleteIdentity(txn, id.ID); err != nil {
			return nil, fmt.Errorf("collect identities: %w", err)
		}
		deleted = append(deleted, n)
	}
	return deleted, nil
}

// Allocate is AllocateTxn in a write transaction of its own.
func (a *Allocator) Allocate(l Labels) (Identity, error) {
	var id Identity
	err := a.store.Write(func(txn *memdb.Txn) error {
		var err error
		id, err = a.AllocateTxn(txn, l)
		return err
	})
	return id, err
}

// Collect is CollectTxn in a write transaction of its own.
func (a *Allocator) Collect(keepCIDRs map[netip.Prefix]bool) ([]Identity, error) {
	var deleted []Identity
	err := a.store.Write(func(txn *memdb.Txn) error {
		var err error
		deleted, err = a.CollectTxn(txn, keepCIDRs)
		return err
	})
	return deleted, err
}

// CIDROf returns the prefix of a CIDR identity's labels, and false for any
// other label set.
func CIDROf(l map[string]string) (netip.Prefix, bool) {
	if len(l) != 1 {
		return netip.Prefix{}, false
	}
	for k, v := range l {
		s, ok := strings.CutPrefix(k, CIDRKeyPrefix)
		if !ok || v != "" {
			return netip.Prefix{}, false
		}
		p, err := netip.ParsePrefix(s)
		if err != nil || p != p.Masked() {
			return netip.Prefix{}, false
		}
		return p, true
	}
	return netip.Prefix{}, false
}

func cidrLabels(p netip.Prefix) Labels {
	return Labels{CIDRKeyPrefix + p.Masked().String(): ""}
}

// allocate returns the identity of l, allocating it in r if needed.
func (a *Allocator) allocate(txn *memdb.Txn, r idRange, l Labels) (Identity, error) {
	key := l.String()
	have, err := state.GetIdentityByKey(txn, key)
	switch {
	case err == nil:
		if !r.has(Identity(have.ID)) || !maps.Equal(have.Labels, l) {
			return 0, fmt.Errorf("identity of labels %v: identity %d, of labels %v, has the same canonical form %q: %w",
				map[string]string(l), have.ID, have.Labels, key, ErrLabelCollision)
		}
		return Identity(have.ID), nil
	case !errors.Is(err, state.ErrNotFound):
		return 0, fmt.Errorf("identity of labels %q: %w", key, err)
	}

	n, err := a.next(txn, r)
	if err != nil {
		return 0, fmt.Errorf("identity of labels %q: %w", key, err)
	}
	id := &state.Identity{ID: uint32(n), Key: key, Labels: make(map[string]string, len(l)), Created: a.now()}
	maps.Copy(id.Labels, l)
	if err := state.PutIdentity(txn, id); err != nil {
		return 0, err
	}
	if err := state.PutMeta(txn, r.cursor, strconv.FormatUint(uint64(n), 10)); err != nil {
		return 0, fmt.Errorf("identity cursor: %w", err)
	}
	return n, nil
}

// next returns the lowest free number of r above its cursor, wrapping
// around to the bottom of r.
func (a *Allocator) next(txn *memdb.Txn, r idRange) (Identity, error) {
	start := r.min
	v, err := state.GetMeta(txn, r.cursor)
	switch {
	case err == nil:
		c, perr := strconv.ParseUint(v, 10, 32)
		if perr != nil {
			return 0, fmt.Errorf("identity cursor %s=%q: %w", r.cursor, v, perr)
		}
		if cur := Identity(c); cur >= r.min && cur < r.max {
			start = cur + 1
		}
	case !errors.Is(err, state.ErrNotFound):
		return 0, fmt.Errorf("identity cursor: %w", err)
	}
	n, ok, err := state.FreeIdentityNumber(txn, uint32(start), uint32(r.max))
	if err == nil && !ok && start > r.min {
		n, ok, err = state.FreeIdentityNumber(txn, uint32(r.min), uint32(start-1))
	}
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("every number from %d to %d is in use: %w", r.min, r.max, ErrIdentitiesExhausted)
	}
	return Identity(n), nil
}
