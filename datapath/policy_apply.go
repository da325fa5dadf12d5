package datapath

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// PolicyDelta is a change to the policy the datapath was last asked to
// hold (by SyncPolicy or ApplyPolicy).
type PolicyDelta struct {
	// Set holds entries to add, or to change to another verdict.
	Set map[PolicyKey]Verdict
	// Remove lists entries to remove; entries not held are ignored. A key
	// cannot be both set and removed.
	Remove []PolicyKey
	// Enforcement holds the new enforcement of the subjects whose
	// enforcement changes; the zero value enforces nothing. Subjects not
	// named keep theirs.
	Enforcement map[uint32]Enforcement
}

// ApplyPolicy applies a change to the policy maps without looking at the
// rest of the policy: its cost grows with the size of the change, not of
// the policy. It writes in the same gapless order as SyncPolicy (see
// applyChange) and locks subjects down in the same way when the policy map
// is full; entries that did not fit are retried whenever a
// later call removes entries. Invalid entries are refused
// (ErrInvalidPolicy) before anything is written.
//
// The change is relative to what this Datapath was last asked to hold, or,
// before the first SyncPolicy, to what the pinned maps hold; a daemon that
// starts calls SyncPolicy with the whole policy first.
func (d *Datapath) ApplyPolicy(delta PolicyDelta) (PolicySync, error) {
	res, err := d.applyPolicy(&delta)
	if err != nil {
		return res, fmt.Errorf("apply policy: %w", err)
	}
	return res, nil
}

func (d *Datapath) applyPolicy(delta *PolicyDelta) (PolicySync, error) {
	if err := delta.validate(); err != nil {
		return PolicySync{}, err
	}
	return d.changePolicy(func(cache *policyCache) (*policyChange, error) { return cache.changeOf(delta), nil })
}

func (delta *PolicyDelta) validate() error {
	for k, v := range delta.Set {
		if err := k.validate(); err != nil {
			return fmt.Errorf("%w: entry %s: %v", ErrInvalidPolicy, k, err)
		}
		if v != VerdictAllow && v != VerdictDeny {
			return fmt.Errorf("%w: entry %s: verdict %d", ErrInvalidPolicy, k, v)
		}
	}
	for _, k := range delta.Remove {
		if _, ok := delta.Set[k]; ok {
			return fmt.Errorf("%w: entry %s both set and removed", ErrInvalidPolicy, k)
		}
	}
	for id := range delta.Enforcement {
		if id == 0 {
			return fmt.Errorf("%w: enforcement of subject 0", ErrInvalidPolicy)
		}
	}
	return nil
}

// changeOf is the change a valid delta asks of the cache: entries whose
// verdict the map already holds are left out.
func (c *policyCache) changeOf(delta *PolicyDelta) *policyChange {
	ch := &policyChange{removals: delta.Remove, enforce: delta.Enforcement}
	var denies, allows []policyEntry
	for k, v := range delta.Set {
		if cur, ok := c.entries[k]; ok && cur == v {
			continue
		}
		if v == VerdictDeny {
			denies = append(denies, policyEntry{k, v})
		} else {
			allows = append(allows, policyEntry{k, v})
		}
	}
	ch.writes = append(denies, allows...)
	return ch
}

// policyCache is what the policy maps hold and what they were asked to
// hold, as far as this Datapath wrote or read them: calls work from it
// instead of reading the maps.
type policyCache struct {
	entries map[PolicyKey]Verdict                 // what the policy map holds
	enforce map[uint32]endpointPolicyEnforceValue // what policy_enforce holds
	// want is the enforcement asked for, per subject (absent: none).
	want map[uint32]Enforcement
	// missing holds the entries asked for that did not fit in the map;
	// their subjects are in lockdown.
	missing          map[PolicyKey]Verdict
	missingBySubject map[uint32]int
	// unsettled are subjects found in lockdown when the maps were read
	// back: entries of theirs may be missing, so they stay in lockdown
	// until a SyncPolicy gives the whole policy again.
	unsettled map[uint32]bool
	// unsettledEnforce are subjects whose policy_enforce entry a failed
	// call may have left stricter than asked: the next call settles them.
	unsettledEnforce map[uint32]bool
}

func newPolicyCache() *policyCache {
	return &policyCache{
		entries:          map[PolicyKey]Verdict{},
		enforce:          map[uint32]endpointPolicyEnforceValue{},
		want:             map[uint32]Enforcement{},
		missing:          map[PolicyKey]Verdict{},
		missingBySubject: map[uint32]int{},
		unsettled:        map[uint32]bool{},
		unsettledEnforce: map[uint32]bool{},
	}
}

