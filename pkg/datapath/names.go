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
	dropReasonNames = map[b.BpfSlDropReason]string{
		b.BpfSlDropReasonSL_DROP_INVALID_SOURCE_IP:    "INVALID_SOURCE_IP",
		b.BpfSlDropReasonSL_DROP_INVALID_PACKET:       "INVALID_PACKET_DROPPED",
		b.BpfSlDropReasonSL_DROP_CT_INVALID_HDR:       "CT_TRUNCATED_OR_INVALID_HEADER",
		b.BpfSlDropReasonSL_DROP_CT_MAP_FULL:          "CT_MAP_INSERTION_FAILED",
		b.BpfSlDropReasonSL_DROP_WRITE_ERROR:          "ERROR_WRITING_TO_PACKET",
		b.BpfSlDropReasonSL_DROP_NO_SERVICE_BACKEND:   "SERVICE_BACKEND_NOT_FOUND",
		b.BpfSlDropReasonSL_DROP_FIB_LOOKUP_FAILED:    "FIB_LOOKUP_FAILED",
		b.BpfSlDropReasonSL_DROP_NO_LOCAL_BACKEND:     "NO_LOCAL_SERVICE_BACKEND",
		b.BpfSlDropReasonSL_DROP_NAT_PORTS_EXHAUSTED:  "NAT_PORTS_EXHAUSTED",
		b.BpfSlDropReasonSL_DROP_FRAG_NOT_FOUND:       "FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND",
		b.BpfSlDropReasonSL_DROP_NOT_IN_SRC_RANGE:     "DENIED_BY_LB_SRC_RANGE_CHECK",
		b.BpfSlDropReasonSL_DROP_POLICY_DENIED:        "POLICY_DENIED",
		b.BpfSlDropReasonSL_DROP_UNSUPPORTED_L3:       "UNSUPPORTED_L3_PROTOCOL",
		b.BpfSlDropReasonSL_DROP_POLICY_REVOKED:       "POLICY_REVOKED",
		b.BpfSlDropReasonSL_DROP_POLICY_OVERFLOW:      "POLICY_OVERFLOW",
		b.BpfSlDropReasonSL_DROP_PROXY_UNAVAILABLE:    "PROXY_UNAVAILABLE",
		b.BpfSlDropReasonSL_DROP_SOCKET_ASSIGN_FAILED: "SOCKET_ASSIGN_FAILED",
	}
	metricNames = map[b.BpfSlMetric]string{
		b.BpfSlMetricSL_METRIC_FORWARDED:       "forwarded",
		b.BpfSlMetricSL_METRIC_DROPPED:         "dropped",
		b.BpfSlMetricSL_METRIC_PASSED_IPV6:     "passed-ipv6",
		b.BpfSlMetricSL_METRIC_PASSED_OTHER:    "passed-non-ip",
		b.BpfSlMetricSL_METRIC_RELATED:         "related-icmp",
		b.BpfSlMetricSL_METRIC_EVENTS_LOST:     MetricEventsLost,
		b.BpfSlMetricSL_METRIC_NO_ENDPOINT:     "no-endpoint",
		b.BpfSlMetricSL_METRIC_FRAG_TABLE_FULL: "frag-table-full",
		b.BpfSlMetricSL_METRIC_SOCK_DESTROYED:  "sockets-destroyed",
		b.BpfSlMetricSL_METRIC_POLICY_AUDIT:    "policy-audit",
		b.BpfSlMetricSL_METRIC_POLICY_REDIRECT: "policy-redirect",
	}
	ctStateNames = map[b.BpfSlCtState]string{
		b.BpfSlCtStateSL_CT_NONE:        "none",
		b.BpfSlCtStateSL_CT_SYN_SENT:    "syn-sent",
		b.BpfSlCtStateSL_CT_SYN_RECV:    "syn-recv",
		b.BpfSlCtStateSL_CT_ESTABLISHED: "established",
		b.BpfSlCtStateSL_CT_CLOSING:     "closing",
		b.BpfSlCtStateSL_CT_CLOSED:      "closed",
		b.BpfSlCtStateSL_CT_OPEN:        "open",
	}
	dirNames = map[b.BpfSlDir]string{
		b.BpfSlDirSL_DIR_UNKNOWN: "unknown",
		b.BpfSlDirSL_DIR_INGRESS: "ingress",
		b.BpfSlDirSL_DIR_EGRESS:  "egress",
	}
	eventTypeNames = map[b.BpfSlEventType]string{
		b.BpfSlEventTypeSL_EVENT_CONN_NEW:  "trace",
		b.BpfSlEventTypeSL_EVENT_DROP:      "drop",
		b.BpfSlEventTypeSL_EVENT_TRANSLATE: "translate",
		b.BpfSlEventTypeSL_EVENT_CONN_END:  "end",
	}
	verdictNames = map[b.BpfSlPolicyVerdict]string{
		b.BpfSlPolicyVerdictSL_VERDICT_NONE:     "none",
		b.BpfSlPolicyVerdictSL_VERDICT_ALLOW:    "allowed",
		b.BpfSlPolicyVerdictSL_VERDICT_REDIRECT: "redirected",
		b.BpfSlPolicyVerdictSL_VERDICT_DENY:     "denied",
		b.BpfSlPolicyVerdictSL_VERDICT_AUDIT:    "audit",
	}
	ctScopeNames = map[b.BpfSlCtScope]string{
		b.BpfSlCtScopeSL_CT_SCOPE_FLOW:    "flow",
		b.BpfSlCtScopeSL_CT_SCOPE_SERVICE: "service",
	}
)

func name[K ~uint32](m map[K]string, v K) string {
	if s, ok := m[v]; ok {
		return s
	}
	return fmt.Sprintf("unknown(%d)", v)
}

// DropReasonName names a drop reason.
func DropReasonName(r uint16) string { return name(dropReasonNames, b.BpfSlDropReason(r)) }

// MetricName names a counter kind.
func MetricName(m uint8) string { return name(metricNames, b.BpfSlMetric(m)) }

// CTStateName names a connection-tracking state.
func CTStateName(s uint8) string { return name(ctStateNames, b.BpfSlCtState(s)) }

// DirName names a direction relative to the endpoint.
func DirName(d uint8) string { return name(dirNames, b.BpfSlDir(d)) }

// EventTypeName names a ring buffer event type.
func EventTypeName(t uint8) string { return name(eventTypeNames, b.BpfSlEventType(t)) }

// VerdictName names a policy verdict.
func VerdictName(v uint8) string { return name(verdictNames, b.BpfSlPolicyVerdict(v)) }

// CTScopeName names a CT entry's scope.
func CTScopeName(s uint8) string { return name(ctScopeNames, b.BpfSlCtScope(s)) }

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
