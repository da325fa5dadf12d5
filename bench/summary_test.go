package bench

import (
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/bench/record"
	"github.com/membrane-net/membrane/bench/report"
)

func series(id, unit string, values ...float64) *record.Series {
	s := &record.Series{ID: id, Unit: unit}
	for i, v := range values {
		s.Samples = append(s.Samples, record.Sample{Round: i, Value: v})
	}
	return s
}

func target(t *testing.T, run *record.Run, figure string) record.Target {
	t.Helper()
	for _, tg := range run.Targets {
		if tg.Figure == figure {
			return tg
		}
	}
	t.Fatalf("no target on figure %s", figure)
	return record.Target{}
}

func TestSummarizeTakesRatiosRoundByRoundAndJudgesTargets(t *testing.T) {
	run := &record.Run{Rounds: 5, RuleCounts: []int{0, 100000}, EndpointCounts: []int{500}}
	// The machine slows down over the rounds; the ratio stays 0.96.
	raw := []float64{100, 90, 80, 70, 60}
	var mem []float64
	for _, v := range raw {
		mem = append(mem, v*0.96)
	}
	run.Series = []*record.Series{
		series(datapathID(setupRaw, metricRR), "transactions/s", raw...),
		series(datapathID(setupMembrane, metricRR), "transactions/s", mem...),
		series(scaleID(implMembrane, 0, metricRR), "transactions/s", 100, 100, 100, 100, 100),
		series(scaleID(implMembrane, 100000, metricRR), "transactions/s", 90, 99, 98, 97, 96),
		series(controlID(ctlRSS+"/500"), "MiB", 75),
		series(controlID(ctlAttach), "ms", 1, 2, 3, 4, 50),
	}
	Summarize(run)

	ratio := ratioID(datapathID(setupMembrane, metricRR), datapathID(setupRaw, metricRR))
	f, ok := run.Figure(ratio)
	if !ok {
		t.Fatalf("no figure %s", ratio)
	}
	if math.Abs(f.Summary.Median-0.96) > 1e-9 || math.Abs(f.Summary.Max-f.Summary.Min) > 1e-9 {
		t.Errorf("membrane ÷ raw rr = %+v, want 0.96 in every round", f.Summary)
	}
	if tg := target(t, run, ratio); tg.Status != record.Met || tg.Threshold != 0.95 {
		t.Errorf("rr ratio target = %+v, want met against 0.95", tg)
	}
	scale := ratioID(scaleID(implMembrane, 100000, metricRR), scaleID(implMembrane, 0, metricRR))
	if tg := target(t, run, scale); tg.Status != record.Met || math.Abs(tg.Value-0.97) > 1e-9 {
		t.Errorf("100k ÷ 0 target = %+v, want met at the median 0.97", tg)
	}
	if tg := target(t, run, controlID(ctlRSS+"/500")); tg.Status != record.Missed || tg.Value != 75 {
		t.Errorf("RSS target = %+v, want missed at 75", tg)
	}
	if tg := target(t, run, controlID(ctlAttach)); tg.Status != record.Missed || tg.Value < 40 {
		t.Errorf("attach p99 target = %+v, want missed near the 50 ms outlier", tg)
	}
	crr := ratioID(datapathID(setupMembrane, metricCRR), datapathID(setupRaw, metricCRR))
	if tg := target(t, run, crr); tg.Status != record.NotMeasured {
		t.Errorf("crr target without data = %+v, want not measured", tg)
	}
}

func TestScaleSeriesUsesTheRoutedBaselineForIptablesAtZero(t *testing.T) {
	if got := scaleSeries(implIptables(backendNft), 0, metricRR); got != scaleID(implRouted, 0, metricRR) {
		t.Errorf("iptables at 0 rules = %s, want the routed baseline", got)
	}
	if got := scaleSeries(implMembrane, 0, metricRR); got != scaleID(implMembrane, 0, metricRR) {
		t.Errorf("membrane at 0 rules = %s, want its own series", got)
	}
}

