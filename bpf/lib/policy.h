/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Identity-aware network policy, per endpoint and direction.
 *
 *   pod A ──► sl_from_ep(A): LB picks the backend B, then A's EGRESS policy
 *             is checked against B's identity (ipcache) and B's port
 *   ──► sl_to_ep(B): B's INGRESS policy, against A's identity
 *
 * Only a connection's first packet is decided; its CT entry remembers the
 * revision (sl_policy_rev) the decision was made under, and the rule. When
 * the agent bumps the revision (policy, identity or ipcache change), each
 * connection is decided again on its next packet, in its original
 * direction; one that is no longer allowed is cut (POLICY_REVOKED) and, for
 * TCP, both ends get an RST.
 *
 * A decision is three lookups in the endpoint's policy trie: the peer's
 * identity, the peer address's CIDR class (ipBlock rules), and any peer.
 * Each lookup returns the longest (protocol, port prefix) match for that
 * identity; across lookups the longest match wins, then a proxy redirect
 * over a plain allow (not for entries flagged SL_POLICY_F_TIERED), then
 * the more specific peer (identity, class, any). Nothing matches: default
 * deny.
 */
#ifndef SLUICE_POLICY_H
#define SLUICE_POLICY_H

#include "conntrack.h"
#include "csum.h"
#include "eth.h"

/* Exported to Go (bpf2go -type) through its BTF. */
const enum sl_policy_entry_flag *const _sl_policy_entry_flag __attribute__((unused)) = 0;


struct policy_result {
	__u32 peer_id;    /* the peer's identity */
	__u8 flags;       /* SL_CT_POL_TO_PROXY / SL_CT_POL_FROM_PROXY, for the CT entry */
	__u32 rule;       /* deciding rule (0: default deny / not enforced) */
	__u16 proxy_port; /* SL_VERDICT_REDIRECT */
	__u8 verdict;     /* enum sl_policy_verdict */
	__u8 from_host;   /* the peer is the node itself (ingress) */
	__u8 peer_local;  /* the peer is a pod of this node (its own endpoint sees the connection too) */
};

static __always_inline __u32 policy_rev_current(void)
{
	__u32 k = 0;
	__u32 *v = bpf_map_lookup_elem(&sl_policy_rev, &k);

	return v ? *v : 0;
}

/* The address of an LPM key (sl_ipcache, sl_policy_cidr) whose first 32
 * bits are exact (family, direction, padding): sets *out from addr of
 * family and returns the key's prefixlen for the whole address. */
static __always_inline __u32 lpm_addr(__u8 family, const union sl_addr *addr, union sl_addr *out)
{
	if (family == AF_INET6) {
		*out = *addr;
		return 32 + 128;
	}
	out->addr4 = addr->addr4;
	return 32 + 32;
}

/* The identity of addr (of family AF_INET or AF_INET6: one trie holds
 * both, the family byte keeps them apart); *ep_id is its endpoint ID if it
 * is a pod of this node, else 0. */
static __always_inline __u32 ipcache_identity(__u8 family, const union sl_addr *addr, __u32 *ep_id)
{
	struct sl_ipcache_key k = { .family = family };
	struct sl_ipcache_val *v;

	k.prefixlen = lpm_addr(family, addr, &k.addr);
	v = bpf_map_lookup_elem(&sl_ipcache, &k);
	*ep_id = v ? v->ep_id : 0;
	return v ? v->identity : SL_ID_WORLD;
}


/*
 * The identity of a connection's peer. Host is only what the node itself
 * originates: at ingress, a packet from the node's own stack (it came in on
 * no interface), whatever its source address. A forwarded packet whose
 * source is a node address (an external connection the node source-NATed)
 * is world, not host. A hairpinned connection (the pod reached itself
 * through its service) comes from the service loopback: the pod itself.
 */
static __always_inline __u32 peer_identity(const struct sl_endpoint *ep, __u8 dir, __u8 family,
					    const union sl_addr *peer, bool from_host, __u8 *peer_local)
{
	__u32 id, ep_id;

	*peer_local = 0;
	if (dir == SL_DIR_INGRESS) {
		if (from_host)
			return SL_ID_HOST;
		if (family == AF_INET ? peer->addr4 == SL_SERVICE_LOOPBACK : is_service_loopback6(peer)) {
			*peer_local = 1;
			return ep->identity;
		}
	}
	id = ipcache_identity(family, peer, &ep_id);
	*peer_local = ep_id != 0;
	if (dir == SL_DIR_INGRESS && id == SL_ID_HOST)
		return SL_ID_WORLD;
	return id;
}

