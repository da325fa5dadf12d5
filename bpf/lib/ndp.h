// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* IPv6 neighbour discovery (RFC 4861) and MLD message types. */
#pragma once

#include "common.h"
#include "csum.h"
#include "eth.h"
#include "ipv6.h"

#define ICMP6_MLD_QUERY 130
#define ICMP6_MLD_REPORT 131
#define ICMP6_MLD_DONE 132
#define ICMP6_ROUTER_SOLICIT 133
#define ICMP6_ROUTER_ADVERT 134
#define ICMP6_NEIGH_SOLICIT 135
#define ICMP6_NEIGH_ADVERT 136
#define ICMP6_REDIRECT 137
#define ICMP6_MLD2_REPORT 143

#define ND_OPT_TARGET_LL_ADDR 2

/* NA flags, in the first byte after the ICMPv6 checksum. */
#define ND_NA_FLAG_ROUTER 0x80
#define ND_NA_FLAG_SOLICITED 0x40
#define ND_NA_FLAG_OVERRIDE 0x20

/* nd_neigh_msg is an NS or NA: ICMPv6 header and target address. */
struct nd_neigh_msg {
	__u8 type;
	__u8 code;
	__sum16 cksum;
	__u8 flags;
	__u8 reserved[3];
	struct in6_addr target;
};

/* nd_na is the advertisement we send: message and target link-layer option. */
struct nd_na {
	struct nd_neigh_msg msg;
	__u8 opt_type;
	__u8 opt_len; /* in units of 8 bytes */
	__u8 opt_mac[ETH_ALEN];
};

#define ND_NA_FRAME_LEN (ETH_HLEN + sizeof(struct ipv6hdr) + sizeof(struct nd_na))

/*
 * nd_make_advert rewrites the frame, an NS from a container whose source
 * address is src, into the neighbour advertisement that the owner of target,
 * at mac, would send back: the frame is resized to exactly one NA with a
 * target link-layer address option, addressed to (eth_dst, src), with
 * flags Router, Solicited and Override and a valid checksum.
 * Returns 0, or a negative error when the frame cannot be resized. Packet
 * pointers are invalid after the call.
 */
static __always_inline int nd_make_advert(struct __sk_buff *ctx,
					  const union v6addr *src,
					  const union v6addr *target,
					  const struct mac_addr *mac,
					  const struct mac_addr *eth_dst)
{
	struct ethhdr *eth;
	struct ipv6hdr *ip6;
	struct nd_na *na;
	void *data, *data_end;
	__u32 sum;

	if (bpf_skb_change_tail(ctx, ND_NA_FRAME_LEN, 0) < 0)
		return -1;

	data = ctx_data(ctx);
	data_end = ctx_data_end(ctx);
	if (data + ND_NA_FRAME_LEN > data_end)
		return -1;
	eth = data;
	ip6 = (void *)(eth + 1);
	na = (void *)(ip6 + 1);

	eth_rewrite(eth, mac, eth_dst);

	ip6->version = 6;
	ip6->priority = 0;
	ip6->flow_lbl[0] = 0;
	ip6->flow_lbl[1] = 0;
	ip6->flow_lbl[2] = 0;
	ip6->payload_len = bpf_htons(sizeof(struct nd_na));
	ip6->nexthdr = IPPROTO_ICMPV6;
	ip6->hop_limit = 255;
	ipv6_addr_store(&ip6->saddr, target);
	ipv6_addr_store(&ip6->daddr, src);

	na->msg.type = ICMP6_NEIGH_ADVERT;
	na->msg.code = 0;
	na->msg.cksum = 0;
	na->msg.flags = ND_NA_FLAG_ROUTER | ND_NA_FLAG_SOLICITED | ND_NA_FLAG_OVERRIDE;
	na->msg.reserved[0] = 0;
	na->msg.reserved[1] = 0;
	na->msg.reserved[2] = 0;
	ipv6_addr_store(&na->msg.target, target);
	na->opt_type = ND_OPT_TARGET_LL_ADDR;
	na->opt_len = 1;
	eth_addr_copy(na->opt_mac, mac);

	sum = csum_ipv6_pseudo(ip6, sizeof(struct nd_na), IPPROTO_ICMPV6);
	sum = csum_add_words(sum, (const __u16 *)na, sizeof(struct nd_na) / 2);
	na->msg.cksum = csum_fold(sum);
	return 0;
}