func targetNamed(t *testing.T, run *record.Run, name string) record.Target {
	t.Helper()
	for _, tg := range run.Targets {
		if tg.Name == name {
			return tg
		}
	}
	t.Fatalf("no target named %q", name)
	return record.Target{}
}

// datapathAdder returns a function that adds to run a datapath series of
// the unit, one value per round.
func datapathAdder(run *record.Run, unit string) func(family, setup, metric string, vs ...float64) {
	return func(family, setup, metric string, vs ...float64) {
		run.Series = append(run.Series, series(datapathFamilyID(family, setup, metric), unit, vs...))
	}
}

func TestSummarizeJudgesEachFamilyApartAndShowsTheDockerRulesFloor(t *testing.T) {
	run := &record.Run{Rounds: 3}
	add := datapathAdder(run, "connections/s")
	// IPv4: membrane at 0.75 of raw veth, at 0.98 of raw veth with
	// Docker's rules; IPv6: membrane at 0.97 of raw veth.
	add(familyIPv4, setupRaw, metricCRR, 8000, 8000, 8000)
	add(familyIPv4, setupRawNat, metricCRR, 6100, 6100, 6100)
	add(familyIPv4, setupMembrane, metricCRR, 6000, 6000, 6000)
	add(familyIPv6, setupRaw, metricCRR, 7000, 7000, 7000)
	add(familyIPv6, setupMembrane, metricCRR, 6790, 6790, 6790)
	run.Series = append(run.Series,
		series(conntrackID(familyIPv4, setupMembrane), unitPerConnection, 1),
		series(conntrackID(familyIPv6, setupMembrane), unitPerConnection, 0),
	)
	Summarize(run)

	if tg := targetNamed(t, run, "membrane ÷ raw veth, connect/request/response, IPv4"); tg.Status != record.Missed || math.Abs(tg.Value-0.75) > 1e-9 {
		t.Errorf("IPv4 crr target = %+v, want missed at 0.75", tg)
	}
	if tg := targetNamed(t, run, "membrane ÷ raw veth, connect/request/response, IPv6"); tg.Status != record.Met || math.Abs(tg.Value-0.97) > 1e-9 {
		t.Errorf("IPv6 crr target = %+v, want met at 0.97", tg)
	}
	floor := targetNamed(t, run, "membrane ÷ raw veth + Docker's container rules, connect/request/response, IPv4 (comparison)")
	if floor.Status != record.Shown || floor.Op != "" || math.Abs(floor.Value-6000.0/6100) > 1e-9 {
		t.Errorf("floor comparison = %+v, want shown, no threshold, 0.984", floor)
	}
	cost := targetNamed(t, run, "raw veth + Docker's container rules ÷ raw veth, connect/request/response, IPv4 (comparison: what the rules cost)")
	if cost.Status != record.Shown || math.Abs(cost.Value-6100.0/8000) > 1e-9 {
		t.Errorf("cost of the rules = %+v", cost)
	}
	for _, tg := range run.Targets {
		if strings.Contains(tg.Name, "Docker's container rules") && strings.Contains(tg.Name, "IPv6") {
			t.Errorf("IPv6 has a Docker-rules row: %s", tg.Name)
		}
		if strings.Contains(tg.Name, "÷ raw veth") && !strings.Contains(tg.Name, "IPv4") && !strings.Contains(tg.Name, "IPv6") {
			t.Errorf("datapath target without its family: %s", tg.Name)
		}
	}
	tables := map[string]bool{}
	for _, f := range run.Figures {
		tables[f.Table] = true
	}
	for _, want := range []string{tableRatios(familyIPv4), tableRatios(familyIPv6), tableDatapath(familyIPv4), tableDatapath(familyIPv6), tableConntrack} {
		if !tables[want] {
			t.Errorf("no table %q", want)
		}
	}
	if f, ok := run.Figure(conntrackID(familyIPv6, setupMembrane)); !ok || f.Summary.Median != 0 || f.Column != "IPv6" {
		t.Errorf("IPv6 conntrack figure = %+v, %v", f, ok)
	}
}

