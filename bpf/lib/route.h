/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Routing packets without the node's IP stack: FIB lookups, forwarding to
 * where they point, and BPF host routing between the pods of a node.
 */
#ifndef SLUICE_ROUTE_H
#define SLUICE_ROUTE_H

#include <stddef.h>

#include "common.h"
#include "csum.h"
#include "maps.h"
#include "parse.h"

#ifndef BPF_FIB_LKUP_RET_SUCCESS
#define BPF_FIB_LKUP_RET_SUCCESS 0
#define BPF_FIB_LKUP_RET_NO_NEIGH 7
#endif

/* Route a packet ourselves: the stack would refuse a packet from outside
 * with a local source address (a martian). */
static __always_inline int fib_lookup4(struct __sk_buff *skb, const struct sl_pkt *pkt,
				       struct bpf_fib_lookup *fib)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = AF_INET;
	fib->l4_protocol = pkt->proto;
	fib->ipv4_src = pkt->saddr.addr4;
	fib->ipv4_dst = pkt->daddr.addr4;
	fib->ifindex = skb->ifindex;
	return bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
}

/* The same for an IPv6 packet. */
static __always_inline int fib_lookup6(struct __sk_buff *skb, const struct sl_pkt *pkt,
				       struct bpf_fib_lookup *fib)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = AF_INET6;
	fib->l4_protocol = pkt->proto;
	__builtin_memcpy(fib->ipv6_src, pkt->saddr.addr6, 16);
	__builtin_memcpy(fib->ipv6_dst, pkt->daddr.addr6, 16);
	fib->ifindex = skb->ifindex;
	return bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
}

static __always_inline int fib_lookup_family(struct __sk_buff *skb, const struct sl_pkt *pkt,
					     struct bpf_fib_lookup *fib, const __u8 family)
{
	if (family == AF_INET6)
		return fib_lookup6(skb, pkt, fib);
	return fib_lookup4(skb, pkt, fib);
}

/* Send the packet where a lookup sent it. */
static __always_inline int fib_forward(struct __sk_buff *skb, struct bpf_fib_lookup *fib, int rc)
{
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib->ifindex, NULL, 0, 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return -1;
	if (bpf_skb_store_bytes(skb, 0, fib->dmac, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, fib->smac, ETH_ALEN, 0) < 0)
		return -1;
	return bpf_redirect(fib->ifindex, 0);
}

static __always_inline int fib_redirect(struct __sk_buff *skb, const struct sl_pkt *pkt, const __u8 family)
{
	struct bpf_fib_lookup fib;
	int rc = fib_lookup_family(skb, pkt, &fib, family);

	return fib_forward(skb, &fib, rc);
}

/*
 * BPF host routing. A packet a pod sends to another pod of this node goes
 * straight to the interface the node's routes name for the destination,
 * when that interface is an endpoint's: redirected to its egress, where
 * the destination's program (sl_to_ep) judges it as it judges a packet the
 * stack forwarded. The packet skips the node's routing, netfilter and
 * conntrack, as Cilium's BPF host routing does. The route is the node's
 * own (bpf_fib_lookup over its tables and rules), the TTL is decremented
 * as forwarding does (the neighbour subsystem resolves a pod not yet in
 * the node's ARP table), and anything the stack must handle takes the
 * stack: a TTL about to expire (ICMP time exceeded), a packet larger than
 * the route's MTU (ICMP fragmentation needed), a destination that is not
 * an endpoint of this node. Returns the program's verdict, or
 * ROUTE_WRITE_ERROR when the packet could not be rewritten (the caller
 * drops it with a reason).
 */
#define ROUTE_WRITE_ERROR (-1000) /* not a verdict: SL_NEXT is -1 */
static __always_inline int route_to_local_endpoint(struct __sk_buff *skb)
{
	struct bpf_fib_lookup fib;
	struct iphdr iph;
	__u32 oif;
	__be16 old, new;
	int rc;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &iph, sizeof(iph)) < 0 || iph.version != 4 || iph.ttl <= 1)
		return SL_NEXT;
	__builtin_memset(&fib, 0, sizeof(fib));
	fib.family = AF_INET;
	fib.l4_protocol = iph.protocol;
	fib.tos = iph.tos;
	fib.tot_len = bpf_ntohs(iph.tot_len);
	fib.ipv4_src = iph.saddr;
	fib.ipv4_dst = iph.daddr;
	fib.ifindex = skb->ifindex;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return SL_NEXT;
	oif = fib.ifindex;
	if (oif == skb->ifindex || !bpf_map_lookup_elem(&sl_endpoints, &oif))
		return SL_NEXT;
	/* TTL and protocol share a 16-bit word of the header checksum. */
	old = *(__be16 *)&iph.ttl;
	iph.ttl--;
	new = *(__be16 *)&iph.ttl;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old, new, sizeof(new)) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, ttl), &iph.ttl, 1, 0) < 0)
		return ROUTE_WRITE_ERROR;
	count_skb(skb, SL_METRIC_HOST_ROUTED, SL_DIR_EGRESS, 0);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		/* The neighbour subsystem resolves the pod's address (ARP)
		 * and queues the packet meanwhile, as the stack would. */
		return bpf_redirect_neigh(oif, NULL, 0, 0);
	if (bpf_skb_store_bytes(skb, 0, fib.dmac, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, fib.smac, ETH_ALEN, 0) < 0)
		return ROUTE_WRITE_ERROR;
	return bpf_redirect(oif, 0);
}

#endif /* SLUICE_ROUTE_H */
