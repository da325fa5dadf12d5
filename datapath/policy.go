package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Verdict is what a policy entry says about the traffic it matches.
type Verdict uint8

const (
	VerdictAllow Verdict = 1
	VerdictDeny  Verdict = 2
)

func (v Verdict) String() string {
	switch v {
	case VerdictAllow:
		return "allow"
	case VerdictDeny:
		return "deny"
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// Policy directions, as PolicyKey.Dir and Event.Dir.
const (
	DirIngress uint8 = 0
	DirEgress  uint8 = 1
)

// PortICMP marks an ICMP or ICMPv6 message type as a policy port: the key
// for ICMP type T has Port PortICMP|T, so that type 0 differs from Port 0
// (any type).
const PortICMP uint16 = 0x100

// IP protocol numbers with a meaning for policy keys.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
	ProtoSCTP   uint8 = 132
)

// PolicyKey is an entry of the policy map: traffic of endpoints with
// identity Subject, in direction Dir (DirIngress, DirEgress), with the peer
// identity Peer (0: any peer), protocol Proto (0: any protocol; Port must
// then be 0) and destination port Port (host order; 0: any port; ICMP:
// PortICMP|type).
//
// A packet of subject S with peer X, protocol P and port T looks up
// (X,T,P) (X,0,P) (X,0,0) (0,T,P) (0,0,P) (0,0,0): any deny entry denies,
// else any allow entry allows, else the direction's Enforcement decides.
type PolicyKey struct {
	Subject uint32
	Peer    uint32
	Port    uint16
	Proto   uint8
	Dir     uint8
}

func (k PolicyKey) String() string {
	dir := "ingress"
	if k.Dir == DirEgress {
		dir = "egress"
	}
	return fmt.Sprintf("%d %s peer %d proto %d port %#x", k.Subject, dir, k.Peer, k.Proto, k.Port)
}

func (k PolicyKey) validate() error {
	switch {
	case k.Subject == 0:
		return errors.New("subject 0")
	case k.Dir != DirIngress && k.Dir != DirEgress:
		return fmt.Errorf("direction %d", k.Dir)
	case k.Proto == 0 && k.Port != 0:
		return errors.New("port without protocol")
	case (k.Proto == ProtoICMP || k.Proto == ProtoICMPv6) && k.Port != 0 && k.Port&0xff00 != PortICMP:
		return fmt.Errorf("ICMP port %#x is not PortICMP|type", k.Port)
	}
	return nil
}

func (k PolicyKey) raw() endpointPolicyKey {
	return endpointPolicyKey{Subject: k.Subject, Peer: k.Peer, Port: k.Port, Proto: k.Proto, Dir: k.Dir}
}

func policyKeyOf(r endpointPolicyKey) PolicyKey {
	return PolicyKey{Subject: r.Subject, Peer: r.Peer, Port: r.Port, Proto: r.Proto, Dir: r.Dir}
}

// Enforcement is how a subject's traffic is treated when no entry matches.
// A direction that is not enforced allows what no deny entry denies; an
// enforced one denies what no allow entry allows. Lockdown denies
// everything in both directions.
type Enforcement struct {
	Ingress, Egress, Lockdown bool
}

func (e Enforcement) raw() endpointPolicyEnforceValue {
	var v endpointPolicyEnforceValue
	if e.Ingress {
		v.Ingress = 1
	}
	if e.Egress {
		v.Egress = 1
	}
	if e.Lockdown {
		v.Lockdown = 1
	}
	return v
}

// PolicyState is the whole policy the datapath should hold: the entries,
// and the enforcement of every subject (absent: enforced in no direction).
type PolicyState struct {
	Entries     map[PolicyKey]Verdict
	Enforcement map[uint32]Enforcement
}

// PolicySync reports what SyncPolicy changed.
type PolicySync struct {
	Added, Updated, Removed int
	// Revision is the policy revision after the sync (unchanged when the
	// sync changed nothing).
	Revision uint32
	// Lockdown lists, sorted, the subjects put in lockdown because the
	// policy map was full: some of their entries are missing, so all their
	// traffic is denied until a later sync writes them.
	Lockdown []uint32
}

// policyCache is what the policy maps hold, as far as this Datapath wrote
// or read them: SyncPolicy diffs against it instead of reading the maps.
type policyCache struct {
	entries map[PolicyKey]Verdict
	enforce map[uint32]endpointPolicyEnforceValue
}

type policyEntry struct {
	key     PolicyKey
	verdict Verdict
}

// SyncPolicy makes the policy maps hold s, incrementally: it diffs s
// against the last synced state (read back from the maps on the first sync
// after Open, since pinned maps outlive the daemon) and writes only the
// differences, in an order that never opens a gap: new and changed entries
// (deny entries first), then enforcement, then removals, then a new policy
// revision, at which established connections are checked again (those now
// denied are cut, the others go on undisturbed).
//
// When the policy map is full, the subjects whose entries did not fit are
// put in lockdown (all their traffic denied) instead of running with part
// of their policy; PolicySync.Lockdown names them. Invalid entries are
// refused (ErrInvalidPolicy) before anything is written.
func (d *Datapath) SyncPolicy(s PolicyState) (PolicySync, error) {
	res, err := d.syncPolicy(&s)
	if err != nil {
		return res, fmt.Errorf("sync policy: %w", err)
	}
	return res, nil
}

func (d *Datapath) syncPolicy(s *PolicyState) (res PolicySync, err error) {
	for id := range s.Enforcement {
		if id == 0 {
			return res, fmt.Errorf("%w: enforcement of subject 0", ErrInvalidPolicy)
		}
	}

	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return res, ErrClosed
	}
	d.policyMu.Lock()
	defer d.policyMu.Unlock()
	if d.policyCache == nil {
		c, err := d.readPolicy()
		if err != nil {
			return res, err
		}
		d.policyCache = c
	}
	cache := d.policyCache

	// Diff, and validate on the way (nothing is written before the end of
	// this loop): one pass over the state, one lookup an entry. Deny
	// entries go first: if the map fills up, it is allow entries that are
	// missing (fail closed) until lockdown is written.
	var denies, allows []policyEntry
	present := 0
	for k, v := range s.Entries {
		cur, ok := cache.entries[k]
		if ok {
			present++
			if cur == v {
				continue
			}
			res.Updated++
		} else {
			if err := k.validate(); err != nil {
				return PolicySync{}, fmt.Errorf("%w: entry %s: %v", ErrInvalidPolicy, k, err)
			}
			res.Added++
		}
		if v != VerdictAllow && v != VerdictDeny {
			return PolicySync{}, fmt.Errorf("%w: entry %s: verdict %d", ErrInvalidPolicy, k, v)
		}
		if v == VerdictDeny {
			denies = append(denies, policyEntry{k, v})
		} else {
			allows = append(allows, policyEntry{k, v})
		}
	}
	var removals []PolicyKey
	if present != len(cache.entries) {
		for k := range cache.entries {
			if _, ok := s.Entries[k]; !ok {
				removals = append(removals, k)
			}
		}
	}
	writes := append(denies, allows...)

	// Whatever happens from here, if something was written, established
	// connections are checked against what the maps now hold.
	changed := false
	defer func() {
		if err != nil && changed {
			if _, berr := d.bumpRevision(); berr != nil {
				err = errors.Join(err, berr)
			}
		}
	}()
	full, err := d.writePolicy(cache, writes)
	if len(writes) > len(full) {
		changed = true
	}
	if err != nil {
		return res, err
	}
	enfChanged, err := d.writeEnforcement(cache, s.Enforcement, subjectsOf(full))
	changed = changed || enfChanged
	if err != nil {
		return res, err
	}
	removed, err := d.deletePolicy(cache, removals)
	res.Removed = removed
	changed = changed || removed > 0
	if err != nil {
		return res, err
	}
	if len(full) > 0 {
		// Removals may have made room.
		retried := len(full)
		full, err = d.writePolicy(cache, full)
		if err != nil {
			return res, err
		}
		if len(full) < retried {
			if _, err := d.writeEnforcement(cache, s.Enforcement, subjectsOf(full)); err != nil {
				return res, err
			}
		}
	}
	// What did not fit is new keys only (a full map still takes updates).
	res.Added -= len(full)
	res.Lockdown = subjectList(subjectsOf(full))

	if changed {
		res.Revision, err = d.bumpRevision()
	} else {
		var c endpointRuntimeConfig
		c, err = d.readConfig()
		res.Revision = c.PolicyRevision
	}
	return res, err
}

