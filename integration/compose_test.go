package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// The compose example (examples/compose) run end to end with docker-compose
// 1.29, the way its README says, against the harness's dockerd.

const (
	// composeDir is the example, relative to the module root.
	composeDir = "examples/compose"
	// composeDemoImage is the image the example names; the test makes it
	// in the harness's dockerd with hack/busybox-image.sh, as a user would.
	composeDemoImage = "membrane-demo/busybox"
	// composeNetwork is the network the example declares; compose names
	// it PROJECT_app.
	composeNetwork = "app"
	// leftoverTimeout bounds the wait for `docker-compose down` to be
	// fully undone.
	leftoverTimeout = 10 * time.Second
)

// composeServices are the example's services with the labels its file gives
// them, in start order.
var composeServices = []struct {
	name   string
	labels map[string]string
}{
	{"web", map[string]string{"app": "web", "tier": "frontend"}},
	{"api", map[string]string{"app": "api", "tier": "backend"}},
	{"db", map[string]string{"app": "db", "tier": "data"}},
}

// composeProbeOverride swaps the example's busybox servers for `probe serve`
// (TCP echo, UDP echo) on every port the example uses, in every service:
// a denied check then always has a server behind it, so only policy can
// deny it. Labels, network and everything else stay the example's.
const composeProbeOverride = `version: "2.4"
services:
  web:
    image: ` + testImage + `
    command: ["/bin/probe", "serve", "-tcp", "80,8080,5432", "-udp", "8080,5432"]
  api:
    image: ` + testImage + `
    command: ["/bin/probe", "serve", "-tcp", "80,8080,5432", "-udp", "8080,5432"]
  db:
    image: ` + testImage + `
    command: ["/bin/probe", "serve", "-tcp", "80,8080,5432", "-udp", "8080,5432"]
`

// composeProbes are the checks of the matrix: each port the example uses,
// both transports where the probe serves them, and ping.
var composeProbes = []probe{tcpProbe(80), tcpProbe(8080), tcpProbe(5432), udpProbe(8080), udpProbe(5432), icmpProbe}

// composeWant is what examples/compose/policy.json allows: web to api on
// TCP 8080, api to db on TCP 5432; web's ingress is not restricted, so the
// host reaches it; nothing else passes.
func composeWant(from, to string, p probe, _ string) bool {
	switch {
	case from == "web" && to == "api":
		return p == tcpProbe(8080)
	case from == "api" && to == "db":
		return p == tcpProbe(5432)
	case from == "host" && to == "web":
		return true
	}
	return false
}

