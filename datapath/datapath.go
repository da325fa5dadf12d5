package datapath

import (
	"crypto/rand"
	"encoding/binary"
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
	// ErrInvalidPolicy is wrapped by errors about a PolicyState or ipcache
	// entry that the datapath cannot hold; nothing is written then.
	ErrInvalidPolicy = errors.New("invalid policy")
	// ErrMapFull is wrapped by errors of a write that a full map refused.
	ErrMapFull = errors.New("map full")
	// ErrInvalidMonitorLevel is returned by SetMonitorLevel for an unknown level.
	ErrInvalidMonitorLevel = errors.New("invalid monitor level")
)

const (
	mapsDir      = "maps"
	endpointsDir = "endpoints"
)

// Datapath is the kernel side of membrane: the shared maps and the
// per-endpoint programs. It is safe for concurrent use.
type Datapath struct {
	// spec is parsed once. epSpec is spec without the shared programs:
	// Attach copies it for each endpoint.
	spec   *ebpf.CollectionSpec
	epSpec *ebpf.CollectionSpec
	pinDir string // empty for unpinned maps (tests)

	endpoints     *ebpf.Map
	metrics       *ebpf.Map
	ipcache       *ebpf.Map
	policy        *ebpf.Map
	policyEnforce *ebpf.Map
	ct            *ebpf.Map
	fragments     *ebpf.Map
	config        *ebpf.Map
	events        *ebpf.Map
	eventsLost    *ebpf.Map
	policyProgs   *ebpf.Map
	replaced      []string
	// shared are the policy programs every endpoint's programs tail-call.
	shared *sharedPrograms
	// placeholder runs on prepared interfaces (prepare.go).
	placeholder *ebpf.Program
	prepared    preparedSet

	// mu guards closed: methods hold it for reading, Close for writing.
	mu     sync.RWMutex
	closed bool
	// pinMu serialises changes to links and pins.
	pinMu sync.Mutex
	// epMu serialises read-modify-writes of the endpoints map.
	epMu sync.Mutex
	// configMu serialises read-modify-writes of the config map.
	configMu sync.Mutex
	// policyMu guards the last synced policy and ipcache (sync.go).
	policyMu     sync.Mutex
	policyCache  *policyCache
	ipcacheCache map[endpointIpcacheKey]uint32
}

// mapSlot names a map of the object and where the Datapath keeps it.
type mapSlot struct {
	name string
	dst  **ebpf.Map
}

// maps lists every map the programs use: all are created (or opened) once
// by Open and shared by every endpoint's programs.
func (d *Datapath) maps() []mapSlot {
	return []mapSlot{
		{endpointMapEndpoints, &d.endpoints},
		{endpointMapMetrics, &d.metrics},
		{endpointMapIpcache, &d.ipcache},
		{endpointMapPolicy, &d.policy},
		{endpointMapPolicyEnforce, &d.policyEnforce},
		{endpointMapCt, &d.ct},
		{endpointMapFragments, &d.fragments},
		{endpointMapConfig, &d.config},
		{endpointMapEvents, &d.events},
		{endpointMapEventsLost, &d.eventsLost},
		{endpointMapPolicyProgs, &d.policyProgs},
	}
}

// sharedPrograms are the programs of bpf/endpoint.c that no endpoint
// constant goes into: loaded once by Open and put in policy_progs.
type sharedPrograms struct {
	PolicyFromContainer *ebpf.Program `ebpf:"policy_from_container"`
	PolicyToContainer   *ebpf.Program `ebpf:"policy_to_container"`
}

func (p *sharedPrograms) Close() error {
	return errors.Join(p.PolicyFromContainer.Close(), p.PolicyToContainer.Close())
}

// Indexes in policy_progs (POLICY_PROG_* in bpf/endpoint.c).
const (
	policyProgFromContainer uint32 = 0
	policyProgToContainer   uint32 = 1
)

// loadShared loads the shared programs and points policy_progs at them.
// Programs attached before keep running and use the new ones from their
// next packet: the tail call reads the map each time.
func (d *Datapath) loadShared() error {
	var progs sharedPrograms
	err := d.spec.Copy().LoadAndAssign(&progs, &ebpf.CollectionOptions{
		MapReplacements: d.mapReplacements(),
	})
	if err != nil {
		return fmt.Errorf("load policy programs: %w", err)
	}
	d.shared = &progs
	for _, e := range []struct {
		idx  uint32
		prog *ebpf.Program
	}{
		{policyProgFromContainer, progs.PolicyFromContainer},
		{policyProgToContainer, progs.PolicyToContainer},
	} {
		if err := d.policyProgs.Put(e.idx, e.prog); err != nil {
			return fmt.Errorf("put policy program %d: %w", e.idx, err)
		}
	}
	return nil
}

