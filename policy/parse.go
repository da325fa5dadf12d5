package policy

import (
	"bytes"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
)

// Parse reads a policy document: a JSON or YAML array of rules, or a
// single rule object. JSON is assumed when the first non-blank character
// is '[' or '{', YAML otherwise. The whole document is checked before
// anything is returned: unknown fields, duplicate keys, values of the
// wrong type or out of range, two rules with the same name. On any
// problem Parse returns no rules and an error matching ErrInvalidPolicy
// that lists every problem (up to 50) as a *FieldError naming its field.
//
// The rules returned are normalized so that equal meaning gives equal
// rules: protocols upper case (an absent one is ANY), ports and ICMP type
// numbers in decimal, ICMP families spelled IPv4 or IPv6 (an absent one
// is IPv4), CIDRs masked (a bare address becomes a /32 or /128), and
// empty lists that mean nothing dropped. Peer lists keep the difference
// between absent and empty.
//
// Rules read from one document may share their selectors' MatchLabels
// maps and MatchExpressions slices (a large document repeats a few
// selectors many times, and each is decoded once); the rules are for
// reading: copy a selector before changing it.
func Parse(data []byte) ([]Rule, error) {
	rules, _, err := ParseCompiled(data)
	return rules, err
}

// Compiled is a rule as Parse checked it, in the form an Index resolves
// (see Index.PrepareCompiled).
type Compiled struct{ cr *compiledRule }

// ParseCompiled is Parse, and also returns each rule compiled, so that an
// import checks a rule once rather than once to parse it and again to
// resolve it.
func ParseCompiled(data []byte) ([]Rule, []Compiled, error) {
	// Paths cost more than everything else; a valid document, the usual
	// case, needs none. Only a document with problems is read again with
	// paths, for the messages.
	rules, compiled, err := parseCompiled(data, false)
	if err != nil {
		if _, withPaths := parse(data, true); withPaths != nil {
			err = withPaths
		}
		return nil, nil, err
	}
	return rules, compiled, nil
}

func parse(data []byte, withPaths bool) ([]Rule, error) {
	rules, _, err := parseCompiled(data, withPaths)
	return rules, err
}

func parseCompiled(data []byte, withPaths bool) ([]Rule, []Compiled, error) {
	if !withPaths {
		if rules, compiled, ok := parseValidArrayInParallel(data); ok {
			return rules, compiled, nil
		}
	}
	tree, err := parseTree(data, withPaths)
	if err != nil {
		return nil, nil, err
	}
	d := &decoder{paths: withPaths}
	var (
		rules      []Rule
		paths      []string
		decodeErrs [][]error // problems found decoding each rule
	)
	decode := func(n *node, path string) {
		before := len(d.errs)
		rules = append(rules, d.rule(n, path))
		paths = append(paths, path)
		decodeErrs = append(decodeErrs, d.errs[before:len(d.errs):len(d.errs)])
	}
	switch tree.kind {
	case kindArray:
		d.array(tree, "", func(_ int, v *node, p string) { decode(v, p) })
	case kindObject:
		decode(tree, "")
	default:
		d.want("", "an array of rules or a rule object", tree)
	}

	errs := d.errs
	names := map[string]string{} // name -> path of the rule
	compiled := make([]Compiled, len(rules))
	for i := range rules {
		cr, ruleErrs := compileRule(&rules[i], paths[i], true, withPaths)
		if len(ruleErrs) > 0 {
			errs = append(errs, covered(ruleErrs, paths[i], decodeErrs[i])...)
			continue
		}
		compiled[i] = Compiled{cr}
		if len(decodeErrs[i]) > 0 {
			continue
		}
		if name := Name(rules[i]); name != "" {
			if other, dup := names[name]; dup {
				errs = append(errs, &FieldError{Path: childPath(paths[i], "labels"),
					Msg: fmt.Sprintf("rule name %q is also the name of rule %s", name, other)})
			}
			names[name] = paths[i]
		}
	}
	if len(errs) > 0 {
		// Problems found while decoding and while checking values are
		// both in document order within each pass; sort them together.
		slices.SortStableFunc(errs, func(a, b error) int { return comparePaths(pathOf(a), pathOf(b)) })
		return nil, nil, joinErrors(errs)
	}
	if rules == nil {
		rules = []Rule{}
	}
	return rules, compiled, nil
}

// minParallelBytes is the size from which a JSON array of rules is
// parsed, decoded and checked on every CPU.
const minParallelBytes = 256 << 10

// parseValidArrayInParallel parses a large JSON array of rules on every
// CPU, for the usual case of a valid document: a quick scan finds where
// each element starts, then each CPU parses, decodes and checks a run of
// elements. It returns the rules and true when it found no problem at all,
// and false otherwise, or for any other document (parse then goes through
// it the usual way, for the messages).
func parseValidArrayInParallel(data []byte) ([]Rule, []Compiled, bool) {
	if len(data) < minParallelBytes {
		return nil, nil, false
	}
	return parseArrayInParallel(data)
}

func parseArrayInParallel(data []byte) ([]Rule, []Compiled, bool) {
	data = bytes.TrimPrefix(data, utf8BOM)
	starts, ok := arrayElements(data)
	if !ok || len(starts) < 2 {
		return nil, nil, false
	}
	rules := make([]Rule, len(starts))
	compiled := make([]Compiled, len(starts))
	chunks := min(runtime.GOMAXPROCS(0), 8)
	size := (len(rules) + chunks - 1) / chunks
	failed := make([]bool, chunks)
	var wg sync.WaitGroup
	for c := range chunks {
		wg.Go(func() {
			p := &jsonParser{data: data} // one per CPU: its nodes come from one slab
			for i := c * size; i < min((c+1)*size, len(rules)); i++ {
				if !parseElement(p, starts[i], &rules[i], &compiled[i]) {
					failed[c] = true
					return
				}
			}
		})
	}
	wg.Wait()
	if slices.Contains(failed, true) {
		return nil, nil, false
	}
	names := make(map[string]bool, len(rules))
	for i := range rules {
		if name := Name(rules[i]); name != "" {
			if names[name] {
				return nil, nil, false
			}
			names[name] = true
		}
	}
	return rules, compiled, true
}

