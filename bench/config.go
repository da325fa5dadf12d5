package bench

import (
	"fmt"
	"io"
	"time"
)

// Modes of a run.
const (
	ModeFull  = "full"  // make bench: every figure, enough rounds for ratios
	ModeSmoke = "smoke" // make bench-smoke: every code path once, small and fast
)

// Config is everything a run is told. DefaultConfig fills it per mode; the
// command line may override some of it.
type Config struct {
	Mode string
	// Rounds of interleaved measurements; Duration of each load.
	Rounds   int
	Duration time.Duration
	// Seed orders each round's measurements (printed, recorded, and
	// accepted back to repeat an order).
	Seed uint64
	// IPv6UDP adds the UDP load to the IPv6 datapath loads (IPv4 always
	// has it). The full run leaves it out to stay near half an hour.
	IPv6UDP bool
	// RuleCounts are the policy sizes compared (0 is no policy at all).
	RuleCounts []int
	// EndpointCounts are the sizes at which the daemon's memory is read.
	EndpointCounts []int
	// Samples of the control-plane latencies.
	DockerRunSamples int
	ImportSamples    int
	AttachSamples    int
	// ClientCPU and ServerCPU pin the traffic tools.
	ClientCPU, ServerCPU int
	// Parallel docker runs when creating endpoints for the memory figures.
	CreateParallelism int
	// LockTimeout bounds the wait for the integration suite's lock.
	LockTimeout time.Duration
	// Log receives progress lines.
	Log io.Writer
}

// DefaultConfig is the configuration of a mode.
func DefaultConfig(mode string, log io.Writer) (Config, error) {
	c := Config{
		Mode:              mode,
		ClientCPU:         defaultClientCPU,
		ServerCPU:         defaultServerCPU,
		CreateParallelism: 4,
		LockTimeout:       time.Hour,
		Log:               log,
	}
	switch mode {
	case ModeFull:
		// 7 rounds of 3 s loads: about 4 minutes a round with both
		// address families, about half an hour in all.
		c.Rounds = 7
		c.Duration = 3 * time.Second
		c.RuleCounts = []int{0, 1, 100, 1000, 10000, 100000}
		c.EndpointCounts = []int{10, 100, 500}
		// docker run → first connect is mostly Docker's own start, which
		// varies by ±10% from one container to the next: 30 samples a
		// network (under a second each; a minute in all) steady the
		// median of the ratio, where 10 left it swinging across 1.
		c.DockerRunSamples = 30
		c.ImportSamples = 10
		c.AttachSamples = 200
	case ModeSmoke:
		// Every load once, short: netload loads take the duration,
		// iperf3 rounds it up to a whole second. IPv6 UDP too, so
		// that its path is exercised.
		c.Rounds = 1
		c.Duration = 500 * time.Millisecond
		c.IPv6UDP = true
		c.RuleCounts = []int{0, 1, 100}
		c.EndpointCounts = []int{10}
		c.DockerRunSamples = 2
		c.ImportSamples = 2
		c.AttachSamples = 10
	default:
		return Config{}, fmt.Errorf("mode %q: want %s or %s", mode, ModeFull, ModeSmoke)
	}
	return c, nil
}
