package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPolicy is the policy truth table: on one network of five labelled
// containers (see policyContainers), plus a "world" namespace beyond the
// host and the host itself, each scenario imports a policy with the
// membrane CLI, waits until the daemon enforces its revision, checks every
// source → destination × {tcp/7000, tcp/7100, udp/7001, udp/7101, icmp} ×
// {IPv6, IPv4} against the expected verdict, and deletes the policy. The
// bridge driver has no policy: membrane only.
func TestPolicy(t *testing.T) {
	onlyMembrane(t, func(t *testing.T, d netDriver) {
		f := newPolicyFixture(t, d)

		// Without policy everything reaches everything: this is the
		// baseline that shows the checks can pass.
		t.Run("no-policy", func(t *testing.T) {
			f.checkEnforcement(t, nil)
			checkReach(t, t.Name(), f.fullMatrix(allowAll))
		})
		t.Run("identities", f.testIdentities)

		// api admits only web, only on TCP 7000: other sources, other
		// ports, UDP and ICMP are dropped; api's own connections and
		// their replies still pass.
		t.Run("ingress-from-web-tcp-7000", func(t *testing.T) {
			f.run(t, policyScenario{
				policy:   apiFromWebTCP7000("it-api-from-web"),
				enforced: map[string]string{"api": "ingress"},
				want: func(from, to string, p probe, fam string) bool {
					if to == "api" {
						return from == "web" && p == tcpProbe(7000)
					}
					return true
				},
			})
		})

		// tier In (back) selects api and db; they admit sources that
		// have a tier and whose app is not db (NotIn holds for admin,
		// which has no app). A second rule in the same import selects
		// the containers without a tier (client) and admits only web.
		t.Run("match-expressions", func(t *testing.T) {
			f.run(t, policyScenario{
				policy: `[{
  "labels": [{"key": "name", "value": "it-back-from-tiered"}],
  "endpointSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["back"]}]},
  "ingress": [{"fromEndpoints": [{"matchExpressions": [
    {"key": "tier", "operator": "Exists"},
    {"key": "app", "operator": "NotIn", "values": ["db"]}]}]}]
}, {
  "labels": [{"key": "name", "value": "it-untiered-from-web"}],
  "endpointSelector": {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]},
  "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "web"}}]}]
}]`,
				enforced: map[string]string{"api": "ingress", "db": "ingress", "client": "ingress"},
				want: func(from, to string, p probe, fam string) bool {
					switch to {
					case "api", "db":
						return from == "web" || from == "api" || from == "admin"
					case "client":
						return from == "web"
					}
					return true
				},
			})
		})

		// A protocol-only rule: db admits UDP on every port (port "0")
		// from everyone (entity all), and nothing else.
		t.Run("protocol-only-udp", func(t *testing.T) {
			f.run(t, policyScenario{
				policy: `[{
  "labels": [{"key": "name", "value": "it-db-udp"}],
  "endpointSelector": {"matchLabels": {"app": "db"}},
  "ingress": [{"fromEntities": ["all"], "toPorts": [{"ports": [{"port": "0", "protocol": "UDP"}]}]}]
}]`,
				enforced: map[string]string{"db": "ingress"},
				want: func(from, to string, p probe, fam string) bool {
					if to == "db" {
						return p.Proto == "udp"
					}
					return true
				},
			})
		})

		// The empty selector selects every endpoint; fromEndpoints [{}]
		// admits every endpoint but not the host or the world. Replies
		// to the containers' own connections to the world still pass.
		t.Run("empty-selector", func(t *testing.T) {
			f.run(t, policyScenario{
				policy: `[{
  "labels": [{"key": "name", "value": "it-endpoints-only"}],
  "endpointSelector": {},
  "ingress": [{"fromEndpoints": [{}]}]
}]`,
				enforced: map[string]string{"web": "ingress", "api": "ingress", "db": "ingress", "client": "ingress", "admin": "ingress"},
				want: func(from, to string, p probe, fam string) bool {
					if isContainer(to) {
						return isContainer(from)
					}
					return true
				},
			})
		})

		// Deny beats allow: api admits tier=front (web, admin), but
		// web's TCP 7100 is denied; web's other traffic and all of
		// admin's still pass.
		t.Run("deny-beats-allow", func(t *testing.T) {
			f.run(t, policyScenario{
				policy: `[{
  "labels": [{"key": "name", "value": "it-front-but-not-web-7100"}],
  "endpointSelector": {"matchLabels": {"app": "api"}},
  "ingress": [{"fromEndpoints": [{"matchLabels": {"tier": "front"}}]}],
  "ingressDeny": [{
    "fromEndpoints": [{"matchLabels": {"app": "web"}}],
    "toPorts": [{"ports": [{"port": "7100", "protocol": "TCP"}]}]
  }]
}]`,
				enforced: map[string]string{"api": "ingress"},
				want: func(from, to string, p probe, fam string) bool {
					if to == "api" {
						return (from == "web" || from == "admin") && !(from == "web" && p == tcpProbe(7100))
					}
					return true
				},
			})
		})

		// client may only talk to web; everyone may still talk to
		// client (whose replies pass its egress), and nobody else is
		// restricted.
		t.Run("egress-client-to-web", func(t *testing.T) {
			f.run(t, policyScenario{
				policy: `[{
  "labels": [{"key": "name", "value": "it-client-to-web"}],
  "endpointSelector": {"matchLabels": {"app": "client"}},
  "egress": [{"toEndpoints": [{"matchLabels": {"app": "web"}}]}]
}]`,
				enforced: map[string]string{"client": "egress"},
				want: func(from, to string, p probe, fam string) bool {
					if from == "client" {
						return to == "web"
					}
					return true
				},
			})
		})

		// Entities: only the host reaches db (the world and the
		// containers do not); everything reaches api (all); client
		// reaches only the world.
		t.Run("entities", func(t *testing.T) {
			f.run(t, policyScenario{
				policy: `[{
  "labels": [{"key": "name", "value": "it-db-from-host"}],
  "endpointSelector": {"matchLabels": {"app": "db"}},
  "ingress": [{"fromEntities": ["host"]}]
}, {
  "labels": [{"key": "name", "value": "it-api-from-all"}],
  "endpointSelector": {"matchLabels": {"app": "api"}},
  "ingress": [{"fromEntities": ["all"]}]
}, {
  "labels": [{"key": "name", "value": "it-client-to-world"}],
  "endpointSelector": {"matchLabels": {"app": "client"}},
  "egress": [{"toEntities": ["world"]}]
}]`,
				enforced: map[string]string{"db": "ingress", "api": "ingress", "client": "egress"},
				want: func(from, to string, p probe, fam string) bool {
					if from == "client" && !isWorld(to) {
						return false
					}
					if to == "db" {
						return from == "host"
					}
					return true
				},
			})
		})

		// CIDRs toward the world: client reaches 198.18.0.0/24 and
		// fd00:198:18::/64 on TCP 7000 only; db admits 198.18.0.0/24
		// (IPv4 only: the world's IPv6 address is outside every rule).
		t.Run("cidr", func(t *testing.T) {
			f.run(t, policyScenario{
				policy: `[{
  "labels": [{"key": "name", "value": "it-client-to-world-7000"}],
  "endpointSelector": {"matchLabels": {"app": "client"}},
  "egress": [{
    "toCIDR": ["198.18.0.0/24", "fd00:198:18::/64"],
    "toPorts": [{"ports": [{"port": "7000", "protocol": "TCP"}]}]
  }]
}, {
  "labels": [{"key": "name", "value": "it-db-from-world-v4"}],
  "endpointSelector": {"matchLabels": {"app": "db"}},
  "ingress": [{"fromCIDR": ["198.18.0.0/24"]}]
}]`,
				enforced: map[string]string{"client": "egress", "db": "ingress"},
				want: func(from, to string, p probe, fam string) bool {
					if from == "client" {
						return isWorld(to) && p == tcpProbe(7000)
					}
					if to == "db" {
						return from == "world" && fam == "4"
					}
					return true
				},
			})
		})

		// toCIDRSet with except: the world's first address pair is cut
		// out of the allowed prefixes, its second pair is still allowed.
		t.Run("cidr-set-except", func(t *testing.T) {
			f.run(t, policyScenario{
				policy: `[{
  "labels": [{"key": "name", "value": "it-client-to-world2-7000"}],
  "endpointSelector": {"matchLabels": {"app": "client"}},
  "egress": [{
    "toCIDRSet": [
      {"cidr": "198.18.0.0/24", "except": ["198.18.0.2/32"]},
      {"cidr": "fd00:198:18::/64", "except": ["fd00:198:18::2/128"]}
    ],
    "toPorts": [{"ports": [{"port": "7000", "protocol": "TCP"}]}]
  }]
}]`,
				enforced: map[string]string{"client": "egress"},
				want: func(from, to string, p probe, fam string) bool {
					if from == "client" {
						return to == "world2" && p == tcpProbe(7000)
					}
					return true
				},
			})
		})

		t.Run("update-and-delete", f.testUpdateAndDelete)
		t.Run("new-container-picks-up-policy", f.testNewContainer)
		t.Run("init-identity", f.testInitIdentity)
		t.Run("invalid-policy-rejected", f.testInvalidPolicy)
		t.Run("monitor-shows-drop", f.testMonitor)
		t.Run("policy-dir-loaded-at-start", f.testPolicyDir)
	})
}

