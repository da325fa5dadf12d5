package integration

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dockerdReadyLimit bounds how long a restarted dockerd may take to answer
// its API. Docker waits up to 30 s for a plugin it cannot reach, once per
// network or container that needs it; a start that hangs on membrane shows
// up as 30 s or more, a healthy one takes a few seconds here.
const dockerdReadyLimit = 20 * time.Second

// restartFixture is a membrane network with three containers that Docker
// restarts on its own (--restart always), and a policy over their labels:
// the client reaches the server on TCP 7000 and 7002, nothing else does.
type restartFixture struct {
	net     string
	netID   string
	app     string
	ids     map[string]string // role → container ID
	clients []string          // containers started later with role=client
	// up is when dockerd last answered after a restart: check reports
	// how long after it policy let the client reach the server again.
	up time.Time
	// firstConnect is what the last check measured from up.
	firstConnect time.Duration
}

const (
	restartStopTimeout = "1" // seconds: probe ignores SIGTERM as PID 1

	// dockerdDownLong is how long dockerd stays down in the plain restart.
	dockerdDownLong = 16 * time.Second
	// firstConnectLimit bounds the time from dockerd answering to the
	// restarted client reaching the server through policy: both need
	// their identities, which membrane learns from Docker's API.
	firstConnectLimit = 8 * time.Second
)

func newRestartFixture(t *testing.T) *restartFixture {
	t.Helper()
	f := &restartFixture{
		net: membraneDriver.newNetwork(t, subnets{}),
		app: uniqueName("rst"),
		ids: map[string]string{},
	}
	f.netID = docker(t, "network", "inspect", "--format", "{{.Id}}", f.net)
	for _, role := range []string{"server", "client", "other"} {
		f.ids[role] = runContainer(t, f.net, f.runFlags(role)...)
	}
	deleteAllPolicyAtCleanup(t)
	importPolicy(t, fmt.Sprintf(`[{
  "labels": [{"key": "name", "value": "restart"}],
  "endpointSelector": {"matchLabels": {"app": %[1]q, "role": "server"}},
  "ingress": [{
    "fromEndpoints": [{"matchLabels": {"app": %[1]q, "role": "client"}}],
    "toPorts": [{"ports": [{"port": "7000", "protocol": "TCP"}, {"port": "7002", "protocol": "TCP"}]}]
  }]
}]`, f.app))
	return f
}

func (f *restartFixture) runFlags(role string) []string {
	return []string{"--restart", "always", "--stop-timeout", restartStopTimeout,
		"--label", "app=" + f.app, "--label", "role=" + role}
}

// check waits until every fixture container runs and has its identity,
// then checks the policy: client → server allowed over IPv4 and IPv6,
// other → server refused, client → server UDP refused.
func (f *restartFixture) check(t *testing.T, stage string) {
	t.Helper()
	f.waitRunning(t)
	if !f.up.IsZero() {
		f.waitFirstConnect(t, stage)
	}
	byName := map[string]string{}
	addrs := map[string][2]string{}
	for role, id := range f.ids {
		v4, v6 := containerIPs(t, id, f.net)
		byName[role] = v6
		addrs[role] = [2]string{v4, v6}
	}
	waitIdentities(t, byName)
	server := addrs["server"]
	for _, addr := range server {
		if err := retryOnce(t, stage+": client -> server", func() error {
			return tcpFrom(f.ids["client"], addr, "", 3*time.Second)
		}); err != nil {
			t.Errorf("%s: TCP client -> server %s: want an echo (policy allows it): %v", stage, addr, err)
		}
		if err := tcpFrom(f.ids["other"], addr, "", time.Second); err == nil {
			t.Errorf("%s: TCP other -> server %s: got an echo, want none (policy denies it)", stage, addr)
		}
		if err := udpFrom(f.ids["client"], addr, "", time.Second); err == nil {
			t.Errorf("%s: UDP client -> server %s: got an echo, want none (policy allows TCP only)", stage, addr)
		}
	}
	if got := f.endpointCount(t); got != len(f.ids)+len(f.clients) {
		t.Errorf("%s: membrane lists %d endpoints on the network, want %d (one per running container)", stage, got, len(f.ids)+len(f.clients))
	}
}

