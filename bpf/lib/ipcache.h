// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The ipcache: prefix -> identity for every address that is not a local
 * endpoint's: CIDR identities named in policy, the host's addresses
 * (identity host) and the catch-all ::/0 and ::ffff:0.0.0.0/96 (world).
 * IPv4 prefixes are IPv4-mapped: ::ffff:a.b.c.d with prefixlen + 96.
 * Filled by datapath.SyncIPCache; the longest prefix wins.
 *
 * Nodes are allocated on demand (an LPM trie is never preallocated):
 * max_entries only caps it, at roughly 100 bytes a node.
 */
#pragma once

#include "common.h"

#define IPCACHE_MAX_ENTRIES (1 << 18)

struct ipcache_key {
	__u32 prefixlen; /* 0..128, over addr */
	__u8 addr[16];
};

struct ipcache_value {
	__u32 identity;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(max_entries, IPCACHE_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} ipcache SEC(".maps");

/* ipcache_lookup returns the identity of addr (16 bytes), 0 if no prefix holds it. */
static __always_inline __u32 ipcache_lookup(const __u8 *addr)
{
	struct ipcache_key key = { .prefixlen = 128 };
	struct ipcache_value *v;

	__builtin_memcpy(key.addr, addr, sizeof(key.addr));
	v = bpf_map_lookup_elem(&ipcache, &key);
	return v ? v->identity : 0;
}
