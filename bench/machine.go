package bench

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/membrane-net/membrane/bench/record"
)

// describeMachine collects what a reader needs to judge the figures:
// hardware, kernel, the versions of everything measured, and the load.
func describeMachine(ctx context.Context, tools *toolPaths) record.Machine {
	m := record.Machine{
		CPUModel:         cpuModel(),
		Cores:            runtime.NumCPU(),
		MemoryMiB:        memTotalMiB(),
		GoVersion:        runtime.Version(),
		LoadAverageStart: loadAverage(),
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:]) + " " + unix.ByteSliceToString(u.Machine[:])
	}
	m.DockerdVersion = firstLine(ctx, tools.dockerd, "--version")
	m.DockerCLI = firstLine(ctx, tools.docker, "--version")
	m.Iperf3Version = firstLine(ctx, tools.iperf3, "--version")
	m.IptablesLegacy = firstLine(ctx, "iptables-legacy", "--version")
	m.IptablesNft = firstLine(ctx, "iptables-nft", "--version")
	if _, err := exec.LookPath("systemd-detect-virt"); err == nil {
		// It exits 1 on bare metal, printing "none".
		out, _ := exec.CommandContext(ctx, "systemd-detect-virt").Output()
		m.Virtualization = strings.TrimSpace(string(out))
	}
	return m
}

// codeRevision names the commit of the code in root (what the harness
// builds and measures), marked when tracked files differ from it; "" when
// root is not a git checkout.
func codeRevision(ctx context.Context, root string) string {
	rev, err := runCmd(ctx, "git", "-C", root, "rev-parse", "HEAD")
	if err != nil {
		return ""
	}
	rev = strings.TrimSpace(rev)
	if changes, err := runCmd(ctx, "git", "-C", root, "status", "--porcelain", "--untracked-files=no"); err != nil || strings.TrimSpace(changes) != "" {
		rev += " (modified)"
	}
	return rev
}

func firstLine(ctx context.Context, argv ...string) string {
	out, err := runCmd(ctx, argv...)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	return line
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func memTotalMiB() int {
	kb, _ := procStatusField("/proc/meminfo", "MemTotal")
	return kb / 1024
}

// procStatusField reads a "Key:   N kB" line of a /proc file.
func procStatusField(path, key string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != key {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			return 0, false
		}
		n, err := strconv.Atoi(f[0])
		return n, err == nil
	}
	return 0, false
}

// loadAverage is /proc/loadavg's 1, 5 and 15 minute averages.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
