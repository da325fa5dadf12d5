package integration

import (
	"context"
	"encoding/json"
	gonet "net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	// managedPlugin is the local name (--alias) the test installs the
	// plugin under from the registry; Docker adds the tag, and the driver
	// name is the tagged one.
	managedPlugin     = "membrane-it-managed:latest"
	managedRepo       = "membrane-it" // repository in the test's registry
	managedHostDevice = "mbrit1"
	managedBPFDir     = "/sys/fs/bpf/membrane-it-managed"
	// managedDown is how long the plugin stays disabled, with its
	// containers' streams running.
	managedDown = 2 * time.Second
)

// TestManagedPlugin: membrane as Docker users run it, a managed plugin.
// `make plugin` builds it under a registry name; it is pushed to a local
// registry as v1 and v2 (the same rootfs), removed, and installed back with
// `docker plugin install --grant-all-permissions --alias`, its settings
// (pools, log level, metrics address, mount sources) given at install.
// Enabled, it
//   - sets up forwarding: no "traffic beyond the host may be dropped" in
//     its log, and iptables and ip6tables run inside the plugin and show
//     membrane's FORWARD accept rules (also seen by the host's iptables);
//   - serves Prometheus metrics on the address set at install, and carves
//     a network's dynamic IPv4 pool from the range set at install;
//   - serves a dual-stack network on which two containers reach each other
//     over IPv4 and IPv6, by address and by name;
//   - answers the membrane CLI on the host through its `api` mount
//     (status, endpoint list, identity list).
//
// Then, while the two containers exchange a TCP stream over IPv4 and over
// IPv6: a plain `docker plugin disable` is refused (the plugin is in use);
// `disable -f` stops the daemon and the containers still reach each other;
// `enable` brings it back; disabled again, the plugin is upgraded to v2
// (`docker plugin upgrade`: env settings are kept, mount sources are set
// again, as Docker drops them) and enabled. The streams never
// pause for more than a second, networks, endpoints (addresses, identities)
// and identities are the same after each restart, and a container started
// after the upgrade reaches the old ones. Last, dockerd restarts: it starts
// the plugin, and containers with --restart always come back connected.
func TestManagedPlugin(t *testing.T) {
	t.Run(membraneDriver.Name, func(t *testing.T) {
		requireEnv(t)
		if _, err := os.Stat("/sys/class/net/" + managedHostDevice); err == nil {
			t.Fatalf("host device %s exists already: a managed plugin from an earlier run is still enabled?", managedHostDevice)
		}
		if missing := missingPluginCaps(t); len(missing) > 0 {
			t.Fatalf("config.json asks for %v, which this host's capability bounding set lacks: runc cannot start the plugin on hosts like this one", missing)
		}
		testStart := time.Now()
		dlog := markLog(h.dockerdLog)
		// make-plugin.sh creates these bind sources on the host; remove
		// them afterwards if they were not there before (and are empty).
		var created []string
		for _, d := range []string{"/var/lib/membrane", "/run/membrane"} {
			if _, err := os.Stat(d); os.IsNotExist(err) {
				created = append(created, d)
			}
		}
		registry := startRegistry(t)
		remote := registry + "/" + managedRepo
		t.Cleanup(func() {
			// A plugin left enabled would block dockerd's shutdown.
			for _, p := range []string{managedPlugin, remote + ":v1", remote + ":v2"} {
				_, _ = dockerErr("plugin", "disable", "-f", p)
				if _, err := dockerErr("plugin", "rm", "-f", p); err != nil && !strings.Contains(err.Error(), "not found") {
					t.Errorf("remove managed plugin: %v", err)
				}
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

		// Build with make, push v1 and v2, and remove them locally.
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "make", "plugin", "PLUGIN="+remote, "PLUGIN_TAG=v1", "GO="+h.goBin)
		cmd.Dir = h.moduleRoot
		cmd.Env = append(h.dockerEnv, "PATH="+filepath.Dir(h.goBin)+":"+os.Getenv("PATH"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make plugin: %v\n%s", err, out)
		}
		// v2 is the same rootfs under another tag. Docker refuses to create
		// a plugin whose content it holds already, so v1 goes first.
		for _, tag := range []string{"v1", "v2"} {
			if tag != "v1" {
				docker(t, "plugin", "create", remote+":"+tag, filepath.Join(h.moduleRoot, "build", "plugin"))
			}
			docker(t, "plugin", "push", remote+":"+tag)
			docker(t, "plugin", "rm", remote+":"+tag)
		}
		t.Logf("plugin built and pushed to %s as v1 and v2 in %s", remote, time.Since(testStart).Round(time.Millisecond))

		managedState := filepath.Join(h.tmp, "managed-state")
		managedAPI := filepath.Join(h.tmp, "managed-api")
		for _, d := range []string{managedState, managedAPI} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		sock := filepath.Join(managedAPI, "membrane.sock")
		metricsAddr := freeLoopbackAddr(t)
		// Keep clear of the legacy test daemon: own device, own IPv4
		// range, own state; Docker's socket is $TMP/docker.sock, which the
		// plugin sees as /var/run/docker-host/docker.sock.
		ipv4Range := netip.PrefixFrom(addrAt(h.v4Base, 192*256), 18)
		mountSettings := []string{
			"state.source=" + managedState,
			"api.source=" + managedAPI,
			"docker.source=" + h.tmp,
		}
		mark := markLog(h.dockerdLog)
		docker(t, append([]string{"plugin", "install", "--grant-all-permissions", "--alias", managedPlugin, remote + ":v1",
			"MEMBRANE_HOST_DEVICE=" + managedHostDevice,
			"MEMBRANE_BPF_DIR=" + managedBPFDir,
			"MEMBRANE_IPV4_RANGE=" + ipv4Range.String(),
			"MEMBRANE_LOG_LEVEL=debug",
			"MEMBRANE_METRICS_ADDRESS=" + metricsAddr,
		}, mountSettings...)...)
		if got := docker(t, "plugin", "inspect", "--format", "{{.Enabled}} {{.PluginReference}}", managedPlugin); got != "true "+remote+":v1" {
			t.Fatalf("installed plugin %s: want enabled, from %s:v1; inspect shows %q", managedPlugin, remote, got)
		}
		id := pluginID(t, managedPlugin)
		assertPluginForwarding(t, mark, id)

		// Explicit IPv6 pool: the legacy daemon's automatic one comes from
		// the same host ULA prefix. The IPv4 pool is the plugin's choice.
		v6 := nextSubnets().V6
		net := newNetwork(t, uniqueName("managed"), "-d", managedPlugin, "--ipam-driver", managedPlugin, "--ipv6", "--subnet", v6.String())
		if v4pool, _ := networkPools(t, net); !ipv4Range.Contains(v4pool.Subnet.Addr()) || v4pool.Subnet.Bits() < ipv4Range.Bits() {
			t.Errorf("network %s: IPv4 pool %s, want one inside MEMBRANE_IPV4_RANGE %s set at install", net, v4pool.Subnet, ipv4Range)
		}
		nameA := uniqueName("managed-a")
		a := runContainer(t, net, "--name", nameA)
		b := runContainer(t, net)
		// Whatever fails below, the plugin must be enabled again before
		// the containers and the network are removed.
		t.Cleanup(func() { _, _ = dockerErr("plugin", "enable", "--timeout", "60", managedPlugin) })
		a4, a6 := containerIPs(t, a, net)
		b4, b6 := containerIPs(t, b, net)
		assertReach(t, b, a4, a6, nameA)
		assertReach(t, a, b4, b6)

		// The CLI on the host, through the api mount.
		before := snapshotManaged(t, sock, 2)
		if before.Status.Networks != 1 || before.Status.Endpoints != 2 {
			t.Errorf("membrane status -o json: want 1 network and 2 endpoints, got %+v", before.Status)
		}
		for _, ctr := range []struct{ id, v4, v6 string }{{a, a4, a6}, {b, b4, b6}} {
			if !slices.ContainsFunc(before.Endpoints, func(e managedEndpoint) bool {
				return e.ContainerID == ctr.id && stripLen(e.IPv4) == ctr.v4 && stripLen(e.IPv6) == canonical(ctr.v6)
			}) {
				t.Errorf("membrane endpoint list: no endpoint of container %s with %s and %s: %+v", short(ctr.id), ctr.v4, ctr.v6, before.Endpoints)
			}
		}
		if out := managedCLI(t, sock, "status"); !strings.Contains(out, "endpoints:       2") {
			t.Errorf("membrane status: want \"endpoints:       2\", got:\n%s", out)
		}
		if out := managedCLI(t, sock, "endpoint", "list"); !strings.Contains(out, nameA) || !strings.Contains(out, canonical(a6)) {
			t.Errorf("membrane endpoint list: want container %s (%s) listed, got:\n%s", nameA, a6, out)
		}
		if m, err := scrapeMetrics(metricsAddr); err != nil {
			t.Errorf("metrics on MEMBRANE_METRICS_ADDRESS %s: %v", metricsAddr, err)
		} else if m["membrane_endpoints"] != 2 {
			t.Errorf("metrics on %s: membrane_endpoints = %v, want 2", metricsAddr, m["membrane_endpoints"])
		}
		if t.Failed() {
			t.FailNow()
		}

		streams := []*streamClient{startStream(t, b, a4), startStream(t, b, a6)}

		// Disable: refused while in use, forced with -f; the datapath
		// keeps forwarding while no daemon runs.
		if _, err := dockerErr("plugin", "disable", managedPlugin); err == nil || !strings.Contains(err.Error(), "in use") {
			t.Errorf("docker plugin disable of a plugin with a network in use: want an \"in use\" error, got %v", err)
		}
		docker(t, "plugin", "disable", "-f", managedPlugin)
		assertReach(t, b, a4, a6)
		time.Sleep(managedDown)
		mark = markLog(h.dockerdLog)
		docker(t, "plugin", "enable", "--timeout", "60", managedPlugin)
		assertPluginForwarding(t, mark, id)
		if after := snapshotManaged(t, sock, 2); !reflect.DeepEqual(after, before) {
			t.Errorf("state after disable -f and enable differs:\nbefore %+v\nafter  %+v", before, after)
		}

		// Upgrade to v2 while disabled.
		docker(t, "plugin", "disable", "-f", managedPlugin)
		docker(t, "plugin", "upgrade", "--grant-all-permissions", "--skip-remote-check", managedPlugin, remote+":v2")
		if got := docker(t, "plugin", "inspect", "--format", "{{.Enabled}} {{.PluginReference}} {{.Settings.Env}}", managedPlugin); !strings.HasPrefix(got, "false "+remote+":v2 ") ||
			!strings.Contains(got, "MEMBRANE_IPV4_RANGE="+ipv4Range.String()) || !strings.Contains(got, "MEMBRANE_METRICS_ADDRESS="+metricsAddr) {
			t.Errorf("plugin after upgrade: want disabled, from %s:v2, with the install settings; inspect shows %q", remote, got)
		}
		// Docker keeps env settings across an upgrade but not mount
		// sources (it stores them in the plugin's config, which the
		// upgrade replaces): enabled as it is, the plugin would take its
		// state from the default /var/lib/membrane. They are set again.
		t.Logf("mount sources after the upgrade: %s", docker(t, "plugin", "inspect", "--format",
			"{{range .Config.Mounts}}{{.Name}}={{.Source}} {{end}}", managedPlugin))
		docker(t, append([]string{"plugin", "set", managedPlugin}, mountSettings...)...)
		mark = markLog(h.dockerdLog)
		docker(t, "plugin", "enable", "--timeout", "60", managedPlugin)
		if got := pluginID(t, managedPlugin); got != id {
			t.Errorf("plugin ID changed across the upgrade: %s, then %s", short(id), short(got))
		}
		assertPluginForwarding(t, mark, id)
		after := snapshotManaged(t, sock, 2)
		if !reflect.DeepEqual(after, before) {
			t.Errorf("state after the upgrade to v2 differs:\nbefore %+v\nafter  %+v", before, after)
		}

		// The streams ran all along.
		time.Sleep(time.Second)
		execIn(t, b, "touch", stopFile)
		for _, s := range streams {
			s.check(t)
		}

		// The upgraded daemon serves new containers.
		c := runContainer(t, net)
		c4, c6 := containerIPs(t, c, net)
		assertReach(t, c, a4, a6, nameA)
		assertReach(t, a, c4, c6)

		// dockerd restarts: it starts the plugin itself, then the
		// containers Docker restarts on its own.
		nameD := uniqueName("managed-d")
		d := runContainer(t, net, "--name", nameD, "--restart", "always", "--stop-timeout", restartStopTimeout)
		e := runContainer(t, net, "--restart", "always", "--stop-timeout", restartStopTimeout)
		stopDockerdT(t)
		startDockerdT(t, "dockerd restart with the managed plugin")
		for _, ctr := range []string{d, e} {
			waitContainerRunning(t, ctr, 60*time.Second)
		}
		d4, d6 := containerIPs(t, d, net)
		assertReach(t, e, d4, d6, nameD)
		t.Logf("managed plugin test took %s", time.Since(testStart).Round(time.Millisecond))
	})
}

// freeLoopbackAddr returns 127.0.0.1:PORT with a port free right now.
func freeLoopbackAddr(t testing.TB) string {
	t.Helper()
	ln, err := gonet.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
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
