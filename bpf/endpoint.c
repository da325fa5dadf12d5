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
 * addressed to the host veth; it checks the source (anti-spoofing) and the
 * destination's network (isolation). to_container checks that what the host
 * stack sends is for the endpoint. ARP and neighbour discovery are never
 * subject to policy.
 *
 * Then both tail-call a program shared by every endpoint (policy_progs):
 * policy_from_container enforces policy (enforce.h: conntrack, then the
 * sender's egress and, for a local destination, the receiver's ingress) and
 * delivers packets for a local endpoint straight into that endpoint's
 * namespace (bpf_redirect_peer) or passes them to the host stack;
 * policy_to_container enforces the endpoint's ingress. The shared programs
 * use no per-endpoint constant: they are loaded (and verified) once, when
 * the datapath is opened, so attaching an endpoint loads only the small
 * per-endpoint programs. They parse the packet again rather than take
 * anything from the caller, so any version of one works with any of the
 * other.
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
#include "flow.h"
#include "enforce.h"
#include "verdict.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* Tail-call targets, filled by the Go loader at Open (policy_progs). */
#define POLICY_PROG_FROM_CONTAINER 0
#define POLICY_PROG_TO_CONTAINER 1

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 2);
} policy_progs SEC(".maps");

/*
 * enforce hands the packet to the shared policy program idx; it returns
 * only when that program is missing, and then drops: no policy, no traffic.
 */
static __always_inline int enforce(struct __sk_buff *ctx, __u32 idx, __u32 hook)
{
	bpf_tail_call(ctx, &policy_progs, idx);
	return drop_at(ctx, METRIC_DROP_POLICY_UNAVAILABLE, hook);
}

/* isolated reports whether info is an endpoint of another network. */
static __always_inline int isolated(const struct endpoint_info *info)
{
	return info && info->network != CONFIG(network_index);
}

/*
 * redirect_to rewrites the frame's MACs for the local endpoint info and
 * redirects it into info's namespace. Returns the verdict, or -1 if the
 * frame is too short.
 */
static __always_inline int redirect_to(struct __sk_buff *ctx, const struct endpoint_info *info)
{
	void *data = ctx_data(ctx), *data_end = ctx_data_end(ctx);
	struct ethhdr *eth = data;
	struct mac_addr src, dst;

	if ((void *)(eth + 1) > data_end)
		return -1;
	__builtin_memcpy(src.addr, info->host_mac, ETH_ALEN);
	__builtin_memcpy(dst.addr, info->mac, ETH_ALEN);
	eth_rewrite(eth, &src, &dst);
	return bpf_redirect_peer(info->ifindex, 0);
}

/*
 * deliver sends a neighbour advertisement to the local endpoint info, or to
 * the host stack if info is NULL. The caller checked isolation.
 */
static __always_inline int deliver(struct __sk_buff *ctx, const struct endpoint_info *info)
{
	int verdict;

	if (!info)
		return forward(ctx, METRIC_FORWARD_HOST, TC_ACT_OK, HOOK_FROM_CONTAINER);
	verdict = redirect_to(ctx, info);
	if (verdict < 0)
		return drop(ctx, METRIC_DROP_MALFORMED);
	return forward(ctx, METRIC_FORWARD_PEER, verdict, HOOK_FROM_CONTAINER);
}

/* deliver_flow is deliver for a packet whose flow f passed the policy. */
static __always_inline int deliver_flow(struct __sk_buff *ctx, const struct endpoint_info *info,
					const struct flow *f)
{
	int verdict;

	if (!info)
		return forward_flow(ctx, f, METRIC_FORWARD_HOST, TC_ACT_OK, HOOK_FROM_CONTAINER);
	verdict = redirect_to(ctx, info);
	if (verdict < 0)
		return drop_flow(ctx, f, METRIC_DROP_MALFORMED, HOOK_FROM_CONTAINER);
	return forward_flow(ctx, f, METRIC_FORWARD_PEER, verdict, HOOK_FROM_CONTAINER);
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

	forward(ctx, METRIC_ARP_REPLY, 0, HOOK_FROM_CONTAINER);
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

	if (isolated(endpoints_lookup4(daddr)))
		return drop(ctx, METRIC_DROP_ISOLATION);
	return enforce(ctx, POLICY_PROG_FROM_CONTAINER, HOOK_FROM_CONTAINER);
}