func TestSummarizeComparesDockerRunLikeWithLike(t *testing.T) {
	run := &record.Run{Rounds: 1}
	run.Series = []*record.Series{
		series(runConnectID(driverBridge, stackDual), "ms", 350, 360),
		series(runConnectID(driverMembrane, stackDual), "ms", 385, 396),
		series(runConnectID(driverBridge, stackIPv4), "ms", 280, 280),
		series(runConnectID(driverMembrane, stackIPv4), "ms", 308, 308),
	}
	Summarize(run)
	dual := targetNamed(t, run, "docker run → first connect, membrane ÷ Docker bridge, dual-stack")
	if dual.Op != "<=" || dual.Status != record.Missed || math.Abs(dual.Value-1.1) > 1e-9 {
		t.Errorf("dual-stack target = %+v, want missed at 1.1", dual)
	}
	v4 := targetNamed(t, run, "docker run → first connect, membrane ÷ Docker bridge, IPv4 only (comparison)")
	if v4.Status != record.Shown || math.Abs(v4.Value-1.1) > 1e-9 {
		t.Errorf("IPv4-only comparison = %+v", v4)
	}
	var chart *record.Chart
	for i := range run.Charts {
		if run.Charts[i].File == "docker-run-connect.svg" {
			chart = &run.Charts[i]
		}
	}
	if chart == nil || len(chart.Groups) != 2 || len(chart.Groups[0].Bars) != 2 {
		t.Errorf("docker run chart = %+v, want a group per stack, a bar per driver", chart)
	}
}

func TestChartsKeepEachSetupsColourAcrossFamilies(t *testing.T) {
	run := &record.Run{}
	Summarize(run)
	for _, c := range run.Charts {
		if c.File != "datapath-crr.svg" {
			continue
		}
		if len(c.Groups) != 2 {
			t.Fatalf("groups %+v, want IPv4 and IPv6", c.Groups)
		}
		v4, v6 := c.Groups[0].Bars, c.Groups[1].Bars
		if len(v4) != 5 || len(v6) != 4 {
			t.Fatalf("bars: IPv4 %d, IPv6 %d, want 5 and 4", len(v4), len(v6))
		}
		for i := range v6 {
			if v4[i].Series != v6[i].Series {
				t.Errorf("bar %d is %s over IPv4 but %s over IPv6", i, v4[i].Series, v6[i].Series)
			}
		}
		return
	}
	t.Error("no datapath-crr.svg chart")
}

func TestCheckSeriesLetsConntrackCountsBeZero(t *testing.T) {
	h := &harness{rec: newRecorder(io.Discard)}
	h.rec.add(conntrackID(familyIPv6, setupRaw), unitPerConnection, 0, 0)
	h.rec.add(datapathID(setupRaw, metricRR), "transactions/s", 0, 0)
	h.checkSeries()
	if len(h.rec.errors) != 1 || !strings.Contains(h.rec.errors[0], datapathID(setupRaw, metricRR)) {
		t.Errorf("errors %q, want only the zero rr rate", h.rec.errors)
	}
}

func TestDatapathPlanSaysWhatRanOverEachFamily(t *testing.T) {
	plan := datapathPlan(planFor(200), false)
	if len(plan) != 2 || plan[0].Family != "IPv4" || plan[1].Family != "IPv6" {
		t.Fatalf("plan %+v", plan)
	}
	if plan[1].Prefix != "fd6d:6272:c8::/48" || len(plan[1].Loads) != 4 || len(plan[0].Setups) != 5 {
		t.Errorf("plan %+v", plan)
	}
}

