// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * A packet's flow: its 5-tuple as conntrack keys it, the port its policy is
 * checked with, and what the policy check found. Parsed once per packet by
 * flow_parse, after the caller has checked the IP header.
 *
 *   TCP, UDP, UDP-Lite, SCTP  ports from the header.
 *   ICMP echo request         tracked as (id, 0); echo replies look up
 *                             (0, id), i.e. the request's tuple reversed,
 *                             and never create an entry themselves.
 *   ICMP errors               destination unreachable (packet too big in
 *                             IPv4), time exceeded; ICMPv6 destination
 *                             unreachable, packet too big, time exceeded:
 *                             related to a flow when the embedded packet's
 *                             tuple is tracked; else checked statelessly.
 *   other ICMP messages       checked statelessly, never tracked.
 *   other protocols           ports 0.
 *
 * ICMP and ICMPv6 messages have policy port type | POLICY_PORT_ICMP.
 */
#pragma once

#include "common.h"
#include "conntrack.h"
#include "fragments.h"
#include "ipv6.h"
#include "metrics.h"
#include "policy.h"

#define FLOW_F_NOCT 0x01       /* stateless: no conntrack lookup nor entry */
#define FLOW_F_NOCREATE 0x02   /* conntrack lookups, but never a new entry */
#define FLOW_F_ICMP_ERROR 0x04 /* an ICMP error message */
#define FLOW_F_RELATED 0x08    /* ICMP error whose embedded tuple is in inner */
#define FLOW_F_FIRST_FRAG 0x10 /* first fragment: record ports once forwarded */
#define FLOW_F_LATER_FRAG 0x20 /* later fragment: ports from the record */
#define FLOW_F_IPV6 0x40

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
#define ICMP6_DEST_UNREACH 1
#define ICMP6_PKT_TOOBIG 2
#define ICMP6_TIME_EXCEED 3
#define ICMP6_ECHO_REQUEST 128
#define ICMP6_ECHO_REPLY 129

struct flow {
	struct ct_key tuple;    /* the packet's own tuple */
	struct ct_key inner;    /* FLOW_F_RELATED: the embedded packet's tuple */
	__u32 src_identity;     /* identities of the tuple's ends, set by the policy check */
	__u32 dst_identity;
	__be32 frag_id;         /* FLOW_F_FIRST_FRAG: fragment key */
	__u16 policy_port;      /* host order; ICMP: type | POLICY_PORT_ICMP */
	__u8 flags;             /* FLOW_F_* */
	__u8 frag_proto;
	__u8 dir;               /* POLICY_DIR_* of the deciding check */
	__u8 match;             /* enum policy_match; 0 when no check ran */
	__u8 ct;                /* enum ct_state */
	__u8 pad;
};

static __always_inline void ipv4_map(__u8 *dst, __be32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(&dst[12], &addr, sizeof(addr));
}

/* addr_equal compares two 16-byte addresses at any alignment. */
static __always_inline int addr_equal(const __u8 *a, const __u8 *b)
{
	union v6addr x, y;

	__builtin_memcpy(x.addr, a, sizeof(x.addr));
	__builtin_memcpy(y.addr, b, sizeof(y.addr));
	return ipv6_addr_equal(&x, &y);
}

struct icmp_head {
	__u8 type;
	__u8 code;
	__sum16 cksum;
	__be16 id;
	__be16 seq;
};

/*
 * L4_DIRECT_MAX bounds the offset at which load_ports reads the packet
 * directly: past any IPv4 header, and past an IPv6 header with a few
 * extension headers. Beyond it the helper copies.
 */
#define L4_DIRECT_MAX 256

/*
 * load_ports copies the two ports at off of ctx: straight from the packet
 * when they are in its linear part, as they nearly always are, else through
 * bpf_skb_load_bytes. Returns 0, or -1 when the header is truncated.
 */
