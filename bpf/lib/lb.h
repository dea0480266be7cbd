/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Service load balancing on the packet path.
 *
 *   client pod ──(A:sp → VIP:vp)──► sl_from_ep: DNAT ──(A:sp → B:bp)──► backend
 *   client pod ◄─(VIP:vp → A:sp)── sl_to_ep: rev-NAT ◄─(B:bp → A:sp)── backend
 *
 * The backend is chosen once per connection and pinned in a SERVICE-scope
 * CT entry keyed by the tuple to the VIP; the FLOW-scope entry of the
 * translated tuple carries the frontend ID, so replies are rewritten back
 * and the client only ever sees the VIP. Connections opened by sockets that
 * socket LB already connected to a backend never carry the VIP, so the two
 * paths never translate the same flow twice.
 *
 * Both families: the functions that differ by family take it as a constant
 * (each program's IPv4 and IPv6 paths are compiled apart). IPv6 has no
 * header checksum; its L4 and ICMPv6 checksums cover a pseudo-header with
 * the addresses, so an address rewrite updates them by the 16 bytes' diff.
 */
#ifndef SLUICE_LB_H
#define SLUICE_LB_H

#include "conntrack.h"
#include "csum.h"
#include "eth.h"

enum lb_result {
	LB_NONE = 0,     /* not a service: nothing done */
	LB_TRANSLATED = 1,
	LB_REJECT = 2,   /* service without endpoints */
	LB_DROP = 3,     /* see *reason */
	LB_HAIRPIN = 4,  /* translated back to the sender itself: send it straight back */
};

static __always_inline struct sl_lb_entry *lb_lookup(const struct sl_pkt *pkt, struct sl_lb_key *key)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->addr = pkt->daddr;
	key->port = pkt->dport;
	key->proto = pkt->proto;
	key->family = pkt->family == AF_INET6 ? SL_LB_FAMILY_IPV6 : SL_LB_FAMILY_IPV4;
	return bpf_map_lookup_elem(&sl_lb_svc, key);
}

/*
 * A flow hash that is the same on every node (no per-boot seed), so Maglev
 * picks the same backend for a flow wherever it is balanced. Mixing after
 * the finaliser of MurmurHash3.
 */
