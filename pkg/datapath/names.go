package datapath

import (
	"fmt"

	"golang.org/x/sys/unix"

	b "github.com/sluice-net/sluice/pkg/datapath/bpfobj"
)

// MetricEventsLost is the name of the counter of events the datapath could
// not emit because the ring buffer was full.
const MetricEventsLost = "events-lost"

// Readable names for the C enums. Drop reason names are Hubble's
// flow.DropReason names where the value is Hubble's.
var (
	dropReasonNames = map[b.EndpointSlDropReason]string{
		b.EndpointSlDropReasonSL_DROP_INVALID_SOURCE_IP:    "INVALID_SOURCE_IP",
		b.EndpointSlDropReasonSL_DROP_INVALID_PACKET:       "INVALID_PACKET_DROPPED",
		b.EndpointSlDropReasonSL_DROP_CT_INVALID_HDR:       "CT_TRUNCATED_OR_INVALID_HEADER",
		b.EndpointSlDropReasonSL_DROP_CT_MAP_FULL:          "CT_MAP_INSERTION_FAILED",
		b.EndpointSlDropReasonSL_DROP_WRITE_ERROR:          "ERROR_WRITING_TO_PACKET",
		b.EndpointSlDropReasonSL_DROP_NO_SERVICE_BACKEND:   "SERVICE_BACKEND_NOT_FOUND",
		b.EndpointSlDropReasonSL_DROP_FIB_LOOKUP_FAILED:    "FIB_LOOKUP_FAILED",
		b.EndpointSlDropReasonSL_DROP_NO_LOCAL_BACKEND:     "NO_LOCAL_SERVICE_BACKEND",
		b.EndpointSlDropReasonSL_DROP_NAT_PORTS_EXHAUSTED:  "NAT_PORTS_EXHAUSTED",
		b.EndpointSlDropReasonSL_DROP_FRAG_NOT_FOUND:       "FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND",
		b.EndpointSlDropReasonSL_DROP_NOT_IN_SRC_RANGE:     "DENIED_BY_LB_SRC_RANGE_CHECK",
		b.EndpointSlDropReasonSL_DROP_POLICY_DENIED:        "POLICY_DENIED",
		b.EndpointSlDropReasonSL_DROP_UNSUPPORTED_L3:       "UNSUPPORTED_L3_PROTOCOL",
		b.EndpointSlDropReasonSL_DROP_POLICY_REVOKED:       "POLICY_REVOKED",
		b.EndpointSlDropReasonSL_DROP_POLICY_OVERFLOW:      "POLICY_OVERFLOW",
		b.EndpointSlDropReasonSL_DROP_PROXY_UNAVAILABLE:    "PROXY_UNAVAILABLE",
		b.EndpointSlDropReasonSL_DROP_SOCKET_ASSIGN_FAILED: "SOCKET_ASSIGN_FAILED",
	}
	metricNames = map[b.EndpointSlMetric]string{
		b.EndpointSlMetricSL_METRIC_FORWARDED:       "forwarded",
		b.EndpointSlMetricSL_METRIC_DROPPED:         "dropped",
		b.EndpointSlMetricSL_METRIC_PASSED_IPV6:     "passed-ipv6",
		b.EndpointSlMetricSL_METRIC_PASSED_OTHER:    "passed-non-ip",
		b.EndpointSlMetricSL_METRIC_RELATED:         "related-icmp",
		b.EndpointSlMetricSL_METRIC_EVENTS_LOST:     MetricEventsLost,
		b.EndpointSlMetricSL_METRIC_NO_ENDPOINT:     "no-endpoint",
		b.EndpointSlMetricSL_METRIC_FRAG_TABLE_FULL: "frag-table-full",
		b.EndpointSlMetricSL_METRIC_SOCK_DESTROYED:  "sockets-destroyed",
		b.EndpointSlMetricSL_METRIC_POLICY_AUDIT:    "policy-audit",
		b.EndpointSlMetricSL_METRIC_POLICY_REDIRECT: "policy-redirect",
	}
	ctStateNames = map[b.EndpointSlCtState]string{
		b.EndpointSlCtStateSL_CT_NONE:        "none",
		b.EndpointSlCtStateSL_CT_SYN_SENT:    "syn-sent",
		b.EndpointSlCtStateSL_CT_SYN_RECV:    "syn-recv",
		b.EndpointSlCtStateSL_CT_ESTABLISHED: "established",
		b.EndpointSlCtStateSL_CT_CLOSING:     "closing",
		b.EndpointSlCtStateSL_CT_CLOSED:      "closed",
		b.EndpointSlCtStateSL_CT_OPEN:        "open",
	}
	dirNames = map[b.EndpointSlDir]string{
		b.EndpointSlDirSL_DIR_UNKNOWN: "unknown",
		b.EndpointSlDirSL_DIR_INGRESS: "ingress",
		b.EndpointSlDirSL_DIR_EGRESS:  "egress",
	}
	eventTypeNames = map[b.EndpointSlEventType]string{
		b.EndpointSlEventTypeSL_EVENT_CONN_NEW:  "trace",
		b.EndpointSlEventTypeSL_EVENT_DROP:      "drop",
		b.EndpointSlEventTypeSL_EVENT_TRANSLATE: "translate",
		b.EndpointSlEventTypeSL_EVENT_CONN_END:  "end",
	}
	verdictNames = map[b.EndpointSlPolicyVerdict]string{
		b.EndpointSlPolicyVerdictSL_VERDICT_NONE:     "none",
		b.EndpointSlPolicyVerdictSL_VERDICT_ALLOW:    "allowed",
		b.EndpointSlPolicyVerdictSL_VERDICT_REDIRECT: "redirected",
		b.EndpointSlPolicyVerdictSL_VERDICT_DENY:     "denied",
		b.EndpointSlPolicyVerdictSL_VERDICT_AUDIT:    "audit",
	}
	ctScopeNames = map[b.EndpointSlCtScope]string{
		b.EndpointSlCtScopeSL_CT_SCOPE_FLOW:    "flow",
		b.EndpointSlCtScopeSL_CT_SCOPE_SERVICE: "service",
	}
)

