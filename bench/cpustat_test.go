package bench

import (
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// procStat is /proc/stat of a 2-CPU guest: user nice system idle iowait
// irq softirq steal guest guest_nice.
const procStat = `cpu  347715 0 481748 972433 17791 0 240056 3011 0 0
cpu0 163702 0 247410 467043 4323 0 155521 1517 7 0
cpu1 184013 5 234337 505390 13467 2 84535 1494 0 3
intr 220733311 0 0 0 0 0 0 0 0 0 0
ctxt 451809395
btime 1765130000
processes 123456
procs_running 2
procs_blocked 0
softirq 1 2 3 4 5 6 7 8 9 10 11
`

func TestParseBusyTicksSumsUserSystemAndInterruptsOfEveryCPU(t *testing.T) {
	got, err := parseBusyTicks(procStat)
	if err != nil {
		t.Fatal(err)
	}
	// Not the "cpu" total line; not steal (1517, 1494); guest (7) and
	// guest_nice (3) are in user and nice already.
	want := int64(163702+0+247410+0+155521) + (184013 + 5 + 234337 + 2 + 84535)
	if got != want {
		t.Errorf("busy ticks = %d, want %d", got, want)
	}
}

func TestParseBusyTicksReadsOlderKernelsShorterLines(t *testing.T) {
	got, err := parseBusyTicks("cpu  3 0 4 100\ncpu0 1 0 2 50\ncpu1 2 0 2 50 9\n")
	if err != nil {
		t.Fatal(err)
	}
	if got != 7 {
		t.Errorf("busy ticks = %d, want 7 (user, nice, system; idle and iowait left out)", got)
	}
}

func TestParseBusyTicksRefusesWhatIsNoProcStat(t *testing.T) {
	for name, stat := range map[string]string{
		"no per-CPU line": "cpu  1 2 3 4\nintr 5\n",
		"empty":           "",
		"not a number":    "cpu0 1 x 3 4 5 6 7 8 0 0\n",
		"short line":      "cpu0 1 2 3\n",
	} {
		if _, err := parseBusyTicks(stat); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if isPerCPU("cpu") || isPerCPU("cpufreq") || !isPerCPU("cpu12") {
		t.Error("isPerCPU does not tell cpuN lines from the others")
	}
}

func TestClockTicksPerSecondReadsATClkTck(t *testing.T) {
	if hz := clockTicksPerSecond([][2]uintptr{{6, 4096}, {atClkTck, 250}, {0, 0}}); hz != 250 {
		t.Errorf("USER_HZ = %d, want AT_CLKTCK's 250", hz)
	}
	if hz := clockTicksPerSecond([][2]uintptr{{6, 4096}}); hz != defaultUserHZ {
		t.Errorf("USER_HZ without AT_CLKTCK = %d, want %d", hz, defaultUserHZ)
	}
	if hz := newCPUClock().hz; hz <= 0 {
		t.Errorf("this process's USER_HZ = %d", hz)
	}
	if d := ticksDuration(150, 100); d != 1500*time.Millisecond {
		t.Errorf("150 ticks at 100 Hz = %s, want 1.5s", d)
	}
}

// busyAcross is the busy time a cpuClock at 100 Hz measures across a run
// during which /proc/stat goes from before to after.
func busyAcross(t *testing.T, before, after string) time.Duration {
	t.Helper()
	path := filepath.Join(t.TempDir(), "stat")
	if err := os.WriteFile(path, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	busy, err := cpuClock{path: path, hz: 100}.during(func() error {
		return os.WriteFile(path, []byte(after), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return busy
}

func TestCPUClockMeasuresBusyTimeAcrossARun(t *testing.T) {
	// 30 ticks of user on cpu0, 20 of softirq on cpu1, 500 idle.
	busy := busyAcross(t,
		"cpu0 100 0 100 900 0 0 0 0 0 0\ncpu1 50 0 50 900 0 0 0 0 0 0\n",
		"cpu0 130 0 100 1150 0 0 0 0 0 0\ncpu1 50 0 50 1150 0 0 20 0 0 0\n")
	if busy != 500*time.Millisecond {
		t.Errorf("busy = %s, want 500ms (50 ticks at 100 Hz)", busy)
	}
	_, err := cpuClock{path: filepath.Join(t.TempDir(), "missing"), hz: 100}.busyTicks()
	if err == nil || !strings.Contains(err.Error(), "busy CPU time") {
		t.Errorf("missing file: error = %v, want one that says what it was reading", err)
	}
}

func TestCPUCostDividesByTheLoadsWork(t *testing.T) {
	for _, tc := range []struct {
		metric string
		busy   time.Duration
		done   float64
		want   float64
		unit   string
	}{
		// 2 CPUs busy for 0.5 s over 40000 transactions: 25 µs each.
		{metricRR, time.Second, 40000, 25, "µs CPU/transaction"},
		{metricCRR, 1500 * time.Millisecond, 3000, 500, "µs CPU/connection"},
		{metricUDP, time.Second, 125000, 8, "µs CPU/datagram"},
		// 2 s of CPU for 2.5 GB received: 800 ms per GB.
		{metricTCP1, 2 * time.Second, 2.5e9, 800, "ms CPU/GB"},
		{metricTCP2, 2 * time.Second, 4e9, 500, "ms CPU/GB"},
	} {
		c := cpuCosts[tc.metric]
		got, err := c.of(tc.busy, tc.done)
		if err != nil {
			t.Errorf("%s: %v", tc.metric, err)
			continue
		}
		if math.Abs(got-tc.want) > 1e-9 || c.unit != tc.unit {
			t.Errorf("%s: %s over %v = %v %s, want %v %s", tc.metric, tc.busy, tc.done, got, c.unit, tc.want, tc.unit)
		}
	}
	if _, err := cpuCosts[metricRR].of(time.Second, 0); err == nil {
		t.Error("no work done: no error")
	}
	if _, err := cpuCosts[metricRR].of(time.Second, math.NaN()); err == nil {
		t.Error("NaN work: no error")
	}
}

func TestAddCPURecordsTheCompanionSeries(t *testing.T) {
	h := &harness{rec: newRecorder(io.Discard)}
	id := datapathFamilyID(familyIPv6, setupMembrane, cpuMetric(metricRR))
	if err := h.addCPU(id, metricRR, 3, 900*time.Millisecond, 30000); err != nil {
		t.Fatal(err)
	}
	s := h.rec.series["datapath-ipv6/membrane/rr-cpu"]
	if s == nil || s.Unit != "µs CPU/transaction" || len(s.Samples) != 1 || s.Samples[0].Round != 3 || math.Abs(s.Samples[0].Value-30) > 1e-9 {
		t.Errorf("series = %+v, want one 30 µs CPU/transaction sample in round 3", s)
	}
	if err := h.addCPU(datapathID(setupRaw, cpuMetric(metricCRR)), metricCRR, 0, time.Second, 0); err == nil {
		t.Error("a load that did no work recorded a CPU cost")
	}
}

func TestCPUClockMeasuresALongUptime(t *testing.T) {
	// Some 9.2·10⁹ ticks since boot (a large machine busy for weeks): in
	// nanoseconds, the reading after the run is past what an int64 holds
	// and the one before it is not.
	busy := busyAcross(t, "cpu0 9223372030 0 0 5 0 0 0 0 0 0\n", "cpu0 9223372080 0 0 5 0 0 0 0 0 0\n")
	if busy != 500*time.Millisecond {
		t.Errorf("busy = %s, want 500ms (50 ticks at 100 Hz)", busy)
	}
}