// readPolicy reads the policy maps back.
func (d *Datapath) readPolicy() (*policyCache, error) {
	c := &policyCache{
		entries: map[PolicyKey]Verdict{},
		enforce: map[uint32]endpointPolicyEnforceValue{},
	}
	err := readMap(d.policy, func(k endpointPolicyKey, v endpointPolicyValue) {
		c.entries[policyKeyOf(k)] = Verdict(v.Verdict)
	})
	if err != nil {
		return nil, fmt.Errorf("read policy map: %w", err)
	}
	err = readMap(d.policyEnforce, func(k uint32, v endpointPolicyEnforceValue) {
		c.enforce[k] = v
	})
	if err != nil {
		return nil, fmt.Errorf("read policy_enforce map: %w", err)
	}
	return c, nil
}

// isFull reports whether err is a map refusing a new key for lack of room
// (hash: E2BIG, LPM trie: ENOSPC).
func isFull(err error) bool {
	return errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOSPC)
}

// writePolicy writes entries to the policy map and the cache. It returns
// the entries that did not fit, in order; any other failure is an error.
func (d *Datapath) writePolicy(cache *policyCache, entries []policyEntry) ([]policyEntry, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	keys := make([]endpointPolicyKey, len(entries))
	values := make([]endpointPolicyValue, len(entries))
	for i, e := range entries {
		keys[i] = e.key.raw()
		values[i] = endpointPolicyValue{Verdict: uint8(e.verdict)}
	}
	n, err := d.policy.BatchUpdate(keys, values, nil)
	if errors.Is(err, ebpf.ErrNotSupported) {
		n, err = 0, nil
		for ; n < len(keys); n++ {
			if err = d.policy.Put(keys[n], values[n]); err != nil {
				break
			}
		}
	}
	for _, e := range entries[:n] {
		cache.entries[e.key] = e.verdict
	}
	if err == nil {
		return nil, nil
	}
	if !isFull(err) {
		return nil, fmt.Errorf("write policy map: %w", err)
	}
	// Full: updates of existing keys still go in; new keys do not.
	var full []policyEntry
	for i := n; i < len(entries); i++ {
		err := d.policy.Put(keys[i], values[i])
		switch {
		case err == nil:
			cache.entries[entries[i].key] = entries[i].verdict
		case isFull(err):
			full = append(full, entries[i])
		default:
			return full, fmt.Errorf("write policy map: %w", err)
		}
	}
	return full, nil
}

