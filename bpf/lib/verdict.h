// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Verdict helpers: every packet leaves through one of them, which counts it
 * under its reason and emits the monitor event it calls for (account(),
 * events.h).
 */
#pragma once

#include "common.h"
#include "events.h"
#include "metrics.h"
#include "runtime.h"

/* Which program saw the packet, as event flags. */
#define HOOK_FROM_CONTAINER 0
#define HOOK_TO_CONTAINER EVENT_F_TO_CONTAINER

/* drop_at counts the packet under reason, reports it and drops it. */
static __always_inline int drop_at(struct __sk_buff *ctx, enum metric_reason reason, __u32 hook)
{
	account(ctx, reason, EVENT_DROP, hook);
	return TC_ACT_SHOT;
}

/* drop drops a packet in from_container. */
static __always_inline int drop(struct __sk_buff *ctx, enum metric_reason reason)
{
	return drop_at(ctx, reason, HOOK_FROM_CONTAINER);
}

/* drop_flow drops a packet whose flow is parsed; the event carries it. */
static __always_inline int drop_flow(struct __sk_buff *ctx, const struct flow *f,
				     enum metric_reason reason, __u32 hook)
{
	account_flow(ctx, f, reason, EVENT_DROP, hook);
	return TC_ACT_SHOT;
}

/*
 * forward counts the packet under reason, traces it when the monitor level
 * asks for it and returns verdict.
 */
static __always_inline int forward(struct __sk_buff *ctx, enum metric_reason reason, int verdict,
				   __u32 hook)
{
	account(ctx, reason, EVENT_TRACE, hook);
	return verdict;
}

/* forward_flow is forward for a packet whose flow f is parsed. */
static __always_inline int forward_flow(struct __sk_buff *ctx, const struct flow *f,
					enum metric_reason reason, int verdict, __u32 hook)
{
	account_flow(ctx, f, reason, EVENT_TRACE, hook);
	return verdict;
}
