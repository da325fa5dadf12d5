package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"runtime"
	"sort"
	"strconv"
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
// goes through it, one at a time.
//
// The stored rules are mirrored in memory, parsed and resolved one at a
// time into a policy.Index, so that a change costs what it changes: an
// import parses, stores and resolves the imported rules only, and the
// datapath is given the keys that changed (ApplyPolicy). A full resolve
// and SyncPolicy (recompute) happens at start, and whenever an
// incremental update failed halfway (the next change starts with one).
type controller struct {
	store  *state.Store
	dp     *datapath.Datapath
	nl     *netlink.Handle
	alloc  *labels.Allocator
	filter *labels.Filter
	log    *slog.Logger
	now    func() time.Time

	collectKick <-chan struct{} // endpoints went away: collect unused identities

	mu          sync.Mutex                             // serialises changes and what must follow them
	applied     uint64                                 // policy revision the datapath enforces
	enforcement map[labels.Identity]policy.Enforcement // per identity, after the last sync
	lockdown    map[uint32]bool                        // identities in lockdown after the last sync
	// pol mirrors the stored rules and what the datapath holds of them;
	// nil when they may differ (before the first recompute, after a
	// failed update).
	pol *policySet
}

// policySet is the controller's mirror of the stored rules: each parsed
// once and resolved into index, whose reported state the datapath holds.
// The rules themselves are not kept: the index's compiled form is what
// later changes need.
type policySet struct {
	index *policy.Index
	// The identities index resolves for, as stored.
	identities map[labels.Identity]labels.Labels
	cidrs      map[netip.Prefix]labels.Identity
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

// ruleCount returns the number of stored rules, as the controller's mirror
// of them counts it, and false when there is no mirror (see policySet).
func (c *controller) ruleCount() (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pol == nil {
		return 0, false
	}
	return c.pol.index.Len(), true
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
	if err := c.ensurePolicyLocked(); err != nil {
		return err
	}

	var changed []*state.Endpoint
	var collected []labels.Identity
	err := c.store.Write(func(txn *memdb.Txn) error {
		for _, el := range eps {
			next, err := c.labelEndpointTxn(txn, el)
			if err != nil {
				return err
			}
			if next != nil {
				changed = append(changed, next)
			}
		}
		var err error
		keep, _ := c.pol.cidrsAfter(nil)
		collected, err = c.alloc.CollectTxn(txn, keep)
		return err
	})
	if err != nil {
		return fmt.Errorf("assign identities: %w", err)
	}
	if len(changed) == 0 && len(collected) == 0 {
		return nil
	}
	// The new identities' policy goes in before any endpoint carries them,
	// so that an endpoint never runs under an identity the maps do not
	// know; the policy of the identities the endpoints leave goes once they
	// have left.
	if err := c.syncIdentitiesLocked(collected); err != nil {
		return err
	}
	var errs []error
	for _, ep := range changed {
		if err := c.dp.SetIdentity(driver.DatapathEndpoint(ep)); err != nil {
			errs = append(errs, fmt.Errorf("set identity of endpoint %s: %w", ep.ID, err))
			continue
		}
		c.log.Info("endpoint identity", logKeyEndpoint, ep.ID, logKeyIdentity, ep.Identity, logKeyLabels, labels.Labels(ep.Labels).String())
	}
	if len(collected) > 0 {
		errs = append(errs, c.syncIdentitiesLocked(nil))
	}
	return errors.Join(errs...)
}

// labelEndpointTxn gives an endpoint the identity of its labels. It returns
// the endpoint as changed, or nil when there is nothing to change.
func (c *controller) labelEndpointTxn(txn *memdb.Txn, el labels.EndpointLabels) (*state.Endpoint, error) {
	ep, err := state.GetEndpoint(txn, el.EndpointID)
	if errors.Is(err, state.ErrNotFound) {
		return nil, nil // not a membrane endpoint, or already gone
	}
	if err != nil {
		return nil, err
	}
	l := c.filter.Apply(el.Labels)
	if ep.Identity != uint32(labels.IdentityInit) && ep.ContainerID == el.ContainerID &&
		ep.ContainerName == el.ContainerName && labels.Labels(ep.Labels).String() == l.String() {
		return nil, nil
	}
	id, err := c.alloc.AllocateTxn(txn, l)
	if err != nil {
		return nil, fmt.Errorf("identity of endpoint %s: %w", ep.ID, err)
	}
	next := ep.Copy()
	next.ContainerID = el.ContainerID
	next.ContainerName = el.ContainerName
	next.Labels = l
	if next.Identity != uint32(id) {
		next.Identity = uint32(id)
		next.IdentitySince = c.now()
	}
	if err := state.PutEndpoint(txn, next); err != nil {
		return nil, err
	}
	return next, nil
}

// ImportPolicy validates data (JSON or YAML rules) as a whole, stores it
// (a rule replaces the stored rule with the same name) and applies it. It
// returns the new policy revision.
func (c *controller) ImportPolicy(data []byte) (uint64, error) {
	rules, compiled, err := policy.ParseCompiled(data)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", errBadRequest, err)
	}
	puts := encodeRules(rules)
	return c.changePolicy(puts, rules, compiled, func(txn *memdb.Txn, rev uint64) (*policyChange, error) {
		ch := &policyChange{puts: puts, rules: rules, compiled: compiled}
		now := c.now()
		for _, p := range ch.puts {
			row := &state.Policy{Name: p.name, Rule: p.canon, Revision: rev, Imported: now}
			if err := state.PutPolicy(txn, row); err != nil {
				return nil, err
			}
		}
		return ch, nil
	})
}

