// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Endpoint programs, attached to each local pod's host-side interface.
 *
 *        pod netns              node netns
 *   [ eth0 ] ========= veth ========= [ lxcXXXX ]
 *                                       tc ingress: sl_from_ep (pod egress)
 *                                       tc egress:  sl_to_ep   (pod ingress)
 *
 * Entry points only; the logic is in lib/.
 */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/metrics.h"
#include "lib/conntrack.h"
#include "lib/lb.h"

char __license[] SEC("license") = "Dual BSD/GPL";

static __always_inline int handle(struct __sk_buff *skb, __u8 dir)
{
	struct sl_endpoint *ep;
	struct sl_pkt pkt;
	struct ct_nat nat = {};
	enum sl_l3 l3 = SL_L3_OTHER;
	__u32 ifindex = skb->ifindex;
	__u32 ep_id = 0;
	int reason, ct, lb = LB_NONE;

	reason = parse_packet(skb, &pkt, &l3);
	if (l3 == SL_L3_IPV6) {
		count(SL_METRIC_PASSED_IPV6, dir, 0, skb->len);
		return SL_NEXT;
	}
	if (l3 == SL_L3_OTHER) {
		count(SL_METRIC_PASSED_OTHER, dir, 0, skb->len);
		return SL_NEXT;
	}

	ep = bpf_map_lookup_elem(&sl_endpoints, &ifindex);
	if (ep)
		ep_id = ep->ep_id;
	if (reason != SL_DROP_NONE)
		return drop(skb, dir, reason, ep_id, &pkt);
	if (!ep) {
		/* Attached but not (or no longer) an endpoint: the agent is
		 * between detach steps. Counted, not tracked. */
		count(SL_METRIC_NO_ENDPOINT, dir, 0, skb->len);
		return SL_NEXT;
	}

	if (dir == SL_DIR_EGRESS && enable_antispoof && (ep->flags & SL_EP_F_HAS_IPV4) &&
	    pkt.outer_saddr != ep->ipv4.addr4)
		return drop(skb, dir, SL_DROP_INVALID_SOURCE_IP, ep_id, &pkt);

	if (pkt.first_frag && !frag_remember(skb, &pkt))
		count(SL_METRIC_FRAG_TABLE_FULL, dir, 0, skb->len);

	/* Service translation happens where the client's packets leave it,
	 * before CT: policy and CT then see the real backend. */
	if (dir == SL_DIR_EGRESS && !pkt.icmp_error) {
		lb = lb_translate(skb, ep_id, &pkt, &nat, &reason);

		if (lb == LB_REJECT) {
			count(SL_METRIC_DROPPED, dir, SL_DROP_NO_SERVICE_BACKEND, skb->len);
			emit_event(skb, SL_EVENT_DROP, dir, SL_DROP_NO_SERVICE_BACKEND, ep_id, &pkt, 0, NULL, 0);
			return lb_reject(skb);
		}
		if (lb == LB_DROP)
			return drop(skb, dir, reason, ep_id, &pkt);
	}

	ct = ct_track(ep_id, &pkt, dir, skb->len, &nat);
	switch (ct) {
	case CT_FULL:
		return drop(skb, dir, SL_DROP_CT_MAP_FULL, ep_id, &pkt);
	case CT_NEW:
		if (!pkt.icmp_error)
			emit_event(skb, SL_EVENT_CONN_NEW, dir, 0, ep_id, &pkt, nat.rev_nat_id, &nat.vip, nat.vport);
		break;
	case CT_RELATED:
		count(SL_METRIC_RELATED, dir, 0, skb->len);
		if (nat.rev_nat_id && dir == SL_DIR_INGRESS &&
		    lb_rev_translate_icmp(skb, &pkt, &nat) < 0)
			return drop(skb, dir, SL_DROP_WRITE_ERROR, ep_id, &pkt);
		break;
	case CT_REPLY:
		if (!nat.rev_nat_id)
			break;
		if (dir == SL_DIR_INGRESS && lb_rev_translate(skb, ep_id, &pkt, &nat) < 0)
			return drop(skb, dir, SL_DROP_WRITE_ERROR, ep_id, &pkt);
		if (dir == SL_DIR_EGRESS && (nat.flags & SL_CT_NAT_HAIRPIN)) {
			if (lb_hairpin_reply(skb, ep_id, &pkt, &nat) < 0)
				return drop(skb, dir, SL_DROP_WRITE_ERROR, ep_id, &pkt);
			lb = LB_HAIRPIN;
		}
		break;
	}
	count(SL_METRIC_FORWARDED, dir, 0, skb->len);
	if (lb == LB_HAIRPIN)
		return redirect_back(skb);
	return SL_NEXT;
}

SEC("tc")
int sl_from_ep(struct __sk_buff *skb)
{
	return handle(skb, SL_DIR_EGRESS);
}

SEC("tc")
int sl_to_ep(struct __sk_buff *skb)
{
	return handle(skb, SL_DIR_INGRESS);
}

/* Anchor the shared enums in BTF so bpf2go can export them with -type;
 * nothing in the programs names these types directly. Const, so they sit
 * in .rodata with the runtime configuration instead of adding a .bss map. */
const enum sl_dir *const _sl_dir __attribute__((unused)) = 0;
const enum sl_drop_reason *const _sl_drop_reason __attribute__((unused)) = 0;
const enum sl_metric *const _sl_metric __attribute__((unused)) = 0;
const enum sl_ct_state *const _sl_ct_state __attribute__((unused)) = 0;
const enum sl_event_type *const _sl_event_type __attribute__((unused)) = 0;
const struct sl_event *const _sl_event __attribute__((unused)) = 0;
const enum sl_ct_scope *const _sl_ct_scope __attribute__((unused)) = 0;
const enum sl_lb_backend_state *const _sl_lb_backend_state __attribute__((unused)) = 0;
