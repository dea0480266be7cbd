package bpfobj

import "fmt"

// The one table of display names of the C enums that cross into Go, next
// to the types bpf2go generates from them; every package that shows an
// enum (the CLI, metrics, flows) reads its name here, and none keeps a
// copy. Drop reason names are Hubble's flow.DropReason names where the
// value is Hubble's. A value missing here (a newer datapath) reads as
// "unknown(N)".
var (
	dropReasonNames = map[EndpointSlDropReason]string{
		EndpointSlDropReasonSL_DROP_INVALID_SOURCE_IP:       "INVALID_SOURCE_IP",
		EndpointSlDropReasonSL_DROP_INVALID_PACKET:          "INVALID_PACKET_DROPPED",
		EndpointSlDropReasonSL_DROP_CT_INVALID_HDR:          "CT_TRUNCATED_OR_INVALID_HEADER",
		EndpointSlDropReasonSL_DROP_FORBIDDEN_ICMP6:         "FORBIDDEN_ICMPV6_MESSAGE",
		EndpointSlDropReasonSL_DROP_CT_MAP_FULL:             "CT_MAP_INSERTION_FAILED",
		EndpointSlDropReasonSL_DROP_IPV6EXT_CHAIN:           "INVALID_IPV6_EXTENSION_HEADER",
		EndpointSlDropReasonSL_DROP_WRITE_ERROR:             "ERROR_WRITING_TO_PACKET",
		EndpointSlDropReasonSL_DROP_NO_SERVICE_BACKEND:      "SERVICE_BACKEND_NOT_FOUND",
		EndpointSlDropReasonSL_DROP_FIB_LOOKUP_FAILED:       "FIB_LOOKUP_FAILED",
		EndpointSlDropReasonSL_DROP_NO_LOCAL_BACKEND:        "NO_LOCAL_SERVICE_BACKEND",
		EndpointSlDropReasonSL_DROP_NAT_PORTS_EXHAUSTED:     "NAT_PORTS_EXHAUSTED",
		EndpointSlDropReasonSL_DROP_FRAG_NOT_FOUND:          "FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND",
		EndpointSlDropReasonSL_DROP_NOT_IN_SRC_RANGE:        "DENIED_BY_LB_SRC_RANGE_CHECK",
		EndpointSlDropReasonSL_DROP_POLICY_DENIED:           "POLICY_DENIED",
		EndpointSlDropReasonSL_DROP_UNSUPPORTED_L3:          "UNSUPPORTED_L3_PROTOCOL",
		EndpointSlDropReasonSL_DROP_POLICY_REVOKED:          "POLICY_REVOKED",
		EndpointSlDropReasonSL_DROP_POLICY_OVERFLOW:         "POLICY_OVERFLOW",
		EndpointSlDropReasonSL_DROP_PROXY_UNAVAILABLE:       "PROXY_UNAVAILABLE",
		EndpointSlDropReasonSL_DROP_SOCKET_ASSIGN_FAILED:    "SOCKET_ASSIGN_FAILED",
		EndpointSlDropReasonSL_DROP_ICMP_REDIRECT:           "ICMP_REDIRECT",
		EndpointSlDropReasonSL_DROP_SERVICE_NEEDS_SOCKET_LB: "SERVICE_NEEDS_SOCKET_LB",
	}
	metricNames = map[EndpointSlMetric]string{
		EndpointSlMetricSL_METRIC_FORWARDED:       "forwarded",
		EndpointSlMetricSL_METRIC_DROPPED:         "dropped",
		EndpointSlMetricSL_METRIC_PASSED_IPV6:     "passed-ipv6",
		EndpointSlMetricSL_METRIC_PASSED_OTHER:    "passed-non-ip",
		EndpointSlMetricSL_METRIC_RELATED:         "related-icmp",
		EndpointSlMetricSL_METRIC_EVENTS_LOST:     "events-lost",
		EndpointSlMetricSL_METRIC_NO_ENDPOINT:     "no-endpoint",
		EndpointSlMetricSL_METRIC_FRAG_TABLE_FULL: "frag-table-full",
		EndpointSlMetricSL_METRIC_SOCK_DESTROYED:  "sockets-destroyed",
		EndpointSlMetricSL_METRIC_POLICY_AUDIT:    "policy-audit",
		EndpointSlMetricSL_METRIC_POLICY_REDIRECT: "policy-redirect",
		EndpointSlMetricSL_METRIC_HOST_ROUTED:     "host-routed",
	}
	ctStateNames = map[EndpointSlCtState]string{
		EndpointSlCtStateSL_CT_NONE:        "none",
		EndpointSlCtStateSL_CT_SYN_SENT:    "syn-sent",
		EndpointSlCtStateSL_CT_SYN_RECV:    "syn-recv",
		EndpointSlCtStateSL_CT_ESTABLISHED: "established",
		EndpointSlCtStateSL_CT_CLOSING:     "closing",
		EndpointSlCtStateSL_CT_CLOSED:      "closed",
		EndpointSlCtStateSL_CT_OPEN:        "open",
	}
	dirNames = map[EndpointSlDir]string{
		EndpointSlDirSL_DIR_UNKNOWN: "unknown",
		EndpointSlDirSL_DIR_INGRESS: "ingress",
		EndpointSlDirSL_DIR_EGRESS:  "egress",
	}
	eventTypeNames = map[EndpointSlEventType]string{
		EndpointSlEventTypeSL_EVENT_CONN_NEW:  "trace",
		EndpointSlEventTypeSL_EVENT_DROP:      "drop",
		EndpointSlEventTypeSL_EVENT_TRANSLATE: "translate",
		EndpointSlEventTypeSL_EVENT_CONN_END:  "end",
	}
	verdictNames = map[EndpointSlPolicyVerdict]string{
		EndpointSlPolicyVerdictSL_VERDICT_NONE:     "none",
		EndpointSlPolicyVerdictSL_VERDICT_ALLOW:    "allowed",
		EndpointSlPolicyVerdictSL_VERDICT_REDIRECT: "redirected",
		EndpointSlPolicyVerdictSL_VERDICT_DENY:     "denied",
		EndpointSlPolicyVerdictSL_VERDICT_AUDIT:    "audit",
	}
	ctScopeNames = map[EndpointSlCtScope]string{
		EndpointSlCtScopeSL_CT_SCOPE_FLOW:    "flow",
		EndpointSlCtScopeSL_CT_SCOPE_SERVICE: "service",
	}
)

func name[K ~uint32](m map[K]string, v K) string {
	if s, ok := m[v]; ok {
		return s
	}
	return fmt.Sprintf("unknown(%d)", v)
}

// String names a drop reason (Hubble's name where it is Hubble's reason).
func (r EndpointSlDropReason) String() string { return name(dropReasonNames, r) }

// Known reports whether this agent has a name for the reason.
func (r EndpointSlDropReason) Known() bool { _, ok := dropReasonNames[r]; return ok }

// String names a counter kind ("forwarded", "events-lost", ...).
func (m EndpointSlMetric) String() string { return name(metricNames, m) }

// String names a connection-tracking state.
func (s EndpointSlCtState) String() string { return name(ctStateNames, s) }

// String names a direction relative to the endpoint.
func (d EndpointSlDir) String() string { return name(dirNames, d) }

// String names a ring buffer event type ("trace", "drop", ...).
func (t EndpointSlEventType) String() string { return name(eventTypeNames, t) }

// String names a policy verdict ("allowed", "denied", ...).
func (v EndpointSlPolicyVerdict) String() string { return name(verdictNames, v) }

// String names a CT entry's scope.
func (s EndpointSlCtScope) String() string { return name(ctScopeNames, s) }