struct policy_match {
	__u32 rule;
	__u16 proxy_port;
	__u8 verdict;
	__u16 score; /* 0: no match */
};

/* One lookup; kind ranks the peer's specificity (3 identity, 2 CIDR class, 1 any). */
static __always_inline void policy_try(void *pm, __u32 identity, __u8 dir, __u8 proto, __be16 dport,
				       __u16 kind, struct policy_match *best)
{
	struct sl_policy_key k = { .prefixlen = 64, .identity = identity, .dir = dir, .proto = proto, .dport = dport };
	struct sl_policy_entry *e = bpf_map_lookup_elem(pm, &k);
	__u8 verdict;
	__u16 score;

	if (!e)
		return;
	verdict = e->verdict & SL_POLICY_VERDICT_MASK;
	/* At equal length a Redirect outranks the peer's specificity, so that
	 * an identity's Allow cannot bypass the proxy NetworkPolicy + L7 sends
	 * a port to; tiered entries rank by length and peer only (their
	 * Redirects are already decided per bucket). */
	score = ((__u16)e->prefixlen << 3) | kind;
	if (verdict == SL_VERDICT_REDIRECT && !(e->verdict & SL_POLICY_F_TIERED))
		score |= 4;
	if (score > best->score) {
		best->score = score;
		best->rule = e->rule;
		best->verdict = verdict;
		best->proxy_port = e->proxy_port;
	}
}

/* Look a connection up in endpoint ep_id's policy: direction dir, peer
 * address peer (of family) with identity res->peer_id, destination port
 * dport. Fills res (verdict ALLOW, REDIRECT or DENY). */
static __always_inline void policy_lookup(__u32 ep_id, __u8 dir, __u8 proto, __be16 dport, __u8 family,
					  const union sl_addr *peer, struct policy_result *res)
{
	struct policy_match best = {};
	void *pm, *cm;

	res->verdict = SL_VERDICT_DENY;
	res->rule = 0;
	res->proxy_port = 0;
	pm = bpf_map_lookup_elem(&sl_policy, &ep_id);
	if (!pm)
		return;
	policy_try(pm, res->peer_id, dir, proto, dport, 3, &best);
	cm = bpf_map_lookup_elem(&sl_policy_cidr, &ep_id);
	if (cm) {
		struct sl_policy_cidr_key ck = { .dir = dir, .family = family };
		__u32 *cls;

		ck.prefixlen = lpm_addr(family, peer, &ck.addr);
		cls = bpf_map_lookup_elem(cm, &ck);
		if (cls)
			policy_try(pm, *cls, dir, proto, dport, 2, &best);
	}
	policy_try(pm, SL_ID_ANY, dir, proto, dport, 1, &best);
	if (best.score) {
		res->verdict = best.verdict;
		res->rule = best.rule;
		res->proxy_port = best.proxy_port;
	}
}

/* Decide a connection of endpoint ep (see policy_lookup); an endpoint
 * whose policy did not fit denies everything. */
static __always_inline void policy_decide(const struct sl_endpoint *ep, __u8 dir, __u8 proto, __be16 dport,
					  __u8 family, const union sl_addr *peer, struct policy_result *res)
{
	if (ep->flags & SL_EP_F_POLICY_OVERFLOW) {
		res->verdict = SL_VERDICT_DENY;
		res->rule = 0;
		res->proxy_port = 0;
		return;
	}
	policy_lookup(ep->ep_id, dir, proto, dport, family, peer, res);
}

static __always_inline bool policy_enforced(const struct sl_endpoint *ep, __u8 dir)
{
	return ep->flags & (dir == SL_DIR_EGRESS ? SL_EP_F_POLICY_EGRESS : SL_EP_F_POLICY_INGRESS);
}

/*
 * Check a connection in its original direction dir: peer is the other
 * end's address (of family), dport the connection's destination port. Sets res and
 * returns the drop reason (SL_DROP_NONE to forward; audit mode forwards
 * a denial as SL_VERDICT_AUDIT).
 */
