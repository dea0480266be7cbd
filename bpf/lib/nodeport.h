/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Service frontends reached from outside the node (NodePort, externalIPs,
 * LoadBalancer ingress IPs), on the node's uplinks.
 *
 *  client ──► uplink ingress: DNAT nodeIP:nodePort → backend
 *             ├ local backend: deliver; the reply leaves the uplink and
 *             │  uplink egress rewrites its source back to nodeIP:nodePort
 *             │  (externalTrafficPolicy: Local keeps the client address)
 *             └ remote backend (Cluster): SNAT to nodeIP:natPort, send it
 *                out again; the reply arrives at uplink ingress and is
 *                translated back to client ← nodeIP:nodePort before the
 *                node's stack sees it (it would answer with a RST)
 *
 * Uplink connections are tracked in CT under endpoint ID 0. Both families:
 * each program compiles one path per family (the family a constant), as
 * the endpoint programs do.
 */
#ifndef SLUICE_NODEPORT_H
#define SLUICE_NODEPORT_H

#include "lb.h"
#include "proxy.h"
#include "route.h"

/* The address to source-translate a connection leaving through ifindex:
 * that uplink's address of the family, as MASQUERADE would pick, or
 * (uplink not known, or without an IPv6 address) the address the client
 * addressed. */
static __always_inline union sl_addr snat_addr(__u32 ifindex, const union sl_addr *front, const __u8 family)
{
	struct sl_uplink *u = bpf_map_lookup_elem(&sl_uplinks, &ifindex);
	union sl_addr none = {};

	if (!u)
		return *front;
	if (family == AF_INET6)
		return addr6_eq(&u->ipv6, &none) ? *front : u->ipv6;
	return u->ipv4;
}

static __always_inline __u8 nat_family(const __u8 family)
{
	return family == AF_INET6 ? AF_INET6 : 0;
}

/*
 * SNAT ports. A mapping (node address, port, protocol) → (client, backend,
 * frontend) belongs to the connection whose SERVICE entry on the uplink
 * (client → frontend, endpoint 0) pins that port: it lives exactly as long
 * as that entry says the connection does. A mapping whose owner is gone,
 * expired, closed for longer than SNAT_CLOSE_GRACE_NS, pinned to another
 * port or sent to a backend that was removed is dead: allocation takes its
 * port over at once. The agent's GC deletes only the dead mappings that
 * allocation cannot reach (a port outside the range, an address no longer
 * translated to): it cannot delete a mapping only if unchanged, and a
 * takeover between its check and its delete would lose a connection.
 */

/* A closed connection keeps its port a little longer: the last ACK of a
 * FIN handshake, and retransmitted FINs, must still be translated. */
#define SNAT_CLOSE_GRACE_NS (2 * NSEC_PER_SEC)
/* Ports tried per new connection: SNAT_PROBES random ones (no clustering
 * at ordinary load: with 90% of the range held by live connections all 32
 * miss with odds 1 in 29), then SNAT_PROBES consecutive ones from a random
 * start, which find any hole of a small range and the gaps a busy one
 * leaves. */
#define SNAT_PROBES 32

/* The CT key of a mapping's owner: its SERVICE entry on the uplink. */
static __always_inline void snat_owner_key(struct sl_ct_key *k, const struct sl_nat_key *nk,
					   const struct sl_nat_val *v)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->ep_id = UPLINK_EP;
	k->family = nk->family == AF_INET6 ? AF_INET6 : AF_INET;
	k->proto = nk->proto;
	k->sport = v->client_port;
	k->dport = v->front_port;
	k->scope = SL_CT_SCOPE_SERVICE;
	k->saddr = v->client;
	k->daddr = v->front;
}

/* Does the mapping nk → v still belong to a connection? (The agent's GC
 * applies the same rule: pkg/datapath natMappingLive.) k is scratch space
 * for the owner's key: the uplink programs' stack is nearly full. */
static __always_inline bool snat_owner_live(const struct sl_nat_key *nk, const struct sl_nat_val *v, __u64 now,
					    struct sl_ct_key *k)
{
	struct sl_ct_entry *e;
	struct sl_lb_backend *b;

