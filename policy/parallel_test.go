package policy

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// checkParallelParse holds the parallel parse of a document to Parse's
// sequential one: the same rules when the document is valid, a refusal
// (and so the sequential parse, with its messages) when it is not.
func checkParallelParse(t *testing.T, doc []byte, from string) {
	t.Helper()
	want, err := parse(doc, true) // sequential: paths are never parsed in parallel
	got, _, ok := parseArrayInParallel(doc)
	switch {
	case ok && err != nil:
		t.Fatalf("%s: parallel parse accepted a document Parse refuses (%v):\n%s", from, err, doc)
	case ok && !reflect.DeepEqual(got, want):
		t.Fatalf("%s: parallel parse gives\n %+v\nParse gives\n %+v", from, got, want)
	case !ok && err == nil && len(want) > 1 && isArray(doc):
		t.Fatalf("%s: parallel parse refused a valid array of %d rules:\n%s", from, len(want), doc)
	}
}

func isArray(doc []byte) bool {
	i := skipJSONSpace(doc, 0)
	return i < len(doc) && doc[i] == '['
}

func TestParallelParseAgreesWithParse(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "*", "*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		checkParallelParse(t, b, f)
		for _, doc := range corpusStrings(b) {
			checkParallelParse(t, []byte(doc), f)
		}
	}
	for seed := range uint64(300) {
		g := ruleGen{rand.New(rand.NewPCG(seed, 17))}
		var rules []Rule
		for range 2 + g.pick(5) {
			rules = append(rules, g.rule())
		}
		doc, err := json.MarshalIndent(rules, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		checkParallelParse(t, doc, "generated")
		// Damaged copies: cut anywhere, a byte changed.
		cut := g.pick(len(doc))
		checkParallelParse(t, doc[:cut], "cut")
		bad := append([]byte(nil), doc...)
		bad[g.pick(len(bad))] = "\"{}[],:\\x "[g.pick(10)]
		checkParallelParse(t, bad, "changed")
	}
	for _, doc := range []string{
		`[{"endpointSelector":{"matchLabels":{"a":"]}\"["}},"ingress":[{}]},{"endpointSelector":{},"egress":[{}]}]`,
		`[{"endpointSelector":{"matchLabels":{"a":"x\\","b":"\\\"],{","c":"\\\\"}},"ingress":[{}]},{"endpointSelector":{},"egress":[{}]}]`,
		"\uFEFF [ {\"endpointSelector\":{},\"egress\":[{}]} , {\"endpointSelector\":{},\"ingress\":[{}]} ] \n",
		`[{"endpointSelector":{},"egress":[{}]},{"endpointSelector":{},"egress":[{}]}] x`,
		`[{"endpointSelector":{},"egress":[{}]},,{"endpointSelector":{},"egress":[{}]}]`,
		`[{"endpointSelector":{},"egress":[{}]},{"endpointSelector":{},"egress":[{}]},]`,
	} {
		checkParallelParse(t, []byte(doc), doc)
	}
}
