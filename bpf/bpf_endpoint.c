// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Endpoint programs, attached to each local pod's host-side interface.
 *
 *        pod netns              node netns
 *   [ eth0 ] ========= veth ========= [ lxcXXXX ]
 *                                       tc ingress: sl_from_ep (pod egress)
 *                                       tc egress:  sl_to_ep   (pod ingress)
 *
 * Entry points and the BTF anchors of the types shared with Go only; the
 * logic is in lib/endpoint.h and the headers it includes.
 */
#include "lib/endpoint.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int sl_from_ep(struct __sk_buff *skb)
{
	return handle(skb, SL_DIR_EGRESS);
}

SEC("tc")
int sl_to_ep(struct __sk_buff *skb)
{
	return handle(skb, SL_DIR_INGRESS);
}

/* Anchor the shared enums in BTF so bpf2go can export them with -type;
 * nothing in the programs names these types directly. Const, so they sit
 * in .rodata with the runtime configuration instead of adding a .bss map. */
const enum sl_dir *const _sl_dir __attribute__((unused)) = 0;
const enum sl_drop_reason *const _sl_drop_reason __attribute__((unused)) = 0;
const enum sl_metric *const _sl_metric __attribute__((unused)) = 0;
const enum sl_ct_state *const _sl_ct_state __attribute__((unused)) = 0;
const enum sl_event_type *const _sl_event_type __attribute__((unused)) = 0;
const enum sl_event_flag *const _sl_event_flag __attribute__((unused)) = 0;
const struct sl_event *const _sl_event __attribute__((unused)) = 0;
const enum sl_ct_scope *const _sl_ct_scope __attribute__((unused)) = 0;
const enum sl_lb_backend_state *const _sl_lb_backend_state __attribute__((unused)) = 0;
const enum sl_policy_verdict *const _sl_policy_verdict __attribute__((unused)) = 0;
const enum sl_identity_reserved *const _sl_identity_reserved __attribute__((unused)) = 0;
const enum sl_flow_events *const _sl_flow_events __attribute__((unused)) = 0;
const enum sl_ep_flag *const _sl_ep_flag __attribute__((unused)) = 0;
const enum sl_ct_pol_flag *const _sl_ct_pol_flag __attribute__((unused)) = 0;
const enum sl_ct_nat_flag *const _sl_ct_nat_flag __attribute__((unused)) = 0;
const enum sl_lb_flag *const _sl_lb_flag __attribute__((unused)) = 0;
const enum sl_lb_backend_flag *const _sl_lb_backend_flag __attribute__((unused)) = 0;
const enum sl_tcp_flag *const _sl_tcp_flag __attribute__((unused)) = 0;
const enum sl_mark *const _sl_mark __attribute__((unused)) = 0;
const enum sl_sock_lb_mode *const _sl_sock_lb_mode __attribute__((unused)) = 0;
const enum sl_lb_family *const _sl_lb_family __attribute__((unused)) = 0;
