// Package apiview holds the management API's answers as they go over
// the wire: the daemon (package plugin) encodes them and the membrane CLI
// decodes them. It imports nothing but the standard library, so that the
// CLI, which starts a process for every command, stays free of the
// daemon's dependencies.
package apiview

import (
	"encoding/json"
	"time"
)

// Status is the answer of GET /v1/status.
type Status struct {
	Networks       int       `json:"networks"`
	Endpoints      int       `json:"endpoints"`
	Identities     int       `json:"identities"`
	PolicyRules    int       `json:"policyRules"`
	PolicyRevision uint64    `json:"policyRevision"`
	Lockdown       []uint32  `json:"lockdown,omitempty"` // identities denied everything because the policy map is full
	Counters       []Counter `json:"counters"`
}

// Endpoint is one endpoint as the API shows it (GET /v1/endpoints, and
// /v1/endpoints/ID).
type Endpoint struct {
	ID            string            `json:"id"`
	NetworkID     string            `json:"networkId"`
	ContainerID   string            `json:"containerId,omitempty"`
	ContainerName string            `json:"containerName,omitempty"`
	Interface     string            `json:"interface"`
	MAC           string            `json:"mac"`
	IPv4          string            `json:"ipv4,omitempty"`
	IPv6          string            `json:"ipv6,omitempty"`
	Identity      uint32            `json:"identity"`
	IdentityName  string            `json:"identityName,omitempty"` // for reserved identities: "init"
	IdentitySince *time.Time        `json:"identitySince,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	PolicyIngress bool              `json:"policyIngress"` // default-deny for ingress: some rule selects it
	PolicyEgress  bool              `json:"policyEgress"`
	Lockdown      bool              `json:"lockdown,omitempty"`
	SandboxKey    string            `json:"sandboxKey,omitempty"`
	// Ports are the published ports, "HOSTIP:HOSTPORT->PORT/PROTO" ("*"
	// for every host address): Docker cannot show them for a remote
	// driver (`docker port` is empty).
	Ports []string `json:"ports,omitempty"`
}

// Identity is one identity as the API shows it (GET /v1/identities, and
// /v1/identities/ID).
type Identity struct {
	ID        uint32            `json:"id"`
	Reserved  string            `json:"reserved,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Endpoints []string          `json:"endpoints,omitempty"`
}

// Policy is the answer of GET /v1/policy.
type Policy struct {
	Revision uint64            `json:"revision"`
	Rules    []json.RawMessage `json:"rules"`
}

// Revision answers policy changes (PUT /v1/policy, DELETE /v1/policy and
// /v1/policy/NAME).
type Revision struct {
	Revision uint64 `json:"revision"`
}

// Counter is the datapath's packet and byte count for one reason.
type Counter struct {
	Reason  string // e.g. "forward_peer", "drop_spoof_ip4"
	Drop    bool   // the packets were dropped
	Packets uint64
	Bytes   uint64
}

// Event is one datapath event as GET /v1/monitor streams it, a JSON
// object a line.
type Event struct {
	Time        time.Time `json:"time"`
	Type        string    `json:"type"` // drop, policy or trace
	Reason      string    `json:"reason,omitempty"`
	Hook        string    `json:"hook"`
	Endpoint    uint32    `json:"endpointIfindex"`
	Src         string    `json:"src,omitempty"`
	Dst         string    `json:"dst,omitempty"`
	Proto       string    `json:"proto,omitempty"`
	SrcPort     uint16    `json:"srcPort,omitempty"`
	DstPort     uint16    `json:"dstPort,omitempty"`
	ICMPType    *uint8    `json:"icmpType,omitempty"`
	SrcIdentity uint32    `json:"srcIdentity,omitempty"`
	DstIdentity uint32    `json:"dstIdentity,omitempty"`
	Direction   string    `json:"direction,omitempty"` // of the policy check: ingress or egress
	Verdict     string    `json:"verdict,omitempty"`   // of the policy check: allow or deny
	Match       string    `json:"match,omitempty"`
	CT          string    `json:"ct,omitempty"`
	Length      uint32    `json:"length"`
}
