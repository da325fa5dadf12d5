package bench

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestFillerPortsAreDistinctAndAvoidTheMeasuredOnes(t *testing.T) {
	ports := fillerPorts(100000)
	seen := map[protoPort]bool{}
	avoid := map[protoPort]bool{addOnePort: true, {"TCP", portProbe}: true}
	for _, p := range measuredPorts {
		avoid[p] = true
	}
	for _, p := range ports {
		if seen[p] {
			t.Fatalf("port %v twice", p)
		}
		if avoid[p] {
			t.Fatalf("filler uses %v, which the tools or the added rule use", p)
		}
		seen[p] = true
	}
	if len(ports) != 100000 {
		t.Fatalf("%d ports, want 100000", len(ports))
	}
}

func TestScaleRulesEndWithTheMatchingRule(t *testing.T) {
	rules := scaleRules(3)
	if len(rules) != 3 {
		t.Fatalf("%d rules, want 3", len(rules))
	}
	last := rules[2]
	if last.Labels[0].Value != ruleAllowIngress || len(last.Ingress[0].ToPorts[0].Ports) != len(measuredPorts) {
		t.Errorf("last rule %+v, want %s with the measured ports", last, ruleAllowIngress)
	}
	b, err := json.Marshal(rules)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"endpointSelector":{"matchLabels":{"mbrbench.role":"server","mbrbench.setup":"policy"}}`) {
		t.Errorf("rules do not select the policy setup's server: %s", b)
	}
}

func TestIptablesRulesPutTheMatchingRulesLast(t *testing.T) {
	out := iptablesRules(3, "10.0.0.1", "10.0.0.6")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{
		"*filter", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]",
		"-A FORWARD -s 10.0.0.1 -d 10.0.0.6 -p tcp --dport 1 -j ACCEPT",
		"-A FORWARD -s 10.0.0.1 -d 10.0.0.6 -p tcp --dport 2 -j ACCEPT",
		"-A FORWARD -s 10.0.0.1 -d 10.0.0.6 -p tcp --dport 7000 -j ACCEPT",
		"-A FORWARD -s 10.0.0.6 -d 10.0.0.1 -p tcp --sport 7000 -j ACCEPT",
		"COMMIT",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("iptablesRules(3) =\n%s\nwant\n%s", out, strings.Join(want, "\n"))
	}
	if base := iptablesRules(0, "a", "b"); !strings.Contains(base, ":FORWARD ACCEPT") || strings.Contains(base, "-A FORWARD") {
		t.Errorf("the 0-rule baseline must accept without rules:\n%s", base)
	}
}
