package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/membrane-net/membrane/internal/envflag"
	"github.com/membrane-net/membrane/plugin"
)

// runDaemon parses the daemon's flags (each also settable as
// MEMBRANE_<FLAG>, which is how a managed plugin is configured) and runs
// the plugin until ctx ends.
func runDaemon(ctx context.Context, args []string) error {
	fs := pflag.NewFlagSet("membrane daemon", pflag.ContinueOnError)
	var (
		cfg       plugin.Config
		ipv4Range string
		logLevel  string
	)
	fs.StringVar(&cfg.PluginName, "plugin-name", "membrane", "Docker driver name; the socket is PLUGIN-DIR/PLUGIN-NAME.sock")
	fs.StringVar(&cfg.PluginDir, "plugin-dir", "/run/docker/plugins", "directory where Docker discovers plugin sockets")
	fs.StringVar(&cfg.APISocket, "api-socket", "/run/membrane/membrane.sock", "management API socket (root only)")
	fs.StringVar(&cfg.StateDir, "state-dir", "/var/lib/membrane", "directory for state checkpoints")
	fs.StringVar(&cfg.BPFDir, "bpf-dir", "/sys/fs/bpf/membrane", "directory for BPF map and link pins")
	fs.StringVar(&cfg.DockerHost, "docker-host", "unix:///var/run/docker.sock", "Docker API address, used to collect endpoints of vanished containers")
	fs.StringVar(&cfg.HostDevice, "host-device", "membrane0", "host interface (a veth pair) that holds the networks' gateway addresses")
	fs.StringVar(&ipv4Range, "ipv4-range", "10.210.0.0/16", "range dynamic IPv4 pools are carved from")
	fs.DurationVar(&cfg.StaleGrace, "stale-grace", 2*time.Minute, "age after which an endpoint Docker does not list is removed")
	fs.DurationVar(&cfg.Resync, "resync", time.Minute, "interval between comparisons of state with Docker")
	fs.StringVar(&cfg.PolicyDir, "policy-dir", "", "directory of policy files (*.json, *.yaml) to import at start")
	fs.StringSliceVar(&cfg.IdentityLabels, "identity-labels", nil,
		"label key patterns that make a container's identity, in order, comma-separated: GLOB keeps, !GLOB drops (default: all labels but per-instance ones such as com.docker.compose.config-hash)")
	fs.StringVar(&cfg.MetricsAddress, "metrics-address", "", "serve Prometheus metrics on http://ADDRESS/metrics (e.g. 127.0.0.1:9962); empty for none")
	fs.BoolVar(&cfg.ManageForwarding, "manage-forwarding", true, "turn on IP forwarding and accept membrane traffic in iptables' FORWARD chain (Docker sets it to DROP)")
	fs.IntVar(&cfg.SpareVeths, "spare-veths", 4, "veth pairs kept ready, programs attached, so that new containers attach in a few milliseconds; 0 for none")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	if err := envflag.Parse(fs, args); err != nil {
		return err
	}
	if cfg.SpareVeths < 0 {
		return fmt.Errorf("--spare-veths %d: want 0 (none) or more", cfg.SpareVeths)
	}
	var err error
	if cfg.IPv4Range, err = netip.ParsePrefix(ipv4Range); err != nil || !cfg.IPv4Range.Addr().Is4() {
		return fmt.Errorf("--ipv4-range %q: want an IPv4 prefix such as 10.210.0.0/16", ipv4Range)
	}
	cfg.IPv4Range = cfg.IPv4Range.Masked()
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel)
	}
	// Logs go to stdout: Docker records a managed plugin's stderr as errors.
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: level}))
	return plugin.Run(ctx, cfg, log)
}
