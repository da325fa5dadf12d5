package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// toAny turns a tree into what encoding/json's Unmarshal (with UseNumber)
// gives, to compare the two parsers.
func toAny(n *node) any {
	switch n.kind {
	case kindNull:
		return nil
	case kindBool:
		return n.text == "true"
	case kindNumber:
		return json.Number(n.text)
	case kindString:
		return n.text
	case kindObject:
		m := make(map[string]any, len(n.members))
		for _, mb := range n.members {
			m[mb.key] = toAny(mb.val)
		}
		return m
	case kindArray:
		a := make([]any, 0, len(n.items))
		for _, it := range n.items {
			a = append(a, toAny(it))
		}
		return a
	}
	panic("unknown kind")
}

// checkJSONTree compares jsonTree with encoding/json on one input: both
// accept it with the same value, or both refuse it. jsonTree also refuses
// duplicate keys and deep nesting, which encoding/json accepts.
func checkJSONTree(t *testing.T, data []byte) {
	t.Helper()
	tree, err := jsonTree(data)
	var fe *FieldError
	if errors.As(err, &fe) {
		return // duplicate key or too deep: refused on purpose
	}
	valid := json.Valid(data)
	var want any
	if valid {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		if err := dec.Decode(&want); err != nil {
			t.Fatalf("encoding/json: Valid(%q) but Decode: %v", data, err)
		}
	}
	switch {
	case valid && err != nil:
		t.Fatalf("jsonTree(%q) = %v, encoding/json accepts it", data, err)
	case !valid && err == nil:
		t.Fatalf("jsonTree(%q) accepted what encoding/json refuses", data)
	case valid:
		if got := toAny(tree); !reflect.DeepEqual(got, want) {
			t.Fatalf("jsonTree(%q) = %#v, encoding/json gives %#v", data, got, want)
		}
	}
	if err != nil && !errors.Is(err, ErrInvalidPolicy) {
		t.Fatalf("jsonTree(%q) error %v does not match ErrInvalidPolicy", data, err)
	}
}

func TestJSONTreeAgreesWithEncodingJSON(t *testing.T) {
	for _, doc := range []string{
		`{}`, `[]`, ` [ 1 , -0.5e+3, 0, true, false, null, "x" ] `, `{"a":{"b":[{}]}}`,
		`"\u00e9\n\t\\\"\/\b\f\r"`, `"\ud83d\ude00"`, `"\ud83d"`, `"\ud83dx"`, `"\ude00\ud83d"`, "\"\xff\xfe\"", "\"caf\xc3\xa9\"",
		`01`, `-`, `1.`, `1e`, `.5`, `+1`, `[1,]`, `{"a":1,}`, `{"a" 1}`, `{1:2}`, `"abc`, `"\x"`, `"\u12"`, "\"a\x01\"",
		`tru`, `nul`, `[1] [2]`, `{"a":1}}`, ``, ` `, `[`, `{"a":`, `-01`, `1E5`, `2e-0`,
	} {
		checkJSONTree(t, []byte(doc))
	}
}

func TestJSONTreeRefusesDuplicateKeysAndDeepNesting(t *testing.T) {
	if _, err := jsonTree([]byte(`{"a":1,"b":{"c":1,"c":2}}`)); err == nil || err.Error() != "b.c: duplicate key" {
		t.Errorf("duplicate key: err = %v", err)
	}
	deep := make([]byte, 0, 200)
	for range 100 {
		deep = append(deep, '[')
	}
	if _, err := jsonTree(deep); err == nil || !errors.Is(err, ErrInvalidPolicy) {
		t.Errorf("deep nesting: err = %v", err)
	}
}

func FuzzJSONTree(f *testing.F) {
	f.Add([]byte(designExample))
	f.Add([]byte(`"\ud83d\ude00\u0041"`))
	f.Add([]byte(`[1e10, -0, {"": null}]`))
	f.Fuzz(checkJSONTree)
}

func TestYAMLAliasesCannotExplode(t *testing.T) {
	doc := "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
	prev := "a"
	for _, name := range []string{"b", "c", "d", "e", "f", "g", "h"} {
		doc += name + ": &" + name + " [*" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + "]\n"
		prev = name
	}
	_, err := Parse([]byte(doc))
	if err == nil || !strings.Contains(err.Error(), "YAML aliases expand to too many values") {
		t.Errorf("Parse(billion laughs) = %v", err)
	}
}
