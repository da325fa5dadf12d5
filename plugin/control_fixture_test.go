package plugin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/membrane-net/membrane/datapath"
	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/state"
)

// controllerFixture is a controller over real pieces: a state.Store with its
// checkpoint directory and a datapath with pinned maps, as the daemon builds
// them. Restart builds a new controller over the same directories.
type controllerFixture struct {
	tb       testing.TB
	stateDir string
	pinDir   string
	store    *state.Store
	dp       *datapath.Datapath
	nl       *netlink.Handle
	ctl      *controller
}

// requireBPF skips tb unless BPF maps can be created and pinned here.
func requireBPF(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("privileged test: needs root to create BPF maps; run `go test` as root")
	}
	var fs unix.Statfs_t
	if err := unix.Statfs("/sys/fs/bpf", &fs); err != nil || fs.Type != unix.BPF_FS_MAGIC {
		tb.Skip("privileged test: needs a bpffs mounted on /sys/fs/bpf")
	}
}

// newControllerFixture starts a controller over a fresh store and fresh
// pinned maps, both removed when tb ends.
func newControllerFixture(tb testing.TB) *controllerFixture {
	tb.Helper()
	requireBPF(tb)
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	pinDir := filepath.Join("/sys/fs/bpf", "membrane-test-"+hex.EncodeToString(b[:]))
	tb.Cleanup(func() {
		if err := os.RemoveAll(pinDir); err != nil {
			tb.Errorf("remove %s: %v", pinDir, err)
		}
	})
	f := &controllerFixture{tb: tb, stateDir: tb.TempDir(), pinDir: pinDir}
	f.start()
	tb.Cleanup(f.stop)
	return f
}

// start opens the store and the datapath and applies the stored policy,
// as the daemon does when it starts.
func (f *controllerFixture) start() {
	f.tb.Helper()
	store, restored, err := state.Open(f.stateDir)
	if err != nil {
		f.tb.Fatal(err)
	}
	f.tb.Cleanup(func() { store.Close() }) // before the directory goes
	if len(restored.Skipped) > 0 {
		f.tb.Fatalf("checkpoints skipped: %v", restored.Skipped)
	}
	dp, err := datapath.Open(datapath.Config{PinDir: f.pinDir})
	if err != nil {
		f.tb.Fatal(err)
	}
	nl, err := netlink.NewHandle()
	if err != nil {
		dp.Close()
		f.tb.Fatal(err)
	}
	filter, err := labels.NewFilter(nil)
	if err != nil {
		f.tb.Fatal(err)
	}
	f.store, f.dp, f.nl = store, dp, nl
	f.ctl = &controller{
		store: store, dp: dp, nl: nl, filter: filter, now: time.Now,
		log:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		alloc: labels.NewAllocator(store, time.Now),
	}
	if err := f.ctl.Recompute(); err != nil {
		f.tb.Fatalf("apply stored policy: %v", err)
	}
}

func (f *controllerFixture) stop() {
	if f.dp != nil {
		f.dp.Close()
		f.nl.Close()
		f.dp, f.nl = nil, nil
	}
}

// restart stops the controller and starts a new one over the same state
// directory and pinned maps, as a restarted daemon does.
func (f *controllerFixture) restart() {
	f.tb.Helper()
	f.stop()
	f.start()
}

// addEndpoint records an endpoint in state (as CreateEndpoint does) and
// hands its labels to the controller (as the label watcher does).
func (f *controllerFixture) addEndpoint(id string, addr netip.Addr, l map[string]string) {
	f.tb.Helper()
	err := f.store.Write(func(txn *memdb.Txn) error {
		return state.PutEndpoint(txn, &state.Endpoint{
			ID: id, NetworkID: "net", HostIfName: "mbr" + id, IPv4: netip.PrefixFrom(addr, 32),
			Identity: uint32(labels.IdentityInit), Created: time.Now(),
		})
	})
	if err != nil {
		f.tb.Fatal(err)
	}
	f.setLabels(id, l)
}

// setLabels hands an endpoint's (new) labels to the controller.
func (f *controllerFixture) setLabels(id string, l map[string]string) {
	f.tb.Helper()
	err := f.ctl.onLabels(context.Background(), []labels.EndpointLabels{{EndpointID: id, ContainerID: "c-" + id, Labels: l}})
	if err != nil {
		f.tb.Fatal(err)
	}
}

// removeEndpoint deletes an endpoint from state (as the driver does) and
// lets the controller collect identities.
func (f *controllerFixture) removeEndpoint(id string) {
	f.tb.Helper()
	err := f.store.Write(func(txn *memdb.Txn) error { return state.DeleteEndpoint(txn, id) })
	if err != nil {
		f.tb.Fatal(err)
	}
	if err := f.ctl.collect(); err != nil {
		f.tb.Fatal(err)
	}
}

