package bench

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/membrane-net/membrane/bench/record"
	"github.com/membrane-net/membrane/bench/stats"
)

// Labels the report shows.
var (
	setupLabels = map[string]string{
		setupRaw: "raw veth", setupRawNat: "raw veth + Docker's container rules", setupBridge: "Docker bridge",
		setupMembrane: "membrane", setupPolicy: "membrane + policy",
	}
	familyLabels = map[string]string{familyIPv4: "IPv4", familyIPv6: "IPv6"}
	metricLabels = map[string]string{
		metricTCP1: "TCP, 1 stream", metricTCP2: "TCP, 2 streams", metricRR: "request/response",
		metricRRP50: "rr latency p50", metricRRP99: "rr latency p99", metricCRR: "connect/request/response",
		metricUDP: "UDP, 64-byte datagrams",
	}
	metricUnits = map[string]string{
		metricTCP1: "Gbit/s", metricTCP2: "Gbit/s", metricRR: "transactions/s", metricRRP50: "µs",
		metricRRP99: "µs", metricCRR: "connections/s", metricUDP: "datagrams/s",
	}
	implLabels = map[string]string{
		implMembrane:                "membrane",
		implMembraneDatapath:        "membrane datapath (in-process SyncPolicy)",
		implIptables(backendLegacy): "iptables-legacy",
		implIptables(backendNft):    "iptables-nft",
	}
	installLabels = map[string]string{
		implMembrane:                "membrane: policy import (CLI until applied)",
		implMembraneDatapath:        "membrane datapath: SyncPolicy (in-process)",
		implIptables(backendLegacy): "iptables-legacy-restore / iptables-legacy -A",
		implIptables(backendNft):    "iptables-nft-restore / iptables-nft -A",
	}
)

// ratioPair is a ratio of two datapath setups.
type ratioPair struct{ num, den string }

// datapathRatios are the ratios of the datapath tables; those naming a
// setup a family does not measure are left out of its table.
var datapathRatios = []ratioPair{
	{setupMembrane, setupRaw}, {setupMembrane, setupBridge},
	{setupPolicy, setupRaw}, {setupPolicy, setupBridge}, {setupPolicy, setupMembrane},
	// What Docker's in-container rules cost a bare veth pair, and
	// membrane against that floor.
	{setupRawNat, setupRaw}, {setupMembrane, setupRawNat}, {setupPolicy, setupRawNat},
}

var ratioMetrics = []string{metricTCP1, metricTCP2, metricRR, metricCRR, metricUDP}

func ratioLabel(p ratioPair) string { return setupLabels[p.num] + " ÷ " + setupLabels[p.den] }

func ratioID(num, den string) string { return "ratio:" + num + ":" + den }

// Table names of the report.
const (
	tableConntrack   = "Datapath: conntrack entries one new connection adds in the client's namespace"
	tableScaleRR     = "Policy scale: request/response (transactions/s)"
	tableScaleCRR    = "Policy scale: connect/request/response (connections/s)"
	tableScaleRatio  = "Policy scale: N rules ÷ 0 rules, per round"
	tableInstall     = "Time to install N rules into an empty policy (ms)"
	tableAddOne      = "Time to add one rule to N rules (ms)"
	tableControl     = "Control plane"
	tableControlRate = "Control plane: membrane ÷ Docker bridge"
)

// tableDatapath and tableRatios are the datapath tables of a family.
func tableDatapath(family string) string {
	return "Datapath, " + familyLabels[family] + ": absolute figures (median over rounds)"
}

func tableRatios(family string) string {
	return "Datapath, " + familyLabels[family] + ": per-round ratios (median over rounds)"
}

// tableCPU and tableCPURatios are the CPU-per-work tables of a family,
// which follow its ratio table.
func tableCPU(family string) string {
	return "Datapath, " + familyLabels[family] + ": CPU time per unit of work (median over rounds; lower is better)"
}

func tableCPURatios(family string) string {
	return "Datapath, " + familyLabels[family] + ": CPU time per unit of work, per-round ratios (median over rounds; lower is better)"
}

