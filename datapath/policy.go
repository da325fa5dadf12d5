package datapath

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
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

// PolicySync reports what SyncPolicy or ApplyPolicy changed.
type PolicySync struct {
	// Added, Updated and Removed count the policy map entries written
	// new, overwritten with another verdict, and deleted.
	Added, Updated, Removed int
	// Revision is the policy revision after the call (unchanged when it
	// changed nothing).
	Revision uint32
	// Lockdown lists, sorted, the subjects in lockdown because the policy
	// map was full: some of their entries are missing, so all their
	// traffic is denied until a later call finds room for them.
	Lockdown []uint32
}

// SyncPolicy makes the policy maps hold s, incrementally: it diffs s
// against the last synced state (read back from the maps on the first call
// after Open, since pinned maps outlive the daemon) and writes only the
// differences, in an order that never lets through what both the policy
// before and the one after deny: new and changed deny entries, lockdown of
// subjects whose entries do not fit, new and changed allow entries,
// enforcement turning on, removals (allow entries first), lockdown lifted
// and enforcement turning off, then a new policy revision, at which
// established connections are checked again (those now denied are cut, the
// others go on undisturbed).
//
// The diff costs a map lookup per entry of s: for small changes to a large
// policy, ApplyPolicy writes a known change without it. SyncPolicy is for
// a daemon's start and for full resyncs.
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

func (d *Datapath) syncPolicy(s *PolicyState) (PolicySync, error) {
	for id := range s.Enforcement {
		if id == 0 {
			return PolicySync{}, fmt.Errorf("%w: enforcement of subject 0", ErrInvalidPolicy)
		}
	}
	return d.changePolicy(func(cache *policyCache) (*policyChange, error) { return cache.diff(s) })
}

// changePolicy holds the policy maps (and the cache of what they hold)
// while change computes what to write against the cache, then writes it.
// SyncPolicy and ApplyPolicy differ only in how they compute the change.
func (d *Datapath) changePolicy(change func(*policyCache) (*policyChange, error)) (PolicySync, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return PolicySync{}, ErrClosed
	}
	d.policyMu.Lock()
	defer d.policyMu.Unlock()
	cache, err := d.loadPolicyCache()
	if err != nil {
		return PolicySync{}, err
	}
	ch, err := change(cache)
	if err != nil {
		return PolicySync{}, err
	}
	return d.applyChange(cache, ch)
}

// diff returns the change that takes the policy the cache holds (or was
// asked to hold) to s, validating s on the way: one pass over s, one
// lookup an entry.
func (c *policyCache) diff(s *PolicyState) (*policyChange, error) {
	ch := &policyChange{full: true, enforce: map[uint32]Enforcement{}}
	var denies, allows []policyEntry
	present := 0
	for k, v := range s.Entries {
		if cur, ok := c.entries[k]; ok {
			present++
			if cur == v {
				continue
			}
		} else if err := k.validate(); err != nil {
			return nil, fmt.Errorf("%w: entry %s: %v", ErrInvalidPolicy, k, err)
		}
		if v != VerdictAllow && v != VerdictDeny {
			return nil, fmt.Errorf("%w: entry %s: verdict %d", ErrInvalidPolicy, k, v)
		}
		if v == VerdictDeny {
			denies = append(denies, policyEntry{k, v})
		} else {
			allows = append(allows, policyEntry{k, v})
		}
	}
	ch.writes = append(denies, allows...)
	if present != len(c.entries) {
		for k := range c.entries {
			if _, ok := s.Entries[k]; !ok {
				ch.removals = append(ch.removals, k)
			}
		}
	}
	for k := range c.missing {
		if _, ok := s.Entries[k]; !ok {
			ch.removals = append(ch.removals, k)
		}
	}
	for id, e := range s.Enforcement {
		if c.want[id] != e {
			ch.enforce[id] = e
		}
	}
	for id := range c.want {
		if _, ok := s.Enforcement[id]; !ok {
			ch.enforce[id] = Enforcement{}
		}
	}
	return ch, nil
}

// readPolicy reads the policy maps back. What was asked for cannot be read
// back exactly: the enforcement asked for is taken to be what the map
// holds, and subjects found in lockdown stay there until a SyncPolicy says
// the whole policy again (entries of theirs may be missing).
func (d *Datapath) readPolicy() (*policyCache, error) {
	c := newPolicyCache()
	err := readMap(d.policy, func(k endpointPolicyKey, v endpointPolicyValue) {
		c.entries[policyKeyOf(k)] = Verdict(v.Verdict)
	})
	if err != nil {
		return nil, fmt.Errorf("read policy map: %w", err)
	}
	err = readMap(d.policyEnforce, func(k uint32, v endpointPolicyEnforceValue) {
		c.enforce[k] = v
		if e := (Enforcement{Ingress: v.Ingress != 0, Egress: v.Egress != 0}); e != (Enforcement{}) {
			c.want[k] = e
		}
		if v.Lockdown != 0 {
			c.unsettled[k] = true
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read policy_enforce map: %w", err)
	}
	return c, nil
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
