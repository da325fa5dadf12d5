// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* ARP (RFC 826) for Ethernet and IPv4. */
#pragma once

#include "common.h"
#include "eth.h"

#define ARPHRD_ETHER 1
#define ARPOP_REQUEST 1
#define ARPOP_REPLY 2

/* arp_eth_ipv4 is an ARP packet for Ethernet hardware and IPv4 protocol. */
struct arp_eth_ipv4 {
	__be16 ar_hrd;
	__be16 ar_pro;
	__u8 ar_hln;
	__u8 ar_pln;
	__be16 ar_op;
	__u8 ar_sha[ETH_ALEN];
	__be32 ar_sip;
	__u8 ar_tha[ETH_ALEN];
	__be32 ar_tip;
} __attribute__((packed));

static __always_inline int arp_is_eth_ipv4(const struct arp_eth_ipv4 *arp)
{
	return arp->ar_hrd == bpf_htons(ARPHRD_ETHER) &&
	       arp->ar_pro == bpf_htons(ETH_P_IP) &&
	       arp->ar_hln == ETH_ALEN && arp->ar_pln == 4;
}

/*
 * arp_make_reply turns the request in place into the reply that the owner
 * of the asked address, at mac, would send: the asker becomes the target.
 * The Ethernet header goes from mac back to the asker.
 */
static __always_inline void arp_make_reply(struct ethhdr *eth, struct arp_eth_ipv4 *arp,
					   const struct mac_addr *mac)
{
	__be32 sip = arp->ar_sip;
	__be32 tip = arp->ar_tip;

	arp->ar_op = bpf_htons(ARPOP_REPLY);
	__builtin_memcpy(arp->ar_tha, arp->ar_sha, ETH_ALEN);
	arp->ar_tip = sip;
	eth_addr_copy(arp->ar_sha, mac);
	arp->ar_sip = tip;

	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	eth_addr_copy(eth->h_source, mac);
}
