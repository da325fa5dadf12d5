// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Enforcement: conntrack first, policy for what it does not know.
 *
 * A flow's checks are the egress of its source when the source is a local
 * endpoint that sent it here (from_container), and the ingress of its
 * destination when that is a local endpoint (from_container delivering to a
 * local endpoint, which bypasses the receiver's to_container; or
 * to_container). Replies of allowed flows need no check. When the policy
 * revision moved since an entry was verified, the entry's original checks
 * run again on its original tuple: still allowed, the entry is kept
 * (no transient drop); denied, it becomes a tombstone (ct_entry.denied) that
 * drops both directions, and the packet is dropped.
 */
#pragma once

#include "common.h"
#include "conntrack.h"
#include "events.h"
#include "flow.h"
#include "identity.h"
#include "policy.h"
#include "runtime.h"

/*
 * flow_check runs the checks (CT_CHECK_*) for a flow with tuple key and
 * policy port, and returns the enum policy_match that decided. It sets f's
 * identities (of key's ends), dir and match.
 *
 * A global (not inlined) function: the verifier checks it once, and its
 * locals stay off ct_policy's stack.
 */
__attribute__((noinline))
int flow_check(const struct ct_key *key, __u32 port, __u32 checks, struct flow *f)
{
	int src_ep = 0, dst_ep = 0, match = POLICY_ALLOW_DEFAULT;
	__u32 src, dst;

	if (!key || !f)
		return POLICY_DENY_DEFAULT;

	src = identity_of(key->saddr, &src_ep);
	dst = identity_of(key->daddr, &dst_ep);
	f->src_identity = src;
	f->dst_identity = dst;
	f->dir = POLICY_DIR_EGRESS;

	/* A check's subject that is no longer an endpoint is taken as init. */
	if (checks & CT_CHECK_EGRESS) {
		match = policy_decide(src_ep ? src : IDENTITY_INIT, dst, port, key->proto,
				      POLICY_DIR_EGRESS);
		if (!policy_allowed(match))
			goto out;
	}
	if (checks & CT_CHECK_INGRESS) {
		f->dir = POLICY_DIR_INGRESS;
		match = policy_decide(dst_ep ? dst : IDENTITY_INIT, src, port, key->proto,
				      POLICY_DIR_INGRESS);
	}
out:
	f->match = match;
	return match;
}

static __always_inline enum metric_reason policy_drop_reason(int match)
{
	switch (match) {
	case POLICY_DENY_INIT:
		return METRIC_DROP_POLICY_INIT;
	case POLICY_DENY_LOCKDOWN:
		return METRIC_DROP_POLICY_LOCKDOWN;
	default:
		return METRIC_DROP_POLICY;
	}
}

/* flow_swap_identities makes f's identities those of the reversed tuple. */
static __always_inline void flow_swap_identities(struct flow *f)
{
	__u32 id = f->src_identity;

	f->src_identity = f->dst_identity;
	f->dst_identity = id;
}

/*
 * ct_policy decides the packet of flow f: conntrack, then for a new flow the
 * checks (CT_CHECK_*) and, when allowed and trackable, a new entry. hook is
 * the program, as event flags. Returns 0 to forward, else the metric reason
 * to drop; f->ct, and f's policy fields when a check ran, say why.
 *
 * A global (not inlined) function: the verifier checks it once.
 */
__attribute__((noinline))
int ct_policy(struct __sk_buff *ctx, struct flow *f, __u32 checks, __u32 hook)
{
	struct ct_entry *e = NULL;
	struct ct_key key;
	__u32 rev = policy_revision();
	__u32 port;
	int match, reply = 0;

	if (!f)
		return METRIC_DROP_MALFORMED;

	/* One key on the stack (the call chain's stack is limited), turned in place. */
	if (f->flags & FLOW_F_RELATED) {
		__builtin_memcpy(&key, &f->inner, sizeof(key));
		e = ct_lookup(&key, &reply);
		/* An error about a flow the policy cut relates to nothing. */
		if (e && !e->denied)
			goto related;
		e = NULL;
	}

	__builtin_memcpy(&key, &f->tuple, sizeof(key));
	f->ct = CT_NEW;
	if (!(f->flags & FLOW_F_NOCT)) {
		e = ct_lookup(&key, &reply);
		if (e)
			f->ct = reply ? CT_REPLY : CT_ESTABLISHED;
		else
			__builtin_memcpy(&key, &f->tuple, sizeof(key));
	}
	if (e) {
		if (e->revision == rev) {
			if (e->denied)
				return e->denied;
			ct_touch(e, bpf_ktime_get_coarse_ns());
			goto pass;
		}
		/* Check again the flow's original checks on its original tuple (key). */
		port = e->policy_port;
		checks = e->flags & CT_CHECKS;
	} else {
		port = f->policy_port;
	}

	match = flow_check(&key, port, checks, f);

	if (e) {
		if (f->ct == CT_REPLY)
			flow_swap_identities(f);
		e->revision = rev;
		if (!policy_allowed(match)) {
			e->denied = policy_drop_reason(match);
			return e->denied;
		}
		e->denied = 0;
		ct_touch(e, bpf_ktime_get_coarse_ns());
		goto pass;
	}

	if (monitor_level() >= MONITOR_VERDICTS)
		account_flow(ctx, f, policy_allowed(match) ? 0 : policy_drop_reason(match),
			     EVENT_VERDICT, hook | ACCOUNT_NO_COUNT);
	if (!policy_allowed(match))
		return policy_drop_reason(match);
	if (!(f->flags & (FLOW_F_NOCT | FLOW_F_NOCREATE)))
		ct_create(&key, bpf_ktime_get_coarse_ns(), rev, f->policy_port, checks);
	goto pass;

related:
	f->ct = CT_RELATED;
pass:
	frag_record(f);
	return 0;
}
