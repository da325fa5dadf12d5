package policy

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/membrane-net/membrane/labels"
)

// Direction is the direction of traffic relative to the subject endpoint.
type Direction uint8

// Directions.
const (
	Ingress Direction = 0 // to the subject
	Egress  Direction = 1 // from the subject
)

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// Verdict is what a policy key says about the traffic it matches.
type Verdict uint8

// Verdicts. Deny wins over Allow.
const (
	Allow Verdict = 1
	Deny  Verdict = 2
)

func (v Verdict) String() string {
	switch v {
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// ICMPTypeFlag marks the Port of an ICMP or ICMPv6 key as holding a
// message type: Port = ICMPTypeFlag | type, so type 0 (echo reply) is
// 0x100 and Port 0 still means "every type".
const ICMPTypeFlag = 0x100

// ICMPPort returns the key Port for an ICMP or ICMPv6 message type.
func ICMPPort(icmpType uint8) uint16 { return ICMPTypeFlag | uint16(icmpType) }

// Key is a policy map key.
//
// Peer 0 is any peer. Proto 0 is any IP protocol (and then Port is 0).
// Port 0 is every port of Proto. For ICMP (Proto 1) and ICMPv6 (Proto 58)
// Port is ICMPPort(type). The datapath looks up, for a packet of protocol
// P to port (or ICMPPort of type) T from or to peer X, the keys (X,T,P)
// (X,0,P) (X,0,0) (0,T,P) (0,0,P) (0,0,0); any Deny drops the packet,
// otherwise any Allow passes it, otherwise the subject's Enforcement
// decides.
type Key struct {
	Subject labels.Identity
	Peer    labels.Identity
	Port    uint16
	Proto   uint8
	Dir     Direction
}

func (k Key) String() string {
	return fmt.Sprintf("%s %d peer %d proto %d port %#x", k.Dir, k.Subject, k.Peer, k.Proto, k.Port)
}

// Enforcement says, per direction, whether a subject is in default deny:
// traffic no key allows is dropped.
type Enforcement struct {
	Ingress, Egress bool
}

// Input is what Resolve needs.
type Input struct {
	Rules []Rule
	// Identities are the endpoint identities that exist now (from
	// labels.MinUserIdentity, below labels.MinCIDRIdentity), with their
	// labels. Reserved identities are implicit.
	Identities map[labels.Identity]labels.Labels
	// CIDRs is the identity of every prefix CIDRs(Rules) returns (more
	// are allowed); the caller allocates them, from
	// labels.MinCIDRIdentity.
	CIDRs map[netip.Prefix]labels.Identity
}

// Result is the resolved policy.
type Result struct {
	Entries map[Key]Verdict
	// Enforcement has an entry for every identity that some rule with a
	// non-empty section selects; identities without one are not in
	// default deny in either direction.
	Enforcement map[labels.Identity]Enforcement
}

// Resolve turns rules into policy keys for the identities that exist. The
// rules are checked as Parse checks them (errors match ErrInvalidPolicy),
// and every CIDR they name must have an identity (ErrMissingCIDRIdentity).
func Resolve(in Input) (Result, error) {
	errs := checkIdentities(in)
	compiled := make([]*compiledRule, len(in.Rules))
	for i := range in.Rules {
		cr, ruleErrs := compileRule(&in.Rules[i], "", false, false)
		if len(ruleErrs) > 0 {
			_, ruleErrs = compileRule(&in.Rules[i], indexPath("", i), false, true)
		}
		errs = append(errs, ruleErrs...)
		compiled[i] = cr
	}
	if len(errs) > 0 {
		return Result{}, joinErrors(errs)
	}

	r := newResolver(in)
	for i, cr := range compiled {
		for _, sections := range cr.sections {
			for _, list := range sections {
				for _, s := range list {
					for _, c := range s.cidrs {
						for _, p := range append([]netip.Prefix{c.prefix}, c.except...) {
							if _, ok := in.CIDRs[p]; !ok {
								errs = append(errs, fmt.Errorf("%w: %s, named by rule [%d]", ErrMissingCIDRIdentity, p, i))
							}
						}
					}
				}
			}
		}
	}
	if len(errs) > 0 {
		return Result{}, joinErrors(errs)
	}

	res := Result{
		Entries:     make(map[Key]Verdict),
		Enforcement: make(map[labels.Identity]Enforcement),
	}
	for _, cr := range compiled {
		subjects := r.match(cr.subject, cr.subjectKey)
		if len(subjects) == 0 {
			continue
		}
		for _, s := range subjects {
			e := res.Enforcement[s]
			e.Ingress = e.Ingress || cr.defaultDeny[Ingress]
			e.Egress = e.Egress || cr.defaultDeny[Egress]
			res.Enforcement[s] = e
		}
		for dir := range cr.sections {
			for which, list := range cr.sections[dir] {
				verdict := Allow
				if which == denyList {
					verdict = Deny
				}
				for i := range list {
					r.emit(res.Entries, subjects, &list[i], Direction(dir), verdict)
				}
			}
		}
	}
	return res, nil
}

// checkIdentities checks the identities and CIDR identities of in.
func checkIdentities(in Input) []error {
	var errs []error
	for id := range in.Identities {
		if id < labels.MinUserIdentity || id >= labels.MinCIDRIdentity {
			errs = append(errs, fmt.Errorf("%w: endpoint identity %d, want %d to %d", ErrInvalidIdentity, id, labels.MinUserIdentity, labels.MinCIDRIdentity-1))
		}
	}
	for p, id := range in.CIDRs {
		if !p.IsValid() || p != p.Masked() {
			errs = append(errs, fmt.Errorf("%w: CIDR %s is not a masked prefix", ErrInvalidIdentity, p))
		}
		if id < labels.MinCIDRIdentity || id > labels.MaxCIDRIdentity {
			errs = append(errs, fmt.Errorf("%w: identity %d of CIDR %s, want %d to %d", ErrInvalidIdentity, id, p, labels.MinCIDRIdentity, labels.MaxCIDRIdentity))
		}
	}
	return errs
}

// every is the l4 list of a section without toPorts or icmps.
var every = []l4{{}}

func (r *resolver) emit(entries map[Key]Verdict, subjects []labels.Identity, s *compiledSection, dir Direction, v Verdict) {
	peers := r.peers(s)
	ports := s.l4
	if ports == nil {
		ports = every
	}
	for _, subject := range subjects {
		for _, peer := range peers {
			for _, p := range ports {
				k := Key{Subject: subject, Peer: peer, Port: p.port, Proto: p.proto, Dir: dir}
				if v == Deny {
					entries[k] = Deny
				} else if _, ok := entries[k]; !ok {
					entries[k] = Allow
				}
			}
		}
	}
}

// resolver answers "which identities" questions over one Input.
type resolver struct {
	ids    []labels.Identity // endpoint identities, sorted
	labels map[labels.Identity]labels.Labels
	byKV   map[string]map[string][]labels.Identity // label key -> value -> identities, sorted
	byKey  map[string][]labels.Identity            // label key -> identities, sorted
	memo   map[string][]labels.Identity            // selector string -> identities

	cidrs   []netip.Prefix // sorted by comparePrefixes
	cidrIDs map[netip.Prefix]labels.Identity
	world   []labels.Identity // identity 2 and every CIDR identity
}

func newResolver(in Input) *resolver {
	r := &resolver{
		labels:  in.Identities,
		byKV:    make(map[string]map[string][]labels.Identity),
		byKey:   make(map[string][]labels.Identity),
		memo:    make(map[string][]labels.Identity),
		cidrIDs: in.CIDRs,
	}
	for id := range in.Identities {
		r.ids = append(r.ids, id)
	}
	slices.Sort(r.ids)
	for _, id := range r.ids {
		for k, v := range in.Identities[id] {
			byV := r.byKV[k]
			if byV == nil {
				byV = make(map[string][]labels.Identity)
				r.byKV[k] = byV
			}
			byV[v] = append(byV[v], id)
			r.byKey[k] = append(r.byKey[k], id)
		}
	}
	r.world = []labels.Identity{labels.IdentityWorld}
	for p, id := range in.CIDRs {
		r.cidrs = append(r.cidrs, p)
		r.world = append(r.world, id)
	}
	slices.SortFunc(r.cidrs, comparePrefixes)
	return r
}

// match returns the endpoint identities a selector selects, sorted; key
// is the selector's selectorKey.
func (r *resolver) match(sel labels.Selector, key string) []labels.Identity {
	if sel.Empty() {
		return r.ids
	}
	if ids, ok := r.memo[key]; ok {
		return ids
	}
	// Narrow the candidates with the index: the smallest set an equality,
	// In or Exists condition allows.
	candidates := r.ids
	for k, v := range sel.MatchLabels {
		if c := r.byKV[labels.LabelKey(k)][v]; len(c) < len(candidates) {
			candidates = c
		}
	}
	for _, req := range sel.MatchExpressions {
		k := labels.LabelKey(req.Key)
		switch req.Operator {
		case labels.OpExists:
			if c := r.byKey[k]; len(c) < len(candidates) {
				candidates = c
			}
		case labels.OpIn:
			n := 0
			for _, v := range req.Values {
				n += len(r.byKV[k][v])
			}
			if n < len(candidates) {
				var c []labels.Identity
				for _, v := range req.Values {
					c = append(c, r.byKV[k][v]...)
				}
				slices.Sort(c)
				candidates = slices.Compact(c)
			}
		}
	}
	var out []labels.Identity
	for _, id := range candidates {
		if sel.Matches(r.labels[id]) {
			out = append(out, id)
		}
	}
	r.memo[key] = out
	return out
}

// inside returns the identities of the CIDRs inside c.prefix and inside
// none of c.except.
func (r *resolver) inside(c cidrPeer, out []labels.Identity) []labels.Identity {
	start, _ := slices.BinarySearchFunc(r.cidrs, c.prefix, comparePrefixes)
	for _, p := range r.cidrs[start:] {
		if !c.prefix.Contains(p.Addr()) {
			break
		}
		if p.Bits() < c.prefix.Bits() {
			continue
		}
		excluded := false
		for _, e := range c.except {
			if e.Bits() <= p.Bits() && e.Contains(p.Addr()) {
				excluded = true
				break
			}
		}
		if !excluded {
			out = append(out, r.cidrIDs[p])
		}
	}
	return out
}

// peers returns the peer identities of a section, sorted, without
// duplicates; [0] when the section allows or denies every peer.
func (r *resolver) peers(s *compiledSection) []labels.Identity {
	if s.anyPeer || slices.Contains(s.entities, EntityAll) {
		return []labels.Identity{labels.IdentityUnknown}
	}
	var out []labels.Identity
	for i, sel := range s.endpoints {
		out = append(out, r.match(sel, s.endpointKeys[i])...)
	}
	for _, e := range s.entities {
		switch e {
		case EntityHost:
			out = append(out, labels.IdentityHost)
		case EntityInit:
			out = append(out, labels.IdentityInit)
		case EntityWorld:
			out = append(out, r.world...)
		}
	}
	for _, c := range s.cidrs {
		out = r.inside(c, out)
	}
	if len(s.endpoints)+len(s.entities)+len(s.cidrs) > 1 {
		slices.Sort(out)
		out = slices.Compact(out)
	}
	return out
}
