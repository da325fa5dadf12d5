package labels

import "testing"

func TestLabelsStringIsCanonicalAndUnambiguous(t *testing.T) {
	if got, want := (Labels{"b": "2", "a": "1"}).String(), "a=1,b=2"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	// Without escaping these two would both read a=1,b=2.
	one := Labels{"a": "1,b=2"}.String()
	two := Labels{"a": "1", "b": "2"}.String()
	if one == two {
		t.Errorf("different label sets share the canonical form %q", one)
	}
	if got, want := (Labels{`k\`: `v,=`}).String(), `k\\=v\,\=`; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
