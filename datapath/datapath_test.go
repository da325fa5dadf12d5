package datapath

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

func TestOpenRequiresPinDir(t *testing.T) {
	if _, err := Open(Config{}); !errors.Is(err, ErrNoPinDir) {
		t.Errorf("Open without PinDir: %v, want ErrNoPinDir", err)
	}
}

func TestOpenCreatesAndReusesPinnedMaps(t *testing.T) {
	requireBPFFS(t)
	pinDir := tempPinDir(t)

	d, err := Open(Config{PinDir: pinDir})
	if err != nil {
		t.Fatal(err)
	}
	key := endpointKey(epB.IPv4)
	if err := d.putEndpoint(&epB); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for _, m := range d.maps() {
		if _, err := os.Stat(filepath.Join(pinDir, mapsDir, m.name)); err != nil {
			t.Errorf("map %s not pinned: %v", m.name, err)
		}
	}

	d, err = Open(Config{PinDir: pinDir})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if r := d.ReplacedMaps(); len(r) != 0 {
		t.Errorf("ReplacedMaps() = %v, want none", r)
	}
	var info endpointEndpointInfo
	if err := d.endpoints.Lookup(key, &info); err != nil || int(info.Ifindex) != epB.HostIfIndex {
		t.Errorf("entry written before reopen: %+v, %v; want it kept", info, err)
	}
	if _, err := d.Counters(); err != nil {
		t.Error(err)
	}
}

func TestOpenReplacesIncompatiblePinnedMap(t *testing.T) {
	requireBPFFS(t)
	pinDir := tempPinDir(t)
	if err := os.MkdirAll(filepath.Join(pinDir, mapsDir), 0o700); err != nil {
		t.Fatal(err)
	}
	// An endpoints map as an older release might have pinned it.
	old, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 16, ValueSize: 8, MaxEntries: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := old.Pin(filepath.Join(pinDir, mapsDir, endpointMapEndpoints)); err != nil {
		t.Fatal(err)
	}

	d, err := Open(Config{PinDir: pinDir})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if r := d.ReplacedMaps(); !slices.Equal(r, []string{endpointMapEndpoints}) {
		t.Errorf("ReplacedMaps() = %v, want [%s]", r, endpointMapEndpoints)
	}
	pinned, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, mapsDir, endpointMapEndpoints), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.Close()
	if err := d.spec.Maps[endpointMapEndpoints].Compatible(pinned); err != nil {
		t.Errorf("pinned map after Open: %v", err)
	}
	entries, err := os.ReadDir(filepath.Join(pinDir, mapsDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	var want []string
	for _, m := range d.maps() {
		want = append(want, m.name)
	}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("maps directory holds %v, want %v", names, want)
	}
}

func TestAttachRejectsInvalidEndpoints(t *testing.T) {
	valid := epA
	tests := []struct {
		name   string
		change func(*Endpoint)
	}{
		{"empty ID", func(e *Endpoint) { e.ID = "" }},
		{"ID with slash", func(e *Endpoint) { e.ID = "../x" }},
		{"ID with dot", func(e *Endpoint) { e.ID = "a.b" }},
		{"no host ifindex", func(e *Endpoint) { e.HostIfIndex = 0 }},
		{"short host MAC", func(e *Endpoint) { e.HostMAC = net.HardwareAddr{1, 2, 3} }},
		{"no MAC", func(e *Endpoint) { e.MAC = nil }},
		{"IPv6 as IPv4", func(e *Endpoint) { e.IPv4 = epA.IPv6 }},
		{"unspecified IPv4", func(e *Endpoint) { e.IPv4 = netip.IPv4Unspecified() }},
		{"IPv4-mapped IPv6", func(e *Endpoint) { e.IPv6 = netip.AddrFrom16(epA.IPv4.As16()) }},
		{"IPv6 with zone", func(e *Endpoint) { e.IPv6 = epA.IPv6.WithZone("eth0") }},
	}
	// Validation comes before any kernel call: a zero Datapath will do.
	d := &Datapath{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ep := valid
			tt.change(&ep)
			err := d.Attach(ep)
			if !errors.Is(err, ErrInvalidEndpoint) {
				t.Fatalf("Attach: %v, want ErrInvalidEndpoint", err)
			}
			if !strings.HasPrefix(err.Error(), "attach endpoint "+ep.ID+": ") {
				t.Errorf("error %q lacks context", err)
			}
		})
	}
	if err := valid.validate(); err != nil {
		t.Errorf("valid endpoint: %v", err)
	}
}
