// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Internet checksum (RFC 1071) helpers.
 *
 * Words are summed as they lie in memory and the folded result is stored the
 * same way, which is byte-order independent: no byte swapping is needed.
 * Constants added to a sum must therefore be in network byte order.
 */
#pragma once

#include "common.h"

/* csum_add_words adds n (compile-time constant) 16-bit words at p to sum. */
static __always_inline __u32 csum_add_words(__u32 sum, const __u16 *p, const int n)
{
#pragma unroll
	for (int i = 0; i < n; i++)
		sum += p[i];
	return sum;
}

static __always_inline __sum16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__sum16)~sum;
}

/*
 * csum_ipv6_pseudo returns the partial sum of the IPv6 pseudo-header
 * (RFC 8200 section 8.1) for an upper-layer message of len bytes.
 */
static __always_inline __u32 csum_ipv6_pseudo(const struct ipv6hdr *ip6, __u16 len, __u8 proto)
{
	__u32 sum = 0;

	sum = csum_add_words(sum, (const __u16 *)&ip6->saddr, 8);
	sum = csum_add_words(sum, (const __u16 *)&ip6->daddr, 8);
	sum += bpf_htons(len);
	sum += bpf_htons(proto);
	return sum;
}
