package datapath

import (
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// hookPrograms returns the IDs of the programs on ifindex's tcx hook.
func hookPrograms(t *testing.T, ifindex int, attach ebpf.AttachType) []ebpf.ProgramID {
	t.Helper()
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: attach})
	if err != nil {
		t.Fatalf("query programs of interface %d: %v", ifindex, err)
	}
	var ids []ebpf.ProgramID
	for _, p := range res.Programs {
		ids = append(ids, p.ID)
	}
	return ids
}

func TestPreparedInterfaces(t *testing.T) {
	pinDir := tempPinDir(t)
	topo, a, b, d := newPair(t, pinDir)
	info, err := d.placeholder.Info()
	if err != nil {
		t.Fatal(err)
	}
	placeholder, _ := info.ID()

	inNetns(t, topo.host, func() {
		for _, c := range []*container{a, b} {
			for range 2 { // the second does nothing
				if err := d.Prepare(c.ep.HostIfIndex); err != nil {
					t.Fatal(err)
				}
			}
			for _, h := range hooks {
				if ids := hookPrograms(t, c.ep.HostIfIndex, h.attach); len(ids) != 1 || ids[0] != placeholder {
					t.Fatalf("%s %s: programs %v, want the placeholder %d alone", c.hostIf, h.pin, ids, placeholder)
				}
			}
		}
	})
	// The placeholder drops everything, ARP included.
	if err := a.ping(t, b.ep.IPv4, 1, 300*time.Millisecond); err == nil {
		t.Fatal("ping between prepared interfaces got a reply; the placeholder must drop it")
	}

	inNetns(t, topo.host, func() {
		if err := d.Attach(a.ep); err != nil {
			t.Fatal(err)
		}
		if err := d.Attach(b.ep); err != nil {
			t.Fatal(err)
		}
	})
	if err := a.ping(t, b.ep.IPv4, 3, time.Second); err != nil {
		t.Fatalf("after Attach: %v", err)
	}
	if err := b.ping(t, a.ep.IPv6, 3, time.Second); err != nil {
		t.Fatalf("after Attach: %v", err)
	}
	inNetns(t, topo.host, func() {
		for _, c := range []*container{a, b} {
			pinned := pinnedLinks(t, pinDir, c.ep.ID)
			for _, h := range hooks {
				ids := hookPrograms(t, c.ep.HostIfIndex, h.attach)
				if len(ids) != 1 || uint32(ids[0]) != pinned[h.pin].prog {
					t.Errorf("%s %s: programs %v, want the pinned link's program %d alone", c.hostIf, h.pin, ids, pinned[h.pin].prog)
				}
			}
		}
		if n := len(d.prepared.byIndex); n != 0 {
			t.Errorf("%d interfaces still prepared after both were attached", n)
		}
	})

	// Unprepare and Close detach placeholders that were not taken over.
	inNetns(t, topo.host, func() {
		if err := d.Detach(a.ep); err != nil {
			t.Fatal(err)
		}
		if err := d.Prepare(a.ep.HostIfIndex); err != nil {
			t.Fatal(err)
		}
		if err := d.Prepare(b.ep.HostIfIndex); err != nil { // attached: the placeholder goes after its program
			t.Fatal(err)
		}
		if err := d.Unprepare(a.ep.HostIfIndex); err != nil {
			t.Fatal(err)
		}
		if ids := hookPrograms(t, a.ep.HostIfIndex, ebpf.AttachTCXIngress); len(ids) != 0 {
			t.Errorf("after Unprepare: programs %v, want none", ids)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if ids := hookPrograms(t, b.ep.HostIfIndex, ebpf.AttachTCXIngress); len(ids) != 1 {
			t.Errorf("after Close: programs %v, want the endpoint's alone (pinned, kept)", ids)
		}
	})
}
