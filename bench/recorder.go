package bench

import (
	"fmt"
	"io"
	"strconv"
	"sync"

	"github.com/membrane-net/membrane/bench/record"
)

// recorder collects samples into series as the run goes, and the
// measurements that failed.
type recorder struct {
	mu     sync.Mutex
	series map[string]*record.Series
	order  []*record.Series
	errors []string
	log    io.Writer
}

func newRecorder(log io.Writer) *recorder {
	return &recorder{series: map[string]*record.Series{}, log: log}
}

// add records one sample of the series id.
func (r *recorder) add(id, unit string, round int, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.series[id]
	if !ok {
		s = &record.Series{ID: id, Unit: unit}
		r.series[id] = s
		r.order = append(r.order, s)
	}
	s.Samples = append(s.Samples, record.Sample{Round: round, Value: v})
}

// fail records a measurement that failed; the run goes on and exits
// nonzero at the end.
func (r *recorder) fail(what string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	msg := fmt.Sprintf("%s: %v", what, err)
	r.errors = append(r.errors, msg)
	fmt.Fprintf(r.log, "bench: FAILED %s\n", msg)
}

// Series IDs. One place names them all, so that the summary finds what the
// measurements recorded.
const (
	secDatapath = "datapath"
	secScale    = "scale"
	secInstall  = "install"
	secAddOne   = "add-one"
	secControl  = "control"
	// secConntrack holds counts that may rightly be zero.
	secConntrack = "conntrack"
)

// Datapath setups.
const (
	setupRaw      = "raw"             // veth pair between two namespaces
	setupRawNat   = "raw-docker-nat"  // veth pair, both namespaces holding Docker's in-container nat rules (IPv4 only)
	setupBridge   = "bridge"          // Docker's bridge network
	setupMembrane = "membrane"        // membrane network, no policy
	setupPolicy   = "membrane-policy" // membrane network, ingress and egress enforced
)

// datapathSetups are every datapath setup, in the order tables list them.
var datapathSetups = []string{setupRaw, setupRawNat, setupBridge, setupMembrane, setupPolicy}

// Address families of the datapath comparison.
const (
	familyIPv4 = "ipv4"
	familyIPv6 = "ipv6"
)

var families = []string{familyIPv4, familyIPv6}

// familySetups are the setups measured over an address family. Docker
// installs its in-container nat rules for IPv4 only, so the setup that
// copies them has nothing to show over IPv6.
func familySetups(family string) []string {
	if family == familyIPv6 {
		return []string{setupRaw, setupBridge, setupMembrane, setupPolicy}
	}
	return datapathSetups
}

// familyMetrics are the loads run over an address family: all of them
// over IPv4; over IPv6 UDP only when asked (it is the first load dropped
// to keep the full run short).
func familyMetrics(family string, ipv6UDP bool) []string {
	if family == familyIPv6 && !ipv6UDP {
		return []string{metricTCP1, metricTCP2, metricRR, metricCRR}
	}
	return []string{metricTCP1, metricTCP2, metricRR, metricCRR, metricUDP}
}

// Datapath metrics.
const (
	metricTCP1  = "tcp-1"  // iperf3 -P 1, Gbit/s at the receiver
	metricTCP2  = "tcp-2"  // iperf3 -P 2
	metricRR    = "rr"     // transactions/s
	metricRRP50 = "rr-p50" // µs
	metricRRP99 = "rr-p99" // µs
	metricCRR   = "crr"    // connections/s
	metricUDP   = "udp"    // datagrams/s at the receiver
	metricMS    = "ms"     // a duration
	metricMiB   = "mib"    // memory
)

// cpuMetric is the companion of a datapath load's rate: the machine's busy
// CPU time per unit of the load's work (cpuCosts gives the unit), one
// sample per round beside the rate's, e.g. datapath/raw/rr-cpu.
func cpuMetric(metric string) string { return metric + "-cpu" }

// Implementations the policy-scale section compares.
const (
	implMembrane         = "membrane"
	implMembraneDatapath = "membrane-datapath" // in-process SyncPolicy
	implRouted           = "routed"            // router namespace, no rules: iptables' baseline
)

func implIptables(backend string) string { return "iptables-" + backend }

// datapathID is an IPv4 datapath series (the IDs IPv4 always had).
func datapathID(setup, metric string) string { return secDatapath + "/" + setup + "/" + metric }

// datapathFamilyID is a datapath series of an address family; IPv4's is
// datapathID.
func datapathFamilyID(family, setup, metric string) string {
	if family == familyIPv4 {
		return datapathID(setup, metric)
	}
	return secDatapath + "-" + family + "/" + setup + "/" + metric
}

// conntrackID is the conntrack entries a new connection adds in the
// client's namespace of a setup, over a family.
func conntrackID(family, setup string) string { return secConntrack + "/" + family + "/" + setup }

func scaleID(impl string, n int, metric string) string {
	return secScale + "/" + impl + "/" + strconv.Itoa(n) + "/" + metric
}

func installID(impl string, n int) string { return secInstall + "/" + impl + "/" + strconv.Itoa(n) }

func addOneID(impl string, n int) string { return secAddOne + "/" + impl + "/" + strconv.Itoa(n) }

// Control-plane series.
func controlID(what string) string { return secControl + "/" + what }

const (
	ctlRunConnect       = "run-connect"       // + "/" + driver + "/" + stack: docker run → first connect, ms
	ctlRunReturn        = "run-return"        // + "/" + driver + "/" + stack: docker run -d returns, ms
	ctlRunCall          = "run-call"          // + "/" + stack + "/" + method: the daemon's Docker calls during the membrane docker runs, ms
	ctlImportAllow      = "import-allow"      // import → a newly allowed flow passes, ms
	ctlImportDeny       = "import-deny"       // import → a newly denied flow is dropped, ms
	ctlAttach           = "attach"            // in-process Attach of a new endpoint on a prepared veth (a spare), ms
	ctlAttachUnprepared = "attach-unprepared" // in-process Attach of a new endpoint on a fresh veth (no spare left), ms
	ctlAttachAgain      = "attach-again"      // in-process Attach of an attached endpoint (restart path), ms
	ctlCreateEP         = "create-endpoint"   // daemon's CreateEndpoint call, ms
	ctlRSSAfterRounds   = "rss-after-rounds"  // daemon VmRSS after the policy-scale rounds, MiB
	ctlRSS              = "rss"               // + "/" + N: daemon VmRSS, MiB
	ctlBPFMaps          = "bpf-maps"          // + "/" + N: map memory, MiB
	ctlBPFProgs         = "bpf-progs"         // + "/" + N: program memory, MiB
)
