/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet parsing into a flow tuple.
 *
 * Headers are copied with bpf_skb_load_bytes rather than read in place, so
 * parsing works the same on linear and paged skbs and the verifier sees
 * fixed-size stack buffers.
 *
 *   | eth | IPv4 (IHL*4, options skipped)                  | L4 header
 *   | eth | IPv6 | extension headers (at most SL_IPV6_MAX_EXT) | L4 header
 *
 * Fragments: the first fragment (offset 0, more fragments) carries the L4
 * header; its ports are remembered, in sl_frag by (saddr, daddr, id, proto)
 * for IPv4 and in sl_frag6 by (saddr, daddr, 32-bit id, the Fragment
 * header's next header) for IPv6, and looked up for the fragments that
 * follow, which carry no L4 header and must never be parsed as if they did.
 *
 * IPv6 extension headers (hop-by-hop, routing, destination options,
 * fragment, authentication) are walked in a bounded loop; a longer chain,
 * one cut short or one with a header the walk does not know is dropped
 * (SL_DROP_IPV6_EXT_CHAIN): a header the datapath cannot see past could
 * hide the ports policy judges.
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
	/* IPv6 neighbour discovery or MLD: link-local control traffic that
	 * passes untracked and unjudged (a pod without it has no neighbours). */
	__u8 nd;
	__u8 frag_proto; /* IPv6 fragments: the Fragment header's next header */
	__u16 l4_off;    /* offset of the L4 header (first fragments and whole packets) */
	__be32 frag_id;  /* IPv6 fragments: the Fragment header's identification */
	union sl_addr outer_saddr; /* the IP header's own source, even for ICMP errors */
	union sl_addr outer_daddr; /* ... and destination */
	__u16 inner_off;    /* ICMP errors: offset of the embedded IP header */
	__u16 inner_l4_off; /* ICMP errors: offset of the embedded L4 header */
};

/* IPv6 extension headers (RFC 8200 section 4, RFC 4302) and the most the
 * walk follows: real chains carry two or three; a longer one is an attack
 * on whoever parses it. */
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_NONE 59
#define NEXTHDR_DEST 60
#define NEXTHDR_MOBILITY 135
#define NEXTHDR_HIP 139
#define NEXTHDR_SHIM6 140
#define SL_IPV6_MAX_EXT 6
#define IP6_MF 0x0001
#define IP6_OFFSET 0xfff8

/* What the walk found in a Fragment header, if any. */
struct ipv6_frag {
	__be32 id;
	__u16 off_flags; /* host order: offset (high 13 bits) and M (bit 0) */
	__u8 nexthdr;
	__u8 seen;
};

/* Extension headers the walk does not follow: they have a length field
 * of their own format or none (RFC 7045 asks to treat them as headers). */
static __always_inline bool ipv6_ext_unknown(__u8 nexthdr)
{
	return nexthdr == NEXTHDR_MOBILITY || nexthdr == NEXTHDR_HIP || nexthdr == NEXTHDR_SHIM6 ||
	       nexthdr == 253 || nexthdr == 254;
}


static __always_inline bool icmp_is_error(__u8 type)
{
	/* Not ICMP_REDIRECT: it quotes a packet too, but is routing advice,
	 * not an error of its flow (see SL_DROP_ICMP_REDIRECT). */
	return type == ICMP_DEST_UNREACH || type == ICMP_SOURCE_QUENCH ||
	       type == ICMP_TIME_EXCEEDED || type == ICMP_PARAMETERPROB;
}

static __always_inline bool icmp6_is_error(__u8 type)
{
	return type == ICMPV6_DEST_UNREACH || type == ICMPV6_PKT_TOOBIG ||
	       type == ICMPV6_TIME_EXCEED || type == ICMPV6_PARAMPROB;
}

/* Neighbour discovery (133-136; 137, redirect, is dropped before this
 * is asked) and multicast listener discovery (130-132, 143): what a pod's
 * IPv6 stack needs of its link. */
static __always_inline bool icmp6_is_nd(__u8 type)
{
	return (type >= ICMPV6_MLD_QUERY && type <= ICMPV6_ND_REDIRECT) || type == ICMPV6_MLD2_REPORT;
}

/* The hop limit a neighbour discovery or MLD message of this type is sent
 * with, and which its receiver insists on (RFC 4861 7.1.1: 255; RFC 2710
 * 3 and RFC 3810 5: 1): 255 proves it was not routed, 1 that it will not
 * be. */
