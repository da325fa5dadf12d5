package main

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"time"
)

// The management API's answers, as the CLI reads them. They mirror the
// daemon's types (plugin.Status, plugin.EndpointView, ...) field for field
// and tag for tag, so that `-o json` prints what the daemon sent
// (api_test.go holds them to it), without the CLI importing package
// plugin: that would link the daemon's dependencies (the Docker client,
// Prometheus, cilium/ebpf, ...) into a CLI build, whose every start pays
// for their initialization.

type status struct {
	Networks       int       `json:"networks"`
	Endpoints      int       `json:"endpoints"`
	Identities     int       `json:"identities"`
	PolicyRules    int       `json:"policyRules"`
	PolicyRevision uint64    `json:"policyRevision"`
	Lockdown       []uint32  `json:"lockdown,omitempty"`
	Counters       []counter `json:"counters"`
}

// counter is datapath.Counter.
type counter struct {
	Reason  string
	Drop    bool
	Packets uint64
	Bytes   uint64
}

type endpointView struct {
	ID            string            `json:"id"`
	NetworkID     string            `json:"networkId"`
	ContainerID   string            `json:"containerId,omitempty"`
	ContainerName string            `json:"containerName,omitempty"`
	Interface     string            `json:"interface"`
	MAC           string            `json:"mac"`
	IPv4          string            `json:"ipv4,omitempty"`
	IPv6          string            `json:"ipv6,omitempty"`
	Identity      uint32            `json:"identity"`
	IdentityName  string            `json:"identityName,omitempty"`
	IdentitySince *time.Time        `json:"identitySince,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	PolicyIngress bool              `json:"policyIngress"`
	PolicyEgress  bool              `json:"policyEgress"`
	Lockdown      bool              `json:"lockdown,omitempty"`
	SandboxKey    string            `json:"sandboxKey,omitempty"`
	Ports         []string          `json:"ports,omitempty"`
}

type identityView struct {
	ID        uint32            `json:"id"`
	Reserved  string            `json:"reserved,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Endpoints []string          `json:"endpoints,omitempty"`
}

type policyView struct {
	Revision uint64            `json:"revision"`
	Rules    []json.RawMessage `json:"rules"`
}

type revisionView struct {
	Revision uint64 `json:"revision"`
}

type eventView struct {
	Time        time.Time `json:"time"`
	Type        string    `json:"type"`
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
	Direction   string    `json:"direction,omitempty"`
	Verdict     string    `json:"verdict,omitempty"`
	Match       string    `json:"match,omitempty"`
	CT          string    `json:"ct,omitempty"`
	Length      uint32    `json:"length"`
}

// String is the line `membrane monitor` prints for the event.
func (v eventView) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-6s %-14s", v.Time.Format("15:04:05.000"), v.Type, v.Hook)
	if v.Src != "" {
		src, dst := v.Src, v.Dst
		if v.SrcPort != 0 || v.DstPort != 0 {
			src, dst = net.JoinHostPort(v.Src, fmt.Sprint(v.SrcPort)), net.JoinHostPort(v.Dst, fmt.Sprint(v.DstPort))
		}
		fmt.Fprintf(&b, " %s -> %s %s", src, dst, v.Proto)
	}
	if v.ICMPType != nil {
		fmt.Fprintf(&b, " type %d", *v.ICMPType)
	}
	if v.Direction != "" {
		fmt.Fprintf(&b, " identity %d -> %d, %s %s (%s)", v.SrcIdentity, v.DstIdentity, v.Direction, v.Verdict, v.Match)
	}
	if v.Reason != "" {
		fmt.Fprintf(&b, " reason %s", v.Reason)
	}
	if v.CT != "" {
		fmt.Fprintf(&b, " ct %s", v.CT)
	}
	return b.String()
}
