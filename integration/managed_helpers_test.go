package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Helpers for the managed plugin test: the membrane CLI on the host against
// the plugin's management socket, the plugin's process and log.

// managedCLI runs the membrane CLI that `make plugin` built beside the
// plugin's daemon (bin/membrane) on the host: `membrane ARGS... --api-socket SOCK`. It fails t
// unless the CLI exits 0, and returns stdout.
func managedCLI(t testing.TB, sock string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	bin := filepath.Join(h.moduleRoot, "bin", "membrane")
	cmd := exec.CommandContext(ctx, bin, append(args, "--api-socket", sock)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("no answer within %s", cliTimeout)
		}
		t.Fatalf("membrane %s (on the host, against the managed plugin): %v: %s",
			strings.Join(args, " "), err, strings.TrimSpace(o.String()+"\n"+e.String()))
	}
	return o.String()
}

// managedCLIJSON runs managedCLI with -o json and decodes its output.
func managedCLIJSON(t testing.TB, out any, sock string, args ...string) {
	t.Helper()
	stdout := managedCLI(t, sock, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(stdout), out); err != nil {
		t.Fatalf("membrane %s -o json: %v in output:\n%s", strings.Join(args, " "), err, firstLine(stdout, 500))
	}
}

// managedStatus is the part of `membrane status -o json` compared across
// the plugin's restarts.
type managedStatus struct {
	Networks   int `json:"networks"`
	Endpoints  int `json:"endpoints"`
	Identities int `json:"identities"`
}

// managedEndpoint is an endpoint as `membrane endpoint list -o json` shows
// it, reduced to what must survive a restart of the plugin.
type managedEndpoint struct {
	ID            string `json:"id"`
	NetworkID     string `json:"networkId"`
	ContainerID   string `json:"containerId"`
	ContainerName string `json:"containerName"`
	IPv4          string `json:"ipv4"`
	IPv6          string `json:"ipv6"`
	Identity      uint32 `json:"identity"`
}

// managedSnapshot is what the plugin's state shows through the CLI.
type managedSnapshot struct {
	Status     managedStatus
	Endpoints  []managedEndpoint // sorted by ID
	Identities []uint32          // identities listed by `identity list`, sorted
}

// snapshotManaged waits until the plugin lists want endpoints, each with an
// identity of its own (its container's labels are known) and its
// container's name, and returns the state the CLI shows.
func snapshotManaged(t testing.TB, sock string, want int) managedSnapshot {
	t.Helper()
	deadline := time.Now().Add(identityTimeout)
	for {
		var s managedSnapshot
		managedCLIJSON(t, &s.Endpoints, sock, "endpoint", "list")
		ready := len(s.Endpoints) == want
		for _, e := range s.Endpoints {
			ready = ready && e.Identity >= firstUserIdentity && e.ContainerName != ""
		}
		if ready {
			slices.SortFunc(s.Endpoints, func(a, b managedEndpoint) int { return strings.Compare(a.ID, b.ID) })
			managedCLIJSON(t, &s.Status, sock, "status")
			var ids []struct {
				ID uint32 `json:"id"`
			}
			managedCLIJSON(t, &ids, sock, "identity", "list")
			for _, id := range ids {
				s.Identities = append(s.Identities, id.ID)
			}
			slices.Sort(s.Identities)
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("managed plugin: want %d endpoints, each with an identity >= %d and a container name, within %s; endpoint list shows %+v",
				want, firstUserIdentity, identityTimeout, s.Endpoints)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// pluginID returns the full ID of an installed plugin.
func pluginID(t testing.TB, name string) string {
	t.Helper()
	return docker(t, "plugin", "inspect", "--format", "{{.Id}}", name)
}

// pluginPID finds the process of the enabled managed plugin: the
// `/membraned` whose environment holds MEMBRANE_HOST_DEVICE=hostDevice (its
// root directory, the plugin's rootfs, reads as "/" from outside).
func pluginPID(t testing.TB, hostDevice string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.HasPrefix(string(cmdline), "/membraned\x00") {
			continue
		}
		environ, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err == nil && slices.Contains(strings.Split(string(environ), "\x00"), "MEMBRANE_HOST_DEVICE="+hostDevice) {
			pid, _ := strconv.Atoi(e.Name())
			return pid
		}
	}
	t.Fatalf("no `/membraned` process with MEMBRANE_HOST_DEVICE=%s runs: is the managed plugin enabled?", hostDevice)
	return 0
}

// inPlugin runs cmd (a path inside the plugin's rootfs) in the mount
// namespace of the plugin's process, as the daemon would run it.
func inPlugin(t testing.TB, pid int, cmd ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	args := append([]string{"--target", strconv.Itoa(pid), "--mount", "--"}, cmd...)
	out, err := exec.CommandContext(ctx, "nsenter", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("nsenter -t %d -m %s: %w: %s", pid, strings.Join(cmd, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// forwardingDropped is what the daemon logs when it cannot set up
// forwarding (iptables or ip6tables missing or failing, sysctls not
// writable).
const forwardingDropped = "traffic beyond the host may be dropped"

// waitPluginServing waits until the dockerd log, after mark, holds the
// "serving" line plugin id printed at start, and returns the plugin's lines
// from that start.
func waitPluginServing(t testing.TB, mark logMark, id string) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var lines []string
		for _, l := range strings.Split(mark.since(100000), "\n") {
			if strings.Contains(l, "plugin="+id) {
				lines = append(lines, l)
			}
		}
		for _, l := range lines {
			if strings.Contains(l, "msg=serving") {
				return lines
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("plugin %s did not log that it serves within 10s of its start; its lines:\n%s", short(id), strings.Join(lines, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// assertPluginForwarding checks that the plugin id, started after mark, set
// up forwarding and logged no error while it started, and that iptables and ip6tables inside the
// plugin show membrane's FORWARD accept rules, which the host's own
// iptables sees too (the plugin uses the host's backend).
func assertPluginForwarding(t testing.TB, mark logMark, id string) {
	t.Helper()
	for _, l := range waitPluginServing(t, mark, id) {
		switch {
		case strings.Contains(l, forwardingDropped):
			t.Errorf("the managed plugin could not set up forwarding: %s", l)
		case strings.Contains(l, "level=ERROR"):
			t.Errorf("the managed plugin logged an error at start: %s", l)
		}
	}
	pid := pluginPID(t, managedHostDevice)
	for _, tool := range []string{"iptables", "ip6tables"} {
		out, err := inPlugin(t, pid, "/usr/sbin/"+tool, "-w", "-t", "filter", "-S", "MEMBRANE-FORWARD")
		if err != nil {
			t.Errorf("%s inside the plugin: %v", tool, err)
			continue
		}
		for _, rule := range []string{"-A MEMBRANE-FORWARD -i mbr+ -j ACCEPT", "-A MEMBRANE-FORWARD -o mbr+ -j ACCEPT"} {
			if !strings.Contains(out, rule) {
				t.Errorf("%s -S MEMBRANE-FORWARD inside the plugin: want %q, got:\n%s", tool, rule, out)
			}
		}
		host, err := exec.Command(tool, "-w", "-t", "filter", "-S", "FORWARD").CombinedOutput()
		if err != nil {
			t.Errorf("%s -S FORWARD on the host: %v: %s", tool, err, host)
		} else if !strings.Contains(string(host), "-j MEMBRANE-FORWARD") {
			t.Errorf("%s on the host does not see the FORWARD jump to MEMBRANE-FORWARD (does the plugin's iptables use another backend?):\n%s", tool, host)
		}
	}
}