static __always_inline __u32 flow_hash(__u32 a, __u32 b, __u32 c)
{
	__u32 h = a * 0xcc9e2d51 ^ (b * 0x1b873593) ^ (c * 0xe6546b64);

	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* The backend for hash in the frontend's Maglev table, or 0. */
static __always_inline __u32 lb_maglev_backend(const struct sl_lb_entry *svc, __u32 hash)
{
	__u32 idx = hash % maglev_size;
	void *table = bpf_map_lookup_elem(&sl_lb_maglev, &svc->svc_id);
	__u32 *id;

	if (!table)
		return 0;
	id = bpf_map_lookup_elem(table, &idx);
	return id ? *id : 0;
}

/* The backend in slot (hash % count) + 1, or 0. */
static __always_inline __u32 lb_slot_backend(struct sl_lb_key *key, const struct sl_lb_entry *svc, __u32 hash)
{
	struct sl_lb_entry *slot;

	if (svc->count == 0)
		return 0;
	key->slot = (hash % svc->count) + 1;
	slot = bpf_map_lookup_elem(&sl_lb_svc, key);
	key->slot = 0;
	return slot ? slot->backend_id : 0;
}

static __always_inline bool lb_backend_active(__u32 id)
{
	struct sl_lb_backend *b = bpf_map_lookup_elem(&sl_lb_backends, &id);

	return b && b->state == SL_LB_BACKEND_ACTIVE;
}

/* sessionAffinity: ClientIP on the packet path: the client's address. */
static __always_inline __u32 lb_affinity_get(const struct sl_lb_entry *svc, const union sl_addr *client, __u64 now)
{
	struct sl_lb_affinity_key k = { .svc_id = svc->svc_id, .client = *client };
	struct sl_lb_affinity_val *v = bpf_map_lookup_elem(&sl_lb_affinity, &k);

	if (!v || now - v->last_used > (__u64)svc->affinity_timeout * NSEC_PER_SEC)
		return 0;
	if (!lb_backend_active(v->backend_id))
		return 0;
	v->last_used = now;
	return v->backend_id;
}

static __always_inline void lb_affinity_put(const struct sl_lb_entry *svc, const union sl_addr *client,
					    __u32 backend_id, __u64 now)
{
	struct sl_lb_affinity_key k = { .svc_id = svc->svc_id, .client = *client };
	struct sl_lb_affinity_val v = { .last_used = now, .backend_id = backend_id };

	bpf_map_update_elem(&sl_lb_affinity, &k, &v, BPF_ANY);
}

/* loadBalancerSourceRanges: may this client open a connection? A
 * frontend's ranges are of its own family (the agent writes no other). */
static __always_inline bool lb_src_allowed(const struct sl_lb_entry *svc, const union sl_addr *client,
					   const __u8 family)
{
	struct sl_lb_src_range_key k = {
		.prefixlen = family == AF_INET6 ? 32 + 128 : 32 + 32,
		.svc_id = bpf_htonl(svc->svc_id),
	};

	if (!(svc->flags & SL_LB_F_SRC_RANGE))
		return true;
	if (family == AF_INET6)
		k.addr = *client;
	else
		k.addr.addr4 = client->addr4;
	return bpf_map_lookup_elem(&sl_lb_src_range, &k) != NULL;
}

static __always_inline __u32 l4_csum_off(const struct sl_pkt *pkt)
{
	return pkt->l4_off + (pkt->proto == IPPROTO_TCP ? offsetof(struct tcphdr, check)
							: offsetof(struct udphdr, check));
}

/* The port half of a rewrite, the same in both families. */
static __always_inline int lb_rewrite_port(struct __sk_buff *skb, const struct sl_pkt *pkt, bool dst, __u32 csum,
					   __be16 old_port, __be16 new_port, __u64 mangled0)
{
	if (old_port == new_port)
		return 0;
	if (bpf_l4_csum_replace(skb, csum, old_port, new_port, mangled0 | 2) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, pkt->l4_off + (dst ? 2 : 0), &new_port, 2, 0);
}

/*
 * Rewrite the destination (dst = true) or source address and port, with
 * incremental checksum updates. Non-first fragments carry no L4 header:
 * only the IP header changes (the first fragment's L4 checksum covers the
 * pseudo-header for the whole datagram).
 */
static __always_inline int lb_rewrite(struct __sk_buff *skb, const struct sl_pkt *pkt, bool dst,
				      __be32 new_addr, __be16 new_port)
{
	__be32 old_addr = dst ? pkt->daddr.addr4 : pkt->saddr.addr4;
	__be16 old_port = dst ? pkt->dport : pkt->sport;
	__u32 addr_off = dst ? IP_DST_OFF : IP_SRC_OFF;
	bool l4 = !pkt->later_frag && (pkt->proto == IPPROTO_TCP || pkt->proto == IPPROTO_UDP);
	__u64 mangled0 = pkt->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (l4) {
		__u32 csum = l4_csum_off(pkt);

		if (bpf_l4_csum_replace(skb, csum, old_addr, new_addr, BPF_F_PSEUDO_HDR | mangled0 | 4) < 0)
			return -1;
		if (lb_rewrite_port(skb, pkt, dst, csum, old_port, new_port, mangled0) < 0)
			return -1;
	}
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_addr, new_addr, 4) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, addr_off, &new_addr, 4, 0);
}

/* lb_rewrite for IPv6: no header checksum; the L4 checksum's pseudo-header
 * changes by the diff of the two addresses. new_addr must not be pkt's
 * address being replaced. (Pointers, not copies: the stack is full.) */
static __always_inline int lb_rewrite6(struct __sk_buff *skb, const struct sl_pkt *pkt, bool dst,
				       const union sl_addr *new_addr, __be16 new_port)
{
	const union sl_addr *old = dst ? &pkt->daddr : &pkt->saddr;
	__be16 old_port = dst ? pkt->dport : pkt->sport;
	bool l4 = !pkt->later_frag && (pkt->proto == IPPROTO_TCP || pkt->proto == IPPROTO_UDP);
	__u64 mangled0 = pkt->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (l4) {
		__u32 csum = l4_csum_off(pkt);

		if (csum_replace_addr6(skb, csum, old, new_addr, BPF_F_PSEUDO_HDR | mangled0) < 0)
			return -1;
		if (lb_rewrite_port(skb, pkt, dst, csum, old_port, new_port, mangled0) < 0)
			return -1;
	}
	return bpf_skb_store_bytes(skb, dst ? IP6_DST_OFF : IP6_SRC_OFF, new_addr->addr6, 16, 0);
}