	snat_owner_key(k, nk, v);
	e = bpf_map_lookup_elem(&sl_ct, k);
	if (!e || e->expires <= now || e->nat_port != nk->port || !(e->nat_flags & SL_CT_NAT_SNAT))
		return false;
	if (e->state == SL_CT_CLOSED && now + ct_timeout_close_ns >= e->expires + SNAT_CLOSE_GRACE_NS)
		return false;
	b = bpf_map_lookup_elem(&sl_lb_backends, &e->backend_id);
	return b && addr6_eq(&b->addr, &v->backend) && b->port == v->backend_port;
}

/*
 * Pick a free SNAT port for the connection of pkt (its source is still
 * the client's; nat holds the frontend it addressed) and record the mapping. The port is
 * pinned in the connection's SERVICE entry before the mapping exists, so
 * another CPU never sees the new mapping without its owner. Returns the
 * port, or 0 when every probe found a live mapping or the map is full.
 */
static __always_inline __be16 snat_alloc(const struct sl_pkt *pkt, const union sl_addr *node,
					 const struct ct_nat *nat, const struct sl_lb_backend *b, const __u8 family)
{
	struct sl_nat_key k = { .addr = *node, .proto = pkt->proto, .family = nat_family(family) };
	struct sl_nat_val v = {
		.client = pkt->saddr, .client_port = pkt->sport,
		.backend = b->addr, .backend_port = b->port,
		.front = nat->vip, .front_port = nat->vport,
	};
	__u32 span = (__u32)snat_port_max - snat_port_min + 1;
	__u64 now = bpf_ktime_get_ns();
	struct sl_ct_key sk;
	struct sl_ct_entry *se;
	struct sl_nat_val *cur;
	__u32 start;
	int i;

	snat_owner_key(&sk, &k, &v);
	se = bpf_map_lookup_elem(&sl_ct, &sk);
	if (!se)
		return 0;
	se->nat_flags |= SL_CT_NAT_SNAT;
	start = bpf_get_prandom_u32();
#pragma clang loop unroll(disable)
	for (i = 0; i < 2 * SNAT_PROBES; i++) {
		__u32 off = i < SNAT_PROBES ? bpf_get_prandom_u32() : start + i;

		k.port = bpf_htons(snat_port_min + off % span);
		se->nat_port = k.port;
		if (bpf_map_update_elem(&sl_nat, &k, &v, BPF_NOEXIST) == 0)
			return k.port;
		cur = bpf_map_lookup_elem(&sl_nat, &k);
		if (cur && snat_owner_live(&k, cur, now, &sk))
			continue;
		/* A dead mapping: its port is free. (Two CPUs taking over the
		 * same dead port at the same instant is the one race left:
		 * the later one's mapping wins and the earlier connection's
		 * replies are lost, so it retransmits its SYN and allocates
		 * again.) */
		if (bpf_map_update_elem(&sl_nat, &k, &v, BPF_ANY) == 0)
			return k.port;
	}
	se->nat_port = 0;
	return 0;
}

/*
 * A reply from a remote backend to an SNATed connection: translate it
 * back to the client, and track the reply direction in the connection's
 * SERVICE entry (state, counters), so a closed connection gives its port
 * back. Returns 1 when translated, 0 when not ours, -1 on write errors.
 */
static __always_inline int snat_reply(struct __sk_buff *skb, struct sl_pkt *pkt, const __u8 family)
{
	struct sl_nat_key k = { .addr = pkt->daddr, .port = pkt->dport, .proto = pkt->proto,
				.family = nat_family(family) };
	struct sl_nat_val *v = bpf_map_lookup_elem(&sl_nat, &k);
	struct sl_ct_key sk;
	struct sl_ct_entry *se;

	if (!v || !addr_eq(&v->backend, &pkt->saddr, family) || v->backend_port != pkt->sport)
		return 0;
	snat_owner_key(&sk, &k, v);
	se = bpf_map_lookup_elem(&sl_ct, &sk);
	if (se && se->nat_port == k.port) {
		__u64 now = bpf_ktime_get_ns();

		__sync_fetch_and_add(&se->packets_reply, 1);
		__sync_fetch_and_add(&se->bytes_reply, skb->len);
		if (pkt->proto == IPPROTO_TCP) {
			__u8 old = se->state;

			se->flags_reply |= pkt->tcp_flags;
			ct_refresh(se, pkt, tcp_next_state(se->state, pkt->tcp_flags, true,
							   se->flags_orig, se->flags_reply), now);
			if (old != SL_CT_CLOSED && se->state == SL_CT_CLOSED)
				emit_conn_end(skb, &sk, se, pkt->tcp_flags);
		} else {
			ct_refresh(se, pkt, SL_CT_ESTABLISHED, now);
		}
	}
	if (lb_rewrite_family(skb, pkt, false, &v->front, v->front_port, family) < 0 ||
	    lb_rewrite_family(skb, pkt, true, &v->client, v->client_port, family) < 0)
		return -1;
	pkt->saddr = v->front;
	pkt->sport = v->front_port;
	pkt->daddr = v->client;
	pkt->dport = v->client_port;
	return 1;
}

