package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/vishvananda/netlink"

	"github.com/membrane-net/membrane/datapath"
	"github.com/membrane-net/membrane/driver"
	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/policy"
	"github.com/membrane-net/membrane/state"
)

// metaPolicyRevision is the meta key of the policy revision: it grows by one
// with every import or delete.
const metaPolicyRevision = "policy.revision"

// controller turns state into datapath policy: it gives endpoints their
// identities as labels arrive from Docker, keeps the policy rules, and
// resolves both into the datapath's policy and ipcache maps. Every change
// goes through recompute, one at a time.
type controller struct {
	store  *state.Store
	dp     *datapath.Datapath
	nl     *netlink.Handle
	alloc  *labels.Allocator
	filter *labels.Filter
	log    *slog.Logger
	now    func() time.Time

	collectKick <-chan struct{} // endpoints went away: collect unused identities

	mu          sync.Mutex                             // serialises recompute and what must follow it
	applied     uint64                                 // policy revision the datapath enforces
	enforcement map[labels.Identity]policy.Enforcement // per identity, after the last sync
	lockdown    map[uint32]bool                        // identities in lockdown after the last sync
}

// status reports the applied policy revision and the identities in lockdown.
func (c *controller) status() (applied uint64, lockdown []uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.lockdown {
		lockdown = append(lockdown, id)
	}
	sort.Slice(lockdown, func(i, j int) bool { return lockdown[i] < lockdown[j] })
	return c.applied, lockdown
}

// enforcementOf reports how policy applies to an identity right now.
func (c *controller) enforcementOf(id uint32) (e policy.Enforcement, lockdown bool, applied uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.enforcement[labels.Identity(id)], c.lockdown[id], c.applied
}

// onLabels is the label watcher's callback: endpoints of containers whose
// labels are known now. Endpoints of other drivers are ignored.
func (c *controller) onLabels(ctx context.Context, eps []labels.EndpointLabels) error {
	c.mu.Lock()
	defer c.mu.Unlock()

	var changed []*state.Endpoint
	newIdentity := false
	err := c.store.Write(func(txn *memdb.Txn) error {
		for _, el := range eps {
			ep, err := state.GetEndpoint(txn, el.EndpointID)
			if errors.Is(err, state.ErrNotFound) {
				continue // not a membrane endpoint, or already gone
			}
			if err != nil {
				return err
			}
			l := c.filter.Apply(el.Labels)
			if ep.Identity != uint32(labels.IdentityInit) && ep.ContainerID == el.ContainerID &&
				ep.ContainerName == el.ContainerName && labels.Labels(ep.Labels).String() == l.String() {
				continue
			}
			before, err := state.GetIdentityByKey(txn, l.String())
			if err != nil && !errors.Is(err, state.ErrNotFound) {
				return err
			}
			id, err := c.alloc.AllocateTxn(txn, l)
			if err != nil {
				return fmt.Errorf("identity of endpoint %s: %w", ep.ID, err)
			}
			newIdentity = newIdentity || before == nil
			next := ep.Copy()
			next.ContainerID = el.ContainerID
			next.ContainerName = el.ContainerName
			next.Labels = l
			if next.Identity != uint32(id) {
				next.Identity = uint32(id)
				next.IdentitySince = c.now()
			}
			if err := state.PutEndpoint(txn, next); err != nil {
				return err
			}
			changed = append(changed, next)
		}
		_, err := c.alloc.CollectTxn(txn, c.policyCIDRsTxn(txn))
		return err
	})
	if err != nil {
		return fmt.Errorf("assign identities: %w", err)
	}
	if len(changed) == 0 {
		return nil
	}
	// The new identity's policy goes in before any endpoint carries it, so
	// that an endpoint never runs under an identity the maps do not know.
	if newIdentity {
		if err := c.recomputeLocked(); err != nil {
			return err
		}
	}
	var errs []error
	for _, ep := range changed {
		if err := c.dp.SetIdentity(driver.DatapathEndpoint(ep)); err != nil {
			errs = append(errs, fmt.Errorf("set identity of endpoint %s: %w", ep.ID, err))
			continue
		}
		c.log.Info("endpoint identity", logKeyEndpoint, ep.ID, logKeyIdentity, ep.Identity, logKeyLabels, labels.Labels(ep.Labels).String())
	}
	return errors.Join(errs...)
}

