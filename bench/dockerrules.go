package bench

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Docker gives every container on a user-defined network (bridge or
// plugin alike) a DNS server at 127.0.0.11 and reaches it through nat
// rules it writes into the container's own network namespace: a jump for
// 127.0.0.11 in OUTPUT and POSTROUTING, a DNAT of port 53 to the port its
// resolver really listens on, and the SNAT back. A nat table in a
// namespace makes the kernel track every IPv4 connection of that
// namespace, whatever its address, so every container pays for conntrack
// on both ends of a flow; there are no such IPv6 rules. The setup
// raw-docker-nat copies the rules into a bare veth pair's namespaces, to
// measure that cost apart from any network.

// dockerDNS is the address of Docker's embedded DNS server, which its
// in-container rules name.
const dockerDNS = "127.0.0.11/32"

// dockerNatRules returns the rules ("-A CHAIN ...") of an iptables-save
// listing of a nat table, and fails unless they hold Docker's jump to its
// DNS chain: a container without it shows that Docker changed, and the
// setup would copy nothing.
func dockerNatRules(save string) ([]string, error) {
	var rules []string
	jump := false
	for _, line := range strings.Split(save, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "-A ") {
			continue
		}
		rules = append(rules, line)
		f := strings.Fields(line)
		if len(f) >= 2 && f[1] == "OUTPUT" && slices.Contains(f, dockerDNS) && slices.Contains(f, "-j") {
			jump = true
		}
	}
	if !jump {
		return nil, fmt.Errorf("its nat table has no OUTPUT rule for %s (Docker's embedded DNS), only %q", dockerDNS, rules)
	}
	return rules, nil
}

// copyDockerRules loads into each namespace of to the nat table Docker
// wrote into the matching container of from (client to client, server to
// server), read with iptables-save and loaded with iptables-restore: the
// host's iptables, which is the one Docker runs. It checks the copy and
// notes in the run which rules were copied.
func (h *harness) copyDockerRules(ctx context.Context, from, to path) error {
	var copied []string
	for _, end := range []struct {
		role     string
		src, dst place
	}{{"client", from.client, to.client}, {"server", from.server, to.server}} {
		save, err := runCmd(ctx, "nsenter", "--net="+end.src.netns, "--", "iptables-save", "-t", "nat")
		if err != nil {
			return fmt.Errorf("setup %s: read the rules of %s's %s: %w", setupRawNat, from.setup, end.role, err)
		}
		rules, err := dockerNatRules(save)
		if err != nil {
			return fmt.Errorf("setup %s: %s's %s container: %w", setupRawNat, from.setup, end.role, err)
		}
		restore := cmdSpec{
			argv:    []string{"nsenter", "--net=" + end.dst.netns, "--", "iptables-restore", "-w"},
			stdin:   strings.NewReader(save),
			timeout: dockerCmdTimeout,
		}
		if _, err := restore.run(ctx); err != nil {
			return fmt.Errorf("setup %s: load the rules into the %s: %w", setupRawNat, end.role, err)
		}
		again, err := runCmd(ctx, "nsenter", "--net="+end.dst.netns, "--", "iptables-save", "-t", "nat")
		if err != nil {
			return fmt.Errorf("setup %s: read the rules back: %w", setupRawNat, err)
		}
		if got, _ := dockerNatRules(again); !slices.Equal(got, rules) {
			return fmt.Errorf("setup %s: the %s holds %q, want %q", setupRawNat, end.role, got, rules)
		}
		if end.role == "client" {
			copied = rules
		}
	}
	h.notes = append(h.notes, fmt.Sprintf("raw veth + Docker's container rules: the nat rules of the %s setup's containers, loaded with %s (the client's: `%s`)",
		from.setup, firstLine(ctx, "iptables", "--version"), strings.Join(copied, "`; `")))
	return nil
}

// countConntrack measures, for every datapath setup and family, how many
// conntrack entries one new connection adds in the client's namespace: a
// short connect/request/response load between reads of the namespace's
// nf_conntrack_count. A namespace that tracks nothing stays at 0.
func (h *harness) countConntrack(ctx context.Context) {
	short := h.loads
	short.duration = 300 * time.Millisecond
	for _, family := range families {
		for _, s := range familySetups(family) {
			p := h.paths[s].over(family)
			before, err := conntrackCount(ctx, p.client.netns)
			if err != nil {
				h.rec.fail("conntrack count of "+p.setup, err)
				continue
			}
			r, err := short.netloadClient(ctx, p, metricCRR)
			if err != nil {
				h.rec.fail("conntrack count of "+p.setup, err)
				continue
			}
			after, err := conntrackCount(ctx, p.client.netns)
			if err != nil {
				h.rec.fail("conntrack count of "+p.setup, err)
				continue
			}
			h.rec.add(conntrackID(family, s), unitPerConnection, 0, perConnection(before, after, r.Count))
		}
	}
}

const unitPerConnection = "entries per connection"

// perConnection is the growth of a count over n connections, per
// connection; a count that shrank (old entries expiring) counts as none.
func perConnection(before, after, n int64) float64 {
	if n <= 0 || after <= before {
		return 0
	}
	return float64(after-before) / float64(n)
}

// conntrackCount reads the number of conntrack entries of a network
// namespace (net.netfilter.nf_conntrack_count is per namespace).
func conntrackCount(ctx context.Context, netns string) (int64, error) {
	out, err := runCmd(ctx, "nsenter", "--net="+netns, "--", "cat", "/proc/sys/net/netfilter/nf_conntrack_count")
	if err != nil {
		return 0, fmt.Errorf("read nf_conntrack_count: %w", err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("nf_conntrack_count %q: %w", out, err)
	}
	return n, nil
}
