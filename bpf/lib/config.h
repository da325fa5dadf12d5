// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Per-endpoint load-time constants.
 *
 * Each is a `volatile const` global in .rodata. The Go loader sets them
 * through CollectionSpec.Variables["__config_<name>"] before loading, so one
 * compiled object serves every endpoint and no compiler runs on the host.
 * The kernel freezes .rodata, so the verifier sees the values as constants
 * and prunes dead branches (e.g. all IPv4 code of an IPv6-only endpoint).
 *
 * Always read them through CONFIG(name) so uses stay greppable.
 */
#pragma once

#include "common.h"

#define DECLARE_CONFIG(type, name) volatile const type __config_##name
#define CONFIG(name) __config_##name

/* ifindex of the endpoint's host-side veth (where these programs run). */
DECLARE_CONFIG(__u32, endpoint_ifindex) = 0;
/* MAC of the container-side interface. */
DECLARE_CONFIG(struct mac_addr, endpoint_mac) = {};
/* MAC of the host-side veth; answer of every ARP/ND query from the container. */
DECLARE_CONFIG(struct mac_addr, host_mac) = {};
/* The endpoint's IPv4 address, network byte order; 0 when it has none. */
DECLARE_CONFIG(__be32, endpoint_ipv4) = 0;
/* The endpoint's IPv6 address; all zero when it has none. */
DECLARE_CONFIG(union v6addr, endpoint_ipv6) = {};
/* Index of the endpoint's network; endpoints talk only within one network. */
DECLARE_CONFIG(__u32, network_index) = 0;

static __always_inline struct mac_addr config_endpoint_mac(void)
{
	return CONFIG(endpoint_mac);
}

static __always_inline struct mac_addr config_host_mac(void)
{
	return CONFIG(host_mac);
}

static __always_inline union v6addr config_endpoint_ipv6(void)
{
	return CONFIG(endpoint_ipv6);
}

static __always_inline int config_has_ipv4(void)
{
	return CONFIG(endpoint_ipv4) != 0;
}

static __always_inline int config_has_ipv6(void)
{
	union v6addr a = config_endpoint_ipv6();

	return (a.d64[0] | a.d64[1]) != 0;
}
