package bench

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/membrane-net/membrane/bench/netload"
)

// Docker drivers compared by the docker run → connect timing, and the
// address families of their networks.
const (
	driverBridge   = "bridge"
	driverMembrane = "membrane"
	stackDual      = "dual-stack" // IPv4 and IPv6
	stackIPv4      = "ipv4"       // IPv4 only
)

var (
	runDrivers   = []string{driverBridge, driverMembrane}
	runStacks    = []string{stackDual, stackIPv4}
	driverLabels = map[string]string{driverBridge: "Docker bridge", driverMembrane: "membrane"}
	stackLabels  = map[string]string{stackDual: "dual-stack", stackIPv4: "IPv4 only"}
)

// runKey names the series of a driver on a network of that stack.
func runKey(driver, stack string) string { return driver + "/" + stack }

// runNet is a network of the docker run → connect timing: new containers
// start on it, and client, already on it, dials them.
type runNet struct {
	driver, stack string
	network       string
	subnet        netip.Prefix // IPv4: the new containers' fixed addresses
	client        place
}

// controlPlane measures what happens around the datapath: how soon a new
// container answers, how soon a policy change holds, what attaching an
// endpoint costs, and the daemon's memory as endpoints grow.
func (h *harness) controlPlane(ctx context.Context) error {
	h.logf("control plane: docker run → first connect, %d samples per driver and stack", h.cfg.DockerRunSamples)
	if err := h.dockerRunConnect(ctx); err != nil {
		h.rec.fail("docker run → connect", err)
	}
	h.logf("control plane: policy import → enforced, %d samples", h.cfg.ImportSamples)
	if err := h.importEnforced(ctx); err != nil {
		h.rec.fail("policy import → enforced", err)
	}
	h.logf("control plane: in-process attach of %d new endpoints on prepared veths and %d on fresh ones", h.cfg.AttachSamples, h.cfg.AttachSamples)
	h.td.add("remove netns "+attachNetns, func() error { return delNetns(context.Background(), attachNetns) })
	times, err := h.inproc.timeAttach(ctx, h.plan, h.cfg.AttachSamples)
	if err != nil {
		h.rec.fail("per-endpoint attach", err)
	}
	for _, series := range []struct {
		id  string
		lat []time.Duration
	}{
		{ctlAttach, times.Prepared},
		{ctlAttachUnprepared, times.Unprepared},
		{ctlAttachAgain, times.Again},
	} {
		for i, d := range series.lat {
			h.rec.add(controlID(series.id), "ms", i, ms(d))
		}
	}
	if err := h.restartForMemory(ctx); err != nil {
		return err
	}
	if err := h.endpointScale(ctx); err != nil {
		h.rec.fail("daemon memory by endpoint count", err)
	}
	return ctx.Err()
}

// restartForMemory records the daemon's resident memory after the rounds,
// which is the high-water mark of the largest policy imports (Go keeps
// its heap), then restarts the daemon, so that the memory figures by
// endpoint count start from a daemon that never held that policy.
func (h *harness) restartForMemory(ctx context.Context) error {
	rss, err := h.membrane.rssMiB()
	if err != nil {
		return err
	}
	h.rec.add(controlID(ctlRSSAfterRounds), "MiB", 0, rss)
	h.logf("control plane: daemon RSS after the rounds %.1f MiB; restarting it", rss)
	if err := h.membrane.restart(ctx); err != nil {
		return err
	}
	return h.membrane.waitIdle(ctx, 15*time.Second)
}