// importRules imports rules as one document.
func (f *controllerFixture) importRules(rules []map[string]any) uint64 {
	f.tb.Helper()
	rev, err := f.ctl.ImportPolicy(mustJSON(f.tb, rules))
	if err != nil {
		f.tb.Fatal(err)
	}
	return rev
}

func mustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// portProtocol is the i-th distinct (port, protocol) pair: ports 1-65535 of
// TCP, then of UDP, then of SCTP.
func portProtocol(i int) (string, string) {
	return fmt.Sprint(1 + i%65535), []string{"TCP", "UDP", "SCTP"}[i/65535%3]
}

// serverRule is rule i of the benchmark harness's shape: role=server
// admits role=client on one distinct port and protocol, so n rules give n
// policy map entries.
func serverRule(i int) map[string]any {
	port, proto := portProtocol(i)
	return map[string]any{
		"labels":           []any{map[string]any{"key": "name", "value": fmt.Sprint("server-", i)}},
		"endpointSelector": map[string]any{"matchLabels": map[string]any{"role": "server"}},
		"ingress": []any{map[string]any{
			"fromEndpoints": []any{map[string]any{"matchLabels": map[string]any{"role": "client"}}},
			"toPorts":       []any{map[string]any{"ports": []any{map[string]any{"port": port, "protocol": proto}}}},
		}},
	}
}

// cidrRule is a rule that lets role=client reach a /24 of its own on 443.
func cidrRule(i int) map[string]any {
	return map[string]any{
		"labels":           []any{map[string]any{"key": "name", "value": fmt.Sprint("cidr-", i)}},
		"endpointSelector": map[string]any{"matchLabels": map[string]any{"role": "client"}},
		"egress": []any{map[string]any{
			"toCIDR":  []any{fmt.Sprintf("10.%d.%d.0/24", i/256%256, i%256)},
			"toPorts": []any{map[string]any{"ports": []any{map[string]any{"port": "443", "protocol": "TCP"}}}},
		}},
	}
}

// serverRules returns rules [from, from+n) of serverRule.
func serverRules(from, n int) []map[string]any {
	out := make([]map[string]any, 0, n)
	for i := from; i < from+n; i++ {
		out = append(out, serverRule(i))
	}
	return out
}

// addBenchIdentities gives the fixture a server and a client endpoint.
func (f *controllerFixture) addBenchIdentities() {
	f.tb.Helper()
	f.addEndpoint("server", netip.MustParseAddr("10.200.0.2"), map[string]string{"role": "server"})
	f.addEndpoint("client", netip.MustParseAddr("10.200.0.3"), map[string]string{"role": "client"})
}

// Labels of the benchmark harness's policy setup (bench/policyfiles.go):
// its rules select both keys, which makes them larger than serverRule's
// (a 10,000-rule import stores some 5 MB, more than the journal takes
// after an empty checkpoint).
var (
	harnessServer = map[string]any{"mbrbench.setup": "policy", "mbrbench.role": "server"}
	harnessClient = map[string]any{"mbrbench.setup": "policy", "mbrbench.role": "client"}
)

// harnessRule is rule i as the benchmark harness writes its scale rules:
// the server admits the client on one distinct port.
func harnessRule(i int) map[string]any {
	port, proto := portProtocol(i)
	return map[string]any{
		"labels":           []any{map[string]any{"key": "name", "value": fmt.Sprint("bench-filler-", i)}},
		"endpointSelector": map[string]any{"matchLabels": harnessServer},
		"ingress": []any{map[string]any{
			"fromEndpoints": []any{map[string]any{"matchLabels": harnessClient}},
			"toPorts":       []any{map[string]any{"ports": []any{map[string]any{"port": port, "protocol": proto}}}},
		}},
	}
}

// harnessRules returns rules [from, from+n) of harnessRule.
func harnessRules(from, n int) []map[string]any {
	out := make([]map[string]any, 0, n)
	for i := from; i < from+n; i++ {
		out = append(out, harnessRule(i))
	}
	return out
}

// addHarnessIdentities gives the fixture the harness's server and client.
func (f *controllerFixture) addHarnessIdentities() {
	f.tb.Helper()
	l := func(m map[string]any) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			out[k] = v.(string)
		}
		return out
	}
	f.addEndpoint("hserver", netip.MustParseAddr("10.200.0.4"), l(harnessServer))
	f.addEndpoint("hclient", netip.MustParseAddr("10.200.0.5"), l(harnessClient))
}
