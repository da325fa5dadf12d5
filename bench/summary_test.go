package bench

import (
	"math"
	"testing"

	"github.com/membrane-net/membrane/bench/record"
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
