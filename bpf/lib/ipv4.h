// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* IPv4 header helpers. */
#pragma once

#include "common.h"

/* ipv4_hdr returns the IPv4 header after the Ethernet header, or NULL if it is truncated or invalid. */
static __always_inline struct iphdr *ipv4_hdr(const struct __sk_buff *ctx)
{
	void *data = ctx_data(ctx), *data_end = ctx_data_end(ctx);
	struct iphdr *ip4 = data + ETH_HLEN;

	if ((void *)(ip4 + 1) > data_end)
		return NULL;
	if (ip4->version != 4 || ip4->ihl < 5)
		return NULL;
	if ((void *)ip4 + ip4->ihl * 4 > data_end)
		return NULL;
	return ip4;
}

/* ipv4_is_multicast_or_broadcast: 224.0.0.0/4 and 255.255.255.255. */
static __always_inline int ipv4_is_multicast_or_broadcast(__be32 addr)
{
	return (addr & bpf_htonl(0xf0000000)) == bpf_htonl(0xe0000000) ||
	       addr == bpf_htonl(0xffffffff);
}