// waitFirstConnect waits until the client's TCP echo to the server gets
// through (the policy allows it once both have their identities), and
// reports how long after dockerd answered that was.
func (f *restartFixture) waitFirstConnect(t *testing.T, stage string) {
	t.Helper()
	_, v6 := containerIPs(t, f.ids["server"], f.net)
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := tcpFrom(f.ids["client"], v6, "", time.Second)
		if err == nil {
			f.firstConnect = time.Since(f.up)
			t.Logf("%s: client -> server connected %s after dockerd answered", stage, f.firstConnect.Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: client -> server %s still fails %s after dockerd answered: %v", stage, v6, time.Since(f.up).Round(time.Second), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitRunning waits until Docker reports every fixture container running.
func (f *restartFixture) waitRunning(t *testing.T) {
	t.Helper()
	for _, id := range f.ids {
		waitContainerRunning(t, id, 60*time.Second)
	}
}

// waitContainerRunning waits until Docker reports the container running.
func waitContainerRunning(t testing.TB, id string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := containerState(t, id)
		if s.Running {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s not running %s later: %s, exit %d, error %q", short(id), timeout, s.Status, s.ExitCode, s.Error)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// endpointCount is how many membrane endpoints are on the fixture network.
func (f *restartFixture) endpointCount(t *testing.T) int {
	t.Helper()
	return len(endpointIDs(t, f.netID))
}

type dockerState struct {
	Status    string
	Running   bool
	ExitCode  int
	Error     string
	StartedAt string
}

func containerState(t testing.TB, id string) dockerState {
	t.Helper()
	var s dockerState
	out := docker(t, "inspect", "--format", "{{json .State}}", id)
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("docker inspect %s: %v in %q", short(id), err, out)
	}
	return s
}

// stopDockerdT stops the harness's dockerd (SIGTERM) and waits for it.
func stopDockerdT(t testing.TB) {
	t.Helper()
	start := time.Now()
	stopDockerd()
	if !isClosed(h.dockerdDone) {
		t.Fatal("dockerd did not stop")
	}
	t.Logf("dockerd stopped in %s", time.Since(start).Round(time.Millisecond))
}

// startDockerdT starts the harness's dockerd again and fails t unless its
// API answers within dockerdReadyLimit.
func startDockerdT(t testing.TB, what string) time.Time {
	t.Helper()
	if err := launchDockerd(); err != nil {
		t.Fatal(err)
	}
	ready, err := waitDockerd(dockerdStartTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: dockerd answered %s after it started", what, ready.Round(time.Millisecond))
	if ready > dockerdReadyLimit {
		t.Errorf("%s: dockerd took %s to answer, want under %s (a plugin wait?)", what, ready.Round(time.Millisecond), dockerdReadyLimit)
	}
	return time.Now()
}

// setLiveRestore turns live-restore on or off in the running dockerd
// (it is one of the options dockerd reloads on SIGHUP).
func setLiveRestore(t testing.TB, on bool) {
	t.Helper()
	if err := writeDockerdConfig(on); err != nil {
		t.Fatal(err)
	}
	if err := h.dockerd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if got := docker(t, "info", "--format", "{{.LiveRestoreEnabled}}"); got == fmt.Sprint(on) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("dockerd does not report live-restore %v 10s after SIGHUP", on)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDockerdRestart restarts the harness's dockerd under a membrane
// network whose containers Docker restarts itself, in every order a host
// can bring the two daemons up: dockerd alone, with live-restore, membrane
// first, dockerd first, and dockerd first while a killed membrane left its
// socket behind. Each time dockerd must answer within dockerdReadyLimit,
// the containers must come back with connectivity, and the same policy
// must hold.
func TestDockerdRestart(t *testing.T) {
	requireEnv(t)
	requireMembrane(t)
	f := newRestartFixture(t)
	f.check(t, "before any restart")

	t.Run("dockerd", func(t *testing.T) {
		stopDockerdT(t)
		// Long enough for membrane's label watcher to back off for
		// several seconds between attempts to reach Docker.
		time.Sleep(dockerdDownLong)
		f.up = startDockerdT(t, "dockerd restart")
		f.check(t, "after the dockerd restart")
		if took := f.firstConnect; took > firstConnectLimit {
			t.Errorf("policy let the restarted client reach the server only %s after dockerd answered, want under %s (identities late?)", took.Round(time.Millisecond), firstConnectLimit)
		}
	})

	t.Run("live-restore", func(t *testing.T) {
		setLiveRestore(t, true)
		t.Cleanup(func() { setLiveRestore(t, false) })

		servers := containerIPsList(t, f.ids["server"], f.net)
		var streams []string
		for _, addr := range servers {
			id, err := runContainerCmdErr(f.net, []string{"--label", "app=" + f.app, "--label", "role=client"},
				"/bin/probe", "stream", "-max-gap", streamMaxGap.String(), "-stop-file", stopFile, "-max-duration", "90s", addr, streamPort)
			if id != "" {
				removeAtCleanup(t, id)
				streams = append(streams, id)
				f.clients = append(f.clients, id)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() { f.clients = nil })
		for _, id := range streams {
			waitLog(t, id, "connected", 10*time.Second)
		}
		started := map[string]string{}
		for role, id := range f.ids {
			started[role] = containerState(t, id).StartedAt
		}
		before := endpointIDs(t, f.netID)

		stopDockerdT(t)
		time.Sleep(2 * time.Second) // traffic flows while dockerd is down
		f.up = startDockerdT(t, "dockerd restart with live-restore")

		for role, id := range f.ids {
			if s := containerState(t, id); s.StartedAt != started[role] || !s.Running {
				t.Errorf("%s: started at %s, running %v; want the container started at %s still running", role, s.StartedAt, s.Running, started[role])
			}
		}
		if after := endpointIDs(t, f.netID); strings.Join(after, ",") != strings.Join(before, ",") {
			t.Errorf("membrane endpoints changed over a live-restore restart:\nbefore %v\nafter  %v", before, after)
		}
		for _, id := range streams {
			execIn(t, id, "touch", stopFile)
		}
		for _, id := range streams {
			code := docker(t, "wait", id)
			logs := docker(t, "logs", id)
			if code != "0" {
				t.Errorf("stream %s across the restart: exit %s: %s", short(id), code, logs)
			} else {
				t.Logf("stream %s across the restart: %s", short(id), strings.ReplaceAll(logs, "\n", "; "))
			}
			docker(t, "rm", "-f", id)
		}
		f.clients = nil
		f.check(t, "after the live-restore restart")

		newer := runContainer(t, f.net, "--label", "app="+f.app, "--label", "role=client")
		_, v6 := containerIPs(t, newer, f.net)
		waitIdentities(t, map[string]string{"newer client": v6})
		for _, addr := range servers {
			if err := tcpFrom(newer, addr, "", 3*time.Second); err != nil {
				t.Errorf("client started after the restart -> server %s: %v", addr, err)
			}
		}
		docker(t, "rm", "-f", newer)
	})

	t.Run("membrane first", func(t *testing.T) {
		stopDockerdT(t)
		stopMembrane()
		startMembrane(t) // while Docker is down: it must not wait for Docker
		time.Sleep(time.Second)
		f.up = startDockerdT(t, "dockerd after membrane")
		f.check(t, "membrane first, then dockerd")
	})

	t.Run("dockerd first", func(t *testing.T) {
		stopDockerdT(t)
		stopMembrane()
		f.dockerdThenMembrane(t, "dockerd first, then membrane")
	})

	t.Run("dockerd first after membrane was killed", func(t *testing.T) {
		// SIGKILL leaves the plugin socket file behind: Docker finds the
		// plugin but cannot connect until membrane is back.
		killMembrane(t)
		stopDockerdT(t)
		f.dockerdThenMembrane(t, "killed membrane, dockerd, then membrane")
	})
}

// dockerdThenMembrane starts dockerd, and membrane 3 s later, with both
// stopped: dockerd waits for the plugin while it restores the network and
// the containers, and must go on as soon as membrane answers.
func (f *restartFixture) dockerdThenMembrane(t *testing.T, stage string) {
	t.Helper()
	start := time.Now()
	if err := launchDockerd(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	startMembrane(t)
	membraneUp := time.Since(start)
	if _, err := waitDockerd(dockerdStartTimeout); err != nil {
		t.Fatal(err)
	}
	f.up = time.Now()
	ready := f.up.Sub(start)
	t.Logf("%s: membrane answered %s and dockerd %s after dockerd started", stage, membraneUp.Round(time.Millisecond), ready.Round(time.Millisecond))
	if ready-membraneUp > dockerdReadyLimit {
		t.Errorf("%s: dockerd answered %s after membrane did, want under %s", stage, (ready - membraneUp).Round(time.Millisecond), dockerdReadyLimit)
	}
	f.check(t, stage)
}

// containerIPsList is containerIPs as a list, IPv4 first.
func containerIPsList(t testing.TB, id, net string) []string {
	t.Helper()
	v4, v6 := containerIPs(t, id, net)
	return []string{v4, v6}
}

// endpointIDs lists, sorted, the IDs of membrane's endpoints on the
// network with Docker ID netID.
func endpointIDs(t testing.TB, netID string) []string {
	t.Helper()
	var eps []struct {
		ID      string `json:"id"`
		Network string `json:"networkId"`
	}
	cliJSON(t, &eps, "endpoint", "list")
	var ids []string
	for _, e := range eps {
		if e.Network == netID {
			ids = append(ids, e.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

// waitLog waits until the container's log holds want.
func waitLog(t testing.TB, id, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		logs := docker(t, "logs", id)
		if strings.Contains(logs, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s: no %q in its log after %s: %s", short(id), want, timeout, logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
