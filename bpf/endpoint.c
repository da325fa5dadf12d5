// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Per-endpoint datapath, attached with tcx to the host side of the
 * endpoint's veth:
 *
 *   from_container  tcx ingress: every packet the container sends.
 *   to_container    tcx egress:  every packet the host stack sends to it.
 *
 * Routed L3, no bridge: from_container answers the container's ARP and
 * neighbour solicitations with the host-side MAC, so all of its traffic is
 * addressed to the host veth; it checks the source (anti-spoofing), then
 * delivers packets for a local endpoint of the same network straight into
 * that endpoint's namespace (bpf_redirect_peer) and passes the rest to the
 * host stack.
 */

#include "common.h"
#include "config.h"
#include "metrics.h"
#include "endpoints.h"
#include "eth.h"
#include "arp.h"
#include "ipv4.h"
#include "ipv6.h"
#include "ndp.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* deliver sends the packet to a local endpoint, or to the host stack if the destination is not one. */
static __always_inline int deliver(struct __sk_buff *ctx, const struct endpoint_info *info)
{
	void *data = ctx_data(ctx), *data_end = ctx_data_end(ctx);
	struct ethhdr *eth = data;
	struct mac_addr src, dst;

	if (!info)
		return forward(ctx, METRIC_FORWARD_HOST, TC_ACT_OK);
	if (info->network != CONFIG(network_index))
		return drop(ctx, METRIC_DROP_ISOLATION);

	if ((void *)(eth + 1) > data_end)
		return drop(ctx, METRIC_DROP_MALFORMED);
	__builtin_memcpy(src.addr, info->host_mac, ETH_ALEN);
	__builtin_memcpy(dst.addr, info->mac, ETH_ALEN);
	eth_rewrite(eth, &src, &dst);
	return forward(ctx, METRIC_FORWARD_PEER, bpf_redirect_peer(info->ifindex, 0));
}

static __always_inline int handle_arp(struct __sk_buff *ctx)
{
	void *data = ctx_data(ctx), *data_end = ctx_data_end(ctx);
	struct ethhdr *eth = data;
	struct arp_eth_ipv4 *arp = (void *)(eth + 1);
	struct mac_addr host_mac = config_host_mac();
	struct mac_addr endpoint_mac = config_endpoint_mac();
	__be32 own = CONFIG(endpoint_ipv4);

	if ((void *)(arp + 1) > data_end)
		return drop(ctx, METRIC_DROP_MALFORMED);
	if (!arp_is_eth_ipv4(arp))
		return drop(ctx, METRIC_DROP_MALFORMED);
	if (!config_has_ipv4())
		return drop(ctx, METRIC_DROP_NO_IP4);
	/*
	 * Only requests are answered. Replies, gratuitous ARP (sender ==
	 * target), probes (sender 0.0.0.0) and requests for the endpoint's own
	 * address are dropped: nothing else on this link should hear them.
	 */
	if (arp->ar_op != bpf_htons(ARPOP_REQUEST) ||
	    arp->ar_sip == arp->ar_tip || arp->ar_sip == 0 || arp->ar_tip == own)
		return drop(ctx, METRIC_DROP_ARP_IGNORED);
	if (arp->ar_sip != own)
		return drop(ctx, METRIC_DROP_SPOOF_IP4);
	if (!eth_addr_equal(arp->ar_sha, &endpoint_mac))
		return drop(ctx, METRIC_DROP_SPOOF_MAC);

	metrics_count(ctx, METRIC_ARP_REPLY);
	arp_make_reply(eth, arp, &host_mac);
	return bpf_redirect(CONFIG(endpoint_ifindex), 0);
}

static __always_inline int handle_ipv4(struct __sk_buff *ctx)
{
	struct iphdr *ip4 = ipv4_hdr(ctx);
	__be32 daddr;

	if (!ip4)
		return drop(ctx, METRIC_DROP_MALFORMED);
	if (!config_has_ipv4())
		return drop(ctx, METRIC_DROP_NO_IP4);
	if (ip4->saddr != CONFIG(endpoint_ipv4))
		return drop(ctx, METRIC_DROP_SPOOF_IP4);

	daddr = ip4->daddr;
	if (ipv4_is_multicast_or_broadcast(daddr))
		return drop(ctx, METRIC_DROP_MULTICAST_IP4);

	return deliver(ctx, endpoints_lookup4(daddr));
}

