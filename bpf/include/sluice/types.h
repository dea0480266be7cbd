/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every struct and enum that crosses the C <-> Go boundary lives here, once.
 * bpf2go exports them to Go with -type; Go never mirrors them by hand.
 *
 * Address fields are 16 bytes wide everywhere (union sl_addr) so that IPv6
 * can use the same keys when dual-stack lands; IPv4 lives in the first four
 * bytes and the rest is zero.
 */
#ifndef SLUICE_TYPES_H
#define SLUICE_TYPES_H

#include <linux/types.h>

/* An IPv4 or IPv6 address. addr6 comes first so the Go side sees 16 raw
 * bytes; an IPv4 address is addr4 == the first four bytes, rest zero. */
union sl_addr {
	__u8 addr6[16];
	__be32 addr4;
};

/* Direction relative to the endpoint (the pod), as Hubble reports it. */
enum sl_dir {
	SL_DIR_UNKNOWN = 0,
	SL_DIR_INGRESS = 1, /* into the pod: tc egress of the host-side veth */
	SL_DIR_EGRESS = 2,  /* out of the pod: tc ingress of the host-side veth */
};

/*
 * Drop reasons. Values that Hubble knows use Hubble's flow.DropReason
 * numbering, so the telemetry layer can pass them through unchanged;
 * reasons with no Hubble equivalent start at SL_DROP_SLUICE_BASE.
 */
enum sl_drop_reason {
	SL_DROP_NONE = 0,
	SL_DROP_INVALID_SOURCE_IP = 132,      /* flow.DropReason_INVALID_SOURCE_IP */
	SL_DROP_POLICY_DENIED = 133,          /* flow.DropReason_POLICY_DENIED: no rule allows it */
	SL_DROP_INVALID_PACKET = 134,         /* flow.DropReason_INVALID_PACKET_DROPPED */
	SL_DROP_CT_INVALID_HDR = 135,         /* flow.DropReason_CT_TRUNCATED_OR_INVALID_HEADER */
	SL_DROP_UNSUPPORTED_L3 = 139,         /* flow.DropReason_UNSUPPORTED_L3_PROTOCOL (no longer emitted: IPv6 is enforced) */
	SL_DROP_WRITE_ERROR = 141,            /* flow.DropReason_ERROR_WRITING_TO_PACKET */
	SL_DROP_CT_MAP_FULL = 155,            /* flow.DropReason_CT_MAP_INSERTION_FAILED */
	/* flow.DropReason_INVALID_IPV6_EXTENSION_HEADER: an IPv6 extension
	 * header chain longer than the datapath walks (SL_IPV6_MAX_EXT
	 * headers), cut short, or of a header it does not know. */
	SL_DROP_IPV6_EXT_CHAIN = 156,
	SL_DROP_NO_SERVICE_BACKEND = 158,     /* flow.DropReason_SERVICE_BACKEND_NOT_FOUND */
	SL_DROP_FRAG_NOT_FOUND = 175,         /* flow.DropReason_FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND */
	/* flow.DropReason_FORBIDDEN_ICMPV6_MESSAGE: neighbour discovery or MLD
	 * its receiver must discard (a hop limit other than 255 or 1, a
	 * fragment), which would otherwise pass without policy. */
	SL_DROP_FORBIDDEN_ICMP6 = 176,
	SL_DROP_NOT_IN_SRC_RANGE = 177,       /* flow.DropReason_DENIED_BY_LB_SRC_RANGE_CHECK: loadBalancerSourceRanges */
	/* Sluice-specific reasons start here (none yet). */
	SL_DROP_SLUICE_BASE = 1000,
	/* externalTrafficPolicy: Local and this node has no endpoint: dropped
	 * (not rejected), as kube-proxy does, so the load balancer's health
	 * check takes the node out. */
	SL_DROP_NO_LOCAL_BACKEND = 1000,
	/* No source port left for SNAT toward a remote backend. */
	SL_DROP_NAT_PORTS_EXHAUSTED = 1001,
	/* A connection the endpoint's policy admitted is no longer allowed
	 * after a policy (or identity) change: cut, TCP with an RST both ways. */
	SL_DROP_POLICY_REVOKED = 1002,
	/* The endpoint's policy did not fit its map (--policy-map-max): it
	 * fails closed until it fits; `sluice status` names the endpoint. */
	SL_DROP_POLICY_OVERFLOW = 1003,
	SL_DROP_FIB_LOOKUP_FAILED = 169, /* flow.DropReason_FIB_LOOKUP_FAILED */
	/* A connection the policy hands to the node's L7 proxy, and no proxy
	 * listens on its port (or it reached the pod where it cannot be
	 * handed over): it fails closed, never bypasses the proxy. */
	SL_DROP_PROXY_UNAVAILABLE = 1004,
	SL_DROP_SOCKET_ASSIGN_FAILED = 179, /* flow.DropReason_SOCKET_ASSIGN_FAILED */
	/* An ICMP redirect to or from a pod: the node routes its pods'
	 * traffic and no pod takes routing advice. The node sends one when it
	 * forwards a packet back out of the interface it came in on (a bridge
	 * node's pods to a service's backend on the same bridge); a pod would
	 * then route a destination around the datapath's translation, and a
	 * pod could forge one to steer its neighbours. Both families: an
	 * ICMPv6 redirect (137) too, though neighbour discovery otherwise
	 * passes. One reason for both (Hubble's FORBIDDEN_ICMPV6_MESSAGE has
	 * no IPv4 counterpart). */
	SL_DROP_ICMP_REDIRECT = 1005,
	/* No longer sent: before the per-packet path translated IPv6, it
	 * dropped an IPv6 packet from a pod to an IPv6 frontend with this.
	 * Reserved, so flows recorded then still read right. */
	SL_DROP_SERVICE_NEEDS_SOCKET_LB = 1006,
};