/*
 * handle_ns answers a neighbour solicitation; the source was checked by the
 * caller.
 *
 * A global (not inlined) function: the verifier checks it on its own, with
 * its own stack frame.
 */
__attribute__((noinline))
int handle_ns(struct __sk_buff *ctx, const union v6addr *src, int l4_off)
{
	void *data = ctx_data(ctx), *data_end = ctx_data_end(ctx);
	struct nd_neigh_msg *ns = data + ETH_HLEN + sizeof(struct ipv6hdr);
	struct mac_addr host_mac = config_host_mac();
	struct mac_addr endpoint_mac = config_endpoint_mac();
	union v6addr own = config_endpoint_ipv6();
	union v6addr target;
	union v6addr saddr;

	if (!src)
		return drop(ctx, METRIC_DROP_MALFORMED);
	saddr = *src;

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

	forward(ctx, METRIC_ND_REPLY, 0, HOOK_FROM_CONTAINER);
	if (nd_make_advert(ctx, &saddr, &target, &host_mac, &endpoint_mac) < 0)
		return drop(ctx, METRIC_DROP_ND_REPLY_FAILED);
	return bpf_redirect(CONFIG(endpoint_ifindex), 0);
}

static __always_inline int handle_ipv6(struct __sk_buff *ctx)
{
	struct ipv6hdr *ip6 = ipv6_hdr(ctx);
	union v6addr own = config_endpoint_ipv6();
	union v6addr saddr, daddr;
	struct endpoint_info *dst;
	__u8 icmp6_type = 0;
	int l4, off;

	if (!ip6)
		return drop(ctx, METRIC_DROP_MALFORMED);
	if (!config_has_ipv6())
		return drop(ctx, METRIC_DROP_NO_IP6);
	ipv6_addr_load(&saddr, &ip6->saddr);
	ipv6_addr_load(&daddr, &ip6->daddr);

	l4 = ipv6_upper_layer(ctx, ip6->nexthdr, ETH_HLEN + sizeof(struct ipv6hdr));
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
		/* An advertisement: neighbour discovery is not subject to policy. */
		if (ipv6_addr_is_multicast(&daddr))
			return drop(ctx, METRIC_DROP_MULTICAST_IP6);
		dst = endpoints_lookup6(&daddr);
		if (isolated(dst))
			return drop(ctx, METRIC_DROP_ISOLATION);
		return deliver(ctx, dst);
	}

check_source:
	if (!ipv6_addr_equal(&saddr, &own))
		return drop(ctx, METRIC_DROP_SPOOF_IP6);
	if (ipv6_addr_is_multicast(&daddr))
		return drop(ctx, METRIC_DROP_MULTICAST_IP6);

	if (isolated(endpoints_lookup6(&daddr)))
		return drop(ctx, METRIC_DROP_ISOLATION);
	return enforce(ctx, POLICY_PROG_FROM_CONTAINER, HOOK_FROM_CONTAINER);
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

static __always_inline int to_container_ipv4(struct __sk_buff *ctx)
{
	struct iphdr *ip4 = ipv4_hdr(ctx);

	if (!ip4)
		return drop_at(ctx, METRIC_DROP_MALFORMED, HOOK_TO_CONTAINER);
	if (!config_has_ipv4())
		return drop_at(ctx, METRIC_DROP_NO_IP4, HOOK_TO_CONTAINER);
	if (ip4->daddr != CONFIG(endpoint_ipv4)) {
		if (ipv4_is_multicast_or_broadcast(ip4->daddr))
			return drop_at(ctx, METRIC_DROP_MULTICAST_IP4, HOOK_TO_CONTAINER);
		return drop_at(ctx, METRIC_DROP_NOT_FOR_ENDPOINT, HOOK_TO_CONTAINER);
	}
	return enforce(ctx, POLICY_PROG_TO_CONTAINER, HOOK_TO_CONTAINER);
}

