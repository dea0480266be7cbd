/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * A pod's packets at its host-side interface, both ways: parse, anti-spoof,
 * service translation (egress), connection tracking, policy (decision,
 * re-decision, revocation), reverse translation, events and counters.
 * handle() is the whole path; bpf_endpoint.c attaches it.
 */
#ifndef SLUICE_ENDPOINT_H
#define SLUICE_ENDPOINT_H

#include "common.h"
#include "maps.h"
#include "parse.h"
#include "metrics.h"
#include "events.h"
#include "conntrack.h"
#include "lb.h"
#include "policy.h"
#include "proxy.h"
#include "route.h"

/* The policy decision of pkt's connection, as events report it. */
static __always_inline void event_pol(struct event_policy *ep_ev, const struct sl_endpoint *ep, __u8 dir,
				      const struct policy_result *pol)
{
	ep_ev->src_identity = dir == SL_DIR_EGRESS ? ep->identity : pol->peer_id;
	ep_ev->dst_identity = dir == SL_DIR_EGRESS ? pol->peer_id : ep->identity;
	ep_ev->rule = pol->rule;
	ep_ev->verdict = pol->verdict;
	ep_ev->proxy_port = pol->proxy_port;
}

/*
 * May the pod send from pkt's source? IPv4: only from its address (any,
 * while the agent knows it none). IPv6: only from its address or a
 * link-local one (fe80::/10), which its interface makes for itself and
 * which never leaves the link; a pod with no IPv6 address has only those.
 */
