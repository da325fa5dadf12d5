package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/membrane-net/membrane/labels"
)

// indexMirror is what a consumer of Changes holds: the deltas applied one
// after the other.
type indexMirror struct {
	entries map[Key]Verdict
	enforce map[labels.Identity]Enforcement
}

func (m *indexMirror) apply(t *testing.T, d Delta) {
	t.Helper()
	for k, v := range d.Set {
		if m.entries[k] == v {
			t.Fatalf("delta sets %s to %s, which it already was", k, v)
		}
		m.entries[k] = v
	}
	for _, k := range d.Remove {
		if _, ok := m.entries[k]; !ok {
			t.Fatalf("delta removes %s, which was not there", k)
		}
		delete(m.entries, k)
	}
	for id, e := range d.Enforcement {
		if e == (Enforcement{}) {
			delete(m.enforce, id)
		} else {
			m.enforce[id] = e
		}
	}
}

// withoutEmpty drops the enforcement entries that enforce nothing: the
// datapath holds no entry for them.
func withoutEmpty(m map[labels.Identity]Enforcement) map[labels.Identity]Enforcement {
	out := map[labels.Identity]Enforcement{}
	for id, e := range m {
		if e != (Enforcement{}) {
			out[id] = e
		}
	}
	return out
}

// TestIndexAgreesWithResolve runs random sequences of rule imports,
// replacements, deletions and identity changes (endpoint identities coming,
// going and changing labels; CIDR identities following the rules) through
// an Index. After every step its Result must equal Resolve of the same
// rules and identities, and the deltas from Changes, applied in order, must
// give the same.
func TestIndexAgreesWithResolve(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { checkIndexSequence(t, seed, 300) })
	}
}

func checkIndexSequence(t *testing.T, seed uint64, steps int) {
	g := ruleGen{rand.New(rand.NewPCG(seed, 11))}
	rules := map[string]Rule{}
	ids := map[labels.Identity]labels.Labels{}
	cidrIDs := map[netip.Prefix]labels.Identity{} // stable numbering
	cidrsFor := func() map[netip.Prefix]labels.Identity {
		out := map[netip.Prefix]labels.Identity{}
		add := func(p netip.Prefix) {
			if _, ok := cidrIDs[p]; !ok {
				cidrIDs[p] = labels.MinCIDRIdentity + labels.Identity(len(cidrIDs))
			}
			out[p] = cidrIDs[p]
		}
		for _, p := range CIDRs(slices.Collect(maps.Values(rules))) {
			add(p)
		}
		if g.pick(3) == 0 { // a prefix no rule names (not collected yet)
			add(netip.MustParsePrefix(genCIDRs[g.pick(len(genCIDRs))]))
		}
		return out
	}
	x, err := NewIndex(map[labels.Identity]labels.Labels{}, map[netip.Prefix]labels.Identity{})
	if err != nil {
		t.Fatal(err)
	}
	mirror := &indexMirror{entries: map[Key]Verdict{}, enforce: map[labels.Identity]Enforcement{}}
	for step := range steps {
		name := fmt.Sprint("rule-", g.pick(12))
		switch op := g.pick(10); {
		case op < 5: // import (or replace) a rule
			rule := g.rule()
			rules[name] = rule
			// Add replaces a rule of the same name; one naming CIDRs goes
			// first, or the identities below would lack them.
			if len(x.CIDRsOf(name)) > 0 || g.pick(2) == 0 {
				x.Delete(name)
			}
			if err := x.SetIdentities(ids, cidrsFor()); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			if err := setRule(x, name, rule, g.pick(2) == 0); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
		case op < 6: // a rule prepared, then given up
			if p, err := x.Prepare(name, g.rule()); err == nil {
				x.Discard(p)
			}
		case op < 7: // delete a rule
			_, had := rules[name]
			delete(rules, name)
			if x.Delete(name) != had {
				t.Fatalf("step %d: Delete(%s) = %v", step, name, !had)
			}
			if err := x.SetIdentities(ids, cidrsFor()); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
		default: // an identity comes, goes or changes labels
			id := labels.MinUserIdentity + labels.Identity(g.pick(6))
			if _, ok := ids[id]; ok && g.pick(3) == 0 {
				delete(ids, id)
			} else {
				l := labels.Labels{}
				for _, k := range genKeys {
					if g.pick(2) == 0 {
						l[k] = genValues[g.pick(3)]
					}
				}
				ids[id] = l
			}
			next := maps.Clone(ids)
			if err := x.SetIdentities(next, cidrsFor()); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
		}
		want, err := Resolve(Input{Rules: slices.Collect(maps.Values(rules)), Identities: ids, CIDRs: x.in.CIDRs})
		if err != nil {
			t.Fatalf("step %d: resolve: %v", step, err)
		}
		got := x.Result()
		if !maps.Equal(got.Entries, want.Entries) || !maps.Equal(got.Enforcement, want.Enforcement) {
			t.Fatalf("step %d: index\n %v %v\nresolve\n %v %v", step, got.Entries, got.Enforcement, want.Entries, want.Enforcement)
		}
		mirror.apply(t, x.Changes())
		if !maps.Equal(mirror.entries, want.Entries) || !maps.Equal(mirror.enforce, withoutEmpty(want.Enforcement)) {
			t.Fatalf("step %d: deltas add up to\n %v %v\nresolve\n %v %v", step, mirror.entries, mirror.enforce, want.Entries, want.Enforcement)
		}
		if d := x.Changes(); !d.Empty() {
			t.Fatalf("step %d: a second Changes reports %+v", step, d)
		}
	}
	for name := range rules {
		x.Delete(name)
	}
	x.Changes() // forgets the keys and subjects it reports gone
	if len(x.keys)+len(x.enforce)+len(x.cidrRefs)+len(x.worldRules)+len(x.selectors) != 0 {
		t.Fatalf("no rules left, yet the index holds %d keys, %d subjects, %d CIDRs, %d world rules, %d selectors",
			len(x.keys), len(x.enforce), len(x.cidrRefs), len(x.worldRules), len(x.selectors))
	}
}

