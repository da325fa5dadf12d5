package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/vishvananda/netns"

	"github.com/membrane-net/membrane/datapath"
)

// inproc is a datapath the harness opens itself, under its own pin
// directory, to time what the daemon's numbers include but cannot show
// apart: a policy sync of N entries, and attaching one endpoint.
type inproc struct {
	dp *datapath.Datapath
}

func openInproc() (*inproc, error) {
	dp, err := datapath.Open(datapath.Config{PinDir: inprocBPFDir})
	if err != nil {
		return nil, fmt.Errorf("in-process datapath: %w", err)
	}
	return &inproc{dp: dp}, nil
}

func (p *inproc) close() error {
	err := p.dp.Close()
	if rmErr := os.RemoveAll(inprocBPFDir); rmErr != nil && err == nil {
		err = rmErr
	}
	return err
}

// Identities of the in-process policy: the server is the subject, the
// client the peer, as in the daemon's policy setup.
const (
	inprocServerID = 256
	inprocClientID = 257
)

// policyState is what the daemon's scaleRules(n) resolves to: one ingress
// entry per filler rule and one per measured port, with the server's
// ingress enforced.
func policyState(n int) datapath.PolicyState {
	s := datapath.PolicyState{
		Entries:     map[datapath.PolicyKey]datapath.Verdict{},
		Enforcement: map[uint32]datapath.Enforcement{inprocServerID: {Ingress: true}},
	}
	for _, pp := range append(fillerPorts(n-1), measuredPorts...) {
		s.Entries[policyKey(pp)] = datapath.VerdictAllow
	}
	return s
}

func policyKey(pp protoPort) datapath.PolicyKey {
	proto := datapath.ProtoTCP
	if pp.proto == "UDP" {
		proto = datapath.ProtoUDP
	}
	return datapath.PolicyKey{Subject: inprocServerID, Peer: inprocClientID, Port: uint16(pp.port), Proto: proto, Dir: datapath.DirIngress}
}

// timeSync syncs the n-rule state into empty maps (SyncPolicy), then adds
// one entry (ApplyPolicy), and returns both durations. It empties the maps again after.
func (p *inproc) timeSync(n int) (install, addOne time.Duration, err error) {
	empty := datapath.PolicyState{}
	if _, err := p.dp.SyncPolicy(empty); err != nil {
		return 0, 0, fmt.Errorf("in-process datapath: empty the policy: %w", err)
	}
	s := policyState(n)
	start := time.Now()
	if _, err := p.dp.SyncPolicy(s); err != nil {
		return 0, 0, fmt.Errorf("in-process datapath: sync %d rules: %w", n, err)
	}
	install = time.Since(start)
	// The daemon adds a rule to what the maps hold with ApplyPolicy: the
	// change alone, no diff of the whole state.
	start = time.Now()
	res, err := p.dp.ApplyPolicy(datapath.PolicyDelta{Set: map[datapath.PolicyKey]datapath.Verdict{policyKey(addOnePort): datapath.VerdictAllow}})
	if err != nil {
		return 0, 0, fmt.Errorf("in-process datapath: add one rule to %d: %w", n, err)
	}
	addOne = time.Since(start)
	if res.Added != 1 {
		return 0, 0, fmt.Errorf("in-process datapath: adding one rule to %d added %d entries", n, res.Added)
	}
	if _, err := p.dp.SyncPolicy(empty); err != nil {
		return 0, 0, fmt.Errorf("in-process datapath: empty the policy: %w", err)
	}
	return install, addOne, nil
}

// attachNetns holds the veth pairs of the attach timing.
const attachNetns = namePrefix + "-attach"

// firstAttachLink is where the attach endpoints' addresses start in the
// address plan's link space (clear of the routed setups' links).
const firstAttachLink = 3584

// attachTimes are the in-process attach timings.
type attachTimes struct {
	// Prepared: new endpoints on veths whose hooks already hold the
	// placeholder (datapath.Prepare), as the daemon's spare veth pairs do.
	Prepared []time.Duration
	// Unprepared: new endpoints on fresh veths (the spares ran out).
	Unprepared []time.Duration
	// Again: endpoints attached before (a daemon restart).
	Again []time.Duration
}

