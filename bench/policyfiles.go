package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Labels of the policy setup's containers. Rules select them by both keys,
// so no rule ever touches another setup's containers.
var (
	serverLabels = map[string]string{"mbrbench.setup": "policy", "mbrbench.role": "server"}
	clientLabels = map[string]string{"mbrbench.setup": "policy", "mbrbench.role": "client"}
)

// protoPort is one port of one protocol.
type protoPort struct {
	proto string // "TCP", "UDP"
	port  int
}

// measuredPorts are what the traffic tools use: the rule that allows
// them must be the one that matches, so no filler rule may name them.
var measuredPorts = []protoPort{{"TCP", portRR}, {"TCP", portControl}, {"TCP", portIperf}, {"UDP", portUDP}}

// addOnePort is the port of the rule added to N rules; no filler names it.
var addOnePort = protoPort{"UDP", 65535}

// fillerPorts returns n distinct (protocol, port) pairs that neither the
// measured ports nor addOnePort are among: TCP 1-65535 first, then UDP.
// Distinct pairs make distinct policy-map entries (and distinct iptables
// rules), so n rules cost n entries.
func fillerPorts(n int) []protoPort {
	skip := map[protoPort]bool{addOnePort: true, {"TCP", portProbe}: true}
	for _, p := range measuredPorts {
		skip[p] = true
	}
	out := make([]protoPort, 0, n)
	for _, proto := range []string{"TCP", "UDP"} {
		for port := 1; port <= 65535 && len(out) < n; port++ {
			if pp := (protoPort{proto, port}); !skip[pp] {
				out = append(out, pp)
			}
		}
	}
	if len(out) < n {
		panic(fmt.Sprintf("fillerPorts: %d rules asked, only %d distinct ports", n, len(out)))
	}
	return out
}

// Cilium-format rule, as much of it as the benchmark writes.
type rule struct {
	Labels           []ruleLabel  `json:"labels"`
	EndpointSelector selector     `json:"endpointSelector"`
	Ingress          []peerRule   `json:"ingress,omitempty"`
	IngressDeny      []peerRule   `json:"ingressDeny,omitempty"`
	Egress           []egressRule `json:"egress,omitempty"`
}

type ruleLabel struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type selector struct {
	MatchLabels map[string]string `json:"matchLabels"`
}

type peerRule struct {
	FromEndpoints []selector `json:"fromEndpoints"`
	ToPorts       []portRule `json:"toPorts"`
}

type egressRule struct {
	ToEndpoints []selector `json:"toEndpoints"`
	ToPorts     []portRule `json:"toPorts"`
}

type portRule struct {
	Ports []portProtocol `json:"ports"`
}

type portProtocol struct {
	Port     string `json:"port"`
	Protocol string `json:"protocol"`
}

func named(name string) []ruleLabel { return []ruleLabel{{Key: "name", Value: name}} }

func ports(pps ...protoPort) []portRule {
	var ps []portProtocol
	for _, p := range pps {
		ps = append(ps, portProtocol{Port: strconv.Itoa(p.port), Protocol: p.proto})
	}
	return []portRule{{Ports: ps}}
}

// serverIngress lets the client reach the server on pps.
func serverIngress(name string, pps ...protoPort) rule {
	return rule{
		Labels:           named(name),
		EndpointSelector: selector{serverLabels},
		Ingress:          []peerRule{{FromEndpoints: []selector{{clientLabels}}, ToPorts: ports(pps...)}},
	}
}

// Rule names the harness imports.
const (
	ruleAllowIngress = "bench-allow-ingress"
	ruleAllowEgress  = "bench-allow-egress"
	ruleAddOne       = "bench-add-one"
	ruleProbeAllow   = "bench-probe-allow"
	ruleProbeDeny    = "bench-probe-deny"
)

// allowRules is the policy setup's policy: the server admits exactly the
// measured ports from the client, and the client may send exactly those
// (and the probe port) to the server, so both ingress and egress are
// enforced.
func allowRules() []rule {
	egressPorts := append([]protoPort{{"TCP", portProbe}}, measuredPorts...)
	return []rule{
		serverIngress(ruleAllowIngress, measuredPorts...),
		{
			Labels:           named(ruleAllowEgress),
			EndpointSelector: selector{clientLabels},
			Egress:           []egressRule{{ToEndpoints: []selector{{serverLabels}}, ToPorts: ports(egressPorts...)}},
		},
	}
}

// scaleRules is n rules selecting the server's ingress: n-1 fillers, each
// admitting the client on a port the tools do not use, then the rule that
// admits the measured ports.
func scaleRules(n int) []rule {
	rules := make([]rule, 0, n)
	for i, pp := range fillerPorts(n - 1) {
		rules = append(rules, serverIngress(fmt.Sprintf("bench-filler-%d", i), pp))
	}
	return append(rules, serverIngress(ruleAllowIngress, measuredPorts...))
}

func addOneRules() []rule { return []rule{serverIngress(ruleAddOne, addOnePort)} }

func probeAllowRules() []rule {
	return []rule{serverIngress(ruleProbeAllow, protoPort{"TCP", portProbe})}
}

func probeDenyRules() []rule {
	return []rule{{
		Labels:           named(ruleProbeDeny),
		EndpointSelector: selector{serverLabels},
		IngressDeny:      []peerRule{{FromEndpoints: []selector{{clientLabels}}, ToPorts: ports(protoPort{"TCP", portProbe})}},
	}}
}

func writeRules(path string, rules []rule) error {
	b, err := json.Marshal(rules)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write policy %s: %w", filepath.Base(path), err)
	}
	return nil
}

// iptablesRules is an iptables-restore input for the router namespace: n-1
// stateless filler rules that never match the measured flow, then the
// rules that match it (one per direction, since nothing is tracked),
// in FORWARD with policy DROP. n == 0 is the routed baseline: no rule,
// policy ACCEPT.
func iptablesRules(n int, client, server string) string {
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	if n == 0 {
		b.WriteString(":FORWARD ACCEPT [0:0]\nCOMMIT\n")
		return b.String()
	}
	b.WriteString(":FORWARD DROP [0:0]\n")
	for _, pp := range fillerPorts(n - 1) {
		fmt.Fprintf(&b, "-A FORWARD -s %s -d %s -p %s --dport %d -j ACCEPT\n", client, server, strings.ToLower(pp.proto), pp.port)
	}
	fmt.Fprintf(&b, "-A FORWARD -s %s -d %s -p tcp --dport %d -j ACCEPT\n", client, server, portRR)
	fmt.Fprintf(&b, "-A FORWARD -s %s -d %s -p tcp --sport %d -j ACCEPT\n", server, client, portRR)
	b.WriteString("COMMIT\n")
	return b.String()
}

// iptablesAddOne is the rule added to n rules.
func iptablesAddOne(client, server string) []string {
	return []string{"-A", "FORWARD", "-s", client, "-d", server, "-p", "udp", "--dport", strconv.Itoa(addOnePort.port), "-j", "ACCEPT"}
}