// TestCompose: the compose example comes up with `docker-compose up -d`
// on a membrane network (IPv6 and IPv4), its containers get identities
// from their labels (compose's project and service included, its
// per-instance ones not), the example's policy.json allows exactly the
// paths it promises over both families, first with the example's own
// servers as its README demonstrates, then, after compose recreates the
// services with probe servers, as a full matrix; `docker-compose down`
// then leaves nothing behind: no container, network, endpoint, identity,
// veth, route, gateway address, BPF pin or endpoints map entry, and the
// IPAM pools are free again.
func TestCompose(t *testing.T) {
	onlyMembrane(t, func(t *testing.T, d netDriver) {
		c := newComposeProject(t)
		start := time.Now()
		before := membraneStatus(t)
		t.Logf("before: membrane status shows %d networks, %d endpoints, %d identities", before.Networks, before.Endpoints, before.Identities)

		// Phase 1: the example as its README runs it.
		c.run(t, "up", "-d")
		netName := c.project + "_" + composeNetwork
		ni := inspectNetwork(t, netName)
		if ni.Driver != d.Driver || ni.IPAM.Driver != d.IPAM || !ni.EnableIPv6 {
			t.Errorf("network %s: driver %q, IPAM %q, EnableIPv6 %v; want %q, %q, true", netName, ni.Driver, ni.IPAM.Driver, ni.EnableIPv6, d.Driver, d.IPAM)
		}
		v4pool, v6pool := networkPools(t, netName)
		t.Logf("network %s: IPv4 %s gw %s, IPv6 %s gw %s", netName, v4pool.Subnet, v4pool.Gateway, v6pool.Subnet, v6pool.Gateway)
		first := c.services(t, netName)
		c.checkIdentities(t, first)
		t.Logf("phase 1: up with the example's servers, identities known, after %s", time.Since(start).Round(time.Millisecond))

		rev := c.importPolicyFile(t)
		t.Logf("imported %s as revision %d", filepath.Join(composeDir, "policy.json"), rev)
		c.checkReadme(t)
		t.Logf("phase 1: README checks done after %s", time.Since(start).Round(time.Millisecond))

		// Phase 2: compose recreates every service (new image and command)
		// on the same network; the full matrix over both families.
		c.files = append(c.files, c.writeFile(t, "probe-override.yml", composeProbeOverride))
		c.run(t, "up", "-d")
		second := c.services(t, netName)
		for _, s := range composeServices {
			if first[s.name].id == second[s.name].id {
				t.Fatalf("service %s: container %s was not recreated by `up -d` with a changed image and command", s.name, short(first[s.name].id))
			}
		}
		eps := c.checkIdentities(t, second)
		for name, want := range map[string][2]bool{"web": {false, true}, "api": {true, true}, "db": {true, true}} {
			if e := eps[name]; e.PolicyIngress != want[0] || e.PolicyEgress != want[1] {
				t.Errorf("%s: membrane endpoint list shows policyIngress %v policyEgress %v, want %v %v", name, e.PolicyIngress, e.PolicyEgress, want[0], want[1])
			}
		}
		var peers []*peer
		for _, s := range composeServices {
			ep := second[s.name]
			peers = append(peers, containerPeer(s.name, ep.id, ep.v4, ep.v6))
		}
		checkReach(t, "compose policy", matrix(append(slices.Clone(peers), hostPeer()), peers, composeProbes, composeWant))
		t.Logf("phase 2: recreated and matrix checked after %s", time.Since(start).Round(time.Millisecond))

		// Phase 3: down, and nothing of the project may remain.
		c.run(t, "down")
		c.down = true
		var all []composeEndpoint
		for _, m := range []map[string]composeEndpoint{first, second} {
			for _, s := range composeServices {
				all = append(all, m[s.name])
			}
		}
		c.checkNothingLeft(t, before, netName, []pool{v4pool, v6pool}, all)
		t.Logf("phase 3: down and leftover checks done after %s", time.Since(start).Round(time.Millisecond))

		// The pools went back to membrane's IPAM: a network can have
		// exactly those subnets again.
		again := newNetwork(t, uniqueName("net"), d.createArgs(subnets{V4: v4pool.Subnet, V6: v6pool.Subnet})...)
		if a4, a6 := networkPools(t, again); a4.Subnet != v4pool.Subnet || a6.Subnet != v6pool.Subnet {
			t.Errorf("network with the subnets of the removed compose network: got %s and %s, want %s and %s", a4.Subnet, a6.Subnet, v4pool.Subnet, v6pool.Subnet)
		}
	})
}

// composeProject is one run of the example under its own project name.
type composeProject struct {
	bin     string
	project string
	dir     string   // the example's directory
	tmp     string   // the test's own files
	files   []string // -f arguments, in order
	rules   []string // name labels of the example's policy rules
	down    bool     // `down` ran: cleanup need not
}

// newComposeProject finds docker-compose, makes the example's image and
// registers the cleanup: `down` if the test did not get there, and the
// example's rules deleted.
func newComposeProject(t *testing.T) *composeProject {
	t.Helper()
	bin, err := findBinary("docker-compose")
	if err != nil {
		t.Skip("docker-compose not found (install docker-compose; .ci/run does)")
	}
	c := &composeProject{
		bin:     bin,
		project: uniqueName("compose"),
		dir:     filepath.Join(h.moduleRoot, composeDir),
		tmp:     t.TempDir(),
	}
	c.files = []string{filepath.Join(c.dir, "docker-compose.yml")}

	ctx, cancel := context.WithTimeout(context.Background(), dockerCmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(h.moduleRoot, "hack", "busybox-image.sh"), composeDemoImage)
	cmd.Env = h.dockerEnv
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/busybox-image.sh %s: %v: %s", composeDemoImage, err, out)
	}

	t.Cleanup(func() {
		if !c.down {
			if out, err := c.runErr("down", "-t", "1"); err != nil {
				t.Errorf("docker-compose down at cleanup: %v: %s", err, out)
			}
		}
		for _, name := range c.rules {
			if r, err := runCLI("", "policy", "delete", name); err != nil || (r.Code != 0 && !strings.Contains(r.output(), "not found")) {
				t.Errorf("membrane policy delete %s at cleanup: %v %s", name, err, r.output())
			}
		}
	})
	return c
}

