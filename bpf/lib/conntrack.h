/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection tracking, per endpoint.
 *
 * A packet's tuple is looked up as-is (original direction) and reversed
 * (reply direction). A miss creates an entry keyed by the packet's tuple,
 * so the entry's key is always the connection's original direction.
 *
 * TCP:  SYN -> SYN_SENT -(SYN-ACK)-> SYN_RECV -(ACK)-> ESTABLISHED
 *       any FIN -> CLOSING; RST, or FIN both ways -> CLOSED
 *       a SYN (no ACK) in the original direction on a CLOSING/CLOSED
 *       entry starts a new connection on the same tuple.
 *       A non-SYN packet with no entry (mid-stream: the entry was
 *       replaced, or the flow predates the agent) is picked up as
 *       ESTABLISHED, as Linux conntrack does with tcp_loose.
 * Other: OPEN until a reply is seen, then ESTABLISHED.
 *
 * Expired entries are dead even before the agent's GC removes them.
 */
#ifndef SLUICE_CONNTRACK_H
#define SLUICE_CONNTRACK_H

#include "events.h"

/* The CT scope of the node's uplinks (NodePort, the proxy's hand-over):
 * endpoint IDs start at 1. */
#define UPLINK_EP 0

/* Service translation state carried with a packet through CT: set by the
 * LB before a new connection's entry is created, read back for replies. */
struct ct_nat {
	__u32 rev_nat_id;
	__u32 backend_id;
	union sl_addr vip;
	__be16 vport;
	__u8 state;   /* out: the FLOW entry's state after this packet */
	__u8 flags;   /* in (create) / out (reply): SL_CT_NAT_* */
	__be16 nat_port; /* uplink SNAT port pinned in the SERVICE entry */
	__u64 expires; /* out: and its deadline */
	__u32 cur_rev;    /* in: the policy revision a new entry is made under */
	__u32 policy_rev; /* out (established, reply): the entry's policy revision */
	__u8 origin;      /* out (established, reply): the entry's original direction */
	__u8 policy_flags; /* out (established, reply): SL_CT_POL_* */
	__u16 proxy_port; /* out (established, reply): the entry's proxy port */
	__u8 closed;      /* out: this packet closed the connection (TCP) */
	__u8 svc_closed;  /* out (lb_translate): ... and its SERVICE entry */
	/* A hairpinned packet, to be sent straight back into the pod. Kept
	 * here, in map memory the verifier does not track, rather than in a
	 * variable: the paths before and after translation then merge, and
	 * the rest of the program is verified once, not per LB result. */
	__u8 redirect_back;
	/* policy_revoke: the sources of its two RSTs, staged here so that
	 * rst_write always reads them through the same two pointers (the
	 * verifier then merges the states of where they came from). */
	union sl_addr rst_back;
	union sl_addr rst_fwd;
};

/* Per-CPU scratch space for the state of one packet's run: the programs'
 * stack (512 bytes, shared with every inlined helper and the compiler's
 * spills) cannot hold it beside the rest. Safe per CPU: tc programs run
 * with bottom halves off, and the one nested run (a revocation's RST sent
 * back into the same interface) returns before it takes this space. */
struct sl_scratch {
	struct sl_pkt pkt;
	struct ct_nat nat;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct sl_scratch);
	__uint(max_entries, 1);
} sl_scratch SEC(".maps");

static __always_inline struct sl_scratch *scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&sl_scratch, &zero);
}

enum ct_result {
	CT_NEW = 0,
	CT_ESTABLISHED = 1,
	CT_REPLY = 2,
	CT_RELATED = 3,
	CT_FULL = 4,
};

/* The event flags (SL_EVENT_F_*) of a packet conntrack classified. */
static __always_inline __u8 ct_event_flags(int ct)
{
	if (ct == CT_FULL)
		return 0;
	return SL_EVENT_F_TRACKED | (ct == CT_REPLY ? SL_EVENT_F_REPLY : 0);
}

static __always_inline void ct_key_from_pkt(struct sl_ct_key *key, __u32 ep_id,
					    const struct sl_pkt *pkt, bool reverse)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->ep_id = ep_id;
	key->family = pkt->family;
	key->proto = pkt->proto;
	if (!reverse) {
		key->saddr = pkt->saddr;
		key->daddr = pkt->daddr;
		key->sport = pkt->sport;
		key->dport = pkt->dport;
	} else {
		key->saddr = pkt->daddr;
		key->daddr = pkt->saddr;
		key->sport = pkt->dport;
		key->dport = pkt->sport;
	}
}

