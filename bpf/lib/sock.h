/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Socket-level load balancing (cgroup sock_addr hooks).
 *
 *   connect(VIP:vp) ──► sl_sock_connect4/6: pick backend, rewrite to B:bp,
 *                       remember (socket cookie, B:bp) → VIP:vp
 *   getpeername / recvmsg ──► rewrite B:bp back to VIP:vp
 *
 * A connected socket then talks to the backend directly: no per-packet
 * NAT, and the packet path never sees the VIP, so a flow is never
 * translated twice. The source port is not bound at connect time, so
 * session affinity keys on the client's network namespace cookie.
 */
#ifndef SLUICE_SOCK_H
#define SLUICE_SOCK_H

#include <linux/errno.h>

#include "lb.h"

/* Which sockets socket LB serves (enum sl_sock_lb_mode); set by the agent. */
volatile const __u8 sock_lb_mode = SL_SOCK_LB_ALL;
/* The node's network namespace cookie, for SL_SOCK_LB_HOSTNS_ONLY. Compared
 * with the socket's own netns cookie, not with the initial namespace: the
 * node may itself be a namespace (simulated nodes, nested setups). */
volatile const __u64 host_netns_cookie = 0;

/* The kernel has bpf_set_retval (Linux 5.18), probed by the agent. Without
 * it a refused connect() fails with the hook's default EPERM: still at
 * once, only with another errno. The verifier never reaches the call when
 * this is 0 (a frozen constant), so older kernels load the program. */
volatile const __u8 have_set_retval = 1;

static __always_inline bool sock_lb_applies(struct bpf_sock_addr *ctx)
{
	if (sock_lb_mode == SL_SOCK_LB_HOSTNS_ONLY)
		return bpf_get_netns_cookie(ctx) == host_netns_cookie;
	return true;
}

/* A sock_addr address in IPv6 form is v4-mapped (::ffff:a.b.c.d): an
 * IPv4 connection made from a dual-stack IPv6 socket. The kernel runs the
 * *6 hooks for it (connect, getpeername, recvmsg), never the *4 ones. */
static __always_inline bool sock_v4mapped(const struct bpf_sock_addr *ctx)
{
	return ctx->user_ip6[0] == 0 && ctx->user_ip6[1] == 0 && ctx->user_ip6[2] == bpf_htonl(0xffff);
}

/* The address of ctx as an LB key's address and family: IPv4 for the *4
 * hooks and v4-mapped addresses, IPv6 otherwise. */
static __always_inline __u8 sock_addr_get(const struct bpf_sock_addr *ctx, union sl_addr *a, const bool v6)
{
	__be32 *w;

	if (!v6) {
		a->addr4 = ctx->user_ip4;
		return SL_LB_FAMILY_IPV4;
	}
	if (sock_v4mapped(ctx)) {
		a->addr4 = ctx->user_ip6[3];
		return SL_LB_FAMILY_IPV4;
	}
	w = (__be32 *)a->addr6;
	w[0] = ctx->user_ip6[0];
	w[1] = ctx->user_ip6[1];
	w[2] = ctx->user_ip6[2];
	w[3] = ctx->user_ip6[3];
	return SL_LB_FAMILY_IPV6;
}

/* Write a (of family) into ctx, v4-mapped in an IPv6 hook. */
static __always_inline void sock_addr_set(struct bpf_sock_addr *ctx, const union sl_addr *a, __u8 family,
					  const bool v6)
{
	const __be32 *w;

	if (!v6) {
		ctx->user_ip4 = a->addr4;
		return;
	}
	if (family == SL_LB_FAMILY_IPV4) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0xffff);
		ctx->user_ip6[3] = a->addr4;
		return;
	}
	w = (const __be32 *)a->addr6; /* the union's __be32 member aligns it */
	ctx->user_ip6[0] = w[0];
	ctx->user_ip6[1] = w[1];
	ctx->user_ip6[2] = w[2];
	ctx->user_ip6[3] = w[3];
}

static __always_inline struct sl_lb_entry *sock_lookup(struct bpf_sock_addr *ctx, struct sl_lb_key *key,
						       const bool v6)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->family = sock_addr_get(ctx, &key->addr, v6);
	key->port = (__be16)ctx->user_port;
	key->proto = ctx->protocol;
	if (key->proto != IPPROTO_TCP && key->proto != IPPROTO_UDP)
		return NULL;
	return bpf_map_lookup_elem(&sl_lb_svc, key);
}

static __always_inline __u32 sock_pick(struct bpf_sock_addr *ctx, struct sl_lb_key *key,
				       const struct sl_lb_entry *svc, __u64 now)
{
	struct sl_lb_affinity_key ak = { .svc_id = svc->svc_id };
	struct sl_lb_affinity_val av = { .last_used = now };
	struct sl_lb_affinity_val *v;
	struct sl_lb_entry *slot;
	__u32 id = 0;

	if (svc->flags & SL_LB_F_AFFINITY) {
		ak.client_cookie = bpf_get_netns_cookie(ctx);
		v = bpf_map_lookup_elem(&sl_lb_affinity, &ak);
		if (v && now - v->last_used <= (__u64)svc->affinity_timeout * NSEC_PER_SEC) {
			struct sl_lb_backend *b = bpf_map_lookup_elem(&sl_lb_backends, &v->backend_id);

			if (b && b->state == SL_LB_BACKEND_ACTIVE) {
				v->last_used = now;
				return v->backend_id;
			}
		}
	}
	if (svc->count == 0)
		return 0;
	if (svc->flags & SL_LB_F_MAGLEV) {
		/* The source port is not bound yet: hash the socket itself. */
		__u64 c = bpf_get_socket_cookie(ctx);

		id = lb_maglev_backend(svc, flow_hash((__u32)c, (__u32)(c >> 32), key->port ^ key->proto));
		if (id)
			goto out;
	}
	key->slot = (bpf_get_prandom_u32() % svc->count) + 1;
	slot = bpf_map_lookup_elem(&sl_lb_svc, key);
	key->slot = 0;
	if (slot)
		id = slot->backend_id;
out:
	if (id && (svc->flags & SL_LB_F_AFFINITY)) {
		av.backend_id = id;
		bpf_map_update_elem(&sl_lb_affinity, &ak, &av, BPF_ANY);
	}
	return id;
}