static __always_inline __u8 icmp6_nd_hop_limit(__u8 type)
{
	return type >= ICMPV6_ND_ROUTER_SOLICIT && type <= ICMPV6_ND_REDIRECT ? 255 : 1;
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
	case IPPROTO_ICMPV6: {
		/* Type, code, checksum, then the echo identifier, as ICMPv4. */
		struct icmphdr ih;

		if (bpf_skb_load_bytes(skb, off, &ih, sizeof(ih)) < 0)
			return SL_DROP_CT_INVALID_HDR;
		*icmp_type = ih.type;
		*sport = ih.type == ICMPV6_ECHO_REQUEST ? ih.un.echo.id : 0;
		*dport = ih.type == ICMPV6_ECHO_REPLY ? ih.un.echo.id : 0;
		return SL_DROP_NONE;
	}
	default:
		/* Other protocols are tracked by addresses and protocol alone. */
		*sport = 0;
		*dport = 0;
		return SL_DROP_NONE;
	}
}

/* A later IPv4 fragment: no L4 header here; take the ports its first
 * fragment left in frags (sl_frag) under key. (IPv6's take the protocol
 * too: parse_ipv6.) */
static __always_inline int frag_later(struct sl_pkt *pkt, void *frags, const void *key)
{
	struct sl_frag_val *fv = bpf_map_lookup_elem(frags, key);

	if (!fv)
		return SL_DROP_FRAG_NOT_FOUND;
	pkt->later_frag = 1;
	pkt->sport = fv->sport;
	pkt->dport = fv->dport;
	return SL_DROP_NONE;
}

/*
 * The L4 header of a packet embedded in an ICMP error, at off: its ports
 * into pkt. RFC 792 only promises 8 bytes of it (RFC 4443 more, but a
 * router may cut), so a TCP header too short for its flags still gives
 * its ports.
 */
static __always_inline int parse_inner_l4(struct __sk_buff *skb, __u32 off, __u8 proto, struct sl_pkt *pkt)
{
	__u8 unused_flags = 0, unused_type = 0;
	int ret;

	pkt->inner_l4_off = off;
	ret = parse_l4(skb, off, proto, &pkt->sport, &pkt->dport, &unused_flags, &unused_type);
	if (ret == SL_DROP_CT_INVALID_HDR && proto == IPPROTO_TCP) {
		__be16 ports[2];

		if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) < 0)
			return SL_DROP_CT_INVALID_HDR;
		pkt->sport = ports[0];
		pkt->dport = ports[1];
		return SL_DROP_NONE;
	}
	return ret;
}

/*
 * The header embedded in an ICMP error: the packet we (or our peer) sent
 * that triggered it. Parsed into pkt as that packet's own tuple.
 */
static __always_inline int parse_icmp_inner(struct __sk_buff *skb, __u32 off, struct sl_pkt *pkt)
{
	struct iphdr inner;
	__u32 ihl;

	if (bpf_skb_load_bytes(skb, off, &inner, sizeof(inner)) < 0)
		return SL_DROP_CT_INVALID_HDR;
	if (inner.version != 4 || inner.ihl < 5)
		return SL_DROP_INVALID_PACKET;
	ihl = inner.ihl * 4;
	pkt->inner_off = off;
	pkt->saddr.addr4 = inner.saddr;
	pkt->daddr.addr4 = inner.daddr;
	pkt->proto = inner.protocol;
	pkt->icmp_error = 1;
	/* Only a first (or unfragmented) inner packet has an L4 header. */
	if (inner.frag_off & bpf_htons(IP_OFFSET)) {
		pkt->inner_l4_off = off + ihl;
		pkt->sport = 0;
		pkt->dport = 0;
		return SL_DROP_NONE;
	}
	return parse_inner_l4(skb, off + ihl, inner.protocol, pkt);
}

/*
 * Walk IPv6 extension headers from *off, whose type is *nexthdr, to the
 * transport header: on return *off is its offset and *nexthdr its
 * protocol. A Fragment header is reported in frag; after a non-first
 * fragment's Fragment header the walk stops (the rest is payload).
 */
