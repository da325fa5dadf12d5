// Package testhost holds what the integration suite and the benchmark
// harness both do to the machine they run on, each with a private dockerd
// and membrane daemon: take the machine's lock so that they never run side
// by side, mount the BPF filesystem, and clean up after their dockerd
// (FORWARD policies, leftover mounts).
package testhost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// LockFile is the lock the integration suite and the benchmark hold while
// they run: both program the host's iptables and BPF filesystem, and a
// benchmark beside anything else measures nothing.
const LockFile = "/run/lock/membrane-it.lock"

// Lock takes LockFile, waiting up to timeout while another run holds it;
// waiting is called once if it has to wait. The returned function
// releases it.
func Lock(ctx context.Context, timeout time.Duration, waiting func()) (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Dir(LockFile), 0o755); err != nil {
		return nil, fmt.Errorf("lock %s: %w", LockFile, err)
	}
	f, err := os.OpenFile(LockFile, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", LockFile, err)
	}
	deadline := time.Now().Add(timeout)
	for said := false; ; {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", LockFile, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("lock %s: held by another run (integration suite or benchmark) for more than %s", LockFile, timeout)
		}
		if !said {
			waiting()
			said = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// MountBPF mounts the BPF filesystem on /sys/fs/bpf unless it is there.
func MountBPF() error {
	mounts, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[1] == "/sys/fs/bpf" && f[2] == "bpf" {
			return nil
		}
	}
	if err := syscall.Mount("bpf", "/sys/fs/bpf", "bpf", 0, ""); err != nil {
		return fmt.Errorf("mount bpf on /sys/fs/bpf: %w", err)
	}
	return nil
}

// ForwardPolicies reads the policy of the FORWARD chain of iptables and
// ip6tables, by tool name; a tool that fails is left out.
func ForwardPolicies() map[string]string {
	p := map[string]string{}
	for _, tool := range []string{"iptables", "ip6tables"} {
		out, err := exec.Command(tool, "-S", "FORWARD").Output()
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == "-P" && f[1] == "FORWARD" {
				p[tool] = f[2]
			}
		}
	}
	return p
}

// RestoreForwardPolicies puts back the policies ForwardPolicies read before
// a dockerd set DROP, unless another dockerd runs (it may rely on DROP).
// The chains dockerd created stay: any other dockerd expects them. What it
// leaves alone, and what fails, goes to logf.
func RestoreForwardPolicies(p map[string]string, logf func(format string, args ...any)) {
	if pids := OtherDockerds(); len(pids) > 0 {
		logf("leaving the FORWARD policies alone: another dockerd runs (pid %v)", pids)
		return
	}
	now := ForwardPolicies()
	for tool, policy := range p {
		if now[tool] == policy {
			continue
		}
		if out, err := exec.Command(tool, "-P", "FORWARD", policy).CombinedOutput(); err != nil {
			logf("%s -P FORWARD %s: %v: %s", tool, policy, err, out)
		}
	}
}

// OtherDockerds lists the pids of running dockerd processes; call it after
// the run's own dockerd has exited.
func OtherDockerds() []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm")); err == nil && strings.TrimSpace(string(comm)) == "dockerd" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// UnmountUnder lazily unmounts anything dockerd left mounted below dir,
// deepest first, so that removing dir cannot cross into a mount.
func UnmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	for _, p := range points {
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
	}
}
