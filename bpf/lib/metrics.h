/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-CPU packet and byte counters. */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include "maps.h"

static __always_inline void count_family(__u8 metric, __u8 dir, __u16 reason, __u32 bytes, __u8 family)
{
	struct sl_metrics_key key = { .metric = metric, .dir = dir, .reason = reason, .family = family };
	struct sl_metrics_val *val;

	if (!reason) {
		__u32 idx = ((__u32)metric << 4) | ((__u32)(family & 3) << 2) | (dir & 3);

		val = bpf_map_lookup_elem(&sl_metrics_fast, &idx);
		if (val) {
			val->packets++;
			val->bytes += bytes;
		}
		return;
	}

	val = bpf_map_lookup_elem(&sl_metrics, &key);
	if (!val) {
		struct sl_metrics_val zero = {};

		/* Racing CPUs may both insert; NOEXIST keeps the first. The key
		 * space is small and fixed, so this map cannot fill up. */
		bpf_map_update_elem(&sl_metrics, &key, &zero, BPF_NOEXIST);
		val = bpf_map_lookup_elem(&sl_metrics, &key);
		if (!val)
			return;
	}
	/* Per-CPU value: no atomics needed. */
	val->packets++;
	val->bytes += bytes;
}

/* A counter of no address family (lost events, sockets). */
static __always_inline void count(__u8 metric, __u8 dir, __u16 reason, __u32 bytes)
{
	count_family(metric, dir, reason, bytes, SL_METRIC_FAMILY_NONE);
}

/* A counter of the packet in skb: its family and length. */
static __always_inline void count_skb(struct __sk_buff *skb, __u8 metric, __u8 dir, __u16 reason)
{
	/* Without branches (x == y as ((x ^ y) - 1) >> 31 for 16-bit
	 * values): a branch per counter would multiply the verifier's paths
	 * at each of the programs' many counting sites. */
	__u32 proto = skb->protocol & 0xffff;
	__u32 is4 = ((proto ^ bpf_htons(ETH_P_IP)) - 1) >> 31;
	__u32 is6 = ((proto ^ bpf_htons(ETH_P_IPV6)) - 1) >> 31;

	count_family(metric, dir, reason, skb->len, is4 * SL_METRIC_FAMILY_IPV4 + is6 * SL_METRIC_FAMILY_IPV6);
}

#endif /* SLUICE_METRICS_H */
