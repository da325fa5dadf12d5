// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Monitor events, to a ring buffer read by datapath.EventReader.
 *
 *   EVENT_DROP     every dropped packet, whatever the monitor level
 *   EVENT_VERDICT  the policy decision on a new flow (monitor level >= 1)
 *   EVENT_TRACE    every forwarded packet (monitor level >= 2)
 *
 * Emitting never blocks: when the ring is full the event is lost and counted
 * in events_lost. struct event is mirrored to Go by bpf2go; its layout is
 * part of the reader's contract (append fields, never move them).
 */
#pragma once

#include "common.h"
#include "flow.h"
#include "metrics.h"
#include "runtime.h"

#define EVENTS_RING_SIZE (1 << 20)

enum event_type {
	EVENT_DROP = 1,
	EVENT_VERDICT = 2,
	EVENT_TRACE = 3,
};

/* Anchors enum event_type in BTF so bpf2go can mirror it to Go. */
const enum event_type *__event_type_btf __attribute__((unused));

#define EVENT_F_IPV6 0x1
#define EVENT_F_TO_CONTAINER 0x2 /* seen by to_container (else from_container) */
#define EVENT_F_POLICY 0x4       /* identities, dir and match are set */

struct event {
	__u64 time_ns;      /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u8 type;          /* enum event_type */
	__u8 reason;        /* enum metric_reason; verdict events: the drop reason if denied */
	__u8 proto;         /* IP protocol; 0 when not IP */
	__u8 flags;         /* EVENT_F_* */
	__u8 dir;           /* POLICY_DIR_* of the deciding check (EVENT_F_POLICY) */
	__u8 match;         /* enum policy_match (EVENT_F_POLICY) */
	__u8 ct;            /* enum ct_state; 0 unknown */
	__u8 pad1;
	__u32 ifindex;      /* interface the program runs on: the endpoint's host-side veth */
	__u32 len;          /* packet length */
	__u32 src_identity; /* EVENT_F_POLICY */
	__u32 dst_identity;
	__u16 sport;        /* host order; ICMP echo: id */
	__u16 dport;        /* host order; ICMP: type | 0x100 */
	__u32 pad2;
	__u8 saddr[16];     /* IPv4-mapped for IPv4 */
	__u8 daddr[16];
};

/* Anchors struct event in BTF so bpf2go can mirror it to Go. */
const struct event *__event_btf __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EVENTS_RING_SIZE);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} events_lost SEC(".maps");

/* event_packet fills addresses and protocol of ev from the frame in ctx. */
static __always_inline void event_packet(struct __sk_buff *ctx, struct event *ev)
{
	__be32 addrs[2];
	__be16 proto;

	if (bpf_skb_load_bytes(ctx, 12, &proto, sizeof(proto)) < 0)
		return;
	if (proto == bpf_htons(ETH_P_IP)) {
		if (bpf_skb_load_bytes(ctx, ETH_HLEN + offsetof(struct iphdr, saddr), addrs, sizeof(addrs)) < 0 ||
		    bpf_skb_load_bytes(ctx, ETH_HLEN + offsetof(struct iphdr, protocol), &ev->proto, 1) < 0)
			return;
		ipv4_map(ev->saddr, addrs[0]);
		ipv4_map(ev->daddr, addrs[1]);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		/* saddr and daddr are adjacent: one load for both. */
		if (bpf_skb_load_bytes(ctx, ETH_HLEN + offsetof(struct ipv6hdr, saddr), ev->saddr, 32) < 0 ||
		    bpf_skb_load_bytes(ctx, ETH_HLEN + offsetof(struct ipv6hdr, nexthdr), &ev->proto, 1) < 0)
			return;
		ev->flags |= EVENT_F_IPV6;
	}
}

/* account() flags besides EVENT_F_*: count nothing, only emit. */
#define ACCOUNT_NO_COUNT 0x100

/* event_wanted reports whether an event of type is to be emitted now. */
static __always_inline int event_wanted(__u32 type)
{
	return type != 0 && (type != EVENT_TRACE || monitor_level() >= MONITOR_TRACE);
}

