package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"
)

// A reachability matrix: many (source, destination, protocol, port,
// family) checks with an expected verdict each, run at once and reported
// as one table of mismatches. Each source runs all its checks in a single
// `probe checks` process (one docker exec per container), so a matrix of a
// few hundred checks takes about as long as its slowest check.

// Timeouts of one check. A check expected to pass gets long enough for a
// retransmitted SYN; one expected to fail gives up soon, which is what
// keeps the suite fast.
const (
	allowTimeout = 3 * time.Second
	denyTimeout  = time.Second
	// sourceTimeout bounds one source's whole `probe checks` run.
	sourceTimeout = 60 * time.Second
	// parallelSources is how many sources run their checks at once.
	parallelSources = 8
)

// peer is a source or destination of checks: a container, a network
// namespace or the host.
type peer struct {
	Name   string
	V4, V6 string // addresses as a destination; "" when it has none
	// run runs the probe binary with args as this peer, stdin as input.
	run func(ctx context.Context, stdin string, args ...string) (string, error)
}

// addr returns the peer's address of family "4" or "6".
func (p *peer) addr(family string) string {
	if family == "4" {
		return p.V4
	}
	return p.V6
}

// containerPeer is container ctr as a peer, with its addresses.
func containerPeer(name, ctr, v4, v6 string) *peer {
	return &peer{Name: name, V4: v4, V6: v6, run: func(ctx context.Context, stdin string, args ...string) (string, error) {
		out, stderr, err := runDocker(ctx, strings.NewReader(stdin), append([]string{"exec", "-i", ctr, "/bin/probe"}, args...)...)
		if err != nil {
			return out, fmt.Errorf("docker exec %s probe %s: %w: %s", short(ctr), strings.Join(args, " "), err, stderr)
		}
		return out, nil
	}}
}

// netnsPeer is the network namespace ns (made with `ip netns add`).
func netnsPeer(name, ns, v4, v6 string) *peer {
	return &peer{Name: name, V4: v4, V6: v6, run: func(ctx context.Context, stdin string, args ...string) (string, error) {
		return runLocal(ctx, stdin, append([]string{"ip", "netns", "exec", ns, probeBin()}, args...)...)
	}}
}

// hostPeer is the host's own network namespace, as a source only.
func hostPeer() *peer {
	return &peer{Name: "host", run: func(ctx context.Context, stdin string, args ...string) (string, error) {
		return runLocal(ctx, stdin, append([]string{probeBin()}, args...)...)
	}}
}

func runLocal(ctx context.Context, stdin string, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// probe is one kind of check: a TCP or UDP echo round trip to a port, or
// an ICMP echo.
type probe struct {
	Proto string // "tcp", "udp" or "icmp"
	Port  int    // 0 for icmp
}

func (p probe) String() string {
	if p.Proto == "icmp" {
		return "icmp"
	}
	return fmt.Sprintf("%s/%d", p.Proto, p.Port)
}

func tcpProbe(port int) probe { return probe{"tcp", port} }
func udpProbe(port int) probe { return probe{"udp", port} }

var icmpProbe = probe{Proto: "icmp"}

// families are both address families, IPv6 first.
var families = []string{"6", "4"}

// reachCase is one check and what it should give.
type reachCase struct {
	From, To *peer
	Probe    probe
	Family   string // "4" or "6"
	Want     bool   // true: the echo comes back; false: it does not
}

func (c reachCase) String() string {
	return fmt.Sprintf("%s → %s %s v%s", c.From.Name, c.To.Name, c.Probe, c.Family)
}

// wantFunc decides the expected verdict of a check by peer names.
type wantFunc func(from, to string, p probe, family string) bool

// allowAll expects every check to pass.
func allowAll(string, string, probe, string) bool { return true }

// matrix lists every check from each of from to each of to (skipping a
// peer to itself, and destinations without an address of the family),
// with the verdict want gives.
func matrix(from, to []*peer, probes []probe, want wantFunc) []reachCase {
	var cases []reachCase
	for _, f := range from {
		for _, d := range to {
			if f == d {
				continue
			}
			for _, p := range probes {
				for _, fam := range families {
					if d.addr(fam) == "" {
						continue
					}
					cases = append(cases, reachCase{From: f, To: d, Probe: p, Family: fam, Want: want(f.Name, d.Name, p, fam)})
				}
			}
		}
	}
	return cases
}

// reachResult is what one check gave.
type reachResult struct {
	OK   bool
	Info string // the probe's word on it
	Err  error  // the check could not run at all
}

// runReach runs cases, each source's checks in one probe process, sources
// in parallel, and returns the results in the order of cases.
func runReach(cases []reachCase) []reachResult {
	results := make([]reachResult, len(cases))
	bySource := map[*peer][]int{}
	var sources []*peer
	for i, c := range cases {
		if _, ok := bySource[c.From]; !ok {
			sources = append(sources, c.From)
		}
		bySource[c.From] = append(bySource[c.From], i)
	}
	sem := make(chan struct{}, parallelSources)
	var wg sync.WaitGroup
	for _, src := range sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			idx := bySource[src]
			var in strings.Builder
			for _, i := range idx {
				c := cases[i]
				timeout := denyTimeout
				if c.Want {
					timeout = allowTimeout
				}
				port := "-"
				if c.Probe.Proto != "icmp" {
					port = strconv.Itoa(c.Probe.Port)
				}
				fmt.Fprintf(&in, "%d %s %s %s %s\n", i, c.Probe.Proto, c.To.addr(c.Family), port, timeout)
			}
			ctx, cancel := context.WithTimeout(context.Background(), sourceTimeout)
			defer cancel()
			out, err := src.run(ctx, in.String(), "checks")
			got := map[int]reachResult{}
			sc := bufio.NewScanner(strings.NewReader(out))
			for sc.Scan() {
				var r struct {
					ID   string `json:"id"`
					OK   bool   `json:"ok"`
					Info string `json:"info"`
				}
				if json.Unmarshal(sc.Bytes(), &r) != nil {
					continue
				}
				if i, err := strconv.Atoi(r.ID); err == nil {
					got[i] = reachResult{OK: r.OK, Info: r.Info}
				}
			}
			for _, i := range idx {
				r, ok := got[i]
				switch {
				case ok:
				case err != nil:
					r = reachResult{Err: err}
				default:
					r = reachResult{Err: fmt.Errorf("probe checks in %s printed no result for this check", src.Name)}
				}
				results[i] = r
			}
		}()
	}
	wg.Wait()
	return results
}