// writeEnforcement makes policy_enforce hold want, with lockdown added for
// the subjects in lockdown. Subjects with nothing enforced have no entry.
func (d *Datapath) writeEnforcement(cache *policyCache, want map[uint32]Enforcement, lockdown map[uint32]bool) (bool, error) {
	desired := make(map[uint32]endpointPolicyEnforceValue, len(want)+len(lockdown))
	for id, e := range want {
		e.Lockdown = e.Lockdown || lockdown[id]
		if v := e.raw(); v != (endpointPolicyEnforceValue{}) {
			desired[id] = v
		}
	}
	for id := range lockdown {
		if _, ok := want[id]; !ok {
			desired[id] = endpointPolicyEnforceValue{Lockdown: 1}
		}
	}
	changed := false
	for id, v := range desired {
		if cur, ok := cache.enforce[id]; ok && cur == v {
			continue
		}
		if err := d.policyEnforce.Put(id, v); err != nil {
			return changed, fmt.Errorf("write policy_enforce map: %w", err)
		}
		cache.enforce[id] = v
		changed = true
	}
	for id := range cache.enforce {
		if _, ok := desired[id]; ok {
			continue
		}
		if err := d.policyEnforce.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return changed, fmt.Errorf("delete from policy_enforce map: %w", err)
		}
		delete(cache.enforce, id)
		changed = true
	}
	return changed, nil
}

// deletePolicy removes keys from the policy map and the cache.
func (d *Datapath) deletePolicy(cache *policyCache, keys []PolicyKey) (int, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	raw := make([]endpointPolicyKey, len(keys))
	for i, k := range keys {
		raw[i] = k.raw()
	}
	n, err := d.policy.BatchDelete(raw, nil)
	for _, k := range keys[:n] {
		delete(cache.entries, k)
	}
	if err == nil {
		return n, nil
	}
	// A key already gone (or no batch support): one by one from there.
	if !errors.Is(err, ebpf.ErrKeyNotExist) && !errors.Is(err, ebpf.ErrNotSupported) {
		return n, fmt.Errorf("delete from policy map: %w", err)
	}
	for i := n; i < len(keys); i++ {
		if err := d.policy.Delete(raw[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, fmt.Errorf("delete from policy map: %w", err)
		}
		delete(cache.entries, keys[i])
		n++
	}
	return n, nil
}

func subjectsOf(entries []policyEntry) map[uint32]bool {
	if len(entries) == 0 {
		return nil
	}
	m := map[uint32]bool{}
	for _, e := range entries {
		m[e.key.Subject] = true
	}
	return m
}

func subjectList(m map[uint32]bool) []uint32 {
	if len(m) == 0 {
		return nil
	}
	l := make([]uint32, 0, len(m))
	for id := range m {
		l = append(l, id)
	}
	slices.Sort(l)
	return l
}

// readMap calls fn for every entry of m, in batches where the kernel
// supports it.
func readMap[K comparable, V any](m *ebpf.Map, fn func(K, V)) error {
	const chunk = 4096
	keys := make([]K, chunk)
	values := make([]V, chunk)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, values, nil)
		for i := range n {
			fn(keys[i], values[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			break
		}
		if err != nil {
			return err
		}
	}
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		fn(k, v)
	}
	return it.Err()
}

