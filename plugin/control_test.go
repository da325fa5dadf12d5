package plugin

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"testing"

	"github.com/hashicorp/go-memdb"

	"github.com/membrane-net/membrane/datapath"
	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/policy"
	"github.com/membrane-net/membrane/state"
)

// ruleMaker makes random rules from small vocabularies, so that selectors,
// ports and CIDRs collide often.
type ruleMaker struct{ r *rand.Rand }

var (
	makerRoles = []string{"server", "client", "db"}
	makerCIDRs = []string{"10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "192.168.0.0/16", "fd00::/8", "fd00:1::/32"}
	makerPorts = []string{"0", "53", "80", "443"}
	makerProto = []string{"TCP", "UDP", "ANY"}
)

func (m ruleMaker) pick(n int) int { return m.r.IntN(n) }

func (m ruleMaker) selector() map[string]any {
	switch m.pick(4) {
	case 0:
		return map[string]any{}
	case 1:
		return map[string]any{"matchExpressions": []any{map[string]any{"key": "env", "operator": "Exists"}}}
	}
	return map[string]any{"matchLabels": map[string]any{"role": makerRoles[m.pick(3)]}}
}

func (m ruleMaker) section(from bool) map[string]any {
	s := map[string]any{}
	prefix := "to"
	if from {
		prefix = "from"
	}
	switch m.pick(4) {
	case 0:
		s[prefix+"Endpoints"] = []any{m.selector()}
	case 1:
		s[prefix+"Entities"] = []any{[]string{"world", "host", "all"}[m.pick(3)]}
	case 2:
		s[prefix+"CIDR"] = []any{makerCIDRs[m.pick(len(makerCIDRs))]}
	}
	if m.pick(3) > 0 {
		s["toPorts"] = []any{map[string]any{"ports": []any{map[string]any{"port": makerPorts[m.pick(4)], "protocol": makerProto[m.pick(3)]}}}}
	}
	return s
}

func (m ruleMaker) rule() map[string]any {
	r := map[string]any{"endpointSelector": m.selector()}
	if m.pick(4) > 0 {
		r["labels"] = []any{map[string]any{"key": "name", "value": fmt.Sprint("rule-", m.pick(15))}}
	}
	for _, kind := range []string{"ingress", "egress", "ingressDeny", "egressDeny"} {
		if m.pick(3) == 0 || (kind == "egressDeny" && len(r) == 1 || kind == "egressDeny" && len(r) == 2 && r["labels"] != nil) {
			r[kind] = []any{m.section(kind == "ingress" || kind == "ingressDeny")}
		}
	}
	return r
}

// expectedPolicy resolves the stored rules and identities whole, as a
// start does: what the datapath must hold.
func expectedPolicy(t *testing.T, store *state.Store) (datapath.PolicyState, map[netip.Prefix]labels.Identity) {
	t.Helper()
	txn := store.Read()
	rows, err := state.ListPolicies(txn)
	if err != nil {
		t.Fatal(err)
	}
	var rules []policy.Rule
	for _, row := range rows {
		rule, err := parseStoredRule(row)
		if err != nil {
			t.Fatal(err)
		}
		rules = append(rules, rule)
	}
	ids, cidrs, err := identitiesTxn(txn)
	if err != nil {
		t.Fatal(err)
	}
	res, err := policy.Resolve(policy.Input{Rules: rules, Identities: ids, CIDRs: cidrs})
	if err != nil {
		t.Fatal(err)
	}
	want := datapath.PolicyState{Entries: map[datapath.PolicyKey]datapath.Verdict{}, Enforcement: map[uint32]datapath.Enforcement{}}
	for k, v := range res.Entries {
		want.Entries[datapathKey(k)] = datapath.Verdict(v)
	}
	for id, e := range res.Enforcement {
		if e != (policy.Enforcement{}) {
			want.Enforcement[uint32(id)] = datapath.Enforcement{Ingress: e.Ingress, Egress: e.Egress}
		}
	}
	return want, cidrs
}

// checkConverged checks that the datapath holds what a full resolve of
// state gives, and that the controller reports it.
func (f *controllerFixture) checkConverged(t *testing.T, step int) {
	t.Helper()
	want, cidrs := expectedPolicy(t, f.store)
	got, err := f.dp.ReadPolicy()
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got.Entries, want.Entries) || !maps.Equal(got.Enforcement, want.Enforcement) {
		t.Fatalf("step %d: datapath holds\n %v\n %v\nfull resolve gives\n %v\n %v", step, got.Entries, got.Enforcement, want.Entries, want.Enforcement)
	}
	ipcache, err := f.dp.ReadIPCache()
	if err != nil {
		t.Fatal(err)
	}
	for p, id := range cidrs {
		if ipcache[p] != uint32(id) {
			t.Fatalf("step %d: ipcache maps %s to %d, want CIDR identity %d", step, p, ipcache[p], id)
		}
	}
	for p, id := range ipcache {
		if id >= uint32(labels.MinCIDRIdentity) && cidrs[p] != labels.Identity(id) {
			t.Fatalf("step %d: ipcache holds %s -> %d, which state does not", step, p, id)
		}
	}
	for id, e := range want.Enforcement {
		if enf, _, _ := f.ctl.enforcementOf(id); enf.Ingress != e.Ingress || enf.Egress != e.Egress {
			t.Fatalf("step %d: controller reports enforcement %+v of %d, want %+v", step, enf, id, e)
		}
	}
}