func name[K ~uint32](m map[K]string, v K) string {
	if s, ok := m[v]; ok {
		return s
	}
	return fmt.Sprintf("unknown(%d)", v)
}

// DropReasonName names a drop reason.
func DropReasonName(r uint16) string { return name(dropReasonNames, b.EndpointSlDropReason(r)) }

// MetricName names a counter kind.
func MetricName(m uint8) string { return name(metricNames, b.EndpointSlMetric(m)) }

// CTStateName names a connection-tracking state.
func CTStateName(s uint8) string { return name(ctStateNames, b.EndpointSlCtState(s)) }

// DirName names a direction relative to the endpoint.
func DirName(d uint8) string { return name(dirNames, b.EndpointSlDir(d)) }

// EventTypeName names a ring buffer event type.
func EventTypeName(t uint8) string { return name(eventTypeNames, b.EndpointSlEventType(t)) }

// VerdictName names a policy verdict.
func VerdictName(v uint8) string { return name(verdictNames, b.EndpointSlPolicyVerdict(v)) }

// CTScopeName names a CT entry's scope.
func CTScopeName(s uint8) string { return name(ctScopeNames, b.EndpointSlCtScope(s)) }

// ProtoName names an IP protocol number.
func ProtoName(p uint8) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "TCP"
	case unix.IPPROTO_UDP:
		return "UDP"
	case unix.IPPROTO_ICMP:
		return "ICMP"
	case unix.IPPROTO_SCTP:
		return "SCTP"
	case unix.IPPROTO_ICMPV6:
		return "ICMPv6"
	}
	return fmt.Sprintf("proto-%d", p)
}

// number is the inverse of name: the value a name stands for, the number
// of an "unknown(N)" name, or 0.
func number[K ~uint32](m map[K]string, s string) K {
	for k, v := range m {
		if v == s {
			return k
		}
	}
	var n K
	if _, err := fmt.Sscanf(s, "unknown(%d)", &n); err == nil {
		return n
	}
	return 0
}

// protoNumber is the inverse of ProtoName.
func protoNumber(s string) uint8 {
	for _, p := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_ICMP, unix.IPPROTO_SCTP, unix.IPPROTO_ICMPV6} {
		if ProtoName(p) == s {
			return p
		}
	}
	var p uint8
	if _, err := fmt.Sscanf(s, "proto-%d", &p); err == nil {
		return p
	}
	return 0
}
