package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/membrane-net/membrane/labels"
)

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzParse checks that Parse never panics, that whatever it rejects it
// rejects with ErrInvalidPolicy and no rules, that whatever it accepts
// survives Canonical and Parse unchanged, and that Resolve takes it.
// Seeds are in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add([]byte(designExample))
	f.Add([]byte(designExampleYAML))
	f.Fuzz(func(t *testing.T, data []byte) {
		rules, err := Parse(data)
		// Parse reads without paths, and again with them on problems: the
		// two readings must agree.
		if slow, slowErr := parse(data, true); (slowErr == nil) != (err == nil) || !reflect.DeepEqual(slow, rules) {
			t.Fatalf("reading with paths gives %v, %v; without, %v, %v", slow, slowErr, rules, err)
		}
		// Large arrays are read on every CPU; whatever that accepts, it
		// reads as Parse does.
		if par, _, ok := parseArrayInParallel(data); ok && (err != nil || !reflect.DeepEqual(par, rules)) {
			t.Fatalf("parallel reading gives %v; Parse %v, %v", par, rules, err)
		}
		// Their fast decoder reads a rule as the tree does, or not at all.
		checkFastRule(t, data, "fuzz input")
		for i := range rules {
			if enc, want := Encode(&rules[i]), mustMarshal(t, rules[i]); !bytes.Equal(enc, want) {
				t.Fatalf("rule %d: Encode gives %s, encoding/json %s", i, enc, want)
			}
		}
		if err != nil {
			if rules != nil {
				t.Fatalf("Parse returned rules along with %v", err)
			}
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("Parse error %v does not match ErrInvalidPolicy", err)
			}
			return
		}
		for i, r := range rules {
			canonical, err := Canonical(r)
			if err != nil {
				t.Fatalf("rule %d: Parse accepted it, Canonical refused it: %v", i, err)
			}
			back, err := Parse(canonical)
			if err != nil {
				t.Fatalf("rule %d: Parse refused its canonical form %s: %v", i, canonical, err)
			}
			if len(back) != 1 || !reflect.DeepEqual(back[0], r) {
				t.Fatalf("rule %d: canonical form %s parses to\n%#v\nwant\n%#v", i, canonical, back, r)
			}
			again, err := Canonical(back[0])
			if err != nil || !bytes.Equal(again, canonical) {
				t.Fatalf("rule %d: canonical form not stable: %s then %s (%v)", i, canonical, again, err)
			}
		}
		cidrs := map[netip.Prefix]labels.Identity{}
		for i, p := range CIDRs(rules) {
			cidrs[p] = labels.MinCIDRIdentity + labels.Identity(i)
		}
		ids := map[labels.Identity]labels.Labels{256: {"app": "web"}, 257: {}}
		if _, err := Resolve(Input{Rules: rules, Identities: ids, CIDRs: cidrs}); err != nil {
			t.Fatalf("Resolve refused rules Parse accepted: %v", err)
		}
	})
}
