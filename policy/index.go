package policy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/membrane-net/membrane/labels"
)

// Index keeps the resolution of a set of named rules up to date as rules
// come and go and identities change, at a cost that grows with what
// changed rather than with the number of rules: each rule is resolved on
// its own, and what it contributes (its keys and its subjects' default
// deny) is counted into a merged result. A key's verdict is Deny while any
// rule denies it, else Allow while any rule allows it; a subject is in
// default deny in a direction while any rule puts it there.
//
// Result is always what Resolve returns for the same rules and identities.
// Changes reports what changed in it since the last call, for the
// datapath's ApplyPolicy. An Index is not safe for concurrent use.
type Index struct {
	in    Input // Identities and CIDRs; Rules is unused
	r     *resolver
	rules map[string]*indexedRule

	keys     map[Key]keyCount
	enforce  map[labels.Identity]enforceCount
	cidrRefs map[netip.Prefix]int // prefix -> number of rules naming it
	// worldRules are the rules whose peers include CIDR identities: the
	// only ones a change of CIDR identities concerns.
	worldRules map[*indexedRule]struct{}

	// selectors holds one copy of each distinct selector of the rules
	// (by its string form), and how many uses it has: rules share a few
	// selectors, and a selector's map costs more than the rest of a
	// compiled rule.
	selectors map[string]*sharedSelector

	scratch map[Key]Verdict // resolveRule's, empty between calls

	// What changed since the last Changes call.
	dirtyKeys    map[Key]struct{}
	dirtySubject map[labels.Identity]struct{}
}

// indexedRule is one rule of an Index and what it contributes.
type indexedRule struct {
	compiled *compiledRule
	cidrs    []netip.Prefix // prefixes it names, without duplicates
	// worldPeers: its peers include CIDR identities (a CIDR peer or the
	// world entity), so they change with the CIDR identities.
	worldPeers bool
	// worldEntity: its peers include the world entity, which is every
	// CIDR identity.
	worldEntity bool
	peerCIDRs   []netip.Prefix // the prefixes of its CIDR peers

	keys     []keyVerdict      // one per key, sorted
	subjects []labels.Identity // the identities its endpointSelector selects
}

type keyVerdict struct {
	key     Key
	verdict Verdict
}

// keyCount counts the rules that allow and deny a key, and remembers the
// verdict Changes last reported.
type keyCount struct {
	allow, deny int32
	reported    Verdict
}

func (c keyCount) verdict() Verdict {
	switch {
	case c.deny > 0:
		return Deny
	case c.allow > 0:
		return Allow
	}
	return 0
}

// enforceCount counts the rules that select a subject, and those that put
// it in default deny, per direction; and remembers what Changes last
// reported.
type enforceCount struct {
	rules, ingress, egress int32
	reported               Enforcement
}

func (c enforceCount) enforcement() Enforcement {
	return Enforcement{Ingress: c.ingress > 0, Egress: c.egress > 0}
}

// Delta is what changed in an Index's result since the last Changes.
type Delta struct {
	// Set holds keys that are new or have a new verdict.
	Set map[Key]Verdict
	// Remove lists keys no rule gives any more.
	Remove []Key
	// Enforcement holds the new enforcement of the subjects whose
	// enforcement changed; the zero value is none.
	Enforcement map[labels.Identity]Enforcement
}

// Empty reports whether the delta changes nothing.
func (d Delta) Empty() bool {
	return len(d.Set)+len(d.Remove)+len(d.Enforcement) == 0
}

// NewIndex returns an empty Index over identities and CIDR identities (as
// in Input). It keeps copies of the maps, not the maps.
func NewIndex(identities map[labels.Identity]labels.Labels, cidrs map[netip.Prefix]labels.Identity) (*Index, error) {
	in := Input{Identities: maps.Clone(identities), CIDRs: maps.Clone(cidrs)}
	if errs := checkIdentities(in); len(errs) > 0 {
		return nil, joinErrors(errs)
	}
	return &Index{
		in:           in,
		r:            newResolver(in),
		rules:        map[string]*indexedRule{},
		keys:         map[Key]keyCount{},
		enforce:      map[labels.Identity]enforceCount{},
		cidrRefs:     map[netip.Prefix]int{},
		worldRules:   map[*indexedRule]struct{}{},
		selectors:    map[string]*sharedSelector{},
		scratch:      map[Key]Verdict{},
		dirtyKeys:    map[Key]struct{}{},
		dirtySubject: map[labels.Identity]struct{}{},
	}, nil
}

