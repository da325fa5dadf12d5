// Package svg draws the benchmark report's charts: horizontal bar charts,
// bars in labelled groups, each bar a median with a whisker for its
// min–max range, on a linear or logarithmic axis. The output is plain SVG
// 1.1 with no script and no external reference.
package svg

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"strconv"
	"strings"
)

// Bar is one bar: Value is drawn as the bar, Low–High as its whisker.
type Bar struct {
	Label            string
	Value, Low, High float64
	// Missing draws the label with "n/a" and no bar.
	Missing bool
}

// Group is a labelled set of bars; bars at the same position in every
// group share a colour.
type Group struct {
	Label string
	Bars  []Bar
}

// Chart is a whole chart.
type Chart struct {
	Title string
	Unit  string
	// Reference draws a dashed line at this value when nonzero.
	Reference float64
	// Log uses a base-10 logarithmic axis; values must be positive.
	Log    bool
	Groups []Group
}

// Layout, in pixels.
const (
	width       = 820
	labelWidth  = 300
	rightMargin = 90
	titleHeight = 34
	groupHeader = 22
	barHeight   = 16
	barGap      = 6
	groupGap    = 10
	axisHeight  = 40
)

var palette = []string{"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948"}

// Render returns the chart as an SVG document.
func (c Chart) Render() []byte {
	ax := c.axis()
	height := titleHeight + axisHeight
	for _, g := range c.Groups {
		height += groupHeader + len(g.Bars)*(barHeight+barGap) + groupGap
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", 10, esc(c.Title))

	plotTop, plotBottom := titleHeight, height-axisHeight
	c.drawGrid(&b, ax, plotTop, plotBottom)
	y := plotTop
	for _, g := range c.Groups {
		fmt.Fprintf(&b, `<text x="10" y="%d" font-weight="bold">%s</text>`+"\n", y+15, esc(g.Label))
		y += groupHeader
		for i, bar := range g.Bars {
			c.drawBar(&b, ax, bar, palette[i%len(palette)], y)
			y += barHeight + barGap
		}
		y += groupGap
	}
	if c.Reference != 0 && ax.contains(c.Reference) {
		x := ax.x(c.Reference)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#333" stroke-dasharray="4 3"/>`+"\n", x, plotTop, x, plotBottom)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#333">%s</text>`+"\n", x, plotTop-2, esc(Format(c.Reference)))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", (labelWidth+width-rightMargin)/2, height-6, esc(c.Unit))
	b.WriteString("</svg>\n")
	return b.Bytes()
}

func (c Chart) drawGrid(b *bytes.Buffer, ax axis, top, bottom int) {
	for _, t := range ax.ticks() {
		x := ax.x(t)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x, top, x, bottom)
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%s</text>`+"\n", x, bottom+15, esc(tickLabel(t)))
	}
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#555"/>`+"\n", labelWidth, bottom, width-rightMargin, bottom)
}

func (c Chart) drawBar(b *bytes.Buffer, ax axis, bar Bar, colour string, y int) {
	mid := y + barHeight/2
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", labelWidth-8, mid+4, esc(bar.Label))
	if bar.Missing || !finite(bar.Value) || (c.Log && bar.Value <= 0) {
		fmt.Fprintf(b, `<text x="%d" y="%d" fill="#888">n/a</text>`+"\n", labelWidth+4, mid+4)
		return
	}
	x0, x1 := ax.x(ax.lo), ax.x(bar.Value)
	fmt.Fprintf(b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", x0, y, math.Max(x1-x0, 1), barHeight, colour)
	end := x1
	if finite(bar.Low) && finite(bar.High) && bar.High > bar.Low && (!c.Log || bar.Low > 0) {
		lo, hi := ax.x(bar.Low), ax.x(bar.High)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#222"/>`+"\n", lo, mid, hi, mid)
		for _, x := range []float64{lo, hi} {
			fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#222"/>`+"\n", x, mid-4, x, mid+4)
		}
		end = math.Max(end, hi)
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%d">%s</text>`+"\n", end+4, mid+4, esc(Format(bar.Value)))
}

// axis maps values to x positions.
type axis struct {
	lo, hi float64
	log    bool
}

func (c Chart) axis() axis {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, g := range c.Groups {
		for _, bar := range g.Bars {
			if bar.Missing {
				continue
			}
			for _, v := range []float64{bar.Value, bar.Low, bar.High} {
				if finite(v) && (!c.Log || v > 0) {
					lo, hi = math.Min(lo, v), math.Max(hi, v)
				}
			}
		}
	}
	if c.Reference != 0 {
		lo, hi = math.Min(lo, c.Reference), math.Max(hi, c.Reference)
	}
	if math.IsInf(lo, 1) {
		// Nothing to draw: any valid axis will do.
		lo, hi = 1, 1
	}
	if c.Log {
		return axis{lo: math.Pow(10, math.Floor(math.Log10(lo))), hi: math.Pow(10, math.Ceil(math.Log10(hi*1.01))), log: true}
	}
	// Bars start at zero, so their lengths compare.
	step := niceStep(math.Max(hi, 0) / 5)
	return axis{lo: 0, hi: math.Max(step, math.Ceil(hi*1.05/step)*step)}
}

func (a axis) x(v float64) float64 {
	span := float64(width - rightMargin - labelWidth)
	var f float64
	if a.log {
		f = (math.Log10(v) - math.Log10(a.lo)) / (math.Log10(a.hi) - math.Log10(a.lo))
	} else {
		f = (v - a.lo) / (a.hi - a.lo)
	}
	return float64(labelWidth) + math.Max(0, math.Min(1, f))*span
}

func (a axis) contains(v float64) bool { return v >= a.lo && v <= a.hi && (!a.log || v > 0) }

func (a axis) ticks() []float64 {
	var ts []float64
	if a.log {
		for v := a.lo; v <= a.hi*1.0001; v *= 10 {
			ts = append(ts, v)
		}
		return ts
	}
	step := niceStep(a.hi / 5)
	for i := 0; a.lo+float64(i)*step <= a.hi+step/1000; i++ {
		ts = append(ts, a.lo+float64(i)*step)
	}
	return ts
}

// niceStep rounds a raw tick step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 || !finite(raw) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// Format prints a value with three significant digits, never in exponent
// form for the magnitudes benchmarks show (the report's tables use it too).
func Format(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case a == 0:
		return "0"
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

// tickLabel prints an axis value as briefly as it can.
// Six decimals absorb the float error of summed steps (0.6000000000000001).
func tickLabel(v float64) string {
	s := strconv.FormatFloat(v, 'f', 6, 64)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

func esc(s string) string { return html.EscapeString(s) }