/* The node's L7 proxy, as the datapath needs to know it (sl_proxy). */
struct sl_proxy_state {
	__u32 redirecting_endpoints; /* local endpoints whose policy redirects to the proxy */
	__u32 pad;
};

/*
 * Packet marks (skb->mark) the datapath sets or trusts. The agent routes
 * SL_MARK_TO_PROXY to the local stack (an ip rule to a table holding
 * "local default dev lo", as TPROXY needs); SL_MARK_FROM_PROXY is the
 * socket mark of the node proxy's own upstream connections. A pod cannot
 * forge either: a mark is cleared when a packet leaves its namespace.
 */
enum sl_mark {
	SL_MARK_POLICY_RST = 0x51CE0001, /* an RST the datapath sent for a revoked connection */
	SL_MARK_TO_PROXY = 0x51CE0002,   /* handed to the node's proxy (bpf_sk_assign) */
	SL_MARK_FROM_PROXY = 0x51CE0003, /* sent by the node's proxy to the original destination */
};

/* What a per-CPU counter counts. */
enum sl_metric {
	SL_METRIC_FORWARDED = 1,    /* IPv4 or IPv6 packet passed on (TCX_NEXT) */
	SL_METRIC_DROPPED = 2,      /* packet dropped; reason in the key */
	SL_METRIC_PASSED_IPV6 = 3,  /* IPv6 neighbour discovery or MLD passed untracked, unjudged */
	SL_METRIC_PASSED_OTHER = 4, /* non-IP (ARP, ...) passed untouched */
	SL_METRIC_RELATED = 5,      /* ICMP error related to a tracked connection */
	SL_METRIC_EVENTS_LOST = 6,  /* ring buffer full: event not emitted */
	SL_METRIC_NO_ENDPOINT = 7,  /* program ran on an interface with no endpoint entry */
	SL_METRIC_FRAG_TABLE_FULL = 8, /* a first fragment's ports could not be remembered */
	SL_METRIC_SOCK_DESTROYED = 9,  /* a socket connected to a removed backend was destroyed */
	SL_METRIC_POLICY_AUDIT = 10,   /* audit mode: would have been denied, forwarded */
	SL_METRIC_POLICY_REDIRECT = 11, /* allowed with an L7 proxy redirect verdict */
	SL_METRIC_HOST_ROUTED = 12,    /* sent straight to a local endpoint's interface (BPF host routing) */
	SL_METRIC_MAX = 16, /* bound of the above, for sl_metrics_fast */
};

/* Per-CPU counter key: what, which direction, the drop reason and the
 * packet's address family. */
struct sl_metrics_key {
	__u8 metric; /* enum sl_metric */
	__u8 dir;    /* enum sl_dir */
	__u16 reason; /* enum sl_drop_reason, SL_DROP_NONE unless dropped */
	__u8 family;  /* enum sl_metric_family */
	__u8 pad[3];
};