// minParallelEncode is the number of rules from which an import encodes
// them on every CPU.
const minParallelEncode = 1024

// encodeRules gives each rule its stored form and name.
func encodeRules(rules []policy.Rule) []policyPut {
	puts := make([]policyPut, len(rules))
	encode := func(from, to int) {
		for i := from; i < to; i++ {
			canon := policy.Encode(&rules[i]) // Parse returns rules checked and normalized
			puts[i] = policyPut{name: policyName(rules[i], canon), canon: canon, rule: rules[i]}
		}
	}
	if len(rules) < minParallelEncode {
		encode(0, len(rules))
		return puts
	}
	n := runtime.GOMAXPROCS(0)
	size := (len(rules) + n - 1) / n
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { encode(min(i*size, len(rules)), min((i+1)*size, len(rules))) })
	}
	wg.Wait()
	return puts
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
	return c.changePolicy(nil, nil, nil, func(txn *memdb.Txn, _ uint64) (*policyChange, error) {
		ch := &policyChange{}
		if !all {
			if err := state.DeletePolicy(txn, name); errors.Is(err, state.ErrNotFound) {
				return nil, fmt.Errorf("%w: no policy rule named %q (see `membrane policy get`)", state.ErrNotFound, name)
			} else if err != nil {
				return nil, err
			}
			ch.deletes = []string{name}
			return ch, nil
		}
		rows, err := state.ListPolicies(txn)
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			if err := state.DeletePolicy(txn, r.Name); err != nil {
				return nil, err
			}
			ch.deletes = append(ch.deletes, r.Name)
		}
		return ch, nil
	})
}

// policyChange is what one import or delete did to the stored rules.
type policyChange struct {
	puts     []policyPut
	rules    []policy.Rule     // the rules of puts, in order
	compiled []policy.Compiled // the rules of puts as Parse compiled them, if known
	deletes  []string
}

// policyPut is one rule imported: its name, stored form and parsed form.
type policyPut struct {
	name  string
	canon []byte
	rule  policy.Rule
}