// loadPolicyCache returns the cache, reading the maps back on first use.
// d.policyMu must be held.
func (d *Datapath) loadPolicyCache() (*policyCache, error) {
	if d.policyCache == nil {
		c, err := d.readPolicy()
		if err != nil {
			return nil, err
		}
		d.policyCache = c
	}
	return d.policyCache, nil
}

// lockedDown reports whether a subject must be in lockdown.
func (c *policyCache) lockedDown(id uint32) bool {
	return c.missingBySubject[id] > 0 || c.unsettled[id]
}

// addMissing records entries that did not fit, and their subjects as
// touched.
func (c *policyCache) addMissing(entries []policyEntry, touched map[uint32]bool) {
	for _, e := range entries {
		if _, ok := c.missing[e.key]; !ok {
			c.missingBySubject[e.key.Subject]++
		}
		c.missing[e.key] = e.verdict
		touched[e.key.Subject] = true
	}
}

// dropMissing forgets a missing entry, and reports whether it was one.
func (c *policyCache) dropMissing(k PolicyKey, touched map[uint32]bool) bool {
	if _, ok := c.missing[k]; !ok {
		return false
	}
	delete(c.missing, k)
	if c.missingBySubject[k.Subject]--; c.missingBySubject[k.Subject] == 0 {
		delete(c.missingBySubject, k.Subject)
	}
	touched[k.Subject] = true
	return true
}

// takeMissing empties the missing set and returns it, deny entries first.
func (c *policyCache) takeMissing(touched map[uint32]bool) []policyEntry {
	var denies, allows []policyEntry
	for k, v := range c.missing {
		if v == VerdictDeny {
			denies = append(denies, policyEntry{k, v})
		} else {
			allows = append(allows, policyEntry{k, v})
		}
		touched[k.Subject] = true
	}
	clear(c.missing)
	clear(c.missingBySubject)
	return append(denies, allows...)
}

// lockdownList lists the subjects in lockdown, sorted.
func (c *policyCache) lockdownList() []uint32 {
	if len(c.missingBySubject)+len(c.unsettled) == 0 {
		return nil
	}
	var l []uint32
	for id := range c.missingBySubject {
		l = append(l, id)
	}
	for id := range c.unsettled {
		if c.missingBySubject[id] == 0 {
			l = append(l, id)
		}
	}
	slices.Sort(l)
	return l
}

type policyEntry struct {
	key     PolicyKey
	verdict Verdict
}

// policyChange is what one SyncPolicy or ApplyPolicy call writes, valid.
type policyChange struct {
	writes   []policyEntry          // entries to put, deny entries first
	removals []PolicyKey            // entries to remove, held or missing
	enforce  map[uint32]Enforcement // new enforcement asked for, per subject
	// full: the change comes from the whole policy (SyncPolicy), which
	// settles the subjects found in lockdown on read-back.
	full bool
}

// applyChange writes ch in an order that never lets through, even for a
// moment, what both the policy before and the one after deny:
//
//  1. new and changed deny entries;
//  2. lockdown of the subjects with entries missing, before any allow
//     entry can make a missing deny matter;
//  3. new and changed allow entries, then enforcement turning on (after
//     the allows, so traffic that stays allowed is not cut);
//  4. removals: allow entries, then deny entries;
//  5. retries of what did not fit, when removals made room (steps 1-3);
//  6. lockdown lifted and enforcement turned off, once the stale entries
//     are gone;
//
// then a new policy revision if anything changed. d.policyMu must be held.
func (d *Datapath) applyChange(c *policyCache, ch *policyChange) (res PolicySync, err error) {
	touched, removals := c.noteChange(ch)

	// Whatever happens from here, if something was written, established
	// connections are checked against what the maps now hold.
	changed := false
	defer func() {
		if err != nil {
			// policy_enforce may be left stricter than asked: settle
			// these subjects in the next call.
			for id := range touched {
				c.unsettledEnforce[id] = true
			}
			if changed {
				if _, berr := d.bumpRevision(); berr != nil {
					err = errors.Join(err, berr)
				}
			}
		}
		res.Lockdown = c.lockdownList()
	}()
	if err = d.addEntries(c, ch.writes, touched, &res, &changed); err != nil {
		return res, err
	}
	res.Removed, err = d.removeEntries(c, removals)
	changed = changed || res.Removed > 0
	if err != nil {
		return res, err
	}
	if len(c.missing) > 0 && res.Removed > 0 {
		// Removals may have made room. The subjects of the entries
		// retried are in lockdown until step 6.
		if err = d.addEntries(c, c.takeMissing(touched), touched, &res, &changed); err != nil {
			return res, err
		}
	}
	enfChanged, err := d.writeEnforcement(c, touched, enforceSettle)
	changed = changed || enfChanged
	if err != nil {
		return res, err
	}
	clear(c.unsettledEnforce)

	if changed {
		res.Revision, err = d.bumpRevision()
	} else {
		var cfg endpointRuntimeConfig
		cfg, err = d.readConfig()
		res.Revision = cfg.PolicyRevision
	}
	return res, err
}