static __always_inline bool source_allowed(const struct sl_endpoint *ep, const struct sl_pkt *pkt, const __u8 family)
{
	const __u32 *a = (const __u32 *)pkt->outer_saddr.addr6, *b = (const __u32 *)ep->ipv6.addr6;

	if (family == AF_INET)
		return !(ep->flags & SL_EP_F_HAS_IPV4) || pkt->outer_saddr.addr4 == ep->ipv4.addr4;
	if (pkt->outer_saddr.addr6[0] == 0xfe && (pkt->outer_saddr.addr6[1] & 0xc0) == 0x80)
		return true;
	return (ep->flags & SL_EP_F_HAS_IPV6) && a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

/*
 * An established connection admitted under an older policy revision:
 * decide it again, in its original direction. Returns SL_DROP_NONE if it
 * may go on (its entry then carries the current revision).
 */
static __always_inline int policy_recheck(const struct sl_endpoint *ep, const struct sl_pkt *pkt, int ct,
					  const struct ct_nat *nat, struct policy_result *pol, const __u8 family)
{
	struct sl_ct_key key;
	bool reply = ct == CT_REPLY;
	/* The original direction's tuple: the packet's, or its reverse. */
	const union sl_addr *osrc = reply ? &pkt->daddr : &pkt->saddr;
	const union sl_addr *odst = reply ? &pkt->saddr : &pkt->daddr;
	__be16 odport = reply ? pkt->sport : pkt->dport;
	__u8 odir = nat->origin;
	int reason;

	if (nat->policy_flags & SL_CT_POL_FROM_PROXY) {
		/* The proxy's own connection: judged where it was handed over. */
		pol->verdict = SL_VERDICT_ALLOW;
		pol->flags = SL_CT_POL_FROM_PROXY;
		pol->rule = 0;
		pol->peer_id = SL_ID_HOST;
		pol->from_host = 1;
	} else {
		reason = policy_check(ep, odir, pkt->proto, odport, family, odir == SL_DIR_EGRESS ? odst : osrc,
				      nat->policy_flags & SL_CT_POL_FROM_HOST, pol);
		if (reason != SL_DROP_NONE)
			return reason;
	}
	if (nat->policy_flags & SL_CT_POL_TO_PROXY) {
		/* Handed to the proxy: still by the same port? A connection
		 * the proxy holds cannot be handed back: any change cuts it,
		 * and the client's next one meets the new policy. */
		__u16 pp = pol->verdict == SL_VERDICT_REDIRECT ? pol->proxy_port :
			   proxy_port_of_destination(odst->addr4, pkt->proto, odport, osrc->addr4, ep->identity);

		if (pp != nat->proxy_port)
			return SL_DROP_POLICY_REVOKED;
		pol->verdict = SL_VERDICT_REDIRECT;
		pol->proxy_port = pp;
		pol->flags = SL_CT_POL_TO_PROXY;
	}
	ct_key_from_pkt(&key, ep->ep_id, pkt, reply);
	policy_remember(&key, nat->cur_rev, pol);
	return SL_DROP_NONE;
}

/* Cut a revoked connection: forget it, and reset both ends of a TCP one. */
static __always_inline int policy_revoke(struct __sk_buff *skb, const struct sl_endpoint *ep, __u8 dir,
					 const struct sl_pkt *pkt, int ct, struct ct_nat *nat,
					 const struct policy_result *pol, const __u8 family)
{
	struct event_policy ev;
	struct sl_ct_key key;
	__be16 back_port = pkt->dport, fwd_port = pkt->sport;

	ct_key_from_pkt(&key, ep->ep_id, pkt, ct == CT_REPLY);
	bpf_map_delete_elem(&sl_ct, &key);
	event_pol(&ev, ep, dir, pol);
	count_skb(skb, SL_METRIC_DROPPED, dir, SL_DROP_POLICY_REVOKED);
	emit_event_pol(skb, SL_EVENT_DROP, dir, SL_DROP_POLICY_REVOKED, ep->ep_id, pkt, 0, NULL, 0, &ev,
		       ct_event_flags(ct));
	if (pkt->proto != IPPROTO_TCP || (pkt->tcp_flags & TCPF_RST))
		return (pkt->tcp_flags & TCPF_RST) ? SL_NEXT : SL_DROP;

	nat->rst_back = pkt->daddr;
	nat->rst_fwd = pkt->saddr;
	/* The pod knows a translated peer by its service address. */
	if (nat->rev_nat_id) {
		if (dir == SL_DIR_EGRESS && ct == CT_ESTABLISHED) {
			nat->rst_back = nat->vip;
			back_port = nat->vport;
		} else if (dir == SL_DIR_INGRESS && ct == CT_REPLY) {
			struct sl_lb_vip *rn = bpf_map_lookup_elem(&sl_lb_revnat, &nat->rev_nat_id);

			if (rn) {
				nat->rst_fwd = rn->addr;
				fwd_port = rn->port;
			}
		}
	}
	if (policy_reset(skb, dir, pkt, family, &nat->rst_back, back_port, &nat->rst_fwd, fwd_port) < 0)
		return SL_DROP;
	return SL_NEXT;
}

/*
 * A parsed IP packet of family (a constant: each family's path is compiled
 * on its own, so IPv4's code and its verification are what they were
 * before IPv6, and IPv6's carries none of the IPv4-only service and proxy
 * code). reason is the parser's verdict.
 */
static __always_inline int handle_ip(struct __sk_buff *skb, __u8 dir, struct sl_pkt *pkt, struct ct_nat *nat,
				     int reason, const __u8 family)
{
	struct sl_endpoint *ep;
	struct policy_result pol = {};
	struct event_policy ev;
	__u32 ifindex = skb->ifindex;
	__u32 ep_id = 0;
	__u8 evflags = SL_EVENT_F_TRACKED;
	int ct, lb = LB_NONE;

	ep = bpf_map_lookup_elem(&sl_endpoints, &ifindex);
	if (ep)
		ep_id = ep->ep_id;
	if (reason != SL_DROP_NONE)
		return drop(skb, dir, reason, ep_id, pkt);
	if (!ep) {
		/* Attached but not (or no longer) an endpoint: the agent is
		 * between detach steps. Counted, not tracked. */
		count_skb(skb, SL_METRIC_NO_ENDPOINT, dir, 0);
		return SL_NEXT;
	}

	if (dir == SL_DIR_EGRESS && enable_antispoof && !source_allowed(ep, pkt, family))
		return drop(skb, dir, SL_DROP_INVALID_SOURCE_IP, ep_id, pkt);

	if (pkt->first_frag && !frag_remember(skb, pkt, family))
		count_skb(skb, SL_METRIC_FRAG_TABLE_FULL, dir, 0);

	/* Service translation happens where the client's packets leave it,
	 * before CT: policy and CT then see the real backend. Both families:
	 * a pod without socket LB (or a socket connected before it attached)
	 * reaches IPv4 and IPv6 frontends alike. */
	if (dir == SL_DIR_EGRESS && !pkt->icmp_error) {
		lb = lb_translate(skb, ep_id, pkt, nat, &reason, family);

		if (lb == LB_REJECT) {
			count_skb(skb, SL_METRIC_DROPPED, dir, SL_DROP_NO_SERVICE_BACKEND);
			emit_event(skb, SL_EVENT_DROP, dir, SL_DROP_NO_SERVICE_BACKEND, ep_id, pkt, 0, NULL, 0);
			return lb_reject(skb, family);
		}
		if (lb == LB_DROP)
			return drop(skb, dir, reason, ep_id, pkt);
		if (lb == LB_HAIRPIN)
			nat->redirect_back = 1;
	}

	/* Read once: an entry made now carries the revision its decision
	 * was made under, so a change racing with it is checked again. */
	nat->cur_rev = policy_rev_current();
	ct = ct_track(ep_id, pkt, dir, skb->len, nat);
	switch (ct) {
	case CT_FULL:
		return drop(skb, dir, SL_DROP_CT_MAP_FULL, ep_id, pkt);
	case CT_NEW:
		/* An ICMP error about no connection this endpoint tracks is not
		 * related to anything: it is new traffic of its own, judged by
		 * policy like any other (ICMP from its sender to its receiver:
		 * only rules without ports allow it), and never tracked, since
		 * nothing answers an error. */
		if (pkt->icmp_error) {
			pkt_icmp_outer(pkt);
			evflags = 0;
		}
		if (dir == SL_DIR_INGRESS && skb->ingress_ifindex == 0 && skb->mark == SL_MARK_FROM_PROXY) {
			/* The node's proxy, opening the connection a client
			 * was redirected for: the destination's policy was
			 * applied to that client where it was handed over. */
			pol.verdict = SL_VERDICT_ALLOW;
			pol.flags = SL_CT_POL_FROM_PROXY;
			pol.peer_id = SL_ID_HOST;
			pol.from_host = 1;
			reason = SL_DROP_NONE;
		} else {
			/* From the node's own stack: the packet came in on no interface. */
			reason = policy_check(ep, dir, pkt->proto, pkt->dport, family,
					      dir == SL_DIR_EGRESS ? &pkt->daddr : &pkt->saddr,
					      dir == SL_DIR_INGRESS && skb->ingress_ifindex == 0, &pol);
			if (reason == SL_DROP_NONE && pol.verdict == SL_VERDICT_REDIRECT &&
			    (dir == SL_DIR_INGRESS || family != AF_INET))
				/* To be proxied, yet here: it was not handed to
				 * the proxy where it entered the node (the node
				 * itself sent it, or nothing could), or it is
				 * IPv6, which the proxy does not take yet. */
				reason = SL_DROP_PROXY_UNAVAILABLE;
			if (reason == SL_DROP_NONE && dir == SL_DIR_EGRESS && family == AF_INET) {
				/* Where the client's packets enter the node: the
				 * proxy the destination's policy names takes them. */
				__u16 pp = pol.verdict == SL_VERDICT_REDIRECT ? pol.proxy_port :
					   !proxy_in_use() ? 0 :
					   proxy_port_of_destination(pkt->daddr.addr4, pkt->proto, pkt->dport,
								     pkt->saddr.addr4, ep->identity);

				if (pp) {
					pol.verdict = SL_VERDICT_REDIRECT;
					pol.proxy_port = pp;
					pol.flags = SL_CT_POL_TO_PROXY;
					reason = proxy_assign(skb, pkt, pp);
				}
			}
		}
		event_pol(&ev, ep, dir, &pol);
		if (reason != SL_DROP_NONE) {
			struct sl_ct_key key;

			ct_key_from_pkt(&key, ep_id, pkt, false);
			bpf_map_delete_elem(&sl_ct, &key);
			if (nat->rev_nat_id) {
				/* And the backend the LB pinned for it: a denied
				 * connection keeps no state (a pod retrying one
				 * must not fill the table; a hairpin entry must
				 * not let replies from the VIP in). */
				key.scope = SL_CT_SCOPE_SERVICE;
				key.daddr = nat->vip;
				key.dport = nat->vport;
				if (nat->flags & SL_CT_NAT_HAIRPIN)
					key.saddr = family == AF_INET6 ? ep->ipv6 : ep->ipv4;
				bpf_map_delete_elem(&sl_ct, &key);
			}
			count_skb(skb, SL_METRIC_DROPPED, dir, reason);
			emit_event_pol(skb, SL_EVENT_DROP, dir, reason, ep_id, pkt, nat->rev_nat_id, &nat->vip, nat->vport, &ev,
				       evflags);
			if (reason == SL_DROP_PROXY_UNAVAILABLE && dir == SL_DIR_EGRESS && family == AF_INET)
				return proxy_refuse(skb, pkt);
			return SL_DROP;
		}
		if (pol.verdict != SL_VERDICT_NONE || pol.peer_local) {
			struct sl_ct_key key;

			ct_key_from_pkt(&key, ep_id, pkt, false);
			policy_remember(&key, nat->cur_rev, &pol);
			if (pol.verdict == SL_VERDICT_AUDIT)
				count_skb(skb, SL_METRIC_POLICY_AUDIT, dir, SL_DROP_POLICY_DENIED);
			else if (pol.verdict == SL_VERDICT_REDIRECT)
				count_skb(skb, SL_METRIC_POLICY_REDIRECT, dir, 0);
		}
		/* With --flow-events=connections a connection between two pods
		 * of this node is reported at the client's endpoint only,
		 * unless the server's policy decided it. */
		if (flow_events != SL_FLOW_EVENTS_CONNECTIONS || dir == SL_DIR_EGRESS || !pol.peer_local ||
		    pol.verdict != SL_VERDICT_NONE)
			emit_event_pol(skb, SL_EVENT_CONN_NEW, dir, 0, ep_id, pkt, nat->rev_nat_id, &nat->vip, nat->vport,
				       &ev, evflags);
		break;
	case CT_RELATED:
		count_skb(skb, SL_METRIC_RELATED, dir, 0);
		if (nat->rev_nat_id && dir == SL_DIR_INGRESS &&
		    lb_rev_translate_icmp(skb, pkt, nat, family) < 0)
			return drop_flags(skb, dir, SL_DROP_WRITE_ERROR, ep_id, pkt, SL_EVENT_F_TRACKED);
		break;
	case CT_ESTABLISHED:
	case CT_REPLY:
		if (enable_policy_revoke && nat->policy_rev != nat->cur_rev &&
		    policy_recheck(ep, pkt, ct, nat, &pol, family) != SL_DROP_NONE)
			return policy_revoke(skb, ep, dir, pkt, ct, nat, &pol, family);
		if (ct == CT_ESTABLISHED && (nat->policy_flags & SL_CT_POL_TO_PROXY)) {
			/* Every packet of a proxied connection from the client
			 * goes to the proxy's socket of it. */
			reason = proxy_assign(skb, pkt, nat->proxy_port);
			if (reason != SL_DROP_NONE) {
				/* The proxy went away (restarting): fail closed. */
				count_skb(skb, SL_METRIC_DROPPED, dir, reason);
				emit_event_pol(skb, SL_EVENT_DROP, dir, reason, ep_id, pkt, 0, NULL, 0, NULL,
					       SL_EVENT_F_TRACKED);
				return proxy_refuse(skb, pkt);
			}
		}
		if (nat->closed) {
			/* Reported with the tuple of the connection's first
			 * packet, like every other event about it. */
			struct sl_ct_key key;
			struct sl_ct_entry *e;

			ct_key_from_pkt(&key, ep_id, pkt, ct == CT_REPLY);
			e = bpf_map_lookup_elem(&sl_ct, &key);
			if (e && (flow_events != SL_FLOW_EVENTS_CONNECTIONS || e->origin != SL_DIR_INGRESS ||
				  !(e->policy_flags & SL_CT_POL_PEER_LOCAL)))
				emit_conn_end(skb, &key, e, pkt->tcp_flags);
		}
		if (ct == CT_ESTABLISHED || !nat->rev_nat_id)
			break;
		if (dir == SL_DIR_INGRESS && lb_rev_translate(skb, ep_id, pkt, nat, family) < 0)
			return drop_reply(skb, dir, SL_DROP_WRITE_ERROR, ep_id, pkt);
		if (dir == SL_DIR_EGRESS && (nat->flags & SL_CT_NAT_HAIRPIN)) {
			if (lb_hairpin_reply(skb, ep_id, pkt, nat, family) < 0)
				return drop_reply(skb, dir, SL_DROP_WRITE_ERROR, ep_id, pkt);
			nat->redirect_back = 1;
		}
		break;
	}
	count_skb(skb, SL_METRIC_FORWARDED, dir, 0);
	if (nat->redirect_back)
		return redirect_back(skb);
	/* Not a connection of the node's proxy, either way: the proxy's
	 * sockets take its packets through the stack's local delivery (a
	 * transparent upstream's replies are addressed to the client). */
	if (dir == SL_DIR_EGRESS && enable_host_routing && skb->mark != SL_MARK_TO_PROXY &&
	    !(nat->policy_flags & (SL_CT_POL_TO_PROXY | SL_CT_POL_FROM_PROXY))) {
		int ret = route_to_local_endpoint(skb);

		if (ret == ROUTE_WRITE_ERROR)
			return drop_flags(skb, dir, SL_DROP_WRITE_ERROR, ep_id, pkt, SL_EVENT_F_TRACKED);
		return ret;
	}
	return SL_NEXT;
}

static __always_inline int handle(struct __sk_buff *skb, __u8 dir)
{
	struct sl_scratch *st;
	struct sl_pkt *pkt;
	struct ct_nat *nat;
	enum sl_l3 l3 = SL_L3_OTHER;
	int reason;

	if (skb->mark == SL_MARK_POLICY_RST) {
		/* An RST this program sent for a revoked connection. */
		skb->mark = 0;
		return SL_NEXT;
	}
	/* After the RST check: a revocation's RST sent back into this same
	 * interface runs this program nested, and must not touch the state
	 * of the run that sent it. */
	st = scratch();
	if (!st)
		return SL_DROP; /* never: the array has its one entry */
	pkt = &st->pkt;
	nat = &st->nat;
	__builtin_memset(nat, 0, sizeof(*nat));
	reason = parse_packet(skb, pkt, &l3);
	if (l3 == SL_L3_OTHER) {
		count_skb(skb, SL_METRIC_PASSED_OTHER, dir, 0);
		return SL_NEXT;
	}
	if (l3 == SL_L3_IPV4)
		return handle_ip(skb, dir, pkt, nat, reason, AF_INET);
	if (pkt->nd) {
		/* IPv6 neighbour discovery and MLD: the link's own business. */
		count_skb(skb, SL_METRIC_PASSED_IPV6, dir, 0);
		return SL_NEXT;
	}
	return handle_ip(skb, dir, pkt, nat, reason, AF_INET6);
}

#endif /* SLUICE_ENDPOINT_H */
