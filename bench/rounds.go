package bench

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/membrane-net/membrane/bench/netload"
)

// runRounds runs every round: all measurements of the datapath and
// policy-scale sections, in a new random order each round.
func (h *harness) runRounds(ctx context.Context) error {
	tasks := h.roundTasks()
	for round := range h.cfg.Rounds {
		start := time.Now()
		groups := scheduleRound(h.rng, tasks)
		h.logf("round %d of %d: %d measurements in %d policy states", round+1, h.cfg.Rounds, len(tasks), len(groups))
		for _, g := range groups {
			if err := h.enterPolicy(ctx, g.policy, round); err != nil {
				// Without its policy state no task of the group
				// measures what it says.
				h.rec.fail(fmt.Sprintf("round %d: enter policy state %s", round, g.policy), err)
				continue
			}
			for _, t := range g.tasks {
				if err := ctx.Err(); err != nil {
					return err
				}
				if err := t.run(ctx, round); err != nil {
					h.rec.fail(fmt.Sprintf("round %d: %s", round, t.name), err)
				}
			}
			if err := h.addOneRule(ctx, g.policy, round); err != nil {
				h.rec.fail(fmt.Sprintf("round %d: add one rule in state %s", round, g.policy), err)
			}
		}
		h.logf("round %d done in %s", round+1, time.Since(start).Round(time.Second))
	}
	return ctx.Err()
}

// roundTasks lists one round's measurements.
func (h *harness) roundTasks() []task {
	tasks := h.datapathTasks()
	for _, n := range h.cfg.RuleCounts {
		tasks = append(tasks, h.scaleTasks(n)...)
		if n > 0 {
			tasks = append(tasks, h.installTasks(n)...)
		}
	}
	return tasks
}

// datapathTasks compare the setups over each address family. They run
// under the policy setup's policy; the other setups' endpoints are not
// selected by it.
func (h *harness) datapathTasks() []task {
	var tasks []task
	for _, family := range families {
		for _, s := range familySetups(family) {
			for _, m := range familyMetrics(family, h.cfg.IPv6UDP) {
				tasks = append(tasks, task{
					name:   "datapath " + familyLabels[family] + " " + s + " " + m,
					policy: stateAllow,
					run:    func(ctx context.Context, round int) error { return h.measureDatapath(ctx, round, family, s, m) },
				})
			}
		}
	}
	return tasks
}

// scaleTasks measure request/response and connect rates with n rules:
// membrane with n rules loaded, and each iptables backend's router with n
// rules (the routed baseline for 0).
func (h *harness) scaleTasks(n int) []task {
	var tasks []task
	for _, m := range []string{metricRR, metricCRR} {
		tasks = append(tasks, task{
			name:   fmt.Sprintf("scale membrane %s %s", rulesPhrase(n), m),
			policy: stateRules(n),
			run: func(ctx context.Context, round int) error {
				return h.measureLoad(ctx, round, h.paths[setupPolicy], m, scaleID(implMembrane, n, m))
			},
		})
		if n == 0 {
			tasks = append(tasks, task{
				name: "scale routed, no rule, " + m,
				run: func(ctx context.Context, round int) error {
					return h.measureLoad(ctx, round, h.routedFor("", 0).path, m, scaleID(implRouted, 0, m))
				},
			})
			continue
		}
		for _, b := range iptablesBackends {
			tasks = append(tasks, task{
				name: fmt.Sprintf("scale iptables-%s %s %s", b, rulesPhrase(n), m),
				run: func(ctx context.Context, round int) error {
					return h.measureLoad(ctx, round, h.routedFor(b, n).path, m, scaleID(implIptables(b), n, m))
				},
			})
		}
	}
	return tasks
}

// installTasks time installing n rules and adding one, for iptables and
// for membrane's datapath in-process (membrane's own import is timed when
// a round enters the n-rule state).
func (h *harness) installTasks(n int) []task {
	var tasks []task
	for _, b := range iptablesBackends {
		tasks = append(tasks, task{
			name: fmt.Sprintf("install iptables-%s %s", b, rulesPhrase(n)),
			run:  func(ctx context.Context, round int) error { return h.timeIptables(ctx, round, b, n) },
		})
	}
	return append(tasks, task{
		name: fmt.Sprintf("install membrane-datapath %s", rulesPhrase(n)),
		run:  func(ctx context.Context, round int) error { return h.timeInprocSync(round, n) },
	})
}

// measureDatapath runs one metric over one datapath setup and family, and
// records beside its rate the machine's busy CPU time per unit of its
// work.
func (h *harness) measureDatapath(ctx context.Context, round int, family, setup, metric string) error {
	p := h.paths[setup].over(family)
	id := datapathFamilyID(family, setup, metric)
	cpuID := datapathFamilyID(family, setup, cpuMetric(metric))
	var (
		record func() // records the load's rate
		done   float64
	)
	busy, err := h.cpu.during(func() error {
		if metric == metricTCP1 || metric == metricTCP2 {
			streams := 1
			if metric == metricTCP2 {
				streams = 2
			}
			r, err := h.loads.iperf(ctx, p, streams)
			record = func() { h.rec.add(id, "Gbit/s", round, r.ReceivedBitsPerSecond/1e9) }
			done = float64(r.ReceivedBytes)
			return err
		}
		r, err := h.loads.netloadClient(ctx, p, metric)
		record = func() { h.addLoad(round, metric, id, r) }
		done = float64(r.Count)
		return err
	})
	if err != nil {
		return err
	}
	record()
	return h.addCPU(cpuID, metric, round, busy, done)
}

