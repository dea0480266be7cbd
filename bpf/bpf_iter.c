// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket iterator: destroys connected UDP sockets (IPv4 and IPv6, v4-mapped
 * peers included) whose peer is a backend
 * being removed (listed in sl_sock_destroy). Socket LB connected them to
 * the backend directly, so nothing on the packet path can redirect them:
 * destroying them makes their owners see ECONNABORTED and reconnect, which
 * picks a live backend. An iterator sees only the network namespace it is
 * opened in, so the agent runs it in each pod's namespace.
 */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/metrics.h"

/*
 * Just the kernel fields read here, relocated against the running kernel's
 * BTF (CO-RE): no kernel headers beyond UAPI are needed.
 */
struct sock_common {
	union {
		struct {
			__be32 skc_daddr;
			__be32 skc_rcv_saddr;
		};
	};
	union {
		struct {
			__be16 skc_dport;
			__u16 skc_num;
		};
	};
	unsigned short skc_family;
	struct in6_addr skc_v6_daddr;
} __attribute__((preserve_access_index));

struct udp_sock;

struct bpf_iter_meta;

struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
} __attribute__((preserve_access_index));

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("iter/udp")
int sl_destroy_udp(struct bpf_iter__udp *ctx)
{
	struct sock_common *sk = (struct sock_common *)ctx->udp_sk;
	struct sl_sock_destroy_key key = {};

	if (!sk || !sk->skc_dport)
		return 0;
	if (sk->skc_family == AF_INET) {
		key.addr.addr4 = sk->skc_daddr;
	} else if (sk->skc_family == AF_INET6) {
		__u32 w0 = sk->skc_v6_daddr.in6_u.u6_addr32[0], w1 = sk->skc_v6_daddr.in6_u.u6_addr32[1];
		__u32 w2 = sk->skc_v6_daddr.in6_u.u6_addr32[2], w3 = sk->skc_v6_daddr.in6_u.u6_addr32[3];

		if (w0 == 0 && w1 == 0 && w2 == bpf_htonl(0xffff)) {
			/* A dual-stack socket connected to an IPv4 backend at
			 * its v4-mapped address: listed as IPv4. */
			key.addr.addr4 = w3;
		} else {
			__u32 *a = (__u32 *)key.addr.addr6;

			a[0] = w0;
			a[1] = w1;
			a[2] = w2;
			a[3] = w3;
		}
	} else {
		return 0;
	}
	key.port = sk->skc_dport;
	key.proto = IPPROTO_UDP;
	if (!bpf_map_lookup_elem(&sl_sock_destroy, &key))
		return 0;
	if (bpf_sock_destroy(sk) == 0)
		count(SL_METRIC_SOCK_DESTROYED, SL_DIR_EGRESS, 0, 0);
	return 0;
}
