// Package integration holds membrane's end-to-end tests: they start a private
// dockerd and the membrane daemon as a legacy socket plugin, build a busybox
// test image with `docker import`, and check what a user of
// `docker network create -d membrane` would see — addresses, connectivity,
// isolation and survival of a daemon restart — next to the same checks
// against Docker's own bridge driver as a baseline.
//
// The tests need root and dockerd; without them (or with -short) they skip.
// Run them with
//
//	go test ./integration/ -v
//	go test ./integration/ -v -run '/bridge$'    # the bridge baseline only
//	go test ./integration/ -v -run '/membrane$'  # membrane only
//
// TestPolicy is membrane's policy truth table: one network of labelled
// containers, a "world" network namespace behind the host (mbit-world,
// 198.18.0.0/24 and fd00:198:18::/64, reached through the host's routing
// and FORWARD chain) and the host itself; each scenario imports a policy
// with the membrane CLI and checks every source and destination over TCP,
// UDP and ICMP, IPv6 and IPv4, reporting all mismatches in one table
// (matrix_test.go). Run it alone with
//
//	go test ./integration/ -v -run Policy
//
// TestEgress and TestPorts use the same world namespace as the outside:
// containers reach it masqueraded (or routed, for a global IPv6 subnet),
// internal networks do not, and it reaches ports published with `docker
// run -p` at the host's address on its link (198.18.0.1,
// fd00:198:18::1), as the host does there and at 127.0.0.1;
// TestPortsPolicy checks that ingress policy tells the two apart. Run
// them alone with
//
//	go test ./integration/ -v -run 'Egress|Ports'
//
// The probe subdirectory is the static checker binary baked into the image;
// the harness also runs it on the host and in the world namespace.
package integration