// TestIncrementalPolicyMatchesFullResolve runs random sequences of imports,
// replacements, deletions and identity changes (endpoints coming, changing
// labels, going) through the controller, which updates the datapath
// incrementally: after every step the maps must hold exactly what a full
// Resolve of state gives. Every 40 steps the controller restarts (a new
// one over the same state directory and pinned maps) and must converge.
func TestIncrementalPolicyMatchesFullResolve(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			f := newControllerFixture(t)
			m := ruleMaker{rand.New(rand.NewPCG(seed, 3))}
			endpoints := map[string]bool{}
			for step := range 200 {
				f.randomStep(t, m, endpoints)
				f.checkConverged(t, step)
				if step%40 == 39 {
					f.restart()
					f.checkConverged(t, step)
				}
			}
		})
	}
}

func (f *controllerFixture) randomStep(t *testing.T, m ruleMaker, endpoints map[string]bool) {
	t.Helper()
	ep := fmt.Sprint("ep", m.pick(5))
	switch op := m.pick(20); {
	case op < 9:
		var rules []map[string]any
		for range 1 + m.pick(3) {
			rules = append(rules, m.rule())
		}
		if _, err := f.ctl.ImportPolicy(mustJSON(t, rules)); err != nil && !errors.Is(err, errBadRequest) {
			t.Fatal(err) // two rules of one name in a document are refused
		}
	case op < 12:
		if _, err := f.ctl.DeletePolicy(fmt.Sprint("rule-", m.pick(15)), false); err != nil && !errors.Is(err, state.ErrNotFound) {
			t.Fatal(err)
		}
	case op < 13:
		if _, err := f.ctl.DeletePolicy("", true); err != nil {
			t.Fatal(err)
		}
	case op < 18:
		l := map[string]string{"role": makerRoles[m.pick(3)]}
		if m.pick(2) == 0 {
			l["env"] = fmt.Sprint(m.pick(2))
		}
		if endpoints[ep] {
			f.setLabels(ep, l)
		} else {
			f.addEndpoint(ep, netip.AddrFrom4([4]byte{10, 200, 0, byte(10 + len(endpoints))}), l)
			endpoints[ep] = true
		}
	default:
		if endpoints[ep] {
			f.removeEndpoint(ep)
			delete(endpoints, ep)
		}
	}
}