// apiFromWebTCP7000 is the policy named name that lets only app=web reach
// app=api, only on TCP 7000.
func apiFromWebTCP7000(name string) string {
	return `[{
  "labels": [{"key": "name", "value": "` + name + `"}],
  "endpointSelector": {"matchLabels": {"app": "api"}},
  "ingress": [{
    "fromEndpoints": [{"matchLabels": {"app": "web"}}],
    "toPorts": [{"ports": [{"port": "7000", "protocol": "TCP"}]}]
  }]
}]`
}

// identityInfo is an identity as `membrane identity list/get -o json`
// shows it.
type identityInfo struct {
	ID     uint32            `json:"id"`
	Labels map[string]string `json:"labels"`
}

// testIdentities: each fixture container's endpoint names its container,
// carries its Docker labels and an identity of its own (>= 256) that
// `identity list` and `identity get` show with those labels; containers
// with different labels have different identities.
func (f *policyFixture) testIdentities(t *testing.T) {
	f.requireIdentities(t)
	var list []identityInfo
	cliJSON(t, &list, "identity", "list")
	byID := map[uint32]identityInfo{}
	for _, id := range list {
		byID[id.ID] = id
	}
	seen := map[uint32]string{}
	for _, c := range policyContainers {
		e := f.eps[c.name]
		if !strings.HasPrefix(f.ids[c.name], e.ContainerID) || len(e.ContainerID) < 12 {
			t.Errorf("%s: endpoint %s has containerId %q, want container %s", c.name, short(e.ID), e.ContainerID, f.ids[c.name])
		}
		if !hasLabels(e.Labels, c.labels) {
			t.Errorf("%s: endpoint labels %v, want them to include %v", c.name, e.Labels, c.labels)
		}
		if other, dup := seen[e.Identity]; dup {
			t.Errorf("%s and %s have different labels but share identity %d", other, c.name, e.Identity)
		}
		seen[e.Identity] = c.name
		if since, err := e.since(); err != nil || since.IsZero() {
			t.Errorf("%s: identitySince %q: want the time its identity was assigned (%v)", c.name, e.IdentitySince, err)
		}
		id, ok := byID[e.Identity]
		if !ok {
			t.Errorf("%s: identity %d is not in `membrane identity list`", c.name, e.Identity)
		} else if !hasLabels(id.Labels, c.labels) {
			t.Errorf("%s: `membrane identity list` shows identity %d with labels %v, want them to include %v", c.name, e.Identity, id.Labels, c.labels)
		}
	}
	var got identityInfo
	web := f.eps["web"].Identity
	cliJSON(t, &got, "identity", "get", strconv.FormatUint(uint64(web), 10))
	if got.ID != web || !hasLabels(got.Labels, policyContainers[0].labels) {
		t.Errorf("membrane identity get %d: got %+v, want id %d with labels %v", web, got, web, policyContainers[0].labels)
	}
}