// policyCIDRsTxn is the set of prefixes the stored rules name.
func (c *controller) policyCIDRsTxn(txn *memdb.Txn) map[netip.Prefix]bool {
	rules, err := rulesTxn(txn)
	keep := map[netip.Prefix]bool{}
	if err != nil {
		return keep
	}
	for _, p := range policy.CIDRs(rules) {
		keep[p] = true
	}
	return keep
}

// rulesTxn decodes the stored rules. They were validated on import.
func rulesTxn(txn *memdb.Txn) ([]policy.Rule, error) {
	rows, err := state.ListPolicies(txn)
	if err != nil {
		return nil, err
	}
	var rules []policy.Rule
	for _, row := range rows {
		rs, err := policy.Parse(row.Rule)
		if err != nil {
			return nil, fmt.Errorf("stored policy %s: %w", row.Name, err)
		}
		rules = append(rules, rs...)
	}
	return rules, nil
}

// ImportPolicy validates data (JSON or YAML rules) as a whole, stores it
// (a rule replaces the stored rule with the same name) and applies it. It
// returns the new policy revision.
func (c *controller) ImportPolicy(data []byte) (uint64, error) {
	rules, err := policy.Parse(data)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", errBadRequest, err)
	}
	type row struct {
		name string
		rule []byte
	}
	rows := make([]row, 0, len(rules))
	for _, r := range rules {
		canon, err := policy.Canonical(r)
		if err != nil {
			return 0, fmt.Errorf("import policy: %w", err)
		}
		rows = append(rows, row{name: policyName(r, canon), rule: canon})
	}
	return c.changePolicy(func(txn *memdb.Txn, rev uint64) error {
		for _, r := range rows {
			if err := state.PutPolicy(txn, &state.Policy{Name: r.name, Rule: r.rule, Revision: rev, Imported: c.now()}); err != nil {
				return err
			}
		}
		return nil
	})
}

// policyName is the rule's name label, or a name derived from its content
// so that importing the same unnamed rule twice stores it once.
func policyName(r policy.Rule, canon []byte) string {
	if n := policy.Name(r); n != "" {
		return n
	}
	sum := sha256.Sum256(canon)
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// DeletePolicy removes the named rule, or every rule when all is set.
func (c *controller) DeletePolicy(name string, all bool) (uint64, error) {
	return c.changePolicy(func(txn *memdb.Txn, _ uint64) error {
		rows, err := state.ListPolicies(txn)
		if err != nil {
			return err
		}
		found := false
		for _, r := range rows {
			if all || r.Name == name {
				found = true
				if err := state.DeletePolicy(txn, r.Name); err != nil {
					return err
				}
			}
		}
		if !found && !all {
			return fmt.Errorf("%w: no policy rule named %q (see `membrane policy get`)", state.ErrNotFound, name)
		}
		return nil
	})
}

// changePolicy runs change under a new policy revision, allocates the CIDR
// identities the rules now name, collects unused ones, and applies the
// result before returning the revision.
func (c *controller) changePolicy(change func(txn *memdb.Txn, rev uint64) error) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var rev uint64
	err := c.store.Write(func(txn *memdb.Txn) error {
		cur, err := policyRevisionTxn(txn)
		if err != nil {
			return err
		}
		rev = cur + 1
		if err := change(txn, rev); err != nil {
			return err
		}
		if err := state.PutMeta(txn, metaPolicyRevision, fmt.Sprint(rev)); err != nil {
			return err
		}
		keep := c.policyCIDRsTxn(txn)
		for p := range keep {
			if _, err := c.alloc.AllocateCIDRTxn(txn, p); err != nil {
				return fmt.Errorf("identity of CIDR %s: %w", p, err)
			}
		}
		_, err = c.alloc.CollectTxn(txn, keep)
		return err
	})
	if err != nil {
		return 0, err
	}
	if err := c.recomputeLocked(); err != nil {
		return 0, err
	}
	return rev, nil
}

func policyRevisionTxn(txn *memdb.Txn) (uint64, error) {
	v, err := state.GetMeta(txn, metaPolicyRevision)
	if errors.Is(err, state.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var rev uint64
	if _, err := fmt.Sscan(v, &rev); err != nil {
		return 0, fmt.Errorf("stored policy revision %q: %w", v, err)
	}
	return rev, nil
}

// Recompute resolves state into the datapath's maps.
func (c *controller) Recompute() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.recomputeLocked()
}