// noteChange records in the cache what ch asks for, and returns the
// subjects whose policy_enforce entry may change and the entries to remove
// from the map.
func (c *policyCache) noteChange(ch *policyChange) (map[uint32]bool, []PolicyKey) {
	touched := map[uint32]bool{}
	for id := range c.unsettledEnforce {
		touched[id] = true
	}
	for id, e := range ch.enforce {
		if e == (Enforcement{}) {
			delete(c.want, id)
		} else {
			c.want[id] = e
		}
		touched[id] = true
	}
	if ch.full {
		for id := range c.unsettled {
			touched[id] = true
		}
		clear(c.unsettled)
	}
	// Entries asked for again, or no longer: they are not missing now.
	for _, e := range ch.writes {
		c.dropMissing(e.key, touched)
	}
	var removals []PolicyKey
	for _, k := range ch.removals {
		if c.dropMissing(k, touched) {
			continue
		}
		if _, ok := c.entries[k]; ok {
			removals = append(removals, k)
		}
	}
	return touched, removals
}

// addEntries writes entries (deny entries first) with the enforcement that
// must come with them: lockdown of the subjects whose entries do not fit
// between the denies and the allows, enforcement turning on after the
// allows. It lifts and turns off nothing.
func (d *Datapath) addEntries(c *policyCache, entries []policyEntry, touched map[uint32]bool, res *PolicySync, changed *bool) error {
	split := len(entries)
	for i, e := range entries {
		if e.verdict != VerdictDeny {
			split = i
			break
		}
	}
	for _, step := range []struct {
		entries []policyEntry
		enforce enforceStep
	}{
		{entries[:split], enforceLockdown},
		{entries[split:], enforceTighten},
	} {
		w, err := d.writePolicy(c, step.entries)
		res.Added += w.added
		res.Updated += w.updated
		*changed = *changed || w.added+w.updated > 0
		c.addMissing(w.full, touched)
		if err != nil {
			return err
		}
		enfChanged, err := d.writeEnforcement(c, touched, step.enforce)
		*changed = *changed || enfChanged
		if err != nil {
			return err
		}
	}
	return nil
}

// removeEntries removes keys from the map, allow entries first: removing
// a deny entry while an allow entry it overrides is still there would let
// through what it denied.
func (d *Datapath) removeEntries(c *policyCache, keys []PolicyKey) (int, error) {
	var allows, denies []PolicyKey
	for _, k := range keys {
		if c.entries[k] == VerdictDeny {
			denies = append(denies, k)
		} else {
			allows = append(allows, k)
		}
	}
	n, err := d.deletePolicy(c, allows)
	if err != nil {
		return n, err
	}
	m, err := d.deletePolicy(c, denies)
	return n + m, err
}

// isFull reports whether err is a map refusing a new key for lack of room
// (hash: E2BIG, LPM trie: ENOSPC).
func isFull(err error) bool {
	return errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOSPC)
}

// policyWrite is what writePolicy did.
type policyWrite struct {
	added, updated int           // entries written new, and overwritten
	full           []policyEntry // entries that did not fit, in order
}

// writePolicy writes entries to the policy map and the cache. Entries that
// do not fit are returned; any other failure is an error.
func (d *Datapath) writePolicy(c *policyCache, entries []policyEntry) (policyWrite, error) {
	var w policyWrite
	if len(entries) == 0 {
		return w, nil
	}
	keys := make([]endpointPolicyKey, len(entries))
	values := make([]endpointPolicyValue, len(entries))
	for i, e := range entries {
		keys[i] = e.key.raw()
		values[i] = endpointPolicyValue{Verdict: uint8(e.verdict)}
	}
	n, err := d.policy.BatchUpdate(keys, values, nil)
	d.policyWritten()
	if errors.Is(err, ebpf.ErrNotSupported) {
		n, err = 0, nil
		for ; n < len(keys); n++ {
			err = d.policy.Put(keys[n], values[n])
			d.policyWritten()
			if err != nil {
				break
			}
		}
	}
	for _, e := range entries[:n] {
		w.record(c, e)
	}
	if err == nil {
		return w, nil
	}
	if !isFull(err) {
		return w, fmt.Errorf("write policy map: %w", err)
	}
	// Full: updates of existing keys still go in; new keys do not.
	for i := n; i < len(entries); i++ {
		err := d.policy.Put(keys[i], values[i])
		d.policyWritten()
		switch {
		case err == nil:
			w.record(c, entries[i])
		case isFull(err):
			w.full = append(w.full, entries[i])
		default:
			return w, fmt.Errorf("write policy map: %w", err)
		}
	}
	return w, nil
}

