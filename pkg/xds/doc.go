// Package xds configures the node's shared, stock Envoy: it turns the
// compiled L7 policy (l7.Config) into Envoy v3 resources, validates them,
// and serves them over ADS on a unix socket in the agent's state
// directory (<state-dir>/xds.sock).
//
// # Resources (Generate)
//
// Generation is pure: equal Configs give equal resources and the same
// version (Version, a hash of the Config), so an unchanged Config is
// never pushed. Only stock extensions are used; users run the official
// envoyproxy/envoy image.
//
// Per l7.Listener:
//
//   - an LDS Listener named Listener.Name on 127.0.0.1:Port with
//     transparent: true (IP_TRANSPARENT: the datapath hands it connections
//     addressed elsewhere with bpf_sk_assign), the
//     envoy.filters.listener.original_dst listener filter (the local
//     address of such a connection already is its original destination;
//     the filter keeps it so wherever SO_ORIGINAL_DST answers), and
//     enable_reuse_port from ResourceOptions.ReusePort, false by default:
//     one listening socket shared by Envoy's workers is correct on every
//     kernel. Handing a connection to a reuseport group with
//     bpf_sk_assign needs the kernel's reuseport selection for assigned
//     sockets (net: "Support SO_REUSEPORT with prefetched sockets", 2023);
//     on Linux 6.18 two SO_REUSEPORT transparent listeners on a proxy port
//     behind the datapath's redirect got 40 of 40 connections, 18 and 22
//     (probed with the datapath's test proxy); older kernels are unprobed,
//     so the agent keeps it off;
//   - one HTTP connection manager whose routes come over RDS (route
//     configuration name = listener name), with the HTTP filters
//     envoy.filters.http.jwt_authn (only when a rule of the listener
//     needs a token), envoy.filters.http.rbac, envoy.filters.http.local_ratelimit
//     and the router, last;
//   - an RDS RouteConfiguration of the same name: one virtual host whose
//     per-filter config holds the listener's RBAC, one route per rule in
//     rule order (named RuleRef.String(), carrying the rule's rate limit)
//     and a last route "<listener>/unmatched".
//
// Everything a rule changes lives in the route configuration: a rule
// added, changed or removed, a rate limit set, a listener switched to
// audit are RDS updates and never drain the listener's connections. The
// listener-level RBAC denies everything (it only applies if the route
// configuration were missing); the local rate limit filter is there, as
// a pass-through, whether or not a rule is limited. Only JWT providers
// (issuer, keys, audiences) live in the listener: changing them drains it.
//
// RBAC: one ALLOW policy per rule, named RuleRef.String(), the policies
// OR-ed. A rule's permissions are its method (":method", RE2 full match),
// path (url_path: exact, prefix or RE2, without the query string), host
// (":authority", RE2) and headers, AND-ed; its principals are the
// verified token and its claims (dynamic metadata of jwt_authn). A
// request that matches no rule gets 403 with response_code_details
// "rbac_access_denied_matched_policy[none]". In audit mode the enforced
// `rules` are one allow-all policy (AuditPolicy) and the real policies are
// `shadow_rules`: Envoy and gRPC enforce `rules` only, and an RBAC without
// `rules` would enforce nothing at all.
//
// Rate limits: a rule's token bucket (Requests per Per, at most Burst) is
// the local_ratelimit per-route config of the rule's route, with
// filter_enabled and filter_enforced at 100% (their proto default, 0%,
// limits nothing). PerClient gives every downstream address its own bucket
// (a wildcard remote_address descriptor; at most 10,000 clients per rule
// tracked, least recently seen forgotten). The downstream address is the
// connection's peer (use_remote_address, X-Forwarded-For neither trusted
// nor appended). Excess requests get 429 ("local_rate_limited"). Rate
// limits are enforced in audit mode too: audit concerns authorization.
// A request is limited by the first rule, in order, whose request and
// token match it: the route it takes.
//
// JWT: jwt_authn verifies the token against every provider the
// listener's rules name (issuer, audiences, inline JWKS) and never
// rejects on its own (allow_missing_or_failed): the verified payload goes
// to dynamic metadata under the provider's name, a failure's status under
// "<provider>.failed", and RBAC decides, so a request a JWT rule does not
// cover is still judged by the other rules. A request that needed a token
// and had none or a bad one gets RBAC's 403.
//
// Upstream: one ORIGINAL_DST cluster (ClusterOriginalDst) shared by all
// listeners connects to the connection's original destination from the
// node's own address, with SO_MARK datapath.MarkFromProxy set before bind
// (upstream_bind_config). The datapath never redirects a marked
// connection again, and the destination's endpoint admits it by the mark
// alone. IP_TRANSPARENT source preservation is deliberately not used: the
// client's identity was already judged by L4 policy before the redirect,
// and an upstream from the client's address would have its replies routed
// to the client rather than to Envoy. Upstream HTTP follows the
// downstream protocol (gRPC stays HTTP/2). The proxy is meant to be
// unnoticed: no route timeout and no stream idle timeout apply, WebSocket
// upgrades pass (judged like any request), and paths are normalized
// before the rules see them and as the upstream gets them.
//
// # Access logs
//
// Every HTTP connection manager streams each request with
// envoy.access_loggers.http_grpc (HTTPAccessLogEntry, transport v3) to the
// static cluster ClusterALS of Envoy's bootstrap, which is the agent's
// xds.sock: the access log service registers on GRPC(). Each entry has
// log_name "sluice" (ALSLogName) and carries:
//
//   - request: method, path, authority, scheme, protocol;
//     response: response_code and response_code_details
//     ("rbac_access_denied_matched_policy[none]" for a request no rule
//     allowed, "local_rate_limited" for a rate-limited one, "via_upstream"
//     for an answer of the destination);
//   - common_properties.route_name: the rule whose route the request took
//     (RuleRef.String()), or "<listener>/unmatched";
//   - common_properties.downstream_remote_address: the client, as the
//     transparent listener kept it; downstream_local_address: the
//     original destination; upstream_remote_address: the upstream host;
//     start_time and time_to_last_downstream_tx_byte: the duration;
//     response_flags (rate_limited for a 429 of the filter);
//   - common_properties.metadata (Envoy's dynamic metadata):
//     "envoy.filters.http.rbac" with enforced_effective_policy_id (the
//     rule that allowed it) and enforced_engine_result, and in audit mode
//     shadow_effective_policy_id and shadow_engine_result ("denied" is a
//     would-be denial); "envoy.filters.http.jwt_authn" with the verified
//     payload under the provider's name or the failure under
//     "<provider>.failed";
//   - common_properties.custom_tags: "sluice.listener" (TagListener), the
//     listener's name, and "sluice.audit" (TagAudit), "true" on an audit
//     listener.
//
// # Validation
//
// Nothing is served that was not validated: every resource with
// ValidateMessage (protoc-gen-validate's ValidateAll on it and on every
// message packed in an Any inside it, unpacked recursively through the
// global registry, which this package's imports fill), the snapshot's
// Consistent(), and lints for what Envoy's validation lets through (see
// Resources.Validate). A rule that cannot be expressed is a *RuleError
// naming it; the server then keeps serving its last good snapshot.
//
// # Server
//
// Server serves state-of-the-world ADS with go-control-plane's snapshot
// cache. Every Envoy that connects gets the one snapshot whatever its node
// id (one Envoy per node; a mismatched --service-node must not leave it
// unconfigured). The server's callbacks follow each stream: the response
// awaiting an answer per type, its ACK (version, time, latency from
// sending) or NACK (type, the version and resource names rejected,
// Envoy's error_detail message), shown in Status and counted through the
// Observer (Prometheus: pushes, NACKs, ACK latency).
package xds
