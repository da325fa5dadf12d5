package bench

import (
	"strconv"

	"github.com/membrane-net/membrane/bench/record"
)

// charts lists the report's charts: which figures each draws, grouped.
func (b *summaryBuilder) charts() []record.Chart {
	var charts []record.Chart
	ratios := record.Chart{File: "datapath-ratios.svg", Title: "Datapath: per-round ratios (median, min–max)", Unit: "ratio", Reference: 1}
	for _, m := range ratioMetrics {
		g := record.ChartGroup{Label: metricLabels[m]}
		for _, p := range datapathRatios[:4] {
			g.Bars = append(g.Bars, record.ChartBar{Series: ratioLabel(p), Figure: ratioID(datapathID(p.num, m), datapathID(p.den, m))})
		}
		ratios.Groups = append(ratios.Groups, g)
	}
	charts = append(charts, ratios)
	for _, m := range []string{metricRR, metricCRR, metricTCP1} {
		c := record.Chart{File: "datapath-" + m + ".svg", Title: "Datapath: " + metricLabels[m] + " (median, min–max)", Unit: metricUnits[m]}
		g := record.ChartGroup{Label: metricLabels[m]}
		for _, s := range datapathSetups {
			g.Bars = append(g.Bars, record.ChartBar{Series: setupLabels[s], Figure: datapathID(s, m)})
		}
		c.Groups = []record.ChartGroup{g}
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
	g := record.ChartGroup{Label: "docker run → connect"}
	for _, d := range []string{driverBridge, driverMembrane} {
		g.Bars = append(g.Bars, record.ChartBar{Series: map[string]string{driverBridge: "Docker bridge", driverMembrane: "membrane"}[d], Figure: controlID(ctlRunConnect + "/" + d)})
	}
	run.Groups = []record.ChartGroup{g}
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
