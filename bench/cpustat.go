package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The CPU a datapath load costs: the machine's busy CPU time while the
// load's client ran, from /proc/stat, divided by the load's work. Client
// and server each run on a CPU of their own and nothing else runs but the
// daemons, so the whole machine's busy time is what the path costs, both
// ends and the kernel's softirq processing included.

// procStatPath is where the kernel reports the CPU time of every CPU.
const procStatPath = "/proc/stat"

// defaultUserHZ is USER_HZ, the unit of /proc/stat's times, for a
// process whose auxiliary vector does not say: the kernel fixes it at 100
// on every architecture Go runs Linux on.
const defaultUserHZ = 100

// atClkTck is the auxiliary vector entry that carries USER_HZ (AT_CLKTCK
// of <linux/auxvec.h>), which is where sysconf(_SC_CLK_TCK) reads it.
const atClkTck = 17

// cpuClock reads the machine's busy CPU time.
type cpuClock struct {
	path string // /proc/stat
	hz   int64  // clock ticks per second of its times
}

// newCPUClock reads /proc/stat in this process's USER_HZ.
func newCPUClock() cpuClock {
	auxv, err := unix.Auxv()
	if err != nil {
		return cpuClock{path: procStatPath, hz: defaultUserHZ}
	}
	return cpuClock{path: procStatPath, hz: clockTicksPerSecond(auxv)}
}

// clockTicksPerSecond is USER_HZ from an auxiliary vector (key, value
// pairs), or defaultUserHZ where it has none.
func clockTicksPerSecond(auxv [][2]uintptr) int64 {
	for _, kv := range auxv {
		if kv[0] == atClkTck && kv[1] > 0 {
			return int64(kv[1])
		}
	}
	return defaultUserHZ
}

// busyTicks is the machine's busy CPU time since boot, in clock ticks.
func (c cpuClock) busyTicks() (int64, error) {
	b, err := os.ReadFile(c.path)
	if err != nil {
		return 0, fmt.Errorf("busy CPU time: %w", err)
	}
	ticks, err := parseBusyTicks(string(b))
	if err != nil {
		return 0, fmt.Errorf("busy CPU time: %s: %w", c.path, err)
	}
	return ticks, nil
}

// during runs f and returns the machine's busy CPU time while it ran, read
// just before and just after it. The ticks are subtracted before they are
// converted: a machine's total since boot times 10⁹ would overflow.
func (c cpuClock) during(f func() error) (time.Duration, error) {
	before, err := c.busyTicks()
	if err != nil {
		return 0, err
	}
	if err := f(); err != nil {
		return 0, err
	}
	after, err := c.busyTicks()
	if err != nil {
		return 0, err
	}
	return ticksDuration(after-before, c.hz), nil
}

// ticksDuration converts clock ticks at hz per second to a duration.
func ticksDuration(ticks, hz int64) time.Duration {
	return time.Duration(ticks) * time.Second / time.Duration(hz)
}

// Fields of a /proc/stat cpu line after its name, in clock ticks.
const (
	statUser = iota
	statNice
	statSystem
	statIdle
	statIOWait
	statIRQ
	statSoftIRQ
	statSteal
	statGuest     // also counted in user
	statGuestNice // also counted in nice
)

// parseBusyTicks sums the busy clock ticks of /proc/stat's per-CPU lines
// (cpu0, cpu1, ...; not the "cpu" line, their total): user, nice, system,
// irq and softirq. Idle and iowait are not busy; steal is time the
// hypervisor gave to someone else, which would add the host's contention
// to the figure; guest and guest_nice are counted in user and nice
// already. Older kernels print fewer fields; those missing count as 0.
func parseBusyTicks(stat string) (int64, error) {
	var total int64
	cpus := 0
	for line := range strings.Lines(stat) {
		f := strings.Fields(line)
		if len(f) == 0 || !isPerCPU(f[0]) {
			continue
		}
		if len(f) < 1+statIOWait {
			return 0, fmt.Errorf("%s: %d fields, want at least %d", f[0], len(f)-1, statIOWait)
		}
		for i, s := range f[1:] {
			if i == statIdle || i == statIOWait || i >= statSteal {
				continue
			}
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: field %d: %w", f[0], i+1, err)
			}
			total += n
		}
		cpus++
	}
	if cpus == 0 {
		return 0, fmt.Errorf("no per-CPU line")
	}
	return total, nil
}

// isPerCPU reports whether a /proc/stat line name is one CPU's: "cpu"
// and its number.
func isPerCPU(name string) bool {
	n, ok := strings.CutPrefix(name, "cpu")
	if !ok || n == "" {
		return false
	}
	_, err := strconv.Atoi(n)
	return err == nil
}

// cpuCost divides a load's busy CPU time by its work.
type cpuCost struct {
	unit string        // of the quotient
	per  time.Duration // the unit of CPU time
	work float64       // how much of the load's counted work is one unit of work
}

// cpuCosts are the datapath loads' CPU costs: per transaction (rr), per
// connection (crr), per datagram received (udp), per gigabyte received
// (iperf3; 10⁹ bytes, as Gbit/s counts bits).
var cpuCosts = map[string]cpuCost{
	metricTCP1: {unit: "ms CPU/GB", per: time.Millisecond, work: 1e9},
	metricTCP2: {unit: "ms CPU/GB", per: time.Millisecond, work: 1e9},
	metricRR:   {unit: "µs CPU/transaction", per: time.Microsecond, work: 1},
	metricCRR:  {unit: "µs CPU/connection", per: time.Microsecond, work: 1},
	metricUDP:  {unit: "µs CPU/datagram", per: time.Microsecond, work: 1},
}

// of divides busy CPU time by the work done (transactions, connections,
// datagrams or bytes, as counted by the load).
func (c cpuCost) of(busy time.Duration, done float64) (float64, error) {
	if !(done > 0) {
		return 0, fmt.Errorf("CPU per unit of work: no work done to divide %s of CPU time by", busy)
	}
	return float64(busy) / float64(c.per) / (done / c.work), nil
}