// TestRestartConvergesOnStateChangedBehindItsBack: a daemon killed between
// committing a change and applying it leaves the maps behind state; the
// next start resolves everything again and writes the difference.
func TestRestartConvergesOnStateChangedBehindItsBack(t *testing.T) {
	f := newControllerFixture(t)
	f.addBenchIdentities()
	f.importRules(serverRules(0, 50))
	f.checkConverged(t, 0)
	// Change state as a killed daemon would have left it: committed, not
	// applied.
	err := f.store.Write(func(txn *memdb.Txn) error {
		for i := range 10 {
			if err := state.DeletePolicy(txn, fmt.Sprint("server-", i)); err != nil {
				return err
			}
		}
		canon, err := policy.Canonical(mustParseOne(t, serverRule(1000)))
		if err != nil {
			return err
		}
		return state.PutPolicy(txn, &state.Policy{Name: "server-1000", Rule: canon, Revision: 9})
	})
	if err != nil {
		t.Fatal(err)
	}
	f.restart()
	f.checkConverged(t, 1)
	if got, err := f.dp.ReadPolicy(); err != nil || len(got.Entries) != 41 {
		t.Fatalf("after restart %d entries (%v), want 41", len(got.Entries), err)
	}
	// And goes on incrementally from there.
	f.importRules(serverRules(2000, 5))
	f.checkConverged(t, 2)
}

func mustParseOne(t *testing.T, rule map[string]any) policy.Rule {
	t.Helper()
	rules, err := policy.Parse(mustJSON(t, rule))
	if err != nil || len(rules) != 1 {
		t.Fatalf("parse %v: %v", rule, err)
	}
	return rules[0]
}

// TestImportIsDurableBeforeItReturns: once ImportPolicy returns, the rule
// is on disk, as a store opened after a crash (the running one never
// closed) finds it.
func TestImportIsDurableBeforeItReturns(t *testing.T) {
	f := newControllerFixture(t)
	f.addBenchIdentities()
	f.importRules(serverRules(0, 3))
	crashed, r, err := state.Open(f.stateDir)
	if err != nil || len(r.Skipped) != 0 {
		t.Fatalf("open after crash: %v %v", r.Skipped, err)
	}
	rows, err := state.ListPolicies(crashed.Read())
	if err != nil || len(rows) != 3 {
		t.Fatalf("after the crash %d rules (%v), want 3", len(rows), err)
	}
	if _, err := os.Stat(f.stateDir); err != nil {
		t.Fatal(err)
	}
}

// TestLargeImportsMatchFullResolve covers imports large enough to be
// resolved alongside the store write: new rules, rules naming CIDRs
// without identities yet (resolved after the write instead), and
// replacements of existing rules.
func TestLargeImportsMatchFullResolve(t *testing.T) {
	f := newControllerFixture(t)
	f.addBenchIdentities()
	large := max(2*minPrepareAhead, minParallelEncode+100)
	f.importRules(serverRules(0, large))
	f.checkConverged(t, 0)
	var withCIDRs []map[string]any
	for i := range minPrepareAhead {
		withCIDRs = append(withCIDRs, cidrRule(i), serverRule(10_000+i))
	}
	f.importRules(withCIDRs)
	f.checkConverged(t, 1)
	replaced := serverRules(0, large)
	for _, r := range replaced {
		r["endpointSelector"] = map[string]any{"matchLabels": map[string]any{"role": "client"}}
	}
	f.importRules(replaced)
	f.checkConverged(t, 2)
	if _, err := f.ctl.DeletePolicy("", true); err != nil {
		t.Fatal(err)
	}
	f.checkConverged(t, 3)
	if got, err := f.dp.ReadPolicy(); err != nil || len(got.Entries)+len(got.Enforcement) != 0 {
		t.Fatalf("after deleting every rule the maps hold %v (%v)", got, err)
	}
}
