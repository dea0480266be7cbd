/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every map, declared once, pinned by name under the agent's --bpf-root.
 * max_entries are defaults; the agent sets the real sizes from config.
 */
#ifndef SLUICE_MAPS_H
#define SLUICE_MAPS_H

#include "common.h"

/* Local endpoints by host-side ifindex. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct sl_endpoint);
	__uint(max_entries, 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_endpoints SEC(".maps");

/* Connection tracking, one view per endpoint. A plain hash, not LRU: the
 * agent garbage-collects expired entries, and a full table is a counted
 * SL_DROP_CT_MAP_FULL drop rather than a silent eviction of a live flow. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sl_ct_key);
	__type(value, struct sl_ct_entry);
	__uint(max_entries, 131072);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_ct SEC(".maps");

/* Ports of IPv4 first fragments, for the fragments that follow. Short-lived,
 * so LRU is right here; a failed insert is counted as SL_METRIC_FRAG_TABLE_FULL. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sl_frag_key);
	__type(value, struct sl_frag_val);
	__uint(max_entries, 8192);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_frag SEC(".maps");

/* Ports of IPv6 first fragments (Fragment extension header), likewise: a
 * table of its own because IPv6 identifications are 32 bits and its
 * addresses 128, and sized by the same setting as sl_frag. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sl_frag6_key);
	__type(value, struct sl_frag6_val);
	__uint(max_entries, 8192);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_frag6 SEC(".maps");

/* Packet and byte counters by metric, direction and drop reason. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct sl_metrics_key);
	__type(value, struct sl_metrics_val);
	__uint(max_entries, 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_metrics SEC(".maps");

/* Counters without a reason (forwarded, passed, related, ...), per CPU,
 * at index metric * 4 + direction: an array, so the count every packet
 * makes is an index, not a hash lookup (it was a third of an established
 * packet's cost). Counts with a reason (drops, audits) stay in sl_metrics. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct sl_metrics_val);
	__uint(max_entries, SL_METRIC_MAX * 16);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_metrics_fast SEC(".maps");

/* Rate limit of drop events per flow (LRU: a flow not dropped for a while
 * is the one to forget). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sl_drop_rl_key);
	__type(value, struct sl_drop_rl_val);
	__uint(max_entries, 8192);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_drop_rl SEC(".maps");

/* Trace and drop events for the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_events SEC(".maps");

/* Service frontends (slot 0) and their backend slots (1..count). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sl_lb_key);
	__type(value, struct sl_lb_entry);
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_lb_svc SEC(".maps");

/* Service backends by ID, including terminating ones. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct sl_lb_backend);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_lb_backends SEC(".maps");

/* Frontend by ID: what replies of translated connections are rewritten to. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct sl_lb_vip);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_lb_revnat SEC(".maps");

/* sessionAffinity: ClientIP. LRU: an entry past its timeout is dead
 * anyway, and eviction only costs a client its stickiness. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sl_lb_affinity_key);
	__type(value, struct sl_lb_affinity_val);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_lb_affinity SEC(".maps");

/* Socket LB reverse translation, by socket cookie and backend. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sl_lb_sock_key);
	__type(value, struct sl_lb_vip);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_lb_sock SEC(".maps");

/* Maglev lookup tables: per frontend ID, an array of maglev_size backend
 * IDs. The agent builds a new inner table and swaps it in with one update,
 * so a packet sees the old table or the new one, never a mix. */
struct sl_maglev_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 16381);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, 4096);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct sl_maglev_inner);
} sl_lb_maglev SEC(".maps");

/* loadBalancerSourceRanges of frontends flagged SL_LB_F_SRC_RANGE: a
 * new connection whose client matches no prefix of its frontend is dropped
 * (SL_DROP_NOT_IN_SRC_RANGE). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct sl_lb_src_range_key);
	__type(value, __u8);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_lb_src_range SEC(".maps");

/* The node's uplinks by ifindex, with their SNAT address; written by the
 * agent when it attaches the uplink programs. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct sl_uplink);
	__uint(max_entries, 64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_uplinks SEC(".maps");

/* SNAT of external connections toward remote backends, by node address
 * and allocated port. A plain hash, not LRU: a mapping lives as long as
 * its connection (lib/nodeport.h) and is never evicted under it; a full
 * map is a counted NAT_PORTS_EXHAUSTED drop. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sl_nat_key);
	__type(value, struct sl_nat_val);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_nat SEC(".maps");

/* Backends being removed: the socket iterator destroys connected UDP
 * sockets pointing at them. Filled by the agent right before a run. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sl_sock_destroy_key);
	__type(value, __u8);
	__uint(max_entries, 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_sock_destroy SEC(".maps");

/* The ipcache: every known address of the cluster (pods of all nodes,
 * node addresses) to its security identity; what matches nothing is world. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct sl_ipcache_key);
	__type(value, struct sl_ipcache_val);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_ipcache SEC(".maps");

/* Inner map key and value types are only reached through the inner map
 * definitions, where clang's BTF would forward-declare them (unsized, so
 * the map could not be loaded): anchor their full definitions. */
const struct sl_policy_key *const _sl_policy_key __attribute__((unused)) = 0;
const struct sl_policy_entry *const _sl_policy_entry __attribute__((unused)) = 0;
const struct sl_policy_cidr_key *const _sl_policy_cidr_key __attribute__((unused)) = 0;

/* Per-endpoint policy, by endpoint ID. The agent builds a complete new
 * inner trie and swaps it in with one update: a packet sees the old policy
 * or the new one. Inner size: --policy-map-max. */
struct sl_policy_inner {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct sl_policy_key);
	__type(value, struct sl_policy_entry);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct sl_policy_inner);
} sl_policy SEC(".maps");

/* Per-endpoint CIDR classes of ipBlock rules, by endpoint ID; swapped in
 * like sl_policy (before it, when classes change). */
struct sl_policy_cidr_inner {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct sl_policy_cidr_key);
	__type(value, __u32);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct sl_policy_cidr_inner);
} sl_policy_cidr SEC(".maps");

/* The policy revision (index 0): bumped by the agent after every change
 * of policy, identities or the ipcache; connections admitted under an
 * older revision are checked again on their next packet. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_policy_rev SEC(".maps");

/* The node's L7 proxy (index 0): how many local endpoints have a policy
 * that redirects to it, written by the agent. The uplink programs look
 * for connections to hand over only while it is not 0. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct sl_proxy_state);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_proxy SEC(".maps");

/* Layout fingerprint of every pinned map, written by the agent so that a
 * map whose key or value layout changed is replaced, never misread. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sl_layout_key);
	__type(value, __u64);
	__uint(max_entries, 64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_layout SEC(".maps");

#endif /* SLUICE_MAPS_H */
