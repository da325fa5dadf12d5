// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Per-reason packet and byte counters.
 *
 * Every packet a program sees is counted exactly once, under the reason of
 * its verdict. The Go side (datapath/metrics.go) mirrors this enum with a
 * name and a drop flag per reason; keep both in step. Values are stable
 * (the map is pinned and outlives upgrades): append, never renumber.
 * Forwarding reasons are numbered from 0, drop reasons from 64.
 */
#pragma once

#include "common.h"

enum metric_reason {
	METRIC_FORWARD_PEER = 0,       /* redirected into another endpoint */
	METRIC_FORWARD_HOST = 1,       /* passed to the host stack */
	METRIC_TO_CONTAINER = 2,       /* host stack to container, allowed */
	METRIC_ARP_REPLY = 3,          /* ARP request answered */
	METRIC_ND_REPLY = 4,           /* neighbour solicitation answered */

	METRIC_DROP_MALFORMED = 64,         /* truncated or invalid header */
	METRIC_DROP_UNSUPPORTED_L3 = 65,    /* not ARP, IPv4 or IPv6 */
	METRIC_DROP_SPOOF_MAC = 66,         /* source MAC is not the endpoint's */
	METRIC_DROP_SPOOF_IP4 = 67,         /* source IPv4 is not the endpoint's */
	METRIC_DROP_SPOOF_IP6 = 68,         /* source IPv6 is not the endpoint's */
	METRIC_DROP_NO_IP4 = 69,            /* endpoint has no IPv4 address */
	METRIC_DROP_NO_IP6 = 70,            /* endpoint has no IPv6 address */
	METRIC_DROP_ISOLATION = 71,         /* destination is in another network */
	METRIC_DROP_ARP_IGNORED = 72,       /* ARP reply, gratuitous, probe, own address */
	METRIC_DROP_ND_IGNORED = 73,        /* DAD or other unanswered solicitation */
	METRIC_DROP_ROUTER_ADVERT = 74,     /* ICMPv6 router advertisement */
	METRIC_DROP_ICMP6_REDIRECT = 75,    /* ICMPv6 redirect */
	METRIC_DROP_ROUTER_SOLICIT = 76,    /* ICMPv6 router solicitation */
	METRIC_DROP_MLD = 77,               /* multicast listener discovery */
	METRIC_DROP_MULTICAST_IP4 = 78,     /* IPv4 multicast or broadcast */
	METRIC_DROP_MULTICAST_IP6 = 79,     /* IPv6 multicast (not ND/MLD) */
	METRIC_DROP_IP6_EXTHDR_LIMIT = 80,  /* too many IPv6 extension headers */
	METRIC_DROP_ND_REPLY_FAILED = 81,   /* could not resize packet for NA */
	METRIC_DROP_POLICY = 82,            /* denied by policy (deny entry or enforced default) */
	METRIC_DROP_POLICY_INIT = 83,       /* an end is an endpoint with the init identity */
	METRIC_DROP_POLICY_LOCKDOWN = 84,   /* subject in lockdown (its policy did not fit) */
	METRIC_DROP_FRAG_ORPHAN = 85,       /* later fragment without a forwarded first one */
	METRIC_DROP_NOT_FOR_ENDPOINT = 86,  /* host stack sent a unicast packet for another address */
	METRIC_DROP_POLICY_UNAVAILABLE = 87, /* the shared policy program is missing */
};

#define METRIC_MAX_ENTRIES 256

struct metrics_value {
	__u64 packets;
	__u64 bytes;
};

/*
 * Sized with headroom so that adding reasons does not change the map's
 * definition (a pinned map with another definition would be replaced and its
 * counts lost).
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct metrics_value);
	__uint(max_entries, METRIC_MAX_ENTRIES);
} metrics SEC(".maps");

/* Anchors enum metric_reason in BTF so bpf2go can mirror it to Go. */
const enum metric_reason *__metric_reason_btf __attribute__((unused));

/* metrics_count counts the packet in ctx under reason; verdicts go through account() (events.h). */
static __always_inline void metrics_count(struct __sk_buff *ctx, __u32 reason)
{
	struct metrics_value *v;
	__u32 key = reason;

	v = bpf_map_lookup_elem(&metrics, &key);
	if (v) {
		v->packets++;
		v->bytes += ctx->len;
	}
}