// changePolicy runs change under a new policy revision, allocates the CIDR
// identities the rules now name, collects those no rule names any more,
// and applies the result before returning the revision. The rules to be
// imported (imports, parsed as rules, compiled) are resolved while the
// change is written.
func (c *controller) changePolicy(imports []policyPut, rules []policy.Rule, compiled []policy.Compiled, change func(txn *memdb.Txn, rev uint64) (*policyChange, error)) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.ensurePolicyLocked(); err != nil {
		return 0, err
	}
	var (
		rev uint64
		ch  *policyChange
		ids identityChange
	)
	// A large import that names no CIDR, and replaces no rule that named
	// one, changes no identity: its rules enter the index, and the
	// datapath is brought to them, while the store writes them. Should the
	// write fail, the datapath is brought back to what is stored; the
	// caller hears of the import only once both are done.
	indexAhead := len(imports) >= minPrepareAhead && !c.pol.cidrsConcern(imports, rules)
	var applyAhead func(policy.Delta) (datapath.PolicySync, error)
	if indexAhead {
		applyAhead = func(d policy.Delta) (datapath.PolicySync, error) { return c.writeDatapathLocked(d, false) }
	}
	ahead := c.pol.prepare(imports, compiled, applyAhead)
	err := c.store.Write(func(txn *memdb.Txn) error {
		cur, err := policyRevisionTxn(txn)
		if err != nil {
			return err
		}
		rev = cur + 1
		if ch, err = change(txn, rev); err != nil {
			return err
		}
		if err := state.PutMeta(txn, metaPolicyRevision, strconv.FormatUint(rev, 10)); err != nil {
			return err
		}
		if indexAhead {
			return nil // no CIDR to allocate nor collect; the index is not ours to read meanwhile
		}
		ids, err = c.cidrIdentitiesTxn(txn, ch)
		return err
	})
	res := ahead() // the index is ours again
	if err != nil {
		if res.indexed || res.broken {
			// The index, and perhaps the datapath, hold rules the store
			// refused: both start again from what is stored.
			if rerr := c.recomputeLocked(); rerr != nil {
				c.log.Error("policy not restored after a failed write: the next change recomputes it", "err", rerr)
			}
			return 0, err
		}
		for _, p := range res.preps {
			c.pol.index.Discard(p)
		}
		return 0, err
	}
	before := c.applied
	c.applied = rev
	switch {
	case res.indexed:
		err = res.applyErr
		if err == nil {
			c.appliedLocked(res.delta, res.sync, len(ch.puts))
		}
	case res.broken:
		// The index failed halfway through the rules (it cannot, for
		// rules that name no CIDR): start again from what is stored.
		c.pol = nil
		err = c.recomputeLocked()
	default:
		err = c.applyPolicyChangeLocked(ch, ids, res.preps)
	}
	if err != nil {
		c.applied = before
		c.pol = nil // the next change starts with a full recompute
		return 0, fmt.Errorf("apply policy revision %d: %w", rev, err)
	}
	return rev, nil
}

// cidrsConcern reports whether importing rules (puts) may change the CIDR
// identities: a rule names a CIDR, or replaces a rule that named one.
func (ps *policySet) cidrsConcern(puts []policyPut, rules []policy.Rule) bool {
	if len(policy.CIDRs(rules)) > 0 {
		return true
	}
	for _, p := range puts {
		if len(ps.index.CIDRsOf(p.name)) > 0 {
			return true
		}
	}
	return false
}

// identityChange is what a policy change did to the identities.
type identityChange struct {
	allocated map[netip.Prefix]labels.Identity // CIDR identities new to the index
	collected []labels.Identity
}

func (ic identityChange) empty() bool { return len(ic.allocated)+len(ic.collected) == 0 }

// cidrIdentitiesTxn allocates the identities of the CIDRs the imported
// rules name, and, when the change leaves a prefix named by no rule,
// collects unused identities. (A policy change cannot leave an endpoint
// identity unused; the driver and the label watcher see to those.)
func (c *controller) cidrIdentitiesTxn(txn *memdb.Txn, ch *policyChange) (identityChange, error) {
	ic := identityChange{allocated: map[netip.Prefix]labels.Identity{}}
	for _, p := range ch.importedCIDRs() {
		id, err := c.alloc.AllocateCIDRTxn(txn, p)
		if err != nil {
			return ic, fmt.Errorf("identity of CIDR %s: %w", p, err)
		}
		if c.pol.cidrs[p] != id {
			ic.allocated[p] = id
		}
	}
	keep, dropped := c.pol.cidrsAfter(ch)
	if !dropped {
		return ic, nil
	}
	var err error
	ic.collected, err = c.alloc.CollectTxn(txn, keep)
	return ic, err
}