/*
 * An ICMP error sent to the node about a packet of an SNATed connection
 * (the remote backend's port unreachable, a router's "fragmentation
 * needed" on the way to it) quotes node:natport → backend. Hand it to the
 * client, quoting the packet as the client sent it (client → frontend),
 * and from the frontend when the backend itself sent it. Returns 1 when
 * translated (pkt is then the error's own view, for routing), 0 when it
 * is not about an SNATed connection, -1 on write errors.
 */
static __always_inline int snat_icmp_error6(struct __sk_buff *skb, struct sl_pkt *pkt,
					    const struct sl_nat_val *v)
{
	if (icmp6_inner_rewrite(skb, pkt, true, &pkt->saddr, &v->client, pkt->sport, v->client_port) < 0 ||
	    icmp6_inner_rewrite(skb, pkt, false, &pkt->daddr, &v->front, pkt->dport, v->front_port) < 0 ||
	    icmp6_outer_rewrite(skb, pkt, false, &pkt->outer_daddr, &v->client) < 0)
		return -1;
	pkt->outer_daddr = v->client;
	if (addr6_eq(&pkt->outer_saddr, &v->backend)) {
		if (icmp6_outer_rewrite(skb, pkt, true, &v->backend, &v->front) < 0)
			return -1;
		pkt->outer_saddr = v->front;
	}
	pkt_icmp_outer(pkt);
	return 1;
}

static __always_inline int snat_icmp_error(struct __sk_buff *skb, struct sl_pkt *pkt, const __u8 family)
{
	struct sl_nat_key k = { .addr = pkt->saddr, .port = pkt->sport, .proto = pkt->proto,
				.family = nat_family(family) };
	struct sl_nat_val *v;

	if (!addr_eq(&pkt->outer_daddr, &pkt->saddr, family))
		return 0;
	v = bpf_map_lookup_elem(&sl_nat, &k);
	if (!v || !addr_eq(&v->backend, &pkt->daddr, family) || v->backend_port != pkt->dport)
		return 0;
	if (family == AF_INET6)
		return snat_icmp_error6(skb, pkt, v);
	if (icmp_inner_rewrite(skb, pkt, true, pkt->saddr.addr4, v->client.addr4, pkt->sport, v->client_port) < 0 ||
	    icmp_inner_rewrite(skb, pkt, false, pkt->daddr.addr4, v->front.addr4, pkt->dport, v->front_port) < 0 ||
	    icmp_outer_rewrite(skb, false, pkt->outer_daddr.addr4, v->client.addr4) < 0)
		return -1;
	pkt->outer_daddr.addr4 = v->client.addr4;
	if (pkt->outer_saddr.addr4 == v->backend.addr4) {
		if (icmp_outer_rewrite(skb, true, v->backend.addr4, v->front.addr4) < 0)
			return -1;
		pkt->outer_saddr.addr4 = v->front.addr4;
	}
	pkt_icmp_outer(pkt);
	return 1;
}

/*
 * An ICMP error leaving through the uplink about an external connection
 * to a local backend: the backend's port unreachable, or the node's own
 * "fragmentation needed" for a packet too big for the backend's link. It
 * quotes the packet as translated (client → backend): quote the frontend
 * the client addressed instead.
 */
