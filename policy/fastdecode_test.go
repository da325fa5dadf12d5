package policy

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// checkFastRule holds the fast decoder to the tree on one rule object: when
// it takes the rule, the tree takes it too, without a problem, and decodes
// the same Rule.
func checkFastRule(t *testing.T, doc []byte, from string) (took bool) {
	t.Helper()
	fp := &jsonParser{data: doc}
	var fast Rule
	if !fp.fastRule(&fast) {
		return false
	}
	fp.skipSpace()
	tp := &jsonParser{data: doc}
	n, err := tp.value("", 1)
	if err != nil {
		t.Fatalf("%s: the fast decoder took a rule the tree parser refuses (%v):\n%s", from, err, doc)
	}
	tp.skipSpace()
	if fp.pos != tp.pos {
		t.Fatalf("%s: the fast decoder stops at byte %d, the tree parser at %d:\n%s", from, fp.pos, tp.pos, doc)
	}
	d := &decoder{paths: true}
	tree := d.rule(n, "")
	if len(d.errs) > 0 {
		t.Fatalf("%s: the fast decoder took a rule the tree decoder refuses (%v):\n%s", from, d.errs, doc)
	}
	if !reflect.DeepEqual(fast, tree) {
		t.Fatalf("%s: the fast decoder gives\n %#v\nthe tree\n %#v\nof %s", from, fast, tree, doc)
	}
	return true
}

func TestFastRuleDecodesAsTheTree(t *testing.T) {
	took := 0
	for seed := range uint64(2000) {
		g := ruleGen{rand.New(rand.NewPCG(seed, 29))}
		doc, err := json.Marshal(g.rule())
		if err != nil {
			t.Fatal(err)
		}
		if checkFastRule(t, doc, "generated") {
			took++
		}
		// Damaged copies: cut anywhere, a byte changed.
		checkFastRule(t, doc[:g.pick(len(doc))], "cut")
		bad := []byte(string(doc))
		bad[g.pick(len(bad))] = "\"{}[],:\\xn0 "[g.pick(12)]
		checkFastRule(t, bad, "changed")
	}
	t.Logf("the fast decoder took %d of 2000 generated rules", took)
	if took < 500 {
		t.Errorf("the fast decoder took %d of 2000 generated rules: it is not the fast path", took)
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "*", "*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range corpusStrings(b) {
			checkFastRule(t, []byte(doc), f)
		}
	}
	for _, doc := range []string{
		// What the fast decoder gives up on, and what it takes.
		`{"endpointSelector":{},"ingress":[{}],"labels":null}`,
		`{"endpointSelector":{},"ingress":[{}],"ingress":[{}]}`,
		`{"endpointSelector":{"matchLabels":{"a":"1","a":"2"}},"ingress":[{}]}`,
		`{"endpointSelector":{"matchLabels":{"a":1}},"ingress":[{}]}`,
		`{"endpointSelector":{"matchLabels":{}},"ingress":[],"egress":[{"toPorts":[{},{"ports":[]}]}]}`,
		`{"endpointSelector":{},"ingress":[{"fromEntities":[],"toPorts":[{"ports":[{"port":"80"}]}]}]}`,
		`{"endpointSelector":{},"ingress":[{"fromCIDRSet":[{"cidr":"10.0.0.0/8","except":[]}]}]}`,
		`{"endpointSelector":{},"egress":[{"toCIDR":["10.0.0.0/8"],"toPorts":[{"ports":[{"port":"80","endPort":90}]}]}]}`,
		`{"endpointSelector":{},"egress":[{"icmps":[{"fields":[{"type":8}]}]}]}`,
		`{"endpointSelector":{},"egressDeny":[{"toEndpoints":[{"matchExpressions":[{"key":"a","operator":"In","values":["x","\u00e9\\n"]}]}]}]}`,
		`{"endpointSelector":{},"enableDefaultDeny":{"ingress":false},"ingress":[{}]}`,
		`{"labels":[{"key":"name","value":"x","source":"s"}],"endpointSelector":{},"description":"d","ingressDeny":[{"fromEndpoints":[]}]}`,
		` { "endpointSelector" : { } , "ingress" : [ { } ] } `,
		`{"ingress":[{}]}`,
		`{"endpointSelector":{},"ingress":[{"toPorts":[{"ports":[{"protocol":"TCP"}]}]}]}`,
		`{"endpointSelector":{},"ingress":[{"fromEndpoints":[{}],"fromEndpoints":[]}]}`,
		`{"endpointSelector":{},"ingress":[{"toPorts":[{"ports":[{"port":"1","port":"2"}]}]}]}`,
	} {
		checkFastRule(t, []byte(doc), doc)
	}
	// The rules imports are made of take the fast path.
	for _, doc := range []string{
		`{"labels":[{"key":"name","value":"bench-filler-1"}],"endpointSelector":{"matchLabels":{"mbrbench.role":"server","mbrbench.setup":"policy"}},"ingress":[{"fromEndpoints":[{"matchLabels":{"mbrbench.role":"client","mbrbench.setup":"policy"}}],"toPorts":[{"ports":[{"port":"1","protocol":"TCP"}]}]}]}`,
		designExample[strings.Index(designExample, "{") : strings.LastIndex(designExample, "}")+1],
	} {
		if !checkFastRule(t, []byte(doc), doc) {
			t.Errorf("the fast decoder gave up on\n%s", doc)
		}
	}
}

// TestSharedSelectorsDecodeAsTheTree: rules that repeat selectors (which
// the fast decoder decodes once and shares), written alike or not, with
// one problem among them, read as the tree reads them.
func TestSharedSelectorsDecodeAsTheTree(t *testing.T) {
	sels := []string{
		`{"matchLabels":{"app":"web","tier":"front"}}`,
		`{ "matchLabels" : { "tier":"front", "app":"web" } }`,
		`{"matchLabels":{"app":"db"},"matchExpressions":[{"key":"env","operator":"In","values":["a","b"]}]}`,
		`{}`,
		`{"matchLabels":{"app":"we\"b"}}`,
	}
	var b strings.Builder
	b.WriteString("[")
	for i := range 200 {
		if i > 0 {
			b.WriteString(",")
		}
		sel, peer := sels[i%len(sels)], sels[(i/3)%len(sels)]
		b.WriteString(`{"labels":[{"key":"name","value":"r` + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + `-` + strconv.Itoa(i) + `"}],"endpointSelector":` + sel +
			`,"ingress":[{"fromEndpoints":[` + peer + `,` + sel + `],"toPorts":[{"ports":[{"port":"` + strconv.Itoa(1+i) + `","protocol":"TCP"}]}]}]}`)
	}
	b.WriteString("]")
	doc := []byte(b.String())
	checkParallelParse(t, doc, "shared selectors")
	if _, _, ok := parseArrayInParallel(doc); !ok {
		t.Fatal("the parallel parse refused a valid document")
	}
	// A selector that repeats one seen before but for a duplicate key.
	bad := strings.Replace(b.String(), `{ "matchLabels" : { "tier":"front", "app":"web" } }`, `{ "matchLabels" : { "app":"front", "app":"web" } }`, 1)
	checkParallelParse(t, []byte(bad), "duplicate key in a shared selector")
}