// importedCIDRs returns the prefixes the imported rules name.
func (ch *policyChange) importedCIDRs() []netip.Prefix {
	return policy.CIDRs(ch.rules)
}

// cidrsAfter returns the prefixes the stored rules name once ch is made,
// and whether ch leaves a prefix that a rule named before named by none.
func (ps *policySet) cidrsAfter(ch *policyChange) (keep map[netip.Prefix]bool, dropped bool) {
	refs := map[netip.Prefix]int{} // change in the number of rules naming a prefix
	count := func(prefixes []netip.Prefix, n int) {
		for _, p := range prefixes {
			refs[p] += n
		}
	}
	if ch != nil {
		for _, name := range ch.deletes {
			count(ps.index.CIDRsOf(name), -1)
		}
		for i, p := range ch.puts {
			count(ps.index.CIDRsOf(p.name), -1)
			count(policy.CIDRs(ch.rules[i:i+1]), 1)
		}
	}
	for p, d := range refs {
		if n := ps.index.CIDRRefs(p); n > 0 && n+d <= 0 {
			dropped = true
		}
	}
	if !dropped && ch != nil {
		return nil, false
	}
	named := ps.index.CIDRs()
	keep = make(map[netip.Prefix]bool, len(refs)+len(named))
	for _, p := range named {
		keep[p] = true
	}
	for p, d := range refs {
		keep[p] = ps.index.CIDRRefs(p)+d > 0
	}
	return keep, dropped
}

// applyPolicyChangeLocked brings the mirror and the datapath up to date
// with a committed policy change: the replaced and deleted rules leave
// the index, the CIDR identities follow what the rules now name, the
// imported rules enter, and what changed goes to the datapath.
// preps, when not nil, holds the imported rules prepared for the index.
func (c *controller) applyPolicyChangeLocked(ch *policyChange, ids identityChange, preps []*policy.Prepared) error {
	ps := c.pol
	for _, name := range ch.deletes {
		ps.index.Delete(name)
	}
	for _, p := range ch.puts {
		ps.index.Delete(p.name)
	}
	if !ids.empty() {
		identities, cidrs := ps.withIdentities(ids)
		if err := ps.index.SetIdentities(identities, cidrs); err != nil {
			return fmt.Errorf("resolve policy: %w", err)
		}
		ps.identities, ps.cidrs = identities, cidrs
	}
	for i, p := range ch.puts {
		var err error
		switch {
		case preps != nil:
			err = ps.index.Add(preps[i])
		case ch.compiled != nil && len(ch.puts) < minPrepareAhead:
			// Parse compiled it and nothing prepared it yet.
			var prep *policy.Prepared
			if prep, err = ps.index.PrepareCompiled(p.name, ch.compiled[i]); err == nil {
				err = ps.index.Add(prep)
			}
		default:
			err = ps.index.Set(p.name, p.rule)
		}
		if err != nil {
			return fmt.Errorf("resolve policy: %w", err)
		}
	}
	return c.applyDeltaLocked(!ids.empty(), len(ch.puts))
}

// minPrepareAhead is the number of imported rules from which resolving
// them alongside the store write pays for a goroutine.
const minPrepareAhead = 256

// prepared is what policySet.prepare did ahead of a store write.
type prepared struct {
	// preps are the imported rules prepared for the index, nil when
	// there are none (few rules, or a rule that cannot be prepared yet,
	// such as one naming a CIDR without an identity so far).
	preps []*policy.Prepared
	// indexed: the rules are in the index, in place of those of the same
	// names, delta is what the datapath must change for it, and sync and
	// applyErr are what changing it gave.
	indexed  bool
	delta    policy.Delta
	sync     datapath.PolicySync
	applyErr error
	// broken: the index failed halfway through adding them.
	broken bool
}

