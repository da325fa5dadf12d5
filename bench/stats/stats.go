// Package stats summarises repeated measurements: medians, quantiles, the
// spread over rounds, and per-round ratios of two series.
package stats

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// ErrNoData is returned when a summary or ratio has nothing to work on.
var ErrNoData = errors.New("no data")

// Summary describes a set of values: the median, the full range, the
// interquartile range (Q1–Q3), which a single outlier round cannot
// stretch, and the upper tail (P90, P99) for latency samples.
type Summary struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	Q1     float64 `json:"q1"`
	Q3     float64 `json:"q3"`
	P90    float64 `json:"p90"`
	P99    float64 `json:"p99"`
}

// Summarize returns the summary of xs, which it does not change.
func Summarize(xs []float64) (Summary, error) {
	if len(xs) == 0 {
		return Summary{}, ErrNoData
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return Summary{
		N:      len(s),
		Median: quantileSorted(s, 0.5),
		Min:    s[0],
		Max:    s[len(s)-1],
		Q1:     quantileSorted(s, 0.25),
		Q3:     quantileSorted(s, 0.75),
		P90:    quantileSorted(s, 0.90),
		P99:    quantileSorted(s, 0.99),
	}, nil
}

// SpreadPercent is the half-width of the min–max range relative to the
// median, in percent: "±x%".
func (s Summary) SpreadPercent() float64 {
	if s.Median == 0 {
		return 0
	}
	return (s.Max - s.Min) / 2 / math.Abs(s.Median) * 100
}

// Median returns the median of xs (the mean of the middle two for an even
// count), or NaN for no values.
func Median(xs []float64) float64 {
	return Quantile(xs, 0.5)
}

// Quantile returns the q-quantile (0 ≤ q ≤ 1) of xs with linear
// interpolation between closest ranks (the method of R's default type 7 and
// numpy's "linear"), or NaN for no values.
func Quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return quantileSorted(s, q)
}

func quantileSorted(s []float64, q float64) float64 {
	q = math.Max(0, math.Min(1, q))
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	frac := pos - float64(lo)
	return s[lo] + (s[hi]-s[lo])*frac
}

// Paired is one value per round; rounds without a value are absent.
type Paired map[int]float64

// Ratios divides num by den round by round, for the rounds both have, in
// round order. Dividing within a round cancels what drifts between rounds
// (other load on the machine, thermal state), which is why the harness
// reports the median of per-round ratios rather than a ratio of medians.
func Ratios(num, den Paired) ([]float64, error) {
	rounds := make([]int, 0, len(num))
	for r := range num {
		if _, ok := den[r]; ok {
			rounds = append(rounds, r)
		}
	}
	if len(rounds) == 0 {
		return nil, fmt.Errorf("ratio: %w: the series share no round", ErrNoData)
	}
	slices.Sort(rounds)
	out := make([]float64, 0, len(rounds))
	for _, r := range rounds {
		if den[r] == 0 {
			return nil, fmt.Errorf("ratio: round %d: denominator is zero", r)
		}
		out = append(out, num[r]/den[r])
	}
	return out, nil
}