// Len returns the number of rules.
func (x *Index) Len() int { return len(x.rules) }

// Has reports whether a rule of that name is in the index.
func (x *Index) Has(name string) bool {
	_, ok := x.rules[name]
	return ok
}

// CIDRRefs returns how many rules name the prefix p (see CIDRs).
func (x *Index) CIDRRefs(p netip.Prefix) int { return x.cidrRefs[p] }

// CIDRsOf returns the prefixes the named rule names (as CIDRs does), or
// nil when there is no such rule.
func (x *Index) CIDRsOf(name string) []netip.Prefix {
	if ir, ok := x.rules[name]; ok {
		return ir.cidrs
	}
	return nil
}

// CIDRs returns every prefix the rules name, as CIDRs does.
func (x *Index) CIDRs() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(x.cidrRefs))
	for p := range x.cidrRefs {
		out = append(out, p)
	}
	slices.SortFunc(out, comparePrefixes)
	return out
}

// Set adds the rule under name, replacing the rule of that name if there
// is one. The rule is checked as Resolve checks rules (ErrInvalidPolicy),
// and every CIDR it names must have an identity (ErrMissingCIDRIdentity);
// on error the index is unchanged.
func (x *Index) Set(name string, rule Rule) error {
	p, err := x.Prepare(name, rule)
	if err != nil {
		return err
	}
	return x.Add(p)
}

// Prepared is a rule compiled and resolved for an Index, ready to be
// added.
type Prepared struct {
	name string
	ir   *indexedRule
	r    *resolver // the identities it was resolved for
}

// Prepare does the work of Set but for changing the index: it checks the
// rule and resolves it for the current identities. Add adds the result.
// Preparing many rules may run in another goroutine while the caller does
// other work, as long as nothing else calls the index meanwhile (CIDRRefs,
// CIDRs, CIDRsOf, Len and Has excepted).
func (x *Index) Prepare(name string, rule Rule) (*Prepared, error) {
	cr, errs := compileRule(&rule, "", false, false)
	if len(errs) > 0 {
		_, errs = compileRule(&rule, "", false, true)
		return nil, fmt.Errorf("rule %q: %w", name, joinErrors(errs))
	}
	return x.prepare(name, cr)
}

// PrepareCompiled is Prepare for a rule ParseCompiled checked and compiled
// already. Each Compiled is prepared once.
func (x *Index) PrepareCompiled(name string, c Compiled) (*Prepared, error) {
	if c.cr == nil {
		return nil, fmt.Errorf("rule %q: %w: not compiled", name, ErrInvalidPolicy)
	}
	return x.prepare(name, c.cr)
}

func (x *Index) prepare(name string, cr *compiledRule) (*Prepared, error) {
	ir := &indexedRule{compiled: cr, cidrs: namedCIDRs(cr), worldPeers: hasWorldPeers(cr), worldEntity: hasWorldEntity(cr), peerCIDRs: peerCIDRs(cr)}
	for _, p := range ir.cidrs {
		if _, ok := x.in.CIDRs[p]; !ok {
			return nil, fmt.Errorf("rule %q: %w: %s", name, ErrMissingCIDRIdentity, p)
		}
	}
	x.internSelectors(cr)
	x.resolveRule(ir)
	return &Prepared{name: name, ir: ir, r: x.r}, nil
}

// Discard gives up a prepared rule that will not be added.
func (x *Index) Discard(p *Prepared) {
	x.releaseSelectors(p.ir.compiled)
}

