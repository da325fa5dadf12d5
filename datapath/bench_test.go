package datapath

import (
	"slices"
	"testing"
	"time"
)

// BenchmarkAttach measures Attach of one endpoint whose links are already
// pinned (the reconcile path: load with the endpoint's constants, update the
// links in place, put the map entries). It reports the p99 latency.
func BenchmarkAttach(b *testing.B) {
	requireNetnsTools(b)
	topo := newTopology(b, epA)
	a := topo.containers[epA.ID]
	pinDir := tempPinDir(b)
	d, err := Open(Config{PinDir: pinDir})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()

	lat := make([]time.Duration, 0, b.N)
	inNetns(b, topo.host, func() {
		if err := d.Attach(a.ep); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			start := time.Now()
			if err := d.Attach(a.ep); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
	})
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