// setRule sets a rule with Set, or as an import does, parsed and compiled
// by ParseCompiled and then prepared and added.
func setRule(x *Index, name string, rule Rule, compiled bool) error {
	if !compiled {
		return x.Set(name, rule)
	}
	data, err := json.Marshal(rule)
	if err != nil {
		return err
	}
	rules, comp, err := ParseCompiled(data)
	if err != nil {
		return err
	}
	p, err := x.PrepareCompiled(name, comp[0])
	if err != nil {
		return err
	}
	if !reflect.DeepEqual(rules[0], mustReparse(rule)) {
		return fmt.Errorf("ParseCompiled gives %+v", rules[0])
	}
	return x.Add(p)
}

func mustReparse(r Rule) Rule {
	data, _ := json.Marshal(r)
	rules, err := Parse(data)
	if err != nil {
		panic(err)
	}
	return rules[0]
}

func TestIndexRefusesWhatResolveRefuses(t *testing.T) {
	x, err := NewIndex(testIdentities, map[netip.Prefix]labels.Identity{})
	if err != nil {
		t.Fatal(err)
	}
	cidrRule := Rule{EndpointSelector: labels.Selector{MatchLabels: map[string]string{"app": "web"}}, Egress: []EgressRule{{ToCIDR: []string{"10.0.0.0/8"}}}}
	if err := x.Set("r", cidrRule); !errors.Is(err, ErrMissingCIDRIdentity) {
		t.Errorf("rule naming a CIDR without identity: %v", err)
	}
	if err := x.Set("r", Rule{EndpointSelector: labels.Selector{MatchLabels: map[string]string{"app": "web"}}}); !errors.Is(err, ErrInvalidPolicy) {
		t.Errorf("rule without sections: %v", err)
	}
	if x.Len() != 0 || !x.Changes().Empty() {
		t.Fatalf("refused rules changed the index")
	}
	if err := x.SetIdentities(testIdentities, testCIDRs); err != nil {
		t.Fatal(err)
	}
	if err := x.Set("r", cidrRule); err != nil {
		t.Fatal(err)
	}
	if err := x.SetIdentities(testIdentities, nil); !errors.Is(err, ErrMissingCIDRIdentity) {
		t.Errorf("CIDR identity taken away from a named prefix: %v", err)
	}
	if _, err := NewIndex(map[labels.Identity]labels.Labels{labels.IdentityHost: {}}, nil); !errors.Is(err, ErrInvalidIdentity) {
		t.Errorf("reserved identity as an endpoint identity: %v", err)
	}
	slash8 := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	if !slices.Equal(x.CIDRs(), slash8) || x.CIDRRefs(slash8[0]) != 1 || !slices.Equal(x.CIDRsOf("r"), slash8) || x.CIDRsOf("none") != nil {
		t.Errorf("CIDRs %v, of r %v", x.CIDRs(), x.CIDRsOf("r"))
	}
}