func TestSummarizeShowsCPUPerWorkBesideTheRateRatios(t *testing.T) {
	run := &record.Run{Rounds: 3}
	add := datapathAdder(run, "")
	add(familyIPv4, setupRaw, metricRR, 40000, 30000, 35000)
	add(familyIPv4, setupMembrane, metricRR, 36000, 27000, 31500)
	// CPU per transaction: raw 25 µs, membrane 10% more, whatever the
	// rate did.
	add(familyIPv4, setupRaw, cpuMetric(metricRR), 25, 24, 26)
	add(familyIPv4, setupMembrane, cpuMetric(metricRR), 27.5, 26.4, 28.6)
	add(familyIPv6, setupRaw, cpuMetric(metricTCP1), 800, 810, 790)
	Summarize(run)

	ratio := ratioID(datapathID(setupMembrane, cpuMetric(metricRR)), datapathID(setupRaw, cpuMetric(metricRR)))
	f, ok := run.Figure(ratio)
	if !ok || f.Table != tableCPURatios(familyIPv4) || f.Row != "membrane ÷ raw veth" || f.Column != "request/response" || !f.ShowIQR {
		t.Fatalf("CPU ratio figure = %+v, %v", f, ok)
	}
	if math.Abs(f.Summary.Median-1.1) > 1e-9 || math.Abs(f.Summary.Max-f.Summary.Min) > 1e-9 {
		t.Errorf("membrane ÷ raw CPU per transaction = %+v, want 1.1 in every round", f.Summary)
	}
	v, ok := run.Figure(datapathFamilyID(familyIPv6, setupRaw, cpuMetric(metricTCP1)))
	if !ok || v.Table != tableCPU(familyIPv6) || v.Column != "TCP, 1 stream (ms CPU/GB)" || v.Summary.Median != 800 || !v.ShowIQR {
		t.Errorf("IPv6 TCP CPU figure = %+v, %v", v, ok)
	}
	// The CPU tables follow their family's rate ratios; the rate tables
	// keep their own spread.
	var tables []string
	for _, f := range run.Figures {
		if !slices.Contains(tables, f.Table) {
			tables = append(tables, f.Table)
		}
		if f.ShowIQR && !strings.Contains(f.Table, "CPU time per unit of work") {
			t.Errorf("figure %s of table %q shows its IQR", f.ID, f.Table)
		}
	}
	want := []string{tableRatios(familyIPv4), tableCPU(familyIPv4), tableCPURatios(familyIPv4), tableCPU(familyIPv6)}
	if len(tables) < len(want) || !slices.Equal(tables[:len(want)], want) {
		t.Errorf("tables %q, want first %q", tables, want)
	}
	for _, tg := range run.Targets {
		if strings.Contains(tg.Figure, "-cpu") {
			t.Errorf("target on a CPU figure: %+v", tg)
		}
	}
}

func TestOldRecordsWithoutCPUFiguresStillRender(t *testing.T) {
	// The oldest committed run: results are named by their start time.
	files, err := filepath.Glob(filepath.Join("results", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no committed results: %v", err)
	}
	slices.Sort(files)
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var run record.Run
	if err := json.Unmarshal(b, &run); err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(run.Series, func(s *record.Series) bool { return strings.HasSuffix(s.ID, "-cpu") }) {
		t.Skipf("%s has CPU figures: no committed run predates them", files[0])
	}
	Summarize(&run)
	for _, f := range run.Figures {
		if f.ShowIQR || strings.Contains(f.Table, "CPU") {
			t.Errorf("an old record has CPU figure %+v", f)
		}
	}
	md := string(report.Markdown(&run, "bench"))
	for _, want := range []string{"### Datapath, IPv4: per-round ratios (median over rounds)", "**CPU time per unit of work.** This run's record has none"} {
		if !strings.Contains(md, want) {
			t.Errorf("report of an old record lacks %q", want)
		}
	}
	if strings.Contains(md, "### Datapath, IPv4: CPU time") {
		t.Error("report of an old record has a CPU table")
	}
}