/* The rewrite of either family (a constant). */
static __always_inline int lb_rewrite_family(struct __sk_buff *skb, const struct sl_pkt *pkt, bool dst,
					     const union sl_addr *new_addr, __be16 new_port, const __u8 family)
{
	if (family == AF_INET6)
		return lb_rewrite6(skb, pkt, dst, new_addr, new_port);
	return lb_rewrite(skb, pkt, dst, new_addr->addr4, new_port);
}

/*
 * Translate a packet a pod sends to a service frontend. On LB_TRANSLATED,
 * pkt's destination is the backend and nat says what was translated.
 */
static __always_inline int lb_translate(struct __sk_buff *skb, __u32 ep_id, struct sl_pkt *pkt,
					struct ct_nat *nat, int *reason, const __u8 family)
{
	struct sl_lb_key key;
	struct sl_lb_entry *svc;
	struct sl_lb_backend *backend;
	struct sl_ct_key sk;
	struct sl_ct_entry *se;
	__u64 now;
	__u32 backend_id = 0;

	if (pkt->proto != IPPROTO_TCP && pkt->proto != IPPROTO_UDP)
		return LB_NONE;
	svc = lb_lookup(pkt, &key);
	if (!svc)
		return LB_NONE;
	now = bpf_ktime_get_ns();

