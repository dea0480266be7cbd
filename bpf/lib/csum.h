/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Checksums and the IP header fields rewrites touch. */
#ifndef SLUICE_CSUM_H
#define SLUICE_CSUM_H

#include <stddef.h>

#include "common.h"

/* Offsets in an Ethernet frame of the IPv4 header's checksum and addresses. */
#define IP_CSUM_OFF (ETH_HLEN + offsetof(struct iphdr, check))
#define IP_SRC_OFF (ETH_HLEN + offsetof(struct iphdr, saddr))
#define IP_DST_OFF (ETH_HLEN + offsetof(struct iphdr, daddr))
/* ... and of the IPv6 header's addresses (it has no checksum). */
#define IP6_SRC_OFF (ETH_HLEN + offsetof(struct ipv6hdr, saddr))
#define IP6_DST_OFF (ETH_HLEN + offsetof(struct ipv6hdr, daddr))

/* Fold a 64-bit one's complement sum (bpf_csum_diff's) into a checksum. */
static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/* Update the L4 (or ICMPv6) checksum at off for an IPv6 address going
 * from `from` to `to`: by the 16 bytes' diff (flags: BPF_F_PSEUDO_HDR when
 * the address is in the pseudo-header, BPF_F_MARK_MANGLED_0 for UDP). */
static __always_inline int csum_replace_addr6(struct __sk_buff *skb, __u32 off, const union sl_addr *from,
					      const union sl_addr *to, __u64 flags)
{
	__s64 diff = bpf_csum_diff((__be32 *)from->addr6, 16, (__be32 *)to->addr6, 16, 0);

	if (diff < 0)
		return -1;
	return bpf_l4_csum_replace(skb, off, 0, diff, flags);
}

#endif /* SLUICE_CSUM_H */
