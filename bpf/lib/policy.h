// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * L3/L4 policy: a hash of verdicts keyed by (subject identity, peer
 * identity, port, protocol, direction) and a per-subject enforcement mode.
 * A decision costs seven hash lookups whatever the number of rules.
 *
 * For a packet between subject S and peer X, protocol P, port T, the keys
 *   (X,T,P) (X,0,P) (X,0,0) (0,T,P) (0,0,P) (0,0,0)
 * are looked up in S's direction (peer 0: any peer; proto 0: any protocol,
 * with port 0; port 0: any port of P). Any deny entry denies; else any allow
 * entry allows; else the direction's default applies: deny when S is
 * enforced in that direction, allow when not. A subject in lockdown (its
 * entries did not fit the map) is denied everything; the init identity too.
 *
 * Ports are in host byte order. ICMP and ICMPv6 use the message type as
 * port, with bit 8 set (type | 0x100), so that type 0 differs from "any".
 */
#pragma once

#include "common.h"
#include "identity.h"

/*
 * Entries are allocated on demand (BPF_F_NO_PREALLOC): memory follows the
 * number of entries held, about 100 bytes each; max_entries caps it.
 */
#define POLICY_MAX_ENTRIES (1 << 18)
#define POLICY_ENFORCE_MAX_ENTRIES (1 << 16)

#define POLICY_DIR_INGRESS 0
#define POLICY_DIR_EGRESS 1

#define POLICY_PORT_ICMP 0x100 /* ICMP type T is port T | POLICY_PORT_ICMP */

struct policy_key {
	__u32 subject; /* identity the rule applies to */
	__u32 peer;    /* identity at the other end; 0 = any */
	__u16 port;    /* host order; 0 = any */
	__u8 proto;    /* IPPROTO_*; 0 = any (port 0) */
	__u8 dir;      /* POLICY_DIR_* */
};

#define POLICY_VERDICT_ALLOW 1
#define POLICY_VERDICT_DENY 2

struct policy_value {
	__u8 verdict; /* POLICY_VERDICT_* */
	__u8 pad[3];
};

struct policy_enforce_value {
	__u8 ingress;  /* no matching allow entry = deny, for ingress */
	__u8 egress;   /* same for egress */
	__u8 lockdown; /* deny everything, both directions */
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(max_entries, POLICY_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct policy_enforce_value);
	__uint(max_entries, POLICY_ENFORCE_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} policy_enforce SEC(".maps");

/*
 * How a policy decision was reached. Shared with Go (events); values are
 * stable. Allowed decisions are the ones up to POLICY_ALLOW_DEFAULT.
 */
enum policy_match {
	POLICY_ALLOW_RULE = 1,     /* an allow entry matched, no deny entry */
	POLICY_ALLOW_DEFAULT = 2,  /* no entry matched; direction not enforced */
	POLICY_DENY_RULE = 3,      /* a deny entry matched */
	POLICY_DENY_DEFAULT = 4,   /* no allow entry matched; direction enforced */
	POLICY_DENY_LOCKDOWN = 5,  /* subject in lockdown */
	POLICY_DENY_INIT = 6,      /* subject has the init identity */
};

/* Anchors enum policy_match in BTF so bpf2go can mirror it to Go. */
const enum policy_match *__policy_match_btf __attribute__((unused));

static __always_inline int policy_allowed(int match)
{
	return match == POLICY_ALLOW_RULE || match == POLICY_ALLOW_DEFAULT;
}

/* policy_probe looks key up: 1 << verdict if found (bit 1 allow, bit 2 deny), else 0. */
static __always_inline __u32 policy_probe(const struct policy_key *key)
{
	struct policy_value *v = bpf_map_lookup_elem(&policy, key);

	return v ? 1U << (v->verdict & 3) : 0;
}

#define POLICY_SEEN_ALLOW (1U << POLICY_VERDICT_ALLOW)
#define POLICY_SEEN_DENY (1U << POLICY_VERDICT_DENY)

/*
 * policy_decide returns the enum policy_match for traffic of subject with
 * peer in direction dir, protocol proto, port (host order; ICMP: type |
 * POLICY_PORT_ICMP). Always the same six lookups (duplicates when port or
 * proto is 0), with no branch between them: few verifier states.
 */
static __always_inline int policy_decide(__u32 subject, __u32 peer, __u32 port, __u32 proto,
					 __u32 dir)
{
	struct policy_enforce_value *enf;
	struct policy_key key = {};
	__u32 seen = 0;
	int enforced;

	if (subject == IDENTITY_INIT)
		return POLICY_DENY_INIT;
	enf = bpf_map_lookup_elem(&policy_enforce, &subject);
	if (enf && enf->lockdown)
		return POLICY_DENY_LOCKDOWN;

	key.subject = subject;
	key.dir = dir;
	key.peer = peer;
	key.proto = proto;
	key.port = port;
	seen |= policy_probe(&key); /* (X,T,P) */
	key.port = 0;
	seen |= policy_probe(&key); /* (X,0,P) */
	key.proto = 0;
	seen |= policy_probe(&key); /* (X,0,0) */
	key.peer = 0;
	key.proto = proto;
	key.port = port;
	seen |= policy_probe(&key); /* (0,T,P) */
	key.port = 0;
	seen |= policy_probe(&key); /* (0,0,P) */
	key.proto = 0;
	seen |= policy_probe(&key); /* (0,0,0) */

	if (seen & POLICY_SEEN_DENY)
		return POLICY_DENY_RULE;
	if (seen & POLICY_SEEN_ALLOW)
		return POLICY_ALLOW_RULE;
	enforced = enf && (dir == POLICY_DIR_INGRESS ? enf->ingress : enf->egress);
	return enforced ? POLICY_DENY_DEFAULT : POLICY_ALLOW_DEFAULT;
}