	/* The connection's backend, if it has one already. */
	ct_key_from_pkt(&sk, ep_id, pkt, false);
	sk.scope = SL_CT_SCOPE_SERVICE;
	se = bpf_map_lookup_elem(&sl_ct, &sk);
	if (se && se->expires > now && se->backend_id &&
	    bpf_map_lookup_elem(&sl_lb_backends, &se->backend_id)) {
		bool reopen = pkt->proto == IPPROTO_TCP &&
			      (pkt->tcp_flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN &&
			      se->state >= SL_CT_CLOSING && se->state <= SL_CT_CLOSED;
		if (!reopen) {
			__u8 old = se->state;

			backend_id = se->backend_id;
			nat->nat_port = se->nat_port;
			__sync_fetch_and_add(&se->packets_orig, 1);
			__sync_fetch_and_add(&se->bytes_orig, skb->len);
			se->flags_orig |= pkt->tcp_flags;
			ct_refresh(se, pkt, pkt->proto == IPPROTO_TCP ?
				   tcp_next_state(se->state, pkt->tcp_flags, false, se->flags_orig, se->flags_reply) :
				   se->state, now);
			nat->svc_closed = old != SL_CT_CLOSED && se->state == SL_CT_CLOSED;
		}
	}

	if (!backend_id) {
		struct sl_ct_entry e = {};

		if (pkt->later_frag) {
			*reason = SL_DROP_FRAG_NOT_FOUND;
			return LB_DROP;
		}
		if (svc->count == 0) {
			if (svc->flags & SL_LB_F_NO_LOCAL) {
				*reason = SL_DROP_NO_LOCAL_BACKEND;
				return LB_DROP;
			}
			return LB_REJECT;
		}
		if (!lb_src_allowed(svc, &pkt->saddr, family)) {
			*reason = SL_DROP_NOT_IN_SRC_RANGE;
			return LB_DROP;
		}
		if (svc->flags & SL_LB_F_AFFINITY)
			backend_id = lb_affinity_get(svc, &pkt->saddr, now);
		if (!backend_id && (svc->flags & SL_LB_F_MAGLEV))
			backend_id = lb_maglev_backend(svc, flow_hash(addr_fold(&pkt->saddr, family),
								      addr_fold(&pkt->daddr, family),
								      ((__u32)pkt->sport << 16 | pkt->dport) ^ pkt->proto));
		if (!backend_id)
			backend_id = lb_slot_backend(&key, svc, bpf_get_prandom_u32());
		if (!backend_id) {
			*reason = SL_DROP_NO_SERVICE_BACKEND;
			return LB_DROP;
		}
		if (svc->flags & SL_LB_F_AFFINITY)
			lb_affinity_put(svc, &pkt->saddr, backend_id, now);
		e.created = now;
		e.origin = ep_id == 0 ? SL_DIR_INGRESS : SL_DIR_EGRESS;
		e.packets_orig = 1;
		e.bytes_orig = skb->len;
		e.flags_orig = pkt->tcp_flags;
		e.state = pkt->proto == IPPROTO_TCP ? tcp_initial_state(pkt->tcp_flags) : SL_CT_OPEN;
		e.expires = now + ct_lifetime(pkt, e.state);
		e.rev_nat_id = svc->svc_id;
		e.backend_id = backend_id;
		if (map_update(&sl_ct, &sk, &e, BPF_ANY) < 0) {
			*reason = SL_DROP_CT_MAP_FULL;
			return LB_DROP;
		}
	}

	backend = bpf_map_lookup_elem(&sl_lb_backends, &backend_id);
	if (!backend) {
		*reason = SL_DROP_NO_SERVICE_BACKEND;
		return LB_DROP;
	}
	nat->rev_nat_id = svc->svc_id;
	nat->backend_id = backend_id;
	nat->vip = pkt->daddr;
	nat->vport = pkt->dport;
	if (lb_rewrite_family(skb, pkt, true, &backend->addr, backend->port, family) < 0) {
		*reason = SL_DROP_WRITE_ERROR;
		return LB_DROP;
	}
	pkt->daddr = backend->addr;
	pkt->dport = backend->port;
	if (addr_eq(&backend->addr, &pkt->saddr, family)) {
		union sl_addr loopback = { .addr4 = SL_SERVICE_LOOPBACK };

		/* Hairpin: the client is its own backend. Its SERVICE entry
		 * says so: only then does a reply from the VIP belong to it
		 * (ct_track), never for a connection to another backend. */
		se = bpf_map_lookup_elem(&sl_ct, &sk);
		if (se)
			se->nat_flags |= SL_CT_NAT_HAIRPIN;
		if (family == AF_INET6)
			service_loopback6(&loopback);
		if (lb_rewrite_family(skb, pkt, false, &loopback, pkt->sport, family) < 0) {
			*reason = SL_DROP_WRITE_ERROR;
			return LB_DROP;
		}
		pkt->saddr = loopback;
		nat->flags |= SL_CT_NAT_HAIRPIN;
		return LB_HAIRPIN;
	}
	return LB_TRANSLATED;
}

/*
 * A reply of a translated connection: rewrite the backend back to the
 * frontend, and mirror the connection's state into its SERVICE entry so
 * that entry closes with the connection.
 */
static __always_inline int lb_rev_translate(struct __sk_buff *skb, __u32 ep_id, struct sl_pkt *pkt,
					    const struct ct_nat *nat, const __u8 family)
{
	struct sl_lb_vip *rn = bpf_map_lookup_elem(&sl_lb_revnat, &nat->rev_nat_id);
	struct sl_ct_key sk;
	struct sl_ct_entry *se;

	if (!rn)
		return 0;
	if (lb_rewrite_family(skb, pkt, false, &rn->addr, rn->port, family) < 0)
		return -1;
	pkt->saddr = rn->addr;
	pkt->sport = rn->port;

	/* The SERVICE entry is keyed by the original direction: client → VIP. */
	ct_key_from_pkt(&sk, ep_id, pkt, true);
	sk.scope = SL_CT_SCOPE_SERVICE;
	se = bpf_map_lookup_elem(&sl_ct, &sk);
	if (se && se->state != nat->state) {
		se->state = nat->state;
		se->expires = nat->expires;
	}
	return 0;
}

/*
 * The reply of a hairpinned connection, seen leaving the pod (backend side):
 * from the backend address to the service loopback. Rewrite it to come from
 * the VIP and go to the pod itself, as the client side expects.
 */
static __always_inline int lb_hairpin_reply(struct __sk_buff *skb, __u32 ep_id, struct sl_pkt *pkt,
					    const struct ct_nat *nat, const __u8 family)
{
	if (lb_rewrite_family(skb, pkt, true, &pkt->saddr, pkt->dport, family) < 0)
		return -1;
	pkt->daddr = pkt->saddr;
	return lb_rev_translate(skb, ep_id, pkt, nat, family);
}

/*
 * ICMP error rewriting. An error quotes the offending packet's IP header
 * and 8 bytes of its L4 header; the ICMP checksum covers the quote (no
 * pseudo-header), and the quoted IP header has a checksum of its own. The
 * quoted L4 checksum is left alone: receivers match errors to sockets by
 * addresses and ports and never check it (Linux and Cilium alike).
 */
#define ICMP_CSUM_OFF(pkt) ((pkt)->l4_off + offsetof(struct icmphdr, checksum))

/* The quoted packet's source (src) or destination port, TCP and UDP:
 * the same in both families. */
static __always_inline int icmp_inner_port_rewrite(struct __sk_buff *skb, const struct sl_pkt *pkt, bool src,
						   __be16 old_port, __be16 new_port)
{
	if ((pkt->proto != IPPROTO_TCP && pkt->proto != IPPROTO_UDP) || old_port == new_port)
		return 0;
	if (bpf_skb_store_bytes(skb, pkt->inner_l4_off + (src ? 0 : 2), &new_port, 2, 0) < 0 ||
	    bpf_l4_csum_replace(skb, ICMP_CSUM_OFF(pkt), old_port, new_port, 2) < 0)
		return -1;
	return 0;
}

/* Rewrite the quoted packet's source (src) or destination address and,
 * for TCP and UDP, port. */
static __always_inline int icmp_inner_rewrite(struct __sk_buff *skb, const struct sl_pkt *pkt, bool src,
					      __be32 old_addr, __be32 new_addr, __be16 old_port, __be16 new_port)
{
	__u32 in_csum = pkt->inner_off + offsetof(struct iphdr, check);
	__u32 addr_off = pkt->inner_off + (src ? offsetof(struct iphdr, saddr) : offsetof(struct iphdr, daddr));
	__be16 old_ipsum, new_ipsum;

	if (old_addr != new_addr) {
		if (bpf_skb_load_bytes(skb, in_csum, &old_ipsum, 2) < 0 ||
		    bpf_l3_csum_replace(skb, in_csum, old_addr, new_addr, 4) < 0 ||
		    bpf_skb_store_bytes(skb, addr_off, &new_addr, 4, 0) < 0 ||
		    bpf_skb_load_bytes(skb, in_csum, &new_ipsum, 2) < 0)
			return -1;
		if (bpf_l4_csum_replace(skb, ICMP_CSUM_OFF(pkt), old_addr, new_addr, 4) < 0 ||
		    bpf_l4_csum_replace(skb, ICMP_CSUM_OFF(pkt), old_ipsum, new_ipsum, 2) < 0)
			return -1;
	}
	return icmp_inner_port_rewrite(skb, pkt, src, old_port, new_port);
}

/* Rewrite the error's own (outer) source or destination address. */
static __always_inline int icmp_outer_rewrite(struct __sk_buff *skb, bool src, __be32 old_addr, __be32 new_addr)
{
	if (old_addr == new_addr)
		return 0;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_addr, new_addr, 4) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, src ? IP_SRC_OFF : IP_DST_OFF, &new_addr, 4, 0);
}