static __always_inline int host_egress_icmp_error(struct __sk_buff *skb, struct sl_pkt *pkt, const __u8 family)
{
	struct ct_nat nat = {};
	struct sl_ct_key key;
	struct sl_ct_entry *e;

	ct_key_from_pkt(&key, UPLINK_EP, pkt, false);
	e = bpf_map_lookup_elem(&sl_ct, &key);
	if (!e || !e->rev_nat_id || e->expires <= bpf_ktime_get_ns())
		return SL_NEXT;
	nat.rev_nat_id = e->rev_nat_id;
	if (lb_rev_translate_icmp(skb, pkt, &nat, family) < 0)
		return drop_flags(skb, SL_DIR_EGRESS, SL_DROP_WRITE_ERROR, UPLINK_EP, pkt, SL_EVENT_F_TRACKED);
	count_skb(skb, SL_METRIC_RELATED, SL_DIR_EGRESS, 0);
	return SL_NEXT;
}

/* host_to_proxy's answer when the packet is not one to hand over. */
#define HOST_NOT_PROXIED (-2)

/*
 * A TCP connection from elsewhere to a pod of this node whose ingress
 * policy redirects it: handed to the node's proxy here, where it enters
 * the node (its own endpoint cannot). Its CT entry on the uplink (endpoint
 * 0) holds the proxy port for the packets that follow; the proxy's replies
 * update it at uplink egress. Returns a tc verdict, or HOST_NOT_PROXIED.
 */
static __always_inline int host_to_proxy(struct __sk_buff *skb, struct sl_pkt *pkt, struct ct_nat *nat)
{
	struct policy_result pol = {};
	struct event_policy ev;
	struct sl_ct_key key;
	struct sl_ct_entry *e;
	__u32 ep_id;
	int reason;

	ct_key_from_pkt(&key, UPLINK_EP, pkt, false);
	e = bpf_map_lookup_elem(&sl_ct, &key);
	if (e && e->expires > bpf_ktime_get_ns() && (e->policy_flags & SL_CT_POL_TO_PROXY)) {
		ct_track(UPLINK_EP, pkt, SL_DIR_INGRESS, skb->len, nat);
		reason = proxy_assign(skb, pkt, e->proxy_port);
		if (reason != SL_DROP_NONE)
			return drop_flags(skb, SL_DIR_INGRESS, reason, UPLINK_EP, pkt, SL_EVENT_F_TRACKED);
		count_skb(skb, SL_METRIC_FORWARDED, SL_DIR_INGRESS, 0);
		return SL_NEXT;
	}
	if ((pkt->tcp_flags & (TCPF_SYN | TCPF_ACK)) != TCPF_SYN)
		return HOST_NOT_PROXIED;
	/* Forwarded from elsewhere: a node address is the remote node, not
	 * this host (as peer_identity has it). */
	pol.peer_id = ipcache_identity(AF_INET, &pkt->saddr, &ep_id);
	if (pol.peer_id == SL_ID_HOST)
		pol.peer_id = SL_ID_WORLD;
	pol.proxy_port = proxy_port_of_destination(pkt->daddr.addr4, pkt->proto, pkt->dport, pkt->saddr.addr4,
						   pol.peer_id);
	if (!pol.proxy_port)
		return HOST_NOT_PROXIED;
	nat->cur_rev = policy_rev_current();
	if (ct_track(UPLINK_EP, pkt, SL_DIR_INGRESS, skb->len, nat) == CT_FULL)
		return drop(skb, SL_DIR_INGRESS, SL_DROP_CT_MAP_FULL, UPLINK_EP, pkt);
	pol.verdict = SL_VERDICT_REDIRECT;
	pol.flags = SL_CT_POL_TO_PROXY;
	policy_remember(&key, nat->cur_rev, &pol);
	ev.src_identity = pol.peer_id;
	ev.dst_identity = 0;
	ev.rule = 0;
	ev.verdict = SL_VERDICT_REDIRECT;
	ev.proxy_port = pol.proxy_port;
	reason = proxy_assign(skb, pkt, pol.proxy_port);
	if (reason != SL_DROP_NONE) {
		bpf_map_delete_elem(&sl_ct, &key);
		count_skb(skb, SL_METRIC_DROPPED, SL_DIR_INGRESS, reason);
		emit_event_pol(skb, SL_EVENT_DROP, SL_DIR_INGRESS, reason, UPLINK_EP, pkt, 0, NULL, 0, &ev,
			       SL_EVENT_F_TRACKED);
		return SL_DROP;
	}
	count_skb(skb, SL_METRIC_POLICY_REDIRECT, SL_DIR_INGRESS, 0);
	emit_event_pol(skb, SL_EVENT_CONN_NEW, SL_DIR_INGRESS, 0, UPLINK_EP, pkt, 0, NULL, 0, &ev, SL_EVENT_F_TRACKED);
	count_skb(skb, SL_METRIC_FORWARDED, SL_DIR_INGRESS, 0);
	return SL_NEXT;
}