static __always_inline int ipv6_walk(struct __sk_buff *skb, __u32 *off, __u8 *nexthdr, struct ipv6_frag *frag)
{
	__u8 h[8];
	int i;

	for (i = 0; i < SL_IPV6_MAX_EXT; i++) {
		switch (*nexthdr) {
		case NEXTHDR_HOP:
		case NEXTHDR_ROUTING:
		case NEXTHDR_DEST:
			/* Length in 8-octet units, not counting the first 8. */
			if (bpf_skb_load_bytes(skb, *off, h, 2) < 0)
				return SL_DROP_IPV6_EXT_CHAIN;
			*nexthdr = h[0];
			*off += ((__u32)h[1] + 1) * 8;
			break;
		case NEXTHDR_AUTH:
			/* Length in 4-octet units, not counting the first 8. */
			if (bpf_skb_load_bytes(skb, *off, h, 2) < 0)
				return SL_DROP_IPV6_EXT_CHAIN;
			*nexthdr = h[0];
			*off += ((__u32)h[1] + 2) * 4;
			break;
		case NEXTHDR_FRAGMENT:
			if (bpf_skb_load_bytes(skb, *off, h, 8) < 0)
				return SL_DROP_IPV6_EXT_CHAIN;
			*nexthdr = h[0];
			*off += 8;
			frag->seen = 1;
			frag->nexthdr = h[0];
			frag->off_flags = ((__u16)h[2] << 8) | h[3];
			__builtin_memcpy(&frag->id, &h[4], 4);
			if (frag->off_flags & IP6_OFFSET)
				return SL_DROP_NONE;
			break;
		default:
			return ipv6_ext_unknown(*nexthdr) ? SL_DROP_IPV6_EXT_CHAIN : SL_DROP_NONE;
		}
	}
	/* Still at an extension header after the bound: too long a chain. */
	if (*nexthdr == NEXTHDR_HOP || *nexthdr == NEXTHDR_ROUTING || *nexthdr == NEXTHDR_DEST ||
	    *nexthdr == NEXTHDR_AUTH || *nexthdr == NEXTHDR_FRAGMENT || ipv6_ext_unknown(*nexthdr))
		return SL_DROP_IPV6_EXT_CHAIN;
	return SL_DROP_NONE;
}

/* The IPv6 packet embedded in an ICMPv6 error, at off, as parse_icmp_inner. */
static __always_inline int parse_icmp6_inner(struct __sk_buff *skb, __u32 off, struct sl_pkt *pkt)
{
	struct ipv6hdr inner;
	struct ipv6_frag frag = {};
	__u8 nexthdr;
	int ret;

	if (bpf_skb_load_bytes(skb, off, &inner, sizeof(inner)) < 0)
		return SL_DROP_CT_INVALID_HDR;
	if (inner.version != 6)
		return SL_DROP_INVALID_PACKET;
	pkt->inner_off = off;
	__builtin_memcpy(pkt->saddr.addr6, &inner.saddr, 16);
	__builtin_memcpy(pkt->daddr.addr6, &inner.daddr, 16);
	pkt->icmp_error = 1;
	nexthdr = inner.nexthdr;
	off += sizeof(inner);
	ret = ipv6_walk(skb, &off, &nexthdr, &frag);
	if (ret != SL_DROP_NONE)
		return ret;
	pkt->proto = nexthdr;
	if (frag.off_flags & IP6_OFFSET) {
		pkt->inner_l4_off = off;
		pkt->sport = 0;
		pkt->dport = 0;
		return SL_DROP_NONE;
	}
	return parse_inner_l4(skb, off, nexthdr, pkt);
}

