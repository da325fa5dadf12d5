package datapath

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
)

// policyMaps is what the policy maps of d hold.
func policyMaps(t *testing.T, d *Datapath) (map[PolicyKey]Verdict, map[uint32]endpointPolicyEnforceValue) {
	t.Helper()
	entries := map[PolicyKey]Verdict{}
	if err := readMap(d.policy, func(k endpointPolicyKey, v endpointPolicyValue) { entries[policyKeyOf(k)] = Verdict(v.Verdict) }); err != nil {
		t.Fatal(err)
	}
	enforce := map[uint32]endpointPolicyEnforceValue{}
	if err := readMap(d.policyEnforce, func(k uint32, v endpointPolicyEnforceValue) { enforce[k] = v }); err != nil {
		t.Fatal(err)
	}
	return entries, enforce
}

// smallPolicyDatapath is an unpinned datapath whose policy map holds size
// entries.
func smallPolicyDatapath(t *testing.T, size uint32) *Datapath {
	t.Helper()
	requirePrivileged(t)
	d, err := newDatapathWith("", func(s *ebpf.CollectionSpec) { s.Maps[endpointMapPolicy].MaxEntries = size })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// randomPolicyDelta changes state at random: entries added, re-verdicted
// and removed, enforcement changed. It returns the delta that does it.
func randomPolicyDelta(r *rand.Rand, state *PolicyState) PolicyDelta {
	delta := PolicyDelta{Set: map[PolicyKey]Verdict{}, Enforcement: map[uint32]Enforcement{}}
	for range r.IntN(12) {
		k := PolicyKey{Subject: 256 + r.Uint32N(4), Peer: r.Uint32N(3) * 300, Proto: ProtoTCP, Port: uint16(r.IntN(6)), Dir: uint8(r.IntN(2))}
		if _, removed := delta.Set[k]; removed || slices.Contains(delta.Remove, k) {
			continue
		}
		if _, ok := state.Entries[k]; ok && r.IntN(2) == 0 {
			delete(state.Entries, k)
			delta.Remove = append(delta.Remove, k)
			continue
		}
		v := Verdict(1 + r.IntN(2))
		state.Entries[k] = v
		delta.Set[k] = v
	}
	for range r.IntN(3) {
		id := 256 + r.Uint32N(4)
		e := Enforcement{Ingress: r.IntN(2) == 0, Egress: r.IntN(2) == 0}
		if e == (Enforcement{}) {
			delete(state.Enforcement, id)
		} else {
			state.Enforcement[id] = e
		}
		delta.Enforcement[id] = e
	}
	return delta
}

// TestApplyPolicyAgreesWithSyncPolicy applies random deltas to one
// datapath and syncs the resulting whole state into another, with a policy
// map small enough to fill up. Which entries fit in a full map depends on
// the order they were written in, so both are held to what the whole state
// says: the entries held are asked for, a subject is in lockdown exactly
// when an entry of its is missing, enforcement is what was asked for, and
// with room in the map, the maps hold the state exactly.
func TestApplyPolicyAgreesWithSyncPolicy(t *testing.T) {
	const size = 24
	applied, synced := smallPolicyDatapath(t, size), smallPolicyDatapath(t, size)
	r := rand.New(rand.NewPCG(5, 1))
	state := PolicyState{Entries: map[PolicyKey]Verdict{}, Enforcement: map[uint32]Enforcement{}}
	lockdowns := 0
	for step := range 400 {
		delta := randomPolicyDelta(r, &state)
		a, err := applied.ApplyPolicy(delta)
		if err != nil {
			t.Fatalf("step %d: apply: %v", step, err)
		}
		s, err := synced.SyncPolicy(state)
		if err != nil {
			t.Fatalf("step %d: sync: %v", step, err)
		}
		checkPolicyMaps(t, "applied", step, applied, state, a, size)
		checkPolicyMaps(t, "synced", step, synced, state, s, size)
		if len(a.Lockdown) > 0 {
			lockdowns++
		}
	}
	if lockdowns == 0 || lockdowns == 400 {
		t.Fatalf("%d of 400 steps in lockdown: the test no longer exercises both", lockdowns)
	}
}

// checkPolicyMaps checks what d's maps hold against the state asked for.
func checkPolicyMaps(t *testing.T, name string, step int, d *Datapath, state PolicyState, res PolicySync, size int) {
	t.Helper()
	entries, enforce := policyMaps(t, d)
	missing := map[uint32]bool{}
	for k, v := range state.Entries {
		if got, ok := entries[k]; !ok {
			missing[k.Subject] = true
		} else if got != v {
			t.Fatalf("%s, step %d: %s holds %s, asked for %s", name, step, k, got, v)
		}
	}
	for k := range entries {
		if _, ok := state.Entries[k]; !ok {
			t.Fatalf("%s, step %d: %s held, not asked for", name, step, k)
		}
	}
	if len(state.Entries) <= size && len(missing) > 0 {
		t.Fatalf("%s, step %d: the map has room, yet entries of %v are missing", name, step, missing)
	}
	want := map[uint32]endpointPolicyEnforceValue{}
	for id, e := range state.Enforcement {
		want[id] = e.raw()
	}
	for id := range missing {
		v := want[id]
		v.Lockdown = 1
		want[id] = v
	}
	if !maps.Equal(enforce, want) {
		t.Fatalf("%s, step %d: enforcement %v, want %v", name, step, enforce, want)
	}
	if lockdown := subjectList(missing); !slices.Equal(res.Lockdown, lockdown) {
		t.Fatalf("%s, step %d: reported lockdown %v, want %v", name, step, res.Lockdown, lockdown)
	}
}

func subjectList(m map[uint32]bool) []uint32 {
	l := slices.Sorted(maps.Keys(m))
	if len(l) == 0 {
		return nil
	}
	return l
}

func TestApplyPolicyRefusesInvalidDeltas(t *testing.T) {
	d := smallPolicyDatapath(t, 64)
	k := egress(idA, idB, 80, ProtoTCP)
	for name, bad := range map[string]PolicyDelta{
		"port without protocol": {Set: map[PolicyKey]Verdict{{Subject: idA, Port: 80}: VerdictAllow}},
		"bad verdict":           {Set: map[PolicyKey]Verdict{k: 3}},
		"set and removed":       {Set: map[PolicyKey]Verdict{k: VerdictAllow}, Remove: []PolicyKey{k}},
		"subject 0":             {Enforcement: map[uint32]Enforcement{0: {Egress: true}}},
	} {
		if _, err := d.ApplyPolicy(bad); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("%s: %v, want ErrInvalidPolicy", name, err)
		}
	}
	if entries, enforce := policyMaps(t, d); len(entries)+len(enforce) != 0 {
		t.Errorf("refused deltas wrote %v %v", entries, enforce)
	}
}