/*
 * An ICMP error about a translated packet (port unreachable, frag needed)
 * quotes the packet as translated: from the client to the backend. The
 * client's socket knows only the VIP, so rewrite the quoted destination
 * (and the error's source when the backend sent it) back to the frontend.
 */
static __always_inline int lb_rev_translate_icmp6(struct __sk_buff *skb, struct sl_pkt *pkt,
						  const struct sl_lb_vip *rn);

static __always_inline int lb_rev_translate_icmp(struct __sk_buff *skb, struct sl_pkt *pkt,
						 const struct ct_nat *nat, const __u8 family)
{
	struct sl_lb_vip *rn = bpf_map_lookup_elem(&sl_lb_revnat, &nat->rev_nat_id);
	__be32 backend = pkt->daddr.addr4;

	if (!rn)
		return 0;
	if (family == AF_INET6)
		return lb_rev_translate_icmp6(skb, pkt, rn);
	if (icmp_inner_rewrite(skb, pkt, false, backend, rn->addr.addr4, pkt->dport, rn->port) < 0)
		return -1;
	/* The error itself comes from the backend: make it come from the VIP. */
	if (pkt->outer_saddr.addr4 == backend && icmp_outer_rewrite(skb, true, backend, rn->addr.addr4) < 0)
		return -1;
	return 0;
}