/* handle_ns answers a neighbour solicitation; the source was checked by the caller. */
static __always_inline int handle_ns(struct __sk_buff *ctx, const union v6addr *src, int l4_off)
{
	void *data = ctx_data(ctx), *data_end = ctx_data_end(ctx);
	struct nd_neigh_msg *ns = data + ETH_HLEN + sizeof(struct ipv6hdr);
	struct mac_addr host_mac = config_host_mac();
	struct mac_addr endpoint_mac = config_endpoint_mac();
	union v6addr own = config_endpoint_ipv6();
	union v6addr target;
	union v6addr saddr = *src;

	/* Only the plain form (no extension headers) is answered. */
	if (l4_off != ETH_HLEN + sizeof(struct ipv6hdr))
		return drop(ctx, METRIC_DROP_ND_IGNORED);
	if ((void *)(ns + 1) > data_end)
		return drop(ctx, METRIC_DROP_MALFORMED);
	if (ns->code != 0)
		return drop(ctx, METRIC_DROP_MALFORMED);
	ipv6_addr_load(&target, &ns->target);

	/*
	 * Duplicate address detection (source ::) must never be answered, or
	 * the container would give up its address. Nor is a solicitation for
	 * the endpoint's own address, nor for a multicast one.
	 */
	if (ipv6_addr_is_unspecified(&saddr) || ipv6_addr_equal(&target, &own) ||
	    ipv6_addr_is_multicast(&target))
		return drop(ctx, METRIC_DROP_ND_IGNORED);

	metrics_count(ctx, METRIC_ND_REPLY);
	if (nd_make_advert(ctx, &saddr, &target, &host_mac, &endpoint_mac) < 0)
		return drop(ctx, METRIC_DROP_ND_REPLY_FAILED);
	return bpf_redirect(CONFIG(endpoint_ifindex), 0);
}

static __always_inline int handle_ipv6(struct __sk_buff *ctx)
{
	struct ipv6hdr *ip6 = ipv6_hdr(ctx);
	union v6addr own = config_endpoint_ipv6();
	union v6addr saddr, daddr;
	__u8 icmp6_type = 0;
	int l4, off;

	if (!ip6)
		return drop(ctx, METRIC_DROP_MALFORMED);
	if (!config_has_ipv6())
		return drop(ctx, METRIC_DROP_NO_IP6);
	ipv6_addr_load(&saddr, &ip6->saddr);
	ipv6_addr_load(&daddr, &ip6->daddr);

	l4 = ipv6_upper_layer(ctx, ip6->nexthdr);
	if (l4 == IPV6_L4_LIMIT)
		return drop(ctx, METRIC_DROP_IP6_EXTHDR_LIMIT);
	if (l4 < 0)
		return drop(ctx, METRIC_DROP_MALFORMED);
	off = IPV6_L4_OFF(l4);

	if (IPV6_L4_PROTO(l4) != IPPROTO_ICMPV6)
		goto check_source;
	if (bpf_skb_load_bytes(ctx, off, &icmp6_type, sizeof(icmp6_type)) < 0)
		return drop(ctx, METRIC_DROP_MALFORMED);

	switch (icmp6_type) {
	case ICMP6_ROUTER_ADVERT:
		return drop(ctx, METRIC_DROP_ROUTER_ADVERT);
	case ICMP6_REDIRECT:
		return drop(ctx, METRIC_DROP_ICMP6_REDIRECT);
	case ICMP6_ROUTER_SOLICIT:
		return drop(ctx, METRIC_DROP_ROUTER_SOLICIT);
	case ICMP6_MLD_QUERY:
	case ICMP6_MLD_REPORT:
	case ICMP6_MLD_DONE:
	case ICMP6_MLD2_REPORT:
		return drop(ctx, METRIC_DROP_MLD);
	case ICMP6_NEIGH_SOLICIT:
	case ICMP6_NEIGH_ADVERT:
		/* Neighbour discovery may also use a link-local or :: source. */
		if (!ipv6_addr_equal(&saddr, &own) && !ipv6_addr_is_linklocal(&saddr) &&
		    !ipv6_addr_is_unspecified(&saddr))
			return drop(ctx, METRIC_DROP_SPOOF_IP6);
		if (icmp6_type == ICMP6_NEIGH_SOLICIT)
			return handle_ns(ctx, &saddr, off);
		goto route;
	}

check_source:
	if (!ipv6_addr_equal(&saddr, &own))
		return drop(ctx, METRIC_DROP_SPOOF_IP6);
route:
	if (ipv6_addr_is_multicast(&daddr))
		return drop(ctx, METRIC_DROP_MULTICAST_IP6);

	return deliver(ctx, endpoints_lookup6(&daddr));
}

SEC("tc")
int from_container(struct __sk_buff *ctx)
{
	void *data = ctx_data(ctx), *data_end = ctx_data_end(ctx);
	struct ethhdr *eth = data;
	struct mac_addr endpoint_mac = config_endpoint_mac();

	if ((void *)(eth + 1) > data_end)
		return drop(ctx, METRIC_DROP_MALFORMED);
	if (!eth_addr_equal(eth->h_source, &endpoint_mac))
		return drop(ctx, METRIC_DROP_SPOOF_MAC);

	switch (eth->h_proto) {
	case bpf_htons(ETH_P_ARP):
		return handle_arp(ctx);
	case bpf_htons(ETH_P_IP):
		return handle_ipv4(ctx);
	case bpf_htons(ETH_P_IPV6):
		return handle_ipv6(ctx);
	default:
		return drop(ctx, METRIC_DROP_UNSUPPORTED_L3);
	}
}

SEC("tc")
int to_container(struct __sk_buff *ctx)
{
	return forward(ctx, METRIC_TO_CONTAINER, TC_ACT_OK);
}
