/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet parsing into a flow tuple.
 *
 * Headers are copied with bpf_skb_load_bytes rather than read in place, so
 * parsing works the same on linear and paged skbs and the verifier sees
 * fixed-size stack buffers.
 *
 *   | eth | IPv4 (IHL*4, options skipped) | L4 header
 *
 * IPv4 fragments: the first fragment (offset 0, MF set) carries the L4
 * header; its ports are remembered in sl_frag by (saddr, daddr, id, proto)
 * and looked up for the fragments that follow, which carry no L4 header and
 * must never be parsed as if they did.
 */
#ifndef SLUICE_PARSE_H
#define SLUICE_PARSE_H

#include "maps.h"

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

enum sl_l3 {
	SL_L3_IPV4 = 0,
	SL_L3_IPV6 = 1,
	SL_L3_OTHER = 2,
};

/* The parsed view of one packet. Not shared with Go. */
struct sl_pkt {
	union sl_addr saddr;
	union sl_addr daddr;
	__be16 sport;
	__be16 dport;
	__u8 family;
	__u8 proto;
	__u8 tcp_flags;
	/* ICMP error carrying the header of a packet of another flow: the
	 * tuple above is then the inner (embedded) packet's tuple, as the
	 * original flow's sender sent it. */
	__u8 icmp_error;
	__u8 first_frag; /* offset 0 with MF set */
	__u8 later_frag; /* a non-first fragment: no L4 header */
	__u16 l4_off;    /* offset of the L4 header (first fragments and whole packets) */
	__be32 outer_saddr; /* the IPv4 header's own source, even for ICMP errors */
	__be32 outer_daddr; /* ... and destination */
	__u16 inner_off;    /* ICMP errors: offset of the embedded IP header */
	__u16 inner_l4_off; /* ICMP errors: offset of the embedded L4 header */
};


static __always_inline bool icmp_is_error(__u8 type)
{
	/* Not ICMP_REDIRECT: it quotes a packet too, but is routing advice,
	 * not an error of its flow (see SL_DROP_ICMP_REDIRECT). */
	return type == ICMP_DEST_UNREACH || type == ICMP_SOURCE_QUENCH ||
	       type == ICMP_TIME_EXCEEDED || type == ICMP_PARAMETERPROB;
}

/*
 * Ports of an L4 header at off. ICMP echo uses the identifier as the port
 * on the requester's side: a request is (id, 0) and its reply (0, id), so
 * the reply is the reverse tuple of the request.
 */
static __always_inline int parse_l4(struct __sk_buff *skb, __u32 off, __u8 proto,
				    __be16 *sport, __be16 *dport, __u8 *tcp_flags,
				    __u8 *icmp_type)
{
	switch (proto) {
	case IPPROTO_TCP: {
		__u8 th[14];

		if (bpf_skb_load_bytes(skb, off, th, sizeof(th)) < 0)
			return SL_DROP_CT_INVALID_HDR;
		__builtin_memcpy(sport, &th[0], 2);
		__builtin_memcpy(dport, &th[2], 2);
		*tcp_flags = th[13];
		return SL_DROP_NONE;
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		/* SCTP's common header starts with the ports, as UDP's does. */
		__be16 ports[2];

		if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) < 0)
			return SL_DROP_CT_INVALID_HDR;
		*sport = ports[0];
		*dport = ports[1];
		return SL_DROP_NONE;
	}
	case IPPROTO_ICMP: {
		struct icmphdr ih;

		if (bpf_skb_load_bytes(skb, off, &ih, sizeof(ih)) < 0)
			return SL_DROP_CT_INVALID_HDR;
		*icmp_type = ih.type;
		if (ih.type == ICMP_ECHO) {
			*sport = ih.un.echo.id;
			*dport = 0;
		} else if (ih.type == ICMP_ECHOREPLY) {
			*sport = 0;
			*dport = ih.un.echo.id;
		} else {
			*sport = 0;
			*dport = 0;
		}
		return SL_DROP_NONE;
	}
	default:
		/* Other protocols are tracked by addresses and protocol alone. */
		*sport = 0;
		*dport = 0;
		return SL_DROP_NONE;
	}
}

/*
 * The header embedded in an ICMP error: the packet we (or our peer) sent
 * that triggered it. Parsed into pkt as that packet's own tuple.
 */
static __always_inline int parse_icmp_inner(struct __sk_buff *skb, __u32 off, struct sl_pkt *pkt)
{
	struct iphdr inner;
	__u8 unused_flags = 0, unused_type = 0;
	__u32 ihl;
	int ret;

	if (bpf_skb_load_bytes(skb, off, &inner, sizeof(inner)) < 0)
		return SL_DROP_CT_INVALID_HDR;
	if (inner.version != 4 || inner.ihl < 5)
		return SL_DROP_INVALID_PACKET;
	ihl = inner.ihl * 4;
	pkt->inner_off = off;
	pkt->inner_l4_off = off + ihl;
	pkt->saddr.addr4 = inner.saddr;
	pkt->daddr.addr4 = inner.daddr;
	pkt->proto = inner.protocol;
	pkt->icmp_error = 1;
	/* Only a first (or unfragmented) inner packet has an L4 header. */
	if (inner.frag_off & bpf_htons(IP_OFFSET)) {
		pkt->sport = 0;
		pkt->dport = 0;
		return SL_DROP_NONE;
	}
	ret = parse_l4(skb, off + ihl, inner.protocol, &pkt->sport, &pkt->dport,
		       &unused_flags, &unused_type);
	/* RFC 792 only promises 8 bytes of the inner L4 header: no TCP flags. */
	if (ret == SL_DROP_CT_INVALID_HDR && inner.protocol == IPPROTO_TCP) {
		__be16 ports[2];

		if (bpf_skb_load_bytes(skb, off + ihl, ports, sizeof(ports)) < 0)
			return SL_DROP_CT_INVALID_HDR;
		pkt->sport = ports[0];
		pkt->dport = ports[1];
		return SL_DROP_NONE;
	}
	return ret;
}

