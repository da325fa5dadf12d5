package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/membrane-net/membrane/bench/netload"
)

// Docker networks of the run.
const (
	netBridge = namePrefix + "-bridge"
	netOpen   = namePrefix + "-open"
	netPolicy = namePrefix + "-policy"
	netScale  = namePrefix + "-scale"
)

// Last octets of the setups' containers.
const (
	clientHost = 10
	serverHost = 11
	// New containers of the docker run → connect timing start here.
	firstRunHost = 100
)

// dockerSetup is a setup made of two containers on a Docker network.
type dockerSetup struct {
	setup, network string
	subnet         netip.Prefix
	createArgs     []string // driver options of `docker network create`
	label          string   // value of the containers' mbrbench.setup label
}

func (h *harness) dockerSetups() []dockerSetup {
	membraneNet := []string{"-d", pluginName, "--ipam-driver", pluginName, "--ipv6"}
	bridgeNet := []string{"-d", "bridge", "-o", "com.docker.network.bridge.name=" + bridgeDevice}
	return []dockerSetup{
		{setupBridge, netBridge, h.plan.subnet24(octetBridge), bridgeNet, "bridge"},
		{setupMembrane, netOpen, h.plan.subnet24(octetOpen), membraneNet, "open"},
		{setupPolicy, netPolicy, h.plan.subnet24(octetPolicy), membraneNet, "policy"},
	}
}

// createDatapathSetups builds the four setups of the datapath comparison,
// gives the policy setup its policy, and starts the servers.
func (h *harness) createDatapathSetups(ctx context.Context) error {
	h.paths = map[string]path{}
	raw, err := h.createRawVeth(ctx)
	if err != nil {
		return err
	}
	h.paths[setupRaw] = raw
	var membraneContainers []string
	for _, ds := range h.dockerSetups() {
		if h.paths[ds.setup], err = h.createDockerSetup(ctx, ds); err != nil {
			return err
		}
		if ds.network != netBridge {
			membraneContainers = append(membraneContainers, ds.containerName("client"), ds.containerName("server"))
		}
	}
	h.runClients = map[string]place{driverBridge: h.paths[setupBridge].client, driverMembrane: h.paths[setupMembrane].client}
	h.runNetworks = map[string]string{driverBridge: netBridge, driverMembrane: netOpen}

	if err := h.membrane.waitIdentities(ctx, membraneContainers, 30*time.Second); err != nil {
		return fmt.Errorf("membrane setups: %w", err)
	}
	if err := h.enterPolicy(ctx, stateAllow, -1); err != nil {
		return err
	}
	for _, s := range datapathSetups {
		if err := h.startServers(ctx, h.paths[s]); err != nil {
			return err
		}
		if err := h.checkTraffic(ctx, h.paths[s]); err != nil {
			return err
		}
	}
	return h.checkEnforced(ctx)
}

func (ds dockerSetup) containerName(role string) string {
	return namePrefix + "-" + ds.label + "-" + role
}

// createDockerSetup creates the network and its client (.10) and server
// (.11) containers, which only sleep: the tools run from the host.
func (h *harness) createDockerSetup(ctx context.Context, ds dockerSetup) (path, error) {
	h.logf("creating setup %s (network %s, %s)", ds.setup, ds.network, ds.subnet)
	args := append([]string{"network", "create", "--label", containerLabel, "--subnet", ds.subnet.String()}, ds.createArgs...)
	if _, err := h.docker.run(ctx, append(args, ds.network)...); err != nil {
		return path{}, fmt.Errorf("setup %s: create network: %w", ds.setup, err)
	}
	p := path{setup: ds.setup}
	for _, end := range []struct {
		role string
		host int
		dst  *place
	}{{"client", clientHost, &p.client}, {"server", serverHost, &p.server}} {
		ip := host(ds.subnet, end.host)
		runArgs := []string{"--network", ds.network, "--ip", ip.String(), "--label", "mbrbench.setup=" + ds.label, "--label", "mbrbench.role=" + end.role}
		c, err := h.docker.runContainer(ctx, ds.containerName(end.role), runArgs, "sleep", "86400")
		if err != nil {
			return path{}, fmt.Errorf("setup %s: %w", ds.setup, err)
		}
		*end.dst = place{netns: c.netns, ip: ip}
	}
	return p, nil
}

// checkEnforced makes sure the policy setup enforces its policy: the probe
// port, which its policy does not admit, must be closed to the client.
func (h *harness) checkEnforced(ctx context.Context) error {
	p := h.paths[setupPolicy]
	if _, err := h.loads.poll(ctx, p.client, netip.AddrPortFrom(p.server.ip, portProbe), netload.UntilClosed, 10*time.Second); err != nil {
		return fmt.Errorf("setup %s: the policy is not enforced (the probe port stays open): %w", setupPolicy, err)
	}
	return nil
}