func (c *controller) recomputeLocked() error {
	txn := c.store.Read()
	rev, err := policyRevisionTxn(txn)
	if err != nil {
		return fmt.Errorf("resolve policy: %w", err)
	}
	rules, err := rulesTxn(txn)
	if err != nil {
		return fmt.Errorf("resolve policy: %w", err)
	}
	ids, err := state.ListIdentities(txn)
	if err != nil {
		return fmt.Errorf("resolve policy: %w", err)
	}
	in := policy.Input{
		Rules:      rules,
		Identities: map[labels.Identity]labels.Labels{},
		CIDRs:      map[netip.Prefix]labels.Identity{},
	}
	for _, id := range ids {
		if labels.Identity(id.ID) < labels.MinCIDRIdentity {
			in.Identities[labels.Identity(id.ID)] = id.Labels
		} else if p, ok := labels.CIDROf(id.Labels); ok {
			in.CIDRs[p] = labels.Identity(id.ID)
		}
	}
	res, err := policy.Resolve(in)
	if err != nil {
		return fmt.Errorf("resolve policy: %w", err)
	}
	ipcache, err := c.ipcache(txn, in.CIDRs)
	if err != nil {
		return err
	}
	// Addresses first: a policy entry for a CIDR identity is useless until
	// the ipcache maps addresses to it.
	if err := c.dp.SyncIPCache(ipcache); err != nil {
		return fmt.Errorf("sync ipcache: %w", err)
	}
	st := datapath.PolicyState{
		Entries:     make(map[datapath.PolicyKey]datapath.Verdict, len(res.Entries)),
		Enforcement: make(map[uint32]datapath.Enforcement, len(res.Enforcement)),
	}
	for k, v := range res.Entries {
		st.Entries[datapath.PolicyKey{Subject: uint32(k.Subject), Peer: uint32(k.Peer), Port: k.Port, Proto: k.Proto, Dir: uint8(k.Dir)}] = datapath.Verdict(v)
	}
	for id, e := range res.Enforcement {
		st.Enforcement[uint32(id)] = datapath.Enforcement{Ingress: e.Ingress, Egress: e.Egress}
	}
	sync, err := c.dp.SyncPolicy(st)
	if err != nil {
		return fmt.Errorf("sync policy: %w", err)
	}
	if len(sync.Lockdown) > 0 {
		c.log.Error("policy map full: identities locked down (all their traffic denied)", logKeyIdentities, sync.Lockdown)
	}
	c.lockdown = make(map[uint32]bool, len(sync.Lockdown))
	for _, id := range sync.Lockdown {
		c.lockdown[id] = true
	}
	c.enforcement = res.Enforcement
	c.applied = rev
	c.log.Info("policy applied", logKeyRevision, rev, logKeyRules, len(rules),
		"added", sync.Added, "updated", sync.Updated, "removed", sync.Removed)
	return nil
}

// ipcache maps every address that is not a membrane endpoint to an
// identity: the host's own addresses, the CIDRs policy names, and the rest
// of the world.
func (c *controller) ipcache(txn *memdb.Txn, cidrs map[netip.Prefix]labels.Identity) (map[netip.Prefix]uint32, error) {
	out := map[netip.Prefix]uint32{
		netip.MustParsePrefix("0.0.0.0/0"): uint32(labels.IdentityWorld),
		netip.MustParsePrefix("::/0"):      uint32(labels.IdentityWorld),
	}
	for p, id := range cidrs {
		out[p] = uint32(id)
	}
	addrs, err := c.nl.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.IsLinkLocalUnicast() {
			continue
		}
		ip = ip.Unmap()
		out[netip.PrefixFrom(ip, ip.BitLen())] = uint32(labels.IdentityHost)
	}
	return out, nil
}

// collectLoop collects identities whenever endpoints went away.
func (c *controller) collectLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.collectKick:
			if err := c.collect(); err != nil {
				c.log.Warn("collect unused identities", logKeyError, err.Error())
			}
		}
	}
}

// collect deletes identities no endpoint uses and no policy names, and
// takes their entries out of the policy map.
func (c *controller) collect() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var removed []labels.Identity
	err := c.store.Write(func(txn *memdb.Txn) error {
		var err error
		removed, err = c.alloc.CollectTxn(txn, c.policyCIDRsTxn(txn))
		return err
	})
	if err != nil || len(removed) == 0 {
		return err
	}
	return c.recomputeLocked()
}
