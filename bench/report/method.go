package report

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/membrane-net/membrane/bench/netload"
	"github.com/membrane-net/membrane/bench/record"
)

// writeMethod says how every figure was taken, with this run's parameters.
func writeMethod(b *bytes.Buffer, run *record.Run) {
	d := time.Duration(run.MeasureSeconds * float64(time.Second))
	var rules []string
	for _, n := range run.RuleCounts {
		rules = append(rules, strconv.Itoa(n))
	}
	var eps []string
	for _, n := range run.EndpointCounts {
		eps = append(eps, strconv.Itoa(n))
	}
	fmt.Fprintf(b, `## Method

**Setups.** The harness builds everything it measures and removes it at the end: a private dockerd (own data-root, exec-root, socket, empty config file, iptables on as users run it, and ip6tables too: `+"`--experimental --ip6tables`"+`, without which Docker 20.10 programs nothing for a dual-stack bridge's IPv6) and a private membrane daemon (plugin `+"`membrane-bench`"+`, host device `+"`mbrbn0`"+`, pins under `+"`/sys/fs/bpf/membrane-bench`"+`), built from the working tree.

- *raw veth*: two fresh network namespaces joined by a veth pair, an IPv4 and an IPv6 address on each end (the IPv6 ones added with `+"`nodad`"+`, usable at once) — the floor.
- *raw veth + Docker's container rules* (IPv4 only): a second such pair whose two namespaces hold exactly the nat table Docker wrote into the *membrane* setup's client and server containers, copied with `+"`iptables-save -t nat`"+` and loaded with `+"`iptables-restore`"+` (the host's `+"`iptables`"+`, which is the one Docker runs; see below) — the floor plus what Docker puts inside every container.
- *Docker bridge*: two containers on a user-defined bridge network of the private dockerd, created dual-stack (`+"`--ipv6`"+`, an IPv4 /24 and an IPv6 ULA /64 of the harness's address plan); br_netfilter and Docker's iptables and ip6tables rules are in the path, as installed.
- *membrane*: two containers on a membrane network, dual-stack like every membrane network (subnets of the address plan); no rule selects them.
- *membrane + policy*: two containers on another membrane network, with a policy that allows exactly the ports the tools use: the server's ingress admits the client on them, the client's egress admits the server on them, so both directions are enforced (over both families: the rules name labels and ports, not addresses).

**Address families.** %s Each container has the same host number in both families (client .10 and ::10, server .11 and ::11). The IPv4 figures are taken exactly as before IPv6 was added (same servers, same series); the IPv6 ones are separate series, ratios and targets. Policy scale, the iptables comparison and the rule installs are IPv4 only, and the control-plane timings dial over IPv4. All traffic flows only between namespaces and containers the harness created.

**Docker's rules inside every container.** Docker answers DNS for a user-defined network itself, at 127.0.0.11 inside each container. To get queries for port 53 there to the port its resolver really listens on, it writes nat rules into the container's own network namespace: `+"`-A OUTPUT -d 127.0.0.11/32 -j DOCKER_OUTPUT`"+` and `+"`-A POSTROUTING -d 127.0.0.11/32 -j DOCKER_POSTROUTING`"+`, a DNAT of TCP and UDP port 53 in the first chain and the SNAT back in the second. It does so for every container on such a network, whichever the driver: the Docker bridge and membrane containers carry the same rules. Only DNS traffic ever matches them, yet their presence is what counts: a namespace with a nat table gets connection tracking, so the kernel looks up (and for a new flow creates) a conntrack entry for every IPv4 packet sent or received in it. Between two containers each IPv4 flow is thus tracked twice, once in each container, which the bare namespaces of *raw veth* never do. There is no ip6tables counterpart inside the container, so IPv6 flows are not tracked there. The table *conntrack entries one new connection adds in the client's namespace* shows this directly: at setup, once per setup and family, a 300 ms connect/request/response load runs between two reads of the client namespace's `+"`net.netfilter.nf_conntrack_count`"+`, and the growth is divided by the connections made (1: each connection tracked; 0: none). Two comparisons follow from it, neither of them a target: membrane ÷ *raw veth + Docker's container rules* over IPv4 sets membrane against a floor that pays the same per-container cost, and the IPv6 ratios ÷ *raw veth* compare paths where neither side pays it. The targets stay membrane ÷ raw veth, per family.

**Tools.** The same binaries run in every setup, on the host, entered into the client's or the server's network namespace with `+"`nsenter --net`"+` and pinned with `+"`taskset`"+`: client on CPU %d, server on CPU %d. Throughput is iperf3 (`+"`-P 1`"+` and `+"`-P 2`"+`, %s, received bits per second from its JSON report). The rest is `+"`membrane-netload`"+` (static Go, plain blocking sockets, two system calls per transaction per side): *request/response* is one persistent TCP connection carrying a 1-byte request and a 1-byte response at a time (rate, p50 and p99 latency); *connect/request/response* opens a connection, sends 1 byte, reads 1 byte and closes, one connection at a time (the server closes first, as an HTTP/1.0 server does); *UDP* sends 64-byte datagrams as fast as one sender can and counts them at the receiver between its first and last datagram.

**Rounds.** %d round(s); each round runs every (setup, family, measurement) triple once, in a random order drawn from the seed (%d). Measurements that need a membrane policy state are grouped by it, so each state (up to %s rules) is installed once per round; the groups come in a random order and every other measurement joins a random group; the datapath comparison runs in the policy setup's state. Ratios (membrane ÷ raw veth, membrane ÷ bridge, each within one family; N rules ÷ 0 rules) are computed within each round, then summarised over rounds: median, interquartile range and min–max. Absolute figures are summarised the same way.

**CPU time per unit of work.** %s

**Policy scale.** *membrane*: N rules in Cilium's format select the server (ingress from the client), each on its own port and protocol (TCP 1–65535, then UDP), so each makes its own policy-map entry; the rule that admits the measured ports is imported last. 0 rules means no policy at all (nothing enforced). Rules are imported with `+"`membrane policy import`"+` after `+"`membrane policy delete --all`"+`; the request/response and connect rates are then measured between the policy setup's containers. *iptables*: a client namespace and a server namespace routed through a router namespace (client ⇄ router ⇄ server); the router's FORWARD chain, policy DROP, holds N−1 stateless rules that never match the measured flow (`+"`-s CLIENT -d SERVER -p tcp|udp --dport P -j ACCEPT`"+`, distinct ports), then the matching rules last, one per direction. Nothing uses conntrack state (no ESTABLISHED shortcut), so every packet walks the whole chain, as every packet of a flow crosses it once. The same router with no rule and policy ACCEPT is the 0-rule baseline. Both `+"`iptables-legacy`"+` and `+"`iptables-nft`"+` are measured, each in its own router namespace; the host's own tables are never touched. N: %s.

**Installing rules.** *membrane policy import*: wall time of the CLI importing N rules into an empty policy (the daemon answers once the new revision is applied to the datapath: parse, store, checkpoint to disk, resolve, sync the maps), and of importing one more rule on top of N. *membrane datapath*: `+"`datapath.SyncPolicy`"+` called in the harness's own process on its own pinned maps, with the entries the N rules resolve to (N−1 filler entries, 4 for the measured ports), then one more entry. *iptables*: `+"`iptables-restore`"+` of the N-rule table into an empty one, then `+"`iptables -A`"+` of one rule, in a scratch namespace, wall time.

**Control plane.** *docker run → first connect*: from the start of `+"`docker run -d`"+` of a container serving TCP (`+"`membrane-netload serve`"+`, bind-mounted) with a fixed IPv4 address, until a client already on the network first connects to it over IPv4; the poller starts when `+"`docker run -d`"+` returns and dials every 2 ms, each attempt a new flow. It is timed on four networks: each driver's dual-stack network (the datapath setups' Docker bridge and membrane networks, the client their client container) and an IPv4-only network of each driver (a bridge network without `+"`--ipv6`"+`; a membrane network with `+"`-o membrane.ipv4-only=true`"+`), each with a client container of its own. The target compares the dual-stack networks, like with like: on a network with IPv6 Docker also sets up IPv6 in the new container's sandbox, which takes time of its own whatever the driver; the IPv4-only pair is shown as a comparison. Samples of the four networks come in a random order; the container is removed after each. On membrane this includes the time until the new container's labels give it an identity (until then it may only do ARP and neighbour discovery); the daemon's own Docker calls are read from its debug log after each membrane sample. *policy import → enforced*: a poller dials the policy server's probe port every 2 ms (each attempt a new flow, 200 ms to connect) while a rule is imported that admits the client on it, until a connect passes; then while a deny rule for the port is imported, until %d attempts in a row fail (the time is when the first of them started); timed from the start of the import, so it includes the CLI. *per-endpoint attach*: `+"`datapath.Attach`"+` of a new endpoint (program load with its constants, map entries, two tcx links pinned), in-process on veth pairs of a namespace of its own, each timed, in two kinds: on veths prepared ahead (`+"`datapath.Prepare`"+` attached the placeholder program, untimed), which is what the daemon's spare veth pairs give a new container, so the endpoint's programs replace the placeholder; and on fresh veths, where both tcx links are created, which is what a container gets when a burst of starts has used the spares up (each creation waits for a kernel RCU grace period while holding the RTNL lock); the daemon's `+"`CreateEndpoint`"+` call (veth pair, routes, state checkpoint, attach) is read from its debug log while containers are created, %d at a time. *Memory*: the daemon is restarted after the rounds (its RSS before the restart is listed: the high-water mark of the largest imports), then its VmRSS and the kernel memory (`+"`bytes_memlock`"+`) of its BPF maps (pinned under its directory, plus the per-program constant maps) and programs (every program using its maps), with %s endpoints: busybox containers running `+"`sleep`"+` on a membrane network, all with the same labels.

`, familiesText(run), run.ClientCPU, run.ServerCPU, d, run.Rounds, run.Seed, maxOf(rules), cpuText(run), strings.Join(rules, ", "), netload.ClosedRun, run.CreateParallelism, strings.Join(eps, ", "))
}

