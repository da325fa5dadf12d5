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
	netBridge  = namePrefix + "-bridge"
	netOpen    = namePrefix + "-open"
	netPolicy  = namePrefix + "-policy"
	netBridge4 = namePrefix + "-bridge4" // IPv4 only: docker run timing
	netOpen4   = namePrefix + "-open4"   // IPv4 only: docker run timing
	netScale   = namePrefix + "-scale"
)

// Last octets (and last IPv6 groups) of the setups' containers.
const (
	clientHost = 10
	serverHost = 11
	// New containers of the docker run → connect timing start here.
	firstRunHost = 100
)

// dockerSetup is a setup made of containers on a Docker network.
type dockerSetup struct {
	setup, network string
	subnet         netip.Prefix
	subnet6        netip.Prefix // not valid: an IPv4-only network
	createArgs     []string     // driver options of `docker network create`
	label          string       // value of the containers' mbrbench.setup label
}

// dockerSetups are the datapath comparison's Docker networks, all
// dual-stack: Docker's bridge with an IPv6 subnet of the address plan as
// well, and membrane's networks, which are IPv6-first anyway.
func (h *harness) dockerSetups() []dockerSetup {
	membraneNet := []string{"-d", pluginName, "--ipam-driver", pluginName, "--ipv6"}
	bridgeNet := []string{"-d", "bridge", "--ipv6", "-o", "com.docker.network.bridge.name=" + bridgeDevice}
	return []dockerSetup{
		{setupBridge, netBridge, h.plan.subnet24(octetBridge), h.plan.subnet64(octetBridge), bridgeNet, "bridge"},
		{setupMembrane, netOpen, h.plan.subnet24(octetOpen), h.plan.subnet64(octetOpen), membraneNet, "open"},
		{setupPolicy, netPolicy, h.plan.subnet24(octetPolicy), h.plan.subnet64(octetPolicy), membraneNet, "policy"},
	}
}

// ipv4OnlySetups are the IPv4-only networks the docker run timing compares
// beside the dual-stack ones; each holds just a client.
func (h *harness) ipv4OnlySetups() []dockerSetup {
	return []dockerSetup{
		{"bridge-ipv4", netBridge4, h.plan.subnet24(octetBridge4), netip.Prefix{},
			[]string{"-d", "bridge", "-o", "com.docker.network.bridge.name=" + bridgeDevice4}, "bridge4"},
		{"membrane-ipv4", netOpen4, h.plan.subnet24(octetOpen4), netip.Prefix{},
			[]string{"-d", pluginName, "--ipam-driver", pluginName, "-o", "membrane.ipv4-only=true"}, "open4"},
	}
}

// createDatapathSetups builds the setups of the datapath comparison and
// the networks of the docker run timing, gives the policy setup its
// policy, starts the servers, checks every path over every family it is
// measured in, and counts what each setup leaves in conntrack.
func (h *harness) createDatapathSetups(ctx context.Context) error {
	h.paths = map[string]path{}
	raw, err := h.createRawVeth(ctx, setupRaw, "raw", 0, true)
	if err != nil {
		return err
	}
	h.paths[setupRaw] = raw
	var membraneContainers []string
	for _, ds := range h.dockerSetups() {
		if h.paths[ds.setup], err = h.createDockerSetup(ctx, ds, "client", "server"); err != nil {
			return err
		}
		if ds.network != netBridge {
			membraneContainers = append(membraneContainers, ds.containerName("client"), ds.containerName("server"))
		}
	}
	only := map[string]path{}
	for _, ds := range h.ipv4OnlySetups() {
		if only[ds.network], err = h.createDockerSetup(ctx, ds, "client"); err != nil {
			return err
		}
		if ds.network == netOpen4 {
			membraneContainers = append(membraneContainers, ds.containerName("client"))
		}
	}
	h.runNets = []runNet{
		{driverBridge, stackDual, netBridge, h.plan.subnet24(octetBridge), h.paths[setupBridge].client},
		{driverMembrane, stackDual, netOpen, h.plan.subnet24(octetOpen), h.paths[setupMembrane].client},
		{driverBridge, stackIPv4, netBridge4, h.plan.subnet24(octetBridge4), only[netBridge4].client},
		{driverMembrane, stackIPv4, netOpen4, h.plan.subnet24(octetOpen4), only[netOpen4].client},
	}

	if err := h.membrane.waitIdentities(ctx, membraneContainers, 30*time.Second); err != nil {
		return fmt.Errorf("membrane setups: %w", err)
	}
	if h.paths[setupRawNat], err = h.createRawVeth(ctx, setupRawNat, "rawnat", 1, false); err != nil {
		return err
	}
	if err := h.copyDockerRules(ctx, h.paths[setupMembrane], h.paths[setupRawNat]); err != nil {
		return err
	}
	if err := h.enterPolicy(ctx, stateAllow, -1); err != nil {
		return err
	}
	for _, s := range datapathSetups {
		if err := h.startServers(ctx, h.paths[s]); err != nil {
			return err
		}
	}
	for _, family := range families {
		for _, s := range familySetups(family) {
			p := h.paths[s].over(family)
			if family == familyIPv6 {
				// Docker's own IPv6 addresses may still be settling.
				if _, err := h.loads.poll(ctx, p.client, netip.AddrPortFrom(p.server.ip, portRR), netload.UntilOpen, 10*time.Second); err != nil {
					return fmt.Errorf("setup %s: %w", p.setup, err)
				}
			}
			if err := h.checkTraffic(ctx, p); err != nil {
				return err
			}
		}
	}
	if err := h.checkEnforced(ctx); err != nil {
		return err
	}
	h.countConntrack(ctx)
	return nil
}

