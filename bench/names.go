package bench

import "time"

// Names the harness owns. They differ from the integration suite's
// (membrane-it, mbrit0) and from a default membrane install (membrane,
// membrane0), so that none of them can collide.
const (
	namePrefix   = "mbrbench" // network namespaces, containers, Docker networks
	pluginName   = "membrane-bench"
	hostDevice   = "mbrbn0"
	bpfDir       = "/sys/fs/bpf/membrane-bench"
	inprocBPFDir = "/sys/fs/bpf/membrane-bench-inproc" // the harness's own datapath (attach, sync timings)
	pluginDir    = "/run/docker/plugins"
	imageName    = "membrane-bench/busybox:latest"
	// bridgeDevice is the Docker bridge network's Linux bridge; not
	// "mbr…", which membrane's FORWARD accepts match (mbr+).
	bridgeDevice = "benchbr0"
	// bridgeDevice4 is the IPv4-only Docker bridge network's, for the
	// docker run timing.
	bridgeDevice4  = "benchbr4"
	containerLabel = "mbrbench=1" // on every container the harness creates
)

// Ports of the traffic tools in every setup.
const (
	portRR      = 7000 // netload TCP: rr and crr
	portProbe   = 7002 // netload TCP: the port policy changes open and close
	portUDP     = 7000 // netload UDP sink
	portControl = 7001 // netload control (UDP counters)
	portIperf   = 5201 // iperf3 server
)

// CPUs: the client runs on one, the server on the other, so that neither
// waits for the other's CPU and a noisy neighbour shows as spread, not as
// a shifted median.
const (
	defaultClientCPU = 0
	defaultServerCPU = 1
)

// Timeouts: nothing waits without one.
const (
	dockerdStartTimeout  = 60 * time.Second
	membraneStartTimeout = 30 * time.Second
	stopGrace            = 20 * time.Second
	dockerCmdTimeout     = 2 * time.Minute
	buildTimeout         = 5 * time.Minute
	// loadSlack is what a load may take beyond its own duration
	// (process start, connection setup, iperf3's handshake).
	loadSlack = 60 * time.Second
)