/* A parsed packet of family (a constant) entering the node. */
static __always_inline int host_ingress_ip(struct __sk_buff *skb, struct sl_pkt *pkt, struct ct_nat *nat,
					   const __u8 family)
{
	struct bpf_fib_lookup fib;
	struct sl_lb_backend *b;
	union sl_addr node;
	int reason = SL_DROP_NONE, lb, ret;

	if (pkt->icmp_error) {
		ret = snat_icmp_error(skb, pkt, family);
		if (ret < 0)
			return drop_flags(skb, SL_DIR_INGRESS, SL_DROP_WRITE_ERROR, UPLINK_EP, pkt, SL_EVENT_F_TRACKED);
		if (ret == 0)
			return SL_NEXT;
		count_skb(skb, SL_METRIC_RELATED, SL_DIR_INGRESS, 0);
		if (fib_redirect(skb, pkt, family) < 0)
			return drop_reply(skb, SL_DIR_INGRESS, SL_DROP_FIB_LOOKUP_FAILED, UPLINK_EP, pkt);
		return TC_ACT_REDIRECT;
	}
	if (pkt->proto != IPPROTO_TCP && pkt->proto != IPPROTO_UDP)
		return SL_NEXT;
	/* Before any rewrite: the fragments that follow carry the header as
	 * it arrived. */
	if (pkt->first_frag && !frag_remember(skb, pkt, family))
		count_skb(skb, SL_METRIC_FRAG_TABLE_FULL, SL_DIR_INGRESS, 0);

	/* The proxy takes IPv4 only: an IPv6 connection its policy would
	 * redirect fails closed at the backend's endpoint. */
	if (family == AF_INET && pkt->proto == IPPROTO_TCP && proxy_in_use()) {
		ret = host_to_proxy(skb, pkt, nat);
		if (ret != HOST_NOT_PROXIED)
			return ret;
	}

	ret = snat_reply(skb, pkt, family);
	if (ret < 0)
		return drop_reply(skb, SL_DIR_INGRESS, SL_DROP_WRITE_ERROR, UPLINK_EP, pkt);
	if (ret > 0) {
		count_skb(skb, SL_METRIC_FORWARDED, SL_DIR_INGRESS, 0);
		if (fib_redirect(skb, pkt, family) < 0)
			return drop_reply(skb, SL_DIR_INGRESS, SL_DROP_FIB_LOOKUP_FAILED, UPLINK_EP, pkt);
		return TC_ACT_REDIRECT;
	}

	{
		struct sl_lb_key key;
		struct sl_lb_entry *svc = lb_lookup(pkt, &key);

		if (!svc || !(svc->flags & SL_LB_F_EXTERNAL))
			return SL_NEXT;
	}
	node = pkt->daddr;
	lb = lb_translate(skb, UPLINK_EP, pkt, nat, &reason, family);
	if (lb == LB_REJECT) {
		count_skb(skb, SL_METRIC_DROPPED, SL_DIR_INGRESS, SL_DROP_NO_SERVICE_BACKEND);
		emit_event(skb, SL_EVENT_DROP, SL_DIR_INGRESS, SL_DROP_NO_SERVICE_BACKEND, UPLINK_EP, pkt, 0, NULL, 0);
		return lb_reject(skb, family);
	}
	if (lb == LB_DROP)
		return drop(skb, SL_DIR_INGRESS, reason, UPLINK_EP, pkt);
	if (lb != LB_TRANSLATED)
		return SL_NEXT;

	b = bpf_map_lookup_elem(&sl_lb_backends, &nat->backend_id);
	if (!b)
		return drop(skb, SL_DIR_INGRESS, SL_DROP_NO_SERVICE_BACKEND, UPLINK_EP, pkt);
	if (b->flags & SL_LB_BACKEND_F_LOCAL) {
		/* Deliver; the reply is translated back at uplink egress. */
		nat->cur_rev = policy_rev_current();
		ret = ct_track(UPLINK_EP, pkt, SL_DIR_INGRESS, skb->len, nat);
		if (ret == CT_FULL)
			return drop(skb, SL_DIR_INGRESS, SL_DROP_CT_MAP_FULL, UPLINK_EP, pkt);
		if (family == AF_INET && ret == CT_NEW && pkt->proto == IPPROTO_TCP && proxy_in_use()) {
			/* The backend's ingress policy hands it to the proxy: here,
			 * where it enters the node, after translation (the proxy
			 * sees the backend as the original destination). */
			struct policy_result pol = {};
			struct sl_ct_key key;
			__u32 ep_id;

			pol.peer_id = ipcache_identity(AF_INET, &pkt->saddr, &ep_id);
			if (pol.peer_id == SL_ID_HOST)
				pol.peer_id = SL_ID_WORLD;
			pol.proxy_port = proxy_port_of_destination(pkt->daddr.addr4, pkt->proto, pkt->dport,
								   pkt->saddr.addr4, pol.peer_id);
			if (pol.proxy_port) {
				pol.verdict = SL_VERDICT_REDIRECT;
				pol.flags = SL_CT_POL_TO_PROXY;
				ct_key_from_pkt(&key, UPLINK_EP, pkt, false);
				policy_remember(&key, nat->cur_rev, &pol);
				nat->policy_flags = SL_CT_POL_TO_PROXY;
				nat->proxy_port = pol.proxy_port;
				count_skb(skb, SL_METRIC_POLICY_REDIRECT, SL_DIR_INGRESS, 0);
			}
		}
		if (ret == CT_NEW)
			emit_event(skb, SL_EVENT_CONN_NEW, SL_DIR_INGRESS, 0, UPLINK_EP, pkt,
				   nat->rev_nat_id, &nat->vip, nat->vport);
		if (family == AF_INET && (nat->policy_flags & SL_CT_POL_TO_PROXY)) {
			reason = proxy_assign(skb, pkt, nat->proxy_port);
			if (reason != SL_DROP_NONE)
				return drop_flags(skb, SL_DIR_INGRESS, reason, UPLINK_EP, pkt, SL_EVENT_F_TRACKED);
		}
		count_skb(skb, SL_METRIC_FORWARDED, SL_DIR_INGRESS, 0);
		return SL_NEXT;
	}

	/* A remote backend: the reply must come back through this node, so
	 * the source becomes the address of the uplink the packet leaves by.
	 * The route toward the backend does not depend on the source. */
	ret = fib_lookup_family(skb, pkt, &fib, family);
	if (ret != BPF_FIB_LKUP_RET_SUCCESS && ret != BPF_FIB_LKUP_RET_NO_NEIGH)
		return drop(skb, SL_DIR_INGRESS, SL_DROP_FIB_LOOKUP_FAILED, UPLINK_EP, pkt);
	node = snat_addr(fib.ifindex, &node, family);
	if (!nat->nat_port) {
		nat->nat_port = snat_alloc(pkt, &node, nat, b, family);
		if (!nat->nat_port)
			return drop(skb, SL_DIR_INGRESS, SL_DROP_NAT_PORTS_EXHAUSTED, UPLINK_EP, pkt);
		emit_event(skb, SL_EVENT_CONN_NEW, SL_DIR_INGRESS, 0, UPLINK_EP, pkt,
			   nat->rev_nat_id, &nat->vip, nat->vport);
	} else if (nat->svc_closed) {
		/* The client closed the connection (RST, or the second FIN). */
		struct sl_ct_key sk;
		struct sl_ct_entry *se;

		ct_key_from_pkt(&sk, UPLINK_EP, pkt, false);
		sk.daddr = nat->vip;
		sk.dport = nat->vport;
		sk.scope = SL_CT_SCOPE_SERVICE;
		se = bpf_map_lookup_elem(&sl_ct, &sk);
		if (se)
			emit_conn_end(skb, &sk, se, pkt->tcp_flags);
	}
	if (lb_rewrite_family(skb, pkt, false, &node, nat->nat_port, family) < 0)
		return drop(skb, SL_DIR_INGRESS, SL_DROP_WRITE_ERROR, UPLINK_EP, pkt);
	pkt->saddr = node;
	pkt->sport = nat->nat_port;
	count_skb(skb, SL_METRIC_FORWARDED, SL_DIR_INGRESS, 0);
	if (fib_forward(skb, &fib, ret) < 0)
		return drop(skb, SL_DIR_INGRESS, SL_DROP_FIB_LOOKUP_FAILED, UPLINK_EP, pkt);
	return TC_ACT_REDIRECT;
}