// parseElement parses, decodes and checks the array element at start,
// which must end at a ',' or the closing ']'.
func parseElement(p *jsonParser, start int, r *Rule, c *Compiled) bool {
	p.pos = start
	if !p.fastRule(r) || !elementEnds(p) {
		// Not in the fast path's shape, or not valid: the usual way.
		*r = Rule{}
		p.pos = start
		n, err := p.value("", 1)
		if err != nil || !elementEnds(p) {
			return false
		}
		d := &decoder{}
		if *r = d.rule(n, ""); len(d.errs) > 0 {
			return false
		}
	}
	cr, errs := compileRuleKnown(r, "", true, false, p.known)
	c.cr = cr
	return len(errs) == 0
}

// elementEnds reports whether an array element ends at p.pos: a ',' or
// the closing ']' follows.
func elementEnds(p *jsonParser) bool {
	p.skipSpace()
	return p.pos < len(p.data) && (p.data[p.pos] == ',' || p.data[p.pos] == ']')
}

// arrayElements returns where each element of the top-level JSON array in
// data starts, scanning only strings and brackets; false when data is not
// an array followed by nothing but space. Element syntax is left to the
// parser.
func arrayElements(data []byte) ([]int, bool) {
	i := skipJSONSpace(data, 0)
	if i >= len(data) || data[i] != '[' {
		return nil, false
	}
	var starts []int
	depth, inString, end := 0, false, -1
	expectElement := true
	for ; i < len(data) && end < 0; i++ {
		c := data[i]
		switch {
		case inString:
			if c == '\\' {
				i++
			} else if c == '"' {
				inString = false
			}
			continue
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			continue
		}
		if depth == 1 && expectElement {
			if c == ']' && len(starts) > 0 {
				return nil, false // a comma before the closing bracket
			}
			starts = append(starts, i)
			expectElement = false
		}
		switch c {
		case '"':
			inString = true
		case '[', '{':
			depth++
		case ']', '}':
			if depth--; depth == 0 {
				end = i
			}
		case ',':
			expectElement = depth == 1
		}
	}
	if end < 0 || skipJSONSpace(data, end+1) != len(data) {
		return nil, false
	}
	return starts, true
}

func skipJSONSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// covered drops the value problems of a rule that only echo a problem
// found while decoding it: those at or under a field that did not decode
// (it holds a zero value), and those about the rule as a whole.
func covered(errs []error, rulePath string, decodeErrs []error) []error {
	if len(decodeErrs) == 0 {
		return errs
	}
	var out []error
next:
	for _, err := range errs {
		p := pathOf(err)
		if p == rulePath {
			continue
		}
		for _, de := range decodeErrs {
			dp := pathOf(de)
			if p == dp || strings.HasPrefix(p, dp+".") || strings.HasPrefix(p, dp+"[") {
				continue next
			}
		}
		out = append(out, err)
	}
	return out
}

func pathOf(err error) string {
	if fe, ok := err.(*FieldError); ok {
		return fe.Path
	}
	return ""
}

// comparePaths orders paths by the index of the rule they are in, so that
// problems of one rule stay together; within a rule the order is kept.
func comparePaths(a, b string) int {
	return ruleIndex(a) - ruleIndex(b)
}

func ruleIndex(path string) int {
	if len(path) < 3 || path[0] != '[' {
		return 0
	}
	n := 0
	for i := 1; i < len(path) && path[i] != ']'; i++ {
		if path[i] < '0' || path[i] > '9' {
			return 0
		}
		n = n*10 + int(path[i]-'0')
	}
	return n
}

// CIDRs returns every prefix the rules name (fromCIDR, toCIDR, the cidr
// and except of fromCIDRSet and toCIDRSet), masked, without duplicates,
// sorted (IPv4 first, then by address, then by length). Each needs a CIDR
// identity in Input.CIDRs. Values that do not parse are skipped.
func CIDRs(rules []Rule) []netip.Prefix {
	var out []netip.Prefix
	add := func(s string, bareIP bool) {
		if p, msg := parseCIDR(s, bareIP); msg == "" {
			out = append(out, p)
		}
	}
	peers := func(cidr []string, sets []CIDRRule) {
		for _, s := range cidr {
			add(s, true)
		}
		for _, set := range sets {
			add(set.Cidr, false)
			for _, e := range set.Except {
				add(e, false)
			}
		}
	}
	for i := range rules {
		r := &rules[i]
		for _, s := range r.Ingress {
			peers(s.FromCIDR, s.FromCIDRSet)
		}
		for _, s := range r.IngressDeny {
			peers(s.FromCIDR, s.FromCIDRSet)
		}
		for _, s := range r.Egress {
			peers(s.ToCIDR, s.ToCIDRSet)
		}
		for _, s := range r.EgressDeny {
			peers(s.ToCIDR, s.ToCIDRSet)
		}
	}
	slices.SortFunc(out, comparePrefixes)
	return slices.Compact(out)
}

// comparePrefixes orders IPv4 before IPv6, then by address, then by
// length, so the prefixes inside a prefix P are contiguous from P on.
func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