// prepare resolves the rules to be imported in another goroutine, for the
// current identities, while the caller writes them to the store (which
// takes about as long); with apply set, it then puts them into the index,
// works out the datapath's delta and has apply write it. The function
// returned waits and gives the result. Until it returns, the caller may
// only read the index's CIDRs (CIDRRefs, CIDRs, CIDRsOf), and with apply
// set not even those. Set apply only for rules that change no identity
// (see cidrsConcern).
func (ps *policySet) prepare(puts []policyPut, compiled []policy.Compiled, apply func(policy.Delta) (datapath.PolicySync, error)) func() prepared {
	if len(puts) < minPrepareAhead {
		return func() prepared { return prepared{} }
	}
	// The write fills in puts' rows meanwhile: take the names now.
	names := make([]string, len(puts))
	for i, p := range puts {
		names[i] = p.name
	}
	done := make(chan prepared, 1)
	go func() {
		preps := make([]*policy.Prepared, len(puts))
		for i := range names {
			prep, err := ps.index.PrepareCompiled(names[i], compiled[i])
			if err != nil {
				for _, p := range preps[:i] {
					ps.index.Discard(p)
				}
				done <- prepared{} // applyPolicyChangeLocked sets them one by one
				return
			}
			preps[i] = prep
		}
		if apply == nil {
			done <- prepared{preps: preps}
			return
		}
		for i, p := range preps {
			if err := ps.index.Add(p); err != nil {
				for _, p := range preps[i:] {
					ps.index.Discard(p)
				}
				done <- prepared{broken: true}
				return
			}
		}
		res := prepared{indexed: true, delta: ps.index.Changes()}
		res.sync, res.applyErr = apply(res.delta)
		done <- res
	}()
	return func() prepared { return <-done }
}

// withIdentities returns the identities of ps changed by ic, in new maps.
func (ps *policySet) withIdentities(ic identityChange) (map[labels.Identity]labels.Labels, map[netip.Prefix]labels.Identity) {
	identities, cidrs := maps.Clone(ps.identities), maps.Clone(ps.cidrs)
	maps.Copy(cidrs, ic.allocated)
	gone := map[labels.Identity]bool{}
	for _, id := range ic.collected {
		gone[id] = true
		delete(identities, id)
	}
	if len(gone) > 0 {
		maps.DeleteFunc(cidrs, func(_ netip.Prefix, id labels.Identity) bool { return gone[id] })
	}
	return identities, cidrs
}

// syncIdentitiesLocked brings the index and the datapath up to date with
// the stored identities, keeping also those listed in gone (collected,
// with the labels the index knew them by) for now.
func (c *controller) syncIdentitiesLocked(gone []labels.Identity) error {
	cidrsChanged, err := c.reloadIdentitiesLocked(gone)
	if err == nil {
		err = c.applyDeltaLocked(cidrsChanged, 0)
	}
	if err != nil {
		c.pol = nil // the next change starts with a full recompute
		return fmt.Errorf("apply identities: %w", err)
	}
	return nil
}

// reloadIdentitiesLocked reads the identities from state into the index
// (and those of keep that state no longer has, from the index's own),
// and reports whether the CIDR identities changed.
func (c *controller) reloadIdentitiesLocked(keep []labels.Identity) (bool, error) {
	ps := c.pol
	ids, cidrs, err := identitiesTxn(c.store.Read())
	if err != nil {
		return false, fmt.Errorf("resolve policy: %w", err)
	}
	for _, id := range keep {
		if l, ok := ps.identities[id]; ok {
			if _, still := ids[id]; !still {
				ids[id] = l
			}
		}
	}
	if err := ps.index.SetIdentities(ids, cidrs); err != nil {
		return false, fmt.Errorf("resolve policy: %w", err)
	}
	cidrsChanged := !maps.Equal(ps.cidrs, cidrs)
	ps.identities, ps.cidrs = ids, cidrs
	return cidrsChanged, nil
}

