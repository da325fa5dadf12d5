package policy

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// checkEncode holds Encode of each rule to what encoding/json and
// Canonical write for it.
func checkEncode(t *testing.T, rules []Rule, from string) {
	t.Helper()
	for i := range rules {
		want, err := json.Marshal(rules[i])
		if err != nil {
			t.Fatal(err)
		}
		if got := Encode(&rules[i]); !bytes.Equal(got, want) {
			t.Fatalf("%s, rule %d: Encode\n %s\nencoding/json\n %s", from, i, got, want)
		}
		canon, err := Canonical(rules[i])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(canon, want) {
			t.Fatalf("%s, rule %d: Canonical of a parsed rule\n %s\ndiffers from its encoding\n %s", from, i, canon, want)
		}
	}
}

func TestEncodeWritesWhatEncodingJSONWrites(t *testing.T) {
	for seed := range uint64(2000) {
		g := ruleGen{rand.New(rand.NewPCG(seed, 13))}
		r := g.rule()
		if g.pick(3) == 0 {
			r.Labels = []Label{{Key: "name", Value: "n<&>\u2028" + strconv.Itoa(int(seed))}, {Key: "k", Source: "s\"\\\x01é"}}
			r.Description = "d\t\n\x7f\xff"
		}
		data, err := json.Marshal([]Rule{r})
		if err != nil {
			t.Fatal(err)
		}
		rules, err := Parse(data)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		checkEncode(t, rules, "seed "+strconv.Itoa(int(seed)))
	}
}

// TestEncodeOfTheFuzzCorpus checks the documents of the fuzz corpus that
// parse.
func TestEncodeOfTheFuzzCorpus(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "*", "*"))
	parsed := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range corpusStrings(b) {
			if rules, err := Parse([]byte(doc)); err == nil {
				checkEncode(t, rules, f)
				parsed++
			}
		}
	}
	t.Logf("%d corpus documents parsed", parsed)
}

// corpusStrings returns the string and []byte values of a fuzz corpus
// file ("go test fuzz v1").
func corpusStrings(b []byte) []string {
	var out []string
	for _, line := range bytes.Split(b, []byte("\n")) {
		for _, prefix := range []string{"string(", "[]byte("} {
			if rest, ok := bytes.CutPrefix(line, []byte(prefix)); ok {
				if s, err := strconv.Unquote(string(bytes.TrimSuffix(rest, []byte(")")))); err == nil {
					out = append(out, s)
				}
			}
		}
	}
	return out
}

// TestParseOfLargeDocumentsMatchesRuleByRule: documents large enough to
// be decoded on every CPU give the rules that parsing them one by one
// gives, and their problems are reported as for any document.
func TestParseOfLargeDocumentsMatchesRuleByRule(t *testing.T) {
	g := ruleGen{rand.New(rand.NewPCG(1, 2))}
	var docs []Rule
	for i := range 4000 {
		r := g.rule()
		r.Labels = []Label{{Key: "name", Value: "r" + strconv.Itoa(i)}}
		docs = append(docs, r)
	}
	data, err := json.Marshal(docs)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < minParallelBytes {
		t.Fatalf("document of %d bytes: too small to be parsed in parallel", len(data))
	}
	rules, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	for i := range docs {
		one, err := json.Marshal(docs[i])
		if err != nil {
			t.Fatal(err)
		}
		want, err := Parse(one)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(rules[i], want[0]) {
			t.Fatalf("rule %d: %+v, alone %+v", i, rules[i], want[0])
		}
	}

	docs[1500].Labels[0].Value = "r7" // a duplicate name
	docs[2000].Ingress = append(docs[2000].Ingress, IngressRule{FromEntities: []Entity{"cluster"}})
	data, _ = json.Marshal(docs)
	_, err = Parse(data)
	for _, want := range []string{`[1500].labels: rule name "r7" is also the name of rule [7]`, `[2000].ingress[`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse = %v, want a problem %q", err, want)
		}
	}
}
