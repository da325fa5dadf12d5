package labels

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Selector selects label sets, like a Kubernetes label selector: every
// matchLabels pair and every matchExpressions requirement must hold. The
// empty selector selects every label set.
//
// A key may carry the source prefix "container:" ("container:app" and "app"
// are the same key); everything after that prefix is the Docker label key,
// colons included. Any other source prefix is invalid (see Validate).
type Selector struct {
	MatchLabels      map[string]string `json:"matchLabels,omitempty"`
	MatchExpressions []Requirement     `json:"matchExpressions,omitempty"`
}

// Requirement is one matchExpressions entry.
type Requirement struct {
	Key      string   `json:"key"`
	Operator string   `json:"operator"`
	Values   []string `json:"values,omitempty"`
}

// Requirement operators.
const (
	OpIn           = "In"           // the label exists and its value is one of Values
	OpNotIn        = "NotIn"        // the label is absent or its value is none of Values
	OpExists       = "Exists"       // the label exists, whatever its value
	OpDoesNotExist = "DoesNotExist" // the label is absent
)

// SourceContainer is the only label source a selector key may name.
const SourceContainer = "container"

// ErrInvalidSelector is matched (errors.Is) by every error Validate returns.
var ErrInvalidSelector = errors.New("invalid selector")

// SelectorError is one problem in a selector. Path is relative to the
// selector ("matchExpressions[0].operator"), so a caller can prefix it
// with the selector's own position.
type SelectorError struct {
	Path string
	Msg  string
}

func (e *SelectorError) Error() string { return e.Path + ": " + e.Msg }

// Is reports ErrInvalidSelector.
func (e *SelectorError) Is(target error) bool { return target == ErrInvalidSelector }

// Empty reports whether the selector has no condition, so it selects
// everything.
func (s Selector) Empty() bool {
	return len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0
}

// LabelKey returns the Docker label key a selector key names: the key
// without its "container:" prefix.
func LabelKey(key string) string {
	if k, ok := strings.CutPrefix(key, SourceContainer+":"); ok {
		return k
	}
	return key
}

// Matches reports whether the selector selects the label set. An
// operator it does not know matches nothing.
func (s Selector) Matches(l Labels) bool {
	for k, v := range s.MatchLabels {
		got, ok := l[LabelKey(k)]
		if !ok || got != v {
			return false
		}
	}
	for _, r := range s.MatchExpressions {
		if !r.Matches(l) {
			return false
		}
	}
	return true
}

// Matches reports whether the requirement holds for the label set.
func (r Requirement) Matches(l Labels) bool {
	v, ok := l[LabelKey(r.Key)]
	switch r.Operator {
	case OpIn:
		return ok && slices.Contains(r.Values, v)
	case OpNotIn:
		return !ok || !slices.Contains(r.Values, v)
	case OpExists:
		return ok
	case OpDoesNotExist:
		return !ok
	}
	return false
}

// Validate returns nil for a valid selector, or the errors.Join of one
// *SelectorError per problem, in a stable order.
func (s Selector) Validate() error {
	if s.Empty() || s.plainlyValid() {
		return nil
	}
	var errs []error
	fail := func(path, format string, args ...any) {
		errs = append(errs, &SelectorError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	var seen map[string]string // label key -> selector key
	keys := make([]string, 0, len(s.MatchLabels))
	for k := range s.MatchLabels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if seen == nil {
			seen = make(map[string]string, len(keys))
		}
		path := "matchLabels[" + strconv.Quote(k) + "]"
		if msg := checkKey(k); msg != "" {
			fail(path, "%s", msg)
			continue
		}
		lk := LabelKey(k)
		if other, dup := seen[lk]; dup {
			fail(path, "key %q names the same label as %q", k, other)
			continue
		}
		seen[lk] = k
	}
	for i, r := range s.MatchExpressions {
		path := "matchExpressions[" + strconv.Itoa(i) + "]"
		if msg := checkKey(r.Key); msg != "" {
			fail(path+".key", "%s", msg)
		}
		switch r.Operator {
		case OpIn, OpNotIn:
			if len(r.Values) == 0 {
				fail(path+".values", "operator %s needs at least one value", r.Operator)
			}
		case OpExists, OpDoesNotExist:
			if len(r.Values) != 0 {
				fail(path+".values", "operator %s takes no values", r.Operator)
			}
		default:
			fail(path+".operator", "want In, NotIn, Exists or DoesNotExist, got %q", r.Operator)
		}
	}
	return errors.Join(errs...)
}

// plainlyValid is Validate's fast path: true when nothing is wrong and
// no key is written with a source prefix (so no two keys can name the
// same label). It allocates nothing.
func (s Selector) plainlyValid() bool {
	for k := range s.MatchLabels {
		if k == "" || strings.IndexByte(k, ':') >= 0 {
			return false
		}
	}
	for _, r := range s.MatchExpressions {
		if r.Key == "" || strings.IndexByte(r.Key, ':') >= 0 {
			return false
		}
		switch r.Operator {
		case OpIn, OpNotIn:
			if len(r.Values) == 0 {
				return false
			}
		case OpExists, OpDoesNotExist:
			if len(r.Values) != 0 {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// checkKey returns what is wrong with a selector key, or "".
func checkKey(key string) string {
	if key == "" {
		return "empty label key"
	}
	source, rest, ok := strings.Cut(key, ":")
	if !ok {
		return ""
	}
	switch source {
	case SourceContainer:
		if rest == "" {
			return fmt.Sprintf("empty label key after source %q", source)
		}
		return ""
	case "reserved":
		return fmt.Sprintf("reserved label %q cannot be selected: use the entities host, world, all or init (fromEntities, toEntities)", key)
	}
	return fmt.Sprintf("label source %q is not supported: want %q or no source (a Docker label key with a colon is written %q)",
		source, SourceContainer, SourceContainer+":"+key)
}

// String returns a canonical text of the selector: equal selectors (same
// labels, same requirements in the same order) have equal strings. It is
// meant for keys and messages, not for parsing.
func (s Selector) String() string {
	var b strings.Builder
	keys := make([]string, 0, len(s.MatchLabels))
	for k := range s.MatchLabels {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y string) int {
		if c := strings.Compare(LabelKey(x), LabelKey(y)); c != 0 {
			return c
		}
		return strings.Compare(x, y)
	})
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Quote(LabelKey(k)))
		b.WriteByte('=')
		b.WriteString(strconv.Quote(s.MatchLabels[k]))
	}
	for i, r := range s.MatchExpressions {
		if i > 0 || len(keys) > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Quote(LabelKey(r.Key)))
		b.WriteByte(' ')
		b.WriteString(r.Operator)
		if len(r.Values) > 0 {
			b.WriteString(" (")
			for j, v := range r.Values {
				if j > 0 {
					b.WriteByte(',')
				}
				b.WriteString(strconv.Quote(v))
			}
			b.WriteByte(')')
		}
	}
	b.WriteByte('}')
	return b.String()
}