static __always_inline int to_container_ipv6(struct __sk_buff *ctx)
{
	struct ipv6hdr *ip6 = ipv6_hdr(ctx);
	union v6addr own = config_endpoint_ipv6();
	union v6addr daddr;
	__u8 icmp6_type = 0;

	if (!ip6)
		return drop_at(ctx, METRIC_DROP_MALFORMED, HOOK_TO_CONTAINER);
	if (!config_has_ipv6())
		return drop_at(ctx, METRIC_DROP_NO_IP6, HOOK_TO_CONTAINER);
	ipv6_addr_load(&daddr, &ip6->daddr);

	/*
	 * The host's neighbour discovery is not subject to policy. It has no
	 * extension headers (the host stack sends none): anything else goes to
	 * the policy program, which walks them.
	 */
	if (ip6->nexthdr == IPPROTO_ICMPV6) {
		if (bpf_skb_load_bytes(ctx, ETH_HLEN + sizeof(struct ipv6hdr), &icmp6_type,
				       sizeof(icmp6_type)) < 0)
			return drop_at(ctx, METRIC_DROP_MALFORMED, HOOK_TO_CONTAINER);
		if (icmp6_type == ICMP6_NEIGH_SOLICIT || icmp6_type == ICMP6_NEIGH_ADVERT)
			return forward(ctx, METRIC_TO_CONTAINER, TC_ACT_OK, HOOK_TO_CONTAINER);
	}
	if (!ipv6_addr_equal(&daddr, &own)) {
		if (ipv6_addr_is_multicast(&daddr))
			return drop_at(ctx, METRIC_DROP_MULTICAST_IP6, HOOK_TO_CONTAINER);
		return drop_at(ctx, METRIC_DROP_NOT_FOR_ENDPOINT, HOOK_TO_CONTAINER);
	}
	return enforce(ctx, POLICY_PROG_TO_CONTAINER, HOOK_TO_CONTAINER);
}

SEC("tc")
int to_container(struct __sk_buff *ctx)
{
	void *data = ctx_data(ctx), *data_end = ctx_data_end(ctx);
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return drop_at(ctx, METRIC_DROP_MALFORMED, HOOK_TO_CONTAINER);

	switch (eth->h_proto) {
	case bpf_htons(ETH_P_IP):
		return to_container_ipv4(ctx);
	case bpf_htons(ETH_P_IPV6):
		return to_container_ipv6(ctx);
	default:
		/* ARP and other link-layer traffic of the host. */
		return forward(ctx, METRIC_TO_CONTAINER, TC_ACT_OK, HOOK_TO_CONTAINER);
	}
}

/*
 * Shared programs: tail-called by every endpoint's programs once the packet
 * passed their checks. No CONFIG() here: they are loaded once, without any
 * endpoint's constants.
 */

/*
 * parse_flow parses the IP packet of ctx (its header was checked by the
 * caller of the tail call) into f. Returns 0 or the metric reason to drop it.
 */
static __always_inline int parse_flow(struct __sk_buff *ctx, struct flow *f)
{
	void *data = ctx_data(ctx), *data_end = ctx_data_end(ctx);
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6;

	if ((void *)(eth + 1) > data_end)
		return METRIC_DROP_MALFORMED;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return flow_parse(ctx, f, 0, 0);
	ip6 = ipv6_hdr(ctx);
	if (eth->h_proto != bpf_htons(ETH_P_IPV6) || !ip6)
		return METRIC_DROP_MALFORMED;
	return flow_parse(ctx, f, 1,
			  ipv6_upper_layer(ctx, ip6->nexthdr, ETH_HLEN + sizeof(struct ipv6hdr)));
}

SEC("tc")
int policy_from_container(struct __sk_buff *ctx)
{
	struct endpoint_info *dst = NULL;
	struct flow f = {};
	int reason;

	reason = parse_flow(ctx, &f);
	if (!reason) {
		dst = bpf_map_lookup_elem(&endpoints, f.tuple.daddr);
		reason = ct_policy(ctx, &f, CT_CHECK_EGRESS | (dst ? CT_CHECK_INGRESS : 0),
				   HOOK_FROM_CONTAINER);
	}
	if (reason)
		return drop_flow(ctx, &f, reason, HOOK_FROM_CONTAINER);
	return deliver_flow(ctx, dst, &f);
}

SEC("tc")
int policy_to_container(struct __sk_buff *ctx)
{
	struct flow f = {};
	int reason;

	reason = parse_flow(ctx, &f);
	if (!reason)
		reason = ct_policy(ctx, &f, CT_CHECK_INGRESS, HOOK_TO_CONTAINER);
	if (reason)
		return drop_flow(ctx, &f, reason, HOOK_TO_CONTAINER);
	return forward_flow(ctx, &f, METRIC_TO_CONTAINER, TC_ACT_OK, HOOK_TO_CONTAINER);
}
