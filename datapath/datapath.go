package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Config configures a Datapath.
type Config struct {
	// PinDir is the bpffs directory that holds membrane's pins, e.g.
	// /sys/fs/bpf/membrane. Maps live under PinDir/maps, links under
	// PinDir/endpoints/<endpoint ID>/{from-container,to-container}.
	PinDir string
}

var (
	// ErrNoPinDir is returned by Open when Config.PinDir is empty.
	ErrNoPinDir = errors.New("no pin directory")
	// ErrClosed is returned by methods of a closed Datapath.
	ErrClosed = errors.New("datapath closed")
	// ErrInvalidEndpoint is wrapped by errors about an Endpoint's fields.
	ErrInvalidEndpoint = errors.New("invalid endpoint")
)

const (
	mapsDir      = "maps"
	endpointsDir = "endpoints"
)

// Datapath is the kernel side of membrane: the shared maps and the
// per-endpoint programs. It is safe for concurrent use.
type Datapath struct {
	// spec is parsed once; Attach copies it for each endpoint.
	spec   *ebpf.CollectionSpec
	pinDir string // empty for unpinned maps (tests)

	endpoints *ebpf.Map
	metrics   *ebpf.Map
	replaced  []string

	// mu guards closed: methods hold it for reading, Close for writing.
	mu     sync.RWMutex
	closed bool
	// pinMu serialises changes to links and pins.
	pinMu sync.Mutex
}

// Open opens membrane's pinned maps under cfg.PinDir, or creates and pins
// them. It mounts nothing: PinDir must be on a bpffs.
//
// A pinned map whose definition does not match the compiled programs (after
// an upgrade that changed it) is replaced by a new, empty one, pinned
// atomically in its place. Open does not fail for that; ReplacedMaps reports
// it so the caller can log it, and every endpoint must then be attached again
// (as a restart's reconciliation does anyway) to use the new map.
func Open(cfg Config) (*Datapath, error) {
	if cfg.PinDir == "" {
		return nil, fmt.Errorf("open datapath: %w", ErrNoPinDir)
	}
	d, err := newDatapath(cfg.PinDir)
	if err != nil {
		return nil, fmt.Errorf("open datapath in %s: %w", cfg.PinDir, err)
	}
	return d, nil
}

// newDatapath opens the maps pinned under pinDir, or creates unpinned maps
// when pinDir is empty (program tests).
func newDatapath(pinDir string) (_ *Datapath, err error) {
	spec, err := loadEndpoint()
	if err != nil {
		return nil, err
	}
	d := &Datapath{spec: spec, pinDir: pinDir}
	defer func() {
		if err != nil {
			d.closeMaps()
		}
	}()

	if pinDir != "" {
		for _, dir := range []string{filepath.Join(pinDir, mapsDir), filepath.Join(pinDir, endpointsDir)} {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return nil, fmt.Errorf("create pin directory: %w", err)
			}
		}
	}

	for _, m := range []struct {
		name string
		dst  **ebpf.Map
	}{
		{endpointMapEndpoints, &d.endpoints},
		{endpointMapMetrics, &d.metrics},
	} {
		ms, ok := spec.Maps[m.name]
		if !ok {
			return nil, fmt.Errorf("map %s not in object", m.name)
		}
		var replaced bool
		*m.dst, replaced, err = d.openMap(ms)
		if err != nil {
			return nil, fmt.Errorf("map %s: %w", m.name, err)
		}
		if replaced {
			d.replaced = append(d.replaced, m.name)
		}
	}
	return d, nil
}

// openMap loads the map pinned for ms, or creates (and pins) it. It reports
// whether an incompatible pinned map was replaced.
func (d *Datapath) openMap(ms *ebpf.MapSpec) (*ebpf.Map, bool, error) {
	ms = ms.Copy()
	ms.Pinning = ebpf.PinNone
	if d.pinDir == "" {
		m, err := ebpf.NewMap(ms)
		return m, false, err
	}

	path := filepath.Join(d.pinDir, mapsDir, ms.Name)
	replaced := false
	m, err := ebpf.LoadPinnedMap(path, nil)
	switch {
	case err == nil:
		if ms.Compatible(m) == nil {
			return m, false, nil
		}
		m.Close()
		replaced = true
	case errors.Is(err, os.ErrNotExist):
	default:
		return nil, false, fmt.Errorf("load pinned map: %w", err)
	}

	m, err = ebpf.NewMap(ms)
	if err != nil {
		return nil, false, err
	}
	// Pin under a temporary name, then rename over the old pin: programs
	// loaded later never see a missing map.
	// (bpffs reserves names with dots.)
	tmp := path + "-new"
	if err := unix.Unlink(tmp); err != nil && !errors.Is(err, unix.ENOENT) {
		m.Close()
		return nil, false, fmt.Errorf("remove stale pin: %w", err)
	}
	if err := m.Pin(tmp); err != nil {
		m.Close()
		return nil, false, err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = m.Unpin()
		m.Close()
		return nil, false, fmt.Errorf("pin map: %w", err)
	}
	return m, replaced, nil
}

// ReplacedMaps names the pinned maps that Open found incompatible with the
// compiled programs and replaced by new, empty ones. Endpoints attached
// before keep using the old maps until they are attached again.
func (d *Datapath) ReplacedMaps() []string {
	return append([]string(nil), d.replaced...)
}

// Close closes the Datapath's file descriptors. It never detaches programs
// nor removes pins: the datapath keeps forwarding without the daemon.
func (d *Datapath) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	return d.closeMaps()
}

func (d *Datapath) closeMaps() error {
	var errs []error
	for _, m := range []*ebpf.Map{d.endpoints, d.metrics} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	return errors.Join(errs...)
}