// mapReplacements is the CollectionOptions.MapReplacements of every load.
func (d *Datapath) mapReplacements() map[string]*ebpf.Map {
	r := map[string]*ebpf.Map{}
	for _, m := range d.maps() {
		r[m.name] = *m.dst
	}
	return r
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
func newDatapath(pinDir string) (*Datapath, error) {
	return newDatapathWith(pinDir, nil)
}

// newDatapathWith is newDatapath with the object's spec changed by edit
// first (tests: smaller maps).
func newDatapathWith(pinDir string, edit func(*ebpf.CollectionSpec)) (_ *Datapath, err error) {
	spec, err := loadEndpoint()
	if err != nil {
		return nil, err
	}
	if edit != nil {
		edit(spec)
	}
	epSpec := spec.Copy()
	delete(epSpec.Programs, endpointProgPolicyFromContainer)
	delete(epSpec.Programs, endpointProgPolicyToContainer)
	d := &Datapath{spec: spec, epSpec: epSpec, pinDir: pinDir}
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

	for _, m := range d.maps() {
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
	if err := d.initConfig(); err != nil {
		return nil, err
	}
	if err := d.loadShared(); err != nil {
		return nil, err
	}
	if d.placeholder, err = loadPlaceholder(); err != nil {
		return nil, err
	}
	return d, nil
}

// initConfig gives a new config map a random nonzero policy revision, so
// that conntrack entries that outlived an older config map (verified at
// some revision of it) are checked again rather than matching by chance.
func (d *Datapath) initConfig() error {
	c, err := d.readConfig()
	if err != nil {
		return err
	}
	if c.PolicyRevision != 0 {
		return nil
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("initial policy revision: %w", err)
	}
	c.PolicyRevision = max(binary.LittleEndian.Uint32(b[:]), 1)
	return d.writeConfig(c)
}

func (d *Datapath) readConfig() (endpointRuntimeConfig, error) {
	var c endpointRuntimeConfig
	if err := d.config.Lookup(uint32(0), &c); err != nil {
		return c, fmt.Errorf("read config map: %w", err)
	}
	return c, nil
}

func (d *Datapath) writeConfig(c endpointRuntimeConfig) error {
	if err := d.config.Put(uint32(0), c); err != nil {
		return fmt.Errorf("write config map: %w", err)
	}
	return nil
}

// bumpRevision advances the policy revision (skipping 0): every conntrack
// entry is checked against the current policy at its next packet.
func (d *Datapath) bumpRevision() (uint32, error) {
	d.configMu.Lock()
	defer d.configMu.Unlock()
	c, err := d.readConfig()
	if err != nil {
		return 0, err
	}
	c.PolicyRevision++
	if c.PolicyRevision == 0 {
		c.PolicyRevision = 1
	}
	if err := d.writeConfig(c); err != nil {
		return 0, err
	}
	return c.PolicyRevision, nil
}

// Monitor levels (SetMonitorLevel): which events the programs emit.
const (
	MonitorDrops    uint32 = 0 // drops only
	MonitorVerdicts uint32 = 1 // drops and the policy verdict of every new flow
	MonitorTrace    uint32 = 2 // all of the above and every forwarded packet
)

// SetMonitorLevel sets which events the programs emit, at once for every
// endpoint (no program is reloaded). The level is kept in a pinned map: it
// outlives the daemon, which should set it again when it starts.
func (d *Datapath) SetMonitorLevel(level uint32) error {
	if level > MonitorTrace {
		return fmt.Errorf("set monitor level: %w: %d", ErrInvalidMonitorLevel, level)
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	d.configMu.Lock()
	defer d.configMu.Unlock()
	c, err := d.readConfig()
	if err != nil {
		return fmt.Errorf("set monitor level: %w", err)
	}
	c.MonitorLevel = level
	if err := d.writeConfig(c); err != nil {
		return fmt.Errorf("set monitor level: %w", err)
	}
	return nil
}

// PolicyRevision returns the current policy revision: it changes with
// every policy, ipcache or identity change that SyncPolicy, SyncIPCache,
// SetIdentity or Attach writes.
func (d *Datapath) PolicyRevision() (uint32, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return 0, ErrClosed
	}
	c, err := d.readConfig()
	return c.PolicyRevision, err
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

// Close closes the Datapath's file descriptors. It never detaches an
// endpoint's programs nor removes pins: the datapath keeps forwarding
// without the daemon. Prepared interfaces lose their placeholder.
func (d *Datapath) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	return errors.Join(d.closePrepared(), d.closeMaps())
}

func (d *Datapath) closeMaps() error {
	var errs []error
	if d.shared != nil {
		// policy_progs holds them while it exists (pinned: beyond Close).
		errs = append(errs, d.shared.Close())
	}
	if d.placeholder != nil {
		errs = append(errs, d.placeholder.Close())
	}
	for _, m := range d.maps() {
		if *m.dst != nil {
			errs = append(errs, (*m.dst).Close())
		}
	}
	return errors.Join(errs...)
}