static __always_inline int policy_check(const struct sl_endpoint *ep, __u8 dir, __u8 proto, __be16 dport,
					__u8 family, const union sl_addr *peer, bool from_host,
					struct policy_result *res)
{
	res->from_host = from_host;
	res->peer_id = peer_identity(ep, dir, family, peer, from_host, &res->peer_local);
	if (!policy_enforced(ep, dir)) {
		res->verdict = SL_VERDICT_NONE;
		res->rule = 0;
		return SL_DROP_NONE;
	}
	policy_decide(ep, dir, proto, dport, family, peer, res);
	if (res->verdict != SL_VERDICT_DENY)
		return SL_DROP_NONE;
	if (ep->flags & SL_EP_F_POLICY_AUDIT) {
		res->verdict = SL_VERDICT_AUDIT;
		return SL_DROP_NONE;
	}
	return (ep->flags & SL_EP_F_POLICY_OVERFLOW) ? SL_DROP_POLICY_OVERFLOW : SL_DROP_POLICY_DENIED;
}

/* Record a decision in the connection's CT entry (key: original direction). */
static __always_inline void policy_remember(const struct sl_ct_key *key, __u32 rev, const struct policy_result *res)
{
	struct sl_ct_entry *e = bpf_map_lookup_elem(&sl_ct, key);

	if (!e)
		return;
	e->policy_rev = rev;
	e->policy_rule = res->rule;
	e->policy_verdict = res->verdict;
	e->proxy_port = res->proxy_port;
	e->policy_flags = (res->from_host ? SL_CT_POL_FROM_HOST : 0) | (res->peer_local ? SL_CT_POL_PEER_LOCAL : 0) |
			  res->flags;
}

/* An RST: IPv4 without options (or IPv6 without extension headers), TCP
 * without options. */
struct tcp_rst {
	struct iphdr ip;
	struct tcphdr tcp;
};

struct tcp_rst6 {
	struct ipv6hdr ip;
	struct tcphdr tcp;
};

struct tcp_pseudo {
	__be32 saddr;
	__be32 daddr;
	__u8 zero;
	__u8 proto;
	__be16 len;
};

/* IPv6's pseudo-header (RFC 8200 section 8.1). */
struct tcp_pseudo6 {
	union sl_addr saddr;
	union sl_addr daddr;
	__be32 len;
	__u8 zero[3];
	__u8 proto;
};

/* The TCP header of a bare RST from sport to dport with sequence number
 * seq (and, when ack is not 0, acknowledging ack); no checksum yet. */
static __always_inline void rst_tcp(struct tcphdr *tcp, __be16 sport, __be16 dport, __be32 seq, __be32 ack)
{
	tcp->source = sport;
	tcp->dest = dport;
	tcp->seq = seq;
	tcp->doff = 5;
	tcp->rst = 1;
	if (ack) {
		/* The answer to a SYN: it must acknowledge it to be taken. */
		tcp->ack = 1;
		tcp->ack_seq = ack;
	}
}

/* The Ethernet header of the packet, its addresses reversed if swap_mac. */
static __always_inline int rst_eth(struct __sk_buff *skb, bool swap_mac, struct ethhdr *eth)
{
	if (bpf_skb_load_bytes(skb, 0, eth, sizeof(*eth)) < 0)
		return -1;
	if (swap_mac)
		eth_swap(eth);
	return 0;
}

/* Cut the packet to eth + r (of size n) and write them over it. */
static __always_inline int rst_store(struct __sk_buff *skb, const struct ethhdr *eth, const void *r, __u32 n)
{
	if (bpf_skb_change_tail(skb, ETH_HLEN + n, 0) < 0 ||
	    bpf_skb_store_bytes(skb, 0, eth, sizeof(*eth), 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, r, n, 0) < 0)
		return -1;
	return 0;
}

/*
 * Turn the packet into a bare IPv4 RST from saddr:sport to daddr:dport
 * (see rst_tcp). swap_mac reverses the Ethernet addresses (the RST goes
 * back the way the packet came).
 */
static __always_inline int rst_write4(struct __sk_buff *skb, bool swap_mac, __be32 saddr, __be32 daddr,
				      __be16 sport, __be16 dport, __be32 seq, __be32 ack)
{
	struct tcp_rst r = {};
	struct tcp_pseudo ph = { .saddr = saddr, .daddr = daddr, .proto = IPPROTO_TCP, .len = bpf_htons(sizeof(struct tcphdr)) };
	struct ethhdr eth;
	__s64 sum;

	if (rst_eth(skb, swap_mac, &eth) < 0)
		return -1;
	r.ip.version = 4;
	r.ip.ihl = 5;
	r.ip.ttl = 64;
	r.ip.protocol = IPPROTO_TCP;
	r.ip.tot_len = bpf_htons(sizeof(r));
	r.ip.saddr = saddr;
	r.ip.daddr = daddr;
	r.ip.check = csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)&r.ip, sizeof(r.ip), 0));
	rst_tcp(&r.tcp, sport, dport, seq, ack);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
	if (sum < 0)
		return -1;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&r.tcp, sizeof(r.tcp), sum);
	if (sum < 0)
		return -1;
	r.tcp.check = csum_fold(sum);
	return rst_store(skb, &eth, &r, sizeof(r));
}

