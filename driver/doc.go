// Package driver implements the lifecycle of membrane networks and endpoints:
// it records them in state, creates the veth pair of each endpoint, programs
// the host's routes and neighbour entries toward the container, asks the
// datapath to attach the endpoint's BPF programs, builds the answers
// Docker expects from CreateEndpoint and Join, picks the host ports of
// published ports, and has the firewall package program masquerade,
// published ports and internal isolation from what state holds.
//
// Every call is idempotent: Docker retries calls whose replies were lost and
// replays deletes for objects the driver may never have seen, so deleting,
// leaving or releasing something unknown succeeds.
//
// The driver never enters a container's network namespace: Docker moves the
// container side of the veth into the sandbox itself after Join.
package driver