// Summarize fills the run's figures, targets and charts from its series
// (replacing any it had).
func Summarize(run *record.Run) {
	run.Figures, run.Targets, run.Charts = nil, nil, nil
	b := summaryBuilder{run: run, series: map[string]*record.Series{}}
	for _, s := range run.Series {
		b.series[s.ID] = s
	}
	b.datapath()
	b.policyScale()
	b.install()
	b.control()
	run.Targets = b.targets()
	run.Charts = b.charts()
}

type summaryBuilder struct {
	run    *record.Run
	series map[string]*record.Series
}

// value adds a figure summarising a series, if the series exists.
func (b *summaryBuilder) value(table, row, column, seriesID string) {
	s, ok := b.series[seriesID]
	if !ok {
		return
	}
	sum, err := stats.Summarize(s.Values())
	if err != nil {
		return
	}
	b.run.Figures = append(b.run.Figures, record.Figure{
		ID: seriesID, Table: table, Row: row, Column: column, Unit: s.Unit, Of: seriesID, Summary: sum,
	})
}

// ratio adds a figure of per-round ratios num/den, if both series exist.
func (b *summaryBuilder) ratio(table, row, column, num, den string) {
	n, okN := b.series[num]
	d, okD := b.series[den]
	if !okN || !okD {
		return
	}
	rs, err := stats.Ratios(n.Paired(), d.Paired())
	if err != nil {
		return
	}
	sum, err := stats.Summarize(rs)
	if err != nil {
		return
	}
	b.run.Figures = append(b.run.Figures, record.Figure{
		ID: ratioID(num, den), Table: table, Row: row, Column: column, Unit: "ratio", Of: num, Over: den, Summary: sum,
	})
}

func (b *summaryBuilder) datapath() {
	for _, family := range families {
		for _, p := range datapathRatios {
			for _, m := range ratioMetrics {
				b.ratio(tableRatios(family), ratioLabel(p), metricLabels[m],
					datapathFamilyID(family, p.num, m), datapathFamilyID(family, p.den, m))
			}
		}
		b.datapathCPU(family)
	}
	for _, s := range datapathSetups {
		for _, family := range families {
			b.value(tableConntrack, setupLabels[s], familyLabels[family], conntrackID(family, s))
		}
	}
	for _, family := range families {
		for _, s := range datapathSetups {
			for _, m := range []string{metricTCP1, metricTCP2, metricRR, metricRRP50, metricRRP99, metricCRR, metricUDP} {
				b.value(tableDatapath(family), setupLabels[s], metricLabels[m]+" ("+metricUnits[m]+")", datapathFamilyID(family, s, m))
			}
		}
	}
}

// datapathCPU adds a family's CPU time per unit of work: each setup's,
// then the per-round ratios of the setup pairs its rate ratios compare.
// Records from before the figure have no such series, and so no tables.
func (b *summaryBuilder) datapathCPU(family string) {
	for _, s := range datapathSetups {
		for _, m := range ratioMetrics {
			b.value(tableCPU(family), setupLabels[s], metricLabels[m]+" ("+cpuCosts[m].unit+")",
				datapathFamilyID(family, s, cpuMetric(m)))
		}
	}
	for _, p := range datapathRatios {
		for _, m := range ratioMetrics {
			b.ratio(tableCPURatios(family), ratioLabel(p), metricLabels[m],
				datapathFamilyID(family, p.num, cpuMetric(m)), datapathFamilyID(family, p.den, cpuMetric(m)))
		}
	}
	b.showIQR(tableCPU(family))
	b.showIQR(tableCPURatios(family))
}

// showIQR has the report show the interquartile range of a table's
// figures.
func (b *summaryBuilder) showIQR(table string) {
	for i := range b.run.Figures {
		if b.run.Figures[i].Table == table {
			b.run.Figures[i].ShowIQR = true
		}
	}
}

// scaleSeries is the series of impl at n rules; iptables' 0 is the routed
// baseline.
func scaleSeries(impl string, n int, metric string) string {
	if n == 0 && impl != implMembrane {
		return scaleID(implRouted, 0, metric)
	}
	return scaleID(impl, n, metric)
}

var scaleImpls = []string{implMembrane, implIptables(backendLegacy), implIptables(backendNft)}