/* A counter's address family: none for what is not an IP packet (ARP,
 * lost events, sockets). sl_metrics_fast's index is
 * metric << 4 | family << 2 | direction. */
enum sl_metric_family {
	SL_METRIC_FAMILY_NONE = 0,
	SL_METRIC_FAMILY_IPV4 = 1,
	SL_METRIC_FAMILY_IPV6 = 2,
};

struct sl_metrics_val {
	__u64 packets;
	__u64 bytes;
};

/* A local endpoint (pod), keyed by the ifindex of its host-side interface. */
struct sl_endpoint {
	__u32 ep_id;    /* agent-allocated endpoint ID, scopes CT entries */
	__u32 flags;    /* SL_EP_F_* */
	__u32 identity; /* the pod's security identity */
	__u32 pad;
	union sl_addr ipv4;
	union sl_addr ipv6;
};

enum sl_ep_flag {
	SL_EP_F_HAS_IPV4 = 1U << 0,
	SL_EP_F_HAS_IPV6 = 1U << 1,
/* Selected by a policy for ingress / egress: default deny that way, and
 * new connections are checked against sl_policy[ep_id]. */
	SL_EP_F_POLICY_INGRESS = 1U << 2,
	SL_EP_F_POLICY_EGRESS = 1U << 3,
/* Audit mode: would-be denials are forwarded and reported as AUDIT. */
	SL_EP_F_POLICY_AUDIT = 1U << 4,
/* The policy did not fit: every new connection is dropped (POLICY_OVERFLOW). */
	SL_EP_F_POLICY_OVERFLOW = 1U << 5,
};

/*
 * Security identities. Reserved ones use Cilium's numbers; the agent
 * allocates the others (one per distinct set of pod and namespace labels)
 * from SL_ID_ALLOC_BASE. Per-endpoint CIDR classes (ipBlock rules, and
 * pods addressed by named egress ports) start at SL_ID_LOCAL_CIDR_BASE.
 */
enum sl_identity_reserved {
	SL_ID_ANY = 0,          /* policy keys: any peer */
	SL_ID_HOST = 1,         /* the node itself: traffic it originates */
	SL_ID_WORLD = 2,        /* not in the ipcache: outside the cluster */
	SL_ID_REMOTE_NODE = 6,  /* another node of the cluster */
	SL_ID_ALLOC_BASE = 256,
	SL_ID_LOCAL_CIDR_BASE = 16777216, /* 1 << 24 */
};

/* The ipcache: every known address of the cluster to its identity.
 * prefixlen = 32 (family and padding) + address bits. */
struct sl_ipcache_key {
	__u32 prefixlen;
	__u8 family;
	__u8 pad[3];
	union sl_addr addr;
};

struct sl_ipcache_val {
	__u32 identity;
	/* A pod of this node: its endpoint ID, so a decision that belongs to
	 * the destination (an ingress L7 redirect) can be looked up on the
	 * client's side, where bpf_sk_assign works. 0 otherwise. */
	__u32 ep_id;
};

enum sl_policy_verdict {
	SL_VERDICT_NONE = 0,     /* not enforced in this direction */
	SL_VERDICT_ALLOW = 1,
	SL_VERDICT_REDIRECT = 2, /* allowed through the node's L7 proxy (proxy_port) */
	SL_VERDICT_DENY = 3,
	SL_VERDICT_AUDIT = 4,    /* denied by policy, forwarded in audit mode */
};

/*
 * An endpoint's policy: an LPM trie per endpoint. Bits in key order:
 * identity (32, always exact), direction (8, exact), then optionally the
 * protocol (8) and a prefix of the destination port (0..16 bits):
 *   prefixlen 40          any protocol, any port
 *   prefixlen 48          this protocol, any port
 *   prefixlen 48 + n      this protocol, ports sharing the first n bits
 * The datapath looks up the peer's identity, the peer's CIDR class and
 * identity 0 (any peer); the longest match wins (see policy.h).
 */
struct sl_policy_key {
	__u32 prefixlen;
	__u32 identity;
	__u8 dir;   /* enum sl_dir */
	__u8 proto;
	__be16 dport;
};