/*
 * Parse an Ethernet frame. Returns the L3 kind in *l3, and a drop reason
 * (SL_DROP_NONE when the packet is fine) for IPv4.
 */
static __always_inline int parse_packet(struct __sk_buff *skb, struct sl_pkt *pkt, enum sl_l3 *l3)
{
	struct iphdr iph;
	__u16 frag_off;
	__u32 ihl, off;
	__u8 icmp_type = 0;
	int ret;

	__builtin_memset(pkt, 0, sizeof(*pkt));
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		*l3 = SL_L3_IPV6;
		return SL_DROP_NONE;
	}
	if (skb->protocol != bpf_htons(ETH_P_IP)) {
		*l3 = SL_L3_OTHER;
		return SL_DROP_NONE;
	}
	*l3 = SL_L3_IPV4;
	pkt->family = AF_INET;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &iph, sizeof(iph)) < 0)
		return SL_DROP_CT_INVALID_HDR;
	if (iph.version != 4 || iph.ihl < 5)
		return SL_DROP_INVALID_PACKET;
	ihl = iph.ihl * 4;
	if (bpf_ntohs(iph.tot_len) < ihl)
		return SL_DROP_INVALID_PACKET;

	pkt->saddr.addr4 = iph.saddr;
	pkt->daddr.addr4 = iph.daddr;
	pkt->outer_saddr = iph.saddr;
	pkt->outer_daddr = iph.daddr;
	pkt->proto = iph.protocol;
	off = ETH_HLEN + ihl;

	frag_off = bpf_ntohs(iph.frag_off);
	if (frag_off & IP_OFFSET) {
		/* A later fragment: no L4 header here, take the first one's ports. */
		struct sl_frag_key fk = {
			.saddr = iph.saddr, .daddr = iph.daddr,
			.id = iph.id, .proto = iph.protocol,
		};
		struct sl_frag_val *fv = bpf_map_lookup_elem(&sl_frag, &fk);

		if (!fv)
			return SL_DROP_FRAG_NOT_FOUND;
		pkt->later_frag = 1;
		pkt->sport = fv->sport;
		pkt->dport = fv->dport;
		return SL_DROP_NONE;
	}

	pkt->l4_off = off;
	ret = parse_l4(skb, off, iph.protocol, &pkt->sport, &pkt->dport,
		       &pkt->tcp_flags, &icmp_type);
	if (ret != SL_DROP_NONE)
		return ret;

	if (frag_off & IP_MF)
		pkt->first_frag = 1;

	if (iph.protocol == IPPROTO_ICMP && icmp_is_error(icmp_type))
		return parse_icmp_inner(skb, off + sizeof(struct icmphdr), pkt);
	/* Endpoints drop it; the uplink leaves whatever fails to parse to
	 * the node's stack, whose own settings decide. */
	if (iph.protocol == IPPROTO_ICMP && icmp_type == ICMP_REDIRECT)
		return SL_DROP_ICMP_REDIRECT;
	return SL_DROP_NONE;
}

/*
 * An ICMP error that belongs to no tracked connection is a packet of its
 * own: from its sender to its receiver, protocol ICMP, no ports. Turn
 * pkt's view (the embedded packet's tuple) into that, so policy and
 * events judge what is really on the wire.
 */
static __always_inline void pkt_icmp_outer(struct sl_pkt *pkt)
{
	__builtin_memset(&pkt->saddr, 0, sizeof(pkt->saddr));
	__builtin_memset(&pkt->daddr, 0, sizeof(pkt->daddr));
	pkt->saddr.addr4 = pkt->outer_saddr;
	pkt->daddr.addr4 = pkt->outer_daddr;
	pkt->proto = IPPROTO_ICMP;
	pkt->sport = 0;
	pkt->dport = 0;
	pkt->icmp_error = 0;
}

/* Remember a first fragment's ports. Returns false if the table refused (counted by the caller). */
static __always_inline bool frag_remember(struct __sk_buff *skb, const struct sl_pkt *pkt)
{
	struct iphdr iph;
	struct sl_frag_key fk = {};
	struct sl_frag_val fv = { .sport = pkt->sport, .dport = pkt->dport };

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &iph, sizeof(iph)) < 0)
		return false;
	fk.saddr = iph.saddr;
	fk.daddr = iph.daddr;
	fk.id = iph.id;
	fk.proto = iph.protocol;
	return bpf_map_update_elem(&sl_frag, &fk, &fv, BPF_ANY) == 0;
}

#endif /* SLUICE_PARSE_H */