// createRawVeth is the floor: two fresh namespaces joined by a veth pair,
// nothing else on the path.
func (h *harness) createRawVeth(ctx context.Context) (path, error) {
	h.logf("creating setup raw (veth pair between two namespaces)")
	c, s := namePrefix+"-raw-c", namePrefix+"-raw-s"
	for _, ns := range []string{c, s} {
		h.td.add("remove netns "+ns, func() error { return delNetns(context.Background(), ns) })
		if err := addNetns(ctx, ns); err != nil {
			return path{}, fmt.Errorf("setup raw: %w", err)
		}
	}
	ca, sa := h.plan.link(0)
	if err := addVethPair(ctx, vethEnd{c, "eth0", ca}, vethEnd{s, "eth0", sa}); err != nil {
		return path{}, fmt.Errorf("setup raw: %w", err)
	}
	return path{setup: setupRaw, client: place{netnsPath(c), ca.Addr()}, server: place{netnsPath(s), sa.Addr()}}, nil
}

func (h *harness) startServers(ctx context.Context, p path) error {
	procs, err := h.loads.startServers(ctx, p)
	if err != nil {
		return err
	}
	h.td.add("stop servers of "+p.setup, func() error { return stopAll(procs) })
	return nil
}

// checkTraffic runs a short rr over every path, so that a setup that does
// not pass traffic fails the setup instead of every round.
func (h *harness) checkTraffic(ctx context.Context, paths ...path) error {
	short := h.loads
	short.duration = 200 * time.Millisecond
	for _, p := range paths {
		if _, err := short.netloadClient(ctx, p, "rr"); err != nil {
			return fmt.Errorf("setup %s passes no traffic: %w", p.setup, err)
		}
	}
	return nil
}

// createRoutedSetups builds the iptables comparison: the routed baseline
// without rules, and a routed setup per backend and rule count, each with
// its rules installed, plus a scratch namespace per backend for the
// install timings.
func (h *harness) createRoutedSetups(ctx context.Context) error {
	type want struct {
		backend string
		rules   int
	}
	wants := []want{{"", 0}}
	for _, b := range iptablesBackends {
		for _, n := range h.cfg.RuleCounts {
			if n > 0 {
				wants = append(wants, want{b, n})
			}
		}
	}
	for i, w := range wants {
		name := "routed-0"
		if w.backend != "" {
			name = w.backend + "-" + strconv.Itoa(w.rules)
		}
		h.logf("creating setup %s (client ⇄ router ⇄ server namespaces)", name)
		r, err := createRouted(ctx, h.plan, 2+2*i, name)
		h.td.add("remove setup "+name, func() error { return r.remove(context.Background()) })
		if err != nil {
			return fmt.Errorf("setup %s: %w", name, err)
		}
		r.backend, r.rules = w.backend, w.rules
		if w.backend != "" {
			file, err := rulesFile(h.tmp, w.rules, r.path.client.ip.String(), r.path.server.ip.String())
			if err != nil {
				return err
			}
			took, err := installRules(ctx, w.backend, netnsPath(r.netns[1]), file)
			if err != nil {
				return fmt.Errorf("setup %s: %w", name, err)
			}
			h.logf("  %s installed with iptables-%s-restore in %s", rulesPhrase(w.rules), w.backend, took.Round(time.Millisecond))
		}
		if err := h.startServers(ctx, r.path); err != nil {
			return err
		}
		h.routedSetups = append(h.routedSetups, r)
	}
	h.scratch = map[string]string{}
	for _, b := range iptablesBackends {
		ns := namePrefix + "-scratch-" + b
		h.td.add("remove netns "+ns, func() error { return delNetns(context.Background(), ns) })
		if err := addNetns(ctx, ns); err != nil {
			return err
		}
		h.scratch[b] = netnsPath(ns)
	}
	for _, r := range h.routedSetups {
		if err := h.checkTraffic(ctx, r.path); err != nil {
			return err
		}
	}
	return nil
}

// routedFor returns the routed setup of a backend and rule count (the
// baseline for 0 rules).
func (h *harness) routedFor(backend string, n int) routed {
	for _, r := range h.routedSetups {
		if (n == 0 && r.backend == "") || (r.backend == backend && r.rules == n) {
			return r
		}
	}
	panic(fmt.Sprintf("no routed setup for %s with %d rules", backend, n))
}

// Membrane policy states. A round groups its measurements by the state
// they need, so each state is entered once per round.
const (
	stateAllow = "allow" // the policy setup's policy: ingress and egress enforced
)

// stateRules is the state with n scale rules (0: no rule at all).
func stateRules(n int) string { return "rules-" + strconv.Itoa(n) }

// writePolicyFiles writes every policy file the run imports.
func (h *harness) writePolicyFiles() error {
	dir := filepath.Join(h.tmp, "policies")
	h.policyFiles = map[string]string{}
	files := map[string][]rule{
		stateAllow:     allowRules(),
		ruleAddOne:     addOneRules(),
		ruleProbeAllow: probeAllowRules(),
		ruleProbeDeny:  probeDenyRules(),
	}
	for _, n := range h.cfg.RuleCounts {
		if n > 0 {
			files[stateRules(n)] = scaleRules(n)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, rules := range files {
		p := filepath.Join(dir, name+".json")
		if err := writeRules(p, rules); err != nil {
			return err
		}
		h.policyFiles[name] = p
	}
	return nil
}
