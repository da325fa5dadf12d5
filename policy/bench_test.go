package policy

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"

	"github.com/membrane-net/membrane/labels"
)

// benchInput is n rules over n/10 endpoint identities: each rule lets one
// app reach another on a TCP port and reach a /24 of its own on 443, as a
// large installation of per-service rules would.
func benchInput(b *testing.B, n int) ([]byte, Input) {
	b.Helper()
	apps := max(n/10, 1)
	ids := make(map[labels.Identity]labels.Labels, apps)
	for i := range apps {
		ids[labels.MinUserIdentity+labels.Identity(i)] = labels.Labels{"app": fmt.Sprint("app", i), "tier": fmt.Sprint("t", i%7)}
	}
	var docs []map[string]any
	for i := range n {
		docs = append(docs, map[string]any{
			"labels":           []any{map[string]any{"key": "name", "value": fmt.Sprint("rule-", i)}},
			"endpointSelector": map[string]any{"matchLabels": map[string]any{"app": fmt.Sprint("app", i%apps)}},
			"ingress": []any{map[string]any{
				"fromEndpoints": []any{map[string]any{"matchLabels": map[string]any{"app": fmt.Sprint("app", (i+1)%apps)}}},
				"toPorts":       []any{map[string]any{"ports": []any{map[string]any{"port": fmt.Sprint(8000 + i%100), "protocol": "TCP"}}}},
			}},
			"egress": []any{map[string]any{
				"toCIDR":  []any{fmt.Sprintf("10.%d.%d.0/24", i/256%256, i%256)},
				"toPorts": []any{map[string]any{"ports": []any{map[string]any{"port": "443", "protocol": "TCP"}}}},
			}},
		})
	}
	data, err := json.Marshal(docs)
	if err != nil {
		b.Fatal(err)
	}
	rules, err := Parse(data)
	if err != nil {
		b.Fatal(err)
	}
	cidrs := map[netip.Prefix]labels.Identity{}
	for i, p := range CIDRs(rules) {
		cidrs[p] = labels.MinCIDRIdentity + labels.Identity(i)
	}
	return data, Input{Rules: rules, Identities: ids, CIDRs: cidrs}
}

func benchmarkParse(b *testing.B, n int) {
	data, _ := benchInput(b, n)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}

func benchmarkResolve(b *testing.B, n int) {
	_, in := benchInput(b, n)
	var entries int
	for b.Loop() {
		res, err := Resolve(in)
		if err != nil {
			b.Fatal(err)
		}
		entries = len(res.Entries)
	}
	b.ReportMetric(float64(entries), "keys")
}

func BenchmarkParse10kRules(b *testing.B)    { benchmarkParse(b, 10_000) }
func BenchmarkResolve10kRules(b *testing.B)  { benchmarkResolve(b, 10_000) }
func BenchmarkParse100kRules(b *testing.B)   { benchmarkParse(b, 100_000) }
func BenchmarkResolve100kRules(b *testing.B) { benchmarkResolve(b, 100_000) }