// TestApplyPolicyAfterReopen: after a restart, deltas apply to what the
// pinned maps hold, and a subject found in lockdown stays there until a
// SyncPolicy gives the whole policy.
func TestApplyPolicyAfterReopen(t *testing.T) {
	requireBPFFS(t)
	pinDir := tempPinDir(t)
	d, err := Open(Config{PinDir: pinDir})
	if err != nil {
		t.Fatal(err)
	}
	state := PolicyState{
		Entries:     map[PolicyKey]Verdict{egress(idA, idB, 80, ProtoTCP): VerdictAllow, ingress(idB, idA, 0, 0): VerdictAllow},
		Enforcement: map[uint32]Enforcement{idA: {Egress: true}, idA + 1000: {Lockdown: true}},
	}
	if _, err := d.SyncPolicy(state); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if d, err = Open(Config{PinDir: pinDir}); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	res, err := d.ApplyPolicy(PolicyDelta{
		Set:         map[PolicyKey]Verdict{egress(idA, idB, 443, ProtoTCP): VerdictAllow},
		Remove:      []PolicyKey{ingress(idB, idA, 0, 0)},
		Enforcement: map[uint32]Enforcement{idB: {Ingress: true}},
	})
	if err != nil || res.Added != 1 || res.Removed != 1 || !slices.Equal(res.Lockdown, []uint32{idA + 1000}) {
		t.Fatalf("apply after reopen: %+v, %v", res, err)
	}
	entries, enforce := policyMaps(t, d)
	wantEntries := map[PolicyKey]Verdict{egress(idA, idB, 80, ProtoTCP): VerdictAllow, egress(idA, idB, 443, ProtoTCP): VerdictAllow}
	wantEnforce := map[uint32]endpointPolicyEnforceValue{idA: {Egress: 1}, idB: {Ingress: 1}, idA + 1000: {Lockdown: 1}}
	if !maps.Equal(entries, wantEntries) || !maps.Equal(enforce, wantEnforce) {
		t.Fatalf("maps hold %v %v, want %v %v", entries, enforce, wantEntries, wantEnforce)
	}
	res, err = d.SyncPolicy(PolicyState{Entries: wantEntries, Enforcement: map[uint32]Enforcement{idA: {Egress: true}, idB: {Ingress: true}}})
	if err != nil || len(res.Lockdown) != 0 {
		t.Fatalf("sync: %+v, %v", res, err)
	}
	if _, enforce = policyMaps(t, d); len(enforce) != 2 {
		t.Errorf("after the whole policy, enforcement %v: want %d's lockdown gone", enforce, idA+1000)
	}
}

