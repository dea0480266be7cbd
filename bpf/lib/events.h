/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Events for the agent in the sl_events ring buffer: new connections,
 * drops with their reason, policy verdicts, connection ends. Which are
 * emitted is --flow-events (flow_events); drops are also counted, always.
 */
#ifndef SLUICE_EVENTS_H
#define SLUICE_EVENTS_H

#include "maps.h"
#include "metrics.h"
#include "parse.h"

/* Which events are reported (enum sl_flow_events); set by the agent. */
volatile const __u8 flow_events = SL_FLOW_EVENTS_ALL;

/*
 * Submit without waking the reader, unless the ring is a quarter full: a
 * wakeup per new connection costs more than the rest of the SYN's path
 * (~10 us of 12 in BPF_PROG_TEST_RUN). The agent polls the ring every few
 * tens of milliseconds, so events are late by at most that, never lost.
 */
static __always_inline void event_submit(void *ev)
{
	__u64 avail = bpf_ringbuf_query(&sl_events, BPF_RB_AVAIL_DATA);

	bpf_ringbuf_submit(ev, avail > events_ring_size / 4 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

/* Reserve an event; a full ring buffer is counted, never silent. */
static __always_inline struct sl_event *event_reserve(__u8 dir, __u16 reason)
{
	struct sl_event *ev = bpf_ringbuf_reserve(&sl_events, sizeof(*ev), 0);

	if (!ev) {
		count(SL_METRIC_EVENTS_LOST, dir, reason, 0);
		return NULL;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	return ev;
}

/*
 * Whether a drop of this flow is reported now: the first drop is, then
 * one per interval, carrying the count of those not reported in between
 * (a retransmitting client must not flood the ring with copies). The
 * counters count every drop regardless.
 */
static __always_inline bool drop_event_due(__u8 dir, __u16 reason, __u32 ep_id,
					   const struct sl_pkt *pkt, __u32 *suppressed)
{
	struct sl_drop_rl_key k = {
		.ep_id = ep_id, .reason = reason, .dir = dir, .proto = pkt->proto,
		.sport = pkt->sport, .dport = pkt->dport, .saddr = pkt->saddr, .daddr = pkt->daddr,
	};
	struct sl_drop_rl_val *v;
	__u64 now;

	if (!drop_event_interval_ns)
		return true;
	now = bpf_ktime_get_ns();
	v = bpf_map_lookup_elem(&sl_drop_rl, &k);
	if (v) {
		if (now - v->last < drop_event_interval_ns) {
			__sync_fetch_and_add(&v->suppressed, 1);
			return false;
		}
		*suppressed = v->suppressed;
		v->suppressed = 0;
		v->last = now;
		return true;
	}
	{
		struct sl_drop_rl_val nv = { .last = now };

		bpf_map_update_elem(&sl_drop_rl, &k, &nv, BPF_ANY);
	}
	return true;
}

/* A policy decision as events report it: identities of both ends. */
struct event_policy {
	__u32 src_identity;
	__u32 dst_identity;
	__u32 rule;
	__u16 proxy_port;
	__u8 verdict;
};

/* Emit an event about pkt. svc_id/vip/vport describe a service
 * translation (svc_id 0: none); pkt then holds the translated tuple.
 * pol, when not NULL, is the connection's policy decision; flags are
 * SL_EVENT_F_*. */
static __always_inline void emit_event_pol(struct __sk_buff *skb, __u8 type, __u8 dir,
					   __u16 reason, __u32 ep_id, const struct sl_pkt *pkt,
					   __u32 svc_id, const union sl_addr *vip, __be16 vport,
					   const struct event_policy *pol, __u8 flags)
{
	struct sl_event *ev;
	__u32 suppressed = 0;

	if (flow_events == SL_FLOW_EVENTS_NONE)
		return;
	if (type != SL_EVENT_DROP && flow_events == SL_FLOW_EVENTS_DROPS_AND_VERDICTS &&
	    (!pol || pol->verdict == SL_VERDICT_NONE))
		return;
	if (type == SL_EVENT_DROP && !drop_event_due(dir, reason, ep_id, pkt, &suppressed))
		return;
	ev = event_reserve(dir, reason);
	if (!ev)
		return;
	ev->suppressed = suppressed;
	ev->ts = bpf_ktime_get_ns();
	ev->type = type;
	ev->dir = dir;
	ev->reason = reason;
	ev->ifindex = skb->ifindex;
	ev->ep_id = ep_id;
	ev->len = skb->len;
	ev->family = pkt->family;
	ev->proto = pkt->proto;
	ev->tcp_flags = pkt->tcp_flags;
	ev->flags = flags;
	ev->sport = pkt->sport;
	ev->dport = pkt->dport;
	ev->saddr = pkt->saddr;
	ev->daddr = pkt->daddr;
	if (svc_id) {
		ev->svc_id = svc_id;
		ev->vip = *vip;
		ev->vip_port = vport;
	}
	if (pol) {
		ev->src_identity = pol->src_identity;
		ev->dst_identity = pol->dst_identity;
		ev->policy_rule = pol->rule;
		ev->verdict = pol->verdict;
		ev->proxy_port = pol->proxy_port;
	}
	event_submit(ev);
}

/* The end of a TCP connection, with its totals, under its CT key (the
 * tuple of its first packet). */
static __always_inline void emit_conn_end(struct __sk_buff *skb, const struct sl_ct_key *key,
					  const struct sl_ct_entry *e, __u8 tcp_flags)
{
	struct sl_event *ev;
	__u64 now;

	if (flow_events > SL_FLOW_EVENTS_CONNECTIONS)
		return;
	ev = event_reserve(e->origin, 0);
	if (!ev)
		return;
	now = bpf_ktime_get_ns();
	ev->ts = now;
	ev->type = SL_EVENT_CONN_END;
	ev->flags = SL_EVENT_F_TRACKED; /* the original direction's tuple */
	ev->dir = e->origin;
	ev->ifindex = skb->ifindex;
	ev->ep_id = key->ep_id;
	ev->len = skb->len;
	ev->family = key->family;
	ev->proto = key->proto;
	ev->tcp_flags = tcp_flags;
	ev->sport = key->sport;
	ev->dport = key->dport;
	ev->saddr = key->saddr;
	ev->daddr = key->daddr;
	ev->packets_orig = e->packets_orig;
	ev->bytes_orig = e->bytes_orig;
	ev->packets_reply = e->packets_reply;
	ev->bytes_reply = e->bytes_reply;
	ev->duration_ns = now - e->created;
	event_submit(ev);
}

static __always_inline void emit_event(struct __sk_buff *skb, __u8 type, __u8 dir,
				       __u16 reason, __u32 ep_id, const struct sl_pkt *pkt,
				       __u32 svc_id, const union sl_addr *vip, __be16 vport)
{
	emit_event_pol(skb, type, dir, reason, ep_id, pkt, svc_id, vip, vport, NULL, 0);
}

/* Drop a packet: count it, tell the agent (flags: SL_EVENT_F_*), and
 * return the tc verdict. */
static __always_inline int drop_flags(struct __sk_buff *skb, __u8 dir, __u16 reason,
				      __u32 ep_id, const struct sl_pkt *pkt, __u8 flags)
{
	count_skb(skb, SL_METRIC_DROPPED, dir, reason);
	emit_event_pol(skb, SL_EVENT_DROP, dir, reason, ep_id, pkt, 0, NULL, 0, NULL, flags);
	return SL_DROP;
}

/* Drop a packet conntrack has not placed (or that started a connection
 * it could not track). */
static __always_inline int drop(struct __sk_buff *skb, __u8 dir, __u16 reason,
				__u32 ep_id, const struct sl_pkt *pkt)
{
	return drop_flags(skb, dir, reason, ep_id, pkt, 0);
}

/* Drop a packet of a tracked connection's reply direction. */
static __always_inline int drop_reply(struct __sk_buff *skb, __u8 dir, __u16 reason,
				      __u32 ep_id, const struct sl_pkt *pkt)
{
	return drop_flags(skb, dir, reason, ep_id, pkt, SL_EVENT_F_TRACKED | SL_EVENT_F_REPLY);
}

#endif /* SLUICE_EVENTS_H */
