package report

import (
	"bytes"
	"fmt"
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

**Setups.** The harness builds everything it measures and removes it at the end: a private dockerd (own data-root, exec-root, socket, empty config file, iptables on as users run it) and a private membrane daemon (plugin `+"`membrane-bench`"+`, host device `+"`mbrbn0`"+`, pins under `+"`/sys/fs/bpf/membrane-bench`"+`), built from the working tree.

- *raw veth*: two fresh network namespaces joined by a veth pair — the floor.
- *Docker bridge*: two containers on a user-defined bridge network of the private dockerd (br_netfilter and Docker's iptables rules in the path, as installed).
- *membrane*: two containers on a membrane network; no rule selects them.
- *membrane + policy*: two containers on another membrane network, with a policy that allows exactly the ports the tools use: the server's ingress admits the client on them, the client's egress admits the server on them, so both directions are enforced.

All traffic is IPv4 (Docker's bridge network is IPv4 by default; membrane's IPv4 and IPv6 paths are the same programs). It only flows between namespaces and containers the harness created.

**Tools.** The same binaries run in every setup, on the host, entered into the client's or the server's network namespace with `+"`nsenter --net`"+` and pinned with `+"`taskset`"+`: client on CPU %d, server on CPU %d. Throughput is iperf3 (`+"`-P 1`"+` and `+"`-P 2`"+`, %s, received bits per second from its JSON report). The rest is `+"`membrane-netload`"+` (static Go, plain blocking sockets, two system calls per transaction per side): *request/response* is one persistent TCP connection carrying a 1-byte request and a 1-byte response at a time (rate, p50 and p99 latency); *connect/request/response* opens a connection, sends 1 byte, reads 1 byte and closes, one connection at a time (the server closes first, as an HTTP/1.0 server does); *UDP* sends 64-byte datagrams as fast as one sender can and counts them at the receiver between its first and last datagram.

**Rounds.** %d round(s); each round runs every (setup, measurement) pair once, in a random order drawn from the seed (%d). Measurements that need a membrane policy state are grouped by it, so each state (up to %s rules) is installed once per round; the groups come in a random order and every other measurement joins a random group; the datapath comparison runs in the policy setup's state. Ratios (membrane ÷ raw veth, membrane ÷ bridge, N rules ÷ 0 rules) are computed within each round, then summarised over rounds: median, interquartile range and min–max. Absolute figures are summarised the same way.

**Policy scale.** *membrane*: N rules in Cilium's format select the server (ingress from the client), each on its own port and protocol (TCP 1–65535, then UDP), so each makes its own policy-map entry; the rule that admits the measured ports is imported last. 0 rules means no policy at all (nothing enforced). Rules are imported with `+"`membrane policy import`"+` after `+"`membrane policy delete --all`"+`; the request/response and connect rates are then measured between the policy setup's containers. *iptables*: a client namespace and a server namespace routed through a router namespace (client ⇄ router ⇄ server); the router's FORWARD chain, policy DROP, holds N−1 stateless rules that never match the measured flow (`+"`-s CLIENT -d SERVER -p tcp|udp --dport P -j ACCEPT`"+`, distinct ports), then the matching rules last, one per direction. Nothing uses conntrack state (no ESTABLISHED shortcut), so every packet walks the whole chain, as every packet of a flow crosses it once. The same router with no rule and policy ACCEPT is the 0-rule baseline. Both `+"`iptables-legacy`"+` and `+"`iptables-nft`"+` are measured, each in its own router namespace; the host's own tables are never touched. N: %s.

**Installing rules.** *membrane policy import*: wall time of the CLI importing N rules into an empty policy (the daemon answers once the new revision is applied to the datapath: parse, store, checkpoint to disk, resolve, sync the maps), and of importing one more rule on top of N. *membrane datapath*: `+"`datapath.SyncPolicy`"+` called in the harness's own process on its own pinned maps, with the entries the N rules resolve to (N−1 filler entries, 4 for the measured ports), then one more entry. *iptables*: `+"`iptables-restore`"+` of the N-rule table into an empty one, then `+"`iptables -A`"+` of one rule, in a scratch namespace, wall time.

**Control plane.** *docker run → first connect*: from the start of `+"`docker run -d`"+` of a container serving TCP (`+"`membrane-netload serve`"+`, bind-mounted) with a fixed address, until a client already on the network (the setup's client container) first connects; the poller starts when `+"`docker run -d`"+` returns and dials every 2 ms, each attempt a new flow. Samples alternate drivers in a random order; the container is removed after each. On membrane this includes the time until the new container's labels give it an identity (until then it may only do ARP and neighbour discovery). *policy import → enforced*: a poller dials the policy server's probe port every 2 ms (each attempt a new flow, 200 ms to connect) while a rule is imported that admits the client on it, until a connect passes; then while a deny rule for the port is imported, until %d attempts in a row fail (the time is when the first of them started); timed from the start of the import, so it includes the CLI. *per-endpoint attach*: `+"`datapath.Attach`"+` of a new endpoint (program load with its constants, two tcx links created and pinned, map entries), in-process on veth pairs of a namespace of its own, each timed; the daemon's `+"`CreateEndpoint`"+` call (veth pair, routes, state checkpoint, attach) is read from its debug log while containers are created, %d at a time. *Memory*: the daemon is restarted after the rounds (its RSS before the restart is listed: the high-water mark of the largest imports), then its VmRSS and the kernel memory (`+"`bytes_memlock`"+`) of its BPF maps (pinned under its directory, plus the per-program constant maps) and programs (every program using its maps), with %s endpoints: busybox containers running `+"`sleep`"+` on a membrane network, all with the same labels.

`, run.ClientCPU, run.ServerCPU, d, run.Rounds, run.Seed, maxOf(rules), strings.Join(rules, ", "), netload.ClosedRun, run.CreateParallelism, strings.Join(eps, ", "))
}

func maxOf(ns []string) string {
	if len(ns) == 0 {
		return "0"
	}
	return ns[len(ns)-1]
}
