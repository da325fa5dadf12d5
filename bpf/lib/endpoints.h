// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The endpoints map: every local endpoint address (IPv4 as IPv4-mapped IPv6,
 * ::ffff:a.b.c.d) to where it lives. Shared by all endpoints, filled by the
 * Go side (datapath.Attach, datapath.SetIdentity), read by from_container to
 * deliver packets straight into the receiver's namespace, and by the policy
 * code to find the security identity of an endpoint address (its own one
 * included: identities change at run time without reloading programs).
 */
#pragma once

#include "common.h"

#define ENDPOINTS_MAX_ENTRIES 65536

struct endpoint_key {
	__u8 addr[16];
};

struct endpoint_info {
	__u32 ifindex;      /* host-side veth of the endpoint */
	__u32 network;      /* network index; forwarding stays within one */
	__u8 mac[6];        /* container-side MAC */
	__u8 host_mac[6];   /* host-side veth MAC */
	__u32 identity;     /* security identity; IDENTITY_INIT until labels are known */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
	__uint(max_entries, ENDPOINTS_MAX_ENTRIES);
} endpoints SEC(".maps");

static __always_inline struct endpoint_info *endpoints_lookup4(__be32 addr)
{
	struct endpoint_key key = {};

	key.addr[10] = 0xff;
	key.addr[11] = 0xff;
	__builtin_memcpy(&key.addr[12], &addr, sizeof(addr));
	return bpf_map_lookup_elem(&endpoints, &key);
}

static __always_inline struct endpoint_info *endpoints_lookup6(const union v6addr *addr)
{
	struct endpoint_key key;

	__builtin_memcpy(key.addr, addr->addr, sizeof(key.addr));
	return bpf_map_lookup_elem(&endpoints, &key);
}