func hasLabels(got, want map[string]string) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// testUpdateAndDelete: a re-import under the same name replaces the rule
// (one rule, new content); a TCP stream the new rule still allows keeps
// flowing across the update while one it no longer allows is cut; deleting
// the rule brings back the no-policy matrix.
func (f *policyFixture) testUpdateAndDelete(t *testing.T) {
	f.requireIdentities(t)
	deleteAllPolicyAtCleanup(t)
	const name = "it-update"
	policy := func(apps ...string) string {
		return `[{
  "labels": [{"key": "name", "value": "` + name + `"}],
  "endpointSelector": {"matchLabels": {"app": "api"}},
  "ingress": [{
    "fromEndpoints": [{"matchExpressions": [{"key": "app", "operator": "In", "values": ["` + strings.Join(apps, `", "`) + `"]}]}],
    "toPorts": [{"ports": [{"port": "7000", "protocol": "TCP"}, {"port": "` + streamPort + `", "protocol": "TCP"}]}]
  }]
}]`
	}
	toAPI := func(allowed ...string) []reachCase {
		return matrix(append(slices.Clone(f.containers), f.world.Peer, f.host), f.pick("api"), policyProbes,
			func(from, to string, p probe, fam string) bool {
				return slices.Contains(allowed, from) && p == tcpProbe(7000)
			})
	}

	importPolicy(t, policy("web", "client"))
	checkReach(t, "before the update", toAPI("web", "client"))

	api := f.peers["api"]
	client, web := f.ids["client"], f.ids["web"]
	kept := []*streamClient{startStream(t, client, api.V6), startStream(t, client, api.V4)}
	cut := []*streamClient{startStream(t, web, api.V6), startStream(t, web, api.V4)}
	time.Sleep(time.Second)

	importPolicy(t, policy("client"))
	// Long enough for a cut stream to show a gap above streamMaxGap.
	time.Sleep(3 * time.Second)
	execIn(t, client, "touch", stopFile)
	execIn(t, web, "touch", stopFile)
	for _, s := range kept {
		if report, err := s.wait(); err != nil {
			t.Errorf("stream client → api %s, allowed before and after the update: want it unbroken: %v: %s", s.target, err, report)
		} else {
			t.Logf("stream client → api %s kept flowing: %s", s.target, report)
		}
	}
	for _, s := range cut {
		if report, err := s.wait(); err == nil {
			t.Errorf("stream web → api %s, no longer allowed after the update: want it cut, it kept flowing: %s", s.target, report)
		} else {
			t.Logf("stream web → api %s was cut: %v: %s", s.target, err, report)
		}
	}
	_, _ = execErr(client, "rm", "-f", stopFile)
	_, _ = execErr(web, "rm", "-f", stopFile)

	p := getPolicy(t)
	if names := p.names(); len(p.Rules) != 1 || !slices.Equal(names, []string{name}) {
		t.Errorf("membrane policy get after re-importing %s: want that one rule, got %d rules named %v", name, len(p.Rules), names)
	} else if rule := string(p.Rules[0]); strings.Contains(rule, `"web"`) || !strings.Contains(rule, `"client"`) {
		t.Errorf("membrane policy get after re-importing %s: want the new content (client only), got %s", name, rule)
	}
	checkReach(t, "after the update", toAPI("client"))

	deletePolicy(t, name)
	if p := getPolicy(t); len(p.Rules) != 0 {
		t.Errorf("membrane policy get after deleting %s: want no rules, got %d: %v", name, len(p.Rules), p.names())
	}
	f.checkEnforcement(t, nil)
	checkReach(t, "after the delete", f.fullMatrix(allowAll))
}

