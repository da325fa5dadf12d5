package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/docker/client"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/membrane-net/membrane/datapath"
	"github.com/membrane-net/membrane/driver"
	"github.com/membrane-net/membrane/firewall"
	ipamalloc "github.com/membrane-net/membrane/ipam"
	"github.com/membrane-net/membrane/labels"
	"github.com/membrane-net/membrane/state"
)

// Config is everything `membrane daemon` can be told.
type Config struct {
	PluginName string        // Docker driver name; the socket is PluginDir/PluginName.sock
	PluginDir  string        // where Docker discovers socket plugins
	APISocket  string        // the management API socket
	StateDir   string        // state checkpoints
	BPFDir     string        // BPF pins
	DockerHost string        // Docker's API, for reconciliation only
	HostDevice string        // host interface holding the gateways
	IPv4Range  netip.Prefix  // where dynamic IPv4 pools come from
	StaleGrace time.Duration // how young an endpoint Docker does not list may be before it is collected
	Resync     time.Duration // how often state is compared with Docker

	PolicyDir        string   // policy files imported at start; empty for none
	IdentityLabels   []string // label filter patterns (labels.NewFilter)
	MetricsAddress   string   // Prometheus /metrics listener; empty for none
	ManageForwarding bool     // turn on forwarding and accept membrane traffic in FORWARD (NAT and internal isolation are always programmed)
	SpareVeths       int      // veth pairs kept ready for new endpoints (driver.Config.SpareVeths)
}

// Log attribute keys of the daemon.
const (
	logKeyPath       = "path"
	logKeyEndpoint   = "endpoint"
	logKeyNetwork    = "network"
	logKeyMap        = "map"
	logKeyIdentity   = "identity"
	logKeyIdentities = "identities"
	logKeyLabels     = "labels"
	logKeyRevision   = "revision"
	logKeyRules      = "rules"
	logKeyAddress    = "address"

	logKeyPluginSocket = "plugin_socket"
	logKeyAPISocket    = "api_socket"
)

// PluginSocket is the path of the socket Docker talks to.
func (c Config) PluginSocket() string { return filepath.Join(c.PluginDir, c.PluginName+".sock") }

