/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Ethernet: frames sent back the way they came. */
#ifndef SLUICE_ETH_H
#define SLUICE_ETH_H

#include "common.h"

/* Swap source and destination MAC: a frame sent back the way it came. */
static __always_inline void eth_swap(struct ethhdr *eth)
{
	__u8 mac[ETH_ALEN];

	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
}

/* Send a packet straight back into the pod it came from: a hairpinned
 * packet needs no routing, and must not meet the node's reverse-path
 * filter with a VIP or loopback source. */
static __always_inline int redirect_back(struct __sk_buff *skb)
{
	struct ethhdr eth;

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
		return SL_DROP;
	eth_swap(&eth);
	if (bpf_skb_store_bytes(skb, 0, &eth, 2 * ETH_ALEN, 0) < 0)
		return SL_DROP;
	return bpf_redirect(skb->ifindex, 0);
}

#endif /* SLUICE_ETH_H */