static __always_inline void sock_event(struct bpf_sock_addr *ctx, __u8 type, __u16 reason,
				       const struct sl_lb_entry *svc, const struct sl_lb_key *key,
				       const struct sl_lb_backend *b)
{
	struct sl_event *ev;

	/* Drops at every level but none, translations with connections. */
	if (flow_events == SL_FLOW_EVENTS_NONE ||
	    (type != SL_EVENT_DROP && flow_events > SL_FLOW_EVENTS_CONNECTIONS))
		return;
	ev = event_reserve(SL_DIR_EGRESS, reason);
	if (!ev)
		return;
	ev->ts = bpf_ktime_get_ns();
	ev->type = type;
	ev->dir = SL_DIR_EGRESS;
	ev->reason = reason;
	ev->family = key->family == SL_LB_FAMILY_IPV6 ? AF_INET6 : AF_INET;
	ev->proto = key->proto;
	ev->svc_id = svc->svc_id;
	ev->vip = key->addr;
	ev->vip_port = key->port;
	ev->daddr = key->addr;
	ev->dport = key->port;
	if (b) {
		ev->daddr = b->addr;
		ev->dport = b->port;
	}
	ev->sock_cookie = bpf_get_socket_cookie(ctx);
	ev->cgroup_id = bpf_get_current_cgroup_id();
	event_submit(ev);
}

/*
 * Translate a connect() or an unconnected sendmsg() to a frontend.
 * Returns 1 to let the call proceed, 0 to refuse it (ECONNREFUSED; EPERM
 * on kernels without bpf_set_retval).
 */
static __always_inline int sock_translate(struct bpf_sock_addr *ctx, bool connect, const bool v6)
{
	struct sl_lb_key key;
	struct sl_lb_entry *svc;
	struct sl_lb_backend *b;
	struct sl_lb_sock_key sk = {};
	struct sl_lb_vip vip = {};
	__u32 id;

	if (!sock_lb_applies(ctx))
		return 1;
	svc = sock_lookup(ctx, &key, v6);
	/* The client address is not known at connect time: frontends with
	 * loadBalancerSourceRanges are left to the packet path, which checks
	 * the source of the connection's first packet. */
	if (!svc || (svc->flags & SL_LB_F_SRC_RANGE))
		return 1;
	id = sock_pick(ctx, &key, svc, bpf_ktime_get_ns());
	b = id ? bpf_map_lookup_elem(&sl_lb_backends, &id) : NULL;
	/* A backend of another family than its frontend is never written by
	 * the agent; taken as none rather than written half. */
	if (b && b->family != key.family)
		b = NULL;
	if (!b) {
		/* No endpoints: refuse at once, as kube-proxy's REJECT does,
		 * with ECONNREFUSED rather than the default EPERM. */
		count_family(SL_METRIC_DROPPED, SL_DIR_EGRESS, SL_DROP_NO_SERVICE_BACKEND, 0,
			     key.family == SL_LB_FAMILY_IPV6 ? SL_METRIC_FAMILY_IPV6 : SL_METRIC_FAMILY_IPV4);
		sock_event(ctx, SL_EVENT_DROP, SL_DROP_NO_SERVICE_BACKEND, svc, &key, NULL);
		if (have_set_retval)
			bpf_set_retval(-ECONNREFUSED);
		return 0;
	}

	sk.cookie = bpf_get_socket_cookie(ctx);
	sk.backend = b->addr;
	sk.port = b->port;
	sk.family = key.family;
	vip.addr = key.addr;
	vip.port = key.port;
	/* Unconnected UDP sends once per datagram: report a socket's first
	 * use of a backend only. */
	if (bpf_map_update_elem(&sl_lb_sock, &sk, &vip, connect ? BPF_ANY : BPF_NOEXIST) == 0 || connect)
		sock_event(ctx, SL_EVENT_TRANSLATE, 0, svc, &key, b);
	sock_addr_set(ctx, &b->addr, key.family, v6);
	ctx->user_port = b->port;
	return 1;
}

/* getpeername() and recvmsg(): show the frontend, not the backend. */
static __always_inline int sock_rev_translate(struct bpf_sock_addr *ctx, const bool v6)
{
	struct sl_lb_sock_key sk = {};
	struct sl_lb_vip *vip;

	sk.cookie = bpf_get_socket_cookie(ctx);
	sk.family = sock_addr_get(ctx, &sk.backend, v6);
	sk.port = (__be16)ctx->user_port;
	vip = bpf_map_lookup_elem(&sl_lb_sock, &sk);
	if (!vip)
		return 1;
	sock_addr_set(ctx, &vip->addr, sk.family, v6);
	ctx->user_port = vip->port;
	return 1;
}

#endif /* SLUICE_SOCK_H */