// applyDeltaLocked writes what changed in the index to the datapath. When
// the CIDR identities changed, the ipcache changes between the new entries
// and the removals: addresses move to a new CIDR identity only once its
// entries are in, and leave a removed one before its entries go.
func (c *controller) applyDeltaLocked(cidrsChanged bool, imported int) error {
	return c.applyDatapathLocked(c.pol.index.Changes(), cidrsChanged, imported)
}

// applyDatapathLocked writes d, the index's last Changes, to the datapath
// (see applyDeltaLocked).
func (c *controller) applyDatapathLocked(d policy.Delta, cidrsChanged bool, imported int) error {
	res, err := c.writeDatapathLocked(d, cidrsChanged)
	if err != nil {
		return err
	}
	c.appliedLocked(d, res, imported)
	return nil
}

// writeDatapathLocked changes the datapath's policy by d; with
// cidrsChanged, it also syncs the ipcache between the additions and the
// removals. It reads the controller's state but changes none of it.
func (c *controller) writeDatapathLocked(d policy.Delta, cidrsChanged bool) (datapath.PolicySync, error) {
	set, remove, enforce := datapathDelta(d)
	var res datapath.PolicySync
	var err error
	if cidrsChanged {
		// Enforcement only turns on with the new entries; it turns off
		// with the removals, like within one ApplyPolicy.
		res, err = c.dp.ApplyPolicy(datapath.PolicyDelta{Set: set, Enforcement: c.tightenedLocked(enforce)})
		if err == nil {
			err = c.syncIPCacheLocked()
		}
		if err == nil {
			var removed datapath.PolicySync
			removed, err = c.dp.ApplyPolicy(datapath.PolicyDelta{Remove: remove, Enforcement: enforce})
			res.Removed, res.Lockdown, res.Revision = removed.Removed, removed.Lockdown, removed.Revision
		}
	} else {
		res, err = c.dp.ApplyPolicy(datapath.PolicyDelta{Set: set, Remove: remove, Enforcement: enforce})
	}
	if err != nil {
		return res, fmt.Errorf("apply policy: %w", err)
	}
	return res, nil
}

// appliedLocked records that the datapath now holds d (res is what
// writing it gave).
func (c *controller) appliedLocked(d policy.Delta, res datapath.PolicySync, imported int) {
	for id, e := range d.Enforcement {
		if e == (policy.Enforcement{}) {
			delete(c.enforcement, id)
		} else {
			c.enforcement[id] = e
		}
	}
	c.noteLockdownLocked(res)
	c.log.Info("policy applied", logKeyRevision, c.applied, logKeyRules, c.pol.index.Len(),
		"imported", imported, "added", res.Added, "updated", res.Updated, "removed", res.Removed)
}

// tightenedLocked is enforce with nothing turned off that the last sync
// turned on: the enforcement in force while old and new entries are both
// in the map.
func (c *controller) tightenedLocked(enforce map[uint32]datapath.Enforcement) map[uint32]datapath.Enforcement {
	out := make(map[uint32]datapath.Enforcement, len(enforce))
	for id, e := range enforce {
		old := c.enforcement[labels.Identity(id)]
		out[id] = datapath.Enforcement{Ingress: e.Ingress || old.Ingress, Egress: e.Egress || old.Egress}
	}
	return out
}

// datapathDelta converts an index delta into the datapath's terms.
func datapathDelta(d policy.Delta) (map[datapath.PolicyKey]datapath.Verdict, []datapath.PolicyKey, map[uint32]datapath.Enforcement) {
	set := make(map[datapath.PolicyKey]datapath.Verdict, len(d.Set))
	for k, v := range d.Set {
		set[datapathKey(k)] = datapath.Verdict(v)
	}
	remove := make([]datapath.PolicyKey, len(d.Remove))
	for i, k := range d.Remove {
		remove[i] = datapathKey(k)
	}
	enforce := make(map[uint32]datapath.Enforcement, len(d.Enforcement))
	for id, e := range d.Enforcement {
		enforce[uint32(id)] = datapath.Enforcement{Ingress: e.Ingress, Egress: e.Egress}
	}
	return set, remove, enforce
}

