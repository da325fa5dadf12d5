package firewall

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Family is an address family: which of iptables and ip6tables a rule
// goes to.
type Family int

// Address families.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string { return "IPv" + strconv.Itoa(int(f)) }

// tool is the command that programs the family.
func (f Family) tool() string {
	if f == IPv6 {
		return "ip6tables"
	}
	return "iptables"
}

func familyOf(a netip.Addr) Family {
	if a.Is4() || a.Is4In6() {
		return IPv4
	}
	return IPv6
}

// Proto is a transport protocol a port is published for, as iptables
// names it.
type Proto string

// Protocols Docker can publish.
const (
	TCP  Proto = "tcp"
	UDP  Proto = "udp"
	SCTP Proto = "sctp"
)

// Network is a membrane network as the firewall needs it.
type Network struct {
	ID       string
	IPv4     netip.Prefix // zero when the network has no IPv4
	IPv6     netip.Prefix // zero when the network has no IPv6
	Gateway4 netip.Addr   // invalid when none
	Gateway6 netip.Addr   // invalid when none
	// Internal networks reach nothing beyond themselves: no masquerade,
	// no published ports, and the FORWARD path drops their traffic.
	Internal bool
	// RoutedInbound lets connections from beyond the host reach the
	// containers' addresses; otherwise only published ports (DNAT) and
	// the replies to the containers' own connections come in.
	RoutedInbound bool
}

// Endpoint is a container interface with the ports it publishes.
type Endpoint struct {
	ID        string
	NetworkID string
	Interface string     // host side of its veth
	IPv4      netip.Addr // invalid when none
	IPv6      netip.Addr // invalid when none
	Ports     []Mapping
}

// Mapping is one published port: HostIP:HostPort on the host to the
// endpoint's Port.
type Mapping struct {
	Proto Proto
	// HostIP is where the port is published: the zero Addr means every
	// host address of both families (`-p 8080:80`), 0.0.0.0 or :: every
	// address of one family, anything else that address only.
	HostIP   netip.Addr
	HostPort uint16
	Port     uint16
}

// Families returns the address families the mapping publishes on.
func (m Mapping) Families() []Family {
	if !m.HostIP.IsValid() {
		return []Family{IPv4, IPv6}
	}
	return []Family{familyOf(m.HostIP)}
}

// String is the mapping as `docker port` would show it.
func (m Mapping) String() string {
	host := "*"
	if m.HostIP.IsValid() {
		host = m.HostIP.Unmap().String()
		if m.HostIP.Is6() && !m.HostIP.Is4In6() {
			host = "[" + host + "]"
		}
	}
	return fmt.Sprintf("%s:%d->%d/%s", host, m.HostPort, m.Port, m.Proto)
}

// State is everything Sync makes the kernel match.
type State struct {
	Networks  []Network
	Endpoints []Endpoint
}

// Names of the shared chains, jumped to from the built-in ones. They hold
// one jump per daemon into its own chains (and MEMBRANE-FORWARD the
// ACCEPTs of EnableForwarding, MEMBRANE-INPUT the loopback guard, the same
// for every daemon).
const (
	chainDNAT        = "MEMBRANE-DNAT"        // nat; from PREROUTING and OUTPUT, for local destinations
	chainPostrouting = "MEMBRANE-POSTROUTING" // nat; from POSTROUTING
	chainForward     = "MEMBRANE-FORWARD"     // filter; from FORWARD
	chainInput       = "MEMBRANE-INPUT"       // filter; from INPUT (IPv4 only)
)

const (
	tableNAT    = "nat"
	tableFilter = "filter"
	// maxChainName is the longest chain name iptables takes.
	maxChainName = 28
)

// chains are the names of one daemon's own chains.
type chains struct {
	dnat, post, fwd string
}

// instanceChains names the chains of the daemon called instance. The name
// is kept readable when it fits, hashed when it does not.
func instanceChains(instance string) chains {
	tag := sanitize(instance)
	if len("MBR-"+tag+"-DNAT") > maxChainName || tag != instance || tag == "" {
		sum := sha256.Sum256([]byte(instance))
		tag = hex.EncodeToString(sum[:4])
	}
	return chains{dnat: "MBR-" + tag + "-DNAT", post: "MBR-" + tag + "-POST", fwd: "MBR-" + tag + "-FWD"}
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '.', r == '-':
			return r
		}
		return '_'
	}, s)
}

// chainRules is the whole content of one chain.
type chainRules struct {
	table, chain string
	rules        [][]string // arguments after "-A chain"
}