static __always_inline int load_ports(struct __sk_buff *ctx, __u32 off, __be16 ports[2])
{
	void *data = ctx_data(ctx), *data_end = ctx_data_end(ctx);
	__be16 *p;

	if (off <= L4_DIRECT_MAX) {
		p = data + off;
		if ((void *)(p + 2) <= data_end) {
			ports[0] = p[0];
			ports[1] = p[1];
			return 0;
		}
	}
	return bpf_skb_load_bytes(ctx, off, ports, 2 * sizeof(__be16)) < 0 ? -1 : 0;
}

/*
 * l4_parse fills t's ports, *port (policy port) and *flags from the
 * upper-layer header of protocol proto at off. Returns 0, or -1 when the
 * header is truncated.
 */
static __always_inline int l4_parse(struct __sk_buff *ctx, __u32 off, __u8 proto, int v6,
				    struct ct_key *t, __u16 *port, __u8 *flags)
{
	struct icmp_head icmp;
	__be16 ports[2];
	int echo_req, echo_reply, error;

	t->sport = 0;
	t->dport = 0;
	*port = 0;
	switch (proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_UDPLITE:
	case IPPROTO_SCTP:
		if (load_ports(ctx, off, ports) < 0)
			return -1;
		t->sport = ports[0];
		t->dport = ports[1];
		*port = bpf_ntohs(ports[1]);
		return 0;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		if ((proto == IPPROTO_ICMPV6) != v6)
			return 0;
		if (bpf_skb_load_bytes(ctx, off, &icmp, sizeof(icmp)) < 0)
			return -1;
		*port = icmp.type | POLICY_PORT_ICMP;
		if (v6) {
			echo_req = icmp.type == ICMP6_ECHO_REQUEST;
			echo_reply = icmp.type == ICMP6_ECHO_REPLY;
			error = icmp.type == ICMP6_DEST_UNREACH || icmp.type == ICMP6_PKT_TOOBIG ||
				icmp.type == ICMP6_TIME_EXCEED;
		} else {
			echo_req = icmp.type == ICMP_ECHO;
			echo_reply = icmp.type == ICMP_ECHOREPLY;
			error = icmp.type == ICMP_DEST_UNREACH || icmp.type == ICMP_TIME_EXCEEDED;
		}
		if (echo_req) {
			t->sport = icmp.id;
		} else if (echo_reply) {
			t->dport = icmp.id;
			*flags |= FLOW_F_NOCREATE;
		} else {
			*flags |= FLOW_F_NOCT;
			if (error)
				*flags |= FLOW_F_ICMP_ERROR;
		}
		return 0;
	}
	return 0;
}

/*
 * inner_l4 completes the tuple of a packet embedded in an ICMP error and
 * marks f related when it is a trackable one sent by the error's addressee.
 */
static __always_inline void inner_l4(struct __sk_buff *ctx, struct flow *f, __u32 off, __u8 proto, int v6)
{
	__u8 flags = 0;
	__u16 port;

	if (l4_parse(ctx, off, proto, v6, &f->inner, &port, &flags) < 0)
		return;
	if (flags & FLOW_F_NOCT)
		return;
	/* An error goes back to the sender of the packet it is about. */
	if (!addr_equal(f->inner.saddr, f->tuple.daddr))
		return;
	f->flags |= FLOW_F_RELATED;
}

/* icmp4_inner parses the IPv4 packet embedded in the ICMP error at off. */
static __always_inline void icmp4_inner(struct __sk_buff *ctx, struct flow *f, __u32 off)
{
	struct iphdr ip;

	off += sizeof(struct icmp_head);
	if (bpf_skb_load_bytes(ctx, off, &ip, sizeof(ip)) < 0)
		return;
	if (ip.version != 4 || ip.ihl < 5 || (ip.frag_off & bpf_htons(IP_OFFSET)))
		return;
	ipv4_map(f->inner.saddr, ip.saddr);
	ipv4_map(f->inner.daddr, ip.daddr);
	f->inner.proto = ip.protocol;
	inner_l4(ctx, f, off + ip.ihl * 4, ip.protocol, 0);
}

