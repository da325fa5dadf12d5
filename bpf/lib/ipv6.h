// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* IPv6 header and address helpers. */
#pragma once

#include "common.h"

/* Bound on the extension headers walked before the upper-layer header. */
#define IPV6_MAX_EXTHDRS 4

#ifndef NEXTHDR_HOP
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60
#endif

/* ipv6_hdr returns the IPv6 header after the Ethernet header, or NULL if it is truncated or invalid. */
static __always_inline struct ipv6hdr *ipv6_hdr(const struct __sk_buff *ctx)
{
	void *data = ctx_data(ctx), *data_end = ctx_data_end(ctx);
	struct ipv6hdr *ip6 = data + ETH_HLEN;

	if ((void *)(ip6 + 1) > data_end)
		return NULL;
	if (ip6->version != 6)
		return NULL;
	return ip6;
}

static __always_inline void ipv6_addr_load(union v6addr *dst, const struct in6_addr *src)
{
	__builtin_memcpy(dst->addr, src, sizeof(dst->addr));
}

static __always_inline void ipv6_addr_store(struct in6_addr *dst, const union v6addr *src)
{
	__builtin_memcpy(dst, src->addr, sizeof(src->addr));
}

static __always_inline int ipv6_addr_equal(const union v6addr *a, const union v6addr *b)
{
	/* One branch for the caller: fewer verifier states than two compares. */
	return ((a->d64[0] ^ b->d64[0]) | (a->d64[1] ^ b->d64[1])) == 0;
}

static __always_inline int ipv6_addr_is_unspecified(const union v6addr *a)
{
	return (a->d64[0] | a->d64[1]) == 0;
}

/* fe80::/10 */
static __always_inline int ipv6_addr_is_linklocal(const union v6addr *a)
{
	return a->addr[0] == 0xfe && (a->addr[1] & 0xc0) == 0x80;
}

/* ff00::/8 */
static __always_inline int ipv6_addr_is_multicast(const union v6addr *a)
{
	return a->addr[0] == 0xff;
}

/*
 * ipv6_upper_layer walks at most IPV6_MAX_EXTHDRS extension headers of the
 * frame in ctx, starting at offset off (from the start of the frame) with a
 * header of type nexthdr: ETH_HLEN + sizeof(struct ipv6hdr) and the IPv6
 * header's Next Header for the packet itself.
 * It returns IPV6_L4(proto, offset): the upper-layer protocol and the offset
 * (from the start of the frame) of its header. A fragment header stops the
 * walk with proto NEXTHDR_FRAGMENT: later fragments carry no upper-layer
 * header to look at. Returns IPV6_L4_TRUNCATED when a header is truncated and
 * IPV6_L4_LIMIT when the bound is hit.
 *
 * A global (not inlined) function: the verifier checks it once on its own,
 * so the paths through the walk do not multiply the states of the caller.
 */
#define IPV6_L4(proto, off) (((proto) << 16) | (off))
#define IPV6_L4_PROTO(l4) ((__u8)((l4) >> 16))
#define IPV6_L4_OFF(l4) ((l4) & 0xffff)
#define IPV6_L4_TRUNCATED -1
#define IPV6_L4_LIMIT -2

__attribute__((noinline))
int ipv6_upper_layer(struct __sk_buff *ctx, __u32 nexthdr, __u32 start)
{
	int off = start & 0xffff;
	__u32 nh = nexthdr & 0xff;

#pragma unroll
	for (int i = 0; i < IPV6_MAX_EXTHDRS; i++) {
		__u8 ext[2];

		switch (nh) {
		case NEXTHDR_HOP:
		case NEXTHDR_ROUTING:
		case NEXTHDR_DEST:
		case NEXTHDR_AUTH:
			if (bpf_skb_load_bytes(ctx, off, ext, sizeof(ext)) < 0)
				return IPV6_L4_TRUNCATED;
			if (nh == NEXTHDR_AUTH)
				off += (ext[1] + 2) * 4;
			else
				off += (ext[1] + 1) * 8;
			nh = ext[0];
			break;
		default:
			goto done;
		}
	}

	switch (nh) {
	case NEXTHDR_HOP:
	case NEXTHDR_ROUTING:
	case NEXTHDR_DEST:
	case NEXTHDR_AUTH:
		return IPV6_L4_LIMIT;
	}
done:
	/* The offset must fit IPV6_L4; no packet is that long. */
	if (off > 0xffff)
		return IPV6_L4_TRUNCATED;
	return IPV6_L4(nh, off);
}