// Add adds a prepared rule, replacing the rule of that name if there is
// one. A prepared rule is added once, or discarded. If the identities changed since Prepare, the rule is resolved again
// (ErrMissingCIDRIdentity if a CIDR it names lost its identity; the index
// is then unchanged).
func (x *Index) Add(p *Prepared) error {
	ir := p.ir
	if p.r != x.r {
		for _, c := range ir.cidrs {
			if _, ok := x.in.CIDRs[c]; !ok {
				return fmt.Errorf("rule %q: %w: %s", p.name, ErrMissingCIDRIdentity, c)
			}
		}
		x.resolveRule(ir)
		p.r = x.r
	}
	x.Delete(p.name)
	x.add(ir)
	x.rules[p.name] = ir
	forEachSelectorKey(ir.compiled, func(key string) {
		if shared, ok := x.selectors[key]; ok {
			if shared.users == nil {
				shared.users = map[*indexedRule]struct{}{}
			}
			shared.users[ir] = struct{}{}
		}
	})
	for _, c := range ir.cidrs {
		x.cidrRefs[c]++
	}
	if ir.worldPeers {
		x.worldRules[ir] = struct{}{}
	}
	return nil
}

// Delete removes the named rule and reports whether there was one.
func (x *Index) Delete(name string) bool {
	ir, ok := x.rules[name]
	if !ok {
		return false
	}
	x.remove(ir)
	delete(x.rules, name)
	delete(x.worldRules, ir)
	forEachSelectorKey(ir.compiled, func(key string) {
		if shared, ok := x.selectors[key]; ok {
			delete(shared.users, ir)
		}
	})
	x.releaseSelectors(ir.compiled)
	for _, p := range ir.cidrs {
		if x.cidrRefs[p]--; x.cidrRefs[p] == 0 {
			delete(x.cidrRefs, p)
		}
	}
	return true
}

// SetIdentities replaces the endpoint identities and CIDR identities (as
// in Input) and resolves again the rules the change may concern: those
// with a selector that matches an identity that came, went or changed
// labels, and, when CIDR identities changed, those whose peers include
// them. Every CIDR a rule names must keep an identity
// (ErrMissingCIDRIdentity); on error the index is unchanged.
func (x *Index) SetIdentities(identities map[labels.Identity]labels.Labels, cidrs map[netip.Prefix]labels.Identity) error {
	in := Input{Identities: maps.Clone(identities), CIDRs: maps.Clone(cidrs)}
	errs := checkIdentities(in)
	for p := range x.cidrRefs {
		if _, ok := cidrs[p]; !ok {
			errs = append(errs, fmt.Errorf("%w: %s, named by %d rules", ErrMissingCIDRIdentity, p, x.cidrRefs[p]))
		}
	}
	if len(errs) > 0 {
		return joinErrors(errs)
	}
	changed := changedLabels(x.in.Identities, in.Identities)
	changedCIDRs := changedPrefixes(x.in.CIDRs, in.CIDRs)
	if len(changed) == 0 && len(changedCIDRs) == 0 {
		x.in = in
		return nil
	}
	// Each distinct selector is matched once, however many rules share it.
	concerned := map[*indexedRule]struct{}{}
	for _, shared := range x.selectors {
		if len(shared.users) > 0 && matchesAny(shared.sel, changed) {
			for ir := range shared.users {
				concerned[ir] = struct{}{}
			}
		}
	}
	for ir := range x.worldRules {
		if coversAny(ir, changedCIDRs) {
			concerned[ir] = struct{}{}
		}
	}
	for ir := range concerned {
		x.remove(ir)
	}
	x.in = in
	x.r = newResolver(in)
	for ir := range concerned {
		x.resolveRule(ir)
		x.add(ir)
	}
	return nil
}

// Changes returns what changed in the result since the last call (since
// NewIndex for the first).
func (x *Index) Changes() Delta {
	d := Delta{Set: make(map[Key]Verdict, len(x.dirtyKeys)), Enforcement: map[labels.Identity]Enforcement{}}
	for k := range x.dirtyKeys {
		c := x.keys[k]
		v := c.verdict()
		switch {
		case v == c.reported:
		case v == 0:
			d.Remove = append(d.Remove, k)
		default:
			d.Set[k] = v
		}
		if v == 0 {
			delete(x.keys, k)
		} else {
			c.reported = v
			x.keys[k] = c
		}
	}
	x.dirtyKeys = emptied(x.dirtyKeys)
	for id := range x.dirtySubject {
		c := x.enforce[id]
		if e := c.enforcement(); e != c.reported {
			d.Enforcement[id] = e
			c.reported = e
		}
		if c.rules == 0 {
			delete(x.enforce, id)
		} else {
			x.enforce[id] = c
		}
	}
	x.dirtySubject = emptied(x.dirtySubject)
	return d
}

