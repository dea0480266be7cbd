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

#endif /* SLUICE_CSUM_H */