// plan is the content of the chains Sync replaces whole for one family:
// the daemon's own, and MEMBRANE-INPUT, whose one rule is the same for
// every daemon.
func (c chains) plan(fam Family, ifWildcard string, s State) []chainRules {
	plan := []chainRules{
		{tableNAT, c.dnat, dnatRules(fam, s)},
		{tableNAT, c.post, postroutingRules(fam, ifWildcard, s.Networks)},
		{tableFilter, c.fwd, forwardRules(fam, s.Networks)},
	}
	if fam == IPv4 {
		plan = append(plan, chainRules{tableFilter, chainInput, [][]string{loopbackGuard(ifWildcard)}})
	}
	return plan
}

// loopbackGuard keeps containers away from the host's loopback services.
// route_localnet on a veth (see needsRouteLocalnet) makes 127.0.0.0/8
// routable on that interface: nothing addressed there is accepted from a
// membrane veth but the replies of connections the host made to a port
// published on 127.0.0.1.
func loopbackGuard(ifWildcard string) []string {
	return []string{"-d", loopback4.String(), "-i", ifWildcard,
		"-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED", "-j", "DROP"}
}

// subnetOf returns the network's subnet and gateway of the family.
func subnetOf(fam Family, nw Network) (netip.Prefix, netip.Addr) {
	if fam == IPv6 {
		return nw.IPv6, nw.Gateway6
	}
	return nw.IPv4, nw.Gateway4
}

// ulaPrefix is fc00::/7: unique local IPv6 addresses, which are not routed
// on the internet and so are masqueraded like private IPv4.
var ulaPrefix = netip.MustParsePrefix("fc00::/7")

var loopback4 = netip.MustParsePrefix("127.0.0.0/8")

// Masquerades reports whether traffic from the network's subnet of that
// family leaves the host masqueraded: IPv4 always, IPv6 when the subnet
// is unique local (fc00::/7; a global subnet is routed as it is), never
// for internal networks.
func Masquerades(fam Family, nw Network) bool {
	sub, _ := subnetOf(fam, nw)
	if nw.Internal || !sub.IsValid() {
		return false
	}
	return fam == IPv4 || ulaPrefix.Overlaps(sub)
}

// postroutingRules masquerade what leaves the host from each network that
// masquerades, and give host-originated connections to 127.0.0.1 that
// were DNATed to a container a source the container can answer: the
// network's gateway.
func postroutingRules(fam Family, ifWildcard string, nets []Network) [][]string {
	var out [][]string
	for _, nw := range sortedNetworks(nets) {
		sub, gw := subnetOf(fam, nw)
		if !sub.IsValid() || nw.Internal {
			continue
		}
		if Masquerades(fam, nw) {
			out = append(out, []string{"-s", sub.String(), "!", "-o", ifWildcard, "-j", "MASQUERADE"})
		}
		if fam == IPv4 {
			rule := []string{"-s", loopback4.String(), "-d", sub.String(), "-j"}
			if gw.IsValid() {
				rule = append(rule, "SNAT", "--to-source", gw.String())
			} else {
				rule = append(rule, "MASQUERADE")
			}
			out = append(out, rule)
		}
	}
	return out
}

