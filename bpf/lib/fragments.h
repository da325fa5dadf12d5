// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * IP fragments. Only a first fragment carries the L4 header, so when one is
 * forwarded its ports are recorded under (source, destination, IP ID,
 * protocol); later fragments take their ports from that record and go
 * through conntrack and policy like the first. A later fragment without a
 * record is dropped: fragments never bypass port rules.
 */
#pragma once

#include "common.h"

#define FRAG_MAX_ENTRIES 8192

struct frag_key {
	__u8 saddr[16]; /* IPv4-mapped for IPv4 */
	__u8 daddr[16];
	__be32 id;      /* IPv4 ID (zero-extended) or IPv6 fragment identification */
	__u8 proto;     /* IPv4 protocol or the fragment header's next header */
	__u8 pad[3];
};

struct frag_value {
	__be16 sport;      /* flow tuple of the first fragment */
	__be16 dport;
	__u16 policy_port;
	__u8 proto;        /* upper-layer protocol */
	__u8 flags;        /* FLOW_F_* of the first fragment that matter to later ones */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_key);
	__type(value, struct frag_value);
	__uint(max_entries, FRAG_MAX_ENTRIES);
} fragments SEC(".maps");
