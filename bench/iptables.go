package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// iptables backends compared with membrane's policy maps.
const (
	backendLegacy = "legacy"
	backendNft    = "nft"
)

// iptablesBackends in the order the report lists them.
var iptablesBackends = []string{backendLegacy, backendNft}

// routed is a client namespace and a server namespace with a router
// namespace between them (client ⇄ router ⇄ server, routed). The router's
// FORWARD chain holds the rules, so the host's own tables are never
// touched and every packet of the measured flow crosses the chain.
type routed struct {
	name    string // "routed-0", "legacy-100", ...
	backend string // "" for the baseline without rules
	rules   int
	netns   []string // client, router, server
	path    path
}

// createRouted builds the three namespaces and their two links; links
// linkIndex and linkIndex+1 of the address plan number them.
func createRouted(ctx context.Context, plan addressPlan, linkIndex int, name string) (routed, error) {
	r := routed{name: name}
	prefix := namePrefix + "-" + name + "-"
	for _, role := range []string{"c", "r", "s"} {
		ns := prefix + role
		if err := addNetns(ctx, ns); err != nil {
			return r, err
		}
		r.netns = append(r.netns, ns)
	}
	client, router, server := r.netns[0], r.netns[1], r.netns[2]
	cAddr, rcAddr := plan.link(linkIndex)
	rsAddr, sAddr := plan.link(linkIndex + 1)
	if err := addVethPair(ctx, vethEnd{netns: client, dev: "eth0", addr: cAddr}, vethEnd{netns: router, dev: "toclient", addr: rcAddr}); err != nil {
		return r, err
	}
	if err := addVethPair(ctx, vethEnd{netns: router, dev: "toserver", addr: rsAddr}, vethEnd{netns: server, dev: "eth0", addr: sAddr}); err != nil {
		return r, err
	}
	for ns, via := range map[string]string{client: rcAddr.Addr().String(), server: rsAddr.Addr().String()} {
		if _, err := runCmd(ctx, "ip", "-n", ns, "route", "add", "default", "via", via); err != nil {
			return r, fmt.Errorf("netns %s: default route: %w", ns, err)
		}
	}
	if err := enableForwarding(router); err != nil {
		return r, err
	}
	r.path = path{
		setup:  name,
		client: place{netns: netnsPath(client), ip: cAddr.Addr()},
		server: place{netns: netnsPath(server), ip: sAddr.Addr()},
	}
	return r, nil
}

func (r routed) remove(ctx context.Context) error {
	var first error
	for _, ns := range r.netns {
		if err := delNetns(ctx, ns); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// restoreCmd is the backend's iptables-restore, run in netns, reading file.
func restoreCmd(backend, netns string) []string {
	argv := []string{"nsenter", "--net=" + netns, "--", "iptables-" + backend + "-restore"}
	if backend == backendLegacy {
		// Legacy iptables serialises on the host-wide xtables lock.
		argv = append(argv, "-w")
	}
	return argv
}

// installRules loads the rules file into the router's filter table
// (replacing it whole) and returns how long iptables-restore took.
func installRules(ctx context.Context, backend, netns, file string) (time.Duration, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	start := time.Now()
	if _, err := (cmdSpec{argv: restoreCmd(backend, netns), stdin: f, timeout: 10 * time.Minute}).run(ctx); err != nil {
		return 0, fmt.Errorf("iptables-%s-restore %s: %w", backend, filepath.Base(file), err)
	}
	return time.Since(start), nil
}

// addRule appends one rule with the backend's iptables and returns how
// long it took.
func addRule(ctx context.Context, backend, netns string, rule []string) (time.Duration, error) {
	argv := []string{"nsenter", "--net=" + netns, "--", "iptables-" + backend}
	if backend == backendLegacy {
		argv = append(argv, "-w")
	}
	argv = append(argv, rule...)
	start := time.Now()
	if _, err := (cmdSpec{argv: argv, timeout: 10 * time.Minute}).run(ctx); err != nil {
		return 0, fmt.Errorf("iptables-%s: add a rule: %w", backend, err)
	}
	return time.Since(start), nil
}

// rulesFile writes (once) the iptables-restore input for n rules between
// the routed setup's client and server and returns its path.
func rulesFile(dir string, n int, client, server string) (string, error) {
	p := filepath.Join(dir, "iptables-"+strconv.Itoa(n)+"-"+client+"-"+server+".rules")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if err := os.WriteFile(p, []byte(iptablesRules(n, client, server)), 0o644); err != nil {
		return "", fmt.Errorf("write iptables rules: %w", err)
	}
	return p, nil
}