// allows reports whether maps holding entries and enforce let a packet of
// probe through: probe.Subject's traffic in probe.Dir with peer probe.Peer,
// protocol probe.Proto and port probe.Port, looked up the way the programs
// do (see PolicyKey).
func allows(entries map[PolicyKey]Verdict, enforce map[uint32]endpointPolicyEnforceValue, probe PolicyKey) bool {
	e := enforce[probe.Subject]
	if e.Lockdown != 0 {
		return false
	}
	allowed := false
	for _, peer := range []uint32{probe.Peer, 0} {
		for _, pp := range [][2]uint16{{probe.Port, uint16(probe.Proto)}, {0, uint16(probe.Proto)}, {0, 0}} {
			if pp == [2]uint16{probe.Port, uint16(probe.Proto)} && peer == 0 && probe.Port == 0 {
				continue // same key as (0, 0, proto)
			}
			k := PolicyKey{Subject: probe.Subject, Peer: peer, Port: pp[0], Proto: uint8(pp[1]), Dir: probe.Dir}
			switch entries[k] {
			case VerdictDeny:
				return false
			case VerdictAllow:
				allowed = true
			}
		}
	}
	if allowed {
		return true
	}
	if probe.Dir == DirIngress {
		return e.Ingress == 0
	}
	return e.Egress == 0
}

// allowedProbes is the set of probes d's maps let through.
func allowedProbes(t *testing.T, d *Datapath, probes []PolicyKey) map[PolicyKey]bool {
	t.Helper()
	entries, enforce := policyMaps(t, d)
	allowed := map[PolicyKey]bool{}
	for _, p := range probes {
		if allows(entries, enforce, p) {
			allowed[p] = true
		}
	}
	return allowed
}

// gaplessProbes are packets of subjects 256-259 (those randomPolicyDelta
// writes) and of idA, idB.
func gaplessProbes() []PolicyKey {
	var probes []PolicyKey
	for _, subject := range []uint32{256, 257, 258, 259, idA, idB} {
		for _, peer := range []uint32{300, 600, 900, idA, idB} {
			for _, port := range []uint16{1, 2, 3, 4, 5, 80, 443} {
				for dir := range uint8(2) {
					probes = append(probes, PolicyKey{Subject: subject, Peer: peer, Port: port, Proto: ProtoTCP, Dir: dir})
				}
			}
		}
	}
	return probes
}

// checkGapless runs write, which changes d's policy, and checks the maps
// after every single write to them: a packet they let through must be let
// through by the maps before write or by those after it. (Within one
// batch write, every entry is a deny, or every entry an allow, or every
// removal one of an allow: each state in between lies between the states
// checked.)
func checkGapless(t *testing.T, d *Datapath, name string, write func() error) {
	t.Helper()
	probes := gaplessProbes()
	before := allowedProbes(t, d, probes)
	var states []map[PolicyKey]bool
	policyWriteHook = func(hd *Datapath) {
		if hd == d {
			states = append(states, allowedProbes(t, d, probes))
		}
	}
	err := write()
	policyWriteHook = nil
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	after := allowedProbes(t, d, probes)
	for i, s := range states {
		for p := range s {
			if !before[p] && !after[p] {
				t.Fatalf("%s: after map write %d of %d, %s is allowed, which both the policy before and the one after deny", name, i+1, len(states), p)
			}
		}
	}
}