/* Replies of local backends to external clients leave through the uplink:
 * give them the frontend's address back. */
static __always_inline int host_egress_ip(struct __sk_buff *skb, struct sl_pkt *pkt, struct ct_nat *nat,
					  const __u8 family)
{
	struct sl_ct_key key;
	struct sl_ct_entry *e;

	if (pkt->icmp_error)
		return host_egress_icmp_error(skb, pkt, family);
	if (pkt->proto != IPPROTO_TCP && pkt->proto != IPPROTO_UDP)
		return SL_NEXT;
	/* Only replies of uplink connections: look before tracking, so the
	 * node's own traffic never creates uplink entries. */
	ct_key_from_pkt(&key, UPLINK_EP, pkt, true);
	e = bpf_map_lookup_elem(&sl_ct, &key);
	if (!e || !(e->rev_nat_id || (e->policy_flags & SL_CT_POL_TO_PROXY)))
		return SL_NEXT;
	/* A translated connection's reply, or the proxy's answer to a client
	 * it was handed (tracked so the connection stays established). */
	if (ct_track(UPLINK_EP, pkt, SL_DIR_EGRESS, skb->len, nat) != CT_REPLY || !nat->rev_nat_id)
		return SL_NEXT;
	if (lb_rev_translate(skb, UPLINK_EP, pkt, nat, family) < 0)
		return drop_reply(skb, SL_DIR_EGRESS, SL_DROP_WRITE_ERROR, UPLINK_EP, pkt);
	count_skb(skb, SL_METRIC_FORWARDED, SL_DIR_EGRESS, 0);
	return SL_NEXT;
}

