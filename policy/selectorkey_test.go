package policy

import (
	"math/rand/v2"
	"testing"

	"github.com/membrane-net/membrane/labels"
)

// TestSelectorKeyIsStringsEquality: two selectors have the same
// selectorKey exactly when they have the same labels.Selector.String,
// which resolution memoized by and an Index shared selectors by before.
func TestSelectorKeyIsStringsEquality(t *testing.T) {
	sels := []labels.Selector{
		{},
		{MatchLabels: map[string]string{}},
		{MatchLabels: map[string]string{"app": "web"}},
		{MatchLabels: map[string]string{"container:app": "web"}},
		{MatchLabels: map[string]string{"app": "web", "container:app": "web"}},
		{MatchLabels: map[string]string{"a": "b=c"}},
		{MatchLabels: map[string]string{"a=b": "c"}},
		{MatchLabels: map[string]string{"a": "1:x"}},
		{MatchLabels: map[string]string{"a": "1", "b": "2"}},
		{MatchLabels: map[string]string{"a": "12"}},
		{MatchExpressions: []labels.Requirement{{Key: "a", Operator: labels.OpExists}}},
		{MatchExpressions: []labels.Requirement{{Key: "a", Operator: labels.OpIn, Values: []string{"x", "y"}}}},
		{MatchExpressions: []labels.Requirement{{Key: "a", Operator: labels.OpIn, Values: []string{"y", "x"}}}},
		{MatchExpressions: []labels.Requirement{{Key: "a", Operator: labels.OpIn, Values: []string{"x,y"}}}},
		{MatchLabels: map[string]string{"a": "x"}, MatchExpressions: []labels.Requirement{{Key: "a", Operator: labels.OpExists}}},
		{MatchExpressions: []labels.Requirement{{Key: "a", Operator: labels.OpExists}, {Key: "b", Operator: labels.OpDoesNotExist}}},
		{MatchExpressions: []labels.Requirement{{Key: "b", Operator: labels.OpDoesNotExist}, {Key: "a", Operator: labels.OpExists}}},
		// A count of values followed by a value's length must not read
		// as another count: one value "1:a1:a…" against 13 values.
		{MatchExpressions: []labels.Requirement{{Key: "k", Operator: labels.OpIn, Values: []string{"1:a1:a1:a1:a1:a1:a0:0:0:0:0:0:"}}}},
		{MatchExpressions: []labels.Requirement{{Key: "k", Operator: labels.OpIn, Values: []string{"", "a", "a", "a", "a", "a", "a", "", "", "", "", "", ""}}}},
	}
	g := ruleGen{rand.New(rand.NewPCG(3, 4))}
	for range 300 {
		sels = append(sels, g.selector())
	}
	for i, a := range sels {
		for _, b := range sels[i:] {
			if sameKey, sameString := selectorKey(a) == selectorKey(b), a.String() == b.String(); sameKey != sameString {
				t.Errorf("%s and %s: same key %v, same String %v (keys %q, %q)", a, b, sameKey, sameString, selectorKey(a), selectorKey(b))
			}
		}
	}
}