// runErr runs docker-compose with the project's name and files against the
// harness's dockerd, the example's driver set to the harness's plugin.
func (c *composeProject) runErr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dockerCmdTimeout)
	defer cancel()
	full := []string{"--ansi", "never", "-H", h.dockerHost, "-p", c.project}
	for _, f := range c.files {
		full = append(full, "-f", f)
	}
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, c.bin, full...)
	cmd.Env = append(slices.Clone(h.dockerEnv), "MEMBRANE_DRIVER="+pluginName)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %s: %w", dockerCmdTimeout, ctx.Err())
	}
	if err != nil {
		return string(out), fmt.Errorf("docker-compose %s: %w", strings.Join(full, " "), err)
	}
	return string(out), nil
}

func (c *composeProject) run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.runErr(args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return out
}

func (c *composeProject) writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(c.tmp, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// composeEndpoint is one service's container on the project's network.
type composeEndpoint struct {
	service string
	id      string // container
	v4, v6  string
	// From `membrane endpoint list`, once the identity is known.
	endpointID string
	hostIf     string
	identity   uint32
}

// services finds each service's container (`docker-compose ps -q SERVICE`)
// and its addresses on netName.
func (c *composeProject) services(t testing.TB, netName string) map[string]composeEndpoint {
	t.Helper()
	out := map[string]composeEndpoint{}
	for _, s := range composeServices {
		id := strings.TrimSpace(c.run(t, "ps", "-q", s.name))
		if id == "" || strings.ContainsAny(id, " \n") {
			t.Fatalf("docker-compose ps -q %s: want one container ID, got %q", s.name, id)
		}
		v4, v6 := containerIPs(t, id, netName)
		out[s.name] = composeEndpoint{service: s.name, id: id, v4: v4, v6: v6}
	}
	return out
}

// composeEndpointView is the part of `membrane endpoint list -o json` the
// compose test reads beyond endpointInfo.
type composeEndpointView struct {
	ID          string            `json:"id"`
	NetworkID   string            `json:"networkId"`
	ContainerID string            `json:"containerId"`
	Interface   string            `json:"interface"`
	IPv4        string            `json:"ipv4"`
	IPv6        string            `json:"ipv6"`
	Identity    uint32            `json:"identity"`
	Labels      map[string]string `json:"labels"`
}

// composeIdentityView is an identity as `membrane identity list -o json`
// shows it.
type composeIdentityView struct {
	ID        uint32            `json:"id"`
	Reserved  string            `json:"reserved"`
	Labels    map[string]string `json:"labels"`
	Endpoints []string          `json:"endpoints"`
}

// composeStatus is the part of `membrane status -o json` the test compares.
type composeStatus struct {
	Networks   int `json:"networks"`
	Endpoints  int `json:"endpoints"`
	Identities int `json:"identities"`
}

func membraneStatus(t testing.TB) composeStatus {
	t.Helper()
	var st composeStatus
	cliJSON(t, &st, "status")
	return st
}

// checkIdentities waits until every service's endpoint has an identity,
// records endpoint ID, host interface and identity in eps, and checks the
// labels: the file's own, compose's project and service, none of compose's
// per-instance ones; one identity per service. It returns the endpoints
// as the wait saw them.
func (c *composeProject) checkIdentities(t testing.TB, eps map[string]composeEndpoint) map[string]endpointInfo {
	t.Helper()
	byName := map[string]string{}
	for name, ep := range eps {
		byName[name] = ep.v6
	}
	got := waitIdentities(t, byName)
	var views []composeEndpointView
	cliJSON(t, &views, "endpoint", "list")
	seen := map[uint32]string{}
	for _, s := range composeServices {
		e := got[s.name]
		ep := eps[s.name]
		for _, v := range views {
			if v.ID == e.ID {
				ep.endpointID, ep.hostIf, ep.identity = v.ID, v.Interface, v.Identity
			}
		}
		if ep.endpointID == "" || ep.hostIf == "" {
			t.Fatalf("%s: membrane endpoint list shows no endpoint %s with an interface", s.name, e.ID)
		}
		eps[s.name] = ep
		want := map[string]string{"com.docker.compose.project": c.project, "com.docker.compose.service": s.name}
		for k, v := range s.labels {
			want[k] = v
		}
		if !hasLabels(e.Labels, want) {
			t.Errorf("%s: endpoint labels %v, want them to include %v", s.name, e.Labels, want)
		}
		for _, k := range []string{"com.docker.compose.config-hash", "com.docker.compose.container-number", "com.docker.compose.oneoff"} {
			if _, ok := e.Labels[k]; ok {
				t.Errorf("%s: endpoint labels include compose's per-instance label %s: %v", s.name, k, e.Labels)
			}
		}
		if other, dup := seen[e.Identity]; dup {
			t.Errorf("services %s and %s have different labels but share identity %d", other, s.name, e.Identity)
		}
		seen[e.Identity] = s.name
	}
	t.Logf("identities: web %d, api %d, db %d", got["web"].Identity, got["api"].Identity, got["db"].Identity)
	return got
}

// importPolicyFile imports the example's policy.json by path, as the README
// does, and waits until the datapath enforces it. The rules are deleted at
// cleanup.
func (c *composeProject) importPolicyFile(t testing.TB) uint64 {
	t.Helper()
	path := filepath.Join(c.dir, "policy.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rules []struct {
		Labels []struct{ Key, Value string } `json:"labels"`
	}
	if err := json.Unmarshal(b, &rules); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for _, r := range rules {
		for _, l := range r.Labels {
			if l.Key == "name" {
				c.rules = append(c.rules, l.Value)
			}
		}
	}
	if len(c.rules) != len(rules) {
		t.Fatalf("%s: %d rules but %d name labels; every rule needs one to be replaced or deleted by name", path, len(rules), len(c.rules))
	}
	out := cli(t, "policy", "import", path)
	m := revisionRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("membrane policy import %s: want output `revision N`, got %q", path, strings.TrimSpace(out))
	}
	rev, err := strconv.ParseUint(m[1], 10, 64)
	if err != nil {
		t.Fatalf("membrane policy import %s: revision %q: %v", path, m[1], err)
	}
	waitRevision(t, rev)
	if names := getPolicy(t).names(); !containsAll(names, c.rules) {
		t.Errorf("membrane policy get: rules %v, want %v among them", names, c.rules)
	}
	return rev
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// readmeCheck is one command of the example README's "what to try", run
// with `docker-compose exec -T SERVICE sh -c CMD`.
type readmeCheck struct {
	service, cmd string
	// want is what the output must contain when the path is allowed;
	// "" means the path is denied: the command must fail by timing out
	// (SYNs dropped), not by a refused connection, a name that did not
	// resolve or a crash.
	want string
}

// readmeChecks are the example README's commands, the allowed ones under a
// timeout so that a failure cannot hang the test. They use `timeout N
// wget`, not wget's own -T: Debian 12's busybox-static wget crashes
// (SIGSEGV) whenever -T is given.
var readmeChecks = []readmeCheck{
	{"web", "timeout 5 wget -qO- http://api:8080/", "hello from api"},
	{"api", "echo ping | timeout 5 nc -w 3 db 5432", "ping"},
	{"web", "echo ping | nc -w 2 db 5432", ""},
	{"api", "timeout 3 wget -qO- http://web/", ""},
	{"db", "timeout 3 wget -qO- http://api:8080/", ""},
}

// checkReadme runs readmeChecks at once against the example's own servers
// (httpd, nc), by service name through Docker's DNS.
func (c *composeProject) checkReadme(t testing.TB) {
	t.Helper()
	errs := make([]string, len(readmeChecks))
	var wg sync.WaitGroup
	for i, rc := range readmeChecks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := c.runErr("exec", "-T", rc.service, "sh", "-c", rc.cmd)
			out = strings.TrimSpace(out)
			code := 0
			var exitErr *exec.ExitError
			if errors.As(err, &exitErr) {
				code = exitErr.ExitCode()
			}
			// 143: killed by timeout's SIGTERM; nc -w says "timed out".
			timedOut := code == 143 || strings.Contains(out, "timed out")
			switch {
			case rc.want != "" && (err != nil || !strings.Contains(out, rc.want)):
				errs[i] = fmt.Sprintf("%s: %s: want %q (allowed), got exit code %d: %q", rc.service, rc.cmd, rc.want, code, out)
			case rc.want == "" && err == nil:
				errs[i] = fmt.Sprintf("%s: %s: want it denied, it succeeded: %q", rc.service, rc.cmd, out)
			case rc.want == "" && !timedOut:
				errs[i] = fmt.Sprintf("%s: %s: want it to time out (denied), it failed otherwise: exit code %d: %q", rc.service, rc.cmd, code, out)
			}
		}()
	}
	wg.Wait()
	var bad []string
	for _, e := range errs {
		if e != "" {
			bad = append(bad, e)
		}
	}
	if len(bad) > 0 {
		t.Errorf("the example README's checks with the example's own servers:\n  %s", strings.Join(bad, "\n  "))
	}
}