func (b *summaryBuilder) policyScale() {
	for _, m := range []string{metricRR, metricCRR} {
		table := map[string]string{metricRR: tableScaleRR, metricCRR: tableScaleCRR}[m]
		for _, impl := range scaleImpls {
			for _, n := range b.run.RuleCounts {
				b.value(table, implLabels[impl], rulesLabel(n), scaleSeries(impl, n, m))
			}
		}
	}
	for _, impl := range scaleImpls {
		for _, m := range []string{metricRR, metricCRR} {
			for _, n := range b.run.RuleCounts {
				if n == 0 {
					continue
				}
				b.ratio(tableScaleRatio, implLabels[impl]+", "+metricLabels[m], rulesLabel(n), scaleSeries(impl, n, m), scaleSeries(impl, 0, m))
			}
		}
	}
}

func rulesLabel(n int) string {
	if n >= 1000 && n%1000 == 0 {
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}

// rulesPhrase is "1 rule", "100 rules", "10k rules".
func rulesPhrase(n int) string {
	if n == 1 {
		return "1 rule"
	}
	return rulesLabel(n) + " rules"
}

var installImpls = []string{implMembrane, implMembraneDatapath, implIptables(backendLegacy), implIptables(backendNft)}

func (b *summaryBuilder) install() {
	for _, impl := range installImpls {
		for _, n := range b.run.RuleCounts {
			if n == 0 {
				continue
			}
			b.value(tableInstall, installLabels[impl], rulesLabel(n), installID(impl, n))
			b.value(tableAddOne, installLabels[impl], rulesLabel(n), addOneID(impl, n))
		}
	}
}

func (b *summaryBuilder) control() {
	for _, stack := range runStacks {
		for _, d := range runDrivers {
			label := driverLabels[d] + ", " + stackLabels[stack]
			b.value(tableControl, "docker run → first connect, "+label, "", controlID(ctlRunConnect+"/"+runKey(d, stack)))
			b.value(tableControl, "docker run -d returns, "+label, "", controlID(ctlRunReturn+"/"+runKey(d, stack)))
		}
	}
	for _, stack := range runStacks {
		for _, m := range runCallMethods {
			b.value(tableControl, "membrane docker run, "+stackLabels[stack]+": daemon's "+m+" call", "", controlID(ctlRunCall+"/"+stack+"/"+m))
		}
	}
	for _, stack := range runStacks {
		b.ratio(tableControlRate, "docker run → first connect, membrane ÷ bridge, "+stackLabels[stack]+" (sample by sample)", "",
			runConnectID(driverMembrane, stack), runConnectID(driverBridge, stack))
	}
	b.value(tableControl, "policy import → newly allowed flow passes", "", controlID(ctlImportAllow))
	b.value(tableControl, "policy import → newly denied flow dropped", "", controlID(ctlImportDeny))
	b.value(tableControl, "per-endpoint attach of a new endpoint on a spare veth (placeholder attached ahead), in-process datapath.Attach", "", controlID(ctlAttach))
	b.value(tableControl, "per-endpoint attach of a new endpoint on a fresh veth (no spare left), in-process datapath.Attach", "", controlID(ctlAttachUnprepared))
	b.value(tableControl, "per-endpoint attach of an attached endpoint (restart path), in-process", "", controlID(ctlAttachAgain))
	b.value(tableControl, "daemon CreateEndpoint call (veth, routes, state, attach), while creating containers", "", controlID(ctlCreateEP))
	b.value(tableControl, fmt.Sprintf("daemon RSS after the rounds (policies of up to %s rules imported), before a restart", rulesLabel(maxInt(b.run.RuleCounts))), "", controlID(ctlRSSAfterRounds))
	for _, n := range b.run.EndpointCounts {
		ns := strconv.Itoa(n)
		b.value(tableControl, fmt.Sprintf("daemon RSS at %d endpoints (restarted daemon)", n), "", controlID(ctlRSS+"/"+ns))
		b.value(tableControl, fmt.Sprintf("BPF map memory at %d endpoints", n), "", controlID(ctlBPFMaps+"/"+ns))
		b.value(tableControl, fmt.Sprintf("BPF program memory at %d endpoints", n), "", controlID(ctlBPFProgs+"/"+ns))
	}
}

func runConnectID(driver, stack string) string {
	return controlID(ctlRunConnect + "/" + runKey(driver, stack))
}

func maxInt(ns []int) int {
	m := 0
	for _, n := range ns {
		m = max(m, n)
	}
	return m
}

// targetSpec is one goal of the benchmark.
type targetSpec struct {
	name      string
	figure    string
	stat      string // "median" or "p99"
	op        string // ">=", "<", "<=", "" (shown, no threshold)
	threshold float64
}

// Datapath targets: each setup ÷ raw veth and ÷ Docker bridge, per load.
var (
	rawTargets = []struct {
		metric string
		min    float64
	}{{metricTCP1, 0.95}, {metricTCP2, 0.95}, {metricRR, 0.95}, {metricCRR, 0.92}}
	bridgeTargets = []struct {
		metric string
		min    float64
	}{{metricRR, 1.00}, {metricTCP1, 1.05}, {metricTCP2, 1.05}, {metricCRR, 1.05}}
)

// datapathTargets are a family's datapath targets, and for IPv4 the
// comparison with the floor that holds Docker's in-container rules.
func datapathTargets(family string) []targetSpec {
	var specs []targetSpec
	fam := familyLabels[family]
	id := func(setup, metric string) string { return datapathFamilyID(family, setup, metric) }
	for _, s := range []string{setupMembrane, setupPolicy} {
		for _, t := range rawTargets {
			specs = append(specs, targetSpec{
				name: fmt.Sprintf("%s ÷ raw veth, %s, %s", setupLabels[s], metricLabels[t.metric], fam), stat: "median",
				figure: ratioID(id(s, t.metric), id(setupRaw, t.metric)), op: ">=", threshold: t.min,
			})
		}
		for _, t := range bridgeTargets {
			specs = append(specs, targetSpec{
				name: fmt.Sprintf("%s ÷ Docker bridge, %s, %s", setupLabels[s], metricLabels[t.metric], fam), stat: "median",
				figure: ratioID(id(s, t.metric), id(setupBridge, t.metric)), op: ">=", threshold: t.min,
			})
		}
	}
	if !slices.Contains(familySetups(family), setupRawNat) {
		return specs
	}
	for _, m := range []string{metricRR, metricCRR} {
		specs = append(specs, targetSpec{
			name:   fmt.Sprintf("%s ÷ raw veth, %s, %s (comparison: what the rules cost)", setupLabels[setupRawNat], metricLabels[m], fam),
			stat:   "median",
			figure: ratioID(id(setupRawNat, m), id(setupRaw, m)),
		})
	}
	for _, s := range []string{setupMembrane, setupPolicy} {
		for _, t := range rawTargets {
			specs = append(specs, targetSpec{
				name:   fmt.Sprintf("%s ÷ %s, %s, %s (comparison)", setupLabels[s], setupLabels[setupRawNat], metricLabels[t.metric], fam),
				stat:   "median",
				figure: ratioID(id(s, t.metric), id(setupRawNat, t.metric)),
			})
		}
	}
	return specs
}

func (b *summaryBuilder) targets() []record.Target {
	var specs []targetSpec
	for _, family := range families {
		specs = append(specs, datapathTargets(family)...)
	}
	specs = append(specs,
		targetSpec{name: "membrane request/response at 100k rules ÷ at 0 rules", stat: "median",
			figure: ratioID(scaleID(implMembrane, 100000, metricRR), scaleID(implMembrane, 0, metricRR)), op: ">=", threshold: 0.95},
		targetSpec{name: "iptables-legacy request/response at 10k rules ÷ at 0 rules (comparison)", stat: "median",
			figure: ratioID(scaleID(implIptables(backendLegacy), 10000, metricRR), scaleID(implRouted, 0, metricRR))},
		targetSpec{name: "iptables-nft request/response at 10k rules ÷ at 0 rules (comparison)", stat: "median",
			figure: ratioID(scaleID(implIptables(backendNft), 10000, metricRR), scaleID(implRouted, 0, metricRR))},
		targetSpec{name: "install 10k rules, membrane policy import (ms)", stat: "median",
			figure: installID(implMembrane, 10000), op: "<", threshold: 100},
		targetSpec{name: "install 10k rules, membrane datapath SyncPolicy (ms)", stat: "median",
			figure: installID(implMembraneDatapath, 10000), op: "<", threshold: 100},
		targetSpec{name: "add one rule to 100k, membrane policy import (ms)", stat: "median",
			figure: addOneID(implMembrane, 100000), op: "<", threshold: 5},
		targetSpec{name: "add one rule to 100k, membrane datapath ApplyPolicy (ms)", stat: "median",
			figure: addOneID(implMembraneDatapath, 100000), op: "<", threshold: 5},
		targetSpec{name: "docker run → first connect, membrane ÷ Docker bridge, dual-stack", stat: "median",
			figure: ratioID(runConnectID(driverMembrane, stackDual), runConnectID(driverBridge, stackDual)), op: "<=", threshold: 1.00},
		targetSpec{name: "docker run → first connect, membrane ÷ Docker bridge, IPv4 only (comparison)", stat: "median",
			figure: ratioID(runConnectID(driverMembrane, stackIPv4), runConnectID(driverBridge, stackIPv4))},
		targetSpec{name: "per-endpoint attach p99 (ms), new endpoint on a spare veth", stat: "p99", figure: controlID(ctlAttach), op: "<", threshold: 10},
		targetSpec{name: "per-endpoint attach p99 (ms), new endpoint on a fresh veth, spares run out (comparison)", stat: "p99", figure: controlID(ctlAttachUnprepared)},
		targetSpec{name: "daemon RSS at 500 endpoints (MiB)", stat: "median", figure: controlID(ctlRSS + "/500"), op: "<", threshold: 60},
	)
	var out []record.Target
	for _, s := range specs {
		out = append(out, b.evaluate(s))
	}
	return append(out, b.noiseTarget())
}

func (b *summaryBuilder) evaluate(s targetSpec) record.Target {
	t := record.Target{Name: s.name, Figure: s.figure, Stat: s.stat, Op: s.op, Threshold: s.threshold, Status: record.NotMeasured}
	f, ok := b.run.Figure(s.figure)
	if !ok {
		return t
	}
	t.Value = f.Summary.Median
	if s.stat == "p99" {
		t.Value = f.Summary.P99
	}
	t.Note = fmt.Sprintf("min–max %s–%s, IQR %s–%s, n=%d", num(f.Summary.Min), num(f.Summary.Max), num(f.Summary.Q1), num(f.Summary.Q3), f.Summary.N)
	met := false
	switch s.op {
	case "":
		t.Status = record.Shown
		return t
	case ">=":
		met = t.Value >= s.threshold
	case "<=":
		met = t.Value <= s.threshold
	case "<":
		met = t.Value < s.threshold
	}
	t.Status = record.Missed
	if met {
		t.Status = record.Met
	}
	if f.Summary.N > 1 && s.stat == "median" && s.threshold >= f.Summary.Q1 && s.threshold <= f.Summary.Q3 {
		// Half the rounds on either side: the verdict is the median's,
		// but this run does not resolve it.
		t.Note = "threshold inside the IQR, not resolved by this run; " + t.Note
	}
	return t
}

// minRoundsForSpread is how many rounds make a spread worth reading.
const minRoundsForSpread = 5

// noiseTarget reports how the run dealt with a noisy machine: interleaved
// rounds, pinned CPUs, and the spread of the request/response ratio.
func (b *summaryBuilder) noiseTarget() record.Target {
	id := ratioID(datapathID(setupMembrane, metricRR), datapathID(setupRaw, metricRR))
	t := record.Target{
		Name:   "noisy machine: interleaved rounds, client and server pinned to their own CPUs, spread shown (membrane ÷ raw veth request/response, IPv4)",
		Figure: id, Stat: "rounds", Op: ">=", Threshold: minRoundsForSpread, Status: record.NotMeasured,
	}
	f, ok := b.run.Figure(id)
	if !ok {
		return t
	}
	t.Value = float64(b.run.Rounds)
	t.Note = fmt.Sprintf("ratio %s, min–max %s–%s (±%.1f%%), IQR %s–%s", num(f.Summary.Median), num(f.Summary.Min), num(f.Summary.Max),
		f.Summary.SpreadPercent(), num(f.Summary.Q1), num(f.Summary.Q3))
	t.Status = record.Missed
	if b.run.Rounds >= minRoundsForSpread {
		t.Status = record.Met
	}
	return t
}

// num formats a figure with three significant digits.
func num(v float64) string {
	s := strconv.FormatFloat(v, 'g', 3, 64)
	if strings.Contains(s, "e+") {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return s
}
