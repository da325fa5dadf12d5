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

// policyEntries returns n distinct policy entries over 100 subjects.
func policyEntries(n int) map[PolicyKey]Verdict {
	m := make(map[PolicyKey]Verdict, n)
	for i := range n {
		m[PolicyKey{Subject: 256 + uint32(i%100), Peer: 256 + uint32(i/100%1000), Port: uint16(1 + i/100000), Proto: ProtoTCP, Dir: uint8(i % 2)}] = VerdictAllow
	}
	return m
}

// BenchmarkSyncPolicy10k measures SyncPolicy of 10,000 entries into empty
// maps (target: under 100 ms).
func BenchmarkSyncPolicy10k(b *testing.B) {
	requirePrivileged(b)
	state := PolicyState{Entries: policyEntries(10000), Enforcement: map[uint32]Enforcement{256: {Egress: true}}}
	for b.Loop() {
		b.StopTimer()
		d, err := newDatapath("")
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		res, err := d.SyncPolicy(state)
		b.StopTimer()
		if err != nil || res.Added != 10000 {
			b.Fatalf("%+v, %v", res, err)
		}
		d.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/sync")
}

// BenchmarkSyncPolicyAddOneTo100k measures a SyncPolicy that adds one entry
// to 100,000 (target: under 5 ms). It reports the p99 latency.
func BenchmarkSyncPolicyAddOneTo100k(b *testing.B) {
	requirePrivileged(b)
	d, err := newDatapath("")
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	state := PolicyState{Entries: policyEntries(100000)}
	if _, err := d.SyncPolicy(state); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	i := 0
	for b.Loop() {
		state.Entries[PolicyKey{Subject: 100000 + uint32(i), Proto: ProtoUDP, Port: 53, Dir: DirEgress}] = VerdictAllow
		i++
		start := time.Now()
		res, err := d.SyncPolicy(state)
		lat = append(lat, time.Since(start))
		if err != nil || res.Added != 1 {
			b.Fatalf("%+v, %v", res, err)
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
