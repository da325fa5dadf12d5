package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// cleanStale removes what a crashed earlier run may have left under the
// names this harness owns. Nothing else is touched.
func cleanStale(log io.Writer) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, ns := range staleNetns() {
		fmt.Fprintf(log, "bench: removing leftover netns %s\n", ns)
		_ = delNetns(ctx, ns)
	}
	for _, dev := range []string{hostDevice, bridgeDevice, bridgeDevice4} {
		if _, err := os.Stat("/sys/class/net/" + dev); err == nil {
			fmt.Fprintf(log, "bench: removing leftover link %s\n", dev)
			_, _ = runCmd(ctx, "ip", "link", "del", dev)
		}
	}
	_ = os.Remove(filepath.Join(pluginDir, pluginName+".sock"))
	_ = os.RemoveAll(bpfDir)
	_ = os.RemoveAll(inprocBPFDir)
	removeHostRules(ctx, log)
}

// removeHostRules deletes the host's iptables and ip6tables rules and
// chains that name the harness's daemon or bridges: the daemon's own chains
// (MBR-mbrbn0-*) and the jumps to them, and rules naming a bridge that a
// killed dockerd could not remove. The shared MEMBRANE-* chains stay, as
// any other membrane daemon on the host uses them.
func removeHostRules(ctx context.Context, log io.Writer) {
	ownChain := "MBR-" + hostDevice + "-"
	for _, tool := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"filter", "nat"} {
			out, err := runCmd(ctx, tool+"-save", "-t", table)
			if err != nil {
				continue
			}
			var chains []string
			for _, line := range strings.Split(out, "\n") {
				f := strings.Fields(line)
				switch {
				case len(f) > 0 && strings.HasPrefix(f[0], ":"+ownChain):
					chains = append(chains, strings.TrimPrefix(f[0], ":"))
				case len(f) > 2 && f[0] == "-A" && !strings.HasPrefix(f[1], ownChain) &&
					slices.ContainsFunc(f, func(s string) bool {
						return strings.HasPrefix(s, ownChain) || s == bridgeDevice || s == bridgeDevice4
					}):
					f[0] = "-D"
					if _, err := runCmd(ctx, append([]string{tool, "-t", table}, f...)...); err != nil {
						fmt.Fprintf(log, "bench: remove %s rule %q: %v\n", tool, line, err)
					}
				}
			}
			for _, c := range chains {
				_, _ = runCmd(ctx, tool, "-t", table, "-F", c)
				if _, err := runCmd(ctx, tool, "-t", table, "-X", c); err != nil {
					fmt.Fprintf(log, "bench: remove %s chain %s: %v\n", tool, c, err)
				}
			}
		}
	}
}
