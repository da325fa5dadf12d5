package labels

import (
	"errors"
	"strings"
	"testing"
)

func TestSelectorMatches(t *testing.T) {
	web := Labels{"app": "web", "tier": "front", "a:b": "colon"}
	tests := []struct {
		name string
		sel  Selector
		want bool
	}{
		{"empty selector matches everything", Selector{}, true},
		{"matchLabels equal value", Selector{MatchLabels: map[string]string{"app": "web"}}, true},
		{"matchLabels other value", Selector{MatchLabels: map[string]string{"app": "db"}}, false},
		{"matchLabels missing key", Selector{MatchLabels: map[string]string{"env": "prod"}}, false},
		{"matchLabels empty value does not match a missing key", Selector{MatchLabels: map[string]string{"env": ""}}, false},
		{"matchLabels all pairs must hold", Selector{MatchLabels: map[string]string{"app": "web", "tier": "back"}}, false},
		{"container prefix is the plain key", Selector{MatchLabels: map[string]string{"container:app": "web"}}, true},
		{"container prefix keeps later colons", Selector{MatchLabels: map[string]string{"container:a:b": "colon"}}, true},
		{"In with the value", Selector{MatchExpressions: []Requirement{{Key: "app", Operator: OpIn, Values: []string{"db", "web"}}}}, true},
		{"In without the value", Selector{MatchExpressions: []Requirement{{Key: "app", Operator: OpIn, Values: []string{"db"}}}}, false},
		{"In on a missing key", Selector{MatchExpressions: []Requirement{{Key: "env", Operator: OpIn, Values: []string{""}}}}, false},
		{"NotIn without the value", Selector{MatchExpressions: []Requirement{{Key: "app", Operator: OpNotIn, Values: []string{"db"}}}}, true},
		{"NotIn with the value", Selector{MatchExpressions: []Requirement{{Key: "app", Operator: OpNotIn, Values: []string{"web"}}}}, false},
		{"NotIn on a missing key matches", Selector{MatchExpressions: []Requirement{{Key: "env", Operator: OpNotIn, Values: []string{"prod"}}}}, true},
		{"Exists on a present key", Selector{MatchExpressions: []Requirement{{Key: "container:tier", Operator: OpExists}}}, true},
		{"Exists on a missing key", Selector{MatchExpressions: []Requirement{{Key: "env", Operator: OpExists}}}, false},
		{"DoesNotExist on a missing key", Selector{MatchExpressions: []Requirement{{Key: "env", Operator: OpDoesNotExist}}}, true},
		{"DoesNotExist on a present key", Selector{MatchExpressions: []Requirement{{Key: "app", Operator: OpDoesNotExist}}}, false},
		{"unknown operator matches nothing", Selector{MatchExpressions: []Requirement{{Key: "app", Operator: "Foo"}}}, false},
		{"labels and expressions both hold", Selector{
			MatchLabels:      map[string]string{"app": "web"},
			MatchExpressions: []Requirement{{Key: "tier", Operator: OpIn, Values: []string{"front"}}},
		}, true},
		{"labels hold but an expression fails", Selector{
			MatchLabels:      map[string]string{"app": "web"},
			MatchExpressions: []Requirement{{Key: "tier", Operator: OpDoesNotExist}},
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.sel.Matches(web); got != tt.want {
				t.Errorf("%s.Matches(%s) = %v, want %v", tt.sel, web, got, tt.want)
			}
		})
	}
}

func TestEmptySelectorMatchesEmptyLabels(t *testing.T) {
	if !(Selector{}).Matches(nil) {
		t.Error("empty selector does not match an empty label set")
	}
	if (Selector{MatchLabels: map[string]string{"a": ""}}).Matches(nil) {
		t.Error("a non-empty selector matches an empty label set")
	}
}

