// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Connection tracking: one LRU hash shared by all endpoints, keyed by the
 * 5-tuple of a flow's first packet. A packet whose tuple is found belongs to
 * an established flow; one whose reversed tuple is found is a reply. Entries
 * are created only for flows the policy allowed, and remember the policy
 * revision they were verified at and which checks applied, so a packet of an
 * entry with another revision re-runs exactly the original checks.
 *
 * No garbage collection: the LRU evicts the least recently used entries when
 * the map is full.
 */
#pragma once

#include "common.h"

#define CT_MAX_ENTRIES (1 << 18)

/* ct_key is a flow's 5-tuple. Ports in network order; ICMP echo: id, 0. */
struct ct_key {
	__u8 saddr[16]; /* IPv4-mapped for IPv4 */
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* Checks a flow passed when it was created (ct_entry.checks). */
#define CT_CHECK_EGRESS 0x1  /* egress of the source, a local endpoint */
#define CT_CHECK_INGRESS 0x2 /* ingress of the destination, a local endpoint */

struct ct_entry {
	/*
	 * bpf_ktime_get_coarse_ns (CLOCK_MONOTONIC at tick resolution: the
	 * fine clock costs a clock-source read on every packet), refreshed at
	 * most once a second.
	 */
	__u64 last_seen;
	__u32 revision;    /* policy revision the flow was last verified at */
	__u16 policy_port; /* port the policy was checked with (host order) */
	__u8 checks;       /* CT_CHECK_* */
	/*
	 * 0 while the flow is allowed. When a policy change denies it, the
	 * drop reason: the entry stays as a tombstone so that neither
	 * direction passes, and a packet of the other direction cannot start
	 * the same connection over as a new flow, until the flow ages out or
	 * a later revision allows it again.
	 */
	__u8 denied;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(max_entries, CT_MAX_ENTRIES);
} ct SEC(".maps");

/* How a packet relates to the tracked flows; shared with Go (events). */
enum ct_state {
	CT_NEW = 1,         /* first packet of a flow (or one never tracked) */
	CT_ESTABLISHED = 2, /* tuple found */
	CT_REPLY = 3,       /* reversed tuple found */
	CT_RELATED = 4,     /* ICMP error about a tracked flow */
};

/* Anchors enum ct_state in BTF so bpf2go can mirror it to Go. */
const enum ct_state *__ct_state_btf __attribute__((unused));

#define CT_REFRESH_NS 1000000000ULL

/* ct_reverse_inplace turns key into the tuple of the other direction. */
static __always_inline void ct_reverse_inplace(struct ct_key *key)
{
	union v6addr a;
	__be16 port;

	__builtin_memcpy(a.addr, key->saddr, sizeof(a.addr));
	__builtin_memcpy(key->saddr, key->daddr, sizeof(key->saddr));
	__builtin_memcpy(key->daddr, a.addr, sizeof(key->daddr));
	port = key->sport;
	key->sport = key->dport;
	key->dport = port;
}

/* ct_create tracks a new flow with tuple key, verified at revision rev. */
static __always_inline void ct_create(const struct ct_key *key, __u64 now, __u32 rev,
				      __u16 policy_port, __u8 checks)
{
	struct ct_entry entry = {
		.last_seen = now,
		.revision = rev,
		.policy_port = policy_port,
		.checks = checks,
	};

	bpf_map_update_elem(&ct, key, &entry, BPF_ANY);
}

/* ct_touch refreshes last_seen, writing the shared entry only when it is stale. */
static __always_inline void ct_touch(struct ct_entry *e, __u64 now)
{
	if (now - e->last_seen > CT_REFRESH_NS)
		e->last_seen = now;
}
