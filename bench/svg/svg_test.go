package svg

import (
	"encoding/xml"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// parse checks that doc is well-formed XML with an svg root.
func parse(t *testing.T, doc []byte) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(string(doc)))
	root := ""
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, doc)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
}

var rectRE = regexp.MustCompile(`<rect x="([\d.]+)" y="\d+" width="([\d.]+)"`)

// barWidths returns the widths of the bars (every rect but the background).
func barWidths(doc []byte) []float64 {
	var ws []float64
	for _, m := range rectRE.FindAllStringSubmatch(string(doc), -1) {
		w, _ := strconv.ParseFloat(m[2], 64)
		ws = append(ws, w)
	}
	return ws
}

func TestRenderDrawsBarsProportionalToValues(t *testing.T) {
	c := Chart{Title: "ratios & <things>", Unit: "ratio", Reference: 1, Groups: []Group{
		{Label: "rr", Bars: []Bar{{Label: "a ÷ b", Value: 0.5, Low: 0.4, High: 0.6}, {Label: "c ÷ d", Value: 1.0, Low: 0.9, High: 1.1}}},
	}}
	doc := c.Render()
	parse(t, doc)
	ws := barWidths(doc)
	if len(ws) != 2 {
		t.Fatalf("%d bars, want 2", len(ws))
	}
	if math.Abs(ws[1]/ws[0]-2) > 0.01 {
		t.Errorf("bar widths %v: want the 1.0 bar twice the 0.5 bar", ws)
	}
	for _, want := range []string{"ratios &amp; &lt;things&gt;", "a ÷ b", "stroke-dasharray"} {
		if !strings.Contains(string(doc), want) {
			t.Errorf("chart lacks %q", want)
		}
	}
}

func TestRenderLogScaleSpansDecades(t *testing.T) {
	c := Chart{Title: "install", Unit: "ms", Log: true, Groups: []Group{
		{Label: "10k", Bars: []Bar{{Label: "fast", Value: 1, Low: 1, High: 1}, {Label: "slow", Value: 1000, Low: 900, High: 1100}}},
	}}
	doc := c.Render()
	parse(t, doc)
	ws := barWidths(doc)
	if len(ws) != 2 || ws[1] <= ws[0]*2 {
		t.Errorf("log bars %v: want the 1000 bar much longer than the 1 bar", ws)
	}
	for _, tick := range []string{">1<", ">10<", ">100<", ">1000<"} {
		if !strings.Contains(string(doc), tick) {
			t.Errorf("log axis lacks tick %s", tick)
		}
	}
}

func TestRenderShowsMissingAndBadValuesAsNA(t *testing.T) {
	c := Chart{Title: "t", Unit: "u", Log: true, Groups: []Group{
		{Label: "g", Bars: []Bar{{Label: "missing", Missing: true}, {Label: "nan", Value: math.NaN()}, {Label: "zero on log", Value: 0}}},
	}}
	doc := c.Render()
	parse(t, doc)
	if n := strings.Count(string(doc), ">n/a<"); n != 3 {
		t.Errorf("%d n/a labels, want 3", n)
	}
	if ws := barWidths(doc); len(ws) != 0 {
		t.Errorf("bars drawn for missing values: %v", ws)
	}
}

func TestTickLabelsHideFloatError(t *testing.T) {
	for v, want := range map[float64]string{0.1 * 6: "0.6", 1e6: "1000000", 0: "0", 2.5: "2.5"} {
		if got := tickLabel(v); got != want {
			t.Errorf("tickLabel(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestNiceStep(t *testing.T) {
	for raw, want := range map[float64]float64{0.17: 0.2, 3: 5, 12: 20, 45000: 50000, 0: 1} {
		if got := niceStep(raw); math.Abs(got-want) > 1e-9 {
			t.Errorf("niceStep(%v) = %v, want %v", raw, got, want)
		}
	}
}
