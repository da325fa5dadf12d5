package stats

import (
	"errors"
	"math"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestMedianOddEvenAndUnsorted(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{10, 10, 1, 10}, 10},
	}
	for _, tt := range tests {
		if got := Median(tt.in); !near(got, tt.want) {
			t.Errorf("Median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
	if !math.IsNaN(Median(nil)) {
		t.Error("Median(nil) is not NaN")
	}
}

func TestMedianDoesNotReorderInput(t *testing.T) {
	in := []float64{3, 1, 2}
	Median(in)
	if in[0] != 3 || in[1] != 1 || in[2] != 2 {
		t.Errorf("input changed to %v", in)
	}
}

func TestQuantileInterpolatesLikeNumpyLinear(t *testing.T) {
	xs := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	// numpy.percentile(range(1,11), [0, 25, 75, 99, 100]) = 1, 3.25, 7.75, 9.91, 10
	for q, want := range map[float64]float64{0: 1, 0.25: 3.25, 0.75: 7.75, 0.99: 9.91, 1: 10} {
		if got := Quantile(xs, q); !near(got, want) {
			t.Errorf("Quantile(1..10, %v) = %v, want %v", q, got, want)
		}
	}
}

func TestSummarizeGivesRangeAndIQR(t *testing.T) {
	s, err := Summarize([]float64{0.9, 1.1, 1.0, 0.7, 1.3})
	if err != nil {
		t.Fatal(err)
	}
	want := Summary{N: 5, Median: 1.0, Min: 0.7, Max: 1.3, Q1: 0.9, Q3: 1.1}
	if !near(s.Median, want.Median) || !near(s.Min, want.Min) || !near(s.Max, want.Max) ||
		!near(s.Q1, want.Q1) || !near(s.Q3, want.Q3) || s.N != want.N {
		t.Errorf("Summarize = %+v, want %+v", s, want)
	}
	if got := s.SpreadPercent(); !near(got, 30) {
		t.Errorf("SpreadPercent = %v, want 30", got)
	}
}

func TestSummarizeRefusesNoData(t *testing.T) {
	if _, err := Summarize(nil); !errors.Is(err, ErrNoData) {
		t.Errorf("Summarize(nil) error = %v, want ErrNoData", err)
	}
}

func TestRatiosPairByRoundAndSkipUnpairedRounds(t *testing.T) {
	num := Paired{0: 90, 1: 80, 2: 50, 4: 7}
	den := Paired{0: 100, 1: 100, 2: 100, 3: 100}
	got, err := Ratios(num, den)
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{0.9, 0.8, 0.5}
	if len(got) != len(want) {
		t.Fatalf("Ratios = %v, want %v", got, want)
	}
	for i := range want {
		if !near(got[i], want[i]) {
			t.Errorf("Ratios[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestRatiosRefuseZeroDenominatorAndNoOverlap(t *testing.T) {
	if _, err := Ratios(Paired{0: 1}, Paired{0: 0}); err == nil {
		t.Error("zero denominator accepted")
	}
	if _, err := Ratios(Paired{0: 1}, Paired{1: 1}); !errors.Is(err, ErrNoData) {
		t.Errorf("no shared round: error = %v, want ErrNoData", err)
	}
}