/* rst_write4 over IPv6 (no extension headers; the checksum over IPv6's
 * pseudo-header). */
static __always_inline int rst_write6(struct __sk_buff *skb, bool swap_mac, const union sl_addr *saddr,
				      const union sl_addr *daddr, __be16 sport, __be16 dport, __be32 seq, __be32 ack)
{
	struct tcp_rst6 r = {};
	struct tcp_pseudo6 ph = { .saddr = *saddr, .daddr = *daddr, .len = bpf_htonl(sizeof(struct tcphdr)),
				  .proto = IPPROTO_TCP };
	struct ethhdr eth;
	__s64 sum;

	if (rst_eth(skb, swap_mac, &eth) < 0)
		return -1;
	r.ip.version = 6;
	r.ip.payload_len = bpf_htons(sizeof(struct tcphdr));
	r.ip.nexthdr = IPPROTO_TCP;
	r.ip.hop_limit = 64;
	__builtin_memcpy(&r.ip.saddr, saddr->addr6, 16);
	__builtin_memcpy(&r.ip.daddr, daddr->addr6, 16);
	rst_tcp(&r.tcp, sport, dport, seq, ack);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
	if (sum < 0)
		return -1;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&r.tcp, sizeof(r.tcp), sum);
	if (sum < 0)
		return -1;
	r.tcp.check = csum_fold(sum);
	return rst_store(skb, &eth, &r, sizeof(r));
}

/* An RST of family (a constant): rst_write4 or rst_write6. */
static __always_inline int rst_write(struct __sk_buff *skb, bool swap_mac, const __u8 family,
				     const union sl_addr *saddr, const union sl_addr *daddr,
				     __be16 sport, __be16 dport, __be32 seq, __be32 ack)
{
	if (family == AF_INET6)
		return rst_write6(skb, swap_mac, saddr, daddr, sport, dport, seq, ack);
	return rst_write4(skb, swap_mac, saddr->addr4, daddr->addr4, sport, dport, seq, ack);
}

/*
 * Cut a revoked TCP connection: both ends get an RST. The packet in hand
 * (going from src to dst) becomes the RST that continues to dst, with the
 * packet's own sequence number; a clone becomes the RST back to src, with
 * the sequence number src expects next (the packet's acknowledgement), sent
 * back out of the interface it came from. Addresses are as each end knows
 * them: back_saddr/back_sport is what src believes it talks to (a service
 * VIP for a translated connection). family is a constant. Returns 0 when
 * the packet is now the forward RST.
 */
static __always_inline int policy_reset(struct __sk_buff *skb, __u8 dir, const struct sl_pkt *pkt, const __u8 family,
					const union sl_addr *back_saddr, __be16 back_sport,
					const union sl_addr *fwd_saddr, __be16 fwd_sport)
{
	__be32 seqack[2];
	__u32 mark = skb->mark;

	if (pkt->later_frag || bpf_skb_load_bytes(skb, pkt->l4_off + 4, seqack, sizeof(seqack)) < 0)
		return -1;
	if (pkt->tcp_flags & TCPF_ACK) {
		if (rst_write(skb, true, family, back_saddr, &pkt->saddr, back_sport, pkt->sport, seqack[1], 0) < 0)
			return -1;
		skb->mark = SL_MARK_POLICY_RST;
		/* From the pod (tc ingress): back into it through the
		 * interface's egress; toward the pod (tc egress): back out
		 * as if the pod had sent it. */
		bpf_clone_redirect(skb, skb->ifindex, dir == SL_DIR_EGRESS ? 0 : BPF_F_INGRESS);
		skb->mark = mark;
		/* rst_write swapped the MACs: swap them back. */
		return rst_write(skb, true, family, fwd_saddr, &pkt->daddr, fwd_sport, pkt->dport, seqack[0], 0);
	}
	return rst_write(skb, false, family, fwd_saddr, &pkt->daddr, fwd_sport, pkt->dport, seqack[0], 0);
}

#endif /* SLUICE_POLICY_H */
