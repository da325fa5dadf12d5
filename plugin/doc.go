// Package plugin serves membrane to Docker and to its operators.
//
// One unix socket carries both of Docker's remote driver protocols, the
// NetworkDriver and the IpamDriver: Docker's go-plugins-helpers can serve only
// one of them per socket, so this package has its own mux over that library's
// request and response types. A second, root-only socket carries the
// management API the membrane CLI talks to. This package is also the only
// place that turns errors into Docker's {"Err": ...} replies, and it wires
// the daemon together (state, IPAM, driver, datapath, Docker reconciliation).
package plugin