struct sl_policy_entry {
	__u32 rule;       /* the deciding rule, for verdict events (agent's table) */
	__u16 proxy_port; /* SL_VERDICT_REDIRECT: the proxy's port, host order */
	__u8 verdict;     /* SL_VERDICT_ALLOW, SL_VERDICT_REDIRECT or SL_VERDICT_DENY (a ClusterNetworkPolicy's Deny, or a tier's decision that overrides a shorter allow), ORed with enum sl_policy_entry_flag */
	__u8 prefixlen;   /* the key's prefixlen, to rank matches across lookups */
};

/* Flags in sl_policy_entry's verdict byte, above the verdict's bits. */
enum sl_policy_entry_flag {
	/* The direction is compiled with ClusterNetworkPolicy tiers: every
	 * peer bucket's entries are complete and equally long, and the more
	 * specific bucket must win a tie even against a Redirect (an any-peer
	 * Redirect must not beat an identity's Deny), so the entry gets no
	 * Redirect bonus. */
	SL_POLICY_F_TIERED = 0x80,
	SL_POLICY_VERDICT_MASK = 0x7f,
};

/* An endpoint's CIDR classes (ipBlock): the longest matching prefix gives
 * the class identity to look up in its policy. prefixlen = 32 + bits. */
struct sl_policy_cidr_key {
	__u32 prefixlen;
	__u8 dir;
	__u8 family;
	__u8 pad[2];
	union sl_addr addr;
};

/*
 * Connection tracking. Every endpoint has its own view: the key carries the
 * endpoint ID, so a pod-to-pod flow on one node has one entry for the
 * client's egress and another for the server's ingress, and one endpoint's
 * entry never lets a packet skip another endpoint's checks. The tuple is the
 * one of the connection's first packet (the original direction).
 */
struct sl_ct_key {
	__u32 ep_id;
	__u8 family; /* AF_INET (2) or AF_INET6 (10): one table for both */
	__u8 proto;  /* IPPROTO_* */
	__be16 sport; /* ICMP echo: identifier (request side) */
	__be16 dport;
	__u8 scope;   /* enum sl_ct_scope */
	__u8 pad;
	union sl_addr saddr;
	union sl_addr daddr;
};

/* What a CT entry tracks. A translated connection has two entries in the
 * client endpoint's view: a SERVICE entry keyed by the tuple to the VIP,
 * which pins the chosen backend, and a FLOW entry keyed by the tuple to
 * the backend, which carries the reverse translation for replies. */
enum sl_ct_scope {
	SL_CT_SCOPE_FLOW = 0,
	SL_CT_SCOPE_SERVICE = 1,
};

enum sl_ct_state {
	SL_CT_NONE = 0,
	SL_CT_SYN_SENT = 1,    /* TCP: SYN seen from the originator */
	SL_CT_SYN_RECV = 2,    /* TCP: SYN-ACK seen from the replier */
	SL_CT_ESTABLISHED = 3, /* TCP after the handshake; UDP/ICMP/other once replied */
	SL_CT_CLOSING = 4,     /* TCP: FIN seen */
	SL_CT_CLOSED = 5,      /* TCP: RST seen, or FIN in both directions */
	SL_CT_OPEN = 6,        /* non-TCP flow not (yet) answered */
};

struct sl_ct_entry {
	__u64 expires;   /* CLOCK_MONOTONIC ns (bpf_ktime_get_ns) after which the entry is dead */
	__u64 created;   /* CLOCK_MONOTONIC ns of the first packet */
	__u64 packets_orig;
	__u64 bytes_orig;
	__u64 packets_reply;
	__u64 bytes_reply;
	__u8 state;      /* enum sl_ct_state */
	__u8 origin;     /* enum sl_dir of the first packet */
	__u8 flags_orig; /* TCP flags seen in the original direction (OR) */
	__u8 flags_reply;
	/* Translated connections: the frontend (sl_lb_revnat key) replies are
	 * reverse-translated to, and the backend the connection uses. */
	__u32 rev_nat_id;
	__u32 backend_id;
	__u8 nat_flags;  /* SL_CT_NAT_* */
	__u8 pad;
	__be16 nat_port; /* SERVICE entries on an uplink: the SNAT source port */
	/* Policy: the revision (sl_policy_rev) the connection was last
	 * admitted under; on a newer one it is checked again. */
	__u32 policy_rev;
	__u32 policy_rule;  /* the rule that admitted it (0: not enforced / default) */
	__u16 proxy_port;   /* SL_VERDICT_REDIRECT */
	__u8 policy_verdict; /* enum sl_policy_verdict */
	__u8 policy_flags;  /* SL_CT_POL_* */
};