// forwardRules guard the FORWARD path, ahead of the ACCEPTs of
// EnableForwarding. Internal networks are kept in: nothing from them and
// nothing to them crosses it. Into any other network comes what was
// published (DNAT), the replies and errors of the containers' own
// connections, and, with RoutedInbound only, new connections to the
// containers' addresses; the rest is dropped, as Docker's bridge does.
// Containers of one network reach each other in the datapath, without the
// host stack; the host reaches them and they reach the host (their
// gateway) through INPUT and OUTPUT, which this does not touch.
func forwardRules(fam Family, nets []Network) [][]string {
	var out [][]string
	for _, nw := range sortedNetworks(nets) {
		sub, _ := subnetOf(fam, nw)
		switch {
		case !sub.IsValid():
		case nw.Internal:
			out = append(out,
				[]string{"-s", sub.String(), "-j", "DROP"},
				[]string{"-d", sub.String(), "-j", "DROP"})
		case !nw.RoutedInbound:
			out = append(out, []string{"-d", sub.String(),
				"-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "DROP"})
		}
	}
	return out
}

// dnatRules publish the endpoints' ports of the family. Endpoints on
// internal networks publish nothing, as on Docker's bridge.
func dnatRules(fam Family, s State) [][]string {
	internal := map[string]bool{}
	for _, nw := range s.Networks {
		internal[nw.ID] = nw.Internal
	}
	var out [][]string
	for _, ep := range sortedEndpoints(s.Endpoints) {
		if internal[ep.NetworkID] {
			continue
		}
		for _, m := range ep.Ports {
			if rule := DNATRule(fam, m, ep); rule != nil {
				out = append(out, rule)
			}
		}
	}
	return out
}

// DNATRule is the rule that publishes m for ep in the family, or nil when
// m publishes nothing there (another family, or the endpoint has no
// address of this one).
func DNATRule(fam Family, m Mapping, ep Endpoint) []string {
	if !slices.Contains(m.Families(), fam) {
		return nil
	}
	dst := ep.IPv4
	if fam == IPv6 {
		dst = ep.IPv6
	}
	if !dst.IsValid() {
		return nil
	}
	var rule []string
	if m.HostIP.IsValid() && !m.HostIP.IsUnspecified() {
		host := m.HostIP.Unmap()
		rule = append(rule, "-d", netip.PrefixFrom(host, host.BitLen()).String())
	}
	to := netip.AddrPortFrom(dst.Unmap(), m.Port).String()
	return append(rule, "-p", string(m.Proto), "-m", string(m.Proto), "--dport", strconv.Itoa(int(m.HostPort)),
		"-j", "DNAT", "--to-destination", to)
}

// reachesLoopback reports whether m publishes on 127.0.0.1 (or another
// loopback address): the endpoint's veth then needs route_localnet, so
// that DNATed packets from 127.0.0.1 may leave through it.
func reachesLoopback(m Mapping) bool {
	if !m.HostIP.IsValid() {
		return true
	}
	h := m.HostIP.Unmap()
	return h.Is4() && (h.IsUnspecified() || loopback4.Contains(h))
}

// needsRouteLocalnet reports whether ep publishes a port on IPv4 loopback.
func needsRouteLocalnet(ep Endpoint, internal bool) bool {
	if internal || !ep.IPv4.IsValid() {
		return false
	}
	return slices.ContainsFunc(ep.Ports, reachesLoopback)
}

// jump is a rule in a built-in or shared chain that leads to one of
// membrane's chains.
type jump struct {
	table, chain string
	rule         []string
}

// structure is what Sync checks outside the chains it replaces: the shared
// chains that hold the jumps of every daemon, and the jumps into them and
// into the daemon's own chains. Jumps are inserted first in their chain.
func (c chains) structure(fam Family) (shared []chainRules, jumps []jump) {
	shared = []chainRules{
		{table: tableNAT, chain: chainDNAT},
		{table: tableNAT, chain: chainPostrouting},
		{table: tableFilter, chain: chainForward},
	}
	localOutput := []string{"-m", "addrtype", "--dst-type", "LOCAL", "-j", chainDNAT}
	if fam == IPv6 {
		// IPv6 has no route_localnet: a packet from ::1 never leaves the
		// host, so [::1] is not published (a connection to it is refused
		// rather than lost).
		localOutput = append([]string{"!", "-d", "::1/128"}, localOutput...)
	}
	jumps = []jump{
		{tableNAT, "PREROUTING", []string{"-m", "addrtype", "--dst-type", "LOCAL", "-j", chainDNAT}},
		{tableNAT, "OUTPUT", localOutput},
		{tableNAT, "POSTROUTING", []string{"-j", chainPostrouting}},
		{tableFilter, "FORWARD", []string{"-j", chainForward}},
		{tableNAT, chainDNAT, []string{"-j", c.dnat}},
		{tableNAT, chainPostrouting, []string{"-j", c.post}},
		{tableFilter, chainForward, []string{"-j", c.fwd}},
	}
	if fam == IPv4 {
		jumps = append(jumps, jump{tableFilter, "INPUT", []string{"-j", chainInput}})
	}
	return shared, jumps
}

// restoreInput renders chains for iptables-restore --noflush: each chain
// named is created or emptied, then filled, in one transaction per table.
func restoreInput(plan []chainRules) []byte {
	var b strings.Builder
	var tables []string
	for _, c := range plan {
		if !slices.Contains(tables, c.table) {
			tables = append(tables, c.table)
		}
	}
	for _, table := range tables {
		fmt.Fprintf(&b, "*%s\n", table)
		for _, c := range plan {
			if c.table == table {
				fmt.Fprintf(&b, ":%s - [0:0]\n", c.chain)
			}
		}
		for _, c := range plan {
			if c.table != table {
				continue
			}
			for _, r := range c.rules {
				fmt.Fprintf(&b, "-A %s %s\n", c.chain, strings.Join(r, " "))
			}
		}
		b.WriteString("COMMIT\n")
	}
	return []byte(b.String())
}

func sortedNetworks(nets []Network) []Network {
	out := slices.Clone(nets)
	slices.SortFunc(out, func(a, b Network) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func sortedEndpoints(eps []Endpoint) []Endpoint {
	out := slices.Clone(eps)
	slices.SortFunc(out, func(a, b Endpoint) int { return strings.Compare(a.ID, b.ID) })
	return out
}
