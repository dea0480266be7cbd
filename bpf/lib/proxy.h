/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Handing connections to the node's L7 proxy (one per node).
 *
 * A destination's policy redirects a connection (verdict REDIRECT, with
 * the port of the proxy listener that holds that rule set). The kernel
 * hands its packets to the proxy with bpf_sk_assign where they enter the
 * node's stack, which is the only place it can:
 *
 *   client on this node ──► sl_from_ep (tc ingress of its veth) ─┐
 *   client elsewhere   ──► sl_from_netdev (tc ingress of uplink) ─┴─► proxy :P
 *                                  (mark TO_PROXY: routed to the local stack)
 *   proxy ──(socket mark FROM_PROXY)──► sl_to_ep of the destination: admitted
 *
 * The proxy's transparent listener sees the client's address and the
 * original destination (a service's backend: translation comes first).
 * Its replies go back through the stack to the client as the original
 * destination. A connection that reaches the destination's own endpoint
 * without having been handed over fails closed there, as does one for
 * which no proxy listens: PROXY_UNAVAILABLE, never a bypass.
 */
#ifndef SLUICE_PROXY_H
#define SLUICE_PROXY_H

#include <linux/errno.h>

#include "policy.h"

#ifndef BPF_F_CURRENT_NETNS
#define BPF_F_CURRENT_NETNS (-1L)
#endif

/* Proxy listeners are looked up by this address: a listener bound to it,
 * or to the wildcard address, serves. */
#define PROXY_LISTEN_ADDR bpf_htonl(0x7f000001)

/* One socket lookup: the proxy's socket of this connection (established:
 * any state but listening or time-wait), or a listener. 0 when assigned. */
static __always_inline long proxy_lookup_assign(struct __sk_buff *skb, struct bpf_sock_tuple *t, bool established)
{
	struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, t, sizeof(t->ipv4), BPF_F_CURRENT_NETNS, 0);
	long err = -ENOENT;

	if (!sk)
		return err;
	if (established ? (sk->state != BPF_TCP_LISTEN && sk->state != BPF_TCP_TIME_WAIT)
			: sk->state == BPF_TCP_LISTEN)
		err = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	return err;
}

/*
 * Hand pkt's packet to the proxy listening on proxy_port (host order):
 * to the proxy's socket of this connection if it has one, else to the
 * listener. Returns SL_DROP_NONE, or why the connection fails closed.
 */
static __always_inline int proxy_assign(struct __sk_buff *skb, const struct sl_pkt *pkt, __u16 proxy_port)
{
	struct bpf_sock_tuple t = {};
	long err;

	if (pkt->proto != IPPROTO_TCP || pkt->later_frag || !proxy_port)
		return SL_DROP_PROXY_UNAVAILABLE;
	t.ipv4.saddr = pkt->saddr.addr4;
	t.ipv4.daddr = pkt->daddr.addr4;
	t.ipv4.sport = pkt->sport;
	t.ipv4.dport = pkt->dport;
	err = proxy_lookup_assign(skb, &t, true);
	if (err == -ENOENT) {
		t.ipv4.daddr = PROXY_LISTEN_ADDR;
		t.ipv4.dport = bpf_htons(proxy_port);
		err = proxy_lookup_assign(skb, &t, false);
	}
	if (err == -ENOENT)
		return SL_DROP_PROXY_UNAVAILABLE;
	if (err)
		return SL_DROP_SOCKET_ASSIGN_FAILED;
	skb->mark = SL_MARK_TO_PROXY;
	return SL_DROP_NONE;
}

/*
 * The proxy port a new connection from a client with identity client_id
 * and address client to a pod of this node, at daddr:dport, goes to: the
 * destination's ingress policy says so (verdict REDIRECT). 0: not
 * redirected (allowed or denied there, by its own endpoint).
 */
static __always_inline __u16 proxy_port_of_destination(__be32 daddr, __u8 proto, __be16 dport,
							__be32 client, __u32 client_id)
{
	struct policy_result res = { .peer_id = client_id };
	union sl_addr d = {}, c = {};
	__u32 ep_id;

	if (proto != IPPROTO_TCP)
		return 0;
	d.addr4 = daddr;
	c.addr4 = client;
	ipcache_identity(AF_INET, &d, &ep_id);
	if (!ep_id)
		return 0;
	policy_lookup(ep_id, SL_DIR_INGRESS, proto, dport, AF_INET, &c, &res);
	return res.verdict == SL_VERDICT_REDIRECT ? res.proxy_port : 0;
}

/* Is any local endpoint's policy redirecting to the proxy? */
static __always_inline bool proxy_in_use(void)
{
	__u32 zero = 0;
	struct sl_proxy_state *st = bpf_map_lookup_elem(&sl_proxy, &zero);

	return st && st->redirecting_endpoints;
}

/*
 * Refuse, as a closed port does, a connection no proxy takes: the packet
 * becomes an RST sent back into the pod (acknowledging a SYN, so the
 * client's connect() fails at once). Returns the tc verdict.
 */
static __always_inline int proxy_refuse(struct __sk_buff *skb, const struct sl_pkt *pkt)
{
	__be32 seqack[2];
	int err;

	if (pkt->proto != IPPROTO_TCP || (pkt->tcp_flags & TCPF_RST) || pkt->later_frag ||
	    bpf_skb_load_bytes(skb, pkt->l4_off + 4, seqack, sizeof(seqack)) < 0)
		return SL_DROP;
	if (pkt->tcp_flags & TCPF_SYN)
		err = rst_write4(skb, true, pkt->daddr.addr4, pkt->saddr.addr4, pkt->dport, pkt->sport, 0,
				bpf_htonl(bpf_ntohl(seqack[0]) + 1));
	else
		err = rst_write4(skb, true, pkt->daddr.addr4, pkt->saddr.addr4, pkt->dport, pkt->sport, seqack[1], 0);
	if (err < 0)
		return SL_DROP;
	/* The pod's ingress program lets the datapath's own RSTs through. */
	skb->mark = SL_MARK_POLICY_RST;
	return bpf_redirect(skb->ifindex, 0);
}

#endif /* SLUICE_PROXY_H */