/* Admitted as traffic the node itself originated (host identity): kept,
 * since a reply cannot tell who originated the connection. */
enum sl_ct_pol_flag {
	SL_CT_POL_FROM_HOST = 1U << 0,
/* The peer is a pod of this node: its own endpoint tracks the connection
 * too (--flow-events=connections reports it there only). */
	SL_CT_POL_PEER_LOCAL = 1U << 1,
	/* Handed to the node's L7 proxy here (proxy_port): each packet of
	 * the connection goes to the proxy's socket. */
	SL_CT_POL_TO_PROXY = 1U << 2,
	/* Opened by the node's proxy toward the original destination, for a
	 * connection the destination's policy redirected: admitted. */
	SL_CT_POL_FROM_PROXY = 1U << 3,
};

/* A hairpin connection: a pod reached its own service and landed on
 * itself; the source was translated to the service loopback address. */
enum sl_ct_nat_flag {
	SL_CT_NAT_HAIRPIN = 1U << 0,
/* An external connection source-translated to the node toward a remote
 * backend (externalTrafficPolicy: Cluster). */
	SL_CT_NAT_SNAT = 1U << 1,
};

/* IPv4 fragment tracking: the first fragment's ports, for later fragments. */
struct sl_frag_key {
	__be32 saddr;
	__be32 daddr;
	__be16 id;
	__u8 proto;
	__u8 pad;
};

/* IPv6 fragment tracking (a Fragment extension header's 32-bit
 * identification); the value is sl_frag_val. Proto is the header after the
 * Fragment header in the first fragment's chain (its transport). */
struct sl_frag6_key {
	union sl_addr saddr;
	union sl_addr daddr;
	__be32 id;
	__u8 proto;
	__u8 pad[3];
};

struct sl_frag_val {
	__be16 sport;
	__be16 dport;
};

/* An IPv6 first fragment's ports and transport protocol: the Fragment
 * header's next header (the key's) may be an extension header that only
 * the first fragment's walk passes (destination options). */