func TestSelectorValidate(t *testing.T) {
	tests := []struct {
		name string
		sel  Selector
		want []string // every error line, in order; nil for valid
	}{
		{"empty selector is valid", Selector{}, nil},
		{"plain and container keys are valid", Selector{
			MatchLabels:      map[string]string{"app": "x", "container:a:b": "y"},
			MatchExpressions: []Requirement{{Key: "container:tier", Operator: OpExists}},
		}, nil},
		{"bad operator names the field", Selector{MatchExpressions: []Requirement{{Key: "a", Operator: OpIn, Values: []string{"x"}}, {Key: "a", Operator: "Foo"}}},
			[]string{`matchExpressions[1].operator: want In, NotIn, Exists or DoesNotExist, got "Foo"`}},
		{"operators are case sensitive", Selector{MatchExpressions: []Requirement{{Key: "a", Operator: "in", Values: []string{"x"}}}},
			[]string{`matchExpressions[0].operator: want In, NotIn, Exists or DoesNotExist, got "in"`}},
		{"In without values", Selector{MatchExpressions: []Requirement{{Key: "a", Operator: OpIn}}},
			[]string{`matchExpressions[0].values: operator In needs at least one value`}},
		{"Exists with values", Selector{MatchExpressions: []Requirement{{Key: "a", Operator: OpExists, Values: []string{"x"}}}},
			[]string{`matchExpressions[0].values: operator Exists takes no values`}},
		{"k8s source is refused", Selector{MatchLabels: map[string]string{"k8s:app": "x"}},
			[]string{`matchLabels["k8s:app"]: label source "k8s" is not supported: want "container" or no source (a Docker label key with a colon is written "container:k8s:app")`}},
		{"reserved source is refused", Selector{MatchExpressions: []Requirement{{Key: "reserved:host", Operator: OpExists}}},
			[]string{`matchExpressions[0].key: reserved label "reserved:host" cannot be selected: use the entities host, world, all or init (fromEntities, toEntities)`}},
		{"empty key", Selector{MatchLabels: map[string]string{"": "x"}},
			[]string{`matchLabels[""]: empty label key`}},
		{"empty key after container prefix", Selector{MatchExpressions: []Requirement{{Key: "container:", Operator: OpExists}}},
			[]string{`matchExpressions[0].key: empty label key after source "container"`}},
		{"two spellings of one key", Selector{MatchLabels: map[string]string{"app": "x", "container:app": "y"}},
			[]string{`matchLabels["container:app"]: key "container:app" names the same label as "app"`}},
		{"all errors are returned", Selector{
			MatchLabels:      map[string]string{"k8s:a": "x"},
			MatchExpressions: []Requirement{{Key: "", Operator: "Bad"}},
		}, []string{
			`matchLabels["k8s:a"]: label source "k8s" is not supported: want "container" or no source (a Docker label key with a colon is written "container:k8s:a")`,
			`matchExpressions[0].key: empty label key`,
			`matchExpressions[0].operator: want In, NotIn, Exists or DoesNotExist, got "Bad"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.sel.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tt.want)
			}
			if !errors.Is(err, ErrInvalidSelector) {
				t.Errorf("errors.Is(%v, ErrInvalidSelector) = false", err)
			}
			if got := strings.Split(err.Error(), "\n"); strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("Validate() =\n%s\nwant\n%s", err, strings.Join(tt.want, "\n"))
			}
			var se *SelectorError
			if !errors.As(err, &se) || se.Path == "" {
				t.Errorf("errors.As(%v, *SelectorError) found no path", err)
			}
		})
	}
}

func TestSelectorStringIsCanonical(t *testing.T) {
	a := Selector{MatchLabels: map[string]string{"b": "2", "container:a": "1"}}
	b := Selector{MatchLabels: map[string]string{"a": "1", "b": "2"}}
	if a.String() != b.String() {
		t.Errorf("%s != %s for equal selectors", a, b)
	}
	c := Selector{MatchLabels: map[string]string{"a": "1,b=2"}}
	if c.String() == b.String() {
		t.Errorf("different selectors share the string %s", c)
	}
}