func datapathKey(k policy.Key) datapath.PolicyKey {
	return datapath.PolicyKey{Subject: uint32(k.Subject), Peer: uint32(k.Peer), Port: k.Port, Proto: k.Proto, Dir: uint8(k.Dir)}
}

// noteLockdownLocked records the lockdown a sync reports.
func (c *controller) noteLockdownLocked(res datapath.PolicySync) {
	if len(res.Lockdown) > 0 {
		c.log.Error("policy map full: identities locked down (all their traffic denied)", logKeyIdentities, res.Lockdown)
	}
	c.lockdown = make(map[uint32]bool, len(res.Lockdown))
	for _, id := range res.Lockdown {
		c.lockdown[id] = true
	}
}

func policyRevisionTxn(txn *memdb.Txn) (uint64, error) {
	v, err := state.GetMeta(txn, metaPolicyRevision)
	if errors.Is(err, state.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	rev, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stored policy revision %q: %w", v, err)
	}
	return rev, nil
}

// Recompute resolves state into the datapath's maps, whole.
func (c *controller) Recompute() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.recomputeLocked()
}

// ensurePolicyLocked makes sure the mirror exists and the datapath holds
// it, with a full recompute if not.
func (c *controller) ensurePolicyLocked() error {
	if c.pol != nil {
		return nil
	}
	return c.recomputeLocked()
}

// recomputeLocked rebuilds the mirror from state, resolves every rule, and
// syncs the datapath with the whole result.
func (c *controller) recomputeLocked() error {
	c.pol = nil
	txn := c.store.Read()
	rev, err := policyRevisionTxn(txn)
	if err != nil {
		return fmt.Errorf("resolve policy: %w", err)
	}
	ps, err := loadPolicySet(txn)
	if err != nil {
		return fmt.Errorf("resolve policy: %w", err)
	}
	res := ps.index.Result()
	ps.index.Changes() // the sync below gives the datapath all of it
	// Addresses first: a policy entry for a CIDR identity is useless until
	// the ipcache maps addresses to it.
	c.pol = ps
	if err := c.syncIPCacheLocked(); err != nil {
		c.pol = nil
		return err
	}
	st := datapath.PolicyState{
		Entries:     make(map[datapath.PolicyKey]datapath.Verdict, len(res.Entries)),
		Enforcement: make(map[uint32]datapath.Enforcement, len(res.Enforcement)),
	}
	for k, v := range res.Entries {
		st.Entries[datapathKey(k)] = datapath.Verdict(v)
	}
	for id, e := range res.Enforcement {
		st.Enforcement[uint32(id)] = datapath.Enforcement{Ingress: e.Ingress, Egress: e.Egress}
	}
	sync, err := c.dp.SyncPolicy(st)
	if err != nil {
		c.pol = nil
		return fmt.Errorf("sync policy: %w", err)
	}
	c.enforcement = res.Enforcement
	c.applied = rev
	c.noteLockdownLocked(sync)
	c.log.Info("policy applied", logKeyRevision, rev, logKeyRules, ps.index.Len(),
		"added", sync.Added, "updated", sync.Updated, "removed", sync.Removed)
	return nil
}

// loadPolicySet reads the stored rules and identities and resolves them.
func loadPolicySet(txn *memdb.Txn) (*policySet, error) {
	ids, cidrs, err := identitiesTxn(txn)
	if err != nil {
		return nil, err
	}
	index, err := policy.NewIndex(ids, cidrs)
	if err != nil {
		return nil, err
	}
	rows, err := state.ListPolicies(txn)
	if err != nil {
		return nil, err
	}
	rules, err := parseStoredRules(rows)
	if err != nil {
		return nil, err
	}
	for i, row := range rows {
		if err := index.Set(row.Name, rules[i]); err != nil {
			return nil, err
		}
	}
	return &policySet{index: index, identities: ids, cidrs: cidrs}, nil
}

