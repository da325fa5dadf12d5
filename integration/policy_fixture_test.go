package integration

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The policy tests share one fixture: a membrane network with five
// labelled containers, each serving TCP echo on 7000 and 7100, UDP echo on
// 7001 and 7101 and a stream on 7002, plus the world namespace (the same
// servers on two address pairs) and the host as a source.

var (
	policyTCPPorts = "7000,7100"
	policyUDPPorts = "7001,7101"
	// policyProbes are the checks of every source/destination pair.
	policyProbes = []probe{tcpProbe(7000), tcpProbe(7100), udpProbe(7001), udpProbe(7101), icmpProbe}
)

// fixtureContainer is a container of the policy fixture and its labels.
type fixtureContainer struct {
	name   string
	labels map[string]string
}

// policyContainers: selectors over app and tier cut this set in different
// ways (tier=front is web and admin; tier=back is api and db; client and
// admin have no app or no tier).
var policyContainers = []fixtureContainer{
	{"web", map[string]string{"app": "web", "tier": "front"}},
	{"api", map[string]string{"app": "api", "tier": "back"}},
	{"db", map[string]string{"app": "db", "tier": "back"}},
	{"client", map[string]string{"app": "client"}},
	{"admin", map[string]string{"role": "admin", "tier": "front"}},
}

// policyFixture is the shared environment of the policy tests.
type policyFixture struct {
	net        string
	ids        map[string]string // container name → container ID
	containers []*peer           // in policyContainers order
	peers      map[string]*peer  // every peer by name
	world      *world
	host       *peer
	// eps are the containers' endpoints once their identities are known;
	// identityErr says why they are not.
	eps         map[string]endpointInfo
	identityErr error
}

// labelFlags turns labels into `docker run --label` flags.
func labelFlags(labels map[string]string) []string {
	var out []string
	for _, k := range sortedKeys(labels) {
		out = append(out, "--label", k+"="+labels[k])
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// policyServeCmd is the command of policy fixture containers.
func policyServeCmd() []string {
	return []string{"/bin/probe", "serve", "-tcp", policyTCPPorts, "-udp", policyUDPPorts}
}

// startLabelled starts one container per entry at once on network, each
// running policyServeCmd, and returns them as peers by name. They are
// removed when t ends.
func startLabelled(t testing.TB, network string, ctrs []fixtureContainer) (map[string]string, map[string]*peer) {
	t.Helper()
	ids := make([]string, len(ctrs))
	errs := make([]error, len(ctrs))
	var wg sync.WaitGroup
	for i, c := range ctrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			flags := append([]string{"--name", uniqueName(c.name)}, labelFlags(c.labels)...)
			ids[i], errs[i] = runContainerCmdErr(network, flags, policyServeCmd()...)
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id != "" {
			removeAtCleanup(t, id)
		}
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("start container %s: %v", ctrs[i].name, err)
		}
	}
	byName, peers := map[string]string{}, map[string]*peer{}
	for i, c := range ctrs {
		v4, v6 := containerIPs(t, ids[i], network)
		byName[c.name] = ids[i]
		peers[c.name] = containerPeer(c.name, ids[i], v4, v6)
	}
	return byName, peers
}

// newPolicyFixture builds the fixture: network, containers, world; then
// waits for the containers' identities (recording, not failing, when they
// do not come: the no-policy matrix does not depend on them).
func newPolicyFixture(t *testing.T, d netDriver) *policyFixture {
	t.Helper()
	f := &policyFixture{peers: map[string]*peer{}, host: hostPeer()}
	start := time.Now()
	// The world comes in to the containers' own addresses only on a
	// network that lets routed connections in; policy then decides.
	f.net = newNetwork(t, uniqueName("net"), append(d.createArgs(subnets{}), "-o", "membrane.inbound=routed")...)
	f.world = newWorld(t, policyTCPPorts, policyUDPPorts)
	var byName map[string]*peer
	f.ids, byName = startLabelled(t, f.net, policyContainers)
	t.Logf("policy fixture: network, world and %d containers up in %s", len(policyContainers), time.Since(start).Round(time.Millisecond))
	for _, c := range policyContainers {
		f.containers = append(f.containers, byName[c.name])
		f.peers[c.name] = byName[c.name]
	}
	f.peers["world"], f.peers["world2"], f.peers["host"] = f.world.Peer, f.world.Peer2, f.host

	// No policy from an earlier, crashed test may linger.
	if r, err := runCLI("", "policy", "delete", "--all"); err != nil || r.Code != 0 {
		t.Logf("membrane policy delete --all before the policy tests: %v %s", err, r.output())
	}
	f.eps, f.identityErr = waitIdentitiesErr(t, f.addrs(policyContainers))
	if f.identityErr != nil {
		t.Logf("policy fixture: %v", f.identityErr)
	}
	return f
}

