package labels

import (
	"sort"
	"strings"
)

// Labels are identity labels: Docker label key to value, without any source
// prefix.
type Labels map[string]string

// String is the canonical form: key=value pairs sorted by key, joined by
// commas, with backslash, comma and equals sign escaped by a backslash, so
// that equal label sets, and only they, have equal strings.
func (l Labels) String() string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(labelEscaper.Replace(k))
		b.WriteByte('=')
		b.WriteString(labelEscaper.Replace(l[k]))
	}
	return b.String()
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `,`, `\,`, `=`, `\=`)

// Identity is a numeric security identity.
type Identity uint32

// Reserved identities. They are never allocated and never stored.
const (
	IdentityUnknown Identity = 0 // no identity: a wildcard in policy map keys
	IdentityHost    Identity = 1 // the host's own addresses, gateways included
	IdentityWorld   Identity = 2 // any address that is neither a membrane endpoint, the host, nor a CIDR named in policy
	IdentityInit    Identity = 5 // an endpoint whose labels are not known yet
)

// Allocation ranges.
const (
	MinUserIdentity Identity = 256     // first identity for a set of endpoint labels
	MinCIDRIdentity Identity = 1 << 24 // first identity for a CIDR named in policy
	MaxCIDRIdentity Identity = 1<<25 - 1
)

// Reserved returns the name of a reserved identity ("host", "world",
// "init"), or "" for any other.
func (id Identity) Reserved() string {
	switch id {
	case IdentityHost:
		return "host"
	case IdentityWorld:
		return "world"
	case IdentityInit:
		return "init"
	}
	return ""
}