// testNewContainer: containers started after a policy exists get it once
// their identity is known: a second app=web container shares web's
// identity and reaches api on TCP 7000 only; a second app=api container is
// selected by the rule like api.
func (f *policyFixture) testNewContainer(t *testing.T) {
	f.requireIdentities(t)
	deleteAllPolicyAtCleanup(t)
	importPolicy(t, apiFromWebTCP7000("it-api-from-web-late"))

	late := []fixtureContainer{
		{"web2", policyContainers[0].labels},
		{"api2", policyContainers[1].labels},
	}
	_, peers := startLabelled(t, f.net, late)
	addrs := map[string]string{}
	for _, c := range late {
		addrs[c.name] = peers[c.name].V6
	}
	eps := waitIdentities(t, addrs)
	if eps["web2"].Identity != f.eps["web"].Identity || eps["api2"].Identity != f.eps["api"].Identity {
		t.Errorf("same labels, different identities: web %d web2 %d, api %d api2 %d",
			f.eps["web"].Identity, eps["web2"].Identity, f.eps["api"].Identity, eps["api2"].Identity)
	}
	if !eps["api2"].PolicyIngress || eps["api2"].PolicyEgress {
		t.Errorf("api2: policyIngress %v policyEgress %v, want true false", eps["api2"].PolicyIngress, eps["api2"].PolicyEgress)
	}

	web2, api2 := peers["web2"], peers["api2"]
	sources := append(f.pick("web", "client", "admin", "world", "host"), web2)
	cases := matrix(sources, []*peer{f.peers["api"], api2}, policyProbes, func(from, to string, p probe, fam string) bool {
		return (from == "web" || from == "web2") && p == tcpProbe(7000)
	})
	// Their own connections are not restricted.
	cases = append(cases, matrix([]*peer{web2, api2}, f.pick("client", "db", "world"), policyProbes, allowAll)...)
	checkReach(t, t.Name(), cases)
}