struct sl_frag6_val {
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* Drop event rate limiting: one event per flow, direction and reason per
 * interval; the drops in between are counted and reported with the next. */
struct sl_drop_rl_key {
	__u32 ep_id;
	__u16 reason;
	__u8 dir;
	__u8 proto;
	__be16 sport;
	__be16 dport;
	__u32 pad;
	union sl_addr saddr;
	union sl_addr daddr;
};

struct sl_drop_rl_val {
	__u64 last;       /* CLOCK_MONOTONIC ns of the last event reported */
	__u32 suppressed; /* drops since, not reported */
	__u32 pad;
};

/* Map-layout fingerprints written by the agent; see pkg/datapath. */
struct sl_layout_key {
	char name[16];
};

enum sl_event_type {
	SL_EVENT_CONN_NEW = 1,  /* trace: a connection's first packet */
	SL_EVENT_DROP = 2,      /* a dropped packet, with reason */
	SL_EVENT_TRANSLATE = 3, /* a socket was connected to a service backend (socket LB) */
	SL_EVENT_CONN_END = 4,  /* a TCP connection closed (RST, or FIN both ways); expiries come from the agent's CT GC */
};

/*
 * Which events the datapath emits (--flow-events). Counters count every
 * packet at every level; only what is reported as events changes.
 */
enum sl_flow_events {
	/* Every connection where each endpoint sees it (its first packet at
	 * the client's and at the server's endpoint), socket-LB translations,
	 * connection ends at each endpoint, drops. */
	SL_FLOW_EVENTS_ALL = 0,
	/* Each connection once per node: where it enters the node's view
	 * (the client's endpoint, or the server's when the client is not a
	 * pod of this node, or the uplink), with its end there; a connection
	 * the server's policy decided is reported there too (the verdict);
	 * socket-LB translations; drops. */
	SL_FLOW_EVENTS_CONNECTIONS = 1,
	/* Policy verdicts (new connections an endpoint's policy decided:
	 * allowed, denied, audit, redirected) and drops. */
	SL_FLOW_EVENTS_DROPS_AND_VERDICTS = 2,
	/* No events: counters only. */
	SL_FLOW_EVENTS_NONE = 3,
};

/* TCP flag bits (byte 13 of the TCP header), as events carry them in
 * sl_event.tcp_flags and conntrack records them. The datapath tests only
 * the first five; the agent shows all eight in flows. */
enum sl_tcp_flag {
	TCPF_FIN = 0x01,
	TCPF_SYN = 0x02,
	TCPF_RST = 0x04,
	TCPF_PSH = 0x08,
	TCPF_ACK = 0x10,
	TCPF_URG = 0x20,
	TCPF_ECE = 0x40,
	TCPF_CWR = 0x80,
};

/* Which sockets socket LB serves (the sock_lb_mode constant, set by the
 * agent from --socket-lb). */
enum sl_sock_lb_mode {
	SL_SOCK_LB_ALL = 1,         /* every socket of the node */
	SL_SOCK_LB_HOSTNS_ONLY = 2, /* sockets of the node's own network namespace */
};

/* Event flags (bits of sl_event.flags). A drop before conntrack looked
 * the packet up carries neither: whether it was a reply is unknown
 * (Hubble's is_reply unset). */
enum sl_event_flag {
	SL_EVENT_F_TRACKED = 1 << 0, /* conntrack placed the packet in its connection */
	SL_EVENT_F_REPLY = 1 << 1,   /* ... in its reply direction: saddr is the server */
};

/* One ring buffer record. */
struct sl_event {
	__u64 ts;      /* CLOCK_MONOTONIC ns */
	__u8 type;     /* enum sl_event_type */
	__u8 dir;      /* enum sl_dir */
	__u16 reason;  /* enum sl_drop_reason */
	__u32 ifindex;
	__u32 ep_id;
	__u32 len;     /* packet length */
	__u8 family;
	__u8 proto;
	__u8 tcp_flags;
	__u8 flags;    /* enum sl_event_flag bits */
	__be16 sport;
	__be16 dport;
	union sl_addr saddr;
	union sl_addr daddr;
	/* Service translation: frontend ID (0: none) and the VIP:port the
	 * client addressed; daddr:dport above is then the chosen backend. */
	__u32 svc_id;
	__be16 vip_port;
	__u16 pad2;
	union sl_addr vip;
	__u64 sock_cookie; /* socket LB events: the socket */
	__u64 cgroup_id;   /* socket LB events: the caller's cgroup (its pod) */
	/* Policy verdict of a new connection, or of a policy drop: the
	 * identities of both ends and the deciding rule (0: default deny or
	 * not enforced). verdict SL_VERDICT_NONE: no policy applied. */
	__u32 src_identity;
	__u32 dst_identity;
	__u32 policy_rule;
	__u8 verdict;
	__u8 pad3;
	__u16 proxy_port;
	/* SL_EVENT_CONN_END: the connection's totals (orig: its first
	 * packet's direction) and its duration. */
	__u64 packets_orig;
	__u64 bytes_orig;
	__u64 packets_reply;
	__u64 bytes_reply;
	__u64 duration_ns;
	/* Drops: events of the same flow and reason suppressed since the
	 * last one reported (rate limit: one event per flow per interval). */
	__u32 suppressed;
	__u32 pad4;
};

/*
 * Service load balancing.
 *
 * sl_lb_svc holds, per frontend (VIP, port, protocol), a service entry in
 * slot 0 and one entry per backend in slots 1..count. Slots hold only the
 * backends that take new connections; terminating backends stay in
 * sl_lb_backends (established connections reference them by ID) but not in
 * a slot. The agent writes backends, then slots, then slot 0, and shrinks
 * in the reverse order, so a packet never sees a count larger than the
 * slots behind it.
 */
struct sl_lb_key {
	union sl_addr addr;
	__be16 port;
	__u8 proto;
	__u8 family; /* SL_LB_FAMILY_* */
	__u16 slot; /* 0: the service entry; 1..count: backend slots */
	__u16 pad2;
};

/* The family byte of the LB maps' keys and backends. IPv4 is 0, the value
 * this byte had as padding before IPv6 services, so that maps pinned by an
 * older agent keep their meaning; an IPv6 address whose last twelve bytes
 * are zero can then never be taken for an IPv4 one. */
enum sl_lb_family {
	SL_LB_FAMILY_IPV4 = 0,
	SL_LB_FAMILY_IPV6 = 10, /* AF_INET6 */
};

struct sl_lb_entry {
	__u32 backend_id;       /* slot > 0: the backend in this slot */
	__u32 svc_id;           /* frontend ID, the key of sl_lb_revnat */
	__u16 count;            /* slot 0: backends taking new connections */
	__u16 flags;            /* slot 0: SL_LB_F_* */
	__u32 affinity_timeout; /* slot 0: seconds, with SL_LB_F_AFFINITY */
};

enum sl_lb_flag {
	SL_LB_F_AFFINITY = 1U << 0,  /* sessionAffinity: ClientIP */
	SL_LB_F_MAGLEV = 1U << 1,    /* Maglev consistent hashing instead of random */
	SL_LB_F_EXTERNAL = 1U << 2,  /* NodePort, externalIP, LoadBalancer: served on uplinks */
	SL_LB_F_LOCAL = 1U << 3,     /* externalTrafficPolicy: Local: keep the client address */
	SL_LB_F_NO_LOCAL = 1U << 4,  /* no local endpoint (but remote ones): drop, don't reject */
	SL_LB_F_SRC_RANGE = 1U << 5, /* loadBalancerSourceRanges: clients must match sl_lb_src_range */
};

/* loadBalancerSourceRanges: an LPM key of the frontend ID (always all 32
 * bits) followed by the client prefix; prefixlen = 32 + prefix bits. */
struct sl_lb_src_range_key {
	__u32 prefixlen;
	__u32 svc_id; /* network byte order, so the LPM trie compares it whole */
	union sl_addr addr;
};

struct sl_lb_backend {
	union sl_addr addr;
	__be16 port;
	__u8 proto;
	__u8 state; /* enum sl_lb_backend_state */
	__u8 flags; /* SL_LB_BACKEND_F_* */
	__u8 family; /* SL_LB_FAMILY_*: a frontend's backends are of its family */
	__u8 pad[2];
};

enum sl_lb_backend_flag {
	SL_LB_BACKEND_F_LOCAL = 1U << 0, /* a pod on this node */
};

enum sl_lb_backend_state {
	SL_LB_BACKEND_ACTIVE = 0,
	SL_LB_BACKEND_TERMINATING = 1,
};

/* The frontend a reply is translated back to. */
struct sl_lb_vip {
	union sl_addr addr;
	__be16 port;
	__u16 pad;
};

/* Session affinity: the backend a client last used for a frontend. The
 * per-packet path keys on the client address; the socket path, where the
 * source address may not be bound yet, on the client's netns cookie. */
struct sl_lb_affinity_key {
	__u64 client_cookie; /* socket path: netns cookie; 0 on the packet path */
	union sl_addr client;  /* packet path: client address */
	__u32 svc_id;
	__u32 pad;
};

struct sl_lb_affinity_val {
	__u64 last_used; /* CLOCK_MONOTONIC ns */
	__u32 backend_id;
	__u32 pad;
};

/* Socket LB: what a connected socket's peer address was before
 * translation, for recvmsg and getpeername. */
struct sl_lb_sock_key {
	__u64 cookie;
	union sl_addr backend;
	__be16 port;
	__u8 family; /* SL_LB_FAMILY_*; a v4-mapped backend is IPv4 */
	__u8 pad;
	__u32 pad2;
};

/* An uplink of the node (keyed by ifindex): the address external
 * connections are source-translated to when they leave through it toward
 * a remote backend (an externalIP or LoadBalancer IP is not the node's). */
struct sl_uplink {
	union sl_addr ipv4;
	union sl_addr ipv6; /* zero: none, IPv6 connections keep the address they were sent to */
};

/*
 * SNAT of external connections toward remote backends: the node address
 * and the source port allocated for the connection (outside the node's
 * ip_local_port_range), and what the replies are translated back to.
 */
struct sl_nat_key {
	union sl_addr addr;
	__be16 port;
	__u8 proto;
	/* 0 for IPv4 (it was padding: mappings pinned before read the same),
	 * AF_INET6 for IPv6. */
	__u8 family;
};

struct sl_nat_val {
	union sl_addr client;
	union sl_addr backend;
	union sl_addr front;
	__be16 client_port;
	__be16 backend_port;
	__be16 front_port;
	__u16 pad;
};

/* A removed backend whose connected UDP sockets (socket LB) are destroyed
 * by the socket iterator, so their owners reconnect to a live backend. */
struct sl_sock_destroy_key {
	union sl_addr addr;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

#endif /* SLUICE_TYPES_H */
