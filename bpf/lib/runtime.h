// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Run-time configuration shared by all endpoints: a one-entry array that the
 * Go side writes (datapath.SyncPolicy, SetMonitorLevel) and every program
 * reads, so that changing it reloads no program.
 *
 *   policy_revision  bumped after every change of policy, ipcache or an
 *                    endpoint's identity. Conntrack entries remember the
 *                    revision they were verified at; a packet of an entry
 *                    with another revision re-runs the policy check.
 *   monitor_level    which events go to the ring buffer (events.h).
 */
#pragma once

#include "common.h"

#define MONITOR_DROPS 0    /* drops only */
#define MONITOR_VERDICTS 1 /* + policy verdicts of new flows */
#define MONITOR_TRACE 2    /* + every forwarded packet */

struct runtime_config {
	__u32 policy_revision;
	__u32 monitor_level;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct runtime_config);
	__uint(max_entries, 1);
} config SEC(".maps");

static __always_inline struct runtime_config *runtime_config(void)
{
	__u32 key = 0;

	return bpf_map_lookup_elem(&config, &key);
}

static __always_inline __u32 policy_revision(void)
{
	struct runtime_config *c = runtime_config();

	return c ? c->policy_revision : 0;
}

static __always_inline __u32 monitor_level(void)
{
	struct runtime_config *c = runtime_config();

	return c ? c->monitor_level : MONITOR_DROPS;
}