// largeMap is the number of entries from which emptied replaces a map
// rather than clearing it.
const largeMap = 1024

// emptied returns m empty: cleared, or a new map when m holds many
// entries. Clearing a map, and ranging over it, costs what it once held
// rather than what it holds, so a map that one large change filled would
// slow every later change down (adding one rule to 100,000 spent most of
// its time here).
func emptied[K comparable, V any](m map[K]V) map[K]V {
	if len(m) >= largeMap {
		return make(map[K]V)
	}
	clear(m)
	return m
}

// Result returns the whole resolution, as Resolve would.
func (x *Index) Result() Result {
	res := Result{
		Entries:     make(map[Key]Verdict, len(x.keys)),
		Enforcement: make(map[labels.Identity]Enforcement, len(x.enforce)),
	}
	for k, c := range x.keys {
		if v := c.verdict(); v != 0 {
			res.Entries[k] = v
		}
	}
	for id, c := range x.enforce {
		if c.rules > 0 {
			res.Enforcement[id] = c.enforcement()
		}
	}
	return res
}

type sharedSelector struct {
	sel  labels.Selector
	uses int // by rules prepared or added
	// users are the added rules that use the selector: those an identity
	// the selector matches concerns (SetIdentities).
	users map[*indexedRule]struct{}
}

// internSelectors makes the compiled rule use the index's copy of each of
// its selectors. The rule's own (from Parse) can then be collected.
func (x *Index) internSelectors(cr *compiledRule) {
	intern := func(sel labels.Selector, key string) labels.Selector {
		shared, ok := x.selectors[key]
		if !ok {
			shared = &sharedSelector{sel: sel}
			x.selectors[key] = shared
		}
		shared.uses++
		return shared.sel
	}
	cr.subject = intern(cr.subject, cr.subjectKey)
	forEachSection(cr, func(s *compiledSection) {
		if len(s.endpoints) == 0 {
			return
		}
		shared := make([]labels.Selector, len(s.endpoints)) // the rule's slice is the rule's
		for i, sel := range s.endpoints {
			shared[i] = intern(sel, s.endpointKeys[i])
		}
		s.endpoints = shared
	})
}

// releaseSelectors gives up a deleted rule's uses of shared selectors.
func (x *Index) releaseSelectors(cr *compiledRule) {
	forEachSelectorKey(cr, func(key string) {
		if shared, ok := x.selectors[key]; ok {
			if shared.uses--; shared.uses == 0 {
				delete(x.selectors, key)
			}
		}
	})
}

// resolveRule works out what ir contributes under the current identities.
func (x *Index) resolveRule(ir *indexedRule) {
	cr := ir.compiled
	ir.subjects = x.r.match(cr.subject, cr.subjectKey)
	ir.keys = ir.keys[:0]
	if len(ir.subjects) == 0 {
		return
	}
	entries := x.scratch // one map for every rule: most give a key or two
	defer func() { x.scratch = emptied(entries) }()
	for dir := range cr.sections {
		for which, list := range cr.sections[dir] {
			verdict := Allow
			if which == denyList {
				verdict = Deny
			}
			for i := range list {
				x.r.emit(entries, ir.subjects, &list[i], Direction(dir), verdict)
			}
		}
	}
	ir.keys = slices.Grow(ir.keys, len(entries))
	for k, v := range entries {
		ir.keys = append(ir.keys, keyVerdict{k, v})
	}
}

// add counts what ir contributes into the merged result.
func (x *Index) add(ir *indexedRule) { x.count(ir, 1) }

// remove takes what ir contributes out of the merged result.
func (x *Index) remove(ir *indexedRule) { x.count(ir, -1) }