// restartMembrane kills the daemon and starts it again, talking to Docker's
// API at dockerHost ("" for the harness's dockerd).
func restartMembrane(t testing.TB, dockerHost string) {
	t.Helper()
	killMembrane(t)
	membrane.mu.Lock()
	membrane.dockerHost = dockerHost
	membrane.mu.Unlock()
	startMembrane(t)
}

// testInitIdentity: an endpoint whose labels are not known holds the init
// identity (5), and init is denied everything but ARP/ND, even with no
// policy loaded. Labels arrive within a second or two of a container's
// start, too fast to look at reliably, so the daemon is restarted cut off
// from Docker's API (a --docker-host where nothing listens) while a
// container starts; then it is restarted as usual, learns the labels, and
// the container gets its identity, identitySince and its traffic.
func (f *policyFixture) testInitIdentity(t *testing.T) {
	f.requireIdentities(t)
	deleteAllPolicyAtCleanup(t)
	if p := getPolicy(t); len(p.Rules) != 0 {
		t.Fatalf("want no policy loaded, got %v", p.names())
	}
	restartMembrane(t, "unix://"+filepath.Join(h.tmp, "no-docker-here.sock"))
	restored := false
	t.Cleanup(func() {
		if !restored {
			restartMembrane(t, "")
		}
	})

	labels := map[string]string{"app": "late"}
	ids, peers := startLabelled(t, f.net, []fixtureContainer{{"late", labels}})
	late := peers["late"]
	// Long enough for labels to have arrived, had the daemon a Docker.
	time.Sleep(2 * time.Second)
	e, ok := endpointByAddr(listEndpoints(t), late.V6)
	if !ok {
		t.Fatalf("no endpoint with address %s in `membrane endpoint list`", late.V6)
	}
	var got endpointInfo
	cliJSON(t, &got, "endpoint", "get", e.ID)
	if got.Identity != initIdentity || got.IdentitySince != "" {
		t.Errorf("membrane endpoint get %s of a container whose labels the daemon cannot know: identity %d, identitySince %q; want %d (init) and no identitySince",
			short(e.ID), got.Identity, got.IdentitySince, initIdentity)
	}
	probes := []probe{tcpProbe(7000), udpProbe(7001), icmpProbe}
	deny := func(string, string, probe, string) bool { return false }
	cases := matrix([]*peer{late}, f.pick("web", "world"), probes, deny)
	cases = append(cases, matrix(f.pick("web", "world", "host"), []*peer{late}, probes, deny)...)
	checkReach(t, "init, selected by no rule", cases)
	// ARP and ND were answered: the container knows a link-layer address
	// for some neighbour of each family (the gateway or the peers it tried).
	for _, fam := range []string{"-4", "-6"} {
		out, err := execErr(ids["late"], "ip", fam, "neigh", "show")
		if err != nil {
			t.Errorf("ip %s neigh in the init container: %v", fam, err)
		} else if !strings.Contains(out, "lladdr") {
			t.Errorf("ip %s neigh in the init container shows no resolved neighbour: ARP/ND must pass for init:\n%s", fam, out)
		}
	}

	restartStart := time.Now()
	restartMembrane(t, "")
	restored = true
	e = waitIdentities(t, map[string]string{"late": late.V6})["late"]
	got = endpointInfo{}
	cliJSON(t, &got, "endpoint", "get", e.ID)
	since, err := got.since()
	switch {
	case err != nil || since.IsZero():
		t.Errorf("membrane endpoint get %s: identitySince %q: want the time identity %d was assigned (%v)", short(e.ID), got.IdentitySince, got.Identity, err)
	case since.Before(restartStart.Add(-time.Second)) || since.After(time.Now().Add(time.Second)):
		t.Errorf("membrane endpoint get %s: identitySince %s, want it after the daemon could see Docker again (%s)", short(e.ID), since, restartStart.Format(time.RFC3339Nano))
	default:
		t.Logf("identity %d assigned %s after the daemon's restart", got.Identity, since.Sub(restartStart).Round(time.Millisecond))
	}
	if got.Identity != e.Identity || !hasLabels(got.Labels, labels) || got.ContainerID == "" {
		t.Errorf("membrane endpoint get %s: identity %d labels %v containerId %q, want identity %d and labels %v",
			short(e.ID), got.Identity, got.Labels, got.ContainerID, e.Identity, labels)
	}
	var ident identityInfo
	cliJSON(t, &ident, "identity", "get", strconv.FormatUint(uint64(e.Identity), 10))
	if ident.ID != e.Identity || !hasLabels(ident.Labels, labels) {
		t.Errorf("membrane identity get %d: got %+v, want labels %v", e.Identity, ident, labels)
	}
	cases = matrix([]*peer{late}, f.pick("web", "world"), probes, allowAll)
	cases = append(cases, matrix(f.pick("web", "world", "host"), []*peer{late}, probes, allowAll)...)
	checkReach(t, "with its identity, selected by no rule", cases)
}