static __always_inline __u64 ct_timeout(__u8 state)
{
	switch (state) {
	case SL_CT_SYN_SENT:
	case SL_CT_SYN_RECV:
		return ct_timeout_syn_ns;
	case SL_CT_ESTABLISHED:
		return ct_timeout_tcp_ns;
	case SL_CT_CLOSING:
	case SL_CT_CLOSED:
		return ct_timeout_close_ns;
	default:
		return ct_timeout_other_ns;
	}
}

/* Non-TCP established flows use the shorter "other" lifetime. */
static __always_inline __u64 ct_lifetime(const struct sl_pkt *pkt, __u8 state)
{
	if (pkt->proto != IPPROTO_TCP)
		return ct_timeout_other_ns;
	return ct_timeout(state);
}

static __always_inline __u8 tcp_initial_state(__u8 flags)
{
	if (flags & TCPF_RST)
		return SL_CT_CLOSED;
	if (flags & TCPF_FIN)
		return SL_CT_CLOSING;
	if ((flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN)
		return SL_CT_SYN_SENT;
	return SL_CT_ESTABLISHED;
}

static __always_inline __u8 tcp_next_state(__u8 state, __u8 flags, bool reply,
					   __u8 seen_orig, __u8 seen_reply)
{
	if (flags & TCPF_RST)
		return SL_CT_CLOSED;
	if (flags & TCPF_FIN) {
		/* FIN in both directions: the connection is done. */
		if ((reply ? seen_orig : seen_reply) & TCPF_FIN)
			return SL_CT_CLOSED;
		return state == SL_CT_CLOSED ? SL_CT_CLOSED : SL_CT_CLOSING;
	}
	switch (state) {
	case SL_CT_SYN_SENT:
		if (reply && (flags & (TCPF_SYN | TCPF_ACK)) == (TCPF_SYN | TCPF_ACK))
			return SL_CT_SYN_RECV;
		return state;
	case SL_CT_SYN_RECV:
		if (!reply && (flags & TCPF_ACK))
			return SL_CT_ESTABLISHED;
		return state;
	default:
		return state;
	}
}

static __always_inline int ct_create(struct sl_ct_key *key, const struct sl_pkt *pkt,
				     __u8 dir, __u32 len, __u64 now, struct ct_nat *nat)
{
	struct sl_ct_entry e = {};

	e.rev_nat_id = nat->rev_nat_id;
	e.backend_id = nat->backend_id;
	e.nat_flags = nat->flags;
	e.created = now;
	e.origin = dir;
	e.policy_rev = nat->cur_rev;
	e.packets_orig = 1;
	e.bytes_orig = len;
	if (pkt->proto == IPPROTO_TCP) {
		e.state = tcp_initial_state(pkt->tcp_flags);
		e.flags_orig = pkt->tcp_flags;
	} else {
		e.state = SL_CT_OPEN;
	}
	e.expires = now + ct_lifetime(pkt, e.state);
	nat->state = e.state;
	nat->expires = e.expires;
	/* BPF_ANY also overwrites an expired or reopened entry in place. */
	if (map_update(&sl_ct, key, &e, BPF_ANY) < 0)
		return CT_FULL;
	return CT_NEW;
}

static __always_inline void ct_refresh(struct sl_ct_entry *e, const struct sl_pkt *pkt,
				       __u8 new_state, __u64 now)
{
	__u64 expires = now + ct_lifetime(pkt, new_state);

	if (new_state != e->state) {
		e->state = new_state;
		e->expires = expires;
	} else if (expires > e->expires + CT_REFRESH_SLACK_NS) {
		e->expires = expires;
	}
}

/*
 * Track one packet of endpoint ep_id seen in direction dir. Returns the
 * ct_result; CT_FULL means the packet could not be tracked.
 */
static __always_inline int ct_track(__u32 ep_id, const struct sl_pkt *pkt, __u8 dir, __u32 len,
				    struct ct_nat *nat)
{
	struct sl_ct_key key;
	struct sl_ct_entry *e;
	__u64 now = bpf_ktime_get_ns();
	__u8 flags = pkt->tcp_flags;
	bool is_tcp = pkt->proto == IPPROTO_TCP;

	if (pkt->icmp_error) {
		/* The embedded tuple is the original flow's, sent by one of
		 * its ends: look it up both ways, never create from it. */
		ct_key_from_pkt(&key, ep_id, pkt, false);
		e = bpf_map_lookup_elem(&sl_ct, &key);
		if (e && e->expires > now) {
			/* About a packet this endpoint sent: if that packet was
			 * translated, the error must be translated back. */
			nat->rev_nat_id = e->rev_nat_id;
			nat->flags = e->nat_flags;
			return CT_RELATED;
		}
		ct_key_from_pkt(&key, ep_id, pkt, true);
		e = bpf_map_lookup_elem(&sl_ct, &key);
		if (e && e->expires > now)
			return CT_RELATED;
		return CT_NEW;
	}

	ct_key_from_pkt(&key, ep_id, pkt, false);
	e = bpf_map_lookup_elem(&sl_ct, &key);
	if (e && e->expires > now) {
		if (is_tcp && (flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN &&
		    e->state >= SL_CT_CLOSING && e->state <= SL_CT_CLOSED)
			return ct_create(&key, pkt, dir, len, now, nat);
		/* The same tuple reached another way: a client port used for a
		 * service and then straight for its backend (or the other way
		 * round) gives both the same tuple after translation. The
		 * entry is the old connection's and would translate the new
		 * one's replies as the old ones (a reply from the VIP to a
		 * socket that talks to the backend, or the reverse): this is a
		 * new connection, judged and tracked anew. The LB sets the
		 * translation of every packet of a service connection (from
		 * its SERVICE entry) before CT, so on an endpoint the two
		 * differ only when the packet took the other way. */
		if (dir == SL_DIR_EGRESS && ep_id != UPLINK_EP && e->rev_nat_id != nat->rev_nat_id)
			return ct_create(&key, pkt, dir, len, now, nat);
		__sync_fetch_and_add(&e->packets_orig, 1);
		__sync_fetch_and_add(&e->bytes_orig, len);
		if (is_tcp) {
			__u8 old = e->state;

			e->flags_orig |= flags;
			ct_refresh(e, pkt, tcp_next_state(e->state, flags, false,
							  e->flags_orig, e->flags_reply), now);
			nat->closed = old != SL_CT_CLOSED && e->state == SL_CT_CLOSED;
		} else {
			ct_refresh(e, pkt, e->state, now);
		}
		nat->state = e->state;
		nat->expires = e->expires;
		nat->policy_rev = e->policy_rev;
		nat->origin = e->origin;
		nat->policy_flags = e->policy_flags;
		nat->proxy_port = e->proxy_port;
		return CT_ESTABLISHED;
	}

	ct_key_from_pkt(&key, ep_id, pkt, true);
	e = bpf_map_lookup_elem(&sl_ct, &key);
	if (e && e->expires > now) {
		__sync_fetch_and_add(&e->packets_reply, 1);
		__sync_fetch_and_add(&e->bytes_reply, len);
		if (is_tcp) {
			__u8 old = e->state;

			e->flags_reply |= flags;
			ct_refresh(e, pkt, tcp_next_state(e->state, flags, true,
							  e->flags_orig, e->flags_reply), now);
			nat->closed = old != SL_CT_CLOSED && e->state == SL_CT_CLOSED;
		} else {
			ct_refresh(e, pkt, SL_CT_ESTABLISHED, now);
		}
		nat->rev_nat_id = e->rev_nat_id;
		nat->backend_id = e->backend_id;
		nat->flags = e->nat_flags;
		nat->state = e->state;
		nat->expires = e->expires;
		nat->policy_rev = e->policy_rev;
		nat->origin = e->origin;
		nat->policy_flags = e->policy_flags;
		nat->proxy_port = e->proxy_port;
		return CT_REPLY;
	}

	/* Arriving from a VIP: the reply of a connection this endpoint made to
	 * its own service and landed on itself, already translated back (a
	 * hairpin reply). It belongs to the client's SERVICE entry, not to a
	 * new inbound connection. Only a hairpin one: anything else from a
	 * VIP (never a real source on the wire) is new traffic, judged. */
	if (dir == SL_DIR_INGRESS) {
		ct_key_from_pkt(&key, ep_id, pkt, true);
		key.scope = SL_CT_SCOPE_SERVICE;
		e = bpf_map_lookup_elem(&sl_ct, &key);
		if (e && e->expires > now && (e->nat_flags & SL_CT_NAT_HAIRPIN))
			return CT_REPLY;
	}

	ct_key_from_pkt(&key, ep_id, pkt, false);
	return ct_create(&key, pkt, dir, len, now, nat);
}

#endif /* SLUICE_CONNTRACK_H */
