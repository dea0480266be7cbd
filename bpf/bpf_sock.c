// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket-LB programs, attached to the node's cgroup root so they see the
 * sockets of every pod (and, unless limited, of the node itself).
 *
 *   cgroup/connect4      connect() to a VIP → backend
 *   cgroup/sendmsg4      unconnected UDP sendto() a VIP → backend
 *   cgroup/recvmsg4      recvfrom() a backend → shown as the VIP
 *   cgroup/getpeername4  getpeername() → the VIP
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
	return sock_translate(ctx, true);
}

SEC("cgroup/sendmsg4")
int sl_sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock_translate(ctx, false);
}

SEC("cgroup/recvmsg4")
int sl_sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock_rev_translate(ctx);
}

SEC("cgroup/getpeername4")
int sl_sock_getpeername4(struct bpf_sock_addr *ctx)
{
	return sock_rev_translate(ctx);
}