// Run starts the daemon and serves until ctx is cancelled. It leaves the
// datapath in place when it returns: containers keep their connectivity
// while no daemon runs.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := ensureBPFFS(cfg.BPFDir); err != nil {
		return err
	}
	if err := writableProcSys(); err != nil {
		log.Error("sysctls cannot be set", logKeyError, err.Error())
	}
	store, restored, err := state.Open(cfg.StateDir)
	if err != nil {
		return fmt.Errorf("open state: %w", err)
	}
	defer store.Close()
	for _, skipped := range restored.Skipped {
		var jerr *state.JournalError
		if errors.As(skipped, &jerr) && jerr.Torn {
			// A write cut short by a crash: it was never acknowledged.
			log.Warn("torn journal tail ignored", logKeyError, skipped.Error())
			continue
		}
		if jerr != nil {
			log.Error("journal records lost (their bytes are kept in the file named)", logKeyError, skipped.Error())
			continue
		}
		log.Error("corrupt checkpoint skipped", logKeyError, skipped.Error())
	}
	log.Info("state restored", logKeyPath, restored.Path, "journal_records", restored.Replayed)

	dp, err := datapath.Open(datapath.Config{PinDir: cfg.BPFDir})
	if err != nil {
		return fmt.Errorf("open datapath: %w", err)
	}
	defer dp.Close()
	for _, m := range dp.ReplacedMaps() {
		// Reconcile below refills it and re-attaches every endpoint.
		log.Warn("pinned map did not match this version and was replaced", logKeyMap, m)
	}

	nl, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	defer nl.Close()

	alloc, err := ipamalloc.New(store, ipamalloc.Config{
		IPv4Range:  cfg.IPv4Range,
		HostRoutes: func() ([]netip.Prefix, error) { return hostRoutes(nl) },
	})
	if err != nil {
		return fmt.Errorf("start IPAM: %w", err)
	}
	// The host device is unique per daemon on a host: it names the
	// daemon's own iptables chains.
	fw, err := firewall.New(firewall.Config{Instance: cfg.HostDevice, Interfaces: driver.HostInterfaces})
	if err != nil {
		return fmt.Errorf("start firewall: %w", err)
	}
	ports := firewall.PortAllocator{EphemeralFirst: 49153, EphemeralLast: 65535, InUse: firewall.HostPortInUse}
	if first, last, err := firewall.EphemeralRange(); err != nil {
		log.Warn("ephemeral port range unknown: `-p PORT` picks host ports from 49153-65535", logKeyError, err.Error())
	} else {
		ports.EphemeralFirst, ports.EphemeralLast = first, last
	}
	// Endpoints that go away may leave identities unused: the controller
	// collects them, outside the Docker call that removed the endpoint.
	collectKick := make(chan struct{}, 1)
	endpointRemoved := func() {
		select {
		case collectKick <- struct{}{}:
		default: // a collection is already due
		}
	}
	drv, err := driver.New(store, dp, nl, driver.Config{
		HostDevice: cfg.HostDevice, Firewall: fw, Ports: ports, EndpointRemoved: endpointRemoved,
		SpareVeths: cfg.SpareVeths, Log: log,
	})
	if err != nil {
		return fmt.Errorf("start driver: %w", err)
	}
	if err := drv.Reconcile(); err != nil {
		// Each failure concerns one object; the rest is serving.
		log.Error("reconcile with the kernel", logKeyError, err.Error())
	}
	if cfg.ManageForwarding {
		if err := fw.EnableForwarding(); err != nil {
			log.Error("traffic beyond the host may be dropped", logKeyError, err.Error())
		}
	}

	filter, err := labels.NewFilter(cfg.IdentityLabels)
	if err != nil {
		return fmt.Errorf("--identity-labels: %w", err)
	}
	ctl := &controller{
		store: store, dp: dp, nl: nl, filter: filter, log: log, now: time.Now,
		alloc:       labels.NewAllocator(store, time.Now),
		collectKick: collectKick,
	}
	if err := ctl.Recompute(); err != nil {
		return fmt.Errorf("apply stored policy: %w", err)
	}
	if err := importPolicyDir(ctl, cfg.PolicyDir, log); err != nil {
		return err
	}

	docker, err := client.NewClientWithOpts(client.WithHost(cfg.DockerHost), client.WithAPIVersionNegotiation())
	if err != nil {
		return fmt.Errorf("docker client for %s: %w", cfg.DockerHost, err)
	}
	defer docker.Close()

	pluginLn, err := listenUnix(cfg.PluginSocket(), 0o600)
	if err != nil {
		return err
	}
	apiLn, err := listenUnix(cfg.APISocket, 0o600)
	if err != nil {
		pluginLn.Close()
		return err
	}
	api := &apiServer{store: store, dp: dp, ctl: ctl, events: &eventHub{dp: dp, log: log}}
	watcher := labels.NewWatcher(docker, log, ctl.onLabels)
	servers := []*http.Server{
		newServer(wakeOnCall(NewDockerHandler(drv, alloc, log), watcher.Wake), log),
		newServer(newAPIHandler(api), log),
	}
	errc := make(chan error, len(servers)+2)
	for i, ln := range []net.Listener{pluginLn, apiLn} {
		go func() {
			if err := servers[i].Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	log.Info("serving", logKeyPluginSocket, cfg.PluginSocket(), logKeyAPISocket, cfg.APISocket)

	go func() {
		if err := api.events.run(ctx); err != nil {
			errc <- err
		}
	}()
	if cfg.MetricsAddress != "" {
		go func() {
			if err := serveMetrics(ctx, cfg.MetricsAddress, api, log); err != nil {
				errc <- err
			}
		}()
	}
	go ctl.collectLoop(ctx)
	go watcher.Run(ctx)
	resync := &dockerResync{cfg: cfg, drv: drv, fw: fw, ipam: alloc, store: store, docker: docker, log: log}
	go resync.loop(ctx)
	sparesCtx, stopSpares := context.WithCancel(ctx)
	sparesDone := make(chan struct{})
	go func() {
		defer close(sparesDone)
		drv.KeepSpares(sparesCtx, func(err error) {
			log.Warn("new endpoints will be slower to attach", logKeyError, err.Error())
		})
	}()

	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("serve: %w", err)
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.Shutdown(shutdownCtx) // best effort: the process is ending
	}
	stopSpares()
	<-sparesDone // it removes the spares while the datapath is open
	os.Remove(cfg.PluginSocket())
	os.Remove(cfg.APISocket)
	return err
}