// testInvalidPolicy: an invalid import exits with code 1 and an error that
// names the offending field by its path, and changes nothing: the loaded
// rules, the revision and what is enforced stay as they were, even when
// the invalid file's valid rules would replace a loaded one.
func (f *policyFixture) testInvalidPolicy(t *testing.T) {
	f.requireIdentities(t)
	deleteAllPolicyAtCleanup(t)
	rev := importPolicy(t, apiFromWebTCP7000("it-valid"))
	before := getPolicy(t)

	rule := func(name, body string) string {
		return `{"labels": [{"key": "name", "value": "` + name + `"}], "endpointSelector": {"matchLabels": {"app": "api"}}, ` + body + `}`
	}
	cases := []struct {
		name, policy, path string
	}{
		{"bad port in the second rule",
			`[` + rule("it-valid", `"ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}]`) + `, ` +
				rule("it-bad-port", `"ingress": [{"toPorts": [{"ports": [{"port": "70000", "protocol": "TCP"}]}]}]`) + `]`,
			"[1].ingress[0].toPorts[0].ports[0].port"},
		{"bad port", `[` + rule("it-bad", `"ingress": [{"toPorts": [{"ports": [{"port": "http-ish", "protocol": "TCP"}]}]}]`) + `]`,
			"[0].ingress[0].toPorts[0].ports[0].port"},
		{"unknown protocol", `[` + rule("it-bad", `"ingress": [{"toPorts": [{"ports": [{"port": "80", "protocol": "FOO"}]}]}]`) + `]`,
			"[0].ingress[0].toPorts[0].ports[0].protocol"},
		{"bad CIDR", `[` + rule("it-bad", `"egress": [{"toCIDR": ["198.18.0.0/33"]}]`) + `]`,
			"[0].egress[0].toCIDR[0]"},
		{"unknown entity", `[` + rule("it-bad", `"ingress": [{"fromEntities": ["everyone"]}]`) + `]`,
			"[0].ingress[0].fromEntities[0]"},
		{"unknown operator", `[{"labels": [{"key": "name", "value": "it-bad"}], "endpointSelector": {"matchExpressions": [{"key": "app", "operator": "Maybe", "values": ["api"]}]}, "ingress": [{}]}]`,
			"[0].endpointSelector.matchExpressions[0].operator"},
		{"not JSON or YAML", `[{"labels": `, ""},
	}
	for _, c := range cases {
		r, err := runCLI(c.policy, "policy", "import", "-")
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if r.Code != 1 {
			t.Errorf("%s: membrane policy import: exit code %d, want 1; output: %s", c.name, r.Code, r.output())
		}
		if c.path != "" && !strings.Contains(r.output(), c.path) {
			t.Errorf("%s: membrane policy import: want the error to name %s, got: %s", c.name, c.path, r.output())
		}
		t.Logf("%s: exit code %d: %s", c.name, r.Code, firstLine(r.output(), 300))
	}

	after := getPolicy(t)
	if after.Revision != before.Revision || !slices.Equal(after.names(), before.names()) || !sameRules(before, after) {
		t.Errorf("invalid imports changed the policy: before revision %d rules %v, after revision %d rules %v",
			before.Revision, before.names(), after.Revision, after.names())
	}
	var st statusInfo
	cliJSON(t, &st, "status")
	if st.PolicyRevision != nil && *st.PolicyRevision != rev {
		t.Errorf("membrane status: policy revision %d after invalid imports, want %d still", *st.PolicyRevision, rev)
	}
	// it-valid still holds as imported: the first case's version of it
	// (admitting client) must not have been applied.
	checkReach(t, "after the invalid imports", matrix(f.pick("web", "client"), f.pick("api"), []probe{tcpProbe(7000)},
		func(from, to string, p probe, fam string) bool { return from == "web" }))
}