/* icmp6_inner parses the IPv6 packet embedded in the ICMPv6 error at off. */
static __always_inline void icmp6_inner(struct __sk_buff *ctx, struct flow *f, __u32 off)
{
	struct ipv6hdr ip6;
	int l4;

	off += sizeof(struct icmp_head);
	if (bpf_skb_load_bytes(ctx, off, &ip6, sizeof(ip6)) < 0)
		return;
	if (ip6.version != 6)
		return;
	l4 = ipv6_upper_layer(ctx, ip6.nexthdr, off + sizeof(ip6));
	if (l4 < 0 || IPV6_L4_PROTO(l4) == NEXTHDR_FRAGMENT)
		return;
	__builtin_memcpy(f->inner.saddr, &ip6.saddr, sizeof(f->inner.saddr));
	__builtin_memcpy(f->inner.daddr, &ip6.daddr, sizeof(f->inner.daddr));
	f->inner.proto = IPV6_L4_PROTO(l4);
	inner_l4(ctx, f, IPV6_L4_OFF(l4), IPV6_L4_PROTO(l4), 1);
}

/*
 * frag_resume gives a later fragment the tuple of its first fragment.
 * Returns 0, or METRIC_DROP_FRAG_ORPHAN when no first fragment was forwarded.
 */
static __always_inline int frag_resume(struct flow *f, __be32 id, __u8 proto)
{
	struct frag_key key = {};
	struct frag_value *v;

	__builtin_memcpy(key.saddr, f->tuple.saddr, sizeof(key.saddr));
	__builtin_memcpy(key.daddr, f->tuple.daddr, sizeof(key.daddr));
	key.id = id;
	key.proto = proto;
	v = bpf_map_lookup_elem(&fragments, &key);
	if (!v)
		return METRIC_DROP_FRAG_ORPHAN;
	f->tuple.sport = v->sport;
	f->tuple.dport = v->dport;
	f->tuple.proto = v->proto;
	f->policy_port = v->policy_port;
	f->flags |= v->flags | FLOW_F_LATER_FRAG;
	return 0;
}

/* frag_record records the tuple of a forwarded first fragment for the later ones. */
static __always_inline void frag_record(const struct flow *f)
{
	struct frag_key key = {};
	struct frag_value v = {};

	if (!(f->flags & FLOW_F_FIRST_FRAG))
		return;
	__builtin_memcpy(key.saddr, f->tuple.saddr, sizeof(key.saddr));
	__builtin_memcpy(key.daddr, f->tuple.daddr, sizeof(key.daddr));
	key.id = f->frag_id;
	key.proto = f->frag_proto;
	v.sport = f->tuple.sport;
	v.dport = f->tuple.dport;
	v.policy_port = f->policy_port;
	v.proto = f->tuple.proto;
	/* ICMP errors are never fragmented in practice: later ones are checked statelessly. */
	v.flags = f->flags & (FLOW_F_NOCT | FLOW_F_NOCREATE);
	bpf_map_update_elem(&fragments, &key, &v, BPF_ANY);
}

struct ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset in 8-byte units << 3 | M */
	__be32 id;
};

/*
 * flow_ipv4 parses the IPv4 header. Returns the L4 offset, or a negative
 * metric reason. The header is read straight from the packet (so is
 * flow_ipv6's): the caller of the tail call found it in the linear part
 * (ipv4_hdr, ipv6_hdr), and the programs never change its length.
 */