/* event_start fills the fields every event has. */
static __always_inline void event_start(struct __sk_buff *ctx, struct event *ev, __u32 reason,
					__u32 type, __u32 flags)
{
	ev->time_ns = bpf_ktime_get_ns();
	ev->type = type;
	ev->reason = reason;
	ev->flags = flags;
	ev->ifindex = ctx->ifindex;
	ev->len = ctx->len;
}

/* event_send sends ev, or counts it lost when the ring is full: never blocks. */
static __always_inline void event_send(struct event *ev)
{
	__u32 zero = 0;
	__u64 *lost;

	if (bpf_ringbuf_output(&events, ev, sizeof(*ev), 0) < 0) {
		lost = bpf_map_lookup_elem(&events_lost, &zero);
		if (lost)
			(*lost)++;
	}
}

/*
 * emit_packet_event sends the event of type for the packet in ctx, made
 * from what the frame's headers say; emit_flow_event sends it made from
 * the parsed flow f. Events are built here, apart from account and
 * account_flow, so that a packet for which no event is wanted (nearly all
 * of them) never zeroes one; and apart from each other, so that the
 * per-endpoint programs, which only call account, carry (and have
 * verified at every attach) the packet variant alone.
 */
__attribute__((noinline))
int emit_packet_event(struct __sk_buff *ctx, __u32 reason, __u32 type, __u32 flags)
{
	struct event ev = {};

	event_start(ctx, &ev, reason, type, flags & 0xff);
	event_packet(ctx, &ev);
	event_send(&ev);
	return 0;
}

__attribute__((noinline))
int emit_flow_event(struct __sk_buff *ctx, const struct flow *f, __u32 reason, __u32 type,
		    __u32 flags)
{
	struct event ev = {};

	if (!f)
		return 0;
	event_start(ctx, &ev, reason, type, flags & 0xff);
	__builtin_memcpy(ev.saddr, f->tuple.saddr, sizeof(ev.saddr));
	__builtin_memcpy(ev.daddr, f->tuple.daddr, sizeof(ev.daddr));
	ev.proto = f->tuple.proto;
	ev.sport = bpf_ntohs(f->tuple.sport);
	ev.dport = f->policy_port;
	ev.ct = f->ct;
	if (f->flags & FLOW_F_IPV6)
		ev.flags |= EVENT_F_IPV6;
	if (f->match) {
		ev.flags |= EVENT_F_POLICY;
		ev.dir = f->dir;
		ev.match = f->match;
		ev.src_identity = f->src_identity;
		ev.dst_identity = f->dst_identity;
	}
	event_send(&ev);
	return 0;
}

/*
 * account counts the packet in ctx under reason (unless flags has
 * ACCOUNT_NO_COUNT) and emits the event of type it calls for: EVENT_DROP
 * always, EVENT_TRACE at MONITOR_TRACE, 0 for none; made from what the
 * frame's headers say. flags are EVENT_F_* for the event.
 *
 * Global (not inlined) functions, account and account_flow: each verdict
 * calls one, and the verifier checks it once. The per-endpoint programs,
 * loaded at every attach, only need account.
 */
__attribute__((noinline))
int account(struct __sk_buff *ctx, __u32 reason, __u32 type, __u32 flags)
{
	if (!(flags & ACCOUNT_NO_COUNT))
		metrics_count(ctx, reason);
	if (!event_wanted(type))
		return 0;
	return emit_packet_event(ctx, reason, type, flags);
}

/*
 * account_flow is account for a packet whose flow f is parsed: the event
 * carries the flow, and what the policy check found. EVENT_VERDICT events
 * are always emitted (the caller checks the level).
 */
__attribute__((noinline))
int account_flow(struct __sk_buff *ctx, const struct flow *f, __u32 reason, __u32 type,
		 __u32 flags)
{
	if (!(flags & ACCOUNT_NO_COUNT))
		metrics_count(ctx, reason);
	if (!event_wanted(type))
		return 0;
	if (!f)
		return emit_packet_event(ctx, reason, type, flags);
	return emit_flow_event(ctx, f, reason, type, flags);
}
