// Package bench is membrane's benchmark harness (make bench): it builds
// the setups it compares on this machine, runs every measurement of a
// round in a random order, round after round, and records the raw samples
// and their per-round ratios in a record.Run.
//
// Everything it measures it creates itself and removes at the end, also on
// failure or interrupt: a private dockerd (own data-root, exec-root, socket
// and an empty config file), a private membrane daemon with its own names
// (plugin membrane-bench, host device mbrbn0, BPF pins under
// /sys/fs/bpf/membrane-bench), network namespaces and veth pairs named
// mbrbench-*, and the containers and networks on that dockerd. Traffic
// only flows between those namespaces and containers. The run holds the
// integration suite's lock file, so a benchmark and the integration tests
// never share the machine.
//
// Client and server are the same binaries in every setup (membrane-netload
// and iperf3), run on the host entered into the target network namespace
// with nsenter and pinned with taskset (client and server on their own
// CPUs), so the setups differ only in the network between them. Beside
// each datapath load's rate the harness records the machine's busy CPU
// time (/proc/stat) per unit of the load's work (cpustat.go), which
// varies less than the rates on a shared machine.
//
// The datapath setups are dual-stack and measured over IPv4 and IPv6
// apart. Beside the bare veth pair, a second one carries the nat rules
// Docker writes into every container (dockerrules.go): they make the
// kernel track each IPv4 connection in the container, which the bare pair
// does not pay.
package bench