static __always_inline int flow_ipv4(struct __sk_buff *ctx, struct flow *f, __u8 *proto)
{
	void *data = ctx_data(ctx), *data_end = ctx_data_end(ctx);
	struct iphdr *ip = data + ETH_HLEN;
	__u16 frag;
	int err;

	if ((void *)(ip + 1) > data_end || ip->ihl < 5)
		return -METRIC_DROP_MALFORMED;
	ipv4_map(f->tuple.saddr, ip->saddr);
	ipv4_map(f->tuple.daddr, ip->daddr);
	f->tuple.proto = ip->protocol;
	*proto = ip->protocol;

	frag = bpf_ntohs(ip->frag_off);
	if (frag & IP_OFFSET) {
		err = frag_resume(f, ip->id, ip->protocol);
		return err ? -err : 0;
	}
	if (frag & IP_MF) {
		f->flags |= FLOW_F_FIRST_FRAG;
		f->frag_id = ip->id;
		f->frag_proto = ip->protocol;
	}
	return ETH_HLEN + ip->ihl * 4;
}

/* flow_ipv6 parses the IPv6 headers. Returns the L4 offset, or a negative metric reason. */
static __always_inline int flow_ipv6(struct __sk_buff *ctx, struct flow *f, int l4, __u8 *proto)
{
	void *data = ctx_data(ctx), *data_end = ctx_data_end(ctx);
	struct ipv6hdr *ip6 = data + ETH_HLEN;
	struct ipv6_frag_hdr fh;
	__u16 frag;
	__u32 off;
	int err;

	if (l4 < 0 || (void *)(ip6 + 1) > data_end)
		return -METRIC_DROP_MALFORMED;
	__builtin_memcpy(f->tuple.saddr, &ip6->saddr, sizeof(f->tuple.saddr));
	__builtin_memcpy(f->tuple.daddr, &ip6->daddr, sizeof(f->tuple.daddr));
	f->flags |= FLOW_F_IPV6;
	*proto = IPV6_L4_PROTO(l4);
	off = IPV6_L4_OFF(l4);

	if (*proto == NEXTHDR_FRAGMENT) {
		if (bpf_skb_load_bytes(ctx, off, &fh, sizeof(fh)) < 0)
			return -METRIC_DROP_MALFORMED;
		frag = bpf_ntohs(fh.frag_off);
		if (frag & 0xfff8) {
			err = frag_resume(f, fh.id, fh.nexthdr);
			return err ? -err : 0;
		}
		if (frag & 1) {
			f->flags |= FLOW_F_FIRST_FRAG;
			f->frag_id = fh.id;
			f->frag_proto = fh.nexthdr;
		}
		l4 = ipv6_upper_layer(ctx, fh.nexthdr, off + sizeof(fh));
		if (l4 == IPV6_L4_LIMIT)
			return -METRIC_DROP_IP6_EXTHDR_LIMIT;
		if (l4 < 0 || IPV6_L4_PROTO(l4) == NEXTHDR_FRAGMENT)
			return -METRIC_DROP_MALFORMED;
		*proto = IPV6_L4_PROTO(l4);
		off = IPV6_L4_OFF(l4);
	}
	f->tuple.proto = *proto;
	return off;
}

/*
 * flow_parse parses the IP packet in ctx (header checked by the caller)
 * into f, zeroed by the caller: IPv4, or IPv6 when v6, with l4 the answer of
 * ipv6_upper_layer for it. Returns 0, or the metric reason to drop it.
 *
 * A global (not inlined) function: the verifier checks it once.
 */
__attribute__((noinline))
int flow_parse(struct __sk_buff *ctx, struct flow *f, __u32 v6, int l4)
{
	__u8 proto = 0;
	int off;

	if (!f)
		return METRIC_DROP_MALFORMED;
	off = v6 ? flow_ipv6(ctx, f, l4, &proto) : flow_ipv4(ctx, f, &proto);
	if (off <= 0)
		return -off; /* 0: a later fragment, complete from its record */

	if (l4_parse(ctx, off, proto, v6, &f->tuple, &f->policy_port, &f->flags) < 0)
		return METRIC_DROP_MALFORMED;
	if (f->flags & FLOW_F_ICMP_ERROR) {
		if (v6)
			icmp6_inner(ctx, f, off);
		else
			icmp4_inner(ctx, f, off);
	}
	return 0;
}
