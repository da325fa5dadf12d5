package state

import (
	"fmt"
	"slices"
	"testing"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

// BenchmarkFirstWriteAfterCheckpoint times the first small write after a
// write that made a checkpoint (a rule added right after a large import),
// which is the one that starts the checkpoint's journal.
func BenchmarkFirstWriteAfterCheckpoint(b *testing.B) {
	s, _, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	s.journalMin = 1 << 10
	var lat []time.Duration
	i := 0
	for b.Loop() {
		b.StopTimer()
		seq := s.seq
		for s.seq == seq { // small writes until one checkpoints
			i++
			if err := s.Write(func(txn *memdb.Txn) error { return PutMeta(txn, fmt.Sprint("k", i%50), "v") }); err != nil {
				b.Fatal(err)
			}
		}
		s.pruning.Wait()
		time.Sleep(20 * time.Millisecond) // a user's next command comes later
		b.StartTimer()
		start := time.Now()
		if err := s.Write(func(txn *memdb.Txn) error { return PutMeta(txn, "after", fmt.Sprint(i)) }); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*9/10].Microseconds())/1000, "p90-ms")
}
