// Package policy reads label-based L3/L4 policy rules in Cilium's rule
// format and resolves them into the keys of the datapath's policy map.
//
// # Reading rules
//
// Parse takes a JSON or YAML document (an array of rules, or one rule) and
// either returns every rule, checked and normalized, or returns none and
// an error naming each offending field by its path, such as
// "[0].ingress[1].toPorts[0].ports[0].port". Unknown fields are errors, so
// a misspelt section never turns into "allow everything". Canonical gives
// the JSON a rule is stored as; Name gives its "name" label.
//
// # What a rule means
//
// A rule applies to the endpoints its endpointSelector selects (the
// subjects). Its ingress section lists traffic the subjects may receive,
// egress traffic they may send; ingressDeny and egressDeny list traffic
// they must not. Traffic from A to B passes when A's egress and B's
// ingress both let it; replies of a passed connection are the datapath's
// business (connection tracking), not policy's.
//
// Default deny. A subject is open in a direction until some rule that
// selects it has a non-empty section in that direction; from then on only
// what some rule allows passes. As in Cilium, a deny section counts too: a
// rule with only ingressDeny also closes ingress to everything it does not
// allow. A rule opts out per direction with enableDefaultDeny
// {"ingress": false}, which makes a deny-only rule subtract traffic
// without closing anything else (Cilium's field, same meaning).
//
// Union and precedence. Rules add up: traffic passes when any rule
// allows it and no rule denies it. Deny always beats allow, whatever the
// order or specificity of the rules.
//
// Peers. Within one ingress or egress entry, the peer lists say who:
// fromEndpoints/toEndpoints (label selectors over endpoints),
// fromEntities/toEntities, fromCIDR/toCIDR, fromCIDRSet/toCIDRSet. As in
// Cilium, only one kind of list may appear in an entry (write two entries
// for two kinds). An entry without any peer list matches every peer, so
// {"toPorts": [...]} opens those ports to everyone and {} opens
// everything. A peer list that is present but empty matches no peer:
// {"fromEntities": []} closes a direction without allowing anything.
//
// toPorts and icmps say what; an entry with neither matches every
// protocol and port. A port is a number 0-65535 (a string or a JSON
// number; names such as "http" are refused), port 0 is every port of its
// protocol, and endPort makes a range of at most MaxPortRange ports.
// protocol is TCP, UDP, SCTP or ANY (the default): ANY is the three of
// them, except that ANY with port 0 is every IP protocol, ICMP included.
// icmps lists ICMP (family IPv4, the default) or ICMPv6 (family IPv6)
// message types by number or by Cilium's names ("EchoRequest"). As in
// Cilium, toPorts and icmps cannot share an entry. L7 rules are refused.
//
// Entities. host is the host itself (identity 1). world is everything
// that is neither a membrane endpoint nor the host: the world identity
// (2) and every CIDR identity. all is every peer there is: the key's
// wildcard peer 0. init is endpoints whose labels are not known yet
// (identity 5). Cilium's other entities (cluster, remote-node, health,
// ...) have no meaning here and are refused.
//
// Endpoint selectors. An endpointSelector or fromEndpoints selector
// matches endpoint identities by their labels; keys are Docker label keys,
// optionally prefixed "container:". The empty selector {} matches every
// endpoint identity, and only those: unlike Cilium outside Kubernetes,
// where {} also matches the host and world, here those are reached with
// entities only. Reserved labels ("reserved:host") cannot be selected; use
// the entities. No selector matches init: an endpoint whose labels are
// unknown is never a subject (the datapath denies it everything but
// address resolution) and is a peer only through the init or all entity.
//
// CIDRs. CIDR peers are addresses outside membrane: the datapath's ipcache
// maps an address to the identity of the most specific prefix any rule
// names (each needs a CIDR identity, see CIDRs), or to world when none
// contains it; endpoint and host addresses keep their own identities, so a
// CIDR that covers endpoints does not select them (endpoints are selected
// by labels). fromCIDR X therefore selects every CIDR identity whose
// prefix lies inside X, X's own included: whichever prefix the lookup
// lands on for an address in X, every rule that covers that address lists
// its identity. fromCIDRSet {cidr X, except E...} selects the CIDR
// identities inside X and inside none of E; since every except prefix has
// an identity, addresses in E land on an identity the rule does not list.
//
// # Resolution
//
// Resolve expands the rules over the identities that exist into Keys
// (subject, peer, protocol, port, direction) with an Allow or Deny
// Verdict, and an Enforcement (default deny per direction) for every
// subject a rule selects. Deny overwrites Allow on the same key; the
// datapath makes deny win across keys by looking up six keys per packet,
// from the exact one to the full wildcard (see Key). ICMP keys carry the
// message type in Port as ICMPPort(type), so that type 0 is not confused
// with "every type". Evaluate is an independent, slow reference of the
// same semantics for tests.
//
// Index gives the same result as Resolve, kept up to date one rule at a
// time: rules are added, replaced and deleted by name, identities
// replaced, and each change resolves only the rules it can concern; the
// keys and enforcement that changed come out of Changes, for the
// datapath's incremental update. Encode writes a parsed rule's canonical
// JSON without reflection.
package policy
