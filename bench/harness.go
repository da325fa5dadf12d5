package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/membrane-net/membrane/bench/record"
	"github.com/membrane-net/membrane/internal/testhost"
)

// ErrNotRoot is returned when the run cannot start for lack of privilege:
// it starts a dockerd, loads BPF programs and creates namespaces.
var ErrNotRoot = errors.New("not root: the benchmark starts a dockerd, loads BPF programs and creates network namespaces")

// harness is the state of one run.
type harness struct {
	cfg   Config
	log   io.Writer
	rng   *rand.Rand
	tools *toolPaths
	tmp   string
	plan  addressPlan
	td    teardown
	rec   *recorder
	loads loads
	// cpu reads the machine's busy CPU time around each datapath load.
	cpu cpuClock

	docker   *dockerd
	membrane *membraned
	inproc   *inproc

	// forwardPolicy holds the host's FORWARD policies from before dockerd
	// set them to DROP, put back at the end.
	forwardPolicy map[string]string

	// paths of the datapath setups, by setup name.
	paths map[string]path
	// routedSetups are the iptables comparison's namespaces.
	routedSetups []routed
	// scratch is a namespace per iptables backend for install timings.
	scratch map[string]string
	// policyFiles are the membrane policy files, by policy state.
	policyFiles map[string]string
	// policy is the membrane policy state in force.
	policy string
	// runNets are the networks of the docker run → connect timing.
	runNets []runNet
	// notes go into the run's record: facts the report must tell.
	notes []string
}

// Run runs the benchmark and returns its record. Measurements that fail are
// listed in the record's Errors (and the run goes on); a failure to set up
// ends the run with an error. Everything the run created is removed before
// Run returns.
func Run(ctx context.Context, cfg Config) (*record.Run, error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	if cfg.Seed == 0 {
		cfg.Seed = rand.Uint64()
	}
	h := &harness{
		cfg: cfg, log: cfg.Log,
		rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x6d656d6272616e65)),
		rec: newRecorder(cfg.Log), td: teardown{log: cfg.Log}, cpu: newCPUClock(),
	}
	h.logf("mode %s, %d rounds of %s loads, seed %d", cfg.Mode, cfg.Rounds, cfg.Duration, cfg.Seed)
	run := &record.Run{
		Mode: cfg.Mode, Seed: cfg.Seed, Rounds: cfg.Rounds, MeasureSeconds: cfg.Duration.Seconds(),
		RuleCounts: cfg.RuleCounts, EndpointCounts: cfg.EndpointCounts, Started: time.Now().UTC(),
		ClientCPU: cfg.ClientCPU, ServerCPU: cfg.ServerCPU, CreateParallelism: cfg.CreateParallelism,
	}
	var err error
	if h.tools, err = findTools(ctx); err != nil {
		return nil, err
	}
	unlock, err := testhost.Lock(ctx, cfg.LockTimeout, func() {
		fmt.Fprintf(h.log, "bench: waiting for %s (an integration run or another benchmark holds it)\n", testhost.LockFile)
	})
	if err != nil {
		return nil, err
	}
	defer unlock()
	run.Machine = describeMachine(ctx, h.tools)
	run.Revision = codeRevision(ctx, h.tools.moduleRoot)

	defer h.td.run()
	start := time.Now()
	if err := h.prepare(ctx); err != nil {
		h.dumpLogs()
		return nil, fmt.Errorf("setup: %w", err)
	}
	h.logf("setup done in %s", time.Since(start).Round(time.Millisecond))

	if err := h.runRounds(ctx); err != nil {
		return nil, err
	}
	if err := h.controlPlane(ctx); err != nil {
		return nil, err
	}
	h.checkSeries()
	if len(h.rec.errors) > 0 {
		h.keepLogs()
	}
	run.Machine.LoadAverageEnd = loadAverage()
	run.Finished = time.Now().UTC()
	run.Series = h.rec.order
	run.Errors = h.rec.errors
	run.Notes = append(run.Notes, h.notes...)
	run.Datapath = datapathPlan(h.plan, cfg.IPv6UDP)
	Summarize(run)
	return run, nil
}

