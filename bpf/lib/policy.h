// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Policy hooks. Policy is not enforced yet: the hooks allow everything, and
 * mark where the egress (sender) and ingress (receiver) checks go.
 */
#pragma once

#include "common.h"

enum policy_verdict {
	POLICY_ALLOW = 0,
	POLICY_DENY = 1,
};

/* policy_ingress decides whether a packet from the host stack may enter the endpoint. */
static __always_inline enum policy_verdict policy_ingress(const struct __sk_buff *ctx __attribute__((unused)))
{
	return POLICY_ALLOW;
}
