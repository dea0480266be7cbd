// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket-LB programs, attached to the node's cgroup root so they see the
 * sockets of every pod (and, unless limited, of the node itself).
 *
 *   cgroup/connect4/6      connect() to a VIP → backend
 *   cgroup/sendmsg4/6      unconnected UDP sendto() a VIP → backend
 *   cgroup/recvmsg4/6      recvfrom() a backend → shown as the VIP
 *   cgroup/getpeername4/6  getpeername() → the VIP
 *
 * The *6 programs serve IPv6 frontends and, for dual-stack IPv6 sockets,
 * IPv4 ones at v4-mapped addresses (the kernel runs only the *6 hook for
 * those, except sendmsg, where udpv6 hands them to the *4 hook).
 *
 * Entry points only; the logic is in lib/sock.h.
 */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/metrics.h"
#include "lib/events.h"
#include "lib/sock.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("cgroup/connect4")
int sl_sock_connect4(struct bpf_sock_addr *ctx)
{
	return sock_translate(ctx, true, false);
}

SEC("cgroup/sendmsg4")
int sl_sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock_translate(ctx, false, false);
}

SEC("cgroup/recvmsg4")
int sl_sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock_rev_translate(ctx, false);
}

SEC("cgroup/getpeername4")
int sl_sock_getpeername4(struct bpf_sock_addr *ctx)
{
	return sock_rev_translate(ctx, false);
}

SEC("cgroup/connect6")
int sl_sock_connect6(struct bpf_sock_addr *ctx)
{
	return sock_translate(ctx, true, true);
}

SEC("cgroup/sendmsg6")
int sl_sock_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock_translate(ctx, false, true);
}

SEC("cgroup/recvmsg6")
int sl_sock_recvmsg6(struct bpf_sock_addr *ctx)
{
	return sock_rev_translate(ctx, true);
}

SEC("cgroup/getpeername6")
int sl_sock_getpeername6(struct bpf_sock_addr *ctx)
{
	return sock_rev_translate(ctx, true);
}