// dockerRunConnect times `docker run -d` of a server container until a
// client already on the network first connects to it, on each driver's
// dual-stack and IPv4-only network, the samples in a random order.
func (h *harness) dockerRunConnect(ctx context.Context) error {
	type sample struct {
		net runNet
		i   int
	}
	var samples []sample
	for i := range h.cfg.DockerRunSamples {
		for _, n := range h.runNets {
			samples = append(samples, sample{n, i})
		}
	}
	h.rng.Shuffle(len(samples), func(a, b int) { samples[a], samples[b] = samples[b], samples[a] })
	calls := map[string][]time.Duration{}
	for _, s := range samples {
		mark := h.membrane.markLog()
		if err := h.runConnectOnce(ctx, s.net, s.i, host(s.net.subnet, firstRunHost+s.i)); err != nil {
			h.rec.fail(fmt.Sprintf("docker run → connect on %s, sample %d", runKey(s.net.driver, s.net.stack), s.i), err)
			continue
		}
		if s.net.driver != driverMembrane {
			continue
		}
		// Where a membrane docker run spends its time in the daemon:
		// the Docker calls it answered for this container.
		for _, method := range runCallMethods {
			durations, err := h.membrane.dockerCallDurations(mark, "/NetworkDriver."+method)
			if err != nil {
				return err
			}
			key := s.net.stack + "/" + method
			calls[key] = append(calls[key], durations...)
		}
	}
	for _, stack := range runStacks {
		for _, method := range runCallMethods {
			for i, d := range calls[stack+"/"+method] {
				h.rec.add(controlID(ctlRunCall+"/"+stack+"/"+method), "ms", i, ms(d))
			}
		}
	}
	return nil
}

// runCallMethods are the driver calls of a docker run that the daemon's
// log times.
var runCallMethods = []string{"CreateEndpoint", "Join", "ProgramExternalConnectivity"}

func (h *harness) runConnectOnce(ctx context.Context, n runNet, i int, ip netip.Addr) error {
	key := runKey(n.driver, n.stack)
	name := fmt.Sprintf("%s-run-%s-%s-%d", namePrefix, n.driver, n.stack, i)
	args := []string{
		"--network", n.network, "--ip", ip.String(), "--label", "mbrbench.setup=run",
		"-v", h.tools.netload + ":/netload:ro",
	}
	serve := []string{"/netload", "serve", "-addr", "0.0.0.0", "-tcp", strconv.Itoa(portRR), "-udp", strconv.Itoa(portUDP), "-control", strconv.Itoa(portControl)}
	start := time.Now()
	if _, err := h.docker.runContainer(ctx, name, args, serve...); err != nil {
		return err
	}
	returned := time.Since(start)
	r, err := h.loads.poll(ctx, n.client, netip.AddrPortFrom(ip, portRR), netload.UntilOpen, 60*time.Second)
	at := time.Unix(0, r.AtUnixNano)
	if _, rmErr := h.docker.run(ctx, "rm", "-f", name); rmErr != nil && err == nil {
		err = rmErr
	}
	if err != nil {
		return err
	}
	h.rec.add(controlID(ctlRunConnect+"/"+key), "ms", i, ms(at.Sub(start)))
	h.rec.add(controlID(ctlRunReturn+"/"+key), "ms", i, ms(returned))
	return nil
}

// importEnforced times policy imports until the datapath acts on them: a
// rule that admits the probe port until a new connection to it passes,
// then a deny rule for the port until a new connection is dropped. A
// poller starts before each import and dials every 2 ms, each attempt a
// new flow.
func (h *harness) importEnforced(ctx context.Context) error {
	if err := h.enterPolicy(ctx, stateAllow, -1); err != nil {
		return err
	}
	p := h.paths[setupPolicy]
	probe := netip.AddrPortFrom(p.server.ip, portProbe)
	for i := range h.cfg.ImportSamples {
		for _, step := range []struct {
			id, rule string
			until    netload.PollUntil
		}{
			{ctlImportAllow, ruleProbeAllow, netload.UntilOpen},
			{ctlImportDeny, ruleProbeDeny, netload.UntilClosed},
		} {
			took, err := h.timeImport(ctx, p.client, probe, step.rule, step.until)
			if err != nil {
				return fmt.Errorf("sample %d, %s: %w", i, step.rule, err)
			}
			h.rec.add(controlID(step.id), "ms", i, ms(took))
		}
		for _, r := range []string{ruleProbeDeny, ruleProbeAllow} {
			if err := h.membrane.deletePolicy(ctx, r); err != nil {
				return err
			}
		}
	}
	return nil
}