func sameRules(a, b policyState) bool {
	if len(a.Rules) != len(b.Rules) {
		return false
	}
	for i := range a.Rules {
		var x, y any
		if json.Unmarshal(a.Rules[i], &x) != nil || json.Unmarshal(b.Rules[i], &y) != nil {
			return false
		}
		bx, _ := json.Marshal(x)
		by, _ := json.Marshal(y)
		if string(bx) != string(by) {
			return false
		}
	}
	return true
}

// testMonitor: `membrane monitor --type drop -o json` shows a drop, with a
// reason, for a flow the policy denies (client → api TCP 7000), naming its
// addresses, protocol, port and both identities; the Prometheus metrics
// count it.
func (f *policyFixture) testMonitor(t *testing.T) {
	f.requireIdentities(t)
	deleteAllPolicyAtCleanup(t)
	importPolicy(t, apiFromWebTCP7000("it-monitor"))
	api, client := f.peers["api"], f.peers["client"]
	apiID, clientID := float64(f.eps["api"].Identity), float64(f.eps["client"].Identity)

	metricsBefore, metricsErr := map[string]float64(nil), error(nil)
	if daemonHasFlag("metrics-address") {
		metricsBefore, metricsErr = scrapeMetrics(membrane.metricsAddr)
	}

	mon := startMonitor(t, "drop")
	// The monitor may take a moment to subscribe: keep knocking until the
	// drop shows up.
	stop := make(chan struct{})
	knocked := make(chan struct{})
	go func() {
		defer close(knocked)
		for {
			runReach(matrix([]*peer{client}, []*peer{api}, []probe{tcpProbe(7000)}, func(string, string, probe, string) bool { return false }))
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	ev, why := mon.waitFor(10*time.Second, func(ev map[string]any) bool {
		dst, _ := ev["dst"].(string)
		return ev["type"] == "drop" && (strings.Contains(dst, canonical(api.V6)) || strings.Contains(dst, api.V4)) &&
			portIs(ev["dstPort"], 7000) && protoIs(ev["proto"], "tcp")
	})
	close(stop)
	<-knocked
	if ev == nil {
		t.Fatalf("membrane monitor --type drop -o json: no drop event for client → api tcp/7000 (denied by policy): %s", why)
	}
	b, _ := json.Marshal(ev)
	t.Logf("drop event: %s", b)
	if reason, _ := ev["reason"].(string); reason == "" {
		t.Errorf("drop event without a reason: %s", b)
	}
	if src, _ := ev["src"].(string); !strings.Contains(src, canonical(client.V6)) && !strings.Contains(src, client.V4) {
		t.Errorf("drop event: src %q, want client's address (%s or %s): %s", src, client.V4, client.V6, b)
	}
	if ev["srcIdentity"] != clientID || ev["dstIdentity"] != apiID {
		t.Errorf("drop event: srcIdentity %v dstIdentity %v, want client's %v and api's %v: %s", ev["srcIdentity"], ev["dstIdentity"], clientID, apiID, b)
	}

	if !daemonHasFlag("metrics-address") {
		t.Errorf("the daemon has no --metrics-address flag: no metrics to check")
		return
	}
	if metricsErr != nil {
		t.Fatalf("metrics on %s: %v", membrane.metricsAddr, metricsErr)
	}
	after, err := scrapeMetrics(membrane.metricsAddr)
	if err != nil {
		t.Fatalf("metrics on %s: %v", membrane.metricsAddr, err)
	}
	if d := dropSum(after) - dropSum(metricsBefore); d <= 0 {
		t.Errorf("metrics on %s: the samples that mention drops did not grow across denied flows (%v before, %v after)", membrane.metricsAddr, dropSum(metricsBefore), dropSum(after))
	}
}

// dropSum adds up every metric sample whose name or labels mention drops.
func dropSum(samples map[string]float64) float64 {
	var sum float64
	for k, v := range samples {
		if strings.Contains(strings.ToLower(k), "drop") {
			sum += v
		}
	}
	return sum
}

// portIs accepts a port as a JSON number or string.
func portIs(v any, port int) bool {
	switch x := v.(type) {
	case float64:
		return int(x) == port
	case string:
		return x == strconv.Itoa(port)
	}
	return false
}

// protoIs accepts a protocol by name (any case) or number.
func protoIs(v any, name string) bool {
	numbers := map[string]float64{"tcp": 6, "udp": 17, "icmp": 1}
	switch x := v.(type) {
	case string:
		return strings.EqualFold(x, name) || x == fmt.Sprint(numbers[name])
	case float64:
		return x == numbers[name]
	}
	return false
}

// testPolicyDir: a YAML file in --policy-dir is imported when the daemon
// starts: after a restart its rule is loaded and enforced.
func (f *policyFixture) testPolicyDir(t *testing.T) {
	f.requireIdentities(t)
	deleteAllPolicyAtCleanup(t)
	if !daemonHasFlag("policy-dir") {
		t.Fatalf("`membrane daemon --help` lists no --policy-dir flag")
	}
	const name = "it-policy-dir"
	path := filepath.Join(policyDir(), "it.yaml")
	yaml := `# api admits web on TCP 7000 only
- labels:
  - key: name
    value: ` + name + `
  endpointSelector:
    matchLabels:
      app: api
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: web
    toPorts:
    - ports:
      - port: "7000"
        protocol: TCP
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	// Out before the policy delete: a later restart must not bring it back.
	t.Cleanup(func() { _ = os.Remove(path) })

	killMembrane(t)
	startMembrane(t)
	p := getPolicy(t)
	if !slices.Contains(p.names(), name) {
		t.Fatalf("after a restart with %s in --policy-dir: membrane policy get shows rules %v, want %s", filepath.Base(path), p.names(), name)
	}
	waitRevision(t, p.Revision)
	checkReach(t, t.Name(), matrix(f.pick("web", "client"), f.pick("api"), []probe{tcpProbe(7000), tcpProbe(7100)},
		func(from, to string, p probe, fam string) bool { return from == "web" && p == tcpProbe(7000) }))
	if err := os.Remove(path); err != nil {
		t.Error(err)
	}
	deletePolicy(t, name)
}
