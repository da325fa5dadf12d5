// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Base includes and definitions shared by every program. Include this first:
 * it fixes __always_inline before any UAPI header (linux/stddef.h) can define
 * it without the always_inline attribute.
 *
 * Helpers are static __always_inline, except a few global (noinline)
 * functions whose comment says why: the verifier checks a global function
 * once, on its own. They are defined in these headers too, which is fine as
 * each program family is a single .c file (one definition per object).
 */
#pragma once

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/icmpv6.h>

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ctx_data(ctx)     ((void *)(unsigned long)(ctx)->data)
#define ctx_data_end(ctx) ((void *)(unsigned long)(ctx)->data_end)

/* mac_addr is a 6-byte MAC address in wire order. */
struct mac_addr {
	__u8 addr[ETH_ALEN];
};

/* v6addr is a 16-byte address in wire order (also IPv4-mapped IPv4). */
union v6addr {
	__u8 addr[16];
	__be32 p32[4];
	__u64 d64[2];
};
