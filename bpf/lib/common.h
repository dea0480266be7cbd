/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Includes, runtime configuration and return codes shared by all programs. */
#ifndef SLUICE_COMMON_H
#define SLUICE_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stdbool.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "sluice/types.h"

/*
 * ICMPv4 (RFC 792). <linux/icmp.h> is not included: through <linux/if.h> it
 * pulls glibc's <sys/socket.h>, whose per-architecture stubs a BPF target
 * cannot select (it wants gnu/stubs-32.h on x86-64). Only what the datapath
 * reads is declared.
 */
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_SOURCE_QUENCH 4
#define ICMP_REDIRECT 5
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12
#define ICMP_PORT_UNREACH 3 /* code of ICMP_DEST_UNREACH */
#define ICMP_FRAG_NEEDED 4  /* code of ICMP_DEST_UNREACH */

struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	union {
		struct {
			__be16 id;
			__be16 sequence;
		} echo;
		__be32 gateway;
		struct {
			__be16 __unused;
			__be16 mtu;
		} frag;
	} un;
};

/* ICMPv6 (RFC 4443) and what the datapath reads of it; <linux/icmpv6.h>
 * is left out for the same reason as <linux/icmp.h>. */
#ifndef IPPROTO_ICMPV6
#define IPPROTO_ICMPV6 58
#endif
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PORT_UNREACH 4 /* code of ICMPV6_DEST_UNREACH */
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_TIME_EXCEED 3
#define ICMPV6_PARAMPROB 4
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129
#define ICMPV6_MLD_QUERY 130
#define ICMPV6_MLD_REDUCTION 132
#define ICMPV6_ND_ROUTER_SOLICIT 133
#define ICMPV6_ND_REDIRECT 137
#define ICMPV6_MLD2_REPORT 143

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

/*
 * Verdicts. SL_NEXT hands the packet to the next program: with tcx that is
 * TCX_NEXT, with legacy cls_bpf in direct-action mode TC_ACT_UNSPEC (both
 * -1), so the CNI's own programs still run after ours.
 */
#define SL_NEXT TC_ACT_UNSPEC
#define SL_DROP TC_ACT_SHOT

#define NSEC_PER_SEC 1000000000ULL

/*
 * bpf_map_update_elem that fails with a negative value on every kernel.
 * Before Linux 6.4 the kernel's map ops returned int, and the JIT calls them
 * directly: an error reaches the program as a positive 64-bit value (-E2BIG
 * is 0xfffffff9), so `< 0` on the helper's long result never saw a full
 * map on 6.1. Only the low 32 bits are meaningful: test them as an int.
 * (`== 0` for success is right either way.)
 */
static __always_inline int map_update(void *map, const void *key, const void *value, __u64 flags)
{
	return (int)bpf_map_update_elem(map, key, value, flags);
}

/*
 * Runtime configuration, set by the agent on the CollectionSpec before load
 * (spec.Variables). Defaults here are only what a bare test load sees.
 */
volatile const __u64 ct_timeout_syn_ns = 60 * NSEC_PER_SEC;
volatile const __u64 ct_timeout_tcp_ns = 6 * 3600 * NSEC_PER_SEC;
volatile const __u64 ct_timeout_close_ns = 10 * NSEC_PER_SEC;
volatile const __u64 ct_timeout_other_ns = 60 * NSEC_PER_SEC;
/* The source a hairpinned connection (a pod landing on itself through its
 * service) appears to come from: link-local, never a real peer. Without it
 * the pod would see source == destination == itself and drop the packet
 * as a martian. 169.254.42.1, as Cilium uses. */
#define SL_SERVICE_LOOPBACK bpf_htonl(0xa9fe2a01)
/* ... and over IPv6: fd00:5c:1ce::42:1, a unique local address no pod or
 * node is given (pkg/datapath ServiceLoopbackIPv6). Its four words in
 * network order. */
#define SL_SERVICE_LOOPBACK6_0 bpf_htonl(0xfd00005c)
#define SL_SERVICE_LOOPBACK6_1 bpf_htonl(0x01ce0000)
#define SL_SERVICE_LOOPBACK6_2 bpf_htonl(0x00000000)
#define SL_SERVICE_LOOPBACK6_3 bpf_htonl(0x00420001)

/* Two IPv6 addresses are the same (word by word: union sl_addr is 4-byte aligned). */
static __always_inline bool addr6_eq(const union sl_addr *a, const union sl_addr *b)
{
	const __u32 *x = (const __u32 *)a->addr6, *y = (const __u32 *)b->addr6;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

/* Two addresses of family (a constant) are the same; IPv4: the first four bytes. */
static __always_inline bool addr_eq(const union sl_addr *a, const union sl_addr *b, const __u8 family)
{
	if (family == AF_INET6)
		return addr6_eq(a, b);
	return a->addr4 == b->addr4;
}

/* An address of family folded into 32 bits, for flow hashes. */
static __always_inline __u32 addr_fold(const union sl_addr *a, const __u8 family)
{
	const __u32 *w = (const __u32 *)a->addr6;

	if (family == AF_INET6)
		return w[0] ^ w[1] ^ w[2] ^ w[3];
	return a->addr4;
}

static __always_inline void service_loopback6(union sl_addr *a)
{
	__u32 *w = (__u32 *)a->addr6;

	w[0] = SL_SERVICE_LOOPBACK6_0;
	w[1] = SL_SERVICE_LOOPBACK6_1;
	w[2] = SL_SERVICE_LOOPBACK6_2;
	w[3] = SL_SERVICE_LOOPBACK6_3;
}

static __always_inline bool is_service_loopback6(const union sl_addr *a)
{
	const __u32 *w = (const __u32 *)a->addr6;

	return w[0] == SL_SERVICE_LOOPBACK6_0 && w[1] == SL_SERVICE_LOOPBACK6_1 &&
	       w[2] == SL_SERVICE_LOOPBACK6_2 && w[3] == SL_SERVICE_LOOPBACK6_3;
}

/* SNAT source ports for external connections to remote backends: above
 * the default ip_local_port_range (32768-60999) and the NodePort range, so
 * they never collide with the node's own sockets. Set by the agent. */
volatile const __u16 snat_port_min = 61000;
volatile const __u16 snat_port_max = 65535;

/* At most one drop event per flow, direction and reason per interval
 * (0: every drop); the drops in between are counted in the next event. */
volatile const __u64 drop_event_interval_ns = NSEC_PER_SEC;

/* Size of the sl_events ring in bytes; the agent sets it with the map. */
volatile const __u64 events_ring_size = 256 * 1024;

/* Entries per Maglev table (a prime); the agent sets it from config. */
volatile const __u32 maglev_size = 16381;
/* Drop packets from a pod whose source address is not the pod's. */
volatile const __u8 enable_antispoof = 1;
/* Decide established connections again when the policy revision changes,
 * and cut those no longer allowed (stricter than most implementations,
 * which only judge new connections). */
volatile const __u8 enable_policy_revoke = 1;
/* BPF host routing: a pod's packet to another pod of this node goes
 * straight to the destination's interface, past the node's IP stack
 * (route.h). */
volatile const __u8 enable_host_routing = 1;

/* Lifetime refreshes closer than this to the stored deadline are skipped,
 * so established flows do not write their CT entry on every packet. */
#define CT_REFRESH_SLACK_NS NSEC_PER_SEC

#endif /* SLUICE_COMMON_H */