// wakeOnCall calls wake before each request: a call from dockerd is news
// that Docker is up again after a restart, which the label watcher may be
// waiting out a backoff to find out.
func wakeOnCall(h http.Handler, wake func()) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wake()
		h.ServeHTTP(w, r)
	})
}

func newServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// listenUnix listens on a unix socket, replacing a stale socket file left
// by a daemon that was killed.
func listenUnix(path string, mode os.FileMode) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restrict socket %s: %w", path, err)
	}
	return ln, nil
}

// ensureBPFFS mounts the BPF filesystem at /sys/fs/bpf when the pin
// directory lives there and nothing is mounted yet.
func ensureBPFFS(pinDir string) error {
	const root = "/sys/fs/bpf"
	if !strings.HasPrefix(filepath.Clean(pinDir), root+"/") {
		return nil
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(root, &fs); err != nil {
		return fmt.Errorf("inspect %s: %w", root, err)
	}
	if fs.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := unix.Mount("bpf", root, "bpf", 0, ""); err != nil {
		return fmt.Errorf("mount the BPF filesystem on %s: %w", root, err)
	}
	return nil
}

// hostRoutes lists the IPv4 prefixes routed on the host (local-table
// entries aside). Routes to membrane's own containers lie inside its pools,
// which IPAM avoids anyway; those of another membrane daemon on the same
// host must count, as Docker counts them.
func hostRoutes(nl *netlink.Handle) ([]netip.Prefix, error) {
	filter := &netlink.Route{Table: unix.RT_TABLE_UNSPEC}
	routes, err := nl.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_TABLE)
	if errors.Is(err, netlink.ErrDumpInterrupted) {
		routes, err = nl.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_TABLE)
	}
	if err != nil {
		return nil, fmt.Errorf("list host routes: %w", err)
	}
	var out []netip.Prefix
	for _, r := range routes {
		if r.Dst == nil || r.Table == unix.RT_TABLE_LOCAL {
			continue
		}
		ip, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		out = append(out, netip.PrefixFrom(ip.Unmap(), ones).Masked())
	}
	return out, nil
}

// importPolicyDir imports every .json, .yaml and .yml file of dir, in name
// order. A bad file stops the start: running with half the intended policy
// would be worse than not running.
func importPolicyDir(ctl *controller, dir string, log *slog.Logger) error {
	if dir == "" {
		return nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("--policy-dir: %w", err)
	}
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".json", ".yaml", ".yml":
		default:
			continue
		}
		path := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("--policy-dir: %w", err)
		}
		rev, err := ctl.ImportPolicy(data)
		if err != nil {
			return fmt.Errorf("--policy-dir: %s: %w", path, err)
		}
		log.Info("policy file imported", logKeyPath, path, logKeyRevision, rev)
	}
	return nil
}

// writableProcSys remounts /proc/sys read-write where it is mounted
// read-only, as Docker does for a managed plugin. The plugin holds
// CAP_SYS_ADMIN in a mount namespace of its own, so the remount is seen by
// the plugin only; membrane needs it for the forwarding and route_localnet
// sysctls.
func writableProcSys() error {
	var st unix.Statfs_t
	if err := unix.Statfs("/proc/sys", &st); err != nil {
		return fmt.Errorf("statfs /proc/sys: %w", err)
	}
	if st.Flags&unix.ST_RDONLY == 0 {
		return nil
	}
	keep := uintptr(st.Flags) & (unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if err := unix.Mount("", "/proc/sys", "", unix.MS_REMOUNT|unix.MS_BIND|keep, ""); err != nil {
		return fmt.Errorf("remount /proc/sys read-write: %w", err)
	}
	return nil
}
