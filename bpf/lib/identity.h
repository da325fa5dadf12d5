// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Security identities: reserved values (the same as labels.Identity* in Go)
 * and the identity of an address: a local endpoint's own (endpoints map),
 * else the longest ipcache prefix holding it, else world.
 */
#pragma once

#include "common.h"
#include "endpoints.h"
#include "ipcache.h"

#define IDENTITY_UNKNOWN 0 /* wildcard peer in policy keys; never an address's identity */
#define IDENTITY_HOST 1
#define IDENTITY_WORLD 2
#define IDENTITY_INIT 5    /* endpoint whose labels are not known yet: denied all but ARP/ND */

/*
 * identity_of returns the identity of addr (16 bytes, IPv4-mapped for IPv4)
 * and sets *is_endpoint when addr is a local endpoint's. An endpoint entry
 * with identity 0 is taken as init (fail closed).
 */
static __always_inline __u32 identity_of(const __u8 *addr, int *is_endpoint)
{
	struct endpoint_info *ep;
	__u32 id;

	/* addr is a struct endpoint_key as it lies: no copy on the stack. */
	ep = bpf_map_lookup_elem(&endpoints, addr);
	if (ep) {
		*is_endpoint = 1;
		return ep->identity ? ep->identity : IDENTITY_INIT;
	}
	*is_endpoint = 0;
	id = ipcache_lookup(addr);
	return id ? id : IDENTITY_WORLD;
}
