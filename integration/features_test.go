package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestNetworkDisconnect: a running container on networks A and B is
// disconnected from B without error; its B addresses leave its interfaces,
// a peer on B no longer reaches them, and it still reaches its peer on A.
// Connecting it to B again gives it B addresses that its peer on B reaches.
// With membrane the daemon's endpoint list loses the B endpoint on
// disconnect and gains one again on reconnect.
func TestNetworkDisconnect(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d netDriver) {
		netA := d.newNetwork(t, subnets{})
		netB := d.newNetwork(t, subnets{})
		x := runContainer(t, netA)
		docker(t, "network", "connect", netB, x)
		peerA := runContainer(t, netA)
		peerB := runContainer(t, netB)

		xb4, xb6 := containerIPs(t, x, netB)
		pa4, pa6 := containerIPs(t, peerA, netA)
		pb4, pb6 := containerIPs(t, peerB, netB)
		// The starting point: x is reachable on B and reaches both peers.
		assertReach(t, peerB, xb4, xb6)
		assertReach(t, x, pa4, pa6, pb4, pb6)

		var before int
		if d.isMembrane() {
			eps := listEndpoints(t)
			before = len(eps)
			if _, ok := endpointByAddr(eps, xb6); !ok {
				t.Fatalf("membrane endpoint list shows no endpoint for x's B address %s before disconnect:\n%s", xb6, describeEndpoints(eps))
			}
		}

		docker(t, "network", "disconnect", netB, x)

		if _, ok := containerNetworks(t, x)[netB]; ok {
			t.Errorf("docker inspect still shows %s on %s after disconnect", short(x), netB)
		}
		addrs := execIn(t, x, "ip", "addr")
		for _, a := range []string{xb4, xb6} {
			if strings.Contains(addrs, " "+canonical(a)+"/") {
				t.Errorf("`ip addr` in the container still shows the B address %s after disconnect:\n%s", a, addrs)
			}
		}
		assertNoReach(t, peerB, xb4, xb6)
		assertReach(t, x, pa4, pa6)

		if d.isMembrane() {
			waitEndpointCount(t, "after disconnect", before-1, xb6, false)
		}

		docker(t, "network", "connect", netB, x)
		nb4, nb6 := containerIPs(t, x, netB)
		addrs = execIn(t, x, "ip", "addr")
		for _, a := range []string{nb4, nb6} {
			if !strings.Contains(addrs, " "+canonical(a)+"/") {
				t.Errorf("`ip addr` in the container lacks the new B address %s after reconnect:\n%s", a, addrs)
			}
		}
		assertReach(t, peerB, nb4, nb6)
		assertReach(t, x, pa4, pa6, pb4, pb6)

		if d.isMembrane() {
			waitEndpointCount(t, "after reconnect", before, nb6, true)
		}
	})
}

