package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// toolPaths are the programs the harness runs.
type toolPaths struct {
	goBin, docker, dockerd, iperf3, bpftool string
	// membrane and netload are built from this tree into the run's
	// temporary directory, so the run measures the working tree.
	membrane, netload string
	moduleRoot        string
}

// requiredTools are looked up in PATH; a missing one fails the run with
// the Debian package that has it.
var requiredTools = map[string]string{
	"nsenter":                 "util-linux",
	"taskset":                 "util-linux",
	"ip":                      "iproute2",
	"ss":                      "iproute2",
	"iptables-legacy":         "iptables",
	"iptables-legacy-restore": "iptables",
	"iptables-nft":            "iptables",
	"iptables-nft-restore":    "iptables",
	"iperf3":                  "iperf3",
	"bpftool":                 "bpftool",
	"dockerd":                 "docker.io",
	"docker":                  "docker.io",
	"busybox":                 "busybox-static",
}

func findTools(ctx context.Context) (*toolPaths, error) {
	var missing []string
	for name, pkg := range requiredTools {
		if _, err := lookPath(name); err != nil {
			missing = append(missing, fmt.Sprintf("%s (%s)", name, pkg))
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing tools: %s", strings.Join(missing, ", "))
	}
	t := &toolPaths{}
	var err error
	if t.goBin, err = lookPath("go", "/usr/local/go/bin/go"); err != nil {
		return nil, err
	}
	t.docker, _ = lookPath("docker")
	t.dockerd, _ = lookPath("dockerd", "/usr/sbin/dockerd")
	t.iperf3, _ = lookPath("iperf3")
	t.bpftool, _ = lookPath("bpftool", "/usr/sbin/bpftool")
	out, err := exec.CommandContext(ctx, t.goBin, "env", "GOMOD").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return nil, errors.New("go env GOMOD: run the benchmark inside the membrane module")
	}
	t.moduleRoot = filepath.Dir(gomod)
	return t, nil
}

// lookPath finds name in PATH or at one of the fallbacks (sbin directories
// are not in every root PATH).
func lookPath(name string, fallbacks ...string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, p := range append(fallbacks, "/usr/sbin/"+name, "/sbin/"+name, "/bin/"+name) {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", name, exec.ErrNotFound)
}

// buildBinaries builds membrane, membraned (which `membrane daemon` runs
// from beside it) and membrane-netload, all static, into dir.
func (t *toolPaths) buildBinaries(ctx context.Context, dir string) error {
	t.membrane = filepath.Join(dir, "membrane")
	t.netload = filepath.Join(dir, "membrane-netload")
	for out, pkg := range map[string]string{
		t.membrane:                      "./cmd/membrane",
		filepath.Join(dir, "membraned"): "./cmd/membraned",
		t.netload:                       "./cmd/membrane-netload",
	} {
		cmd := cmdSpec{
			argv:    []string{t.goBin, "-C", t.moduleRoot, "build", "-trimpath", "-o", out, pkg},
			env:     []string{"CGO_ENABLED=0"},
			timeout: buildTimeout,
		}
		if _, err := cmd.run(ctx); err != nil {
			return fmt.Errorf("build %s: %w", pkg, err)
		}
	}
	return nil
}