// timeAttach creates 2×count veth pairs in a namespace of their own and
// attaches a new endpoint to each, timing every Attach (programs loaded
// with the endpoint's constants, tcx links made and pinned, map entries
// written: what the daemon does per container). The first count veths are
// prepared first, untimed, as the daemon prepares its spares ahead of
// time; the others are not, as when the spares run out. Then it attaches
// the prepared ones again, which is what a daemon restart does (the pinned
// links are updated in place). The endpoints are detached after. The
// caller removes the namespace.
func (p *inproc) timeAttach(ctx context.Context, plan addressPlan, count int) (attachTimes, error) {
	var times attachTimes
	if err := addNetns(ctx, attachNetns); err != nil {
		return times, err
	}
	var batch strings.Builder
	for i := range 2 * count {
		fmt.Fprintf(&batch, "link add mba%d type veth peer name mbp%d\nlink set mba%d up\nlink set mbp%d up\n", i, i, i, i)
	}
	if _, err := (cmdSpec{argv: []string{"ip", "-n", attachNetns, "-batch", "-"}, stdin: strings.NewReader(batch.String()), timeout: time.Minute}).run(ctx); err != nil {
		return times, fmt.Errorf("attach timing: create %d veth pairs: %w", 2*count, err)
	}
	eps, err := attachEndpoints(ctx, plan, 2*count)
	if err != nil {
		return times, err
	}
	prepared, unprepared := eps[:count], eps[count:]
	timeAll := func(eps []datapath.Endpoint) ([]time.Duration, error) {
		var lat []time.Duration
		for _, ep := range eps {
			start := time.Now()
			if err := p.dp.Attach(ep); err != nil {
				return nil, fmt.Errorf("attach endpoint %s: %w", ep.ID, err)
			}
			lat = append(lat, time.Since(start))
		}
		return lat, nil
	}
	err = inNamedNetns(attachNetns, func() error {
		for _, ep := range prepared {
			if err := p.dp.Prepare(ep.HostIfIndex); err != nil {
				return err
			}
		}
		var err error
		if times.Prepared, err = timeAll(prepared); err != nil {
			return err
		}
		if times.Unprepared, err = timeAll(unprepared); err != nil {
			return err
		}
		if times.Again, err = timeAll(prepared); err != nil {
			return err
		}
		for _, ep := range eps {
			if err := p.dp.Detach(ep); err != nil {
				return fmt.Errorf("detach endpoint %s: %w", ep.ID, err)
			}
		}
		return nil
	})
	if err != nil {
		return times, fmt.Errorf("attach timing: %w", err)
	}
	return times, nil
}

// attachEndpoints describes the host side of every mba<i> veth as an
// endpoint, with the peer's MAC and an address of its own.
func attachEndpoints(ctx context.Context, plan addressPlan, count int) ([]datapath.Endpoint, error) {
	out, err := runCmd(ctx, "ip", "-n", attachNetns, "-j", "link", "show")
	if err != nil {
		return nil, fmt.Errorf("attach timing: list links: %w", err)
	}
	var links []struct {
		Index   int    `json:"ifindex"`
		Name    string `json:"ifname"`
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return nil, fmt.Errorf("attach timing: ip -j link: %w", err)
	}
	byName := map[string]int{}
	for i, l := range links {
		byName[l.Name] = i
	}
	eps := make([]datapath.Endpoint, 0, count)
	for i := range count {
		h, okH := byName[fmt.Sprintf("mba%d", i)]
		c, okC := byName[fmt.Sprintf("mbp%d", i)]
		if !okH || !okC {
			return nil, fmt.Errorf("attach timing: veth pair %d missing", i)
		}
		hostMAC, err1 := net.ParseMAC(links[h].Address)
		mac, err2 := net.ParseMAC(links[c].Address)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("attach timing: MACs of pair %d: %v %v", i, err1, err2)
		}
		addr, _ := plan.link(firstAttachLink + i)
		eps = append(eps, datapath.Endpoint{
			ID:           fmt.Sprintf("%s-attach-%04d", namePrefix, i),
			HostIfIndex:  links[h].Index,
			HostMAC:      hostMAC,
			MAC:          mac,
			IPv4:         addr.Addr(),
			NetworkIndex: 1,
			Identity:     inprocClientID,
		})
	}
	return eps, nil
}

// inNamedNetns runs fn on an OS thread of its own switched into the named
// namespace (tcx attaches by ifindex, which is per namespace), and
// switches the thread back. Only if switching back fails is the thread
// left locked, so that the runtime retires it rather than run other
// goroutines in the wrong namespace; otherwise it is unlocked, since a
// retired thread also kills the children started from it (Pdeathsig).
func inNamedNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err, stuck := switchAndRun(name, fn)
		if !stuck {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// switchAndRun enters the namespace, runs fn and returns; stuck reports
// that the thread could not return to its namespace.
func switchAndRun(name string, fn func() error) (err error, stuck bool) {
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("current netns: %w", err), false
	}
	defer orig.Close()
	target, err := netns.GetFromPath(netnsPath(name))
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err), false
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return fmt.Errorf("enter netns %s: %w", name, err), false
	}
	fnErr := fn()
	if err := netns.Set(orig); err != nil {
		return fmt.Errorf("return from netns %s: %w", name, err), true
	}
	return fnErr, false
}
