package bench

import (
	"slices"
	"strconv"

	"github.com/membrane-net/membrane/bench/record"
)

// Bars of the datapath charts, in an order that keeps each bar's colour
// the same in every group: the setup only IPv4 has comes last.
var (
	chartSetups = []string{setupRaw, setupBridge, setupMembrane, setupPolicy, setupRawNat}
	chartRatios = []ratioPair{
		{setupMembrane, setupRaw}, {setupMembrane, setupBridge}, {setupPolicy, setupRaw}, {setupPolicy, setupBridge},
		{setupMembrane, setupRawNat},
	}
)

// charts lists the report's charts: which figures each draws, grouped.
func (b *summaryBuilder) charts() []record.Chart {
	var charts []record.Chart
	for _, family := range families {
		file := "datapath-ratios.svg"
		if family != familyIPv4 {
			file = "datapath-ratios-" + family + ".svg"
		}
		ratios := record.Chart{File: file, Title: "Datapath, " + familyLabels[family] + ": per-round ratios (median, min–max)", Unit: "ratio", Reference: 1}
		for _, m := range ratioMetrics {
			if !slices.Contains(familyMetrics(family, true), m) {
				continue
			}
			g := record.ChartGroup{Label: metricLabels[m]}
			for _, p := range chartRatios {
				if !slices.Contains(familySetups(family), p.num) || !slices.Contains(familySetups(family), p.den) {
					continue
				}
				label := ratioLabel(p)
				if p.den == setupRawNat {
					// The table's label does not fit the chart's margin.
					label = setupLabels[p.num] + " ÷ raw veth + Docker's rules"
				}
				g.Bars = append(g.Bars, record.ChartBar{Series: label, Figure: ratioID(datapathFamilyID(family, p.num, m), datapathFamilyID(family, p.den, m))})
			}
			ratios.Groups = append(ratios.Groups, g)
		}
		charts = append(charts, ratios)
	}
	for _, m := range []string{metricRR, metricCRR, metricTCP1} {
		c := record.Chart{File: "datapath-" + m + ".svg", Title: "Datapath: " + metricLabels[m] + " (median, min–max)", Unit: metricUnits[m]}
		for _, family := range families {
			g := record.ChartGroup{Label: familyLabels[family]}
			for _, s := range chartSetups {
				if slices.Contains(familySetups(family), s) {
					g.Bars = append(g.Bars, record.ChartBar{Series: setupLabels[s], Figure: datapathFamilyID(family, s, m)})
				}
			}
			c.Groups = append(c.Groups, g)
		}
		charts = append(charts, c)
	}
	for _, m := range []string{metricRR, metricCRR} {
		c := record.Chart{File: "policy-scale-" + m + ".svg", Title: "Policy scale: " + metricLabels[m] + ", N rules ÷ 0 rules", Unit: "ratio", Reference: 1}
		for _, n := range b.run.RuleCounts {
			if n == 0 {
				continue
			}
			g := record.ChartGroup{Label: rulesPhrase(n)}
			for _, impl := range scaleImpls {
				g.Bars = append(g.Bars, record.ChartBar{Series: implLabels[impl], Figure: ratioID(scaleSeries(impl, n, m), scaleSeries(impl, 0, m))})
			}
			c.Groups = append(c.Groups, g)
		}
		charts = append(charts, c)
	}
	for _, t := range []struct{ file, title, sec string }{
		{"install.svg", "Install N rules into an empty policy (ms, log scale)", secInstall},
		{"add-one.svg", "Add one rule to N rules (ms, log scale)", secAddOne},
	} {
		c := record.Chart{File: t.file, Title: t.title, Unit: "ms", Log: true}
		for _, n := range b.run.RuleCounts {
			if n == 0 {
				continue
			}
			g := record.ChartGroup{Label: rulesPhrase(n)}
			for _, impl := range installImpls {
				id := installID(impl, n)
				if t.sec == secAddOne {
					id = addOneID(impl, n)
				}
				g.Bars = append(g.Bars, record.ChartBar{Series: implLabels[impl], Figure: id})
			}
			c.Groups = append(c.Groups, g)
		}
		charts = append(charts, c)
	}
	run := record.Chart{File: "docker-run-connect.svg", Title: "docker run → first connect (ms, median, min–max)", Unit: "ms"}
	for _, stack := range runStacks {
		g := record.ChartGroup{Label: stackLabels[stack] + " network"}
		for _, d := range runDrivers {
			g.Bars = append(g.Bars, record.ChartBar{Series: driverLabels[d], Figure: runConnectID(d, stack)})
		}
		run.Groups = append(run.Groups, g)
	}
	charts = append(charts, run)
	mem := record.Chart{File: "daemon-memory.svg", Title: "membrane daemon RSS by endpoint count (MiB)", Unit: "MiB"}
	for _, n := range b.run.EndpointCounts {
		ns := strconv.Itoa(n)
		mem.Groups = append(mem.Groups, record.ChartGroup{Label: ns + " endpoints", Bars: []record.ChartBar{
			{Series: "daemon RSS", Figure: controlID(ctlRSS + "/" + ns)},
			{Series: "BPF maps", Figure: controlID(ctlBPFMaps + "/" + ns)},
		}})
	}
	charts = append(charts, mem)
	return charts
}
