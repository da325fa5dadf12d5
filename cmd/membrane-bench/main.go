// Command membrane-bench is membrane's benchmark harness (make bench,
// make bench-smoke): it compares membrane's datapath with a raw veth pair
// and Docker's bridge, its policy with iptables at growing rule counts,
// and times its control plane, on this machine, in one run. Run it as root
// from the module root.
//
//	membrane-bench -mode full -docs      # make bench
//	membrane-bench -mode smoke           # make bench-smoke
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/membrane-net/membrane/bench"
	"github.com/membrane-net/membrane/bench/record"
	"github.com/membrane-net/membrane/bench/report"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout))
}

// options are the command line.
type options struct {
	mode      string
	out       string
	docs      bool
	rounds    int
	duration  time.Duration
	seed      uint64
	clientCPU int
	serverCPU int
	ipv6UDP   bool
	from      string
}

func parse(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("membrane-bench", flag.ContinueOnError)
	fs.StringVar(&o.mode, "mode", bench.ModeFull, "full (every figure) or smoke (one short round, small N; fails on any error)")
	fs.StringVar(&o.out, "out", "", "directory for the JSON results (default: bench/results in full mode, a temporary directory in smoke mode)")
	fs.BoolVar(&o.docs, "docs", false, "write docs/benchmarks.md and docs/bench/*.svg")
	fs.IntVar(&o.rounds, "rounds", 0, "rounds (default: 7 full, 1 smoke)")
	fs.DurationVar(&o.duration, "duration", 0, "length of each load (default: 3s full, 500ms smoke; iperf3 takes whole seconds, at least 1)")
	fs.BoolVar(&o.ipv6UDP, "ipv6-udp", false, "run the UDP load over IPv6 too (smoke mode always does; a full run leaves it out to stay near half an hour)")
	fs.Uint64Var(&o.seed, "seed", 0, "seed of the measurement order (default: random, printed)")
	fs.IntVar(&o.clientCPU, "client-cpu", 0, "CPU the clients are pinned to")
	fs.IntVar(&o.serverCPU, "server-cpu", 1, "CPU the servers are pinned to")
	fs.StringVar(&o.from, "from", "", "measure nothing: summarise the results JSON FILE again (and with -docs write the report from it)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout io.Writer) int {
	o, err := parse(args)
	if err != nil {
		return 2
	}
	cfg, err := bench.DefaultConfig(o.mode, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "membrane-bench: %v\n", err)
		return 2
	}
	if _, err := os.Stat("go.mod"); err != nil {
		fmt.Fprintln(os.Stderr, "membrane-bench: run it from the module root (it writes bench/results and docs/)")
		return 2
	}
	if o.rounds > 0 {
		cfg.Rounds = o.rounds
	}
	if o.duration > 0 {
		cfg.Duration = o.duration
	}
	cfg.Seed, cfg.ClientCPU, cfg.ServerCPU = o.seed, o.clientCPU, o.serverCPU
	cfg.IPv6UDP = cfg.IPv6UDP || o.ipv6UDP

	if o.from != "" {
		return fromFile(o, stdout)
	}
	start := time.Now()
	res, err := bench.Run(ctx, cfg)
	if errors.Is(err, bench.ErrNotRoot) && o.mode == bench.ModeSmoke {
		// As the privileged tests do without root: say why, do not fail.
		fmt.Fprintf(stdout, "membrane-bench: skipping the smoke run: %v\n", err)
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "membrane-bench: %v\n", err)
		return 1
	}
	res.Command = reproduceCommand(o, res)
	path, err := writeJSON(o, res)
	if err != nil {
		fmt.Fprintf(os.Stderr, "membrane-bench: %v\n", err)
		return 1
	}
	if o.docs {
		if err := report.Write(res, filepath.Join("docs", "benchmarks.md"), filepath.Join("docs", "bench"), "bench"); err != nil {
			fmt.Fprintf(os.Stderr, "membrane-bench: %v\n", err)
			return 1
		}
		fmt.Fprintln(stdout, "membrane-bench: wrote docs/benchmarks.md and docs/bench/")
	}
	printTargets(stdout, res)
	fmt.Fprintf(stdout, "membrane-bench: %s run done in %s; results in %s\n", o.mode, time.Since(start).Round(time.Second), path)
	if len(res.Errors) > 0 {
		fmt.Fprintf(os.Stderr, "membrane-bench: %d measurements failed:\n  %s\n", len(res.Errors), strings.Join(res.Errors, "\n  "))
		return 1
	}
	return 0
}

// fromFile summarises an earlier run's JSON again: the report can change
// without measuring anew.
func fromFile(o options, stdout io.Writer) int {
	b, err := os.ReadFile(o.from)
	if err != nil {
		fmt.Fprintf(os.Stderr, "membrane-bench: %v\n", err)
		return 1
	}
	var res record.Run
	if err := json.Unmarshal(b, &res); err != nil {
		fmt.Fprintf(os.Stderr, "membrane-bench: %s: %v\n", o.from, err)
		return 1
	}
	bench.Summarize(&res)
	if o.docs {
		if err := report.Write(&res, filepath.Join("docs", "benchmarks.md"), filepath.Join("docs", "bench"), "bench"); err != nil {
			fmt.Fprintf(os.Stderr, "membrane-bench: %v\n", err)
			return 1
		}
		fmt.Fprintln(stdout, "membrane-bench: wrote docs/benchmarks.md and docs/bench/")
	}
	printTargets(stdout, &res)
	return 0
}

// reproduceCommand is the command line that repeats this run's order.
func reproduceCommand(o options, r *record.Run) string {
	s := fmt.Sprintf("go run ./cmd/membrane-bench -mode %s -seed %d", r.Mode, r.Seed)
	if o.rounds > 0 {
		s += fmt.Sprintf(" -rounds %d", r.Rounds)
	}
	if o.duration > 0 {
		s += " -duration " + o.duration.String()
	}
	if o.ipv6UDP {
		s += " -ipv6-udp"
	}
	if o.docs {
		s += " -docs"
	}
	return s
}

func writeJSON(o options, r *record.Run) (string, error) {
	dir := o.out
	if dir == "" && o.mode == bench.ModeFull {
		dir = filepath.Join("bench", "results")
	}
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "membrane-bench-results-"); err != nil {
			return "", err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, r.Started.Format("20060102T150405Z")+".json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return "", fmt.Errorf("write results: %w", err)
	}
	return p, nil
}

func printTargets(w io.Writer, r *record.Run) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TARGET\tVALUE\tTHRESHOLD\tSTATUS")
	for _, t := range r.Targets {
		value := "-"
		if t.Status != record.NotMeasured {
			value = fmt.Sprintf("%.3g", t.Value)
		}
		threshold := ""
		if t.Op != "" {
			threshold = fmt.Sprintf("%s %g", t.Op, t.Threshold)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, value, threshold, t.Status)
	}
	tw.Flush()
}