// record notes in the cache an entry the map now holds.
func (w *policyWrite) record(c *policyCache, e policyEntry) {
	if cur, ok := c.entries[e.key]; !ok {
		w.added++
	} else if cur != e.verdict {
		w.updated++
	}
	c.entries[e.key] = e.verdict
}

// enforceStep is how far writeEnforcement takes policy_enforce towards
// what is asked for.
type enforceStep int

const (
	// enforceLockdown adds the lockdown of subjects with entries missing,
	// and nothing else.
	enforceLockdown enforceStep = iota
	// enforceTighten also turns on the enforcement asked for; it lifts
	// and turns off nothing, so stale entries can stay a while longer.
	enforceTighten
	// enforceSettle makes policy_enforce hold what is asked for.
	enforceSettle
)

// enforceValue is what policy_enforce should hold for subject id at step.
func (c *policyCache) enforceValue(id uint32, step enforceStep) endpointPolicyEnforceValue {
	e := c.want[id]
	e.Lockdown = e.Lockdown || c.lockedDown(id)
	v, cur := e.raw(), c.enforce[id]
	switch step {
	case enforceLockdown:
		cur.Lockdown |= v.Lockdown
		return cur
	case enforceTighten:
		return endpointPolicyEnforceValue{Ingress: cur.Ingress | v.Ingress, Egress: cur.Egress | v.Egress, Lockdown: cur.Lockdown | v.Lockdown}
	}
	return v
}

// writeEnforcement takes policy_enforce to enforceValue for each subject
// in subjects. Subjects with nothing enforced have no entry.
func (d *Datapath) writeEnforcement(c *policyCache, subjects map[uint32]bool, step enforceStep) (bool, error) {
	changed := false
	for id := range subjects {
		v := c.enforceValue(id, step)
		cur, ok := c.enforce[id]
		switch {
		case v == (endpointPolicyEnforceValue{}) && ok:
			err := d.policyEnforce.Delete(id)
			d.policyWritten()
			if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return changed, fmt.Errorf("delete from policy_enforce map: %w", err)
			}
			delete(c.enforce, id)
			changed = true
		case v != (endpointPolicyEnforceValue{}) && (!ok || cur != v):
			err := d.policyEnforce.Put(id, v)
			d.policyWritten()
			if err != nil {
				return changed, fmt.Errorf("write policy_enforce map: %w", err)
			}
			c.enforce[id] = v
			changed = true
		}
	}
	return changed, nil
}

// deletePolicy removes keys from the policy map and the cache.
func (d *Datapath) deletePolicy(c *policyCache, keys []PolicyKey) (int, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	raw := make([]endpointPolicyKey, len(keys))
	for i, k := range keys {
		raw[i] = k.raw()
	}
	n, err := d.policy.BatchDelete(raw, nil)
	d.policyWritten()
	for _, k := range keys[:n] {
		delete(c.entries, k)
	}
	if err == nil {
		return n, nil
	}
	// A key already gone (or no batch support): one by one from there.
	if !errors.Is(err, ebpf.ErrKeyNotExist) && !errors.Is(err, ebpf.ErrNotSupported) {
		return n, fmt.Errorf("delete from policy map: %w", err)
	}
	for i := n; i < len(keys); i++ {
		err := d.policy.Delete(raw[i])
		d.policyWritten()
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, fmt.Errorf("delete from policy map: %w", err)
		}
		delete(c.entries, keys[i])
		n++
	}
	return n, nil
}

// policyWriteHook, when set (by tests), is called after every write to the
// policy maps, with the maps as that write left them: tests check there
// that no state in between allows what both the old and the new policy
// deny.
var policyWriteHook func(d *Datapath)

func (d *Datapath) policyWritten() {
	if policyWriteHook != nil {
		policyWriteHook(d)
	}
}