/* An uplink's program, ingress or egress (a constant): one path per family. */
static __always_inline int host_prog(struct __sk_buff *skb, const bool ingress)
{
	struct sl_scratch *st = scratch();
	enum sl_l3 l3 = SL_L3_OTHER;
	int reason;

	if (!st)
		return SL_NEXT; /* never: the array has its one entry */
	__builtin_memset(&st->nat, 0, sizeof(st->nat));
	reason = parse_packet(skb, &st->pkt, &l3);
	/* The uplink carries everything the node receives and sends: only
	 * service traffic is ours; anything else, malformed or not, is the
	 * stack's. (A later fragment whose first one was not seen is the
	 * stack's too: it may be for the node itself; so is IPv6 neighbour
	 * discovery.) */
	if (reason != SL_DROP_NONE)
		return SL_NEXT;
	if (l3 == SL_L3_IPV4)
		return ingress ? host_ingress_ip(skb, &st->pkt, &st->nat, AF_INET) :
				 host_egress_ip(skb, &st->pkt, &st->nat, AF_INET);
	if (l3 == SL_L3_IPV6 && !st->pkt.nd)
		return ingress ? host_ingress_ip(skb, &st->pkt, &st->nat, AF_INET6) :
				 host_egress_ip(skb, &st->pkt, &st->nat, AF_INET6);
	return SL_NEXT;
}

static __always_inline int host_ingress(struct __sk_buff *skb)
{
	return host_prog(skb, true);
}

static __always_inline int host_egress(struct __sk_buff *skb)
{
	return host_prog(skb, false);
}

#endif /* SLUICE_NODEPORT_H */
