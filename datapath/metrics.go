package datapath

import "fmt"

// Counter is the number of packets and bytes counted under one reason,
// summed over CPUs. Counters are cumulative from when the metrics map was
// created; they survive daemon restarts (the map is pinned).
type Counter struct {
	Reason  string // e.g. "forward_peer", "drop_spoof_ip4"
	Drop    bool   // the packets were dropped
	Packets uint64
	Bytes   uint64
}

// reason mirrors one value of enum metric_reason in bpf/lib/metrics.h.
type reason struct {
	id   endpointMetricReason
	name string
	drop bool
}

// reasons lists every metric reason, in enum order. TestReasonsMatchObject
// checks it against the enum in the compiled object.
var reasons = []reason{
	{endpointMetricReasonMETRIC_FORWARD_PEER, "forward_peer", false},
	{endpointMetricReasonMETRIC_FORWARD_HOST, "forward_host", false},
	{endpointMetricReasonMETRIC_TO_CONTAINER, "to_container", false},
	{endpointMetricReasonMETRIC_ARP_REPLY, "arp_reply", false},
	{endpointMetricReasonMETRIC_ND_REPLY, "nd_reply", false},
	{endpointMetricReasonMETRIC_DROP_MALFORMED, "drop_malformed", true},
	{endpointMetricReasonMETRIC_DROP_UNSUPPORTED_L3, "drop_unsupported_l3", true},
	{endpointMetricReasonMETRIC_DROP_SPOOF_MAC, "drop_spoof_mac", true},
	{endpointMetricReasonMETRIC_DROP_SPOOF_IP4, "drop_spoof_ip4", true},
	{endpointMetricReasonMETRIC_DROP_SPOOF_IP6, "drop_spoof_ip6", true},
	{endpointMetricReasonMETRIC_DROP_NO_IP4, "drop_no_ip4", true},
	{endpointMetricReasonMETRIC_DROP_NO_IP6, "drop_no_ip6", true},
	{endpointMetricReasonMETRIC_DROP_ISOLATION, "drop_isolation", true},
	{endpointMetricReasonMETRIC_DROP_ARP_IGNORED, "drop_arp_ignored", true},
	{endpointMetricReasonMETRIC_DROP_ND_IGNORED, "drop_nd_ignored", true},
	{endpointMetricReasonMETRIC_DROP_ROUTER_ADVERT, "drop_router_advert", true},
	{endpointMetricReasonMETRIC_DROP_ICMP6REDIRECT, "drop_icmp6_redirect", true},
	{endpointMetricReasonMETRIC_DROP_ROUTER_SOLICIT, "drop_router_solicit", true},
	{endpointMetricReasonMETRIC_DROP_MLD, "drop_mld", true},
	{endpointMetricReasonMETRIC_DROP_MULTICAST_IP4, "drop_multicast_ip4", true},
	{endpointMetricReasonMETRIC_DROP_MULTICAST_IP6, "drop_multicast_ip6", true},
	{endpointMetricReasonMETRIC_DROP_IP6EXTHDR_LIMIT, "drop_ip6_exthdr_limit", true},
	{endpointMetricReasonMETRIC_DROP_ND_REPLY_FAILED, "drop_nd_reply_failed", true},
	{endpointMetricReasonMETRIC_DROP_POLICY, "drop_policy", true},
	{endpointMetricReasonMETRIC_DROP_POLICY_INIT, "drop_policy_init", true},
	{endpointMetricReasonMETRIC_DROP_POLICY_LOCKDOWN, "drop_policy_lockdown", true},
	{endpointMetricReasonMETRIC_DROP_FRAG_ORPHAN, "drop_frag_orphan", true},
	{endpointMetricReasonMETRIC_DROP_NOT_FOR_ENDPOINT, "drop_not_for_endpoint", true},
	{endpointMetricReasonMETRIC_DROP_POLICY_UNAVAILABLE, "drop_policy_unavailable", true},
}

// Counters returns the counter of every reason, in a fixed order, summed
// over all CPUs. Reasons that never happened are listed with zero counts.
func (d *Datapath) Counters() ([]Counter, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil, ErrClosed
	}

	counters := make([]Counter, 0, len(reasons))
	for _, r := range reasons {
		var perCPU []endpointMetricsValue
		if err := d.metrics.Lookup(uint32(r.id), &perCPU); err != nil {
			return nil, fmt.Errorf("read counter %s: %w", r.name, err)
		}
		c := Counter{Reason: r.name, Drop: r.drop}
		for _, v := range perCPU {
			c.Packets += v.Packets
			c.Bytes += v.Bytes
		}
		counters = append(counters, c)
	}
	return counters, nil
}
