// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Connection tracking: one LRU hash shared by all endpoints, with one entry
 * per flow. An entry is keyed by the flow's 5-tuple in its canonical
 * orientation (ct_canonical: whichever of the two directions orders first),
 * so a packet of either direction finds it with one lookup; the entry says
 * whether the flow's first packet went the canonical way or the other
 * (CT_F_REVERSED). A packet that goes the way of the first is of an
 * established flow, one that goes the other way is a reply. Entries are
 * created only for flows the policy allowed, and remember the policy
 * revision they were verified at and which checks applied, so a packet of an
 * entry with another revision re-runs exactly the original checks.
 *
 * Datapaths before canonical keys stored an entry under the flow's first
 * tuple, whichever way it ordered; a lookup that misses under the canonical
 * orientation tries the other one, so their flows carry on across an
 * upgrade. The second lookup is paid by packets that find nothing under
 * the canonical orientation: a new flow's first packet (which looked up
 * both orientations before as well), packets of flows that are not tracked
 * (denied, or never tracked), and both directions of a flow an older
 * datapath stored the other way, for as long as it lasts. The other way
 * round, an older datapath does not know CT_F_REVERSED: a rollback must
 * start with empty conntrack (docs/architecture.md, "Upgrades").
 *
 * No garbage collection: the LRU evicts the least recently used entries when
 * the map is full.
 */
#pragma once

#include "common.h"

#define CT_MAX_ENTRIES (1 << 18)

/*
 * ct_key is a flow's 5-tuple, ports in network order; ICMP echo requests
 * have ports (id, 0), so their replies' (0, id) is the same flow.
 */
struct ct_key {
	__u8 saddr[16]; /* IPv4-mapped for IPv4 */
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* ct_entry.flags: the checks a flow passed when it was created, and its orientation. */
#define CT_CHECK_EGRESS 0x1  /* egress of the source, a local endpoint */
#define CT_CHECK_INGRESS 0x2 /* ingress of the destination, a local endpoint */
#define CT_CHECKS (CT_CHECK_EGRESS | CT_CHECK_INGRESS)
#define CT_F_REVERSED 0x80   /* the first packet went the other way than the key */

struct ct_entry {
	/*
	 * bpf_ktime_get_coarse_ns (CLOCK_MONOTONIC at tick resolution: the
	 * fine clock costs a clock-source read on every packet), refreshed at
	 * most once a second.
	 */
	__u64 last_seen;
	__u32 revision;    /* policy revision the flow was last verified at */
	__u16 policy_port; /* port the policy was checked with (host order) */
	__u8 flags;        /* CT_CHECK_*, CT_F_REVERSED */
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
	CT_ESTABLISHED = 2, /* tracked, and going the way its first packet went */
	CT_REPLY = 3,       /* tracked, and going the other way */
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

/*
 * ct_canonical turns key into the orientation its flow's entry is stored
 * under, and returns whether it reversed it. Any fixed order of the two
 * ends would do; this one compares their addresses as two 64-bit words,
 * then their ports.
 */
static __always_inline int ct_canonical(struct ct_key *key)
{
	union v6addr s, d;

	__builtin_memcpy(s.addr, key->saddr, sizeof(s.addr));
	__builtin_memcpy(d.addr, key->daddr, sizeof(d.addr));
	if (s.d64[0] != d.d64[0]) {
		if (s.d64[0] < d.d64[0])
			return 0;
	} else if (s.d64[1] != d.d64[1]) {
		if (s.d64[1] < d.d64[1])
			return 0;
	} else if (key->sport <= key->dport) {
		return 0;
	}
	ct_reverse_inplace(key);
	return 1;
}

/*
 * ct_lookup finds the entry of the flow of a packet with tuple key: under the
 * canonical orientation, else under the other (an entry of an older
 * datapath). When it finds one, key becomes the flow's original tuple (that
 * of its first packet) and *reply says whether the packet goes the other
 * way. When it finds none, key is left in some orientation of the tuple.
 */
static __always_inline struct ct_entry *ct_lookup(struct ct_key *key, int *reply)
{
	int reversed = ct_canonical(key); /* whether the packet goes against key */
	struct ct_entry *e;

	e = bpf_map_lookup_elem(&ct, key);
	if (!e) {
		ct_reverse_inplace(key);
		reversed = !reversed;
		e = bpf_map_lookup_elem(&ct, key);
		if (!e)
			return NULL;
	}
	if (e->flags & CT_F_REVERSED) {
		ct_reverse_inplace(key);
		reversed = !reversed;
	}
	*reply = reversed;
	return e;
}

/*
 * ct_create tracks a new flow whose first packet has tuple key, verified at
 * revision rev; key is left in the canonical orientation.
 */
static __always_inline void ct_create(struct ct_key *key, __u64 now, __u32 rev,
				      __u16 policy_port, __u8 checks)
{
	struct ct_entry entry = {
		.last_seen = now,
		.revision = rev,
		.policy_port = policy_port,
		.flags = checks & CT_CHECKS,
	};

	if (ct_canonical(key))
		entry.flags |= CT_F_REVERSED;
	/*
	 * Should the other end have opened the same 5-tuple meanwhile (a
	 * simultaneous open), its entry stays: one flow, one entry. This
	 * packet passed its own checks either way.
	 */
	bpf_map_update_elem(&ct, key, &entry, BPF_NOEXIST);
}

/* ct_touch refreshes last_seen, writing the shared entry only when it is stale. */
static __always_inline void ct_touch(struct ct_entry *e, __u64 now)
{
	if (now - e->last_seen > CT_REFRESH_NS)
		e->last_seen = now;
}