// addrs maps container names to their IPv6 addresses, for waitIdentities.
func (f *policyFixture) addrs(ctrs []fixtureContainer) map[string]string {
	m := map[string]string{}
	for _, c := range ctrs {
		m[c.name] = f.peers[c.name].V6
	}
	return m
}

// requireIdentities fails t at once when the fixture's containers never got
// their identities: every policy check would be meaningless.
func (f *policyFixture) requireIdentities(t testing.TB) {
	t.Helper()
	if f.identityErr != nil {
		t.Fatalf("the fixture's containers have no identities, so policy cannot select them: %v", f.identityErr)
	}
}

// isContainer reports whether name is one of the fixture's containers.
func isContainer(name string) bool {
	return slices.ContainsFunc(policyContainers, func(c fixtureContainer) bool { return c.name == name })
}

func isWorld(name string) bool { return name == "world" || name == "world2" }

// fullMatrix is every check of the fixture: each container, the world and
// the host to each container; each container to both world addresses.
// (The host to the world does not cross membrane and is left out.)
func (f *policyFixture) fullMatrix(want wantFunc) []reachCase {
	sources := append(slices.Clone(f.containers), f.world.Peer, f.host)
	cases := matrix(sources, f.containers, policyProbes, want)
	return append(cases, matrix(f.containers, []*peer{f.world.Peer, f.world.Peer2}, policyProbes, want)...)
}

// pick returns the named peers.
func (f *policyFixture) pick(names ...string) []*peer {
	out := make([]*peer, len(names))
	for i, n := range names {
		p, ok := f.peers[n]
		if !ok {
			panic("integration: no peer " + n)
		}
		out[i] = p
	}
	return out
}

// checkEnforcement compares each fixture container's policyIngress and
// policyEgress with want (container name → "ingress", "egress" or
// "ingress+egress"; absent means neither).
func (f *policyFixture) checkEnforcement(t testing.TB, want map[string]string) {
	t.Helper()
	eps := listEndpoints(t)
	var bad []string
	for _, c := range policyContainers {
		e, ok := endpointByAddr(eps, f.peers[c.name].V6)
		if !ok {
			bad = append(bad, c.name+": no endpoint in `membrane endpoint list`")
			continue
		}
		wi, we := strings.Contains(want[c.name], "ingress"), strings.Contains(want[c.name], "egress")
		if e.PolicyIngress != wi || e.PolicyEgress != we {
			bad = append(bad, fmt.Sprintf("%s: policyIngress %v policyEgress %v, want %v %v", c.name, e.PolicyIngress, e.PolicyEgress, wi, we))
		}
	}
	if len(bad) > 0 {
		t.Errorf("membrane endpoint list: enforcement differs:\n  %s", strings.Join(bad, "\n  "))
	}
}

// policyScenario is one policy and the matrix it must produce.
type policyScenario struct {
	policy   string
	enforced map[string]string // see checkEnforcement
	want     wantFunc
}

// run imports the scenario's policy, checks enforcement flags and the full
// matrix, and deletes the policy again.
func (f *policyFixture) run(t *testing.T, s policyScenario) {
	t.Helper()
	f.requireIdentities(t)
	deleteAllPolicyAtCleanup(t)
	importPolicy(t, s.policy)
	f.checkEnforcement(t, s.enforced)
	checkReach(t, t.Name(), f.fullMatrix(s.want))
}