// TestApplyPolicyFullMapUpdateAfterLockdown: with the map full, a new deny
// entry does not fit while an existing entry turns from deny to allow; the
// subject must be locked down before the allow is written, or the traffic
// the new deny is for passes in between.
func TestApplyPolicyFullMapUpdateAfterLockdown(t *testing.T) {
	d := smallPolicyDatapath(t, 2)
	denyAll := ingress(idA, 0, 0, ProtoTCP)
	if _, err := d.SyncPolicy(PolicyState{Entries: map[PolicyKey]Verdict{
		denyAll:                 VerdictDeny,
		ingress(idB, idA, 0, 0): VerdictAllow, // fills the map
	}}); err != nil {
		t.Fatal(err)
	}
	checkGapless(t, d, "deny to allow, new deny missing", func() error {
		res, err := d.ApplyPolicy(PolicyDelta{Set: map[PolicyKey]Verdict{
			denyAll:                        VerdictAllow,
			ingress(idA, idB, 0, ProtoTCP): VerdictDeny,
		}})
		if err == nil && !slices.Equal(res.Lockdown, []uint32{idA}) {
			t.Errorf("lockdown %v, want [%d]", res.Lockdown, idA)
		}
		return err
	})
}

// TestApplyPolicyLockdownLiftedAfterRemovals: a subject in lockdown
// because a deny entry did not fit loses that deny and an allow; the
// lockdown must stay until the allow is gone, or what the deny was for
// passes in between.
func TestApplyPolicyLockdownLiftedAfterRemovals(t *testing.T) {
	d := smallPolicyDatapath(t, 2)
	allow := ingress(idA, idB, 0, ProtoTCP)
	deny := ingress(idA, idB, 80, ProtoTCP)
	if _, err := d.SyncPolicy(PolicyState{
		Entries: map[PolicyKey]Verdict{
			allow:                   VerdictAllow,
			ingress(idB, idA, 0, 0): VerdictAllow, // fills the map
		},
		Enforcement: map[uint32]Enforcement{idA: {Ingress: true}},
	}); err != nil {
		t.Fatal(err)
	}
	res, err := d.ApplyPolicy(PolicyDelta{Set: map[PolicyKey]Verdict{deny: VerdictDeny}})
	if err != nil || !slices.Equal(res.Lockdown, []uint32{idA}) {
		t.Fatalf("deny that does not fit: %+v, %v; want %d in lockdown", res, err, idA)
	}
	checkGapless(t, d, "remove missing deny and allow", func() error {
		res, err := d.ApplyPolicy(PolicyDelta{Remove: []PolicyKey{deny, allow}})
		if err == nil && len(res.Lockdown) != 0 {
			t.Errorf("lockdown %v, want none", res.Lockdown)
		}
		return err
	})
}

// TestPolicyWritesGapless holds random changes, applied and synced, with a
// policy map small enough to fill up, to checkGapless.
func TestPolicyWritesGapless(t *testing.T) {
	const size = 16
	applied, synced := smallPolicyDatapath(t, size), smallPolicyDatapath(t, size)
	r := rand.New(rand.NewPCG(7, 3))
	state := PolicyState{Entries: map[PolicyKey]Verdict{}, Enforcement: map[uint32]Enforcement{}}
	for step := range 150 {
		delta := randomPolicyDelta(r, &state)
		checkGapless(t, applied, fmt.Sprintf("step %d, apply", step), func() error {
			_, err := applied.ApplyPolicy(delta)
			return err
		})
		checkGapless(t, synced, fmt.Sprintf("step %d, sync", step), func() error {
			_, err := synced.SyncPolicy(state)
			return err
		})
	}
}
