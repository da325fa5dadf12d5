// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Ethernet header helpers. */
#pragma once

#include "common.h"

static __always_inline int eth_addr_equal(const __u8 *a, const struct mac_addr *b)
{
	/* Byte loads: a may sit at any alignment in the packet. */
	return ((a[0] ^ b->addr[0]) | (a[1] ^ b->addr[1]) | (a[2] ^ b->addr[2]) |
		(a[3] ^ b->addr[3]) | (a[4] ^ b->addr[4]) | (a[5] ^ b->addr[5])) == 0;
}

static __always_inline void eth_addr_copy(__u8 *dst, const struct mac_addr *src)
{
	__builtin_memcpy(dst, src->addr, ETH_ALEN);
}

/* eth_rewrite sets the source and destination MAC of the frame. */
static __always_inline void eth_rewrite(struct ethhdr *eth,
					const struct mac_addr *src,
					const struct mac_addr *dst)
{
	eth_addr_copy(eth->h_source, src);
	eth_addr_copy(eth->h_dest, dst);
}
