package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	managedPlugin     = "membrane-it-managed:latest"
	managedHostDevice = "mbrit1"
	managedBPFDir     = "/sys/fs/bpf/membrane-it-managed"
)

// TestManagedPlugin: membrane built and created with `make plugin`, enabled
// in the harness's dockerd, serves a dual-stack network on which two
// containers reach each other over IPv4 and IPv6, by address and by name;
// disabling and removing the plugin then works.
func TestManagedPlugin(t *testing.T) {
	t.Run(membraneDriver.Name, func(t *testing.T) {
		requireEnv(t)
		if _, err := os.Stat("/sys/class/net/" + managedHostDevice); err == nil {
			t.Fatalf("host device %s exists already: a managed plugin from an earlier run is still enabled?", managedHostDevice)
		}
		if missing := missingPluginCaps(t); len(missing) > 0 {
			t.Fatalf("config.json asks for %v, which this host's capability bounding set lacks: runc cannot start the plugin on hosts like this one", missing)
		}
		dlog := markLog(h.dockerdLog)
		// make-plugin.sh creates these bind sources on the host; remove
		// them afterwards if they were not there before (and are empty).
		var created []string
		for _, d := range []string{"/var/lib/membrane", "/run/membrane"} {
			if _, err := os.Stat(d); os.IsNotExist(err) {
				created = append(created, d)
			}
		}
		t.Cleanup(func() {
			// A plugin left enabled would block dockerd's shutdown.
			_, _ = dockerErr("plugin", "disable", "-f", managedPlugin)
			if _, err := dockerErr("plugin", "rm", "-f", managedPlugin); err != nil && !strings.Contains(err.Error(), "not found") {
				t.Errorf("remove managed plugin: %v", err)
			}
			_ = exec.Command("ip", "link", "del", managedHostDevice).Run()
			_ = os.RemoveAll(managedBPFDir)
			for _, d := range created {
				_ = os.Remove(d)
			}
			if t.Failed() {
				t.Logf("dockerd log (holds the plugin's output) during this test:\n%s", dlog.since(150))
			}
		})

		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		name, tag, _ := strings.Cut(managedPlugin, ":")
		cmd := exec.CommandContext(ctx, "make", "plugin", "PLUGIN="+name, "PLUGIN_TAG="+tag, "GO="+h.goBin)
		cmd.Dir = h.moduleRoot
		cmd.Env = append(h.dockerEnv, "PATH="+filepath.Dir(h.goBin)+":"+os.Getenv("PATH"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make plugin: %v\n%s", err, out)
		}

		managedState := filepath.Join(h.tmp, "managed-state")
		managedAPI := filepath.Join(h.tmp, "managed-api")
		for _, d := range []string{managedState, managedAPI} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		// Keep clear of the legacy test daemon: own device, own IPv4
		// range, own state; Docker's socket is $TMP/docker.sock, which the
		// plugin sees as /var/run/docker-host/docker.sock.
		ipv4Range := fmt.Sprintf("%s/18", addrAt(h.v4Base, 192*256))
		docker(t, "plugin", "set", managedPlugin,
			"MEMBRANE_HOST_DEVICE="+managedHostDevice,
			"MEMBRANE_BPF_DIR="+managedBPFDir,
			"MEMBRANE_IPV4_RANGE="+ipv4Range,
			"MEMBRANE_LOG_LEVEL=debug",
			"state.source="+managedState,
			"api.source="+managedAPI,
			"docker.source="+h.tmp,
		)
		start := time.Now()
		docker(t, "plugin", "enable", "--timeout", "60", managedPlugin)
		t.Logf("plugin enabled in %s", time.Since(start).Round(time.Millisecond))

		// Explicit pools: the legacy daemon's automatic IPv6 pool comes from
		// the same host ULA prefix.
		d := netDriver{Name: "managed", Driver: managedPlugin, IPAM: managedPlugin}
		net := d.newNetwork(t, nextSubnets())
		nameA := uniqueName("managed-a")
		a := runContainer(t, net, "--name", nameA)
		b := runContainer(t, net)
		a4, a6 := containerIPs(t, a, net)
		b4, b6 := containerIPs(t, b, net)
		assertReach(t, b, a4, a6, nameA)
		assertReach(t, a, b4, b6)
	})
}

// capBits numbers the Linux capabilities config.json may name.
var capBits = map[string]uint{
	"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
	"CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
	"CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
	"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
	"CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
	"CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
	"CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
	"CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
	"CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
	"CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
	"CAP_CHECKPOINT_RESTORE": 40,
}

// missingPluginCaps lists the capabilities config.json asks for that this
// process's bounding set (and so dockerd's and runc's) does not hold.
func missingPluginCaps(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.moduleRoot, "config.json"))
	if err != nil {
		t.Fatalf("read the plugin's config.json: %v", err)
	}
	var cfg struct {
		Linux struct{ Capabilities []string }
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("parse config.json: %v", err)
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	var bnd uint64
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			if bnd, err = strconv.ParseUint(strings.TrimSpace(v), 16, 64); err != nil {
				t.Fatalf("parse CapBnd %q: %v", v, err)
			}
		}
	}
	var missing []string
	for _, c := range cfg.Linux.Capabilities {
		bit, known := capBits[c]
		if !known {
			t.Errorf("config.json asks for unknown capability %q", c)
			continue
		}
		if bnd&(1<<bit) == 0 {
			missing = append(missing, c)
		}
	}
	return missing
}