/* icmp_inner_rewrite for ICMPv6 (RFC 4443): the quoted packet's source
 * (src) or destination address and, for TCP and UDP, port. The quoted IPv6
 * header has no checksum; the ICMPv6 checksum covers the whole message,
 * quote included, and a pseudo-header with the error's own addresses. */
static __always_inline int icmp6_inner_rewrite(struct __sk_buff *skb, const struct sl_pkt *pkt, bool src,
					       const union sl_addr *old_addr, const union sl_addr *new_addr,
					       __be16 old_port, __be16 new_port)
{
	__u32 addr_off = pkt->inner_off + (src ? offsetof(struct ipv6hdr, saddr) : offsetof(struct ipv6hdr, daddr));

	if (!addr6_eq(old_addr, new_addr)) {
		if (csum_replace_addr6(skb, ICMP_CSUM_OFF(pkt), old_addr, new_addr, 0) < 0 ||
		    bpf_skb_store_bytes(skb, addr_off, new_addr->addr6, 16, 0) < 0)
			return -1;
	}
	return icmp_inner_port_rewrite(skb, pkt, src, old_port, new_port);
}

/* icmp_outer_rewrite for ICMPv6: its checksum's pseudo-header changes too. */
static __always_inline int icmp6_outer_rewrite(struct __sk_buff *skb, const struct sl_pkt *pkt, bool src,
					       const union sl_addr *old_addr, const union sl_addr *new_addr)
{
	if (addr6_eq(old_addr, new_addr))
		return 0;
	if (csum_replace_addr6(skb, ICMP_CSUM_OFF(pkt), old_addr, new_addr, BPF_F_PSEUDO_HDR) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, src ? IP6_SRC_OFF : IP6_DST_OFF, new_addr->addr6, 16, 0);
}

/* lb_rev_translate_icmp for ICMPv6: the quoted destination (backend) back
 * to the frontend, and the error's source too when the backend sent it. */
static __always_inline int lb_rev_translate_icmp6(struct __sk_buff *skb, struct sl_pkt *pkt,
						  const struct sl_lb_vip *rn)
{
	const union sl_addr *backend = &pkt->daddr, *front = &rn->addr;

	if (icmp6_inner_rewrite(skb, pkt, false, backend, front, pkt->dport, rn->port) < 0)
		return -1;
	if (addr6_eq(&pkt->outer_saddr, backend) && icmp6_outer_rewrite(skb, pkt, true, backend, front) < 0)
		return -1;
	return 0;
}

/* Make the packet the frame eth (already turned back) carrying the len
 * bytes of ip_msg, and send it out of the interface it came in on. */
static __always_inline int lb_send_back(struct __sk_buff *skb, const struct ethhdr *eth, const void *ip_msg,
					__u32 len)
{
	if (bpf_skb_change_tail(skb, ETH_HLEN + len, 0) < 0)
		return SL_DROP;
	if (bpf_skb_store_bytes(skb, 0, eth, sizeof(*eth), 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, ip_msg, len, 0) < 0)
		return SL_DROP;
	return bpf_redirect(skb->ifindex, 0);
}

/* An ICMP port unreachable about the packet, as kube-proxy's REJECT sends:
 * a TCP connect() fails at once with ECONNREFUSED, UDP sees the error too. */
struct icmp_reject {
	struct iphdr ip;
	struct icmphdr icmp;
	__u8 orig[28]; /* the offending IP header and 8 bytes of its payload */
};

/*
 * Turn the packet into an ICMP port unreachable from the frontend back to
 * the client and send it out of the interface it came in on, toward the pod.
 * Packets with IP options are dropped instead (the reply would not fit the
 * fixed layout; kube-proxy's clients never send them).
 */
static __always_inline int lb_reject6(struct __sk_buff *skb);