func (x *Index) count(ir *indexedRule, n int32) {
	for _, kv := range ir.keys {
		c := x.keys[kv.key]
		if kv.verdict == Deny {
			c.deny += n
		} else {
			c.allow += n
		}
		x.keys[kv.key] = c
		x.dirtyKeys[kv.key] = struct{}{}
	}
	dd := ir.compiled.defaultDeny
	for _, s := range ir.subjects {
		c := x.enforce[s]
		c.rules += n
		if dd[Ingress] {
			c.ingress += n
		}
		if dd[Egress] {
			c.egress += n
		}
		x.enforce[s] = c
		x.dirtySubject[s] = struct{}{}
	}
}

// namedCIDRs returns the prefixes a compiled rule names, without
// duplicates.
func namedCIDRs(cr *compiledRule) []netip.Prefix {
	var out []netip.Prefix
	forEachSection(cr, func(s *compiledSection) {
		for _, c := range s.cidrs {
			out = append(out, c.prefix)
			out = append(out, c.except...)
		}
	})
	slices.SortFunc(out, comparePrefixes)
	return slices.Compact(out)
}

// hasWorldPeers reports whether some section's peers include CIDR
// identities.
func hasWorldPeers(cr *compiledRule) bool {
	found := false
	forEachSection(cr, func(s *compiledSection) {
		found = found || len(s.cidrs) > 0 || slices.Contains(s.entities, EntityWorld)
	})
	return found
}

// hasWorldEntity reports whether some section's peers include the world
// entity.
func hasWorldEntity(cr *compiledRule) bool {
	found := false
	forEachSection(cr, func(s *compiledSection) {
		found = found || slices.Contains(s.entities, EntityWorld)
	})
	return found
}

// coversAny reports whether the peers of a rule may include the identity
// of one of the prefixes: through the world entity, or a CIDR peer that
// contains the prefix.
func coversAny(ir *indexedRule, prefixes []netip.Prefix) bool {
	if len(prefixes) == 0 {
		return false
	}
	if ir.worldEntity {
		return true
	}
	for _, c := range ir.peerCIDRs {
		for _, p := range prefixes {
			if p.Bits() >= c.Bits() && c.Contains(p.Addr()) {
				return true
			}
		}
	}
	return false
}

// peerCIDRs returns the prefixes of a rule's CIDR peers.
func peerCIDRs(cr *compiledRule) []netip.Prefix {
	var out []netip.Prefix
	forEachSection(cr, func(s *compiledSection) {
		for _, c := range s.cidrs {
			out = append(out, c.prefix)
		}
	})
	return out
}

// changedPrefixes returns the prefixes whose identity differs between a
// and b (or that only one has).
func changedPrefixes(a, b map[netip.Prefix]labels.Identity) []netip.Prefix {
	var out []netip.Prefix
	for p, id := range a {
		if other, ok := b[p]; !ok || other != id {
			out = append(out, p)
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			out = append(out, p)
		}
	}
	return out
}

// matchesAny reports whether sel matches any of the label sets.
func matchesAny(sel labels.Selector, sets []labels.Labels) bool {
	for _, l := range sets {
		if sel.Matches(l) {
			return true
		}
	}
	return false
}

// forEachSelectorKey calls fn with the key of each selector of the rule:
// its subject's and its sections' endpoint selectors (a key may come more
// than once).
func forEachSelectorKey(cr *compiledRule, fn func(key string)) {
	fn(cr.subjectKey)
	forEachSection(cr, func(s *compiledSection) {
		for _, key := range s.endpointKeys {
			fn(key)
		}
	})
}

func forEachSection(cr *compiledRule, fn func(*compiledSection)) {
	for dir := range cr.sections {
		for _, list := range cr.sections[dir] {
			for i := range list {
				fn(&list[i])
			}
		}
	}
}

// changedLabels returns the label sets, old and new, of the identities
// that differ between a and b.
func changedLabels(a, b map[labels.Identity]labels.Labels) []labels.Labels {
	var out []labels.Labels
	for id, l := range a {
		if m, ok := b[id]; !ok || l.String() != m.String() {
			out = append(out, l)
		}
	}
	for id, l := range b {
		if m, ok := a[id]; !ok || l.String() != m.String() {
			out = append(out, l)
		}
	}
	return out
}