// timeImport starts a poller for the awaited state, imports the rule and
// returns the time from the import's start to the poller's evidence.
func (h *harness) timeImport(ctx context.Context, client place, probe netip.AddrPort, rule string, until netload.PollUntil) (time.Duration, error) {
	type polled struct {
		r   netload.PollResult
		err error
	}
	done := make(chan polled, 1)
	go func() {
		r, err := h.loads.poll(ctx, client, probe, until, 30*time.Second)
		done <- polled{r, err}
	}()
	// Let the poller start dialling: its first attempts must see the old
	// state.
	time.Sleep(150 * time.Millisecond)
	start := time.Now()
	_, importErr := h.membrane.importPolicy(ctx, h.policyFiles[rule])
	r := <-done
	if importErr != nil {
		return 0, importErr
	}
	if r.err != nil {
		return 0, r.err
	}
	at := time.Unix(0, r.r.AtUnixNano)
	if !at.After(start) {
		return 0, fmt.Errorf("the probe port was already %s %s before the import (%s)", until, start.Sub(at), r.r.Failure)
	}
	return at.Sub(start), nil
}

// endpointScale grows the number of the daemon's endpoints to each of the
// configured counts with busybox containers running sleep, and reads the
// daemon's resident memory and its BPF objects' memory at each.
func (h *harness) endpointScale(ctx context.Context) error {
	if _, err := h.docker.run(ctx, "network", "create", "--label", containerLabel, "-d", pluginName, "--ipam-driver", pluginName,
		"--ipv6", "--subnet", h.plan.scaleSubnet().String(), netScale); err != nil {
		return fmt.Errorf("create network %s: %w", netScale, err)
	}
	mark := h.membrane.markLog()
	next := 0
	for _, target := range h.cfg.EndpointCounts {
		st, err := h.membrane.status(ctx)
		if err != nil {
			return err
		}
		need := target - st.Endpoints
		h.logf("control plane: %d endpoints: starting %d containers", target, max(need, 0))
		if err := h.startScaleContainers(ctx, next, need); err != nil {
			return err
		}
		next += max(need, 0)
		if err := h.waitEndpoints(ctx, target); err != nil {
			return err
		}
		// Let the daemon settle (identities, resync) before reading.
		time.Sleep(2 * time.Second)
		rss, err := h.membrane.rssMiB()
		if err != nil {
			return err
		}
		bpf, err := measureBPFMemory(ctx, h.tools.bpftool, bpfDir)
		if err != nil {
			return err
		}
		n := strconv.Itoa(target)
		h.rec.add(controlID(ctlRSS+"/"+n), "MiB", 0, rss)
		h.rec.add(controlID(ctlBPFMaps+"/"+n), "MiB", 0, float64(bpf.MapBytes)/(1<<20))
		h.rec.add(controlID(ctlBPFProgs+"/"+n), "MiB", 0, float64(bpf.ProgBytes)/(1<<20))
		h.logf("  %d endpoints: daemon RSS %.1f MiB, BPF maps %.1f MiB (%d), programs %.2f MiB (%d)",
			target, rss, float64(bpf.MapBytes)/(1<<20), bpf.Maps, float64(bpf.ProgBytes)/(1<<20), bpf.Progs)
	}
	durations, err := h.membrane.dockerCallDurations(mark, "/NetworkDriver.CreateEndpoint")
	if err != nil {
		return err
	}
	for i, d := range durations {
		h.rec.add(controlID(ctlCreateEP), "ms", i, ms(d))
	}
	return nil
}

// startScaleContainers starts n containers, a few at a time.
func (h *harness) startScaleContainers(ctx context.Context, first, n int) error {
	if n <= 0 {
		return nil
	}
	work := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range h.cfg.CreateParallelism {
		wg.Go(func() {
			for i := range work {
				name := fmt.Sprintf("%s-scale-%04d", namePrefix, i)
				if _, err := h.docker.run(ctx, "run", "-d", "--name", name, "--label", containerLabel, "--label", "mbrbench.setup=scale",
					"--network", netScale, imageName, "sleep", "86400"); err != nil {
					errs <- err
				}
			}
		})
	}
	for i := first; i < first+n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	if err, failed := <-errs; failed {
		return fmt.Errorf("start containers (%d failed): %w", len(errs)+1, err)
	}
	return nil
}

// waitEndpoints waits until the daemon counts n endpoints.
func (h *harness) waitEndpoints(ctx context.Context, n int) error {
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := h.membrane.status(ctx)
		if err != nil {
			return err
		}
		if st.Endpoints == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the daemon counts %d endpoints, want %d", st.Endpoints, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
