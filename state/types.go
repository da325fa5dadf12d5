package state

import (
	"net/netip"
	"time"
)

// Objects stored in the database. They are never mutated after insert:
// copy, change the copy, insert the copy.

// Network is a Docker network served by the membrane driver.
type Network struct {
	ID      string            // Docker's network ID
	Index   uint32            // datapath network number, unique among live networks, > 0
	IPv4    *Subnet           // nil when the network has no IPv4
	IPv6    *Subnet           // nil when the network has no IPv6
	MTU     int               // 0 means the host default
	Options map[string]string // driver options as Docker passed them
	// Internal networks (`docker network create --internal`) reach
	// nothing beyond themselves.
	Internal bool
	Created  time.Time
}

// Subnet is one address family's subnet of a network.
type Subnet struct {
	Pool    netip.Prefix
	Gateway netip.Addr // may be invalid when Docker gave none
}

// Endpoint is one container interface on a network.
type Endpoint struct {
	ID         string // Docker's endpoint ID
	NetworkID  string
	HostIfName string       // host side of the veth pair
	PeerIfName string       // container side, before Docker moves it into the sandbox
	MAC        string       // container-side MAC, canonical lower-case form
	IPv4       netip.Prefix // zero when none
	IPv6       netip.Prefix // zero when none
	SandboxKey string       // set by Join, cleared by Leave
	Created    time.Time

	ContainerID   string            // learnt from Docker, asynchronously; empty until then
	ContainerName string            // likewise, without Docker's leading slash
	Labels        map[string]string // identity labels (filtered); nil until known
	Identity      uint32            // numeric security identity; labels.IdentityInit until labels are known
	IdentitySince time.Time         // when Identity took effect

	// Ports are the ports published for the endpoint's container
	// (`docker run -p`), set by ProgramExternalConnectivity and cleared
	// by RevokeExternalConnectivity.
	Ports []PortMapping
}

// PortMapping is one port an endpoint publishes on the host.
type PortMapping struct {
	Proto string // "tcp", "udp" or "sctp"
	// HostIP is where the port is published: the zero Addr means every
	// host address of both families, 0.0.0.0 or :: every address of one
	// family, anything else that address only.
	HostIP   netip.Addr
	HostPort uint16 // the host port, picked from the range Docker asked for
	Port     uint16 // the container's port
}

// Pool is an address pool handed to Docker by the IPAM driver.
type Pool struct {
	ID           string // returned to Docker as PoolID
	AddressSpace string
	Prefix       netip.Prefix
	Range        netip.Prefix // sub-pool addresses are allocated from; equals Prefix when none was asked for
	V6           bool
	RequestKey   string     // canonical form of the request, for idempotent RequestPool
	Next         netip.Addr // allocation cursor: the search for a free address starts here
	Created      time.Time
}

// Address is one allocated address inside a pool.
type Address struct {
	Key    string // PoolID + "|" + Addr, the primary key
	PoolID string
	Addr   netip.Addr
	Kind   string // AddressKindGateway, AddressKindAux or AddressKindEndpoint
}

// Address kinds.
const (
	AddressKindGateway  = "gateway"
	AddressKindAux      = "aux"
	AddressKindEndpoint = "endpoint"
)

// Identity is a numeric security identity: one per distinct set of
// identity labels (endpoint identities, from labels.MinUserIdentity) or per
// CIDR named in policy (from labels.MinCIDRIdentity). Reserved identities
// (host, world, init) are constants and never stored.
type Identity struct {
	ID      uint32
	Key     string            // canonical form of Labels; unique
	Labels  map[string]string // for a CIDR identity: {"cidr:<prefix>": ""}
	Created time.Time
}

// Policy is one imported policy rule.
type Policy struct {
	Name     string // the rule's "name" label; unnamed rules get "sha256:<hash of Rule>"
	Rule     []byte // the rule as canonical JSON, validated before insert
	Revision uint64 // policy revision at which it was imported
	Imported time.Time
}

// Meta is a host-wide key/value setting (the generated ULA prefix, for one).
type Meta struct {
	Key   string
	Value string
}

// AddressKey returns the primary key of an address row.
func AddressKey(poolID string, addr netip.Addr) string {
	return poolID + "|" + addr.String()
}
