package report

import (
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/membrane-net/membrane/bench/record"
	"github.com/membrane-net/membrane/bench/stats"
)

func sampleRun() *record.Run {
	start := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	return &record.Run{
		Mode: "full", Seed: 42, Rounds: 7, MeasureSeconds: 3, RuleCounts: []int{0, 100}, EndpointCounts: []int{10},
		Started: start, Finished: start.Add(30 * time.Minute), Command: "go run ./cmd/membrane-bench -mode full -seed 42 -docs",
		Revision: "0123456789abcdef0123456789abcdef01234567 (modified)",
		Machine:  record.Machine{CPUModel: "Test CPU", Cores: 2, LoadAverageStart: "1.50 1.00 0.50", LoadAverageEnd: "0.1 0.1 0.1"},
		Datapath: []record.DatapathFamily{
			{Family: "IPv4", Prefix: "10.200.0.0/16", Setups: []string{"raw veth", "raw veth + Docker's container rules", "membrane"},
				Loads: []string{"request/response", "UDP, 64-byte datagrams"}},
			{Family: "IPv6", Prefix: "fd6d:6272:c8::/48", Setups: []string{"raw veth", "membrane"}, Loads: []string{"request/response"}},
		},
		Figures: []record.Figure{
			{ID: "ratio:a:b", Table: "Datapath: per-round ratios (median over rounds)", Row: "membrane ÷ raw veth", Column: "request/response", Unit: "ratio",
				Of: "a", Over: "b", Summary: stats.Summary{N: 7, Median: 0.9634, Min: 0.9, Max: 1.01, Q1: 0.95, Q3: 0.97}},
			{ID: "conntrack/ipv4/membrane", Table: "Datapath: conntrack entries one new connection adds in the client's namespace", Row: "membrane",
				Column: "IPv4", Unit: "entries per connection", Summary: stats.Summary{N: 1, Median: 1, Min: 1, Max: 1, Q1: 1, Q3: 1}},
			{ID: "conntrack/ipv6/membrane", Table: "Datapath: conntrack entries one new connection adds in the client's namespace", Row: "membrane",
				Column: "IPv6", Unit: "entries per connection", Summary: stats.Summary{N: 1}},
			{ID: "control/attach", Table: "Control plane", Row: "per-endpoint attach", Unit: "ms",
				Summary: stats.Summary{N: 200, Median: 3.2, Min: 2, Max: 40, Q1: 3, Q3: 4, P90: 5, P99: 12.5}},
		},
		Targets: []record.Target{
			{Name: "membrane ÷ raw veth, request/response", Figure: "ratio:a:b", Stat: "median", Op: ">=", Threshold: 0.95, Value: 0.9634, Status: record.Met, Note: "min–max 0.9–1.01"},
			{Name: "per-endpoint attach p99 (ms)", Figure: "control/attach", Stat: "p99", Op: "<", Threshold: 10, Value: 12.5, Status: record.Missed},
			{Name: "daemon RSS at 500 endpoints (MiB)", Op: "<", Threshold: 60, Status: record.NotMeasured},
		},
		Charts: []record.Chart{{File: "datapath-ratios.svg", Title: "ratios", Unit: "ratio", Reference: 1, Groups: []record.ChartGroup{
			{Label: "request/response", Bars: []record.ChartBar{{Series: "membrane ÷ raw veth", Figure: "ratio:a:b"}, {Series: "absent", Figure: "nope"}}},
		}}},
	}
}

func TestWriteProducesTheDocumentAndItsCharts(t *testing.T) {
	dir := t.TempDir()
	doc := filepath.Join(dir, "benchmarks.md")
	charts := filepath.Join(dir, "bench")
	if err := Write(sampleRun(), doc, charts, "bench"); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"go run ./cmd/membrane-bench -mode full -seed 42 -docs",                 // how to reproduce
		"| CPU | Test CPU, 2 cores |",                                           // machine
		"| code | commit 0123456789abcdef0123456789abcdef01234567 (modified) |", // what was measured
		"The machine was not idle",                                              // load average 1.5 on 2 cores
		"| membrane ÷ raw veth, request/response | 0.963 | >= 0.95 | **met** |", // target row
		"| per-endpoint attach p99 (ms) | p99 12.5 | < 10 | **missed** |",
		"| daemon RSS at 500 endpoints (MiB) | — | < 60 | not measured |",
		"| membrane ÷ raw veth | 0.963 [0.900–1.010] |",                                   // grid cell: median [min–max]
		"| per-endpoint attach | 3.20 | 3.00–4.00 | 2.00–40.0 | 5.00 | 12.5 | 200 | ms |", // list row
		"![datapath-ratios.svg](bench/datapath-ratios.svg)",
		"client on CPU 0, server on CPU 0",                                                           // method text carries the run's parameters
		"over IPv6 (addresses from fd6d:6272:c8::/48): raw veth, membrane; loads: request/response.", // what ran over which family
		"UDP, 64-byte datagrams is not run over IPv6",
		"-A OUTPUT -d 127.0.0.11/32 -j DOCKER_OUTPUT", // why containers pay for conntrack
		"| membrane | 1.00 | 0 |",                     // measured once: no spread
		"Each cell: one measurement (entries per connection)",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("document lacks %q", want)
		}
	}
	svg, err := os.ReadFile(filepath.Join(charts, "datapath-ratios.svg"))
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(svg, new(struct{})); err != nil {
		t.Errorf("chart is not XML: %v", err)
	}
	if !strings.Contains(string(svg), ">n/a<") {
		t.Error("a bar whose figure is missing is not drawn as n/a")
	}
}