// waitEndpointCount polls `membrane endpoint list` for up to 5 s until it
// shows want endpoints and an endpoint for IPv6 address v6 exists (present)
// or does not (!present); it fails t otherwise.
func waitEndpointCount(t testing.TB, when string, want int, v6 string, present bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		eps := listEndpoints(t)
		_, found := endpointByAddr(eps, v6)
		if len(eps) == want && found == present {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("membrane endpoint list %s: %d endpoints (want %d), endpoint for %s present %v (want %v):\n%s",
				when, len(eps), want, v6, found, present, describeEndpoints(eps))
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func describeEndpoints(eps []endpointInfo) string {
	var b strings.Builder
	for _, e := range eps {
		fmt.Fprintf(&b, "  %s container %s ipv4 %s ipv6 %s identity %d\n", short(e.ID), short(e.ContainerID), e.IPv4, e.IPv6, e.Identity)
	}
	return b.String()
}

// TestMacAddressIsHonoured: `docker run --mac-address` puts exactly that
// address on the container's eth0, and a peer reaches the container.
func TestMacAddressIsHonoured(t *testing.T) {
	forEachDriver(t, func(t *testing.T, d netDriver) {
		const mac = "02:42:ac:11:00:99"
		net := d.newNetwork(t, subnets{})
		c := runContainerWithMAC(t, net, mac)

		if got := strings.TrimSpace(execIn(t, c, "cat", "/sys/class/net/eth0/address")); got != mac {
			t.Errorf("eth0 in the container has MAC %q, want %q", got, mac)
		}
		if ep := containerNetworks(t, c)[net]; !strings.EqualFold(ep.MacAddress, mac) {
			t.Logf("docker inspect shows MAC %q on %s (want %q)", ep.MacAddress, net, mac)
		}
		c4, c6 := containerIPs(t, c, net)
		peer := runContainer(t, net)
		assertReach(t, peer, c4, c6)
	})
}

// runContainerWithMAC starts a test container with `docker run
// --mac-address mac --network network` and removes it when the test ends.
// A docker CLI of API 1.44 or later refuses --mac-address with --network
// against an older daemon (it would send the address per network, which
// older daemons lack); then the container is created through the Engine
// API of the daemon's own version, with the address in the container's
// config where that API expects it, and started with the CLI.
func runContainerWithMAC(t testing.TB, network, mac string) string {
	t.Helper()
	id, err := runContainerErr(network, "--mac-address", mac)
	if id != "" {
		removeAtCleanup(t, id)
	}
	if err == nil {
		return id
	}
	if !strings.Contains(err.Error(), "requires API version") {
		t.Fatal(err)
	}
	t.Logf("docker CLI refuses --mac-address with --network against this daemon; creating through the Engine API: %v", err)
	id = createWithMACAPI(t, network, mac)
	removeAtCleanup(t, id)
	docker(t, "start", id)
	return id
}

// createWithMACAPI creates (not starts) a test container running `probe
// serve` on network with MAC address mac through the daemon's Engine API
// at its own version.
func createWithMACAPI(t testing.TB, network, mac string) string {
	t.Helper()
	sock, ok := strings.CutPrefix(h.dockerHost, "unix://")
	if !ok {
		t.Fatalf("docker host %q is not a unix socket", h.dockerHost)
	}
	client := &http.Client{
		Timeout: dockerCmdTimeout,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}},
	}
	apiVersion := docker(t, "version", "--format", "{{.Server.APIVersion}}")
	labelKey, labelValue, _ := strings.Cut(testLabel, "=")
	body, err := json.Marshal(map[string]any{
		"Image":      testImage,
		"Cmd":        []string{"/bin/probe", "serve"},
		"Labels":     map[string]string{labelKey: labelValue},
		"MacAddress": mac,
		"HostConfig": map[string]any{"NetworkMode": network},
	})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Post("http://docker/v"+apiVersion+"/containers/create", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("Engine API containers/create: %v", err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("Engine API v%s containers/create: %s: %s", apiVersion, resp.Status, out)
	}
	var created struct{ Id string }
	if err := json.Unmarshal(out, &created); err != nil || created.Id == "" {
		t.Fatalf("Engine API containers/create: no container ID in %s (%v)", out, err)
	}
	return created.Id
}

// TestNetworkMTUOption: a network created with
// -o com.docker.network.driver.mtu=1400 gives its containers an eth0 of MTU
// 1400, and a peer reaches the container, also with a full-size IPv4 ping.
// With membrane an MTU below IPv6's minimum is refused with an error naming
// the option, and no network is left behind.
func TestNetworkMTUOption(t *testing.T) {
	const mtuOpt = "com.docker.network.driver.mtu"
	forEachDriver(t, func(t *testing.T, d netDriver) {
		net := newNetwork(t, uniqueName("net"), append(d.createArgs(subnets{}), "-o", mtuOpt+"=1400")...)
		c := runContainer(t, net)
		if got := strings.TrimSpace(execIn(t, c, "cat", "/sys/class/net/eth0/mtu")); got != "1400" {
			t.Errorf("eth0 in the container has MTU %q, want 1400", got)
		}
		c4, c6 := containerIPs(t, c, net)
		peer := runContainer(t, net)
		assertReach(t, peer, c4, c6)
		// 1400 - 20 (IPv4) - 8 (ICMP): the largest unfragmented echo.
		if err := retryOnce(t, "full-size ping", func() error {
			_, err := execErr(peer, "ping", "-c1", "-W2", "-s", "1372", c4)
			return err
		}); err != nil {
			t.Errorf("ping -s 1372 %s -> %s: want a reply: %v", short(peer), c4, err)
		}

		if !d.isMembrane() {
			t.Log("bad MTU check: membrane only, skipped for bridge")
			return
		}
		name := uniqueName("net")
		args := append([]string{"network", "create", "--label", testLabel}, d.createArgs(subnets{})...)
		args = append(args, "-o", mtuOpt+"=12", name)
		out, err := dockerErr(args...)
		if err == nil {
			_, _ = dockerErr("network", "rm", name)
			t.Fatalf("network create with %s=12 succeeded (%s), want it refused", mtuOpt, out)
		}
		if !strings.Contains(err.Error(), mtuOpt) {
			t.Errorf("error does not name %s: %v", mtuOpt, err)
		}
		if ls := docker(t, "network", "ls", "--format", "{{.Name}}"); containsLine(ls, name) {
			t.Errorf("refused network %s is listed by network ls", name)
			_, _ = dockerErr("network", "rm", name)
		}
	})
}
