package plugin

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"testing"

	"github.com/membrane-net/membrane/internal/apiview"
	"github.com/membrane-net/membrane/state"
)

// TestLargeImportReplacingCIDRRulesMatchesFullResolve: a large import
// whose rules name no CIDR but replace rules that did collects the CIDR
// identities those named (the import is not indexed ahead of the write).
func TestLargeImportReplacingCIDRRulesMatchesFullResolve(t *testing.T) {
	f := newControllerFixture(t)
	f.addBenchIdentities()
	var rules []map[string]any
	for i := range minPrepareAhead {
		rules = append(rules, cidrRule(i))
	}
	f.importRules(rules)
	f.checkConverged(t, 0)
	for i, r := range rules {
		rules[i] = serverRule(i)
		rules[i]["labels"] = r["labels"] // same names, no CIDR
	}
	f.importRules(rules)
	f.checkConverged(t, 1)
	if _, cidrs, err := identitiesTxn(f.store.Read()); err != nil || len(cidrs) != 0 {
		t.Fatalf("CIDR identities %v (%v) left after no rule names them", cidrs, err)
	}
}

// TestFailedImportChangesNothing: an import the store cannot write (its
// directory is gone) fails, and leaves state and the datapath as they
// were, whether resolved ahead of the write (large) or after it; the next
// import applies on top of what is stored.
func TestFailedImportChangesNothing(t *testing.T) {
	for _, n := range []int{3, 2 * minPrepareAhead} {
		t.Run(fmt.Sprint(n, " rules"), func(t *testing.T) {
			f := newControllerFixture(t)
			f.addBenchIdentities()
			f.importRules(serverRules(0, 10))
			f.checkConverged(t, 0)
			before, err := f.dp.ReadPolicy()
			if err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(f.stateDir); err != nil {
				t.Fatal(err)
			}
			if _, err := f.ctl.ImportPolicy(mustJSON(t, serverRules(100, n))); err == nil {
				t.Fatal("import into a store without its directory succeeded")
			}
			after, err := f.dp.ReadPolicy()
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(before.Entries, after.Entries) || !maps.Equal(before.Enforcement, after.Enforcement) {
				t.Fatalf("the failed import changed the datapath:\n %v\nthen\n %v", before.Entries, after.Entries)
			}
			if rows, err := state.ListPolicies(f.store.Read()); err != nil || len(rows) != 10 {
				t.Fatalf("after the failed import state holds %d rules (%v), want 10", len(rows), err)
			}
			if err := os.MkdirAll(f.stateDir, 0o700); err != nil {
				t.Fatal(err)
			}
			f.importRules(serverRules(200, 5))
			f.checkConverged(t, 1)
			if got, err := f.dp.ReadPolicy(); err != nil || len(got.Entries) != 15 {
				t.Fatalf("after the next import %d entries (%v), want 15", len(got.Entries), err)
			}
		})
	}
}

// TestLargeImportIsDurableBeforeItReturns is TestImportIsDurableBeforeItReturns
// for an import of the benchmark harness's 10,000 rules, too large for the
// journal after an empty checkpoint: it is written as a checkpoint, which
// a store opened after a crash finds, and a restarted controller applies.
func TestLargeImportIsDurableBeforeItReturns(t *testing.T) {
	f := newControllerFixture(t)
	f.addHarnessIdentities()
	f.importRules(harnessRules(0, 10_000))
	crashed, r, err := state.Open(f.stateDir)
	if err != nil || len(r.Skipped) != 0 {
		t.Fatalf("open after crash: %v %v", r.Skipped, err)
	}
	if r.Path == "" || r.Replayed != 0 {
		t.Errorf("the import was not written as a checkpoint: %+v", r)
	}
	rows, err := state.ListPolicies(crashed.Read())
	if err != nil || len(rows) != 10_000 {
		t.Fatalf("after the crash %d rules (%v), want 10000", len(rows), err)
	}
	f.restart()
	f.checkConverged(t, 0)
}

// TestStatusCountsRules: GET /v1/status counts the stored rules, from the
// controller's mirror, and from state when there is no mirror.
func TestStatusCountsRules(t *testing.T) {
	f := newControllerFixture(t)
	f.addBenchIdentities()
	c := f.serveAPI()
	f.importRules(serverRules(0, 7))
	if st := c.status(); st.PolicyRules != 7 {
		t.Errorf("status counts %d rules, want 7", st.PolicyRules)
	}
	f.ctl.mu.Lock()
	f.ctl.pol = nil // as after a failed update
	f.ctl.mu.Unlock()
	if st := c.status(); st.PolicyRules != 7 {
		t.Errorf("without the mirror, status counts %d rules, want 7", st.PolicyRules)
	}
}

// status gets /v1/status.
func (c apiClient) status() apiview.Status {
	c.tb.Helper()
	resp, err := c.http.Get("http://membrane/v1/status")
	if err != nil {
		c.tb.Fatal(err)
	}
	defer resp.Body.Close()
	var st apiview.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		c.tb.Fatal(err)
	}
	return st
}
