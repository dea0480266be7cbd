// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Host programs, attached to the node's uplinks (the interfaces that carry
 * its addresses), for service frontends reached from outside the node.
 *
 *   uplink tc ingress: sl_from_netdev   (DNAT, SNAT replies back)
 *   uplink tc egress:  sl_to_netdev     (replies of local backends)
 *
 * Entry points only; the logic is in lib/nodeport.h.
 */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/metrics.h"
#include "lib/events.h"
#include "lib/conntrack.h"
#include "lib/lb.h"
#include "lib/nodeport.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int sl_from_netdev(struct __sk_buff *skb)
{
	return host_ingress(skb);
}

SEC("tc")
int sl_to_netdev(struct __sk_buff *skb)
{
	return host_egress(skb);
}