// ipcacheKey is the ipcache key of p: IPv4 as IPv4-mapped IPv6.
func ipcacheKey(p netip.Prefix) endpointIpcacheKey {
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	return endpointIpcacheKey{Prefixlen: uint32(bits), Addr: p.Addr().As16()}
}

func ipcachePrefix(k endpointIpcacheKey) netip.Prefix {
	a := netip.AddrFrom16(k.Addr)
	bits := int(k.Prefixlen)
	if a.Is4In6() && bits >= 96 {
		return netip.PrefixFrom(a.Unmap(), bits-96)
	}
	return netip.PrefixFrom(a, bits)
}

// SyncIPCache makes the ipcache hold entries (prefix -> identity), the
// identities of the addresses that are no local endpoint's: CIDR
// identities, the host's addresses (IdentityHost), and optionally the
// catch-all ::/0 and 0.0.0.0/0 (the programs take any address no prefix
// holds as IdentityWorld). Like SyncPolicy it writes only the differences
// with the last synced state (additions and changes first, then removals),
// then bumps the policy revision if anything changed. Prefixes must be in
// canonical form (no host bits) and identities nonzero (ErrInvalidPolicy).
// A full ipcache (ErrMapFull) is an error: the prefixes that fit are kept.
func (d *Datapath) SyncIPCache(entries map[netip.Prefix]uint32) error {
	if err := d.syncIPCache(entries); err != nil {
		return fmt.Errorf("sync ipcache: %w", err)
	}
	return nil
}

func (d *Datapath) syncIPCache(entries map[netip.Prefix]uint32) error {
	want := make(map[endpointIpcacheKey]uint32, len(entries))
	for p, id := range entries {
		switch {
		case !p.IsValid() || p != p.Masked() || p.Addr().Zone() != "":
			return fmt.Errorf("%w: prefix %s is not canonical", ErrInvalidPolicy, p)
		case id == 0:
			return fmt.Errorf("%w: prefix %s: identity 0", ErrInvalidPolicy, p)
		}
		k := ipcacheKey(p)
		if other, dup := want[k]; dup && other != id {
			return fmt.Errorf("%w: prefix %s given two identities (%d, %d)", ErrInvalidPolicy, p, other, id)
		}
		want[k] = id
	}

	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	d.policyMu.Lock()
	defer d.policyMu.Unlock()
	if d.ipcacheCache == nil {
		c := map[endpointIpcacheKey]uint32{}
		err := readMap(d.ipcache, func(k endpointIpcacheKey, v endpointIpcacheValue) { c[k] = v.Identity })
		if err != nil {
			return fmt.Errorf("read ipcache map: %w", err)
		}
		d.ipcacheCache = c
	}
	cache := d.ipcacheCache

	var keys []endpointIpcacheKey
	var values []endpointIpcacheValue
	present := 0
	for k, id := range want {
		cur, ok := cache[k]
		if ok {
			present++
			if cur == id {
				continue
			}
		}
		keys = append(keys, k)
		values = append(values, endpointIpcacheValue{Identity: id})
	}
	var removals []endpointIpcacheKey
	if present != len(cache) {
		for k := range cache {
			if _, ok := want[k]; !ok {
				removals = append(removals, k)
			}
		}
	}
	changed := len(keys) > 0 || len(removals) > 0
	var errs []error
	var n int
	var err error
	if len(keys) > 0 {
		// Without batch support, or past a failed write: one by one.
		n, err = d.ipcache.BatchUpdate(keys, values, nil)
	}
	for i := range n {
		cache[keys[i]] = values[i].Identity
	}
	for i := n; err != nil && i < len(keys); i++ {
		if err := d.ipcache.Put(keys[i], values[i]); err != nil {
			if isFull(err) {
				err = fmt.Errorf("%w: %w", ErrMapFull, err)
			}
			errs = append(errs, fmt.Errorf("put %s: %w", ipcachePrefix(keys[i]), err))
			continue
		}
		cache[keys[i]] = values[i].Identity
	}
	for _, k := range removals {
		if err := d.ipcache.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("delete %s: %w", ipcachePrefix(k), err))
			continue
		}
		delete(cache, k)
	}
	if changed {
		if _, err := d.bumpRevision(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d of %d writes: %w", len(errs), len(keys)+len(removals), errors.Join(errs...))
	}
	return nil
}