// addCPU records busy CPU time per unit of a load's work done (its count:
// transactions, connections, datagrams received or bytes received) as a
// sample of the series id.
func (h *harness) addCPU(id, metric string, round int, busy time.Duration, done float64) error {
	c, ok := cpuCosts[metric]
	if !ok {
		return fmt.Errorf("%s: no CPU cost for load %s", id, metric)
	}
	v, err := c.of(busy, done)
	if err != nil {
		return fmt.Errorf("%s: %w", id, err)
	}
	h.rec.add(id, c.unit, round, v)
	return nil
}

// measureLoad runs a netload load (rr, crr or udp) and records its rate
// under id; rr also records its latency quantiles.
func (h *harness) measureLoad(ctx context.Context, round int, p path, metric, id string) error {
	r, err := h.loads.netloadClient(ctx, p, metric)
	if err != nil {
		return err
	}
	h.addLoad(round, metric, id, r)
	return nil
}

// addLoad records a netload load's rate under id; rr also records its
// latency quantiles.
func (h *harness) addLoad(round int, metric, id string, r netload.Result) {
	unit := map[string]string{metricRR: "transactions/s", metricCRR: "connections/s", metricUDP: "datagrams/s"}[metric]
	h.rec.add(id, unit, round, r.Rate)
	if metric == metricRR {
		base := strings.TrimSuffix(id, "/"+metricRR)
		h.rec.add(base+"/"+metricRRP50, "µs", round, r.P50Micros)
		h.rec.add(base+"/"+metricRRP99, "µs", round, r.P99Micros)
	}
}

// enterPolicy makes the daemon's policy the given state: every rule
// deleted, then the state's file imported. Importing n scale rules into an
// empty policy is the "install n rules" timing: the CLI returns once the
// daemon has applied the new revision to the datapath.
func (h *harness) enterPolicy(ctx context.Context, state string, round int) error {
	if state == "" || state == h.policy {
		return nil
	}
	h.policy = ""
	if err := h.membrane.deleteAllPolicy(ctx); err != nil {
		return err
	}
	if state != stateRules(0) {
		took, err := h.membrane.importPolicy(ctx, h.policyFiles[state])
		if err != nil {
			return err
		}
		var n int
		if _, err := fmt.Sscanf(state, "rules-%d", &n); err == nil && round >= 0 {
			h.rec.add(installID(implMembrane, n), "ms", round, ms(took))
		}
	}
	h.policy = state
	return h.membrane.waitIdle(ctx, 15*time.Second)
}

// addOneRule times the import of one more rule on top of a scale state,
// the "add one rule to n" timing. The state then holds n+1 rules, which no
// later task of the round measures.
func (h *harness) addOneRule(ctx context.Context, state string, round int) error {
	var n int
	if _, err := fmt.Sscanf(state, "rules-%d", &n); err != nil || n == 0 {
		return nil
	}
	took, err := h.membrane.importPolicy(ctx, h.policyFiles[ruleAddOne])
	if err != nil {
		return err
	}
	h.rec.add(addOneID(implMembrane, n), "ms", round, ms(took))
	h.policy = state + "+1"
	return nil
}

// timeIptables times iptables-restore of n rules into an empty filter
// table, then appending one rule, in the backend's scratch namespace.
func (h *harness) timeIptables(ctx context.Context, round int, backend string, n int) error {
	r := h.routedFor(backend, n)
	client, server := r.path.client.ip.String(), r.path.server.ip.String()
	file, err := rulesFile(h.tmp, n, client, server)
	if err != nil {
		return err
	}
	empty, err := rulesFile(h.tmp, 0, client, server)
	if err != nil {
		return err
	}
	ns := h.scratch[backend]
	if _, err := installRules(ctx, backend, ns, empty); err != nil {
		return err
	}
	install, err := installRules(ctx, backend, ns, file)
	if err != nil {
		return err
	}
	add, err := addRule(ctx, backend, ns, iptablesAddOne(client, server))
	if err != nil {
		return err
	}
	h.rec.add(installID(implIptables(backend), n), "ms", round, ms(install))
	h.rec.add(addOneID(implIptables(backend), n), "ms", round, ms(add))
	_, err = installRules(ctx, backend, ns, empty)
	return err
}

// timeInprocSync times the datapath's own SyncPolicy of n rules' entries
// and of one more, in the harness's process.
func (h *harness) timeInprocSync(round, n int) error {
	install, add, err := h.inproc.timeSync(n)
	if err != nil {
		return err
	}
	h.rec.add(installID(implMembraneDatapath, n), "ms", round, ms(install))
	h.rec.add(addOneID(implMembraneDatapath, n), "ms", round, ms(add))
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }
