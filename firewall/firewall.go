package firewall

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// ErrIPTablesMissing: iptables or ip6tables is not installed.
var ErrIPTablesMissing = errors.New("iptables not found")

// Runner runs one iptables command (iptables, ip6tables, iptables-restore,
// ip6tables-restore) with args and stdin, and returns its combined output.
type Runner func(name string, stdin []byte, args ...string) ([]byte, error)

// Config configures a Firewall.
type Config struct {
	// Instance tells this daemon's chains from another daemon's on the
	// same host; the host device name is unique per daemon.
	Instance string
	// Interfaces matches the host side of every endpoint's veth, in
	// iptables' interface syntax ("mbr+").
	Interfaces string
	// Run runs the iptables tools; nil runs them from PATH.
	Run Runner
	// ReadSysctl and WriteSysctl read and write a /proc/sys file; nil
	// reads and writes it.
	ReadSysctl  func(path string) (string, error)
	WriteSysctl func(path, value string) error
}

// Firewall programs iptables and ip6tables from state. Its methods may be
// called concurrently; they run one at a time.
type Firewall struct {
	cfg    Config
	chains chains
	mu     sync.Mutex
}

// New returns a Firewall.
func New(cfg Config) (*Firewall, error) {
	if cfg.Instance == "" || cfg.Interfaces == "" {
		return nil, errors.New("firewall config: instance and interface pattern are required")
	}
	if cfg.Run == nil {
		cfg.Run = execRunner
	}
	if cfg.ReadSysctl == nil {
		cfg.ReadSysctl = func(path string) (string, error) {
			b, err := os.ReadFile(path)
			return strings.TrimSpace(string(b)), err
		}
	}
	if cfg.WriteSysctl == nil {
		cfg.WriteSysctl = func(path, value string) error { return os.WriteFile(path, []byte(value), 0o644) }
	}
	return &Firewall{cfg: cfg, chains: instanceChains(cfg.Instance)}, nil
}

func execRunner(name string, stdin []byte, args ...string) ([]byte, error) {
	if _, err := exec.LookPath(name); err != nil {
		return nil, fmt.Errorf("%w: %s: install iptables (membrane masquerades, publishes ports and isolates internal networks with it): %w",
			ErrIPTablesMissing, name, err)
	}
	cmd := exec.Command(name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	return cmd.CombinedOutput()
}

// Families are the address families Sync programs.
var Families = []Family{IPv4, IPv6}

// Sync makes membrane's rules match s in both families: the daemon's own
// chains (and MEMBRANE-INPUT) are replaced whole, atomically per table;
// the shared chains and the jumps are checked and put back where missing, and route_localnet is set
// on the veths of endpoints that publish on 127.0.0.1. It goes on past a
// failing family and returns every error.
func (f *Firewall) Sync(s State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for _, fam := range Families {
		if err := f.syncFamily(fam, s); err != nil {
			errs = append(errs, fmt.Errorf("%s rules: %w", fam, err))
		}
	}
	if err := f.syncRouteLocalnet(s); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (f *Firewall) syncFamily(fam Family, s State) error {
	input := restoreInput(f.chains.plan(fam, f.cfg.Interfaces, s))
	if err := f.run(fam.tool()+"-restore", input, "-w", "--noflush"); err != nil {
		return fmt.Errorf("write %s, %s and %s: %w", f.chains.dnat, f.chains.post, f.chains.fwd, err)
	}
	shared, jumps := f.chains.structure(fam)
	for _, c := range shared {
		if err := f.ensureChain(fam, c.table, c.chain); err != nil {
			return err
		}
	}
	for _, j := range jumps {
		if err := f.ensureRule(fam, j.table, j.chain, j.rule, true); err != nil {
			return err
		}
	}
	return nil
}

// syncRouteLocalnet lets DNATed packets from 127.0.0.1 leave through the
// veths of endpoints publishing on IPv4 loopback, and takes that back from
// the others. It writes only what differs (a daemon whose /proc/sys is
// read-only fails only for endpoints that publish on 127.0.0.1). A veth
// that is gone needs nothing.
func (f *Firewall) syncRouteLocalnet(s State) error {
	internal := map[string]bool{}
	for _, nw := range s.Networks {
		internal[nw.ID] = nw.Internal
	}
	var errs []error
	for _, ep := range sortedEndpoints(s.Endpoints) {
		if ep.Interface == "" || strings.ContainsAny(ep.Interface, "/.") {
			continue
		}
		value := "0"
		if needsRouteLocalnet(ep, internal[ep.NetworkID]) {
			value = "1"
		}
		path := filepath.Join("/proc/sys/net/ipv4/conf", ep.Interface, "route_localnet")
		current, err := f.cfg.ReadSysctl(path)
		if errors.Is(err, os.ErrNotExist) || (err == nil && current == value) {
			continue
		}
		if err := f.cfg.WriteSysctl(path, value); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("set route_localnet on %s: %w", ep.Interface, err))
		}
	}
	return errors.Join(errs...)
}

