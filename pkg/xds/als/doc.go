// Package als turns the node's Envoy access logs into Hubble L7 flows: it
// serves Envoy's gRPC access log service (envoy.service.accesslog.v3
// AccessLogService, StreamAccessLogs) on the agent's xDS socket, and makes
// each HTTPAccessLogEntry one flow (pkg/flow Converter.HTTP) in the flow
// store that the Hubble observer serves, and one count in the metrics.
//
// Envoy's HTTP connection managers log with envoy.access_loggers.http_grpc
// (log_name LogName, cluster "sluice-als" on the same unix socket as ADS).
// Every stream's first message carries the identifier (node and log name);
// entries come in batches after it. What an entry says, and where this
// package reads it:
//
//	client                downstream_remote_address (the kernel keeps the client's address)
//	server                downstream_local_address: the original destination, as the
//	                      connection was addressed (transparent listener, original_dst)
//	listener              custom tag ListenerTag (a literal, l7.ListenerName), its port
//	                      read from the name (l7.ListenerPort); not in the entry otherwise
//	request               request_method, scheme, authority, original_path or path,
//	                      request_id, request_headers (those the logger was told to log)
//	response              response_code, response_code_details
//	latency               time_to_last_downstream_tx_byte (else duration) after start_time
//	verdict, rule         response_code_details, response_flags and the RBAC filter's
//	                      dynamic metadata (metadata["envoy.filters.http.rbac"])
//
// The verdict, in this order:
//
//	rbac_access_denied_matched_policy[P]   policy-denied (403); rule P ("none": no rule)
//	rate_limited flag, local_rate_limited  rate-limited (429); the rule RBAC allowed it by
//	jwt_authn_access_denied{why}           jwt-denied (401/403), as is unauthorized_details
//	shadow_engine_result "denied"          audit (forwarded); the shadow policy, if any
//	anything else                          forwarded; the rule RBAC allowed it by
//
// RBAC policy names are rule names (l7.RuleRef.String), so the deciding
// rule is read back with l7.ParseRuleRef; a name that is not a rule's (an
// audit listener's allow-all policy) names no rule. The RBAC filter's
// metadata keys may carry its stat prefixes; they are matched by their
// ends (enforced_effective_policy_id, shadow_engine_result, ...).
//
// Only entries of finished requests become flows: an entry of another
// access log type (a periodic or start-of-stream entry) is skipped, so a
// request is never counted twice.
//
// Flows are joined to the connection's L4 flow by the 5-tuple: an L7 flow
// shows the connection's client and original destination addresses and
// ports, as the datapath's flow of the redirected connection does, so
// `hubble observe --ip 10.244.1.5 --port 43512` shows both. Hubble's flow
// has no connection ID that both could carry, and its filters cannot
// select on extensions.
package als