// checkReach runs cases and fails t with one table of every mismatch. A
// check that mismatches is run once more after a pause (the datapath may
// apply a change a moment after the API reports it); one that then matches
// is logged, not failed.
func checkReach(t testing.TB, title string, cases []reachCase) {
	t.Helper()
	start := time.Now()
	results := runReach(cases)
	var again []int
	for i, r := range results {
		if r.Err != nil || r.OK != cases[i].Want {
			again = append(again, i)
		}
	}
	if len(again) > 0 {
		time.Sleep(time.Second)
		retry := make([]reachCase, len(again))
		for j, i := range again {
			retry[j] = cases[i]
		}
		var late []string
		for j, r := range runReach(retry) {
			i := again[j]
			if r.Err == nil && r.OK == cases[i].Want && results[i].Err == nil {
				late = append(late, cases[i].String())
				results[i] = r
			}
		}
		if len(late) > 0 {
			t.Logf("%s: %d checks matched only on a second try: %s", title, len(late), strings.Join(late, "; "))
		}
	}
	var bad []int
	for i, r := range results {
		if r.Err != nil || r.OK != cases[i].Want {
			bad = append(bad, i)
		}
	}
	t.Logf("%s: %d checks in %s, %d mismatches", title, len(cases), time.Since(start).Round(time.Millisecond), len(bad))
	if len(bad) > 0 {
		t.Errorf("%s: %d of %d checks differ from the expected matrix:\n%s", title, len(bad), len(cases), mismatchTable(cases, results, bad))
	}
}

// mismatchTable prints the mismatches grouped: one line per source,
// destination, families and outcome, listing the probes that went that
// way, with the probe's word on the first of them.
func mismatchTable(cases []reachCase, results []reachResult, bad []int) string {
	verdict := func(ok bool) string {
		if ok {
			return "allow"
		}
		return "deny"
	}
	// Fold the families of one probe first, then the probes of one pair.
	type probeKey struct{ from, to, probe, got string }
	type probeRow struct {
		probeKey
		want string
		fams []string
		info string
	}
	var probeRows []*probeRow
	byProbe := map[probeKey]*probeRow{}
	for _, i := range bad {
		c, r := cases[i], results[i]
		got, info := verdict(r.OK), r.Info
		if r.Err != nil {
			got, info = "error", r.Err.Error()
		}
		k := probeKey{c.From.Name, c.To.Name, c.Probe.String(), got}
		pr := byProbe[k]
		if pr == nil {
			pr = &probeRow{probeKey: k, want: verdict(c.Want), info: fmt.Sprintf("%s v%s: %s", c.Probe, c.Family, firstLine(info, 120))}
			byProbe[k] = pr
			probeRows = append(probeRows, pr)
		}
		pr.fams = append(pr.fams, "v"+c.Family)
	}
	type pairKey struct{ from, to, fams, want, got string }
	type pairRow struct {
		pairKey
		probes []string
		info   string
	}
	var pairRows []*pairRow
	byPair := map[pairKey]*pairRow{}
	for _, pr := range probeRows {
		slices.Sort(pr.fams)
		k := pairKey{pr.from, pr.to, strings.Join(pr.fams, "+"), pr.want, pr.got}
		row := byPair[k]
		if row == nil {
			row = &pairRow{pairKey: k, info: pr.info}
			byPair[k] = row
			pairRows = append(pairRows, row)
		}
		row.probes = append(row.probes, pr.probe)
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 1, ' ', 0)
	for _, r := range pairRows {
		fmt.Fprintf(tw, "  %s → %s\t%s %s:\twant %s, got %s\t(%s)\n", r.from, r.to, strings.Join(r.probes, ","), r.fams, r.want, r.got, r.info)
	}
	tw.Flush()
	return b.String()
}

func firstLine(s string, n int) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}