// checkSeries fails every series with a value that is zero, negative or
// not a number: a measurement that returned nothing must not pass as one.
// Conntrack counts may be zero (a namespace that tracks nothing).
func (h *harness) checkSeries() {
	for _, s := range h.rec.order {
		zeroOK := strings.HasPrefix(s.ID, secConntrack+"/")
		for _, x := range s.Samples {
			if !(x.Value > 0 || zeroOK && x.Value == 0) || math.IsInf(x.Value, 0) {
				h.rec.fail(s.ID, fmt.Errorf("round %d measured %v %s", x.Round, x.Value, s.Unit))
			}
		}
	}
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.log, "bench: %s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// prepare builds everything the rounds measure. Each piece registers its
// own removal as soon as it exists.
func (h *harness) prepare(ctx context.Context) error {
	var err error
	if h.tmp, err = os.MkdirTemp("", "membrane-bench-"); err != nil {
		return err
	}
	h.td.add("remove "+h.tmp, func() error {
		testhost.UnmountUnder(h.tmp)
		return os.RemoveAll(h.tmp)
	})
	if err := testhost.MountBPF(); err != nil {
		return err
	}
	cleanStale(h.log)
	h.td.add("remove leftovers", func() error { cleanStale(io.Discard); return nil })

	h.logf("building membrane, membraned and membrane-netload")
	if err := h.tools.buildBinaries(ctx, h.tmp); err != nil {
		return err
	}
	if h.plan, err = pickAddressPlan(ctx); err != nil {
		return err
	}
	h.loads = loads{
		netload: h.tools.netload, iperf3: h.tools.iperf3,
		clientCPU: h.cfg.ClientCPU, serverCPU: h.cfg.ServerCPU,
		duration: h.cfg.Duration, logDir: h.tmp,
	}

	h.logf("starting a private dockerd and membrane daemon (addresses from %s and %s)", h.plan.base, h.plan.base6)
	h.forwardPolicy = testhost.ForwardPolicies()
	h.td.add("restore FORWARD policies", func() error { testhost.RestoreForwardPolicies(h.forwardPolicy, h.logf); return nil })
	h.docker = newDockerd(filepath.Join(h.tmp, "docker"), h.tools.docker)
	if err := os.MkdirAll(h.docker.dir, 0o700); err != nil {
		return err
	}
	h.td.add("stop dockerd", h.docker.stop)
	if err := h.docker.start(ctx, h.tools.dockerd); err != nil {
		return err
	}
	if err := h.docker.buildImage(ctx, h.tools.moduleRoot); err != nil {
		return err
	}
	h.membrane = newMembraned(h.tools.membrane, h.tmp, h.docker.host, h.plan.daemonRange())
	h.td.add("stop membrane daemon", h.membrane.stop)
	if err := h.membrane.start(ctx); err != nil {
		return err
	}
	// Registered after the daemon's start, so it runs before the daemon
	// stops (teardown runs last-registered first): Docker asks the
	// daemon to remove each endpoint, veth pair included.
	h.td.add("remove containers and networks", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		err := h.docker.removeAll(ctx)
		if err != nil {
			h.keepLogs()
		}
		return err
	})
	if err := h.writePolicyFiles(); err != nil {
		return err
	}
	if err := h.createDatapathSetups(ctx); err != nil {
		return err
	}
	if err := h.createRoutedSetups(ctx); err != nil {
		return err
	}
	if h.inproc, err = openInproc(); err != nil {
		return err
	}
	h.td.add("close in-process datapath", h.inproc.close)
	return nil
}

// keepLogs copies the daemons' logs out of the run's temporary directory,
// which teardown removes, so that a failed measurement can be looked into.
func (h *harness) keepLogs() {
	dir, err := os.MkdirTemp("", "membrane-bench-logs-")
	if err != nil {
		return
	}
	for _, p := range []string{filepath.Join(h.docker.dir, "dockerd.log"), h.membrane.logPath} {
		if b, err := os.ReadFile(p); err == nil {
			_ = os.WriteFile(filepath.Join(dir, filepath.Base(p)), b, 0o644)
		}
	}
	h.logf("the daemons' logs are kept in %s", dir)
}

// dumpLogs prints the end of the daemons' logs, which say why a setup or
// a measurement failed.
func (h *harness) dumpLogs() {
	var logs []string
	if h.docker != nil {
		logs = append(logs, filepath.Join(h.docker.dir, "dockerd.log"))
	}
	if h.membrane != nil {
		logs = append(logs, h.membrane.logPath)
	}
	for _, p := range logs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 60 {
			lines = lines[len(lines)-60:]
		}
		fmt.Fprintf(h.log, "===== last lines of %s =====\n%s\n===== end of %s =====\n", filepath.Base(p), strings.Join(lines, "\n"), filepath.Base(p))
	}
}

// datapathPlan records which setups and loads the datapath comparison ran
// over each address family, and where their addresses came from.
func datapathPlan(plan addressPlan, ipv6UDP bool) []record.DatapathFamily {
	var out []record.DatapathFamily
	for _, family := range families {
		f := record.DatapathFamily{Family: familyLabels[family], Prefix: plan.base.String()}
		if family == familyIPv6 {
			f.Prefix = plan.base6.String()
		}
		for _, s := range familySetups(family) {
			f.Setups = append(f.Setups, setupLabels[s])
		}
		for _, m := range familyMetrics(family, ipv6UDP) {
			f.Loads = append(f.Loads, metricLabels[m])
		}
		out = append(out, f)
	}
	return out
}
