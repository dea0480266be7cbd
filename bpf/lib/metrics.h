/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-CPU packet and byte counters. */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include "maps.h"

static __always_inline void count(__u8 metric, __u8 dir, __u16 reason, __u32 bytes)
{
	struct sl_metrics_key key = { .metric = metric, .dir = dir, .reason = reason };
	struct sl_metrics_val *val;

	if (!reason) {
		__u32 idx = ((__u32)metric << 2) | (dir & 3);

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

#endif /* SLUICE_METRICS_H */