// parseStoredRules decodes the stored rules, as one document: one parse of
// many rules costs much less than many parses of one (and runs on every
// CPU). A row that does not parse is named.
func parseStoredRules(rows []*state.Policy) ([]policy.Rule, error) {
	size := 2
	for _, row := range rows {
		size += len(row.Rule) + 1
	}
	doc := make([]byte, 0, size)
	doc = append(doc, '[')
	for i, row := range rows {
		if i > 0 {
			doc = append(doc, ',')
		}
		doc = append(doc, row.Rule...)
	}
	doc = append(doc, ']')
	if rules, err := policy.Parse(doc); err == nil && len(rules) == len(rows) {
		return rules, nil
	}
	rules := make([]policy.Rule, len(rows))
	for i, row := range rows {
		var err error
		if rules[i], err = parseStoredRule(row); err != nil {
			return nil, err
		}
	}
	return rules, nil
}

// parseStoredRule decodes a stored rule. It was validated on import.
func parseStoredRule(row *state.Policy) (policy.Rule, error) {
	rules, err := policy.Parse(row.Rule)
	if err != nil {
		return policy.Rule{}, fmt.Errorf("stored policy %s: %w", row.Name, err)
	}
	if len(rules) != 1 {
		return policy.Rule{}, fmt.Errorf("stored policy %s: %d rules, want one", row.Name, len(rules))
	}
	return rules[0], nil
}

// identitiesTxn returns the stored endpoint identities and CIDR identities,
// as policy.Input has them.
func identitiesTxn(txn *memdb.Txn) (map[labels.Identity]labels.Labels, map[netip.Prefix]labels.Identity, error) {
	rows, err := state.ListIdentities(txn)
	if err != nil {
		return nil, nil, err
	}
	ids := map[labels.Identity]labels.Labels{}
	cidrs := map[netip.Prefix]labels.Identity{}
	for _, id := range rows {
		if labels.Identity(id.ID) < labels.MinCIDRIdentity {
			ids[labels.Identity(id.ID)] = id.Labels
		} else if p, ok := labels.CIDROf(id.Labels); ok {
			cidrs[p] = labels.Identity(id.ID)
		}
	}
	return ids, cidrs, nil
}

// syncIPCacheLocked writes the ipcache: every address that is not a
// membrane endpoint mapped to an identity (the host's own addresses, the
// CIDRs policy names, and the rest of the world).
func (c *controller) syncIPCacheLocked() error {
	out := map[netip.Prefix]uint32{
		netip.MustParsePrefix("0.0.0.0/0"): uint32(labels.IdentityWorld),
		netip.MustParsePrefix("::/0"):      uint32(labels.IdentityWorld),
	}
	for p, id := range c.pol.cidrs {
		out[p] = uint32(id)
	}
	addrs, err := c.nl.AddrList(nil, netlink.FAMILY_ALL)
	for retry := 0; errors.Is(err, netlink.ErrDumpInterrupted) && retry < 3; retry++ {
		// Addresses changed during the dump: ask again.
		addrs, err = c.nl.AddrList(nil, netlink.FAMILY_ALL)
	}
	if err != nil {
		return fmt.Errorf("list host addresses: %w", err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.IsLinkLocalUnicast() {
			continue
		}
		ip = ip.Unmap()
		out[netip.PrefixFrom(ip, ip.BitLen())] = uint32(labels.IdentityHost)
	}
	if err := c.dp.SyncIPCache(out); err != nil {
		return fmt.Errorf("sync ipcache: %w", err)
	}
	return nil
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
	if err := c.ensurePolicyLocked(); err != nil {
		return err
	}
	var removed []labels.Identity
	err := c.store.Write(func(txn *memdb.Txn) error {
		var err error
		keep, _ := c.pol.cidrsAfter(nil)
		removed, err = c.alloc.CollectTxn(txn, keep)
		return err
	})
	if err != nil || len(removed) == 0 {
		return err
	}
	return c.syncIdentitiesLocked(nil)
}
