package driver

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// forwardChain is membrane's own filter chain, jumped to from FORWARD.
const forwardChain = "MEMBRANE-FORWARD"

// EnableForwarding lets traffic between membrane endpoints and anything
// beyond the host cross the host stack: it turns on IPv4 and IPv6
// forwarding and accepts packets from and to membrane's veths in the
// FORWARD chain, which Docker sets to DROP. Policy is enforced by the
// datapath, not by these rules. Docker re-inserts its own jumps at the top
// of FORWARD when it starts; membrane's ACCEPTs still come before the
// chain's DROP policy, so the order does not matter.
func EnableForwarding() error {
	var errs []error
	for _, sysctl := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		if err := os.WriteFile(sysctl, []byte("1"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("enable forwarding: %w", err))
		}
	}
	for _, tool := range []string{"iptables", "ip6tables"} {
		if err := acceptForwarding(tool); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func acceptForwarding(tool string) error {
	if _, err := exec.LookPath(tool); err != nil {
		return fmt.Errorf("accept forwarding: %s not found: traffic beyond the host needs FORWARD rules: %w", tool, err)
	}
	run := func(args ...string) error {
		out, err := exec.Command(tool, append([]string{"-w", "-t", "filter"}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	exists := func(args ...string) bool { return run(args...) == nil }

	if !exists("-n", "-L", forwardChain) {
		if err := run("-N", forwardChain); err != nil {
			return fmt.Errorf("accept forwarding: %w", err)
		}
	}
	for _, rule := range [][]string{
		{"-i", hostIfPrefix + "+", "-j", "ACCEPT"},
		{"-o", hostIfPrefix + "+", "-j", "ACCEPT"},
	} {
		if !exists(append([]string{"-C", forwardChain}, rule...)...) {
			if err := run(append([]string{"-A", forwardChain}, rule...)...); err != nil {
				return fmt.Errorf("accept forwarding: %w", err)
			}
		}
	}
	if !exists("-C", "FORWARD", "-j", forwardChain) {
		if err := run("-I", "FORWARD", "1", "-j", forwardChain); err != nil {
			return fmt.Errorf("accept forwarding: %w", err)
		}
	}
	return nil
}