// checkNothingLeft polls, up to leftoverTimeout, until nothing of the
// project remains, then fails t with everything that still does.
func (c *composeProject) checkNothingLeft(t testing.TB, before composeStatus, netName string, pools []pool, eps []composeEndpoint) {
	t.Helper()
	start := time.Now()
	var left []string
	for {
		left = c.leftovers(t, before, netName, pools, eps)
		if len(left) == 0 {
			t.Logf("nothing of project %s left %s after docker-compose down", c.project, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > leftoverTimeout {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Errorf("%s after docker-compose down, project %s left behind:\n  %s", leftoverTimeout, c.project, strings.Join(left, "\n  "))
}

// leftovers lists what of the project still exists anywhere: in Docker, in
// membrane's state (endpoints, identities, networks), on the host
// (veths, routes, gateway addresses) and in BPF (pins, endpoints map).
func (c *composeProject) leftovers(t testing.TB, before composeStatus, netName string, pools []pool, eps []composeEndpoint) []string {
	t.Helper()
	var left []string
	projectLabel := "label=com.docker.compose.project=" + c.project

	// Docker.
	if ids := docker(t, "ps", "-aq", "--filter", projectLabel); ids != "" {
		left = append(left, fmt.Sprintf("docker ps -a lists containers %s", strings.Join(strings.Fields(ids), " ")))
	}
	if ids := docker(t, "network", "ls", "-q", "--filter", projectLabel); ids != "" {
		left = append(left, fmt.Sprintf("docker network ls lists %s", strings.Join(strings.Fields(ids), " ")))
	}
	if _, err := dockerErr("network", "inspect", netName); err == nil {
		left = append(left, fmt.Sprintf("docker network inspect %s succeeds", netName))
	}

	// membrane: endpoints, identities, counts.
	var views []composeEndpointView
	cliJSON(t, &views, "endpoint", "list")
	for _, v := range views {
		match := v.Labels["com.docker.compose.project"] == c.project
		for _, ep := range eps {
			match = match || v.ID == ep.endpointID || sameAddr(v.IPv6, ep.v6) || sameAddr(v.IPv4, ep.v4)
		}
		if match {
			left = append(left, fmt.Sprintf("membrane endpoint list shows endpoint %s (container %s, %s, %s, identity %d, labels %v)",
				short(v.ID), short(v.ContainerID), v.IPv4, v.IPv6, v.Identity, v.Labels))
		}
	}
	var ids []composeIdentityView
	cliJSON(t, &ids, "identity", "list")
	for _, id := range ids {
		if id.Labels["com.docker.compose.project"] == c.project {
			left = append(left, fmt.Sprintf("membrane identity list shows identity %d (labels %v) used by endpoints %v", id.ID, id.Labels, id.Endpoints))
		}
	}
	now := membraneStatus(t)
	if now.Networks != before.Networks {
		left = append(left, fmt.Sprintf("membrane status shows %d networks, %d before docker-compose up", now.Networks, before.Networks))
	}
	if now.Endpoints != before.Endpoints {
		left = append(left, fmt.Sprintf("membrane status shows %d endpoints, %d before docker-compose up", now.Endpoints, before.Endpoints))
	}

	// Host: veths, routes to the containers, gateways on the host device.
	for _, ep := range eps {
		if _, err := os.Lstat(filepath.Join("/sys/class/net", ep.hostIf)); err == nil {
			left = append(left, fmt.Sprintf("host interface %s of %s (endpoint %s) exists", ep.hostIf, ep.service, short(ep.endpointID)))
		}
		for _, a := range []struct{ family, addr, bits string }{{"-4", ep.v4, "/32"}, {"-6", ep.v6, "/128"}} {
			out, err := exec.Command("ip", a.family, "route", "show", "table", "all", a.addr+a.bits).CombinedOutput()
			if s := strings.TrimSpace(string(out)); err != nil || s != "" {
				left = append(left, fmt.Sprintf("ip %s route show table all %s%s: %v %s", a.family, a.addr, a.bits, err, s))
			}
		}
	}
	if out, err := exec.Command("ip", "-o", "addr", "show", "dev", hostDevice).CombinedOutput(); err == nil {
		for _, p := range pools {
			if p.Gateway.IsValid() && hasAddrField(string(out), p.Gateway) {
				left = append(left, fmt.Sprintf("gateway %s of subnet %s is still on %s", p.Gateway, p.Subnet, hostDevice))
			}
		}
	}

	// BPF: per-endpoint pins and the shared endpoints map.
	for _, ep := range eps {
		dir := filepath.Join(bpfDir, "endpoints", ep.endpointID)
		if _, err := os.Lstat(dir); err == nil {
			entries, _ := os.ReadDir(dir)
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			left = append(left, fmt.Sprintf("pin directory %s (%s) exists, holding %v", dir, ep.service, names))
		}
	}
	left = append(left, endpointsMapLeftovers(eps)...)
	return left
}

// endpointsMapLeftovers reports entries of the pinned endpoints map
// (IPv6 address, or IPv4-mapped IPv6, → endpoint) for eps' addresses.
func endpointsMapLeftovers(eps []composeEndpoint) []string {
	path := filepath.Join(bpfDir, "maps", "endpoints")
	m, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return []string{fmt.Sprintf("open %s to look for leftover entries: %v", path, err)}
	}
	defer m.Close()
	want := map[[16]byte]string{}
	for _, ep := range eps {
		for _, s := range []string{ep.v4, ep.v6} {
			if a, err := netip.ParseAddr(s); err == nil {
				want[a.As16()] = fmt.Sprintf("%s of %s", a, ep.service)
			}
		}
	}
	var left []string
	var key [16]byte
	var value []byte
	it := m.Iterate()
	for it.Next(&key, &value) {
		if what, ok := want[key]; ok {
			left = append(left, fmt.Sprintf("%s has an entry for %s", path, what))
		}
	}
	if err := it.Err(); err != nil && !errors.Is(err, ebpf.ErrIterationAborted) {
		left = append(left, fmt.Sprintf("iterate %s: %v", path, err))
	}
	return left
}

// sameAddr compares an address as membrane lists it (maybe with a prefix
// length) with one as docker inspect shows it.
func sameAddr(listed, addr string) bool {
	if listed == "" || addr == "" {
		return false
	}
	a, err1 := netip.ParseAddr(stripLen(listed))
	b, err2 := netip.ParseAddr(addr)
	return err1 == nil && err2 == nil && a == b
}

// hasAddrField reports whether `ip -o addr` output lists a (as "a/len").
func hasAddrField(out string, a netip.Addr) bool {
	for _, f := range strings.Fields(out) {
		if p, err := netip.ParsePrefix(f); err == nil && p.Addr() == a {
			return true
		}
	}
	return false
}