func (ds dockerSetup) containerName(role string) string {
	return namePrefix + "-" + ds.label + "-" + role
}

// createDockerSetup creates the network and its containers, client (.10)
// and server (.11), which only sleep: the tools run from the host. A
// dual-stack network's containers get the same host number in its IPv6
// /64.
func (h *harness) createDockerSetup(ctx context.Context, ds dockerSetup, roles ...string) (path, error) {
	subnets := ds.subnet.String()
	args := []string{"network", "create", "--label", containerLabel, "--subnet", ds.subnet.String()}
	if ds.subnet6.IsValid() {
		subnets += " and " + ds.subnet6.String()
		args = append(args, "--subnet", ds.subnet6.String())
	}
	h.logf("creating setup %s (network %s, %s)", ds.setup, ds.network, subnets)
	if _, err := h.docker.run(ctx, append(append(args, ds.createArgs...), ds.network)...); err != nil {
		return path{}, fmt.Errorf("setup %s: create network: %w", ds.setup, err)
	}
	p := path{setup: ds.setup}
	for _, role := range roles {
		hostNum, dst := clientHost, &p.client
		if role == "server" {
			hostNum, dst = serverHost, &p.server
		}
		ip := host(ds.subnet, hostNum)
		runArgs := []string{"--network", ds.network, "--ip", ip.String(), "--label", "mbrbench.setup=" + ds.label, "--label", "mbrbench.role=" + role}
		var ip6 netip.Addr
		if ds.subnet6.IsValid() {
			ip6 = host6(ds.subnet6, hostNum)
			runArgs = append(runArgs, "--ip6", ip6.String())
		}
		c, err := h.docker.runContainer(ctx, ds.containerName(role), runArgs, "sleep", "86400")
		if err != nil {
			return path{}, fmt.Errorf("setup %s: %w", ds.setup, err)
		}
		*dst = place{netns: c.netns, ip: ip, ip6: ip6}
	}
	return p, nil
}

// checkEnforced makes sure the policy setup enforces its policy over both
// families: the probe port, which its policy does not admit, must be
// closed to the client.
func (h *harness) checkEnforced(ctx context.Context) error {
	for _, family := range families {
		p := h.paths[setupPolicy].over(family)
		if _, err := h.loads.poll(ctx, p.client, netip.AddrPortFrom(p.server.ip, portProbe), netload.UntilClosed, 10*time.Second); err != nil {
			return fmt.Errorf("setup %s: the policy is not enforced (the probe port stays open): %w", p.setup, err)
		}
	}
	return nil
}

// createRawVeth makes two fresh namespaces joined by a veth pair, nothing
// else on the path: the floor (setup raw), or, once copyDockerRules has
// run, the floor plus Docker's in-container rules (setup raw-docker-nat).
// link numbers its addresses in the address plan; with ipv6 the ends get
// an IPv6 address too.
func (h *harness) createRawVeth(ctx context.Context, setup, name string, link int, ipv6 bool) (path, error) {
	h.logf("creating setup %s (veth pair between two namespaces)", setup)
	c, s := namePrefix+"-"+name+"-c", namePrefix+"-"+name+"-s"
	for _, ns := range []string{c, s} {
		h.td.add("remove netns "+ns, func() error { return delNetns(context.Background(), ns) })
		if err := addNetns(ctx, ns); err != nil {
			return path{}, fmt.Errorf("setup %s: %w", setup, err)
		}
	}
	ca, sa := h.plan.link(link)
	ce, se := vethEnd{netns: c, dev: "eth0", addr: ca}, vethEnd{netns: s, dev: "eth0", addr: sa}
	if ipv6 {
		ce.addr6, se.addr6 = h.plan.link6(link)
	}
	if err := addVethPair(ctx, ce, se); err != nil {
		return path{}, fmt.Errorf("setup %s: %w", setup, err)
	}
	return path{
		setup:  setup,
		client: place{netns: netnsPath(c), ip: ca.Addr(), ip6: ce.addr6.Addr()},
		server: place{netns: netnsPath(s), ip: sa.Addr(), ip6: se.addr6.Addr()},
	}, nil
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