// cpuText says what the datapath's CPU time per unit of work is and why
// it is shown, or that the run's record has none.
func cpuText(run *record.Run) string {
	if !slices.ContainsFunc(run.Figures, func(f record.Figure) bool { return strings.Contains(f.Unit, " CPU/") }) {
		return "This run's record has none: it predates the figure."
	}
	return "Just before and just after the client of each datapath load runs, the harness reads the machine's busy CPU time from `/proc/stat` " +
		"(user, nice, system, irq and softirq time of every CPU; idle, iowait and the hypervisor's steal left out) and divides the difference by the load's work: " +
		"transactions, connections, datagrams received, or gigabytes (10⁹ bytes) received for TCP. " +
		"With client and server on CPUs of their own and nothing else running but the daemons, that is the CPU the path spends per unit of work, " +
		"both ends and the kernel's softirq processing included; it varies less than the rates on a shared VM, where a round that waits longer " +
		"(other guests, slow wakeups) loses rate but spends about the same CPU per transaction. " +
		"Lower is better, for the figures and for their ratios, which are taken round by round like the rates'."
}

func maxOf(ns []string) string {
	if len(ns) == 0 {
		return "0"
	}
	return ns[len(ns)-1]
}

// familiesText says which setups and loads ran over which family, and
// why a load is missing from one.
func familiesText(run *record.Run) string {
	if len(run.Datapath) == 0 {
		return "This run's record does not say which address families it measured (it predates them): its datapath figures are IPv4."
	}
	var parts []string
	all := map[string]bool{}
	for _, f := range run.Datapath {
		for _, l := range f.Loads {
			all[l] = true
		}
	}
	for _, f := range run.Datapath {
		parts = append(parts, fmt.Sprintf("over %s (addresses from %s): %s; loads: %s.", f.Family, f.Prefix, strings.Join(f.Setups, ", "), strings.Join(f.Loads, ", ")))
	}
	text := "The datapath loads run " + strings.Join(parts, " Then ")
	for _, f := range run.Datapath {
		var missing []string
		for l := range all {
			if !slices.Contains(f.Loads, l) {
				missing = append(missing, l)
			}
		}
		slices.Sort(missing)
		if len(missing) > 0 {
			text += fmt.Sprintf(" %s is not run over %s: leaving it out keeps the full run near half an hour (`-ipv6-udp` adds it).", strings.Join(missing, ", "), f.Family)
		}
	}
	return text
}