func TestTablesByPrefixKeepsThePrefixOrder(t *testing.T) {
	run := &record.Run{Figures: []record.Figure{
		{Table: "Policy scale: request/response"}, {Table: "Policy scale: N rules ÷ 0 rules, per round"},
		{Table: "Datapath, IPv4: x"}, {Table: "Policy scale: request/response"},
	}}
	got := tablesByPrefix(run, []string{"Policy scale: N rules", "Policy scale"})
	if len(got) != 2 || got[0] != "Policy scale: N rules ÷ 0 rules, per round" || got[1] != "Policy scale: request/response" {
		t.Errorf("tables %q", got)
	}
}

func TestMethodOfARecordWithoutFamiliesSaysItIsIPv4(t *testing.T) {
	run := sampleRun()
	run.Datapath = nil
	if md := string(Markdown(run, "bench")); !strings.Contains(md, "its datapath figures are IPv4") {
		t.Error("an old record's method text does not say its figures are IPv4")
	}
}

func TestCPUPerWorkTablesShowTheirIQRAndSayWhatTheyAre(t *testing.T) {
	run := sampleRun()
	const table = "Datapath, IPv4: CPU time per unit of work (median over rounds; lower is better)"
	run.Figures = append(run.Figures,
		record.Figure{ID: "datapath/raw/rr-cpu", Table: table, Row: "raw veth", Column: "request/response (µs CPU/transaction)",
			Unit: "µs CPU/transaction", Of: "datapath/raw/rr-cpu", ShowIQR: true,
			Summary: stats.Summary{N: 7, Median: 27.5, Min: 26, Max: 30, Q1: 26.5, Q3: 28}},
		record.Figure{ID: "datapath/membrane/tcp-1-cpu", Table: table, Row: "membrane", Column: "TCP, 1 stream (ms CPU/GB)",
			Unit: "ms CPU/GB", Of: "datapath/membrane/tcp-1-cpu", ShowIQR: true,
			Summary: stats.Summary{N: 7, Median: 812, Min: 790, Max: 840, Q1: 800, Q3: 820}},
	)
	md := string(Markdown(run, "bench"))
	for _, want := range []string{
		"### " + table,
		"| | request/response (µs CPU/transaction) | TCP, 1 stream (ms CPU/GB) |",
		"| raw veth | 27.5 [26.0–30.0], IQR 26.5–28.0 | — |",
		"| membrane | — | 812 [790–840], IQR 800–820 |",
		"Each cell: median [min–max], IQR Q1–Q3 (the interquartile range), over rounds; — not measured.",
		"**CPU time per unit of work.** Just before and just after the client of each datapath load runs",
		"kernel's softirq processing included",
		"Lower is better",
		"| membrane ÷ raw veth | 0.963 [0.900–1.010] |", // the rate tables keep their cells
	} {
		if !strings.Contains(md, want) {
			t.Errorf("document lacks %q", want)
		}
	}
	if strings.Count(md, "IQR Q1–Q3") != 1 {
		t.Error("a table without CPU figures got the IQR legend")
	}
}

func TestRecordWithoutCPUPerWorkSaysItHasNone(t *testing.T) {
	md := string(Markdown(sampleRun(), "bench"))
	if !strings.Contains(md, "**CPU time per unit of work.** This run's record has none: it predates the figure.") {
		t.Error("a record without CPU figures does not say it has none")
	}
	if strings.Contains(md, "IQR Q1–Q3") || strings.Contains(md, "/proc/stat") {
		t.Error("a record without CPU figures describes them")
	}
}