/* An IPv6 packet (after the Ethernet header) into pkt; returns a drop reason. */
static __always_inline int parse_ipv6(struct __sk_buff *skb, struct sl_pkt *pkt)
{
	struct ipv6hdr ip6;
	struct ipv6_frag frag = {};
	__u32 off = ETH_HLEN + sizeof(ip6);
	__u8 nexthdr, icmp_type = 0;
	int ret;

	pkt->family = AF_INET6;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
		return SL_DROP_CT_INVALID_HDR;
	if (ip6.version != 6)
		return SL_DROP_INVALID_PACKET;
	__builtin_memcpy(pkt->saddr.addr6, &ip6.saddr, 16);
	__builtin_memcpy(pkt->daddr.addr6, &ip6.daddr, 16);
	pkt->outer_saddr = pkt->saddr;
	pkt->outer_daddr = pkt->daddr;
	nexthdr = ip6.nexthdr;
	ret = ipv6_walk(skb, &off, &nexthdr, &frag);
	pkt->proto = nexthdr;
	if (ret != SL_DROP_NONE)
		return ret;
	if (frag.seen) {
		pkt->frag_id = frag.id;
		pkt->frag_proto = frag.nexthdr;
	}
	if (frag.off_flags & IP6_OFFSET) {
		/* A later fragment: no L4 header here, take the first one's ports. */
		struct sl_frag6_key fk = { .saddr = pkt->saddr, .daddr = pkt->daddr, .id = frag.id, .proto = frag.nexthdr };
		struct sl_frag6_val *fv = bpf_map_lookup_elem(&sl_frag6, &fk);

		if (!fv)
			return SL_DROP_FRAG_NOT_FOUND;
		pkt->later_frag = 1;
		pkt->sport = fv->sport;
		pkt->dport = fv->dport;
		pkt->proto = fv->proto;
		return SL_DROP_NONE;
	}

	pkt->l4_off = off;
	ret = parse_l4(skb, off, nexthdr, &pkt->sport, &pkt->dport, &pkt->tcp_flags, &icmp_type);
	if (ret != SL_DROP_NONE)
		return ret;
	if (frag.off_flags & IP6_MF)
		pkt->first_frag = 1;
	if (nexthdr == IPPROTO_ICMPV6) {
		/* As ICMP_REDIRECT for IPv4: routing advice to a pod, whose
		 * link-local source (the router's) a neighbouring pod can
		 * forge, since a pod's own fe80::/10 passes anti-spoofing. */
		if (icmp_type == ICMPV6_ND_REDIRECT)
			return SL_DROP_ICMP_REDIRECT;
		if (icmp6_is_nd(icmp_type)) {
			/* Neighbour discovery passes endpoints without policy,
			 * so only what a link's stack accepts passes: a hop
			 * limit other than its type's is a message routed here
			 * from beyond the link, or made up, and a fragmented one
			 * is what RFC 6980 bids receivers drop (its later
			 * fragments would need no policy either). */
			if (frag.seen || ip6.hop_limit != icmp6_nd_hop_limit(icmp_type))
				return SL_DROP_FORBIDDEN_ICMP6;
			pkt->nd = 1;
		} else if (icmp6_is_error(icmp_type))
			return parse_icmp6_inner(skb, off + sizeof(struct icmphdr), pkt);
	}
	return SL_DROP_NONE;
}

/*
 * Parse an Ethernet frame. Returns the L3 kind in *l3, and a drop reason
 * (SL_DROP_NONE when the packet is fine) for IPv4 and IPv6.
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
		return parse_ipv6(skb, pkt);
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
	pkt->outer_saddr.addr4 = iph.saddr;
	pkt->outer_daddr.addr4 = iph.daddr;
	pkt->proto = iph.protocol;
	off = ETH_HLEN + ihl;

	frag_off = bpf_ntohs(iph.frag_off);
	if (frag_off & IP_OFFSET) {
		/* A later fragment: no L4 header here, take the first one's ports. */
		struct sl_frag_key fk = {
			.saddr = iph.saddr, .daddr = iph.daddr,
			.id = iph.id, .proto = iph.protocol,
		};

		return frag_later(pkt, &sl_frag, &fk);
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
	pkt->saddr = pkt->outer_saddr;
	pkt->daddr = pkt->outer_daddr;
	pkt->proto = pkt->family == AF_INET6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP;
	pkt->sport = 0;
	pkt->dport = 0;
	pkt->icmp_error = 0;
}

/* Remember a first fragment's ports; family is a constant, so IPv4's
 * callers carry no IPv6 code. Returns false if the table refused (counted
 * by the caller). */
static __always_inline bool frag_remember(struct __sk_buff *skb, const struct sl_pkt *pkt, const __u8 family)
{
	struct iphdr iph;
	struct sl_frag_key fk = {};
	struct sl_frag_val fv = { .sport = pkt->sport, .dport = pkt->dport };

	if (family == AF_INET6) {
		struct sl_frag6_key fk6 = { .saddr = pkt->outer_saddr, .daddr = pkt->outer_daddr,
					    .id = pkt->frag_id, .proto = pkt->frag_proto };
		struct sl_frag6_val fv6 = { .sport = pkt->sport, .dport = pkt->dport, .proto = pkt->proto };

		return bpf_map_update_elem(&sl_frag6, &fk6, &fv6, BPF_ANY) == 0;
	}
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &iph, sizeof(iph)) < 0)
		return false;
	fk.saddr = iph.saddr;
	fk.daddr = iph.daddr;
	fk.id = iph.id;
	fk.proto = iph.protocol;
	return bpf_map_update_elem(&sl_frag, &fk, &fv, BPF_ANY) == 0;
}

#endif /* SLUICE_PARSE_H */