// EnableForwarding lets traffic between membrane endpoints and anything
// beyond the host cross the host stack: it turns on IPv4 and IPv6
// forwarding and accepts packets from and to membrane's veths in
// MEMBRANE-FORWARD, jumped to from the FORWARD chain, which Docker sets to
// DROP. Sync keeps the daemon's own isolation rules ahead of these
// ACCEPTs. Docker re-inserts its own jumps at the top of FORWARD when it
// starts; membrane's ACCEPTs still come before the chain's DROP policy, so
// the order does not matter.
func (f *Firewall) EnableForwarding() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for _, sysctl := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		if err := f.cfg.WriteSysctl(sysctl, "1"); err != nil {
			errs = append(errs, fmt.Errorf("enable forwarding: %w", err))
		}
	}
	for _, fam := range Families {
		if err := f.acceptForwarding(fam); err != nil {
			errs = append(errs, fmt.Errorf("accept forwarding: %w", err))
		}
	}
	return errors.Join(errs...)
}

// ForwardAccepts are the rules EnableForwarding appends to MEMBRANE-FORWARD.
func (f *Firewall) forwardAccepts() [][]string {
	return [][]string{
		{"-i", f.cfg.Interfaces, "-j", "ACCEPT"},
		{"-o", f.cfg.Interfaces, "-j", "ACCEPT"},
	}
}

func (f *Firewall) acceptForwarding(fam Family) error {
	if err := f.ensureChain(fam, tableFilter, chainForward); err != nil {
		return err
	}
	for _, rule := range f.forwardAccepts() {
		if err := f.ensureRule(fam, tableFilter, chainForward, rule, false); err != nil {
			return err
		}
	}
	return f.ensureRule(fam, tableFilter, "FORWARD", []string{"-j", chainForward}, true)
}

// ensureChain creates a chain unless it exists.
func (f *Firewall) ensureChain(fam Family, table, chain string) error {
	if f.iptables(fam, table, "-n", "-L", chain) == nil {
		return nil
	}
	if err := f.iptables(fam, table, "-N", chain); err != nil {
		// Another daemon may have created it meanwhile.
		if f.iptables(fam, table, "-n", "-L", chain) == nil {
			return nil
		}
		return err
	}
	return nil
}

// ensureRule adds rule to chain unless it is there: first in the chain
// when first is set, last otherwise.
func (f *Firewall) ensureRule(fam Family, table, chain string, rule []string, first bool) error {
	if f.iptables(fam, table, append([]string{"-C", chain}, rule...)...) == nil {
		return nil
	}
	op := []string{"-A", chain}
	if first {
		op = []string{"-I", chain, "1"}
	}
	return f.iptables(fam, table, append(op, rule...)...)
}

func (f *Firewall) iptables(fam Family, table string, args ...string) error {
	return f.run(fam.tool(), nil, append([]string{"-w", "-t", table}, args...)...)
}

func (f *Firewall) run(name string, stdin []byte, args ...string) error {
	out, err := f.cfg.Run(name, stdin, args...)
	if err != nil {
		if errors.Is(err, ErrIPTablesMissing) {
			return err
		}
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
