// Package record is the record of one benchmark run: the machine, the raw
// samples of every round, and the summaries, ratios and targets computed
// from them. It is what membrane-bench writes as JSON and what the report
// is made from.
package record

import (
	"time"

	"github.com/membrane-net/membrane/bench/stats"
)

// Run is one benchmark run.
type Run struct {
	Mode           string  `json:"mode"`
	Seed           uint64  `json:"seed"`
	Rounds         int     `json:"rounds"`
	MeasureSeconds float64 `json:"measureSeconds"`
	RuleCounts     []int   `json:"ruleCounts"`
	EndpointCounts []int   `json:"endpointCounts"`
	ClientCPU      int     `json:"clientCPU"`
	ServerCPU      int     `json:"serverCPU"`
	// CreateParallelism is how many containers were started at once for
	// the memory figures.
	CreateParallelism int       `json:"createParallelism"`
	Started           time.Time `json:"started"`
	Finished          time.Time `json:"finished"`
	// Command reproduces the run.
	Command string `json:"command"`
	// Revision is the commit of the code measured, with " (modified)"
	// when the working tree differed from it; empty when unknown.
	Revision string  `json:"revision,omitempty"`
	Machine  Machine `json:"machine"`
	// Notes are facts about this run the reader needs (what was left
	// out, what the figures include).
	Notes []string `json:"notes,omitempty"`
	// Datapath says, per address family, which setups and loads the
	// datapath comparison measured.
	Datapath []DatapathFamily `json:"datapath,omitempty"`
	Series   []*Series        `json:"series"`
	Figures  []Figure         `json:"figures"`
	Targets  []Target         `json:"targets"`
	Charts   []Chart          `json:"charts"`
	// Errors are the measurements that failed; a run with errors exits
	// nonzero.
	Errors []string `json:"errors,omitempty"`
}

// DatapathFamily is what the datapath comparison ran over one address
// family.
type DatapathFamily struct {
	Family string `json:"family"` // "IPv4", "IPv6"
	// Prefix is the address plan's prefix of the family, which every
	// measured address came from.
	Prefix string   `json:"prefix"`
	Setups []string `json:"setups"`
	Loads  []string `json:"loads"`
}

// Machine describes where the run took place.
type Machine struct {
	Kernel         string `json:"kernel"`
	CPUModel       string `json:"cpuModel"`
	Cores          int    `json:"cores"`
	MemoryMiB      int    `json:"memoryMiB"`
	Virtualization string `json:"virtualization,omitempty"`
	GoVersion      string `json:"goVersion"`
	DockerdVersion string `json:"dockerdVersion"`
	DockerCLI      string `json:"dockerCLIVersion"`
	Iperf3Version  string `json:"iperf3Version"`
	IptablesLegacy string `json:"iptablesLegacyVersion"`
	IptablesNft    string `json:"iptablesNftVersion"`
	// LoadAverage* are /proc/loadavg's 1, 5 and 15 minute figures: other
	// work on the machine shows here.
	LoadAverageStart string `json:"loadAverageStart"`
	LoadAverageEnd   string `json:"loadAverageEnd"`
}

// Series is one quantity measured repeatedly, a sample per round (or, for
// control-plane latencies, a sample per attempt).
type Series struct {
	ID      string   `json:"id"`
	Unit    string   `json:"unit"`
	Samples []Sample `json:"samples"`
}

// Sample is one measured value.
type Sample struct {
	Round int     `json:"round"`
	Value float64 `json:"value"`
}

// Paired returns the samples by round (the last one of a round wins).
func (s *Series) Paired() stats.Paired {
	p := make(stats.Paired, len(s.Samples))
	for _, x := range s.Samples {
		p[x.Round] = x.Value
	}
	return p
}

// Values returns the sample values in order.
func (s *Series) Values() []float64 {
	v := make([]float64, len(s.Samples))
	for i, x := range s.Samples {
		v[i] = x.Value
	}
	return v
}

// Figure is one summarised quantity: a series' own values, or the
// per-round ratios of two series.
type Figure struct {
	ID string `json:"id"`
	// Table groups figures in the report; Row and Column place the
	// figure in that table.
	Table  string `json:"table"`
	Row    string `json:"row"`
	Column string `json:"column"`
	Unit   string `json:"unit"`
	// Of is the series summarised, or for a ratio the numerator; Over
	// is the ratio's denominator.
	Of      string        `json:"of"`
	Over    string        `json:"over,omitempty"`
	Summary stats.Summary `json:"summary"`
	// ShowIQR asks the report to show the interquartile range beside
	// the min–max range.
	ShowIQR bool `json:"showIQR,omitempty"`
}

// IsRatio reports whether f is a ratio of two series.
func (f Figure) IsRatio() bool { return f.Over != "" }

// Target statuses.
const (
	Met         = "met"
	Missed      = "missed"
	NotMeasured = "not measured"
	// Shown marks a figure listed for comparison, without a threshold.
	Shown = "shown"
)

// Target is one goal of the benchmark and where the run stands against it.
type Target struct {
	Name string `json:"name"`
	// Figure is the ID of the figure compared; Stat says which of its
	// statistics ("median", "p99").
	Figure    string  `json:"figure"`
	Stat      string  `json:"stat"`
	Op        string  `json:"op"` // ">=", "<=", "<"
	Threshold float64 `json:"threshold"`
	Value     float64 `json:"value"`
	Status    string  `json:"status"`
	Note      string  `json:"note,omitempty"`
}

// Chart is a bar chart the report draws: one group of bars per row, one
// bar per series, each bar a figure's median with its min–max whisker.
type Chart struct {
	File  string `json:"file"` // name under the charts directory, .svg
	Title string `json:"title"`
	Unit  string `json:"unit"`
	// Reference draws a dashed line at this value when nonzero (1.0 for
	// ratios).
	Reference float64 `json:"reference,omitempty"`
	// Log draws the value axis on a log scale (for values that span
	// orders of magnitude).
	Log    bool         `json:"log,omitempty"`
	Groups []ChartGroup `json:"groups"`
}

// ChartGroup is one labelled group of bars.
type ChartGroup struct {
	Label string     `json:"label"`
	Bars  []ChartBar `json:"bars"`
}

// ChartBar is one bar: a figure, drawn in its series' colour.
type ChartBar struct {
	Series string `json:"series"`
	Figure string `json:"figure"`
}

// Figure returns the figure with that ID.
func (r *Run) Figure(id string) (Figure, bool) {
	for _, f := range r.Figures {
		if f.ID == id {
			return f, true
		}
	}
	return Figure{}, false
}
