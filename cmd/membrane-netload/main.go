// Command membrane-netload is the traffic generator of membrane's
// benchmark (make bench): a server, and rr, crr, udp and poll clients that
// print one JSON result. It is built static (CGO_ENABLED=0) so that the
// benchmark can run the same binary in every network namespace it
// compares, entered with nsenter and pinned with taskset.
//
//	membrane-netload serve -addr 0.0.0.0 -tcp 7000,7002 -udp 7000 -control 7001
//	membrane-netload rr   -addr 10.0.0.2:7000 -duration 5s
//	membrane-netload crr  -addr 10.0.0.2:7000 -duration 5s
//	membrane-netload udp  -addr 10.0.0.2:7000 -control 7001 -duration 5s
//	membrane-netload poll -addr 10.0.0.2:7000 -until open -timeout 30s
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/membrane-net/membrane/bench/netload"
)

const usage = `usage: membrane-netload serve|rr|crr|udp|poll [flags]
Run "membrane-netload MODE -h" for a mode's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if err := run(ctx, os.Args[1], os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "membrane-netload %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func run(ctx context.Context, mode string, args []string) error {
	fs := flag.NewFlagSet(mode, flag.ContinueOnError)
	addr := fs.String("addr", "", "serve: address to listen on; clients: server IP:PORT")
	duration := fs.Duration("duration", 5*time.Second, "how long a load runs")
	switch mode {
	case "serve":
		tcp := fs.String("tcp", "7000", "comma-separated TCP ports answering rr and crr")
		udp := fs.Int("udp", 7000, "UDP port counting the udp load")
		control := fs.Int("control", 7001, "TCP port answering the udp load's control requests")
		if err := fs.Parse(args); err != nil {
			return err
		}
		ports, err := parsePorts(*tcp)
		if err != nil {
			return err
		}
		listen := *addr
		if listen == "" {
			listen = "::"
		}
		return serve(ctx, netload.ServerConfig{Addr: listen, TCPPorts: ports, UDPPort: *udp, ControlPort: *control})
	case "rr", "crr":
		if err := fs.Parse(args); err != nil {
			return err
		}
		load := netload.RR
		if mode == "crr" {
			load = netload.CRR
		}
		return printResult(load(ctx, *addr, *duration))
	case "udp":
		control := fs.Int("control", 7001, "the server's control port")
		if err := fs.Parse(args); err != nil {
			return err
		}
		return printResult(netload.UDP(ctx, *addr, *control, *duration))
	case "poll":
		until := fs.String("until", "open", "open: until a connect succeeds; closed: until one fails")
		interval := fs.Duration("interval", 2*time.Millisecond, "time between the starts of two attempts")
		attempt := fs.Duration("attempt-timeout", 200*time.Millisecond, "how long one connect may take")
		timeout := fs.Duration("timeout", 30*time.Second, "how long to poll at most")
		if err := fs.Parse(args); err != nil {
			return err
		}
		r, err := netload.Poll(ctx, netload.PollConfig{
			Addr: *addr, Until: netload.PollUntil(*until), Interval: *interval, AttemptTimeout: *attempt, Timeout: *timeout,
		})
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(r)
	default:
		return fmt.Errorf("unknown mode\n%s", usage)
	}
}

func serve(ctx context.Context, cfg netload.ServerConfig) error {
	s, err := netload.Listen(cfg)
	if err != nil {
		return err
	}
	// The benchmark waits for this line before it sends traffic.
	fmt.Println("listening")
	return s.Serve(ctx)
}

func printResult(r netload.Result, err error) error {
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

func parsePorts(s string) ([]int, error) {
	var ports []int
	for _, f := range strings.Split(s, ",") {
		p, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || p < 0 || p > 65535 {
			return nil, fmt.Errorf("port %q: want a number 0-65535", f)
		}
		ports = append(ports, p)
	}
	return ports, nil
}