static __always_inline int lb_reject(struct __sk_buff *skb, const __u8 family)
{
	struct icmp_reject r = {};
	struct ethhdr eth;

	if (family == AF_INET6)
		return lb_reject6(skb);
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0 ||
	    bpf_skb_load_bytes(skb, ETH_HLEN, r.orig, sizeof(r.orig)) < 0)
		return SL_DROP;
	if (r.orig[0] != 0x45)
		return SL_DROP;
	eth_swap(&eth);

	r.ip.version = 4;
	r.ip.ihl = 5;
	r.ip.ttl = 64;
	r.ip.protocol = IPPROTO_ICMP;
	r.ip.tot_len = bpf_htons(sizeof(r));
	__builtin_memcpy(&r.ip.saddr, &r.orig[16], 4); /* the frontend */
	__builtin_memcpy(&r.ip.daddr, &r.orig[12], 4); /* the client */
	r.ip.check = csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)&r.ip, sizeof(r.ip), 0));
	r.icmp.type = ICMP_DEST_UNREACH;
	r.icmp.code = ICMP_PORT_UNREACH;
	r.icmp.checksum = csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)&r.icmp,
						  sizeof(r.icmp) + sizeof(r.orig), 0));
	return lb_send_back(skb, &eth, &r, sizeof(r));
}

/* The same for IPv6 (ip6tables' REJECT with icmp6-port-unreachable): the
 * first 48 bytes of the packet are quoted, its IPv6 header and 8 bytes of
 * its TCP or UDP header; a packet with extension headers before them is
 * dropped instead (its quote would not carry the ports). */
struct icmp6_reject {
	struct ipv6hdr ip;
	struct icmphdr icmp; /* ICMPv6's header has the same 8-byte layout */
	__u8 orig[48];
};

/* Per-CPU room to build that reply in: the programs' stack has no 96 bytes
 * to spare at that depth. Not pinned: it holds nothing between runs. (Plain
 * bytes as the map's type: bpf2go cannot express ipv6hdr's anonymous union.) */
struct sl_reject6_buf {
	__u8 bytes[sizeof(struct icmp6_reject)];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct sl_reject6_buf);
	__uint(max_entries, 1);
} sl_reject6 SEC(".maps");

static __always_inline int lb_reject6(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct icmp6_reject *r = (struct icmp6_reject *)bpf_map_lookup_elem(&sl_reject6, &zero);
	struct ethhdr eth;
	__be32 pseudo[2];
	__s64 sum;

	if (!r)
		return SL_DROP;
	__builtin_memset(r, 0, sizeof(*r));
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0 ||
	    bpf_skb_load_bytes(skb, ETH_HLEN, r->orig, sizeof(r->orig)) < 0)
		return SL_DROP;
	/* orig[6]: the quoted header's next header. */
	if (r->orig[6] != IPPROTO_TCP && r->orig[6] != IPPROTO_UDP)
		return SL_DROP;
	eth_swap(&eth);

	r->ip.version = 6;
	r->ip.nexthdr = IPPROTO_ICMPV6;
	r->ip.hop_limit = 64;
	r->ip.payload_len = bpf_htons(sizeof(r->icmp) + sizeof(r->orig));
	__builtin_memcpy(&r->ip.saddr, &r->orig[24], 16); /* the frontend */
	__builtin_memcpy(&r->ip.daddr, &r->orig[8], 16);  /* the client */
	r->icmp.type = ICMPV6_DEST_UNREACH;
	r->icmp.code = ICMPV6_PORT_UNREACH;
	/* Pseudo-header (addresses, upper-layer length, next header), then
	 * the message. */
	pseudo[0] = bpf_htonl(sizeof(r->icmp) + sizeof(r->orig));
	pseudo[1] = bpf_htonl(IPPROTO_ICMPV6);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&r->ip.saddr, 32, 0);
	if (sum >= 0)
		sum = bpf_csum_diff(NULL, 0, pseudo, sizeof(pseudo), sum);
	if (sum >= 0)
		sum = bpf_csum_diff(NULL, 0, (__be32 *)&r->icmp, sizeof(r->icmp) + sizeof(r->orig), sum);
	if (sum < 0)
		return SL_DROP;
	r->icmp.checksum = csum_fold(sum);
	return lb_send_back(skb, &eth, r, sizeof(*r));
}

#endif /* SLUICE_LB_H */
